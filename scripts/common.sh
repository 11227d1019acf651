# shellcheck shell=bash
# Shared code of the scripts in scripts/: the training recipes of appendix A.2 of "Neural
# Collapse by Design: Learning Class Prototypes on the Hypersphere" (the paper below),
# settings from environment variables, run-folder names, and the launcher. Every script
# sources this file, which changes to the repository root, so the scripts run from any
# directory.
#
# Environment variables (unset or empty means the paper's value):
#   DATA       --data_folder: ./datasets/ for CIFAR, and for ImageNet-100 and
#              ImageNet-1K ./datasets/imagenet, the folder with train/ and val/
#   EPOCHS     --epochs
#   BATCH      --batch_size, per process (the global batch is BATCH * NGPUS)
#   LR         --learning_rate (with --lr_scaling linear: the rate for a global batch of 256)
#   TEMP       --temp
#   MODEL      --model of the scripts that train an encoder
#   NGPUS      processes on this node. Above 1 the run starts with
#              torchrun --standalone --nproc_per_node=NGPUS
#   CKPT       --ckpt of the evaluation scripts
#   HEAD       projection head of the SupCon checkpoint the evaluation scripts read by
#              default: mlp (Table 1) or none (Table 4)
#   TRIAL      --trial (default 0)
#   SEED       --seed (default 42, the paper's seed)
#   SAVE_ROOT  --save_root (default ./save in the repository root)
#   EXTRA      further flags appended verbatim to every training or evaluation command,
#              split on white space like a shell command line. Quotes group words,
#              and nothing is expanded.
#   DRY_RUN=1  print the commands, one per line, instead of running them. Run the printed
#              lines from the repository root.
#   FORCE=1    run a job even when its output (results.json, an nc_*.json) exists. By
#              default such a job is skipped with a note on stderr.
#   PYTHON     Python interpreter (default python)
#   TORCHRUN   launcher of multi-process runs (default torchrun)
# Relative paths in DATA, CKPT and SAVE_ROOT are taken from the directory the script is
# started in, while the defaults are relative to the repository root.
#
# Run folders follow main_*.py: {SAVE_ROOT}/SupCon/{dataset}_models/{run name}, with the
# run names of ce_run_dir, supcon_run_dir and linear_run_dir below. A flag in EXTRA that
# enters the run name (--batch_size, --learning_rate, --temp, --trial, --model,
# --weight_decay) moves the folder away from the one computed here, so set such values
# through the variables above.

set -euo pipefail

