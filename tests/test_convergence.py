"""Tests of the Figure 1 / Table 3 convergence definitions and of plot_nc_convergence.py."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest

from conftest import ROOT, run_script

import util

SCRIPT = os.path.join(ROOT, "scripts", "plot_nc_convergence.py")
_spec = importlib.util.spec_from_file_location("plot_nc_convergence", SCRIPT)
plot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot)


def reference_ewma(values, alpha):
    """Closed form: avg_t = a^t x_0 + (1 - a) sum_{k=1..t} a^(t-k) x_k."""
    values = np.asarray(values, dtype=np.float64)
    out = []
    for t in range(len(values)):
        total = alpha ** t * values[0]
        total += sum((1 - alpha) * alpha ** (t - k) * values[k] for k in range(1, t + 1))
        out.append(total)
    return out


def reference_convergence_index(averages, level, lower_is_better):
    """Smallest k such that every average from k on is past level, else None."""
    for k in range(len(averages)):
        tail = np.asarray(averages[k:])
        if np.all(tail <= level) if lower_is_better else np.all(tail >= level):
            return k
    return None


# ----------------------------------------------------------------------------------------
# Definitions on synthetic curves
# ----------------------------------------------------------------------------------------

def test_ewma_closed_form():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    assert plot.ewma(values, 0.9) == pytest.approx(reference_ewma(values, 0.9), rel=1e-12)


def test_ewma_zero_alpha_is_identity():
    values = [0.3, 0.1, 0.7]
    assert plot.ewma(values, 0.0) == values


def test_convergence_exponential_decay_raw():
    steps = np.arange(100)
    iterations = list(10 * steps)
    values = list(np.exp(-steps / 10.0))
    expected_step = math.ceil(10.0 * math.log(20.0))
    assert plot.convergence_iteration(iterations, values, 0.0, 0.0) == 10 * expected_step


def test_convergence_exponential_decay_smoothed():
    steps = np.arange(120)
    iterations = list(5 * steps)
    values = list(np.exp(-steps / 8.0))
    averages = reference_ewma(values, 0.9)
    index = reference_convergence_index(averages, 0.05 * values[0], lower_is_better=True)
    assert plot.convergence_iteration(iterations, values, 0.0, 0.9) == iterations[index]


def test_convergence_dips_in_and_out():
    iterations = [0, 10, 20, 30, 40, 50, 60]
    values = [1.0, 0.5, 0.04, 0.5, 0.03, 0.02, 0.01]
    assert plot.convergence_iteration(iterations, values, 0.0, 0.0) == 40


def test_convergence_rising_metric():
    iterations = [0, 1, 2, 3, 4]
    values = [2.0, 5.0, 8.7, 8.6, 9.0]  # threshold 2 + 0.95 * (9 - 2) = 8.65
    assert plot.convergence_iteration(iterations, values, 9.0, 0.0) == 4


def test_convergence_overshoot_counts():
    values = [1.0, 0.5, -0.2, -0.1]
    assert plot.convergence_iteration([0, 1, 2, 3], values, 0.0, 0.0) == 2


def test_convergence_never_constant():
    assert plot.convergence_iteration([0, 1, 2], [1.0, 1.0, 1.0], 0.0, 0.9) is None


def test_convergence_never_leaves_at_end():
    values = [1.0, 0.01, 0.01, 0.9]
    assert plot.convergence_iteration([0, 1, 2, 3], values, 0.0, 0.0) is None


def test_convergence_first_value_optimal():
    assert plot.convergence_iteration([7, 8], [0.0, 0.0], 0.0, 0.9) == 7


def test_match_first_reach_counts():
    values = [1.0, 0.4, 0.6, 0.3]
    assert plot.match_iteration([0, 1, 2, 3], values, 0.5, True, 0.0) == 1


def test_match_rising_metric():
    values = [2.0, 4.0, 6.5, 6.0]
    assert plot.match_iteration([0, 1, 2, 3], values, 6.0, False, 0.0) == 2


def test_match_never():
    assert plot.match_iteration([0, 1, 2], [1.0, 0.9, 0.8], 0.5, True, 0.0) is None


def test_settle_within_two_percent():
    values = [10.0, 5.0, 1.05, 0.97, 1.2, 1.01, 1.0]
    assert plot.settle_iteration([0, 1, 2, 3, 4, 5, 6], values, 0.0) == 5


def test_settle_smoothed_reference():
    iterations = list(range(60))
    values = list(5.0 + 3.0 * np.exp(-np.arange(60) / 6.0))
    averages = reference_ewma(values, 0.9)
    final = averages[-1]
    index = next(k for k in range(60)
                 if all(abs(a - final) <= 0.02 * final for a in averages[k:]))
    assert plot.settle_iteration(iterations, values, 0.9) == index


def test_share_first_evaluation_is_zero():
    assert plot.share(50, 50, 1000) == 0.0


def test_share_ratio():
    assert plot.share(250, 50, 1000) == 0.25


def test_share_never():
    assert plot.share(None, 50, 1000) is None


# ----------------------------------------------------------------------------------------
# Script on fake run folders (EWMA a = 0, so the expected shares follow from the raw values)
# ----------------------------------------------------------------------------------------

LOWER = [1.0, 0.8, 0.7, 0.65, 0.62, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
RANKS = [2.0, 4.0, 5.0, 5.5, 5.8, 6.0, 6.0, 6.0, 6.0, 6.0, 6.0]
MIR = [0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
CURVES = {
    "ce": {
        "instance_alignment": LOWER, "weight_alignment": LOWER,
        "erank_intra": [10 * v for v in LOWER],
        "erank_inter": RANKS, "erank_weights": RANKS, "mir": MIR,
    },
    "nonl": {
        "instance_alignment": [1.0, 0.5, 0.3, 0.1, 0.04] + [0.03] * 6,
        "weight_alignment": [1.0, 0.5, 0.3, 0.1, 0.04] + [0.03] * 6,
        "erank_intra": [10.0, 5.0, 3.0, 1.0, 0.4] + [0.3] * 6,
        "erank_inter": [2.0, 5.0, 8.0, 8.5, 8.7] + [9.0] * 6,
        "erank_weights": [2.0, 5.0, 8.0, 8.5, 8.7] + [9.0] * 6,
        "mir": [0.5, 0.8, 0.9, 0.95, 0.98] + [0.99] * 6,
    },
    "supcon": {
        "instance_alignment": [0.5, 0.3, 0.2, 0.1, 0.05, 0.04, 0.02, 0.01, 0.01],
        "erank_intra": [5.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.2, 0.1, 0.1],
        "erank_inter": [2.0, 4.0, 6.0, 8.0, 8.7, 8.8, 8.9, 9.0, 9.0],
    },
}


def write_run(folder, args, curves, step=100):
    os.makedirs(folder)
    with open(os.path.join(folder, "args.json"), "w") as handle:
        json.dump(args, handle)
    length = len(next(iter(curves.values())))
    with open(os.path.join(folder, "metrics.jsonl"), "w") as handle:
        for index in range(length):
            nc = {metric: values[index] for metric, values in curves.items()}
            handle.write(json.dumps({"iter": step * index, "epoch": index + 1, "nc": nc}))
            handle.write("\n")
            handle.write(json.dumps({"epoch": index + 1, "loss": 1.0, "lr": 0.1}) + "\n")
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    ce = write_run(tmp_path / "ce_run", {"script": "main_ce", "loss": "ce", "n_cls": 10,
                                         "total_iters": 1000}, CURVES["ce"])
    nonl = write_run(tmp_path / "nonl_run", {"script": "main_ce", "loss": "nonl",
                                             "n_cls": 10, "total_iters": 1000},
                     CURVES["nonl"])
    supcon = write_run(tmp_path / "supcon_run", {"script": "main_supcon", "method": "SupCon",
                                                 "n_cls": 10}, CURVES["supcon"])
    return ce, nonl, supcon


def test_script_writes_table_and_figure(runs, tmp_path):
    ce, nonl, supcon = runs
    out = tmp_path / "figure" / "figure1.png"
    table_path = tmp_path / "convergence.json"
    result = run_script(SCRIPT, ce, nonl, supcon, "--baseline", ce, "--out", str(out),
                        "--json", str(table_path), "--ewma", "0")
    assert result.returncode == 0, result.stderr
    with open(out, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    written = json.loads(table_path.read_text())

    assert written["baseline"] == "ce"
    assert written["ewma"] == 0.0
    assert written["metrics"] == list(plot.METRICS)
    assert written["iterations"] == {"ce": 1000, "nonl": 1000, "supcon": 800}

    never = dict.fromkeys(plot.METRICS)
    assert written["table3"]["I"]["ce"] == never
    # Every nonl curve passes its threshold at the fifth evaluation, iteration 400.
    assert written["table3"]["I"]["nonl"] == dict.fromkeys(plot.METRICS, 0.4)
    assert written["table3"]["I"]["supcon"] == {
        "instance_alignment": 600 / 800, "weight_alignment": None, "erank_weights": None,
        "erank_intra": 600 / 800, "erank_inter": 400 / 800, "mir": None}

    # ce settles at iteration 500 for every metric; nonl reaches ce's final value at
    # iteration 100 (lower-is-better curves) or 200 (the others).
    assert set(written["table3"]["II"]) == {"nonl", "supcon"}
    assert written["table3"]["II"]["nonl"] == {
        "instance_alignment": 0.2, "weight_alignment": 0.2, "erank_weights": 0.4,
        "erank_intra": 0.2, "erank_inter": 0.4, "mir": 0.4}
    assert written["table3"]["II"]["supcon"] == {
        "instance_alignment": 0.0, "weight_alignment": None, "erank_weights": None,
        "erank_intra": 0.0, "erank_inter": 0.4, "mir": None}
    assert "never" in result.stdout
    assert "n/a" in result.stdout


def test_script_missing_args_json(runs, tmp_path):
    ce, _, _ = runs
    empty = tmp_path / "empty_run"
    empty.mkdir()
    result = run_script(SCRIPT, str(empty), "--baseline", ce, "--out",
                        str(tmp_path / "f.png"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(empty) in lines[0]
    assert "args.json" in lines[0]
    assert "Traceback" not in result.stderr


def test_main_without_nc_records(runs, tmp_path):
    ce, _, _ = runs
    folder = tmp_path / "plain_run"
    folder.mkdir()
    (folder / "args.json").write_text(json.dumps({"loss": "ntce", "n_cls": 10}))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 2.0}) + "\n")
    with pytest.raises(util.UsageError, match=f"no NC records in {folder}.*--nc_freq"):
        plot.main([str(folder), "--baseline", ce, "--out", str(tmp_path / "f.png")])


def test_main_invalid_json_line(runs, tmp_path):
    ce, _, _ = runs
    with open(os.path.join(ce, "metrics.jsonl"), "a") as handle:
        handle.write("{not json\n")
    with pytest.raises(util.UsageError, match="line 23 is not valid JSON"):
        plot.main([ce, "--baseline", ce, "--out", str(tmp_path / "f.png")])


def test_main_ewma_out_of_range(runs, tmp_path):
    ce, _, _ = runs
    with pytest.raises(util.UsageError, match="--ewma 1.0 is outside"):
        plot.main([ce, "--baseline", ce, "--out", str(tmp_path / "f.png"), "--ewma", "1"])
