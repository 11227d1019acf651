"""Shared pieces of the four training scripts.

Sections, in the order a script uses them: errors and the entry point, options,
distributed set-up, reproducibility, schedules and optimiser, checkpoints, run records,
progress meters, and feature extraction. Datasets and transforms live in data.py.
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import random
import subprocess
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn
import torch.nn as nn
import torch.nn.functional as F

from networks.resnet_big import (SupCEResNet, SupConResNet, feature_dim, model_dict,
                                 stem_for_size)


# ----------------------------------------------------------------------------------------
# Errors and the entry point
# ----------------------------------------------------------------------------------------

class UsageError(Exception):
    """Invalid command-line input; the scripts print its message as one line and exit 2."""


def run_main(main):
    """Run a script's main() and turn a UsageError into one line on stderr and exit code 2.

    Other exceptions keep their traceback: they are bugs or hardware faults, not input
    errors. Under torchrun a non-zero exit of one rank makes the launcher stop the others,
    so a failing rank ends the job instead of leaving its peers blocked in a collective.
    """
    try:
        main()
    except UsageError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------

class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and a pointer to --help, no usage dump."""

    def error(self, message):
        self.exit(2, f'error: {message}; see {self.prog} --help\n')


def check_model_name(name):
    if name is not None and name not in model_dict:
        raise UsageError(f'unknown --model {name!r}; choose one of {", ".join(model_dict)}')
    return name


def add_training_args(parser, epochs, learning_rate, lr_decay_epochs, lr_decay_rate=0.1,
                      weight_decay=1e-4):
    """Add the flags shared by main_ce.py, main_supcon.py and main_linear.py.

    Names and meanings follow the SupContrast scripts, so their command lines work here
    unchanged; the defaults of the epoch count and the schedule differ by script.
    """
    group = parser.add_argument_group('optimisation')
    group.add_argument('--batch_size', type=int, default=256,
                       help='images per process and step; the global batch is this times '
                            'the number of processes (paper: 512 on CIFAR, 256 per GPU on '
                            'ImageNet)')
    group.add_argument('--epochs', type=int, default=epochs,
                       help=f'number of training epochs (default {epochs})')
    group.add_argument('--learning_rate', type=float, default=learning_rate,
                       help='initial SGD learning rate; with --lr_scaling linear, the rate '
                            f'for a global batch of 256 (default {learning_rate})')
    group.add_argument('--lr_scaling', choices=['none', 'linear'], default='none',
                       help='linear: multiply --learning_rate by global_batch / 256, the '
                            "paper's rule for ImageNet")
    group.add_argument('--lr_decay_epochs', type=str, default=lr_decay_epochs,
                       help='comma-separated epochs after which the step schedule '
                            'multiplies the rate by --lr_decay_rate (ignored with --cosine)')
    group.add_argument('--lr_decay_rate', type=float, default=lr_decay_rate,
                       help='step decay factor; --cosine ends at learning_rate * '
                            'lr_decay_rate^3 (paper: 0.1, so the cosine floor is lr * 1e-3)')
    group.add_argument('--weight_decay', type=float, default=weight_decay,
                       help=f'SGD weight decay (default {weight_decay:g})')
    group.add_argument('--momentum', type=float, default=0.9, help='SGD momentum (paper: 0.9)')
    group.add_argument('--cosine', action='store_true',
                       help='cosine annealing per epoch instead of step decay (paper: on)')
    group.add_argument('--warm', action='store_true',
                       help='linear warm-up from 0.01 over --warm_epochs, per iteration; '
                            'switched on automatically when the global batch exceeds 256')
    group.add_argument('--warm_epochs', type=int, default=10,
                       help='warm-up length in epochs (paper: 10; 5 for ImageNet-1K SupCon); '
                            '0 turns the warm-up off, also the automatic one')

    group = parser.add_argument_group('devices')
    group.add_argument('--syncBN', action='store_true',
                       help='synchronise BatchNorm statistics across processes (paper: on '
                            'for ImageNet)')
    add_device_args(group)
    add_run_args(parser)


