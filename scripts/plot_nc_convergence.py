"""Plot NC metrics during training (Figure 1) and print convergence speeds (Table 3).

Reads the NC records that main_ce.py and main_supcon.py write with --nc_freq:

    python scripts/plot_nc_convergence.py save/SupCon/cifar100_models/RUN_NONL \\
        save/SupCon/cifar100_models/RUN_NTCE --baseline save/SupCon/cifar100_models/RUN_CE \\
        --out figure1.png --json convergence.json

The pure functions (ewma, convergence_iteration, match_iteration, settle_iteration,
build_table3) can be imported without matplotlib.
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import util  # noqa: E402  (needs the repository root on sys.path)

# Figure 1 panels and Table 3 columns, in the order of Figure 1.
METRICS = ("instance_alignment", "weight_alignment", "erank_weights", "erank_intra",
           "erank_inter", "mir")
TITLES = {
    "instance_alignment": "Instance alignment",
    "weight_alignment": "Weight alignment",
    "erank_weights": "Weights erank",
    "erank_intra": "Intra erank",
    "erank_inter": "Inter erank",
    "mir": "MIR",
}
LOWER_IS_BETTER = {"instance_alignment", "weight_alignment", "erank_intra"}
THRESHOLD_FRACTION = 0.95
SETTLE_TOLERANCE = 0.02

DESCRIPTION = __doc__.split("\n\n")[0]
EPILOG = """\
Definitions. avg is the exponentially weighted moving average of a metric over its
logged evaluations: avg_0 = x_0, avg_t = a * avg_{t-1} + (1 - a) * x_t with a = --ewma.

(I) NC convergence: the first logged iteration from which avg stays past the 95%
threshold first + 0.95 * (optimum - first) for every later evaluation, where first is the
metric's first logged value and the optimum is 0 for the alignments and intra erank, K-1
for the inter and weights eranks and 1 for MIR (K = args.json n_cls). Shown as a share of
the run's iterations (args.json total_iters, else its last logged iteration).

(II) Match of the baseline: the first logged iteration at which a run's avg reaches the
baseline's final avg (at most for the alignments and intra erank, at least for the
others), as a share of the iteration from which the baseline's own avg stays within 2%
of its final value. It exceeds 100% when a run is slower than the baseline.

"0%" means the target is met at the first logged evaluation; "never" means it is not
met (null in --json); "n/a" means the run did not log the metric, or the baseline
settles at iteration 0. Each run is labelled by args.json "loss" (main_ce.py) or
"method" in lower case (main_supcon.py). Table (I) lists the baseline too, (II) does not.
"""


# ----------------------------------------------------------------------------------------
# Convergence definitions
# ----------------------------------------------------------------------------------------

def ewma(values, alpha):
    """Return the exponentially weighted moving averages avg_t = a avg_{t-1} + (1-a) x_t."""
    averages = []
    for value in values:
        if averages:
            averages.append(alpha * averages[-1] + (1.0 - alpha) * value)
        else:
            averages.append(float(value))
    return averages


def optimum(metric, num_classes):
    """Return the metric's value under exact collapse used for the 95% threshold."""
    if metric in LOWER_IS_BETTER:
        return 0.0
    if metric == "mir":
        # NOTE: a simplex ETF gives MIR = 0.952 for K = 10 and 0.998 for K = 100 (see
        # nc_metrics.py), so with this optimum of 1 the MIR threshold can be out of reach
        # for small K.
        return 1.0
    return float(num_classes - 1)


def threshold(first, best, fraction=THRESHOLD_FRACTION):
    """Return first + fraction * (best - first), the level that counts as converged."""
    return first + fraction * (best - first)


def convergence_iteration(iterations, values, best, alpha, fraction=THRESHOLD_FRACTION):
    """Return the first logged iteration from which the average stays past the threshold.

    The threshold lies `fraction` of the way from the first value to `best`. Past it means
    on the side of `best`, so overshooting `best` counts as converged. A metric whose
    first value already equals `best` converges at the first evaluation. Returns None
    when the last average is not past the threshold.
    """
    if not values:
        return None
    averages = ewma(values, alpha)
    first = averages[0]
    direction = (best > first) - (best < first)
    level = threshold(first, best, fraction)
    converged_from = None
    for iteration, average in zip(iterations, averages):
        if (average - level) * direction >= 0:
            if converged_from is None:
                converged_from = iteration
        else:
            converged_from = None
    return converged_from


def match_iteration(iterations, values, target, lower_is_better, alpha):
    """Return the first logged iteration at which the average reaches target, else None."""
    for iteration, average in zip(iterations, ewma(values, alpha)):
        if (average <= target) if lower_is_better else (average >= target):
            return iteration
    return None


