"""Time and peak memory of nc_metrics against the obvious numpy code for the intra ranks.

    .venv/bin/python bench/bench_nc_metrics.py                 # all cases, a few minutes
    .venv/bin/python bench/bench_nc_metrics.py --cases cifar100 --repeats 3

Cases (random clustered float32 features, a noisy copy of the class centres as weight):
    cifar100          N = 50,000, dim = 512, K = 100: CIFAR-100 training features.
    imagenet_scaled   N = 64,000, dim = 2048, K = 50: ImageNet-1K's class size (1,280) and
                      ResNet-50 width with 50 of its 1,000 classes; streamed in batches of
                      1,024 with a 64 MiB memory budget, so the features spill to disk.
    imagenet_classes  N = 128,000, dim = 2048, K = 1000: ImageNet-1K's class count with
                      128 images per class, spilled; nc_metrics only, because the numpy
                      baseline would need 1,000 eigendecompositions of 2048 x 2048.

Methods:
    numpy_intra   np.cov and np.linalg.eigvalsh per class on the unit features: the
                  obvious code for erank_intra alone (eigenvalues only, no entropy).
    one_shot      nc_metrics.compute_nc_metrics(features, labels, weight): every metric.
    streaming     NCAccumulator.update per batch of 1,024, then compute(weight).

Each measurement runs in a fresh process. Seconds exclude data generation; peak RSS is
the process maximum (ru_maxrss) and "above data" subtracts the RSS after generation.
Results are printed as a Markdown table.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    "cifar100": dict(num_samples=50_000, dim=512, num_classes=100, budget=None,
                     methods=("numpy_intra", "one_shot", "streaming")),
    "imagenet_scaled": dict(num_samples=64_000, dim=2048, num_classes=50, budget=64 * 2**20,
                            methods=("numpy_intra", "streaming")),
    "imagenet_classes": dict(num_samples=128_000, dim=2048, num_classes=1000,
                             budget=64 * 2**20, methods=("streaming",)),
}
BATCH = 1024


def current_rss_mb():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_data(num_samples, dim, num_classes, seed=0):
    """Return float32 features around class centres, shuffled labels and a weight."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, dim), dtype=np.float32)
    labels = np.repeat(np.arange(num_classes), num_samples // num_classes)
    rng.shuffle(labels)
    features = np.empty((len(labels), dim), dtype=np.float32)
    for start in range(0, len(labels), 8192):
        rows = labels[start:start + 8192]
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32)
        features[start:start + len(rows)] = centres[rows] + 0.8 * noise
    weight = centres + 0.3 * rng.standard_normal(centres.shape, dtype=np.float32)
    return features, labels, weight


def numpy_intra(features, labels, num_classes):
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    return [np.linalg.eigvalsh(np.cov(unit[labels == c], rowvar=False))
            for c in range(num_classes)]


def run_worker(case_name, method):
    sys.path.insert(0, ROOT)
    import nc_metrics

    case = CASES[case_name]
    features, labels, weight = make_data(case["num_samples"], case["dim"],
                                         case["num_classes"])
    base_rss = current_rss_mb()
    start = time.perf_counter()
    spilled = False
    if method == "numpy_intra":
        numpy_intra(features, labels, case["num_classes"])
    elif method == "one_shot":
        nc_metrics.compute_nc_metrics(features, labels, weight)
    else:
        with nc_metrics.NCAccumulator(case["num_classes"], case["dim"],
                                      memory_budget=case["budget"]) as accumulator:
            for first in range(0, len(labels), BATCH):
                accumulator.update(features[first:first + BATCH], labels[first:first + BATCH])
            accumulator.compute(weight)
            spilled = accumulator.spill_path is not None
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak,
                      "above_data_mb": peak - base_rss, "spilled": spilled}))


def measure(case_name, method, repeats):
    """Run a worker `repeats` times in fresh processes and keep the fastest run."""
    results = []
    for _ in range(repeats):
        output = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", case_name, method],
            check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    return min(results, key=lambda result: result["seconds"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES),
                        help="cases to run (default: all)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per measurement; the fastest is reported (default 1)")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "METHOD"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(*args.worker)
        return

    import torch
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numpy {np.__version__}, load average {os.getloadavg()[0]:.1f}")
    print()
    print("| case | N x dim, K | method | seconds | vs numpy_intra | peak RSS MB "
          "| above data MB | spilled |")
    print("|---|---|---|---|---|---|---|---|")
    for case_name in args.cases:
        case = CASES[case_name]
        shape = f"{case['num_samples']:,} x {case['dim']}, {case['num_classes']}"
        baseline = None
        for method in case["methods"]:
            result = measure(case_name, method, args.repeats)
            if method == "numpy_intra":
                baseline = result["seconds"]
            ratio = f"{result['seconds'] / baseline:.2f}" if baseline else "-"
            print(f"| {case_name} | {shape} | {method} | {result['seconds']:.1f} | {ratio} "
                  f"| {result['peak_rss_mb']:.0f} | {result['above_data_mb']:.0f} "
                  f"| {'yes' if result['spilled'] else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
