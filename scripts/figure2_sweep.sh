#!/usr/bin/env bash
# Figure 2 (appendix A.3) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper): accuracy of NormFace, NTCE and NONL on CIFAR-10 and
# CIFAR-100 over 11 temperatures (0.07, 0.1, 0.2, ..., 1.0) x 7 global batch sizes (32 to
# 2048), which makes 462 main_ce.py runs. The paper gives the figure without numbers. It
# shows a band of high accuracy at moderate temperatures (0.1 to 0.2 on these data sets)
# that is nearly flat in the batch size. Draw it afterwards with
#   python scripts/plot_phase_diagram.py $SAVE_ROOT --out $SAVE_ROOT/figure2/figure2.png
#
# Each run follows the Table 1 CIFAR recipe (ResNet-18, 1000 epochs, lr 0.2, cosine to
# lr * 1e-3, no warm-up, seed 42) at its own temperature and batch size. The appendix
# gives no other settings for the grid, so the learning rate is not scaled with the
# batch and no batch size gets a warm-up. The batch-512 runs are those of
# scripts/cifar_temperature_sweep.sh: a finished one (with results.json) is skipped.
#
# Grid variables (lists separated by spaces): DATASETS (default "cifar10 cifar100"),
# LOSSES ("normface ntce nonl"), TEMPS (the 11 temperatures), BATCHES (global batch
# sizes, default "32 64 128 256 512 1024 2048"). Each run gets BATCHES / NGPUS images per
# process. Other settings come from the environment variables described in
# scripts/common.sh (DATA EPOCHS LR MODEL NGPUS TRIAL SEED SAVE_ROOT EXTRA DRY_RUN FORCE).
#
# DRY_RUN=1 prints the job list, one independent command per line, for a cluster
# scheduler. Run each line from the repository root.
#   DRY_RUN=1 scripts/figure2_sweep.sh > figure2_jobs.txt
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

read -ra datasets <<< "${DATASETS:-cifar10 cifar100}"
read -ra losses <<< "${LOSSES:-normface ntce nonl}"
read -ra temps <<< "${TEMPS:-${TEMPERATURES[*]}}"
read -ra global_batches <<< "${BATCHES:-${BATCH_SIZES[*]}}"

for loss in "${losses[@]}"; do
    case $loss in
        ce | normface | ntce | nonl) ;;
        *) die "LOSSES must contain ce, normface, ntce or nonl, got '$loss'" ;;
    esac
done

for dataset in "${datasets[@]}"; do
    case $dataset in
        cifar10 | cifar100) ;;
        *) die "DATASETS must contain cifar10 or cifar100, got '$dataset'" ;;
    esac
    paper_recipe "$dataset" ce
    resolve_settings
    for loss in "${losses[@]}"; do
        for global_batch in "${global_batches[@]}"; do
            if ! [[ $global_batch =~ ^[1-9][0-9]*$ ]] || ((global_batch % ngpus != 0)); then
                die "batch size '$global_batch' is not a positive multiple of NGPUS=$ngpus"
            fi
            batch=$((global_batch / ngpus))
            for temp in "${temps[@]}"; do
                format_settings
                launch_classifier_learning "$dataset" "$loss"
            done
        done
    done
done