def add_model_args(parser):
    """Add --model and --width for the scripts that build a new encoder."""
    group = parser.add_argument_group('model')
    group.add_argument('--model', type=str, default='resnet50',
                       help='encoder: resnet18, resnet34, resnet50 or resnet101 (paper: '
                            'resnet18 on CIFAR, resnet50 on ImageNet)')
    group.add_argument('--width', type=int, default=64,
                       help='base width of the ResNet in channels (standard: 64); smaller '
                            'values give the small networks used for CPU runs')


def add_device_args(group):
    group.add_argument('--amp', action='store_true',
                       help='bfloat16 autocast on CUDA; the losses keep their logits in '
                            'float32')
    group.add_argument('--channels_last', action='store_true',
                       help='channels-last memory format, faster convolutions on recent GPUs')


def add_run_args(parser):
    """Add the flags that every script has: run identity, records, resume, seeds, I/O."""
    group = parser.add_argument_group('run')
    group.add_argument('--print_freq', type=int, default=10,
                       help='print progress every this many iterations')
    group.add_argument('--save_freq', type=int, default=50,
                       help='keep a ckpt_epoch_N.pth every this many epochs (last.pth is '
                            'rewritten every epoch)')
    group.add_argument('--trial', type=str, default='0',
                       help='free label appended to the run name, to repeat a setting')
    group.add_argument('--seed', type=int, default=42, help='random seed (paper: 42)')
    group.add_argument('--save_root', type=str, default='./save',
                       help='root of the save layout {save_root}/SupCon/{dataset}_models/'
                            '{run_name}/ and {dataset}_tensorboard/{run_name}/')
    group.add_argument('--resume', type=str, default=None, metavar='PATH',
                       help='continue from this checkpoint (last.pth of the same run)')
    group.add_argument('--dry_run', action='store_true',
                       help='parse the options, build the transforms and the model, print '
                            'the plan and exit without reading data or writing files')


def check_positive(value, flag):
    if value is not None and value < 1:
        raise UsageError(f'{flag} must be at least 1, got {value}')


def check_temperature(opt):
    if opt.temp <= 0:
        raise UsageError(f'--temp must be positive, got {opt.temp}; the paper uses values '
                         'from 0.07 to 1.0')


def finish_training_options(opt, script, run_name):
    """Derive world size, global batch, learning rate, warm-up and save folders in place.

    run_name is a format string filled from the options; '_cosine' and '_warm' are
    appended as in the SupContrast scripts.
    """
    check_positive(opt.batch_size, '--batch_size')
    check_positive(opt.epochs, '--epochs')
    check_positive(opt.width, '--width')
    check_model_name(opt.model)
    try:
        opt.lr_decay_epochs = [int(epoch) for epoch in str(opt.lr_decay_epochs).split(',')
                               if epoch.strip()]
    except ValueError:
        raise UsageError(f'--lr_decay_epochs must be comma-separated integers, got '
                         f'{opt.lr_decay_epochs!r}') from None

    opt.script = script
    opt.world_size = int(os.environ.get('WORLD_SIZE', 1))
    opt.global_batch = opt.batch_size * opt.world_size
    opt.base_learning_rate = opt.learning_rate
    if opt.lr_scaling == 'linear':
        opt.learning_rate = opt.base_learning_rate * opt.global_batch / 256

    opt.run_name = run_name.format(**vars(opt))
    if opt.cosine:
        opt.run_name += '_cosine'
    if opt.warm_epochs < 0:
        raise UsageError(f'--warm_epochs must be 0 or more, got {opt.warm_epochs}')
    # As in SupContrast, a global batch above 256 switches the warm-up on, unless
    # --warm_epochs 0 asks for none (the paper's CIFAR recipe has no warm-up).
    opt.warm = (opt.warm or opt.global_batch > 256) and opt.warm_epochs > 0
    if opt.warm:
        opt.run_name += '_warm'
        opt.warmup_from = 0.01
        if opt.cosine:
            eta_min = opt.learning_rate * opt.lr_decay_rate ** 3
            opt.warmup_to = eta_min + (opt.learning_rate - eta_min) * (
                1 + math.cos(math.pi * opt.warm_epochs / opt.epochs)) / 2
        else:
            opt.warmup_to = opt.learning_rate
    set_save_folders(opt)


