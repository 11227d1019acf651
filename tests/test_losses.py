"""Tests of losses.py against brute-force loops written from the equations.

The reference functions below use plain Python loops over anchors i and instances j,
math.exp and math.log in float64, and nothing from losses.py. Equation numbers follow
"Neural Collapse by Design: Learning Class Prototypes on the Hypersphere":
eq. 2 SupCon, eq. 3 NormFace, eq. 4 NTCE, eq. 5 NONL, eq. 6 prototype loss, eq. 8 the
lower bound L* shared by SupCon and the prototype loss.
"""

import math

import pytest
import torch

from losses import NONLLoss, NTCELoss, NormFaceLoss, PrototypeLoss, SupConLoss


# ---------------------------------------------------------------------------
# Brute-force references
# ---------------------------------------------------------------------------

def unit(vector):
    vector = vector.detach().to(torch.float64)
    return vector / math.sqrt(float(torch.sum(vector * vector)))


def dot(a, b):
    return float(torch.dot(a, b))


def stacked_rows(features):
    """Return the rows of A = [view 0; view 1; ...] as unit vectors, so row v * bsz + i is view v of sample i."""
    bsz, n_views = features.shape[0], features.shape[1]
    return [unit(features[i, v]) for v in range(n_views) for i in range(bsz)]


def supcon_eq2_loops(features, labels=None, mask=None, temperature=0.07,
                     base_temperature=0.07, contrast_mode='all'):
    """Eq. 2 with the tau / base_tau factor; anchors without positives are skipped."""
    bsz = features.shape[0]
    rows = stacked_rows(features)
    anchors = range(bsz) if contrast_mode == 'one' else range(len(rows))
    terms = []
    for i in anchors:
        denominator = 0.0
        for j in range(len(rows)):
            if j != i:
                denominator += math.exp(dot(rows[i], rows[j]) / temperature)
        weighted_sum, weight_total = 0.0, 0.0
        for positive in range(len(rows)):
            if positive == i:
                continue
            if mask is not None:
                weight = float(mask[i % bsz, positive % bsz])
            elif labels is not None:
                weight = 1.0 if int(labels[i % bsz]) == int(labels[positive % bsz]) else 0.0
            else:
                weight = 1.0 if i % bsz == positive % bsz else 0.0
            if weight == 0.0:
                continue
            numerator = math.exp(dot(rows[i], rows[positive]) / temperature)
            weighted_sum += weight * math.log(numerator / denominator)
            weight_total += weight
        if weight_total == 0.0:
            continue
        terms.append(-(temperature / base_temperature) * weighted_sum / weight_total)
    return sum(terms) / len(terms) if terms else 0.0


def supcon_khosla_loops(features, labels=None, mask=None, temperature=0.07,
                        base_temperature=0.07, contrast_mode='all'):
    """SupContrast's formula: the positive mask tiled over views, self pairs removed,
    mean log-probability over positives (0 for an anchor without positives), scaled by
    -tau / base_tau and averaged over all anchors."""
    bsz, n_views = features.shape[0], features.shape[1]
    rows = stacked_rows(features)
    if mask is None and labels is None:
        sample_mask = [[1.0 if a == b else 0.0 for b in range(bsz)] for a in range(bsz)]
    elif mask is None:
        sample_mask = [[1.0 if int(labels[a]) == int(labels[b]) else 0.0 for b in range(bsz)]
                       for a in range(bsz)]
    else:
        sample_mask = [[float(mask[a, b]) for b in range(bsz)] for a in range(bsz)]
    anchor_count = 1 if contrast_mode == 'one' else n_views
    losses = []
    for i in range(anchor_count * bsz):
        log_probs = {}
        total = 0.0
        for j in range(n_views * bsz):
            if j != i:
                total += math.exp(dot(rows[i], rows[j]) / temperature)
        for j in range(n_views * bsz):
            if j != i:
                log_probs[j] = dot(rows[i], rows[j]) / temperature - math.log(total)
        pair_weights = {j: sample_mask[i % bsz][j % bsz] for j in log_probs}
        weight_sum = sum(pair_weights.values())
        weighted = sum(pair_weights[j] * log_probs[j] for j in log_probs)
        mean_log_prob = weighted / (1.0 if weight_sum < 1e-6 else weight_sum)
        losses.append(-(temperature / base_temperature) * mean_log_prob)
    return sum(losses) / len(losses)


