#!/usr/bin/env bash
# The paper's claims in miniature, in a few minutes on a CPU, with the real scripts.
#
# Data: scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes,
# stratified 1,437 / 360 split), so nothing is downloaded. The runs use a ResNet-18 of
# width 8 on 16x16 inputs. For these images data.py applies a lighter augmentation than
# CIFAR's: no horizontal flip (a mirrored digit is another symbol), crops keeping at least
# 60% of the area, and brightness/contrast jitter only, since the digits have no colour.
#
# Steps: CE, NormFace, NTCE and NONL with main_ce.py, logging the NC metrics of the
# training set every epoch; SupCon with main_supcon.py, then linear probing, normalised
# linear probing and class-mean prototypes; Figure 1 and Table 3. Writes
# $SAVE_ROOT/summary.json, $SAVE_ROOT/figure1.png and each script's output in
# $SAVE_ROOT/logs/.
#
# Environment: SAVE_ROOT (default ./save/quickstart), PYTHON (default python),
# EPOCHS (classifier learning and SupCon, default 12), PROBE_EPOCHS (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

SAVE_ROOT=${SAVE_ROOT:-./save/quickstart}
PYTHON=${PYTHON:-python}
EPOCHS=${EPOCHS:-12}
PROBE_EPOCHS=${PROBE_EPOCHS:-10}
DATA="--dataset digits --size 16 --num_workers 0"
RUN="--save_root $SAVE_ROOT --seed 42 --print_freq 1000"
TRAIN="$DATA --model resnet18 --width 8 $RUN --batch_size 64 --epochs $EPOCHS --cosine"
# The NC metrics are measured once an epoch (23 iterations of 64 images) on all 1,437
# training images, so the last measurement is the training-set row of Table 2.
NC="--nc_freq 23 --nc_samples 1437"
mkdir -p "$SAVE_ROOT/logs"

# run NAME SCRIPT ARGS...: run a main script, keep its output in logs/NAME.log, print
# its last line (the accuracy) and set run_folder to the folder it reports.
run() {
    local name=$1 script=$2 log="$SAVE_ROOT/logs/$1.log"
    shift 2
    "$PYTHON" "$script" "$@" >"$log"
    echo "$script $name: $(tail -n 1 "$log")"
    run_folder=$(sed -n 's/^run folder: //p' "$log" | tail -n 1)
}

# A ResNet of width 8 is too small to gain from several threads per process, so the
# five training chains run side by side with one thread each, which fills the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

supcon_chain() {
    run supcon main_supcon.py $TRAIN --method SupCon --temp 0.1 --learning_rate 0.05
    local ckpt="$run_folder/last.pth"
    for classifier in linear normalized; do
        run "probe_$classifier" main_linear.py $DATA $RUN --ckpt "$ckpt" \
            --classifier $classifier --batch_size 64 --epochs "$PROBE_EPOCHS" \
            --learning_rate 1.0 --cosine
    done
    run prototype main_prototype.py $DATA $RUN --ckpt "$ckpt" --batch_size 256
}

started=$(date +%s)
losses=(ce normface ntce nonl)
jobs_started=()
for loss in "${losses[@]}"; do
    run "$loss" main_ce.py $TRAIN $NC --loss $loss --temp 0.1 --learning_rate 0.1 &
    jobs_started+=($!)
done
supcon_chain &
jobs_started+=($!)
for job in "${jobs_started[@]}"; do
    wait "$job"
done

ce_runs=()
for loss in "${losses[@]}"; do
    ce_runs+=("$(sed -n 's/^run folder: //p' "$SAVE_ROOT/logs/$loss.log" | tail -n 1)")
done
echo "== Figure 1 and Table 3"
# With one measurement an epoch there are few points, so the moving average keeps half
# of its past (--ewma 0.5) instead of the 0.9 meant for hundreds of measurements.
"$PYTHON" scripts/plot_nc_convergence.py "${ce_runs[@]}" --baseline "${ce_runs[0]}" \
    --ewma 0.5 --out "$SAVE_ROOT/figure1.png" --json "$SAVE_ROOT/convergence.json" \
    >"$SAVE_ROOT/logs/convergence.log"

"$PYTHON" scripts/quickstart_summary.py "$SAVE_ROOT"
echo "total time: $(( $(date +%s) - started )) s"
