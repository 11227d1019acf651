#!/usr/bin/env bash
# Table 1 (II) of "Neural Collapse by Design: Learning Class Prototypes on the
# Hypersphere" (the paper), fixed class-mean prototypes on the SupCon encoder of
# ImageNet-1K: paper 75.1% top-1. Table 4, the same on the encoder trained without
# projection head: paper 70.1%.
#
# CKPT defaults to the last.pth that imagenet_supcon.sh writes with its default
# settings, or with HEAD=none to the one of imagenet_supcon_nohead.sh.
#
# main_prototype.py --feature encoder: one forward pass over the training set and no
# training, 8 GPUs x 256 per pass.
#
# Settings come from environment variables (DATA BATCH NGPUS CKPT HEAD TRIAL SEED
# SAVE_ROOT EXTRA DRY_RUN FORCE), described in scripts/common.sh:
#   DRY_RUN=1 scripts/imagenet_supcon_prototype.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_prototype imagenet
