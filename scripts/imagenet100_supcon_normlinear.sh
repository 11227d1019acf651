#!/usr/bin/env bash
# Table 1 (II) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper), normalized linear probing on the SupCon encoder of
# ImageNet-100: paper 84.8% top-1. Table 4, the same on the encoder trained without
# projection head: paper 84.3%.
#
# CKPT defaults to the last.pth that imagenet100_supcon.sh writes with its default
# settings, or with HEAD=none to the one of imagenet100_supcon_nohead.sh.
#
# main_linear.py --classifier normalized: 90 epochs, 4 GPUs x 256, lr 2.0 (not scaled),
# decay by 0.2 after epochs 30, 60 and 80, no weight decay, no warm-up, seed 42. The
# classifier is a bias-free prototype matrix trained with the NormFace loss at TEMP
# (default 0.1).
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP NGPUS CKPT HEAD
# TRIAL SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/imagenet100_supcon_normlinear.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_linear imagenet100 normalized