def normface_loops(features, labels, weight, temperature):
    """Eq. 3: instance i against the K class prototypes."""
    units = [unit(row) for row in features]
    prototypes = [unit(row) for row in weight]
    total = 0.0
    for i, u_i in enumerate(units):
        numerator = math.exp(dot(u_i, prototypes[int(labels[i])]) / temperature)
        denominator = 0.0
        for w_c in prototypes:
            denominator += math.exp(dot(u_i, w_c) / temperature)
        total += -math.log(numerator / denominator)
    return total / len(units)


def ntce_loops(features, labels, weight, temperature):
    """Eq. 4: prototype w_hat_{y_i} against all M instances."""
    units = [unit(row) for row in features]
    prototypes = [unit(row) for row in weight]
    total = 0.0
    for i, u_i in enumerate(units):
        anchor = prototypes[int(labels[i])]
        numerator = math.exp(dot(anchor, u_i) / temperature)
        denominator = 0.0
        for u_j in units:
            denominator += math.exp(dot(anchor, u_j) / temperature)
        total += -math.log(numerator / denominator)
    return total / len(units)


def nonl_loops(features, labels, weight, temperature):
    """Eq. 5: prototype w_hat_{y_i} against the instances of other classes; anchors
    without such instances are skipped."""
    units = [unit(row) for row in features]
    prototypes = [unit(row) for row in weight]
    terms = []
    for i, u_i in enumerate(units):
        anchor = prototypes[int(labels[i])]
        numerator = math.exp(dot(anchor, u_i) / temperature)
        denominator = 0.0
        negatives = 0
        for j, u_j in enumerate(units):
            if int(labels[j]) != int(labels[i]):
                denominator += math.exp(dot(anchor, u_j) / temperature)
                negatives += 1
        if negatives == 0:
            continue
        terms.append(-math.log(numerator / denominator))
    return sum(terms) / len(terms) if terms else 0.0


def class_means(rows, row_labels):
    """Return ({class: n_c}, {class: mu_hat_c}) with mu_hat_c the plain mean of unit rows."""
    counts, sums = {}, {}
    for row, label in zip(rows, row_labels):
        counts[label] = counts.get(label, 0) + 1
        sums[label] = sums[label] + row if label in sums else row.clone()
    return counts, {label: sums[label] / counts[label] for label in sums}


def prototype_loops(features, labels, temperature):
    """Eq. 6 as written; an anchor whose denominator is an empty (zero) sum is skipped."""
    bsz = features.shape[0]
    rows = stacked_rows(features)
    row_labels = [int(labels[r % bsz]) for r in range(len(rows))]
    counts, means = class_means(rows, row_labels)
    terms = []
    for a_i, y_i in zip(rows, row_labels):
        numerator = math.exp(dot(a_i, means[y_i]) / temperature)
        denominator = -numerator
        for label in counts:
            denominator += counts[label] * math.exp(dot(a_i, means[label]) / temperature)
        if denominator <= 1e-12 * numerator:
            continue
        terms.append(-math.log(numerator / denominator))
    return sum(terms) / len(terms) if terms else 0.0


def lower_bound_loops(features, labels, temperature):
    """L* of eq. 8: mean over i of -a_i^T mu_hat_{y_i} / tau + log(sum_c n_c e^{a_i^T mu_hat_c / tau} - e^{1/tau})."""
    bsz = features.shape[0]
    rows = stacked_rows(features)
    row_labels = [int(labels[r % bsz]) for r in range(len(rows))]
    counts, means = class_means(rows, row_labels)
    total = 0.0
    for a_i, y_i in zip(rows, row_labels):
        inner = -math.exp(1.0 / temperature)
        for label in counts:
            inner += counts[label] * math.exp(dot(a_i, means[label]) / temperature)
        assert inner > 0, 'L* is undefined for this batch; use a smaller perturbation'
        total += -dot(a_i, means[y_i]) / temperature + math.log(inner)
    return total / len(rows)


# ---------------------------------------------------------------------------
# Generated data
# ---------------------------------------------------------------------------