def set_save_folders(opt):
    root = os.path.join(opt.save_root, 'SupCon')
    opt.save_folder = os.path.join(root, f'{opt.dataset}_models', opt.run_name)
    opt.tb_folder = os.path.join(root, f'{opt.dataset}_tensorboard', opt.run_name)


def print_plan(opt, model):
    """Print what a run will do: the commit, every option, processes and batch sizes."""
    parameters = sum(p.numel() for p in model.parameters())
    print(f'git commit: {git_commit()}')
    print('options: ' + json.dumps(options_dict(opt), sort_keys=True))
    print(f'world size: {opt.world_size}, batch per process: {opt.batch_size}, '
          f'global batch: {opt.global_batch}')
    if hasattr(opt, 'learning_rate'):
        print(f'learning rate: {opt.learning_rate:g}')
    print(f'model: {opt.model} (width {opt.width}), {parameters / 1e6:.2f} M parameters')
    print(f'run folder: {opt.save_folder}')


def options_dict(opt):
    """Return the options as a JSON-safe dict (checkpoints store this, not a Namespace)."""
    return {key: value for key, value in vars(opt).items()
            if isinstance(value, (str, int, float, bool, list, tuple, dict, type(None)))}


def git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=here,
                              capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


# ----------------------------------------------------------------------------------------
# Distributed set-up
# ----------------------------------------------------------------------------------------

def init_distributed(opt, timeout_minutes=30):
    """Set opt.rank, opt.local_rank, opt.world_size and opt.device from torchrun's variables.

    A single process needs no launcher. Under torchrun each process takes the GPU of its
    local rank and joins an nccl group (gloo on CPU). The collective timeout makes a rank
    whose peer died fail instead of waiting for ever.
    """
    opt.rank = int(os.environ.get('RANK', 0))
    opt.local_rank = int(os.environ.get('LOCAL_RANK', 0))
    opt.world_size = int(os.environ.get('WORLD_SIZE', 1))
    if torch.cuda.is_available():
        torch.cuda.set_device(opt.local_rank)
        opt.device = torch.device('cuda', opt.local_rank)
    else:
        opt.device = torch.device('cpu')

    if opt.amp and not (opt.device.type == 'cuda' and torch.cuda.is_bf16_supported()):
        raise UsageError('--amp needs a CUDA GPU with bfloat16 support; none was found, so '
                         'run without --amp')
    if opt.world_size > 1 and not dist.is_initialized():
        backend = 'nccl' if opt.device.type == 'cuda' else 'gloo'
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    if opt.rank != 0:
        # Rank 0 alone prints progress; the others speak only through errors.
        sys.stdout = open(os.devnull, 'w')


def is_main_process(opt):
    return getattr(opt, 'rank', 0) == 0