def settle_iteration(iterations, values, alpha, tolerance=SETTLE_TOLERANCE):
    """Return the first logged iteration from which the average stays near its final value.

    Near means within `tolerance` times the final value's magnitude. The result is the
    last logged iteration at the latest.
    """
    averages = ewma(values, alpha)
    final = averages[-1]
    settled_from = None
    for iteration, average in zip(iterations, averages):
        if abs(average - final) <= tolerance * abs(final):
            if settled_from is None:
                settled_from = iteration
        else:
            settled_from = None
    return settled_from


def share(iteration, first_iteration, denominator):
    """Return iteration / denominator, 0 at the first logged evaluation, None if unmet."""
    if iteration is None:
        return None
    if iteration == first_iteration:
        return 0.0
    if denominator <= 0:
        return None
    return iteration / denominator


def build_table3(runs, baseline, alpha):
    """Build Table 3 as {"I": {label: {metric: share}}, "II": {label: {metric: share}}}.

    Args:
        runs: list of dicts with "label", "num_classes", "total_iters" and "series"
            ({metric: (iterations, values)}); the baseline may be among them.
        baseline: the baseline's dict in the same form.
        alpha: EWMA coefficient a.
    """
    table = {"I": {}, "II": {}}
    for run in [baseline] + [run for run in runs if run is not baseline]:
        row = {}
        for metric in METRICS:
            iterations, values = run["series"].get(metric, ([], []))
            if not values:
                row[metric] = None
                continue
            best = optimum(metric, run["num_classes"])
            reached = convergence_iteration(iterations, values, best, alpha)
            row[metric] = share(reached, iterations[0], run["total_iters"])
        table["I"][run["label"]] = row

    for run in runs:
        if run is baseline:
            continue
        row = {}
        for metric in METRICS:
            iterations, values = run["series"].get(metric, ([], []))
            base_iterations, base_values = baseline["series"].get(metric, ([], []))
            if not values or not base_values:
                row[metric] = None
                continue
            target = ewma(base_values, alpha)[-1]
            settled = settle_iteration(base_iterations, base_values, alpha)
            reached = match_iteration(iterations, values, target, metric in LOWER_IS_BETTER,
                                      alpha)
            row[metric] = share(reached, iterations[0], settled)
        table["II"][run["label"]] = row
    return table


# ----------------------------------------------------------------------------------------
# Run folders
# ----------------------------------------------------------------------------------------

def run_label(args, folder):
    """Return the run's label: its loss for main_ce.py, its method for main_supcon.py."""
    script = args.get("script")
    if script == "main_supcon" or (script is None and "method" in args and "loss" not in args):
        return str(args.get("method", folder.name)).lower()
    if "loss" in args:
        return str(args["loss"])
    return folder.name