def view_batch(seed, bsz=10, n_views=2, dim=6, num_classes=3, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    features = 3.0 * torch.randn(bsz, n_views, dim, generator=generator, dtype=dtype)
    labels = torch.randint(0, num_classes, (bsz,), generator=generator)
    return features, labels


def weight_batch(seed, batch=12, num_classes=5, dim=6, used_classes=None, dtype=torch.float64):
    """Return features [batch, dim], labels [batch] and weight [num_classes, dim].

    Labels are drawn from `used_classes` (default: all classes), so the other classes are
    absent from the batch.
    """
    generator = torch.Generator().manual_seed(seed)
    features = 3.0 * torch.randn(batch, dim, generator=generator, dtype=dtype)
    weight = 2.0 * torch.randn(num_classes, dim, generator=generator, dtype=dtype)
    pool = torch.tensor(used_classes if used_classes is not None else list(range(num_classes)))
    labels = pool[torch.randint(0, len(pool), (batch,), generator=generator)]
    return features, labels, weight


WEIGHT_LOSSES = [
    (NormFaceLoss, normface_loops),
    (NTCELoss, ntce_loops),
    (NONLLoss, nonl_loops),
]


def assert_close(actual, expected, rtol=1e-9, atol=1e-9):
    actual = float(actual.detach()) if torch.is_tensor(actual) else float(actual)
    assert math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol), (actual, expected)


# ---------------------------------------------------------------------------
# SupConLoss, eq. 2
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('n_views', [1, 2])
@pytest.mark.parametrize('contrast_mode', ['all', 'one'])
@pytest.mark.parametrize('num_classes', [3, 12])
def test_supcon_labels_match_loops(seed, n_views, contrast_mode, num_classes):
    features, labels = view_batch(seed, n_views=n_views, num_classes=num_classes)
    loss = SupConLoss(temperature=0.1, contrast_mode=contrast_mode, base_temperature=0.07)
    expected = supcon_eq2_loops(features, labels, temperature=0.1, base_temperature=0.07,
                                contrast_mode=contrast_mode)
    assert_close(loss(features, labels), expected)


@pytest.mark.parametrize('seed', [0, 1])
@pytest.mark.parametrize('contrast_mode', ['all', 'one'])
def test_supcon_simclr_matches_loops(seed, contrast_mode):
    features, _ = view_batch(seed, n_views=2)
    loss = SupConLoss(temperature=0.5, contrast_mode=contrast_mode)
    expected = supcon_eq2_loops(features, temperature=0.5, base_temperature=0.07,
                                contrast_mode=contrast_mode)
    assert_close(loss(features), expected)


@pytest.mark.parametrize('seed', [0, 1])
@pytest.mark.parametrize('n_views', [1, 2])
@pytest.mark.parametrize('contrast_mode', ['all', 'one'])
def test_supcon_asymmetric_mask_matches_loops(seed, n_views, contrast_mode):
    features, _ = view_batch(seed, n_views=n_views)
    generator = torch.Generator().manual_seed(100 + seed)
    mask = (torch.rand(10, 10, generator=generator) > 0.6).float()
    assert not torch.equal(mask, mask.T)
    expected = supcon_eq2_loops(features, mask=mask, temperature=0.2, base_temperature=0.07,
                                contrast_mode=contrast_mode)
    loss = SupConLoss(temperature=0.2, contrast_mode=contrast_mode)
    assert_close(loss(features, mask=mask), expected)


@pytest.mark.parametrize('contrast_mode', ['all', 'one'])
def test_supcon_labels_match_khosla_formula(contrast_mode):
    features, labels = view_batch(3, n_views=2, num_classes=12)
    loss = SupConLoss(temperature=0.1, contrast_mode=contrast_mode, base_temperature=0.07)
    expected = supcon_khosla_loops(features, labels, temperature=0.1, base_temperature=0.07,
                                   contrast_mode=contrast_mode)
    assert_close(loss(features, labels), expected)


@pytest.mark.parametrize('contrast_mode', ['all', 'one'])
def test_supcon_weighted_mask_matches_khosla_formula(contrast_mode):
    features, _ = view_batch(4, n_views=2)
    generator = torch.Generator().manual_seed(7)
    mask = torch.rand(10, 10, generator=generator) * (torch.rand(10, 10, generator=generator) > 0.5)
    loss = SupConLoss(temperature=0.1, contrast_mode=contrast_mode, base_temperature=0.07)
    expected = supcon_khosla_loops(features, mask=mask, temperature=0.1, base_temperature=0.07,
                                   contrast_mode=contrast_mode)
    assert_close(loss(features, mask=mask), expected)


