#!/usr/bin/env bash
# Table 1 (I) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper), NTCE on ImageNet-1K: paper 76.0% top-1.
#
# main_ce.py --loss ntce: ResNet-50 at 224 px, 500 epochs, 8 GPUs x 256 (global batch
# 2048), base lr 0.1 scaled to 0.8, 10 warm-up epochs from 0.01, cosine to lr * 1e-3,
# SyncBN, temperature 0.2, seed 42.
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP MODEL NGPUS TRIAL
# SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/imagenet_ntce.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_classifier_learning imagenet ntce
