#!/usr/bin/env bash
# Table 1 (II) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper), SupCon pre-training on CIFAR-100. Its last.pth is the
# default CKPT of cifar100_supcon_linear.sh (paper 73.9%), cifar100_supcon_normlinear.sh
# (73.6%) and cifar100_supcon_prototype.sh (73.9%).
#
# main_supcon.py --method SupCon --head mlp: ResNet-18 with a 128-d MLP projection head,
# 1000 epochs, batch 512 on one GPU, lr 0.05, cosine to lr * 1e-3, no warm-up,
# temperature TEMP (default 0.1), seed 42.
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP MODEL NGPUS TRIAL
# SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/cifar100_supcon.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_supcon cifar100 mlp