def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor):
    """Sum a tensor over all processes in place (a no-op in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Synchronised BatchNorm for processes on CPUs (gloo), where torch.nn.SyncBatchNorm
    refuses to run (its kernels and DDP's support for it are GPU-only, as of torch 2.14).

    In training, the per-channel sum, sum of squares and count are summed over processes
    with a differentiable all-reduce, so every process normalises with the statistics of
    the global batch and the gradients match one process that saw the whole batch.
    Outside training it is plain BatchNorm.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f'expected at least 2-D input, got {input.dim()}-D')

    def forward(self, input):
        if not (self.training and is_distributed()):
            return super().forward(input)
        channels = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        count = torch.tensor([input.numel() / channels], dtype=input.dtype, device=input.device)
        local = torch.cat([input.sum(dims), (input * input).sum(dims), count])
        total = torch.distributed.nn.functional.all_reduce(local)
        n = total[-1]
        mean = total[:channels] / n
        var = total[channels:2 * channels] / n - mean * mean

        if self.track_running_stats:
            self.update_running_stats(mean.detach(), var.detach(), n.detach())

        shape = [1, channels] + [1] * (input.dim() - 2)
        output = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output

    @torch.no_grad()
    def update_running_stats(self, mean, var, count):
        """Track the global statistics as BatchNorm does (the variance unbiased)."""
        self.num_batches_tracked += 1
        momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                    else self.momentum)
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        self.running_var.mul_(1 - momentum).add_(momentum * var * count / (count - 1).clamp(min=1))


def convert_sync_batchnorm(model, device):
    """Replace every BatchNorm with torch.nn.SyncBatchNorm, or CPUSyncBatchNorm off CUDA."""
    if device.type == 'cuda':
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.__class__ = CPUSyncBatchNorm
    return model


def wrap_model(model, opt):
    """Move a model to the device and, under torchrun, convert BatchNorm and wrap in DDP."""
    if opt.syncBN and opt.world_size > 1:
        model = convert_sync_batchnorm(model, opt.device)
    model = model.to(opt.device)
    if getattr(opt, 'channels_last', False):
        model = model.to(memory_format=torch.channels_last)
    if opt.world_size > 1:
        device_ids = [opt.device.index] if opt.device.type == 'cuda' else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


def unwrap(model):
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def autocast(opt):
    """bfloat16 autocast when --amp is on, else a context that changes nothing."""
    if getattr(opt, 'amp', False):
        return torch.autocast(device_type='cuda', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(images, opt):
    images = images.to(opt.device, non_blocking=True)
    if getattr(opt, 'channels_last', False):
        images = images.contiguous(memory_format=torch.channels_last)
    return images


# ----------------------------------------------------------------------------------------
# Reproducibility
# ----------------------------------------------------------------------------------------

def set_seed(seed):
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_epoch(opt, epoch):
    """Seed the random streams of one epoch from (seed, epoch, rank).

    Shuffling and augmentation of epoch e then depend on nothing else, which is what makes
    a resumed run end with the same weights as an uninterrupted one.
    """
    set_seed(opt.seed + 1000 * epoch + 1_000_003 * getattr(opt, 'rank', 0))


# ----------------------------------------------------------------------------------------
# Schedules and optimiser
# ----------------------------------------------------------------------------------------

def adjust_learning_rate(args, optimizer, epoch):
    """Set the epoch's rate: cosine to lr * lr_decay_rate^3, or step decay."""
    lr = args.learning_rate
    if args.cosine:
        eta_min = lr * args.lr_decay_rate ** 3
        lr = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / args.epochs)) / 2
    else:
        steps = sum(epoch > milestone for milestone in args.lr_decay_epochs)
        lr = lr * args.lr_decay_rate ** steps
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr


def warmup_learning_rate(args, epoch, batch_id, total_batches, optimizer):
    """Overwrite the rate during warm-up: linear per iteration from 0.01 to warmup_to."""
    if args.warm and epoch <= args.warm_epochs:
        progress = (batch_id + (epoch - 1) * total_batches) / (args.warm_epochs * total_batches)
        lr = args.warmup_from + progress * (args.warmup_to - args.warmup_from)
        for param_group in optimizer.param_groups:
            param_group['lr'] = lr


def set_optimizer(opt, model):
    return torch.optim.SGD(model.parameters(), lr=opt.learning_rate, momentum=opt.momentum,
                           weight_decay=opt.weight_decay)


# ----------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------

def save_model(model, optimizer, opt, epoch, save_file, **extra):
    """Write a checkpoint atomically: a temporary file in the same folder, then a rename.

    A crash while writing leaves the previous file intact. Options are stored as a plain
    dict, so the file loads with torch.load(weights_only=True).
    """
    state = {
        'opt': options_dict(opt),
        'model': unwrap(model).state_dict(),
        'optimizer': optimizer.state_dict() if optimizer is not None else None,
        'epoch': epoch,
        **extra,
    }
    temporary = f'{save_file}.tmp{os.getpid()}'
    torch.save(state, temporary)
    os.replace(temporary, save_file)


def save_epoch(model, optimizer, opt, epoch, **extra):
    """On rank 0, rewrite last.pth and keep ckpt_epoch_N.pth every --save_freq epochs."""
    if not is_main_process(opt):
        return
    save_model(model, optimizer, opt, epoch, os.path.join(opt.save_folder, 'last.pth'), **extra)
    if epoch % opt.save_freq == 0:
        save_model(model, optimizer, opt, epoch,
                   os.path.join(opt.save_folder, f'ckpt_epoch_{epoch}.pth'), **extra)


