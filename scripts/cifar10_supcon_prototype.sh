#!/usr/bin/env bash
# Table 1 (II) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper), fixed class-mean prototypes on the SupCon encoder of
# CIFAR-10: paper 95.0% top-1. Table 4, the same on the encoder trained without
# projection head: paper 95%.
#
# CKPT defaults to the last.pth that cifar10_supcon.sh writes with its default settings,
# or with HEAD=none to the one of cifar10_supcon_nohead.sh.
#
# main_prototype.py --feature encoder: one forward pass over the training set and no
# training, batch 512 per pass.
#
# Settings come from environment variables (DATA BATCH NGPUS CKPT HEAD TRIAL SEED
# SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/cifar10_supcon_prototype.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_prototype cifar10
