"""Time forward+backward of NormFaceLoss, NTCELoss and NONLLoss against direct formulations.

    python bench/bench_losses.py                          # CUDA when available, else CPU
    python bench/bench_losses.py --device cpu --repeats 10

NTCE and NONL in losses.py build the class-to-instance logits S = W_hat U^T once
([C, M] for the C classes present) and compute one log-sum-exp per class. The direct
versions below follow eq. 4 and eq. 5 of "Neural Collapse by Design: Learning Class
Prototypes on the Hypersphere" literally: every instance i gets its own row
w_hat_{y_i}^T u_j / tau over all j, an [M, M] matrix. NormFace (eq. 3) has no M x M term,
so the direct NormFace is F.cross_entropy on the [M, K] cosine logits.

Every (loss, implementation, shape) runs in a fresh subprocess, so the memory of an
earlier case does not enter its peak. Peak memory is the extra memory during one
forward+backward after the inputs exist:
- CUDA: torch.cuda.max_memory_allocated() minus torch.cuda.memory_allocated() before the
  call (tensor memory, without the caching allocator's reserve).
- CPU: peak resident set size (VmHWM in /proc/self/status, reset by writing 5 to
  /proc/self/clear_refs just before the call) minus the resident set size before the
  call. It counts every page the process touches: tensors, allocator overhead and thread
  workspaces, in 4 KiB pages. Where clear_refs is not writable, it falls back to the
  growth of ru_maxrss, which counts only memory above the earlier peak of the process.
  The printed header names the method used.

Times are the median and the minimum over --repeats calls after one untimed call. On a
machine shared with other jobs the minimum is the closer estimate of the uncontended
cost, so the header prints the load average before and after the run.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import losses  # noqa: E402  (the repository root is added to the path above)

SHAPES = [(2048, 1000, 128), (512, 100, 512)]
LOSS_NAMES = ['NormFace', 'NTCE', 'NONL']
TEMPERATURE = 0.1


# ---------------------------------------------------------------------------
# Direct formulations
# ---------------------------------------------------------------------------

def direct_normface(features, labels, weight):
    logits = F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T / TEMPERATURE
    return F.cross_entropy(logits, labels)


def direct_ntce(features, labels, weight):
    units = F.normalize(features, dim=1)
    anchors = F.normalize(weight, dim=1)[labels]
    logits = anchors @ units.T / TEMPERATURE                  # [M, M]: w_hat_{y_i}^T u_j / tau
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def direct_nonl(features, labels, weight):
    units = F.normalize(features, dim=1)
    anchors = F.normalize(weight, dim=1)[labels]
    logits = anchors @ units.T / TEMPERATURE                  # [M, M]
    negatives = labels[:, None] != labels[None, :]
    denominator = torch.logsumexp(logits.masked_fill(~negatives, float('-inf')), dim=1)
    return (denominator - logits.diagonal()).mean()


IMPLEMENTATIONS = {
    ('NormFace', 'losses.py'): losses.NormFaceLoss(TEMPERATURE),
    ('NTCE', 'losses.py'): losses.NTCELoss(TEMPERATURE),
    ('NONL', 'losses.py'): losses.NONLLoss(TEMPERATURE),
    ('NormFace', 'direct'): direct_normface,
    ('NTCE', 'direct'): direct_ntce,
    ('NONL', 'direct'): direct_nonl,
}


# ---------------------------------------------------------------------------
# Measurement in a worker process
# ---------------------------------------------------------------------------

def read_status_kib(field):
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not found in /proc/self/status')


def reset_peak_rss():
    """Reset VmHWM to the current resident set size; return False where the kernel does not allow it."""
    try:
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
        return True
    except OSError:
        return False


def make_inputs(batch, num_classes, dim, device):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch, dim, generator=generator).to(device).requires_grad_(True)
    weight = torch.randn(num_classes, dim, generator=generator).to(device).requires_grad_(True)
    labels = torch.randint(0, num_classes, (batch,), generator=generator).to(device)
    return features, labels, weight


def forward_backward(loss_fn, features, labels, weight, device):
    features.grad, weight.grad = None, None
    loss_fn(features, labels, weight).backward()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure(loss_name, implementation, batch, num_classes, dim, device_name, repeats):
    """Return {'median_ms', 'min_ms', 'peak_mib': peak extra memory, 'memory_method'} of one case."""
    device = torch.device(device_name)
    loss_fn = IMPLEMENTATIONS[(loss_name, implementation)]

    # A small call first loads kernels and thread pools, which should not count as peak memory.
    forward_backward(loss_fn, *make_inputs(64, 16, dim, device), device)
    features, labels, weight = make_inputs(batch, num_classes, dim, device)

    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        forward_backward(loss_fn, features, labels, weight, device)
        peak_bytes = torch.cuda.max_memory_allocated(device) - before
        method = 'torch.cuda.max_memory_allocated'
    elif reset_peak_rss():
        before_kib = read_status_kib('VmRSS')
        forward_backward(loss_fn, features, labels, weight, device)
        peak_bytes = (read_status_kib('VmHWM') - before_kib) * 1024
        method = 'VmHWM after clear_refs'
    else:
        # ru_maxrss is in KiB on Linux.
        before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        forward_backward(loss_fn, features, labels, weight, device)
        peak_bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) * 1024
        method = 'ru_maxrss growth'

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward_backward(loss_fn, features, labels, weight, device)
        times.append(time.perf_counter() - start)
    return {'median_ms': 1000 * statistics.median(times), 'min_ms': 1000 * min(times),
            'peak_mib': peak_bytes / 2**20, 'memory_method': method}


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def cpu_model():
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown CPU'


def parse_option(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed forward+backward calls per case; the median and the minimum are reported (default 5)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help="torch device to run on, such as 'cpu' or 'cuda:0' (default: cuda when available)")
    parser.add_argument('--worker', nargs=5, metavar=('LOSS', 'IMPL', 'M', 'K', 'D'),
                        help=argparse.SUPPRESS)
    opt = parser.parse_args(argv)
    if opt.repeats < 1:
        parser.error(f'--repeats must be >= 1, got {opt.repeats}')
    if torch.device(opt.device).type == 'cuda' and not torch.cuda.is_available():
        parser.error(f'--device {opt.device} requested but CUDA is not available; use --device cpu')
    return opt


def run_case(loss_name, implementation, shape, opt):
    """Run one case in a fresh Python process and return its measurement."""
    command = [sys.executable, os.path.abspath(__file__), '--device', opt.device,
               '--repeats', str(opt.repeats), '--worker', loss_name, implementation, *map(str, shape)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv=None):
    opt = parse_option(argv)
    if opt.worker:
        loss_name, implementation, batch, num_classes, dim = opt.worker
        result = measure(loss_name, implementation, int(batch), int(num_classes), int(dim),
                         opt.device, opt.repeats)
        print(json.dumps(result))
        return

    device = torch.device(opt.device)
    machine = torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_model()
    load_before = os.getloadavg()[0]
    rows, methods = [], set()
    for shape in SHAPES:
        for loss_name in LOSS_NAMES:
            for implementation in ('losses.py', 'direct'):
                result = run_case(loss_name, implementation, shape, opt)
                methods.add(result['memory_method'])
                rows.append((loss_name, *shape, implementation, result['median_ms'], result['min_ms'],
                             result['peak_mib']))

    print(f'device: {opt.device} ({machine}), torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, float32, tau {TEMPERATURE}, {opt.repeats} timed calls per case')
    print(f'1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after')
    print(f'peak memory: {", ".join(sorted(methods))}')
    print()
    print('| loss | M | K | d | implementation | fwd+bwd median (ms) | fwd+bwd min (ms) | peak extra memory (MiB) |')
    print('|---|---:|---:|---:|---|---:|---:|---:|')
    for loss_name, batch, num_classes, dim, implementation, median_ms, min_ms, peak in rows:
        print(f'| {loss_name} | {batch} | {num_classes} | {dim} | {implementation} '
              f'| {median_ms:.1f} | {min_ms:.1f} | {peak:.1f} |')


if __name__ == '__main__':
    main()