def test_supcon_simclr_matches_khosla_formula():
    features, _ = view_batch(5, n_views=3)
    expected = supcon_khosla_loops(features, temperature=0.5)
    assert_close(SupConLoss(temperature=0.5)(features), expected)


def test_supcon_missing_positives_left_out():
    # Labels [0, 1, 1, 2] with one view: anchors 0 and 3 have no positive.
    features, _ = view_batch(6, bsz=4, n_views=1)
    labels = torch.tensor([0, 1, 1, 2])
    value = SupConLoss()(features, labels)
    assert_close(value, supcon_eq2_loops(features, labels))
    # SupContrast counts the two anchors as zero terms, so its mean is 2/4 of ours.
    assert_close(value * 2 / 4, supcon_khosla_loops(features, labels))


@pytest.mark.parametrize('n_views', [1, 2])
def test_supcon_no_positives_zero_with_grad(n_views):
    features, _ = view_batch(7, bsz=5, n_views=n_views)
    features.requires_grad_(True)
    labels = torch.arange(5)
    mask = torch.zeros(5, 5)
    # One view and unique labels: no anchor has a positive. Two views with a zero mask: same.
    value = SupConLoss()(features, labels) if n_views == 1 else SupConLoss()(features, mask=mask)
    assert float(value.detach()) == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert torch.isfinite(features.grad).all()
    assert torch.count_nonzero(features.grad) == 0


def test_supcon_single_sample_simclr_zero():
    features = torch.randn(1, 1, 4, requires_grad=True)
    value = SupConLoss()(features)
    value.backward()
    assert float(value.detach()) == 0.0
    assert torch.isfinite(features.grad).all()


def test_supcon_flattens_trailing_dimensions():
    features, labels = view_batch(8, n_views=2, dim=6)
    spatial = features.reshape(10, 2, 2, 3)
    assert_close(SupConLoss()(spatial, labels), supcon_eq2_loops(features, labels))


# ---------------------------------------------------------------------------
# NormFace, NTCE and NONL, eq. 3-5
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('loss_class, loops', WEIGHT_LOSSES)
@pytest.mark.parametrize('batch, num_classes, used_classes', [
    (12, 4, None),            # K < M
    (6, 15, None),            # K > M, most classes absent
    (12, 8, [0, 2, 5]),       # K < M with classes absent
])
def test_weight_losses_match_loops(seed, loss_class, loops, batch, num_classes, used_classes):
    features, labels, weight = weight_batch(seed, batch, num_classes, used_classes=used_classes)
    expected = loops(features, labels, weight, 0.2)
    assert_close(loss_class(temperature=0.2)(features, labels, weight), expected)


def test_nonl_single_class_batch():
    features, _, weight = weight_batch(9, batch=6, num_classes=4)
    features.requires_grad_(True)
    weight.requires_grad_(True)
    labels = torch.full((6,), 2)
    value = NONLLoss()(features, labels, weight)
    assert float(value.detach()) == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert torch.isfinite(features.grad).all()
    assert torch.isfinite(weight.grad).all()
    assert torch.count_nonzero(features.grad) == 0
    assert torch.count_nonzero(weight.grad) == 0


def test_ntce_single_class_batch_matches_loops():
    features, _, weight = weight_batch(10, batch=6, num_classes=4)
    labels = torch.full((6,), 1)
    assert_close(NTCELoss()(features, labels, weight), ntce_loops(features, labels, weight, 0.1))


def test_nonl_two_class_batch_matches_loops():
    features, _, weight = weight_batch(11, batch=7, num_classes=9)
    labels = torch.tensor([3, 3, 3, 3, 3, 3, 8])
    assert_close(NONLLoss()(features, labels, weight), nonl_loops(features, labels, weight, 0.1))


