"""Tests of nc_metrics against a simplex ETF and a plain numpy reference per definition."""

import math
import os

import numpy as np
import pytest
import torch

import nc_metrics

EPS = np.finfo(np.float64).eps


# ----------------------------------------------------------------------------------------
# Slow reference, written from the definitions with loops over classes, samples and pairs
# ----------------------------------------------------------------------------------------

def ref_erank_cov(rows):
    """erank of the covariance of rows (1/n), dropping eigenvalues below the rank tolerance."""
    rows = np.asarray(rows, dtype=np.float64)
    dim = rows.shape[1]
    mean = rows.mean(axis=0)
    cov = np.zeros((dim, dim))
    for row in rows:
        cov += np.outer(row - mean, row - mean)
    cov /= len(rows)
    singular = np.linalg.svd(cov, compute_uv=False)
    scale = np.mean([row @ row for row in rows])
    singular = singular[singular > max(singular.max(), scale) * dim * EPS]
    if singular.size == 0:
        return 0.0
    p = singular / singular.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def ref_entropy(gram):
    k = gram.shape[0]
    values = np.linalg.eigvalsh(gram / np.trace(gram))
    values = values[values > 0]
    return float(-np.sum(values * np.log(values)) / np.log(k))


def ref_metrics(features, labels, weight, num_classes, normalize=True):
    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if normalize:
        x = np.array([row / np.linalg.norm(row) for row in x])
    n = len(x)
    present = [c for c in range(num_classes) if np.any(labels == c)]
    means = {c: x[labels == c].mean(axis=0) for c in present}
    multi = [c for c in present if np.sum(labels == c) >= 2]

    out = {}
    out["erank_intra"] = np.mean([ref_erank_cov(x[labels == c]) for c in multi])
    out["erank_inter"] = ref_erank_cov(np.array([means[c] for c in present]))

    pair_means = []
    for c in multi:
        rows = x[labels == c]
        total, pairs = 0.0, 0
        for i in range(len(rows)):
            for j in range(len(rows)):
                if i != j:
                    total += np.sum((rows[i] - rows[j]) ** 2)
                    pairs += 1
        pair_means.append(total / pairs)
    out["instance_alignment"] = np.mean(pair_means)

    global_mean = x.mean(axis=0)
    sigma_w = np.zeros((x.shape[1], x.shape[1]))
    for row, c in zip(x, labels):
        sigma_w += np.outer(row - means[c], row - means[c])
    sigma_w /= n
    sigma_b = np.zeros_like(sigma_w)
    for c in present:
        sigma_b += np.outer(means[c] - global_mean, means[c] - global_mean)
    sigma_b /= len(present)
    out["nc1"] = np.trace(sigma_w @ np.linalg.pinv(sigma_b, hermitian=True)) / len(present)

    if weight is None:
        return out
    w = np.array([row / np.linalg.norm(row) for row in np.asarray(weight, dtype=np.float64)])
    out["erank_weights"] = ref_erank_cov(w)
    mean_dirs = {c: means[c] / np.linalg.norm(means[c]) for c in present}
    out["weight_alignment"] = np.mean(
        [np.sum((mean_dirs[c] - w[c]) ** 2) for c in labels])
    out["weight_alignment_samples"] = np.mean(
        [np.sum((row - w[c]) ** 2) for row, c in zip(x, labels)])

    gram_w = np.array([[w[a] @ w[b] for b in present] for a in present])
    gram_m = np.array([[mean_dirs[a] @ mean_dirs[b] for b in present] for a in present])
    h_w, h_m, h_joint = ref_entropy(gram_w), ref_entropy(gram_m), ref_entropy(gram_w * gram_m)
    out["mir"] = (h_w + h_m - h_joint) / min(h_w, h_m)
    out["hdr"] = abs(h_w - h_m) / max(h_w, h_m)

    agree = 0
    for row in x:
        classifier = int(np.argmax(w @ row))
        distances = [np.linalg.norm(row - means[c]) for c in present]
        agree += classifier == present[int(np.argmin(distances))]
    out["ncc_agreement"] = agree / n
    return out


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------

def simplex_etf(num_classes, dim, seed):
    """Return K unit vectors in R^dim with pairwise cosine -1/(K-1), randomly rotated."""
    rng = np.random.default_rng(seed)
    etf = np.sqrt(num_classes / (num_classes - 1)) * (
        np.eye(num_classes) - np.full((num_classes, num_classes), 1.0 / num_classes))
    etf = np.hstack([etf, np.zeros((num_classes, dim - num_classes))])
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return etf @ rotation