def read_run(folder):
    """Read a run folder's args.json and NC records into the dict build_table3 takes."""
    folder = Path(folder)
    args_path = folder / "args.json"
    metrics_path = folder / "metrics.jsonl"
    if not folder.is_dir():
        raise util.UsageError(f"run folder {folder} not found; pass a folder that contains "
                              f"args.json and metrics.jsonl")
    if not args_path.is_file():
        raise util.UsageError(f"args.json missing in {folder}; pass a run folder written by "
                              f"main_ce.py or main_supcon.py")
    try:
        args = json.loads(args_path.read_text())
    except ValueError as error:
        raise util.UsageError(f"{args_path} is not valid JSON ({error}); rewrite or "
                              f"remove that run") from None
    if "n_cls" not in args:
        raise util.UsageError(f"n_cls missing in {args_path}; pass a run folder written by "
                              f"main_ce.py or main_supcon.py")

    records = []
    if metrics_path.is_file():
        for number, line in enumerate(metrics_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise util.UsageError(f"{metrics_path} line {number} is not valid JSON; "
                                      f"remove that line") from None
            if isinstance(record, dict) and "nc" in record and "iter" in record:
                records.append(record)
    if not records:
        raise util.UsageError(f"no NC records in {metrics_path}; train the run with "
                              f"--nc_freq N to log NC metrics every N iterations")
    records.sort(key=lambda record: record["iter"])

    series = {}
    for metric in METRICS:
        points = [(record["iter"], record["nc"].get(metric)) for record in records]
        points = [(it, float(v)) for it, v in points
                  if isinstance(v, (int, float)) and math.isfinite(v)]
        if points:
            series[metric] = ([it for it, _ in points], [v for _, v in points])
    total = args.get("total_iters") or records[-1]["iter"]
    return {"folder": str(folder), "label": run_label(args, folder),
            "num_classes": int(args["n_cls"]), "total_iters": total, "series": series}


def make_labels_unique(runs):
    """Append the folder name to labels that several runs share."""
    labels = [run["label"] for run in runs]
    for run in runs:
        if labels.count(run["label"]) > 1:
            run["label"] = f"{run['label']} ({Path(run['folder']).name})"


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------

def format_share(value):
    if value is None:
        return "never"
    if value == 0:
        return "0%"
    return f"{100.0 * value:.1f}%"


def print_table(title, rows, is_measured):
    """Print one part of Table 3, with "n/a" where is_measured(label, metric) is False."""
    labels = list(rows)
    width = max([len("run")] + [len(label) for label in labels]) + 2
    columns = [max(len(TITLES[metric]), 6) + 2 for metric in METRICS]
    print(title)
    print("run".ljust(width) + "".join(TITLES[m].rjust(w) for m, w in zip(METRICS, columns)))
    for label in labels:
        cells = []
        for metric, column in zip(METRICS, columns):
            if is_measured(label, metric):
                text = format_share(rows[label][metric])
            else:
                text = "n/a"
            cells.append(text.rjust(column))
        print(label.ljust(width) + "".join(cells))
    print()


def draw_figure(runs, alpha, out_path):
    """Draw one panel per metric: each run's average, its 95% threshold and convergence."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, metric in zip(axes.flat, METRICS):
        for index, run in enumerate(runs):
            if metric not in run["series"]:
                continue
            colour = colours[index % len(colours)]
            iterations, values = run["series"][metric]
            averages = ewma(values, alpha)
            best = optimum(metric, run["num_classes"])
            axis.plot(iterations, values, color=colour, alpha=0.25, linewidth=0.8)
            axis.plot(iterations, averages, color=colour, linewidth=1.5, label=run["label"])
            axis.axhline(threshold(averages[0], best), color="red", linestyle="--",
                         linewidth=0.8)
            reached = convergence_iteration(iterations, values, best, alpha)
            if reached is not None:
                point = iterations.index(reached)
                axis.plot(reached, averages[point], "o", color=colour, markersize=7,
                          markerfacecolor="none", markeredgewidth=1.5)
        axis.set_title(TITLES[metric])
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    axes.flat[0].legend()
    figure.suptitle(f"NC metrics during training (EWMA a = {alpha}; red dashed: 95% "
                    f"threshold; circle: convergence)")
    figure.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=150)
    plt.close(figure)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = util.ArgumentParser(description=DESCRIPTION, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run folders with args.json and metrics.jsonl NC records")
    parser.add_argument("--baseline", required=True, metavar="RUN_DIR",
                        help="run folder of the reference run for Table 3 (II), usually "
                             "the cross-entropy run; it is also plotted")
    parser.add_argument("--out", required=True,
                        help="path of the Figure 1 PNG to write")
    parser.add_argument("--json", default=None,
                        help="path of a JSON file to write Table 3 to, shares as fractions")
    parser.add_argument("--ewma", type=float, default=0.9,
                        help="EWMA coefficient a in [0, 1): weight of the previous average "
                             "(default 0.9; 0 uses the raw values)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.ewma < 1.0:
        raise util.UsageError(f"--ewma {args.ewma} is outside [0, 1); pass for example 0.9")
    return args


def main(argv=None):
    args = parse_args(argv)
    baseline = read_run(args.baseline)
    runs = [baseline]
    for folder in args.runs:
        if os.path.realpath(folder) != os.path.realpath(args.baseline):
            runs.append(read_run(folder))
    make_labels_unique(runs)
    table = build_table3(runs, baseline, args.ewma)

    by_label = {run["label"]: run for run in runs}
    settled = {metric: settle_iteration(*baseline["series"][metric], args.ewma)
               for metric in METRICS if metric in baseline["series"]}

    def logged(label, metric):
        return metric in by_label[label]["series"]

    def comparable(label, metric):
        if not logged(label, metric) or metric not in settled:
            return False
        return settled[metric] > 0 or table["II"][label][metric] is not None

    print_table(f"Table 3 (I): NC convergence to the 95% threshold, % of each run's "
                f"iterations (EWMA a = {args.ewma})", table["I"], logged)
    settled_text = ", ".join(f"{metric} {it}" for metric, it in settled.items())
    print_table(f"Table 3 (II): iterations to reach {baseline['label']}'s final value, % of "
                f"the iteration where {baseline['label']} settles ({settled_text})",
                table["II"], comparable)

    draw_figure(runs, args.ewma, args.out)
    print(f"figure: {args.out}")
    if args.json:
        output = {
            "baseline": baseline["label"],
            "ewma": args.ewma,
            "metrics": list(METRICS),
            "iterations": {run["label"]: run["total_iters"] for run in runs},
            "table3": table,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(output, indent=2) + "\n")
        print(f"table: {args.json}")


if __name__ == "__main__":
    util.run_main(lambda: main(sys.argv[1:]))