# ---------------------------------------------------------------------------
# PrototypeLoss, eq. 6
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('n_views', [1, 2])
@pytest.mark.parametrize('num_classes', [3, 12])
def test_prototype_matches_loops(seed, n_views, num_classes):
    features, labels = view_batch(seed, n_views=n_views, num_classes=num_classes)
    expected = prototype_loops(features, labels, 0.2)
    assert_close(PrototypeLoss(temperature=0.2)(features, labels), expected)


def test_prototype_sparse_labels_match_loops():
    # Labels far apart: classes 1..999 between them are absent from the batch.
    features, _ = view_batch(12, bsz=6, n_views=2)
    labels = torch.tensor([1000, 7, 1000, 0, 7, 7])
    assert_close(PrototypeLoss()(features, labels), prototype_loops(features, labels, 0.1))


def test_prototype_single_class_two_views_matches_loops():
    features, _ = view_batch(13, bsz=3, n_views=2)
    labels = torch.tensor([4, 4, 4])
    assert_close(PrototypeLoss()(features, labels), prototype_loops(features, labels, 0.1))


def test_prototype_single_row_zero_with_grad():
    features = torch.randn(1, 1, 5, dtype=torch.float64, requires_grad=True)
    value = PrototypeLoss()(features, torch.tensor([3]))
    assert float(value.detach()) == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert torch.isfinite(features.grad).all()
    assert torch.count_nonzero(features.grad) == 0


def test_prototype_singleton_class_matches_loops():
    # Class 5 has one row, so its anchor's own-class weight n_c - 1 is zero.
    features, _ = view_batch(14, bsz=4, n_views=1)
    labels = torch.tensor([5, 0, 0, 1])
    assert_close(PrototypeLoss()(features, labels), prototype_loops(features, labels, 0.1))


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('labels', [[0, 1, 0, 1], [0, 1, 1, 2]])
@pytest.mark.parametrize('contrast_mode', ['all', 'one'])
def test_supcon_gradcheck(labels, contrast_mode):
    features, _ = view_batch(15, bsz=4, n_views=2, dim=3)
    features.requires_grad_(True)
    labels = torch.tensor(labels)
    loss = SupConLoss(temperature=0.5, contrast_mode=contrast_mode)
    assert torch.autograd.gradcheck(lambda f: loss(f, labels), (features,))


def test_supcon_single_view_missing_positives_gradcheck():
    features, _ = view_batch(16, bsz=4, n_views=1, dim=3)
    features.requires_grad_(True)
    labels = torch.tensor([0, 1, 1, 2])
    loss = SupConLoss(temperature=0.5)
    assert torch.autograd.gradcheck(lambda f: loss(f, labels), (features,))


@pytest.mark.parametrize('loss_class', [NormFaceLoss, NTCELoss, NONLLoss])
def test_weight_losses_gradcheck(loss_class):
    features, labels, weight = weight_batch(17, batch=5, num_classes=6, dim=3)
    features.requires_grad_(True)
    weight.requires_grad_(True)
    loss = loss_class(temperature=0.5)
    assert torch.autograd.gradcheck(lambda f, w: loss(f, labels, w), (features, weight))


@pytest.mark.parametrize('n_views', [1, 2])
def test_prototype_gradcheck(n_views):
    features, _ = view_batch(18, bsz=5, n_views=n_views, dim=3)
    features.requires_grad_(True)
    labels = torch.tensor([0, 1, 1, 2, 0])
    loss = PrototypeLoss(temperature=0.5)
    assert torch.autograd.gradcheck(lambda f: loss(f, labels), (features,))


# ---------------------------------------------------------------------------
# Theorem 4.1: SupCon and the prototype loss agree on collapsed simplex-ETF features
# ---------------------------------------------------------------------------

def simplex_etf(num_classes, dim, seed):
    """K unit vectors in R^dim with pairwise inner product -1/(K-1), randomly rotated."""
    generator = torch.Generator().manual_seed(seed)
    identity = torch.eye(num_classes, dtype=torch.float64)
    centered = identity - torch.full((num_classes, num_classes), 1.0 / num_classes, dtype=torch.float64)
    vertices = math.sqrt(num_classes / (num_classes - 1)) * centered
    embedded = torch.zeros(num_classes, dim, dtype=torch.float64)
    embedded[:, :num_classes] = vertices
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    return embedded @ rotation


