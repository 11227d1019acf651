#!/usr/bin/env bash
# Table 1 (II) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper), SupCon pre-training on ImageNet-1K. Its last.pth is the
# default CKPT of imagenet_supcon_linear.sh (paper 75.1%), imagenet_supcon_normlinear.sh
# (75.1%) and imagenet_supcon_prototype.sh (75.1%).
#
# main_supcon.py --method SupCon --head mlp: ResNet-50 with a 128-d MLP projection head
# at 224 px, 500 epochs, 8 GPUs x 256 (global batch 2048), base lr 0.1 scaled to 0.8, 5
# warm-up epochs from 0.01, cosine to lr * 1e-3, SyncBN, temperature 0.1, seed 42.
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP MODEL NGPUS TRIAL
# SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/imagenet_supcon.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_supcon imagenet mlp