def load_checkpoint(path):
    """Load a checkpoint of this project or of the SupContrast scripts, without unpickling code.

    SupContrast stores its options as an argparse.Namespace, the one class allowed beyond
    tensors and containers; it is returned as a dict under 'opt'.
    """
    if not path:
        raise UsageError('no checkpoint given; pass --ckpt PATH to a last.pth file')
    if not os.path.isfile(path):
        raise UsageError(f'checkpoint not found: {path}; check the path (runs save to '
                         '{save_root}/SupCon/{dataset}_models/{run_name}/last.pth)')
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # torch raises many types for damaged or foreign files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ''
        raise UsageError(f'cannot read checkpoint {path}: {type(error).__name__}: '
                         f'{first_line}') from None
    if not isinstance(checkpoint, dict) or 'model' not in checkpoint:
        raise UsageError(f'{path} is not a training checkpoint: it has no "model" entry')
    options = checkpoint.get('opt', {})
    checkpoint['opt'] = vars(options) if isinstance(options, argparse.Namespace) else dict(options or {})
    return checkpoint


def strip_wrapper_prefixes(state_dict):
    """Remove the 'module.' that DataParallel or DDP put into parameter names."""
    return {key.replace('module.', ''): value for key, value in state_dict.items()}


def load_matching_state(module, state_dict, path, what):
    """Load state_dict into module only if every key and shape matches; never partially.

    The error names the counts of missing and unexpected keys, which is what a wrong
    --model, --width or file produces.
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [key for key in expected
                  if key in state_dict and state_dict[key].shape != expected[key].shape]
    if missing or unexpected or mismatched:
        example = (missing or unexpected or mismatched)[0]
        raise UsageError(f'{path} does not fit {what}: {len(missing)} missing keys, '
                         f'{len(unexpected)} unexpected keys, {len(mismatched)} shape '
                         f'mismatches (first: {example}); check --model and --width')
    module.load_state_dict(state_dict)


def resume_from(opt, model, optimizer):
    """Restore model and optimiser from opt.resume; return (first epoch to run, checkpoint)."""
    checkpoint = load_checkpoint(opt.resume)
    load_matching_state(unwrap(model), strip_wrapper_prefixes(checkpoint['model']),
                        opt.resume, 'this model')
    if checkpoint.get('optimizer') is None:
        raise UsageError(f'{opt.resume} has no optimiser state, so training cannot resume '
                         'from it')
    optimizer.load_state_dict(checkpoint['optimizer'])
    print(f'resumed from {opt.resume} at epoch {checkpoint["epoch"]}')
    return checkpoint['epoch'] + 1, checkpoint


def add_pretrained_args(parser):
    """Add the flags of the scripts that evaluate a trained encoder."""
    group = parser.add_argument_group('pre-trained encoder')
    group.add_argument('--ckpt', type=str, required=True,
                       help='checkpoint of main_supcon.py or main_ce.py (or of the SupContrast '
                            'scripts) whose encoder is evaluated')
    group.add_argument('--feature', choices=['encoder', 'head'], default='encoder',
                       help='classify the encoder output (default, as linear probing does) or '
                            'the L2-normalised projection-head output')
    group.add_argument('--model', type=str, default=None,
                       help='encoder architecture; default: the one stored in the checkpoint')
    group.add_argument('--width', type=int, default=None,
                       help='base width; default: the one stored in the checkpoint')


def pretrained_options(checkpoint_opt, opt):
    """Complete a checkpoint's options with the defaults of the script that wrote it.

    SupContrast checkpoints lack head, width and stem: they used an MLP head, width 64
    and the 3x3 CIFAR stem for every image size.
    """
    options = dict(checkpoint_opt)
    if options.get('script') != 'main_ce':
        options.setdefault('head', 'mlp')
        options.setdefault('feat_dim', 128)
    options.setdefault('width', 64)
    options.setdefault('model', 'resnet50')
    if opt.model is not None:
        options['model'] = opt.model
    if opt.width is not None:
        options['width'] = opt.width
    ours = 'script' in checkpoint_opt
    options['stem'] = stem_for_size(options.get('size', 32)) if ours else 'cifar'
    return options


def classifier_input_dim(options, feature):
    """Dimension of the features that a probe or prototype classifier receives."""
    if feature == 'head' and options.get('head') not in (None, 'none'):
        return options.get('feat_dim', 128)
    return feature_dim(options['model'], options['width'])


def load_pretrained(opt):
    """Build the network stored in opt.ckpt, load it strictly and return (model, options).

    The model is in eval mode on opt.device. A main_ce.py checkpoint gives a SupCEResNet,
    any other a SupConResNet; options are the checkpoint's, completed by
    pretrained_options.
    """
    checkpoint = load_checkpoint(opt.ckpt)
    state = strip_wrapper_prefixes(checkpoint['model'])
    options = pretrained_options(checkpoint['opt'], opt)
    try:
        if 'fc.weight' in state:
            model = SupCEResNet(name=options['model'], num_classes=state['fc.weight'].shape[0],
                                width=options['width'], stem=options['stem'],
                                normalized='fc.bias' not in state)
        else:
            model = SupConResNet(name=options['model'], head=options['head'],
                                 feat_dim=options['feat_dim'], width=options['width'],
                                 stem=options['stem'])
    except ValueError as error:
        raise UsageError(f'cannot build the network of {opt.ckpt}: {error}') from None
    load_matching_state(model, state, opt.ckpt,
                        f'--model {options["model"]} --width {options["width"]}')
    return model.to(opt.device).eval(), options


def load_encoder(opt):
    """Load opt.ckpt for evaluation; return (model, images -> features for opt.feature).

    Records the checkpoint's options in opt.ckpt_opt and its architecture in opt.model
    and opt.width, so run records name the network that was evaluated.
    """
    model, options = load_pretrained(opt)
    opt.ckpt_opt = options
    opt.model, opt.width = options['model'], options['width']
    return model, feature_extractor(model, opt.feature)


def feature_extractor(model, feature):
    """Return images -> features for the chosen output of a pre-trained network."""
    if feature == 'encoder':
        return model.encoder
    if not isinstance(model, SupConResNet):
        raise UsageError('--feature head needs a checkpoint with a projection head '
                         '(main_supcon.py); this one is a classifier, use --feature encoder')
    return model


# ----------------------------------------------------------------------------------------
# Run records: args.json, metrics.jsonl, results.json and TensorBoard
# ----------------------------------------------------------------------------------------

class RunRecorder:
    """Write a run's records; every method is a no-op outside rank 0."""

    def __init__(self, opt, resume_epoch=None):
        self.active = is_main_process(opt)
        self.metrics_path = os.path.join(opt.save_folder, 'metrics.jsonl')
        self.writer = None
        if not self.active:
            return
        os.makedirs(opt.save_folder, exist_ok=True)
        os.makedirs(opt.tb_folder, exist_ok=True)
        write_json(os.path.join(opt.save_folder, 'args.json'), options_dict(opt))
        if resume_epoch is not None:
            self._drop_records_after(resume_epoch)
        elif os.path.exists(self.metrics_path):
            os.remove(self.metrics_path)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print('tensorboard is not installed; scalars go to metrics.jsonl only')
        else:
            self.writer = SummaryWriter(log_dir=opt.tb_folder, flush_secs=30)

    def _drop_records_after(self, epoch):
        """Keep the records up to the resumed epoch; later ones are about to be redone."""
        if not os.path.exists(self.metrics_path):
            return
        with open(self.metrics_path) as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        kept = [record for record in records if record.get('epoch', 0) <= epoch]
        with open(self.metrics_path, 'w') as handle:
            handle.writelines(json.dumps(record) + '\n' for record in kept)

    def log(self, record, step=None):
        """Append one record to metrics.jsonl and its numbers to TensorBoard."""
        if not self.active:
            return
        with open(self.metrics_path, 'a') as handle:
            handle.write(json.dumps(record) + '\n')
        if self.writer is not None:
            step = record.get('epoch') if step is None else step
            for key, value in flatten(record).items():
                if key not in ('epoch', 'iter') and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)

    def finish(self, opt, results):
        if not self.active:
            return
        write_json(os.path.join(opt.save_folder, 'results.json'), results)
        if self.writer is not None:
            self.writer.close()