def clustered_data(counts, dim, spread, seed, weight_noise=0.5):
    """Return features around random class centres, labels in shuffled order and a weight."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(counts), dim))
    labels = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(labels)
    features = centres[labels] + spread * rng.standard_normal((len(labels), dim))
    weight = centres + weight_noise * rng.standard_normal(centres.shape)
    return features, labels, weight


def assert_metrics_close(actual, expected, rtol, atol=1e-12):
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert actual[key] == pytest.approx(expected[key], rel=rtol, abs=atol), key


def mir_of_etf(num_classes):
    """MIR of a simplex ETF in closed form: G_W = G_M = G has eigenvalues K/(K-1) (K-1 times)
    and 0; G*G has 1-b (K-1 times) and 1-b+Kb with b = 1/(K-1)^2."""
    k = num_classes
    h = math.log(k - 1) / math.log(k)
    b = 1.0 / (k - 1) ** 2
    p = np.array([(1 - b) / k] * (k - 1) + [(1 - b + k * b) / k])
    h_joint = float(-np.sum(p * np.log(p)) / math.log(k))
    return (2 * h - h_joint) / h


# ----------------------------------------------------------------------------------------
# Exact collapse
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [10, 100])
def test_metrics_simplex_etf(num_classes):
    dim = num_classes + 12
    directions = simplex_etf(num_classes, dim, seed=num_classes)
    counts = 2 + np.arange(num_classes) % 4
    labels = np.repeat(np.arange(num_classes), counts)
    features = (5.0 * directions[labels]).astype(np.float32)
    weight = directions * np.linspace(0.3, 3.0, num_classes)[:, None]

    metrics = nc_metrics.compute_nc_metrics(torch.from_numpy(features), labels, weight)

    assert metrics["erank_intra"] == 0.0
    assert metrics["erank_inter"] == pytest.approx(num_classes - 1, abs=1e-6)
    assert metrics["erank_weights"] == pytest.approx(num_classes - 1, abs=1e-6)
    assert metrics["weight_alignment"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["weight_alignment_samples"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["instance_alignment"] == 0.0
    assert metrics["hdr"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["mir"] == pytest.approx(mir_of_etf(num_classes), abs=1e-6)
    assert metrics["nc1"] == 0.0
    assert metrics["ncc_agreement"] == 1.0


@pytest.mark.parametrize("num_classes, reported", [(10, 0.952), (100, 0.998)])
def test_mir_simplex_etf_three_decimals(num_classes, reported):
    directions = simplex_etf(num_classes, num_classes + 3, seed=1)
    labels = np.repeat(np.arange(num_classes), 2)
    metrics = nc_metrics.compute_nc_metrics(directions[labels], labels, directions)
    assert round(metrics["mir"], 3) == reported


# ----------------------------------------------------------------------------------------
# Against the reference
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts", [
    [12, 12, 12, 12, 12],
    [3, 40, 7, 2, 25, 16],
], ids=["balanced", "imbalanced"])
def test_metrics_match_reference(counts):
    features, labels, weight = clustered_data(counts, dim=9, spread=0.4, seed=len(counts))
    expected = ref_metrics(features, labels, weight, len(counts))
    actual = nc_metrics.compute_nc_metrics(features, labels, weight)
    assert_metrics_close(actual, expected, rtol=1e-8)


def test_metrics_match_reference_float32():
    counts = [5, 30, 9, 14]
    features, labels, weight = clustered_data(counts, dim=16, spread=0.3, seed=7)
    features = features.astype(np.float32)
    expected = ref_metrics(features, labels, weight, len(counts))
    actual = nc_metrics.compute_nc_metrics(features, labels, weight)
    assert_metrics_close(actual, expected, rtol=1e-5, atol=1e-7)


def test_metrics_match_reference_raw_features():
    counts = [8, 20, 4, 11]
    features, labels, weight = clustered_data(counts, dim=6, spread=0.7, seed=3)
    features = 4.0 * features
    expected = ref_metrics(features, labels, weight, len(counts), normalize=False)
    actual = nc_metrics.compute_nc_metrics(features, labels, weight, normalize=False)
    assert_metrics_close(actual, expected, rtol=1e-8)


def test_metrics_raw_differs_from_unit():
    features, labels, weight = clustered_data([10, 10, 10], dim=5, spread=0.5, seed=2)
    raw = nc_metrics.compute_nc_metrics(3.0 * features, labels, weight, normalize=False)
    unit = nc_metrics.compute_nc_metrics(3.0 * features, labels, weight)
    assert raw["instance_alignment"] != pytest.approx(unit["instance_alignment"], rel=1e-3)


def test_metrics_absent_class_reference():
    counts = [10, 0, 7, 1, 13]
    features, labels, weight = clustered_data(counts, dim=8, spread=0.5, seed=11)
    expected = ref_metrics(features, labels, weight, len(counts))
    with pytest.warns(RuntimeWarning, match="skip 2 of 5 classes"):
        actual = nc_metrics.compute_nc_metrics(features, labels, weight)
    assert_metrics_close(actual, expected, rtol=1e-8)


def test_metrics_without_weight_omit_keys():
    features, labels, weight = clustered_data([6, 6, 6], dim=4, spread=0.5, seed=5)
    with_weight = nc_metrics.compute_nc_metrics(features, labels, weight)
    without = nc_metrics.compute_nc_metrics(features, labels)
    assert set(without) == set(nc_metrics.METRIC_KEYS) - set(nc_metrics.WEIGHT_KEYS)
    for key in without:
        assert without[key] == with_weight[key], key


def test_metrics_torch_numpy_inputs_agree():
    features, labels, weight = clustered_data([6, 9, 4], dim=7, spread=0.5, seed=8)
    from_numpy = nc_metrics.compute_nc_metrics(features, labels, weight)
    from_torch = nc_metrics.compute_nc_metrics(
        torch.from_numpy(features), torch.from_numpy(labels), torch.from_numpy(weight))
    assert from_numpy == from_torch


# ----------------------------------------------------------------------------------------
# Effective rank
# ----------------------------------------------------------------------------------------

def test_effective_rank_zero_matrix():
    assert nc_metrics.effective_rank(np.zeros((4, 6))) == 0.0


def test_effective_rank_equal_singular_values():
    rng = np.random.default_rng(0)
    left, _ = np.linalg.qr(rng.standard_normal((8, 3)))
    right, _ = np.linalg.qr(rng.standard_normal((5, 3)))
    assert nc_metrics.effective_rank(2.5 * left @ right.T) == pytest.approx(3.0, rel=1e-12)


def test_effective_rank_definition():
    matrix = np.random.default_rng(4).standard_normal((6, 9))
    singular = np.linalg.svd(matrix, compute_uv=False)
    p = singular / singular.sum()
    expected = np.exp(-np.sum(p * np.log(p)))
    assert nc_metrics.effective_rank(matrix) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------
# Streaming and spilling
# ----------------------------------------------------------------------------------------

def streamed(features, labels, weight, num_classes, splits, **options):
    with nc_metrics.NCAccumulator(num_classes, features.shape[1], **options) as accumulator:
        for rows in np.split(np.arange(len(labels)), splits):
            accumulator.update(features[rows], labels[rows])
        return accumulator.compute(weight), accumulator.spill_path


def test_accumulator_uneven_shuffled_chunks():
    counts = [30, 5, 17, 44, 9]
    features, labels, weight = clustered_data(counts, dim=12, spread=0.5, seed=21)
    features = features.astype(np.float32)
    one_shot = nc_metrics.compute_nc_metrics(features, labels, weight)
    order = np.random.default_rng(0).permutation(len(labels))
    chunked, _ = streamed(features[order], labels[order], weight, len(counts),
                          splits=[1, 2, 40, 41, 90])
    assert_metrics_close(chunked, one_shot, rtol=1e-10)


def test_accumulator_spill_matches_memory(tmp_path):
    counts = [25, 6, 31, 12]
    features, labels, weight = clustered_data(counts, dim=10, spread=0.5, seed=13)
    in_memory, memory_path = streamed(features, labels, weight, len(counts), splits=[10, 50])
    spilled, spill_path = streamed(features, labels, weight, len(counts), splits=[10, 50],
                                   memory_budget=1000, spill_dir=str(tmp_path))
    assert memory_path is None
    assert os.path.dirname(os.path.dirname(spill_path)) == str(tmp_path)
    assert_metrics_close(spilled, in_memory, rtol=1e-12)


def test_accumulator_close_removes_spill(tmp_path):
    features, labels, _ = clustered_data([5, 5], dim=3, spread=0.5, seed=1)
    accumulator = nc_metrics.NCAccumulator(2, 3, memory_budget=0, spill_dir=str(tmp_path))
    accumulator.update(features, labels)
    assert os.path.exists(accumulator.spill_path)
    accumulator.close()
    assert os.listdir(tmp_path) == []


def test_accumulator_update_after_compute():
    counts = [8, 8, 8]
    features, labels, weight = clustered_data(counts, dim=5, spread=0.5, seed=9)
    features = features.astype(np.float32)
    one_shot = nc_metrics.compute_nc_metrics(features, labels, weight)
    with nc_metrics.NCAccumulator(3, 5) as accumulator:
        accumulator.update(features[:10], labels[:10])
        accumulator.compute(weight)
        accumulator.update(features[10:], labels[10:])
        assert_metrics_close(accumulator.compute(weight), one_shot, rtol=1e-10)


def test_accumulator_row_blocks_match(monkeypatch):
    counts = [9, 14, 6]
    features, labels, weight = clustered_data(counts, dim=6, spread=0.5, seed=17)
    whole = nc_metrics.compute_nc_metrics(features, labels, weight)
    monkeypatch.setattr(nc_metrics, "_UPDATE_BLOCK_ROWS", 4)
    blocked = nc_metrics.compute_nc_metrics(features, labels, weight)
    assert_metrics_close(blocked, whole, rtol=1e-10)


def test_update_bad_batch_adds_nothing():
    features = np.ones((20, 3))
    features[17, 2] = np.nan
    accumulator = nc_metrics.NCAccumulator(2, 3)
    with pytest.raises(ValueError, match="row 17"):
        accumulator.update(features, np.arange(20) % 2)
    assert accumulator.num_samples == 0


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------

def test_small_class_warning_counts():
    features = np.random.default_rng(0).standard_normal((7, 4))
    labels = np.array([0, 0, 0, 1, 2, 2, 2])
    with pytest.warns(RuntimeWarning, match=r"skip 2 of 4 classes .*\(1 of them absent\)"):
        nc_metrics.compute_nc_metrics(features, labels, num_classes=4)


@pytest.mark.parametrize("features, labels, match", [
    (np.ones((3, 4)), [0, 1, -1], "label -1"),
    (np.ones((3, 4)), [0, 1, 3], "label 3"),
    (np.ones((3, 5)), [0, 1, 2], r"\(N, 4\)"),
    (np.ones((3, 4)), [0, 1], r"labels have shape \(2,\)"),
    (np.ones((3, 4)), [0.0, 1.0, 2.0], "float64"),
    (np.array([[1.0, 0, 0, 0], [0, np.nan, 0, 0], [1, 1, 1, 1]]), [0, 1, 2], "nan at row 1"),
    (np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 1, np.inf, 1]]), [0, 1, 2], "inf at row 2"),
    (np.ones((3, 4, 1)), [0, 1, 2], r"shape \(3, 4, 1\)"),
], ids=["negative_label", "label_too_large", "wrong_dim", "label_count", "float_labels",
        "nan_feature", "inf_feature", "three_dims"])
def test_update_bad_input(features, labels, match):
    accumulator = nc_metrics.NCAccumulator(3, 4)
    with pytest.raises(ValueError, match=match):
        accumulator.update(features, np.asarray(labels))


def test_compute_weight_wrong_shape():
    accumulator = nc_metrics.NCAccumulator(3, 4)
    accumulator.update(np.eye(4)[:3], np.arange(3))
    with pytest.raises(ValueError, match=r"weight has shape \(3, 5\)"):
        accumulator.compute(np.ones((3, 5)))


def test_compute_weight_not_finite():
    accumulator = nc_metrics.NCAccumulator(3, 4)
    accumulator.update(np.eye(4)[:3], np.arange(3))
    weight = np.ones((3, 4))
    weight[2, 1] = np.nan
    with pytest.raises(ValueError, match="weight contains the non-finite value nan"):
        accumulator.compute(weight)


def test_compute_without_update():
    with pytest.raises(ValueError, match="no features were added"):
        nc_metrics.NCAccumulator(3, 4).compute()


def test_one_shot_num_classes_mismatch():
    with pytest.raises(ValueError, match="num_classes=4 but weight has 3 rows"):
        nc_metrics.compute_nc_metrics(np.eye(3), np.arange(3), np.eye(3), num_classes=4)
