#!/usr/bin/env bash
# Build an ImageNet-100 ImageFolder out of symbolic links into a full ImageNet folder.
#
#   scripts/make_imagenet100.sh SRC DST
#
# SRC has train/<wnid>/ and val/<wnid>/ for the 1000 ImageNet classes. The script creates
# DST/train/<wnid> and DST/val/<wnid> as links to SRC/train/<wnid> and SRC/val/<wnid> for
# the 100 WordNet ids in data/imagenet100_classes.txt; no image is copied. The result
# can be used with --dataset path (--data_folder DST/train --val_folder DST/val) or
# --dataset imagenet100 --data_folder DST. --dataset imagenet100 also reads SRC directly.
#
# IMAGENET100_CLASSES=FILE uses another class list (one WordNet id per line).
# Every class folder is checked before any link is made, so a failure leaves DST as it was.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 SRC DST  (SRC: ImageNet folder with train/ and val/; DST: output folder)" >&2
    exit 2
fi
src=$1
dst=$2
classes_file=${IMAGENET100_CLASSES:-"$(dirname "$0")/../data/imagenet100_classes.txt"}

if [[ ! -f $classes_file ]]; then
    echo "error: class list not found: $classes_file" >&2
    exit 1
fi

wnids=()
while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    [[ -n $line ]] && wnids+=("$line")
done < "$classes_file"
if [[ ${#wnids[@]} -eq 0 ]]; then
    echo "error: no class ids in $classes_file" >&2
    exit 1
fi

for wnid in "${wnids[@]}"; do
    for split in train val; do
        if [[ ! -d $src/$split/$wnid ]]; then
            echo "error: class folder not found: $src/$split/$wnid" >&2
            exit 1
        fi
        link=$dst/$split/$wnid
        if [[ -e $link && ! -L $link ]]; then
            echo "error: $link exists and is not a symbolic link; remove it or pick another DST" >&2
            exit 1
        fi
    done
done

# Absolute link targets, so the links stay valid wherever DST is read from.
src_abs=$(cd "$src" && pwd)
for split in train val; do
    mkdir -p "$dst/$split"
    for wnid in "${wnids[@]}"; do
        ln -sfn "$src_abs/$split/$wnid" "$dst/$split/$wnid"
    done
done
echo "linked ${#wnids[@]} classes from $src_abs into $dst/train and $dst/val"
