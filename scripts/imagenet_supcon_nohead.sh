#!/usr/bin/env bash
# Table 4 of "Neural Collapse by Design: Learning Class Prototypes on the Hypersphere"
# (the paper), SupCon pre-training on ImageNet-1K without projection head: the loss acts
# on the encoder output. Evaluate it with HEAD=none (or CKPT=its last.pth) and
# imagenet_supcon_linear.sh (paper 71%), imagenet_supcon_normlinear.sh (72.1%) and
# imagenet_supcon_prototype.sh (70.1%).
#
# main_supcon.py --method SupCon --head none: ResNet-50 without projection head at 224
# px, 500 epochs, 8 GPUs x 256 (global batch 2048), base lr 0.1 scaled to 0.8, 5 warm-up
# epochs from 0.01, cosine to lr * 1e-3, SyncBN, temperature 0.1, seed 42.
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP MODEL NGPUS TRIAL
# SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/imagenet_supcon_nohead.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_supcon imagenet none
