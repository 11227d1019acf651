#!/usr/bin/env bash
# Table 1 (I) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper), NTCE on CIFAR-100: paper 72.9% top-1, best of 11
# temperatures.
#
# main_ce.py --loss ntce: ResNet-18, 1000 epochs, batch 512 on one GPU, lr 0.2, cosine
# to lr * 1e-3, no warm-up, temperature TEMP (default 0.1; the paper reports the best of
# 11 values, see scripts/cifar_temperature_sweep.sh), seed 42.
#
# Settings come from environment variables (DATA EPOCHS BATCH LR TEMP MODEL NGPUS TRIAL
# SEED SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/cifar100_ntce.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_classifier_learning cifar100 ntce
