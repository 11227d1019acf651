#!/usr/bin/env bash
# Table 4 of "Neural Collapse by Design: Learning Class Prototypes on the Hypersphere"
# (the paper), SupCon pre-training on ImageNet-100 without projection head: the loss
# acts on the encoder output. Evaluate it with HEAD=none (or CKPT=its last.pth) and
# imagenet100_supcon_linear.sh (paper 84.1%), imagenet100_supcon_normlinear.sh (84.3%)
# and imagenet100_supcon_prototype.sh (84.7%).
#
# main_supcon.py --method SupCon --head none: ResNet-50 without projection head at 224
# px, 500 epochs, 4 GPUs x 256 (global batch 1024), base lr 0.8 scaled to 3.2, 10 warm-
# up epochs from 0.01, cosine to lr * 1e-3, SyncBN, temperature 0.1, seed 42.
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP MODEL NGPUS TRIAL
# SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/imagenet100_supcon_nohead.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_supcon imagenet100 none
