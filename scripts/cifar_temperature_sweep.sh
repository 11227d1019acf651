#!/usr/bin/env bash
# Table 1 of "Neural Collapse by Design: Learning Class Prototypes on the Hypersphere"
# (the paper), CIFAR columns: one loss on one CIFAR data set at each of the 11
# temperatures 0.07, 0.1, 0.2, ..., 1.0 (appendix A.2). The paper reports the best
# temperature per cell, and so does scripts/collect_results.py when it finds the runs of
# this sweep.
#
# LOSS: ce, normface, ntce or nonl (main_ce.py, Table 1 (I)), or supcon (main_supcon.py
# pre-training, each followed by linear probing, normalised linear probing and class-mean
# prototypes on its last.pth, Table 1 (II)). Default nonl.
# DATASET: cifar10 or cifar100. Default cifar100.
# TEMPS: the temperatures, separated by spaces (default: the 11 above). CE has no
# temperature, so LOSS=ce runs once, at TEMP (default 0.1).
#
# Each run uses the recipe of scripts/{DATASET}_{LOSS}.sh. Settings come from the
# environment variables described in scripts/common.sh (DATA EPOCHS BATCH LR MODEL NGPUS
# TRIAL SEED SAVE_ROOT EXTRA DRY_RUN FORCE). EPOCHS, BATCH and LR apply to the
# pre-training and classifier-learning runs, the probes keep the paper's values.
# Finished runs (with results.json) are skipped.
#
# DRY_RUN=1 prints one command per line. With LOSS=supcon the three evaluation lines
# after a pre-training line read its checkpoint, so run them after it.
#   DRY_RUN=1 LOSS=ntce DATASET=cifar10 scripts/cifar_temperature_sweep.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

loss=${LOSS:-nonl}
dataset=${DATASET:-cifar100}
read -ra temps <<< "${TEMPS:-${TEMPERATURES[*]}}"

case $dataset in
    cifar10 | cifar100) ;;
    *) die "DATASET must be cifar10 or cifar100, got '$dataset'" ;;
esac

case $loss in
    ce)
        echo "note: CE has no temperature; one run at TEMP=${TEMP:-0.1}" >&2
        run_classifier_learning "$dataset" ce
        ;;
    normface | ntce | nonl)
        paper_recipe "$dataset" ce
        resolve_settings
        for temp in "${temps[@]}"; do
            format_settings
            launch_classifier_learning "$dataset" "$loss"
        done
        ;;
    supcon)
        for pretrain_temp in "${temps[@]}"; do
            paper_recipe "$dataset" supcon
            resolve_settings
            temp=$pretrain_temp
            format_settings
            launch_supcon "$dataset" mlp
            supcon_run_dir "$dataset" mlp
            ckpt=$run_dir/last.pth

            # The probes use the paper's probing recipe, not EPOCHS, BATCH and LR.
            paper_recipe "$dataset" linear
            resolve_settings paper
            launch_linear "$dataset" linear "$ckpt"
            launch_linear "$dataset" normalized "$ckpt"
            paper_recipe "$dataset" prototype
            resolve_settings paper
            launch_prototype "$dataset" "$ckpt"
        done
        ;;
    *) die "LOSS must be ce, normface, ntce, nonl or supcon, got '$loss'" ;;
esac
