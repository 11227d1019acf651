#!/usr/bin/env bash
# Table 1 (II) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper), normalized linear probing on the SupCon encoder of
# CIFAR-100: paper 73.6% top-1. Table 4, the same on the encoder trained without
# projection head: paper 71.4%.
#
# CKPT defaults to the last.pth that cifar100_supcon.sh writes with its default
# settings, or with HEAD=none to the one of cifar100_supcon_nohead.sh.
#
# main_linear.py --classifier normalized: 100 epochs, batch 512 on one GPU, lr 5.0,
# decay by 0.2 after epochs 60, 75 and 90, no weight decay, no warm-up, seed 42. The
# classifier is a bias-free prototype matrix trained with the NormFace loss at TEMP
# (default 0.1).
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP NGPUS CKPT HEAD
# TRIAL SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/cifar100_supcon_normlinear.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_linear cifar100 normalized
