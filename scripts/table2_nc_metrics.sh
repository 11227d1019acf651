#!/usr/bin/env bash
# Table 2 of "Neural Collapse by Design: Learning Class Prototypes on the Hypersphere"
# (the paper): neural-collapse metrics of the training set on CIFAR-10 and CIFAR-100 for
# the classifier-learning runs (CE, NormFace, NTCE, NONL) and for SupCon, measured with its
# linear probe ("SCL (w probing)") and with class-mean prototypes ("SCL (w/o probing)").
# Paper, CIFAR-10 / CIFAR-100: NONL intra erank 4.0 / 11.4, inter erank 9.0 / 99.0,
# weight alignment 0.11 / 0.01. CE intra erank 22.5 / 96.4, inter erank 8.6 / 57.1.
# scripts/paper_results.json contains every cell.
#
# Each job runs nc_metrics.py on a run's last.pth and writes next to it: nc_train.json,
# and for SupCon also nc_train_probe.json (with --classifier, the last.pth of the
# main_linear.py run). The checkpoints come from scripts/cifar{10,100}_{ce,normface,ntce,
# nonl}.sh, cifar{10,100}_supcon.sh and cifar{10,100}_supcon_linear.sh, located with the
# same settings (EPOCHS BATCH LR MODEL NGPUS TRIAL SAVE_ROOT). Read the table with
#   python scripts/collect_results.py $SAVE_ROOT --table 2
#
# TEMPS: temperatures of the NormFace, NTCE, NONL and SupCon runs to measure (default:
# TEMP, default 0.1). After scripts/cifar_temperature_sweep.sh, set TEMPS to the 11
# values: collect_results.py then shows, per cell, the run with the best accuracy, as the
# paper reports the best temperature. CE has no temperature and is measured at TEMP.
# DATASETS: default "cifar10 cifar100". EXTRA is appended to every nc_metrics.py command.
#
# A job whose checkpoint does not exist yet is skipped with a note on stderr, and the
# script then exits with status 1. DRY_RUN=1 prints every command regardless.
#   DRY_RUN=1 scripts/table2_nc_metrics.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

read -ra datasets <<< "${DATASETS:-cifar10 cifar100}"
read -ra temps <<< "${TEMPS:-${TEMP:-0.1}}"
missing=0

# nc_job PRODUCER CKPT CLASSIFIER OUT: NC metrics of CKPT's training set, with the
# classifier of the main_linear.py checkpoint CLASSIFIER ("" for the checkpoint's own
# weights). PRODUCER names the script that writes CKPT.
nc_job() {
    local producer=$1 ckpt=$2 classifier=$3 out=$4
    local classifier_args=()
    if [[ $DRY_RUN != 1 && ! -f $ckpt ]]; then
        echo "missing: $ckpt; run $producer first" >&2
        missing=1
        return 0
    fi
    if [[ -n $classifier ]]; then
        if [[ $DRY_RUN != 1 && ! -f $classifier ]]; then
            echo "missing: $classifier; run scripts/${recipe_dataset}_supcon_linear.sh first" >&2
            missing=1
            return 0
        fi
        classifier_args=(--classifier "$classifier")
    fi
    data_flags
    launch 1 "$out" nc_metrics.py "${data_args[@]}" --ckpt "$ckpt" "${classifier_args[@]}" \
        --split train --json --out "$out"
}

for dataset in "${datasets[@]}"; do
    case $dataset in
        cifar10 | cifar100) ;;
        *) die "DATASETS must contain cifar10 or cifar100, got '$dataset'" ;;
    esac

    # Classifier learning: the classifier is the trained W (and bias for CE).
    paper_recipe "$dataset" ce
    resolve_settings
    for loss in ce normface ntce nonl; do
        loss_temps=("${temps[@]}")
        [[ $loss == ce ]] && loss_temps=("${TEMP:-0.1}")
        for temp in "${loss_temps[@]}"; do
            format_settings
            ce_run_dir "$dataset" "$loss"
            nc_job "scripts/${dataset}_$loss.sh" "$run_dir/last.pth" "" "$run_dir/nc_train.json"
        done
    done

    # SupCon: class-mean prototypes of the encoder features (no classifier given), then
    # the linear probe trained by scripts/{dataset}_supcon_linear.sh on the same encoder.
    for temp_value in "${temps[@]}"; do
        paper_recipe "$dataset" supcon
        resolve_settings
        temp=$temp_value
        format_settings
        supcon_run_dir "$dataset" mlp
        supcon_dir=$run_dir
        nc_job "scripts/${dataset}_supcon.sh" "$supcon_dir/last.pth" "" \
            "$supcon_dir/nc_train.json"

        paper_recipe "$dataset" linear
        resolve_settings paper
        linear_run_dir "$dataset" linear "$supcon_dir/last.pth"
        nc_job "scripts/${dataset}_supcon.sh" "$supcon_dir/last.pth" "$run_dir/last.pth" \
            "$supcon_dir/nc_train_probe.json"
    done
done

if ((missing)); then
    echo "some checkpoints were missing; their metrics were not computed" >&2
    exit 1
fi
