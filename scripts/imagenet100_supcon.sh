#!/usr/bin/env bash
# Table 1 (II) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper), SupCon pre-training on ImageNet-100. Its last.pth is the
# default CKPT of imagenet100_supcon_linear.sh (paper 84.8%),
# imagenet100_supcon_normlinear.sh (84.8%) and imagenet100_supcon_prototype.sh (86.8%).
#
# main_supcon.py --method SupCon --head mlp: ResNet-50 with a 128-d MLP projection head
# at 224 px, 500 epochs, 4 GPUs x 256 (global batch 1024), base lr 0.8 scaled to 3.2, 10
# warm-up epochs from 0.01, cosine to lr * 1e-3, SyncBN, temperature 0.1, seed 42.
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP MODEL NGPUS TRIAL
# SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/imagenet100_supcon.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_supcon imagenet100 mlp
