#!/usr/bin/env bash
# Figure 1 and Table 3 of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper): NC metrics during training on CIFAR-100 for CE, NormFace,
# NTCE and NONL, then the convergence plot and the Table 3 fractions. Paper Table 3 (I), % of
# training iterations until the 95% NC threshold, NONL: instance alignment 79.4, weight
# alignment 7.4, weights erank 34.6, intra erank 14.6, inter erank 47.2. (II), % of CE's
# converged iteration until CE's final value, NONL: 2.2, 1.8, 35.4, 0, 6.0.
#
# Steps: four main_ce.py runs with the Table 1 CIFAR-100 recipe (scripts/cifar100_*.sh)
# and --nc_freq, then
#   python scripts/plot_nc_convergence.py RUN_DIRS... --baseline CE_RUN_DIR
#       --out $SAVE_ROOT/figure1/figure1.png --json $SAVE_ROOT/figure1/convergence.json
# and python scripts/collect_results.py $SAVE_ROOT --table 3 prints Table 3.
#
# NC_FREQ: iterations between two NC measurements. The default spreads NC_POINTS (default
# 500) measurements over training: 196 for the paper's recipe (98 iterations per epoch,
# 50,000 images in batches of 512 with the last one kept, times 1000 epochs, over 500).
# Table 3's percentages are multiples of 0.2, which matches 500 measurements.
# NC_SAMPLES: training images per measurement (default 10000, main_ce.py's default).
# TRIAL: default "nc", so these runs, slower for the measurements, get their own folders
# next to the Table 1 runs. TEMP (default 0.1) applies to NormFace, NTCE and NONL. Other
# settings come from the environment variables described in scripts/common.sh (DATA
# EPOCHS BATCH LR MODEL NGPUS SEED SAVE_ROOT EXTRA DRY_RUN FORCE). EXTRA is appended to
# the training commands only.
#   DRY_RUN=1 scripts/figure1_nc_convergence.sh
set -euo pipefail
TRIAL=${TRIAL:-nc}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

dataset=cifar100
train_images=50000
paper_recipe "$dataset" ce
resolve_settings

nc_points=${NC_POINTS:-500}
iters_per_epoch=$(((train_images + batch * ngpus - 1) / (batch * ngpus)))
default_freq=$((iters_per_epoch * epochs / nc_points))
((default_freq >= 1)) || default_freq=1
nc_freq=${NC_FREQ:-$default_freq}
nc_samples=${NC_SAMPLES:-10000}

run_dirs=()
for loss in ce normface ntce nonl; do
    launch_classifier_learning "$dataset" "$loss" --nc_freq "$nc_freq" --nc_samples "$nc_samples"
    ce_run_dir "$dataset" "$loss"
    run_dirs+=("$run_dir")
done

[[ $DRY_RUN == 1 ]] || mkdir -p "$SAVE_ROOT/figure1"
launch_plain "$PYTHON" scripts/plot_nc_convergence.py "${run_dirs[@]}" \
    --baseline "${run_dirs[0]}" --out "$SAVE_ROOT/figure1/figure1.png" \
    --json "$SAVE_ROOT/figure1/convergence.json"