def collapsed_batch(num_classes=4, per_class=3, dim=6, seed=0):
    """Balanced labels, two views, every feature equal to its class's ETF vertex."""
    vertices = simplex_etf(num_classes, dim, seed)
    labels = torch.arange(num_classes).repeat(per_class)
    features = torch.stack([vertices[labels], vertices[labels]], dim=1)
    return features, labels, vertices


def test_simplex_etf_construction():
    vertices = simplex_etf(4, 6, seed=0)
    gram = vertices @ vertices.T
    expected = torch.full((4, 4), -1.0 / 3, dtype=torch.float64)
    expected.fill_diagonal_(1.0)
    assert torch.allclose(gram, expected, atol=1e-12)


@pytest.mark.parametrize('temperature', [0.07, 0.1, 0.5, 1.0])
def test_theorem41_collapsed_supcon_equals_prototype(temperature):
    features, labels, _ = collapsed_batch()
    supcon = SupConLoss(temperature=temperature, base_temperature=temperature)(features, labels)
    prototype = PrototypeLoss(temperature=temperature)(features, labels)
    assert_close(supcon, float(prototype.detach()), rtol=1e-10)


@pytest.mark.parametrize('temperature', [0.07, 0.1, 0.5, 1.0])
def test_theorem41_collapsed_reaches_lower_bound(temperature):
    features, labels, _ = collapsed_batch()
    bound = lower_bound_loops(features, labels, temperature)
    assert_close(PrototypeLoss(temperature=temperature)(features, labels), bound, rtol=1e-10)


@pytest.mark.parametrize('temperature', [0.1, 0.5, 1.0])
@pytest.mark.parametrize('seed', [1, 2])
def test_theorem41_perturbed_above_lower_bound(temperature, seed):
    features, labels, _ = collapsed_batch(seed=seed)
    generator = torch.Generator().manual_seed(50 + seed)
    features = features + 0.05 * torch.randn(features.shape, generator=generator, dtype=torch.float64)
    bound = lower_bound_loops(features, labels, temperature)
    supcon = float(SupConLoss(temperature=temperature, base_temperature=temperature)(features, labels))
    prototype = float(PrototypeLoss(temperature=temperature)(features, labels))
    assert supcon >= bound
    assert prototype >= bound


# ---------------------------------------------------------------------------
# Numerics: scale, temperature, precision
# ---------------------------------------------------------------------------

def evaluate_all(features_views, labels_views, features, labels, weight, temperature=0.1):
    """Return {name: (loss value, float64 loops value)} for the five losses on the given inputs."""
    return {
        'supcon': (SupConLoss(temperature=temperature)(features_views, labels_views),
                   supcon_eq2_loops(features_views, labels_views, temperature=temperature)),
        'normface': (NormFaceLoss(temperature)(features, labels, weight),
                     normface_loops(features, labels, weight, temperature)),
        'ntce': (NTCELoss(temperature)(features, labels, weight),
                 ntce_loops(features, labels, weight, temperature)),
        'nonl': (NONLLoss(temperature)(features, labels, weight),
                 nonl_loops(features, labels, weight, temperature)),
        'prototype': (PrototypeLoss(temperature)(features_views, labels_views),
                      prototype_loops(features_views, labels_views, temperature)),
    }


def test_losses_large_magnitude_inputs():
    features_views, labels_views = view_batch(20, dtype=torch.float32)
    features, labels, weight = weight_batch(20, dtype=torch.float32)
    scale = 1e4 / features.abs().max()
    results = evaluate_all(features_views * 1e4, labels_views, features * scale, labels, weight * 1e4)
    for name, (value, expected) in results.items():
        assert torch.isfinite(value), name
        assert_close(value, expected, rtol=1e-4, atol=1e-5)


def test_losses_temperature_001():
    features_views, labels_views = view_batch(21, dtype=torch.float32)
    features, labels, weight = weight_batch(21, dtype=torch.float32)
    results = evaluate_all(features_views, labels_views, features, labels, weight, temperature=0.01)
    for name, (value, expected) in results.items():
        assert torch.isfinite(value), name
        assert_close(value, expected, rtol=1e-4, atol=1e-4)


