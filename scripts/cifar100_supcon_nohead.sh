#!/usr/bin/env bash
# Table 4 of "Neural Collapse by Design: Learning Class Prototypes on the Hypersphere"
# (the paper), SupCon pre-training on CIFAR-100 without projection head: the loss acts
# on the encoder output. Evaluate it with HEAD=none (or CKPT=its last.pth) and
# cifar100_supcon_linear.sh (paper 70.6%), cifar100_supcon_normlinear.sh (71.4%) and
# cifar100_supcon_prototype.sh (71.4%).
#
# main_supcon.py --method SupCon --head none: ResNet-18 without projection head, 1000
# epochs, batch 512 on one GPU, lr 0.05, cosine to lr * 1e-3, no warm-up, temperature
# TEMP (default 0.1), seed 42.
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP MODEL NGPUS TRIAL
# SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/cifar100_supcon_nohead.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_supcon cifar100 none