def flatten(record, prefix=''):
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f'{prefix}{key}/'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def write_json(path, value):
    temporary = f'{path}.tmp{os.getpid()}'
    with open(temporary, 'w') as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
        handle.write('\n')
    os.replace(temporary, path)


# ----------------------------------------------------------------------------------------
# Progress meters
# ----------------------------------------------------------------------------------------

class AverageMeter:
    """Running average of a value, weighted by the number of samples behind each update."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


def format_seconds(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


def print_progress(epoch, index, total, batch_time, data_time, losses, extra=''):
    """Print one progress line with time per batch and the estimated rest of the epoch."""
    eta = format_seconds(batch_time.avg * (total - index - 1))
    print(f'Train: [{epoch}][{index + 1}/{total}]\t'
          f'BT {batch_time.val:.3f} ({batch_time.avg:.3f})\t'
          f'DT {data_time.val:.3f} ({data_time.avg:.3f})\t'
          f'loss {losses.val:.3f} ({losses.avg:.3f})\t{extra}ETA {eta}', flush=True)


class Timer:
    def __init__(self):
        self.start = time.time()

    def seconds(self):
        return time.time() - self.start


# ----------------------------------------------------------------------------------------
# Data loaders
# ----------------------------------------------------------------------------------------

class ShardSampler(torch.utils.data.Sampler):
    """Every world_size-th index from rank on: an evaluation shard with no padding.

    DistributedSampler pads the last shard with repeated samples, which would count some
    test images twice; these shards may differ in length by one instead.
    """

    def __init__(self, length, rank, world_size):
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def make_train_loader(dataset, opt):
    """Shuffled training loader; under torchrun a DistributedSampler seeded with --seed.

    Callers run sampler.set_epoch(epoch) through set_loader_epoch at each epoch start.
    """
    sampler = None
    if opt.world_size > 1:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=opt.world_size, rank=opt.rank, shuffle=True, seed=opt.seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=opt.batch_size, shuffle=sampler is None, sampler=sampler,
        num_workers=opt.num_workers, pin_memory=opt.device.type == 'cuda',
        persistent_workers=False)


def make_eval_loader(dataset, opt, batch_size=None):
    """Loader in dataset order over this process's shard, for evaluation and extraction."""
    sampler = ShardSampler(len(dataset), getattr(opt, 'rank', 0), opt.world_size)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size or opt.batch_size, shuffle=False, sampler=sampler,
        num_workers=opt.num_workers, pin_memory=opt.device.type == 'cuda')