def test_losses_temperature_001_gradients_finite():
    features, labels, weight = weight_batch(22, dtype=torch.float32)
    features_views, labels_views = view_batch(22, dtype=torch.float32)
    for loss_class in (NormFaceLoss, NTCELoss, NONLLoss):
        f = features.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        loss_class(0.01)(f, labels, w).backward()
        assert torch.isfinite(f.grad).all(), loss_class.__name__
        assert torch.isfinite(w.grad).all(), loss_class.__name__
    for loss in (SupConLoss(temperature=0.01), PrototypeLoss(0.01)):
        f = features_views.clone().requires_grad_(True)
        loss(f, labels_views).backward()
        assert torch.isfinite(f.grad).all(), type(loss).__name__


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_losses_half_precision_inputs(dtype):
    features_views, labels_views = view_batch(23, dtype=torch.float32)
    features, labels, weight = weight_batch(23, dtype=torch.float32)
    # The loops see the same rounded inputs, so the loss must match to float32 accuracy.
    features_views, features, weight = features_views.to(dtype), features.to(dtype), weight.to(dtype)
    results = evaluate_all(features_views, labels_views, features, labels, weight)
    for name, (value, expected) in results.items():
        assert value.dtype == torch.float32, name
        assert_close(value, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_losses_half_precision_gradients(dtype):
    features, labels, weight = weight_batch(24, dtype=dtype)
    features_views, labels_views = view_batch(24, dtype=dtype)
    for loss_class in (NormFaceLoss, NTCELoss, NONLLoss):
        f = features.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        loss_class()(f, labels, w).backward()
        assert f.grad.dtype == dtype, loss_class.__name__
        assert torch.isfinite(f.grad).all(), loss_class.__name__
        assert torch.isfinite(w.grad).all(), loss_class.__name__
    for loss in (SupConLoss(), PrototypeLoss()):
        f = features_views.clone().requires_grad_(True)
        loss(f, labels_views).backward()
        assert torch.isfinite(f.grad).all(), type(loss).__name__


def test_losses_cpu_autocast_bfloat16():
    features_views, labels_views = view_batch(25, dtype=torch.float32)
    features, labels, weight = weight_batch(25, dtype=torch.float32)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        results = evaluate_all(features_views, labels_views, features, labels, weight)
    for name, (value, expected) in results.items():
        assert value.dtype == torch.float32, name
        # bfloat16 logits would be off by about 1e-2; float32 logits agree to 1e-5.
        assert_close(value, expected, rtol=1e-5, atol=1e-5)


def test_losses_float64_stays_float64():
    features_views, labels_views = view_batch(26)
    features, labels, weight = weight_batch(26)
    results = evaluate_all(features_views, labels_views, features, labels, weight)
    for name, (value, _) in results.items():
        assert value.dtype == torch.float64, name


def test_losses_normalized_and_raw_inputs_agree():
    features_views, labels_views = view_batch(27)
    features, labels, weight = weight_batch(27)
    raw = evaluate_all(features_views, labels_views, features, labels, weight)
    unit_views = features_views / features_views.norm(dim=-1, keepdim=True)
    unit_features = features / features.norm(dim=-1, keepdim=True)
    unit_weight = weight / weight.norm(dim=-1, keepdim=True)
    normalized = evaluate_all(unit_views, labels_views, unit_features, labels, unit_weight)
    for name in raw:
        assert_close(raw[name][0], float(normalized[name][0]), rtol=1e-12)


def test_labels_integer_valued_float_accepted():
    features_views, labels_views = view_batch(28)
    features, labels, weight = weight_batch(28)
    as_long = evaluate_all(features_views, labels_views, features, labels, weight)
    as_float = evaluate_all(features_views, labels_views.double(), features, labels.float(), weight)
    for name in as_long:
        assert_close(as_float[name][0], float(as_long[name][0]), rtol=1e-12)


def test_supcon_column_labels_accepted():
    features, labels = view_batch(29)
    assert_close(SupConLoss()(features, labels[:, None]), float(SupConLoss()(features, labels)))


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('make_loss', [
    lambda t: SupConLoss(temperature=t),
    lambda t: SupConLoss(base_temperature=t),
    lambda t: NormFaceLoss(temperature=t),
    lambda t: NTCELoss(temperature=t),
    lambda t: NONLLoss(temperature=t),
    lambda t: PrototypeLoss(temperature=t),
])
@pytest.mark.parametrize('temperature', [0.0, -0.1, float('nan')])
def test_losses_invalid_temperature_rejected(make_loss, temperature):
    with pytest.raises(ValueError, match='temperature'):
        make_loss(temperature)


def test_supcon_unknown_contrast_mode_rejected():
    with pytest.raises(ValueError, match="'both'"):
        SupConLoss(contrast_mode='both')


@pytest.mark.parametrize('loss_class', [NormFaceLoss, NTCELoss, NONLLoss])
@pytest.mark.parametrize('bad_label, text', [(-1, 'label -1'), (5, 'label 5')])
def test_weight_losses_label_out_of_range(loss_class, bad_label, text):
    features, labels, weight = weight_batch(30, num_classes=5)
    labels[3] = bad_label
    with pytest.raises(ValueError, match=rf'\[0, 5\).*{text}'):
        loss_class()(features, labels, weight)


@pytest.mark.parametrize('loss_class', [NormFaceLoss, NTCELoss, NONLLoss])
def test_weight_losses_label_count_mismatch(loss_class):
    features, labels, weight = weight_batch(31, batch=12)
    with pytest.raises(ValueError, match=r'\[12\].*\(11,\)'):
        loss_class()(features, labels[:11], weight)


@pytest.mark.parametrize('loss_class', [NormFaceLoss, NTCELoss, NONLLoss])
def test_weight_losses_weight_wrong_rank(loss_class):
    features, labels, weight = weight_batch(32)
    with pytest.raises(ValueError, match=r'\[K, 6\].*\(5, 6, 1\)'):
        loss_class()(features, labels, weight[:, :, None])


@pytest.mark.parametrize('loss_class', [NormFaceLoss, NTCELoss, NONLLoss])
def test_weight_losses_weight_dim_mismatch(loss_class):
    features, labels, weight = weight_batch(33)
    with pytest.raises(ValueError, match=r'\[K, 6\].*\(5, 4\)'):
        loss_class()(features, labels, weight[:, :4])


@pytest.mark.parametrize('loss_class', [NormFaceLoss, NTCELoss, NONLLoss])
def test_weight_losses_features_wrong_rank(loss_class):
    features, labels, weight = weight_batch(34)
    with pytest.raises(ValueError, match=r'\[M, dim\].*\(12, 1, 6\)'):
        loss_class()(features[:, None], labels, weight)


@pytest.mark.parametrize('loss', [SupConLoss(), PrototypeLoss()])
def test_view_losses_features_wrong_rank(loss):
    features, labels = view_batch(35)
    with pytest.raises(ValueError, match=r'\[bsz, n_views, dim\].*\(10, 6\)'):
        loss(features[:, 0], labels)


@pytest.mark.parametrize('loss', [SupConLoss(), PrototypeLoss()])
def test_view_losses_label_count_mismatch(loss):
    features, labels = view_batch(36)
    with pytest.raises(ValueError, match=r'\[10\].*\(9,\)'):
        loss(features, labels[:9])


@pytest.mark.parametrize('loss', [SupConLoss(), PrototypeLoss(), NTCELoss()])
def test_losses_non_integer_float_labels_rejected(loss):
    features_views, labels_views = view_batch(37)
    features, labels, weight = weight_batch(37)
    with pytest.raises(ValueError, match='non-integer value 1.5'):
        if isinstance(loss, NTCELoss):
            bad = labels.double()
            bad[2] = 1.5
            loss(features, bad, weight)
        else:
            bad = labels_views.double()
            bad[2] = 1.5
            loss(features_views, bad)


def test_supcon_labels_and_mask_rejected():
    features, labels = view_batch(38)
    with pytest.raises(ValueError, match='labels or mask'):
        SupConLoss()(features, labels, mask=torch.eye(10))


def test_supcon_mask_wrong_shape_rejected():
    features, _ = view_batch(39)
    with pytest.raises(ValueError, match=r'\[10, 10\].*\(10, 9\)'):
        SupConLoss()(features, mask=torch.ones(10, 9))


def test_losses_empty_batch_rejected():
    with pytest.raises(ValueError, match='no rows'):
        SupConLoss()(torch.zeros(0, 2, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match='no rows'):
        NTCELoss()(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.ones(3, 4))