# Make the relative paths that the caller passed absolute before leaving its directory.
for path_variable in DATA CKPT SAVE_ROOT; do
    if [[ -n ${!path_variable:-} && ${!path_variable} != /* ]]; then
        printf -v "$path_variable" '%s/%s' "$PWD" "${!path_variable}"
    fi
done

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

PYTHON=${PYTHON:-python}
TORCHRUN=${TORCHRUN:-torchrun}
SAVE_ROOT=${SAVE_ROOT:-./save}
if [[ $SAVE_ROOT != / ]]; then
    SAVE_ROOT=${SAVE_ROOT%/}
fi
DRY_RUN=${DRY_RUN:-0}
FORCE=${FORCE:-0}
TRIAL=${TRIAL:-0}
SEED=${SEED:-42}
HEAD=${HEAD:-mlp}

# The temperature grid of the CIFAR experiments (appendix A.2 and A.3).
TEMPERATURES=(0.07 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0)
# The global batch sizes of the Figure 2 grid (appendix A.3).
BATCH_SIZES=(32 64 128 256 512 1024 2048)

die() {
    echo "error: $*" >&2
    exit 2
}

# ---------------------------------------------------------------------------- recipes

# paper_recipe DATASET STAGE: set recipe_* to the paper's values for one stage. STAGE is
# ce (main_ce.py), supcon (main_supcon.py), linear (main_linear.py) or prototype
# (main_prototype.py).
paper_recipe() {
    local dataset=$1 stage=$2
    recipe_dataset=$dataset
    recipe_stage=$stage
    recipe_flags=()
    recipe_warm=0
    recipe_warm_off=0
    recipe_lr=
    recipe_epochs=
    recipe_temp=
    recipe_wd=1e-4

    case $dataset in
        cifar10 | cifar100)
            recipe_data=./datasets/
            recipe_model=resnet18
            recipe_size=32
            recipe_ngpus=1
            recipe_batch=512
            ;;
        imagenet100 | imagenet)
            recipe_data=./datasets/imagenet
            recipe_model=resnet50
            recipe_size=224
            recipe_batch=256
            if [[ $dataset == imagenet100 ]]; then recipe_ngpus=4; else recipe_ngpus=8; fi
            ;;
        *) die "unknown dataset '$dataset'; expected cifar10, cifar100, imagenet100 or imagenet" ;;
    esac

    case $stage in
        ce | supcon) paper_training_recipe ;;
        linear) paper_linear_recipe ;;
        prototype) ;;
        *) die "unknown stage '$stage'" ;;
    esac
}

# Encoder training (main_ce.py, main_supcon.py): SGD with momentum 0.9, weight decay 1e-4,
# cosine annealing to lr * 0.1^3 (appendix A.2.1 and A.2.2).
paper_training_recipe() {
    recipe_flags=(--cosine --lr_decay_rate 0.1 --weight_decay "$recipe_wd" --momentum 0.9)
    case $recipe_dataset in
        cifar10 | cifar100)
            recipe_epochs=1000
            # Learning rate 0.2 for classifier learning, 0.05 for SupCon. The paper picks
            # the temperature from TEMPERATURES per cell (scripts/cifar_temperature_sweep.sh),
            # and 0.1 is the default of a single run.
            if [[ $recipe_stage == ce ]]; then recipe_lr=0.2; else recipe_lr=0.05; fi
            recipe_temp=0.1
            # The CIFAR recipe has no warm-up, but main_*.py switches --warm on for a
            # global batch above 256 (as the SupContrast scripts do); --warm_epochs 0
            # turns it off, so the rate follows the plain cosine schedule.
            recipe_flags+=(--warm_epochs 0)
            recipe_warm_off=1
            ;;
        imagenet100 | imagenet)
            recipe_epochs=500
            # Base rates, scaled by global_batch / 256 (--lr_scaling linear), are 0.1 for
            # classifier learning, and 0.8 (ImageNet-100) or 0.1 (ImageNet-1K) for SupCon.
            if [[ $recipe_stage == ce ]]; then
                recipe_lr=0.1
            elif [[ $recipe_dataset == imagenet100 ]]; then
                recipe_lr=0.8
            else
                recipe_lr=0.1
            fi
            # Temperature: appendix A.2 gives 0.1 for both ImageNet sets, and A.2.3 gives
            # 0.1 for SupCon and 0.2 for classifier learning. The per-family statement of
            # A.2.3 is the more specific one, so classifier learning uses 0.2 on
            # ImageNet-100 and ImageNet-1K.
            if [[ $recipe_stage == ce ]]; then recipe_temp=0.2; else recipe_temp=0.1; fi
            # Linear warm-up from 0.01 over 10 epochs, or 5 epochs for SupCon on
            # ImageNet-1K (A.2.2).
            local warm_epochs=10
            if [[ $recipe_stage == supcon && $recipe_dataset == imagenet ]]; then warm_epochs=5; fi
            recipe_warm=1
            recipe_flags+=(--lr_scaling linear --warm --warm_epochs "$warm_epochs" --syncBN)
            ;;
    esac
    if [[ $recipe_stage == supcon ]]; then
        recipe_flags+=(--feat_dim 128)
    fi
}

# Linear probing (main_linear.py, appendix A.2.2 phase 2): SGD with momentum 0.9, no
# weight decay, step decay by 0.2. The rates are not scaled with the batch, because the
# appendix mentions scaling for pre-training only.
paper_linear_recipe() {
    recipe_wd=0
    # --temp is the NormFace temperature of --classifier normalized. The appendix gives
    # none for probing, so the probe uses 0.1, the SupCon temperature of the encoders.
    recipe_temp=0.1
    case $recipe_dataset in
        cifar10 | cifar100)
            # A.2.2 gives 100 epochs for CIFAR. The "typical 90 epochs" of A.2 is the
            # ImageNet setting.
            recipe_epochs=100
            recipe_lr=5.0
            recipe_flags=(--lr_decay_epochs 60,75,90)
            ;;
        imagenet100 | imagenet)
            recipe_epochs=90
            if [[ $recipe_dataset == imagenet100 ]]; then recipe_lr=2.0; else recipe_lr=0.8; fi
            recipe_flags=(--lr_decay_epochs 30,60,80)
            ;;
    esac
    # The probe has no warm-up: --warm_epochs 0 keeps main_linear.py from switching it
    # on above a global batch of 256.
    recipe_flags+=(--lr_decay_rate 0.2 --weight_decay "$recipe_wd" --momentum 0.9 --warm_epochs 0)
    recipe_warm_off=1
}

# resolve_settings [paper]: set the lower-case settings from the environment, falling
# back to recipe_*. With "paper", take the paper's values and read only DATA from the
# environment (TRIAL, SEED and SAVE_ROOT apply to every command in any case).
resolve_settings() {
    if [[ ${1:-} == paper ]]; then
        data=${DATA:-$recipe_data} model=$recipe_model epochs=$recipe_epochs batch=$recipe_batch
        ngpus=$recipe_ngpus lr=$recipe_lr temp=$recipe_temp
        format_settings
        return
    fi
    data=${DATA:-$recipe_data}
    model=${MODEL:-$recipe_model}
    epochs=${EPOCHS:-$recipe_epochs}
    batch=${BATCH:-$recipe_batch}
    ngpus=${NGPUS:-$recipe_ngpus}
    lr=${LR:-$recipe_lr}
    temp=${TEMP:-$recipe_temp}
    [[ $ngpus =~ ^[1-9][0-9]*$ ]] || die "NGPUS must be a positive integer, got '$ngpus'"
    [[ $batch =~ ^[1-9][0-9]*$ ]] || die "BATCH must be a positive integer, got '$batch'"
    format_settings
}

# ---------------------------------------------------------------------------- run names

declare -A FLOAT_TEXT=()

# format_float NAME VALUE: set variable NAME to VALUE as Python's str(float(VALUE)) prints
# it ("1" -> "1.0", "1e-4" -> "0.0001", empty stays empty), because main_*.py format run
# names from parsed floats. Results are cached, so a sweep starts Python once per
# distinct value.
format_float() {
    local name=$1 value=$2 text
    if [[ -z $value ]]; then
        printf -v "$name" '%s' ''
        return
    fi
    if [[ -z ${FLOAT_TEXT[$value]+set} ]]; then
        text=$("$PYTHON" -c 'import sys; print(float(sys.argv[1]))' "$value" 2>/dev/null) ||
            die "'$value' is not a number (or $PYTHON cannot be started)"
        FLOAT_TEXT[$value]=$text
    fi
    printf -v "$name" '%s' "${FLOAT_TEXT[$value]}"
}

# Set lr_text, temp_text and wd_text, the run-name forms of the current settings.
format_settings() {
    format_float lr_text "$lr"
    format_float temp_text "$temp"
    format_float wd_text "$recipe_wd"
}

# The run-folder functions below set the variable run_dir instead of printing, so that
# a sweep of hundreds of jobs starts no subshell per job.

# Set warm_text to "_warm" when main_*.py switches the warm-up on: with --warm or a
# global batch above 256, unless --warm_epochs 0 switches it off.
set_warm_text() {
    warm_text=
    if ((recipe_warm_off == 0 && (recipe_warm == 1 || batch * ngpus > 256))); then
        warm_text=_warm
    fi
}

# Set schedule_text to "_cosine_warm" or "_cosine" as main_*.py append them.
set_schedule_text() {
    set_warm_text
    schedule_text=_cosine$warm_text
}

# ce_run_dir DATASET LOSS: set run_dir to the run folder of main_ce.py for the current
# settings.
ce_run_dir() {
    local dataset=$1 loss=$2
    set_schedule_text
    run_dir="$SAVE_ROOT/SupCon/${dataset}_models/SupCE_${dataset}_${model}_${loss}_lr_${lr_text}"
    run_dir+="_decay_${wd_text}_bsz_${batch}_temp_${temp_text}_trial_${TRIAL}${schedule_text}"
}

# supcon_run_dir DATASET HEAD: set run_dir to the run folder of main_supcon.py (method
# SupCon).
supcon_run_dir() {
    local dataset=$1 head=$2 head_part=
    [[ $head == mlp ]] || head_part=_head_$head
    set_schedule_text
    run_dir="$SAVE_ROOT/SupCon/${dataset}_models/SupCon_${dataset}_${model}_lr_${lr_text}"
    run_dir+="_decay_${wd_text}_bsz_${batch}_temp_${temp_text}_trial_${TRIAL}${head_part}"
    run_dir+=$schedule_text
}

# Set ckpt_text to "{parent folder name}_{file name without extension}" of a checkpoint
# path, the part of the main_linear.py and main_prototype.py run names that names it.
set_ckpt_text() {
    local ckpt=$1 parent file
    file=${ckpt##*/}
    parent=.
    [[ $ckpt == */* ]] && parent=${ckpt%/*}
    parent=${parent##*/}
    # As Python's os.path.splitext: a leading dot does not start an extension.
    if [[ ${file:1} == *.* ]]; then file=${file%.*}; fi
    ckpt_text=${parent}_$file
}

# linear_run_dir DATASET CLASSIFIER CKPT: set run_dir to the run folder of main_linear.py.
linear_run_dir() {
    local dataset=$1 classifier=$2 ckpt=$3
    set_warm_text
    set_ckpt_text "$ckpt"
    run_dir="$SAVE_ROOT/SupCon/${dataset}_models/Linear_${classifier}_${ckpt_text}"
    run_dir+="_lr_${lr_text}_bsz_${batch}_trial_${TRIAL}${warm_text}"
}

# prototype_run_dir DATASET CKPT: set run_dir to the run folder of main_prototype.py
# --feature encoder.
prototype_run_dir() {
    set_ckpt_text "$2"
    run_dir="$SAVE_ROOT/SupCon/${1}_models/Prototype_encoder_${ckpt_text}_trial_${TRIAL}"
}

# default_supcon_ckpt DATASET HEAD: set default_ckpt to last.pth of the SupCon run that
# scripts/{DATASET}_supcon.sh (HEAD mlp) or {DATASET}_supcon_nohead.sh (HEAD none) writes
# with the paper's settings. This replaces the current recipe and settings.
default_supcon_ckpt() {
    paper_recipe "$1" supcon
    resolve_settings paper
    supcon_run_dir "$1" "$2"
    default_ckpt=$run_dir/last.pth
}

# ---------------------------------------------------------------------------- launching

# Print the arguments as one command line that shlex.split and bash read back unchanged.
print_command() {
    local out=() word
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then
            out+=("$word")
        else
            out+=("'${word//\'/\'\\\'\'}'")
        fi
    done
    printf '%s\n' "${out[*]}"
}

# Split EXTRA into the array extra_args with the quoting rules of xargs: quotes group
# words, and nothing is expanded.
split_extra() {
    extra_args=()
    [[ -n ${EXTRA:-} ]] || return 0
    local words
    words=$(printf '%s' "$EXTRA" | xargs -r -n1 printf '%s\n') ||
        die "EXTRA is not a valid list of flags (unbalanced quotes?): $EXTRA"
    mapfile -t extra_args <<< "$words"
}

# launch NPROC DONE_FILE SCRIPT ARGS...: run SCRIPT with ARGS and EXTRA, through torchrun
# when NPROC > 1. DONE_FILE is the output that marks the job as finished ("" for none).
launch() {
    local nproc=$1 done_file=$2
    shift 2
    if [[ -n $done_file && -e $done_file && $FORCE != 1 ]]; then
        echo "skip: $done_file exists (FORCE=1 runs the job again)" >&2
        return 0
    fi
    local command
    if ((nproc > 1)); then
        command=("$TORCHRUN" --standalone "--nproc_per_node=$nproc" "$@")
    else
        command=("$PYTHON" "$@")
    fi
    command+=("${extra_args[@]}")
    if [[ $DRY_RUN == 1 ]]; then
        print_command "${command[@]}"
    else
        echo "+ $(print_command "${command[@]}")" >&2
        "${command[@]}"
    fi
}

# Run a command without EXTRA (used for plotting), or print it under DRY_RUN=1.
launch_plain() {
    if [[ $DRY_RUN == 1 ]]; then
        print_command "$@"
    else
        echo "+ $(print_command "$@")" >&2
        "$@"
    fi
}

split_extra

# ---------------------------------------------------------------------------- jobs

# Flags shared by every command of one dataset.
data_flags() {
    data_args=(--dataset "$recipe_dataset" --data_folder "$data" --size "$recipe_size")
}

# run_classifier_learning DATASET LOSS: one main_ce.py run (Table 1 (I)).
run_classifier_learning() {
    local dataset=$1 loss=$2
    paper_recipe "$dataset" ce
    resolve_settings
    launch_classifier_learning "$dataset" "$loss"
}

# launch_classifier_learning DATASET LOSS [FLAGS...]: main_ce.py with the current settings.
launch_classifier_learning() {
    local dataset=$1 loss=$2
    shift 2
    data_flags
    ce_run_dir "$dataset" "$loss"
    launch "$ngpus" "$run_dir/results.json" main_ce.py \
        "${data_args[@]}" --model "$model" --loss "$loss" --temp "$temp" \
        --epochs "$epochs" --batch_size "$batch" --learning_rate "$lr" "${recipe_flags[@]}" \
        --seed "$SEED" --trial "$TRIAL" --save_root "$SAVE_ROOT" "$@"
}

# run_supcon DATASET HEAD: SupCon pre-training (Table 1 (II) with mlp, Table 4 with none).
run_supcon() {
    local dataset=$1 head=$2
    paper_recipe "$dataset" supcon
    resolve_settings
    launch_supcon "$dataset" "$head"
}

launch_supcon() {
    local dataset=$1 head=$2
    data_flags
    supcon_run_dir "$dataset" "$head"
    launch "$ngpus" "$run_dir/results.json" main_supcon.py \
        "${data_args[@]}" --model "$model" --method SupCon --head "$head" --temp "$temp" \
        --epochs "$epochs" --batch_size "$batch" --learning_rate "$lr" "${recipe_flags[@]}" \
        --seed "$SEED" --trial "$TRIAL" --save_root "$SAVE_ROOT"
}

# run_linear DATASET CLASSIFIER: linear or normalized linear probing of CKPT (default: the
# SupCon checkpoint with projection head HEAD trained by the paper's recipe).
run_linear() {
    local dataset=$1 classifier=$2 ckpt=${CKPT:-}
    if [[ -z $ckpt ]]; then
        default_supcon_ckpt "$dataset" "$HEAD"
        ckpt=$default_ckpt
    fi
    paper_recipe "$dataset" linear
    resolve_settings
    launch_linear "$dataset" "$classifier" "$ckpt"
}

launch_linear() {
    local dataset=$1 classifier=$2 ckpt=$3 temp_args=()
    [[ $classifier == normalized ]] && temp_args=(--temp "$temp")
    data_flags
    linear_run_dir "$dataset" "$classifier" "$ckpt"
    launch "$ngpus" "$run_dir/results.json" main_linear.py \
        "${data_args[@]}" --ckpt "$ckpt" --classifier "$classifier" \
        "${temp_args[@]}" --epochs "$epochs" --batch_size "$batch" --learning_rate "$lr" \
        "${recipe_flags[@]}" --seed "$SEED" --trial "$TRIAL" --save_root "$SAVE_ROOT"
}

# run_prototype DATASET: class-mean prototype classifier of CKPT (default as run_linear).
run_prototype() {
    local dataset=$1 ckpt=${CKPT:-}
    if [[ -z $ckpt ]]; then
        default_supcon_ckpt "$dataset" "$HEAD"
        ckpt=$default_ckpt
    fi
    paper_recipe "$dataset" prototype
    resolve_settings
    launch_prototype "$dataset" "$ckpt"
}

launch_prototype() {
    local dataset=$1 ckpt=$2
    data_flags
    prototype_run_dir "$dataset" "$ckpt"
    launch "$ngpus" "$run_dir/results.json" main_prototype.py \
        "${data_args[@]}" --ckpt "$ckpt" --feature encoder \
        --batch_size "$batch" --seed "$SEED" --trial "$TRIAL" --save_root "$SAVE_ROOT"
}