def set_loader_epoch(loader, epoch):
    if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
        loader.sampler.set_epoch(epoch)


# ----------------------------------------------------------------------------------------
# Feature extraction and evaluation
# ----------------------------------------------------------------------------------------

def iterate_features(module, loader, opt):
    """Yield (features, labels) batches of module(images) in eval mode, without gradients.

    module is an encoder, or a whole SupConResNet for the normalised head output. Its
    train/eval mode is restored when the loop ends or is left early.
    """
    was_training = module.training
    module.eval()
    try:
        for images, labels in loader:
            images = to_device(images, opt)
            with torch.no_grad(), autocast(opt):
                features = module(images)
            yield features.float(), labels.to(opt.device, non_blocking=True)
    finally:
        module.train(was_training)


@torch.no_grad()
def evaluate(predict, loader, opt):
    """Return top-1 accuracy in percent of predict(images) -> logits over the whole loader.

    Under torchrun each process scores its own shard and the counts are summed, so every
    test image counts exactly once (the shard sampler neither pads nor drops).
    """
    counts = torch.zeros(2, dtype=torch.float64, device=opt.device)
    for images, labels in loader:
        images = to_device(images, opt)
        labels = labels.to(opt.device, non_blocking=True)
        with autocast(opt):
            logits = predict(images)
        counts[0] += (logits.argmax(dim=1) == labels).sum()
        counts[1] += labels.numel()
    all_reduce_sum(counts)
    return 100.0 * counts[0].item() / max(counts[1].item(), 1), int(counts[1].item())


def class_prototypes(class_sums, class_counts):
    """Return the L2-normalised class means: the bias-free prototype classifier.

    A class without samples gets a zero row: its cosine with every feature is 0.
    """
    means = class_sums / class_counts.clamp(min=1).unsqueeze(1)
    return F.normalize(means, dim=1)
