"""Neural-collapse (NC) metrics of penultimate features, labels and a classifier.

Notation. Features are L2-normalised first, unless ``normalize=False`` keeps them raw.
u_i is the unit feature of sample i and y_i its label. n_c is the number of samples of
class c, K the number of classes and K' the number of classes present in the data.
mu_c = mean of class c's unit features, mu_G = mean of all unit features,
mu_hat_c = mu_c / ||mu_c||, and w_c = row c of the classifier as the model applies it,
L2-normalised.

Metrics (keys of the dict that ``compute_nc_metrics`` and ``NCAccumulator.compute``
return, with their value under exact collapse to a simplex ETF):

    erank_intra               mean over classes of erank(Sigma_c)            0
    erank_inter               erank(Cov[mu_c - mu_G]) over classes           K-1
    erank_weights             erank(Cov[w_c]) over the K rows                K-1
    weight_alignment          mean_i ||mu_hat_{y_i} - w_{y_i}||^2  (NC3)     0
    weight_alignment_samples  mean_i ||u_i - w_{y_i}||^2           (NC3)     0
    instance_alignment        mean_c mean_{i != j in c} ||u_i - u_j||^2      0
    mir                       mutual-information ratio of G_W and G_M        0.952 (K=10)
    hdr                       entropy-difference ratio of G_W and G_M        0
    nc1                       trace(Sigma_W Sigma_B^+) / K'                  0
    ncc_agreement             share of samples where the classifier          1
                              and the nearest class mean agree

erank is the effective rank of Roy and Vetterli (2007), Sigma_c the covariance of class
c's unit features, and G_W, G_M the Gram matrices of the unit weight rows and of the unit
class means. The weight-dependent keys (erank_weights, weight_alignment,
weight_alignment_samples, mir, hdr, ncc_agreement) are absent when no weight is given.

Two forms of NC3. "Neural Collapse by Design: Learning Class Prototypes on the
Hypersphere" (section 5.2) defines erank_weights and the two alignments. It writes the
weight alignment per sample, (1/N) sum_i ||z_i - w_{y_i}||^2, but its Table 2 reports
0.00 for supervised contrastive features classified by their class-mean prototypes.
Only the class-mean form gives 0 there, because the per-sample form keeps the
within-class spread. ``weight_alignment`` is the class-mean form and
``weight_alignment_samples`` the per-sample form, both averaged over samples.

MIR at exact collapse is below 1 for finite K. With G_W = G_M = G the ETF Gram matrix,
H(G) = log(K-1)/log K while H(G * G) is close to 1, so MIR = 0.952 for K = 10 and 0.998
for K = 100 (the tests check both). The optimum of 1 in that paper's Table 2 is the
large-K limit, and its measured 0.95 (CIFAR-10) and 1.00 (CIFAR-100) match these values.

Class weighting. erank_intra, instance_alignment, erank_inter, mir and hdr weigh every
present class equally. weight_alignment, weight_alignment_samples and ncc_agreement
average over samples, so large classes count more. nc1 follows Papyan et al.: Sigma_W
averages over samples and Sigma_B over present classes, about the mean over samples.

Absent classes. K is ``num_classes``. A class without samples has no mean and no
covariance, so erank_inter, nc1, mir and hdr use the K' present classes. Their exact
collapse values are those of a K'-class ETF (erank_inter K'-1), and mir and hdr leave
the weight rows of absent classes out of G_W. erank_weights uses all K weight rows,
because the classifier keeps them. ncc_agreement takes the classifier's argmax over all K
rows and the nearest mean over the present classes. erank_intra and instance_alignment
skip classes with fewer than 2 samples, absent ones included, and warn with their count.
With fewer than 2 present classes nc1, mir and hdr are NaN.

Memory. ``NCAccumulator`` keeps per-class sums (K x dim float64), counts and squared
norms, the labels and every normalised feature (4 bytes per value in float32, the
default storage). The features stay in RAM up to ``memory_budget`` bytes and are then
spilled to a file in a temporary folder, which ``compute`` reads back one class at a
time. ``compute`` needs the features for two reasons. ncc_agreement is a per-sample
quantity of a classifier that arrives only with ``compute``. And covariances of
centred class features stay accurate, while the second-moment shortcut
E[uu^T] - mu mu^T loses the small within-class spread of a collapsed class to rounding.
The working memory of ``compute`` is one class's rows in float64 plus an (n_c x n_c) or
(dim x dim) matrix. bench/bench_nc_metrics.py measured about 210 MB above the features
for spilled ImageNet-shaped runs (dim 2048, 1,280 samples per class), so ImageNet-1K
encoder features (1.28 M x 2048, 10.5 GB in float32) fit in 8 GB of RAM once spilled.

Usage in a training loop::

    with torch.no_grad(), NCAccumulator(num_classes=100, dim=512) as accumulator:
        for images, labels in loader:
            accumulator.update(model.encoder(images), labels)
        metrics = accumulator.compute(weight=model.fc.weight)

The metrics and the accumulator import only torch, numpy and the standard library, so
any training loop can use them. The command line and ``TrainingMonitor.from_options``
import the repository's data.py and util.py inside the functions that need them.

Command line: the paper's Table 2 row of a checkpoint of any training script (or of the
SupContrast scripts), measured on the training split without augmentation::

    python nc_metrics.py --ckpt save/SupCon/cifar100_models/RUN/last.pth --dataset cifar100
    python nc_metrics.py --ckpt SUPCON/last.pth --classifier PROBE/last.pth --json

A SupCon encoder is scored with its class-mean prototypes ("w/o probing") unless
--classifier gives a main_linear.py checkpoint ("w probing").
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass

import numpy as np
import torch

METRIC_KEYS = (
    "erank_intra",
    "erank_inter",
    "erank_weights",
    "weight_alignment",
    "weight_alignment_samples",
    "instance_alignment",
    "mir",
    "hdr",
    "nc1",
    "ncc_agreement",
)
WEIGHT_KEYS = (
    "erank_weights",
    "weight_alignment",
    "weight_alignment_samples",
    "mir",
    "hdr",
    "ncc_agreement",
)

_EPS = torch.finfo(torch.float64).eps
_DEFAULT_MEMORY_BUDGET = 2 * 1024**3
_UPDATE_BLOCK_ROWS = 8192


# ----------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------

def _as_real_matrix(values, name: str) -> torch.Tensor:
    """Return values as a detached 2-D real tensor, on its device and in its dtype.

    Raises ValueError naming the first non-finite entry.
    """
    tensor = torch.as_tensor(values).detach()
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} has dtype {tensor.dtype}; pass real floating-point values")
    if tensor.dim() != 2:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}; expected a 2-D (rows, dim) matrix"
        )
    if tensor.is_floating_point():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            row, col = (~finite).nonzero()[0].tolist()
            raise ValueError(
                f"{name} contains the non-finite value {tensor[row, col].item()} at row "
                f"{row}, column {col}; remove or fix that sample"
            )
    return tensor


def _as_float64_matrix(values, name: str) -> torch.Tensor:
    """Return values as a finite 2-D CPU float64 tensor."""
    return _as_real_matrix(values, name).to(device="cpu", dtype=torch.float64)


def _as_labels(labels, num_rows: int, num_classes: int) -> torch.Tensor:
    """Convert labels to a CPU int64 vector of length num_rows with values in [0, K)."""
    tensor = torch.as_tensor(labels).detach()
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"labels have dtype {tensor.dtype}; pass integer class indices")
    if tensor.dim() != 1 or tensor.shape[0] != num_rows:
        raise ValueError(
            f"labels have shape {tuple(tensor.shape)}; expected ({num_rows},) to match "
            f"the {num_rows} feature rows"
        )
    tensor = tensor.to(device="cpu", dtype=torch.int64)
    if num_rows:
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"label {bad} is outside [0, {num_classes}); pass class indices below "
                f"num_classes={num_classes}"
            )
    return tensor


def _unit_rows(matrix: torch.Tensor) -> torch.Tensor:
    """L2-normalise each row; an all-zero row stays zero."""
    norms = matrix.norm(dim=1, keepdim=True)
    return matrix / norms.clamp_min(torch.finfo(matrix.dtype).tiny)


# ----------------------------------------------------------------------------------------
# Measurement: effective rank and matrix entropy
# ----------------------------------------------------------------------------------------

def _entropy_rank(values: torch.Tensor, dim: int, scale: float = 0.0) -> float:
    """Return exp(entropy) of the normalised values above the rank tolerance.

    The tolerance is max(values.max(), scale) * dim * eps. A positive scale (the mean
    squared norm of the vectors behind a covariance) drops the rounding noise that
    centring leaves in a collapsed covariance, whose largest eigenvalue is itself noise.
    """
    values = values.clamp_min(0.0)
    top = max(float(values.max()) if values.numel() else 0.0, scale)
    kept = values[values > top * dim * _EPS]
    if kept.numel() == 0:
        return 0.0
    p = kept / kept.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def _covariance_eigenvalues(centred: torch.Tensor) -> torch.Tensor:
    """Return the eigenvalues of the covariance centred^T centred / n.

    The (n x n) Gram matrix centred centred^T / n has the same nonzero eigenvalues as the
    (dim x dim) covariance, so the smaller of the two is decomposed.
    """
    n, dim = centred.shape
    if n <= dim:
        gram = centred @ centred.T
    else:
        gram = centred.T @ centred
    return torch.linalg.eigvalsh(gram / n)


def effective_rank(matrix) -> float:
    """Compute the effective rank of a matrix (Roy and Vetterli, 2007).

    erank(A) = exp(-sum_i p_i log p_i) with p_i = s_i / sum_j s_j over the singular values
    s_i of A. Singular values at or below s_max * max(A.shape) * eps are dropped, and the
    zero matrix has effective rank 0. The value lies in [0, rank(A)] and equals the rank
    when the nonzero singular values are all equal.

    Args:
        matrix: (m, n) tensor or array.
    """
    a = _as_float64_matrix(matrix, "matrix")
    return _entropy_rank(torch.linalg.svdvals(a), max(a.shape))


def _covariance_rank(rows: torch.Tensor) -> float:
    """Return the effective rank of the covariance of the rows (1/n normalisation).

    Eigenvalues are dropped with the tolerance of ``class_covariance_rank``, with scale
    the rows' mean squared norm.
    """
    centred = rows - rows.mean(dim=0)
    scale = float((rows * rows).sum(dim=1).mean())
    return _entropy_rank(_covariance_eigenvalues(centred), rows.shape[1], scale)


def matrix_entropy(gram: torch.Tensor, num_classes: int) -> float:
    """Compute the normalised von Neumann entropy of a Gram matrix (Song et al., 2024).

    H(G) = -sum_i l_i log l_i / log K over the eigenvalues l_i of G / trace(G). The value
    is 1 when the spectrum is flat over all K dimensions and 0 for a rank-1 matrix.

    Args:
        gram: (K, K) symmetric positive semi-definite matrix.
        num_classes: K, the size of the matrix.
    """
    trace = float(torch.diagonal(gram).sum())
    if trace <= 0.0 or num_classes < 2:
        return math.nan
    eigenvalues = torch.linalg.eigvalsh(gram / trace).clamp_min(0.0)
    eigenvalues = eigenvalues[eigenvalues > 0]
    entropy = -(eigenvalues * eigenvalues.log()).sum()
    return float(entropy) / math.log(num_classes)


# ----------------------------------------------------------------------------------------
# Measurement: one function per NC metric, on accumulated statistics
# ----------------------------------------------------------------------------------------

def class_covariance_rank(centred: torch.Tensor, scale: float) -> float:
    """Return erank(Sigma_c) for one class, given its (n_c, dim) centred features.

    Sigma_c = centred^T centred / n_c. Eigenvalues at or below
    max(largest eigenvalue, scale) * dim * eps count as 0, with scale the class's mean
    squared feature norm, so a class whose features coincide has effective rank 0 even
    when centring leaves rounding noise.
    """
    return _entropy_rank(_covariance_eigenvalues(centred), centred.shape[1], scale)


def erank_intra(class_ranks: list) -> float:
    """Compute the intra-class effective rank, an NC1 measure (Zhang et al., 2024).

    erank_intra = mean over classes of erank(Sigma_c), with Sigma_c the covariance of class
    c's unit features (``class_covariance_rank``). Classes weigh equally. Exact collapse
    gives 0 because every Sigma_c is zero. A covariance's scale does not change its
    effective rank, so the choice of 1/n_c or 1/(n_c - 1) normalisation does not matter
    (1/n_c is used).

    Args:
        class_ranks: erank(Sigma_c) of each class with at least 2 samples.
    """
    if not class_ranks:
        return math.nan
    return float(np.mean(class_ranks))


def erank_inter(class_means: torch.Tensor) -> float:
    """Compute the inter-class effective rank, an NC2 measure (Zhang et al., 2024).

    erank_inter = erank(Cov[mu_c - mu_G]) over the present classes, each weighing equally.
    A covariance does not change when a constant is subtracted, so mu_G drops out and this
    is the covariance of the class means about their unweighted mean. Eigenvalues are
    dropped as in ``class_covariance_rank``. Exact collapse to a simplex ETF gives K - 1
    (K' - 1 with K' present classes).

    Args:
        class_means: (K', dim) means of the unit features of the present classes.
    """
    return _covariance_rank(class_means)


def erank_weights(weight_unit: torch.Tensor) -> float:
    """Compute the effective rank of the classifier rows (Neural Collapse by Design).

    erank_weights = erank(Cov[w_c]) over all K unit rows, centred on their mean. Rows that
    form a simplex ETF give K - 1.

    Args:
        weight_unit: (K, dim) L2-normalised classifier rows.
    """
    return _covariance_rank(weight_unit)


def weight_alignment(class_means: torch.Tensor, class_counts: torch.Tensor,
                     weight_unit: torch.Tensor) -> float:
    """Compute the class-mean feature-classifier alignment (Neural Collapse by Design, NC3).

    weight_alignment = (1/N) sum_i ||mu_hat_{y_i} - w_{y_i}||^2, averaged over samples so
    each class counts n_c times. It is 0 when every normalised class mean equals its
    classifier row, as for prototypes built from the class means.

    Args:
        class_means: (K', dim) class means of the present classes.
        class_counts: (K',) sample counts n_c of the present classes.
        weight_unit: (K', dim) unit classifier rows of the same classes.
    """
    gaps = (_unit_rows(class_means) - weight_unit).pow(2).sum(dim=1)
    counts = class_counts.to(torch.float64)
    return float((counts * gaps).sum() / counts.sum())


def weight_alignment_samples(class_means: torch.Tensor, class_counts: torch.Tensor,
                             within_sum_squares: torch.Tensor,
                             weight_unit: torch.Tensor) -> float:
    """Compute the per-sample feature-classifier alignment (Neural Collapse by Design, NC3).

    weight_alignment_samples = (1/N) sum_i ||u_i - w_{y_i}||^2, computed per class as
    sum_{i in c} ||u_i - mu_c||^2 + n_c ||mu_c - w_c||^2. Averaged over samples. It is 0
    at exact collapse, and it is never below the within-class spread. With
    ``normalize=False`` u_i is the raw feature while w_c is still a unit row.

    Args:
        class_means: (K', dim) class means of the present classes.
        class_counts: (K',) sample counts n_c.
        within_sum_squares: (K',) sum over class c of ||u_i - mu_c||^2.
        weight_unit: (K', dim) unit classifier rows of the same classes.
    """
    counts = class_counts.to(torch.float64)
    gaps = (class_means - weight_unit).pow(2).sum(dim=1)
    return float((within_sum_squares + counts * gaps).sum() / counts.sum())


def instance_alignment(class_counts: torch.Tensor, within_sum_squares: torch.Tensor) -> float:
    """Compute the instance-to-instance alignment, an NC1 measure (Neural Collapse by Design).

    instance_alignment = mean over classes of the mean over pairs i != j in the class of
    ||u_i - u_j||^2. Classes weigh equally. Because sum_{i,j} ||u_i - u_j||^2
    = 2 n_c sum_i ||u_i||^2 - 2 ||sum_i u_i||^2 = 2 n_c sum_i ||u_i - mu_c||^2, a class's
    pair mean is 2 sum_i ||u_i - mu_c||^2 / (n_c - 1). The centred form is used because
    the sum form cancels to rounding noise near collapse. Exact collapse gives 0.

    Args:
        class_counts: (C,) counts of the classes to average, each at least 2.
        within_sum_squares: (C,) sum over each class of ||u_i - mu_c||^2.
    """
    if class_counts.numel() == 0:
        return math.nan
    pair_means = 2.0 * within_sum_squares / (class_counts.to(torch.float64) - 1.0)
    return float(pair_means.mean())


def mir(class_means: torch.Tensor, weight_unit: torch.Tensor) -> float:
    """Compute the mutual-information ratio of weights and class means (Song et al., 2024).

    MIR = (H(G_W) + H(G_M) - H(G_W * G_M)) / min(H(G_W), H(G_M)), with G_W and G_M the
    (uncentred) Gram matrices of the unit weight rows and unit class means, * the
    element-wise product and H the normalised matrix entropy (``matrix_entropy``). Exact
    collapse gives 0.952 for K = 10, 0.998 for K = 100 and tends to 1 as K grows.

    Args:
        class_means: (K', dim) class means of the present classes.
        weight_unit: (K', dim) unit classifier rows of the same classes.
    """
    num_classes = class_means.shape[0]
    means_unit = _unit_rows(class_means)
    gram_weights = weight_unit @ weight_unit.T
    gram_means = means_unit @ means_unit.T
    entropy_weights = matrix_entropy(gram_weights, num_classes)
    entropy_means = matrix_entropy(gram_means, num_classes)
    entropy_joint = matrix_entropy(gram_weights * gram_means, num_classes)
    smaller = min(entropy_weights, entropy_means)
    if not smaller > 0.0:
        return math.nan
    return (entropy_weights + entropy_means - entropy_joint) / smaller


def hdr(class_means: torch.Tensor, weight_unit: torch.Tensor) -> float:
    """Compute the entropy-difference ratio of weights and class means (Song et al., 2024).

    HDR = |H(G_W) - H(G_M)| / max(H(G_W), H(G_M)) with G_W, G_M and H as in ``mir``.
    Exact collapse gives 0 because G_W = G_M.

    Args:
        class_means: (K', dim) class means of the present classes.
        weight_unit: (K', dim) unit classifier rows of the same classes.
    """
    num_classes = class_means.shape[0]
    means_unit = _unit_rows(class_means)
    entropy_weights = matrix_entropy(weight_unit @ weight_unit.T, num_classes)
    entropy_means = matrix_entropy(means_unit @ means_unit.T, num_classes)
    larger = max(entropy_weights, entropy_means)
    if not larger > 0.0:
        return math.nan
    return abs(entropy_weights - entropy_means) / larger


def nc1(projected_within_scatter: float, num_samples: int, num_present: int) -> float:
    """Compute the classic NC1 variability ratio (Papyan, Han and Donoho, 2020).

    NC1 = trace(Sigma_W Sigma_B^+) / K', with Sigma_W = (1/N) sum_i (u_i - mu_{y_i})
    (u_i - mu_{y_i})^T over samples and Sigma_B = (1/K') sum_c (mu_c - mu_G)(mu_c - mu_G)^T
    over present classes, mu_G the mean over samples. Exact collapse gives 0.

    Args:
        projected_within_scatter: sum_i ||(u_i - mu_{y_i})^T P||^2 with P P^T = Sigma_B^+
            (see ``_between_class_root``).
        num_samples: N.
        num_present: K', the number of present classes.
    """
    if num_present < 2:
        return math.nan
    return projected_within_scatter / num_samples / num_present


def ncc_agreement(num_agreeing: int, num_samples: int) -> float:
    """Compute the classifier / nearest-class-mean agreement (Papyan, Han and Donoho, 2020).

    The share of samples on which argmax_c u_i^T w_c (the cosine classifier of the unit
    rows) equals argmin_c ||u_i - mu_c|| (nearest class mean). Averaged over samples.
    Exact collapse gives 1. For a cross-entropy model, whose logits use raw rows and a
    bias, the cosine classifier can predict differently from the model itself.
    """
    return num_agreeing / num_samples


def _between_class_root(class_means: torch.Tensor, global_mean: torch.Tensor) -> torch.Tensor:
    """Return P (dim x r) with P P^T = Sigma_B^+ (Papyan's between-class covariance).

    Eigenvalues of Sigma_B at or below the largest times dim * eps are dropped, the usual
    pseudo-inverse tolerance.
    """
    num_present, dim = class_means.shape
    between = class_means - global_mean
    _, singular, vectors_t = torch.linalg.svd(between, full_matrices=False)
    eigenvalues = singular.pow(2) / num_present
    if eigenvalues.numel() == 0 or float(eigenvalues.max()) == 0.0:
        return class_means.new_zeros((dim, 0))
    keep = eigenvalues > eigenvalues.max() * dim * _EPS
    return vectors_t[keep].T / eigenvalues[keep].sqrt()


# ----------------------------------------------------------------------------------------
# Accumulation
# ----------------------------------------------------------------------------------------

def _remove_spill(file, folder: str) -> None:
    file.close()
    shutil.rmtree(folder, ignore_errors=True)


class _FeatureStore:
    """Rows of stored features: in RAM up to a byte budget, then in a file on disk.

    Rows are appended in arrival order, and ``gather`` returns rows by index as a float64
    tensor.
    """

    def __init__(self, dim: int, dtype: torch.dtype, memory_budget: int | None,
                 spill_dir: str | None):
        self.dim = dim
        self.dtype = dtype
        self.memory_budget = memory_budget
        self.spill_dir = spill_dir
        self.num_rows = 0
        self.path: str | None = None
        self._chunks: list[torch.Tensor] = []
        self._file = None
        self._finalizer = None

    @property
    def row_bytes(self) -> int:
        return self.dim * torch.finfo(self.dtype).bits // 8

    def append(self, rows: torch.Tensor) -> None:
        new_total = (self.num_rows + rows.shape[0]) * self.row_bytes
        over_budget = self.memory_budget is not None and new_total > self.memory_budget
        if self._file is None and over_budget:
            self._spill()
        if self._file is not None:
            rows.numpy().tofile(self._file)
        else:
            self._chunks.append(rows)
        self.num_rows += rows.shape[0]

    def _spill(self) -> None:
        folder = tempfile.mkdtemp(prefix="nc_features_", dir=self.spill_dir)
        self.path = os.path.join(folder, "features.bin")
        self._file = open(self.path, "wb")
        self._finalizer = weakref.finalize(self, _remove_spill, self._file, folder)
        for chunk in self._chunks:
            chunk.numpy().tofile(self._file)
        self._chunks = []

    def _consolidate(self) -> None:
        """Join the chunks into one tensor, freeing each chunk as it is copied."""
        if len(self._chunks) <= 1:
            return
        joined = torch.empty((self.num_rows, self.dim), dtype=self.dtype)
        pending = self._chunks[::-1]
        self._chunks = []
        start = 0
        while pending:
            chunk = pending.pop()
            joined[start:start + chunk.shape[0]] = chunk
            start += chunk.shape[0]
            del chunk
        self._chunks = [joined]

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Return the rows at the given ascending indices as a float64 tensor."""
        if self._file is not None:
            return self._read_rows(index.numpy()).to(torch.float64)
        self._consolidate()
        return self._chunks[0][index].to(torch.float64)

    def _read_rows(self, index: np.ndarray) -> torch.Tensor:
        """Read rows from the spill file, one read per run of consecutive indices.

        Positioned reads replace a memory map here. The kernel maps the file pages around
        each touched row (whole large folios on Linux 6.x), so mapping one class's rows,
        which are spread over the file, adds most of the file to the resident set.
        """
        self._file.flush()
        rows = torch.empty((len(index), self.dim), dtype=self.dtype)
        buffer = rows.numpy()
        run_starts = np.flatnonzero(np.diff(index) != 1) + 1
        bounds = np.concatenate([[0], run_starts, [len(index)]])
        with open(self.path, "rb", buffering=0) as handle:
            for begin, end in zip(bounds[:-1], bounds[1:]):
                handle.seek(int(index[begin]) * self.row_bytes)
                target = memoryview(buffer[begin:end]).cast("B")
                done = 0
                while done < target.nbytes:  # a single read returns at most about 2 GB
                    count = handle.readinto(target[done:])
                    if not count:
                        raise OSError(f"spill file {self.path} is shorter than the "
                                      f"{self.num_rows} rows written to it")
                    done += count
        return rows

    def close(self) -> None:
        self._chunks = []
        if self._finalizer is not None:
            self._finalizer()


@dataclass
class _ClassScan:
    """Per-class results of one pass over the stored features, grouped by class."""

    ranks: list                 # erank(Sigma_c) of the classes with n_c >= 2
    within_sum_squares: torch.Tensor  # (K',) sum_{i in c} ||u_i - mu_c||^2
    projected_within_scatter: float   # sum_i ||(u_i - mu_{y_i})^T P||^2 for nc1
    num_agreeing: int           # samples where classifier and nearest mean agree


class NCAccumulator:
    """Streaming accumulator of the statistics behind the NC metrics.

    ``update(features, labels)`` takes batches in any order, on any device; ``compute``
    returns the same dict as ``compute_nc_metrics`` on all batches at once, within float
    rounding. ``update`` normalises each feature in float64, rounds it to
    ``storage_dtype`` and accumulates per-class counts, sums and squared norms (float64)
    of the stored values, so every statistic describes the same numbers. ``compute``
    groups the stored features by class and makes one pass over the classes.

    Memory: K x dim x 8 bytes of sums, 8 to 16 bytes per sample of labels (a buffer that
    doubles when full) and the features, dim x 4 bytes per sample in float32. Features
    stay in RAM while they fit in ``memory_budget`` bytes. Past it, all of them move to a
    file ``features.bin`` in a new temporary folder under ``spill_dir`` (default: the
    system temp folder). ``close()``, the end of a ``with`` block or garbage collection
    deletes that folder. While the features are in RAM, ``compute`` joins the batches
    into one tensor and frees each batch as it is copied.

    Args:
        num_classes: K; labels must lie in [0, K).
        dim: feature dimension.
        normalize: L2-normalise the features first (the NC definitions use unit
            features); False measures the raw features.
        memory_budget: bytes of stored features kept in RAM before spilling to disk;
            None never spills, 0 always spills.
        spill_dir: folder for the spill file's temporary folder.
        storage_dtype: torch.float32 or torch.float64, the precision of stored features.
    """

    def __init__(self, num_classes: int, dim: int, normalize: bool = True,
                 memory_budget: int | None = _DEFAULT_MEMORY_BUDGET,
                 spill_dir: str | None = None, storage_dtype: torch.dtype = torch.float32):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes={num_classes} is invalid; pass at least 1")
        if int(dim) < 1:
            raise ValueError(f"dim={dim} is invalid; pass the feature dimension (at least 1)")
        if memory_budget is not None and memory_budget < 0:
            raise ValueError(
                f"memory_budget={memory_budget} is invalid; pass a byte count >= 0 or None"
            )
        if storage_dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"storage_dtype={storage_dtype} is invalid; pass torch.float32 or "
                f"torch.float64"
            )
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.normalize = bool(normalize)
        self._counts = torch.zeros(self.num_classes, dtype=torch.int64)
        self._sums = torch.zeros((self.num_classes, self.dim), dtype=torch.float64)
        self._sq_norms = torch.zeros(self.num_classes, dtype=torch.float64)
        # One growing buffer, because a small tensor kept per batch would sit between the
        # freed float64 blocks of later batches and fragment the heap.
        self._labels = torch.empty(0, dtype=torch.int64)
        self._store = _FeatureStore(self.dim, storage_dtype, memory_budget, spill_dir)

    # -- bookkeeping ----------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        return self._store.num_rows

    @property
    def spill_path(self) -> str | None:
        """Path of the spill file, or None while the features are in RAM."""
        return self._store.path

    def close(self) -> None:
        """Free the stored features and delete the spill file, if any.

        The accumulator cannot be updated or computed after this.
        """
        self._store.close()

    def __enter__(self) -> "NCAccumulator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- accumulation ---------------------------------------------------------------------

    def update(self, features, labels) -> None:
        """Add a batch of (N, dim) features with their (N,) integer labels.

        The batch is checked as a whole before anything is added, then converted in blocks
        of rows, so the float64 copies stay small for large batches.
        """
        x = _as_real_matrix(features, "features")
        if x.shape[1] != self.dim:
            raise ValueError(
                f"features have shape {tuple(x.shape)}; expected (N, {self.dim}) as set by dim"
            )
        y = _as_labels(labels, x.shape[0], self.num_classes)
        for start in range(0, x.shape[0], _UPDATE_BLOCK_ROWS):
            block = x[start:start + _UPDATE_BLOCK_ROWS].to(device="cpu", dtype=torch.float64)
            block_labels = y[start:start + _UPDATE_BLOCK_ROWS]
            if self.normalize:
                block = _unit_rows(block)
            stored = block.to(self._store.dtype).contiguous()
            block = stored.to(torch.float64)
            self._counts += torch.bincount(block_labels, minlength=self.num_classes)
            self._sums.index_add_(0, block_labels, block)
            self._sq_norms.index_add_(0, block_labels, (block * block).sum(dim=1))
            self._append_labels(block_labels)
            self._store.append(stored)

    def _append_labels(self, labels: torch.Tensor) -> None:
        used = self._store.num_rows
        if used + labels.shape[0] > self._labels.shape[0]:
            capacity = max(2 * self._labels.shape[0], used + labels.shape[0], 1024)
            grown = torch.empty(capacity, dtype=torch.int64)
            grown[:used] = self._labels[:used]
            self._labels = grown
        self._labels[used:used + labels.shape[0]] = labels

    # -- measurement ----------------------------------------------------------------------

    def class_means(self) -> torch.Tensor:
        """Return the (K, dim) float64 class means of the stored features; zero rows for
        absent classes. Normalised, they are the class-mean prototype classifier."""
        return self._sums / self._counts.clamp_min(1).unsqueeze(1).to(torch.float64)

    def compute(self, weight=None) -> dict:
        """Return the NC metric dict (python floats); weight keys only when weight is given.

        Args:
            weight: (K, dim) classifier rows as the model applies them (for example
                ``model.fc.weight`` or the class prototypes); they are L2-normalised here.
        """
        if self.num_samples == 0:
            raise ValueError("no features were added; call update(features, labels) first")
        weight_unit = None
        if weight is not None:
            w = _as_float64_matrix(weight, "weight")
            if tuple(w.shape) != (self.num_classes, self.dim):
                raise ValueError(
                    f"weight has shape {tuple(w.shape)}; expected ({self.num_classes}, "
                    f"{self.dim}), one row per class"
                )
            weight_unit = _unit_rows(w)

        present = (self._counts > 0).nonzero().flatten()
        counts = self._counts[present]
        means = self._sums[present] / counts.unsqueeze(1).to(torch.float64)
        global_mean = self._sums.sum(dim=0) / self.num_samples
        between_root = _between_class_root(means, global_mean)

        self._warn_small_classes()
        scan = self._scan_classes(present, means, between_root, weight_unit)

        multi = counts >= 2
        result = {
            "erank_intra": erank_intra(scan.ranks),
            "erank_inter": erank_inter(means),
            "instance_alignment": instance_alignment(counts[multi],
                                                     scan.within_sum_squares[multi]),
            "nc1": nc1(scan.projected_within_scatter, self.num_samples, len(present)),
        }
        if weight_unit is not None:
            present_weight = weight_unit[present]
            result["erank_weights"] = erank_weights(weight_unit)
            result["weight_alignment"] = weight_alignment(means, counts, present_weight)
            result["weight_alignment_samples"] = weight_alignment_samples(
                means, counts, scan.within_sum_squares, present_weight)
            result["mir"] = mir(means, present_weight)
            result["hdr"] = hdr(means, present_weight)
            result["ncc_agreement"] = ncc_agreement(scan.num_agreeing, self.num_samples)
        return {key: float(result[key]) for key in METRIC_KEYS if key in result}

    def _warn_small_classes(self) -> None:
        small = int((self._counts < 2).sum())
        if small:
            absent = int((self._counts == 0).sum())
            warnings.warn(
                f"erank_intra and instance_alignment skip {small} of {self.num_classes} "
                f"classes with fewer than 2 samples ({absent} of them absent)",
                RuntimeWarning,
                stacklevel=3,
            )

    def _scan_classes(self, present: torch.Tensor, means: torch.Tensor,
                      between_root: torch.Tensor,
                      weight_unit: torch.Tensor | None) -> _ClassScan:
        """Make one pass over the stored features, one present class at a time."""
        labels = self._labels[:self.num_samples]
        order = torch.argsort(labels, stable=True)
        offsets = torch.cumsum(self._counts, dim=0) - self._counts
        mean_sq_norms = means.pow(2).sum(dim=1)

        ranks = []
        within = torch.zeros(len(present), dtype=torch.float64)
        projected = 0.0
        agreeing = 0
        for slot, cls in enumerate(present.tolist()):
            start, count = int(offsets[cls]), int(self._counts[cls])
            rows = self._store.gather(order[start:start + count])
            centred = rows - means[slot]
            within[slot] = centred.pow(2).sum()
            projected += float((centred @ between_root).pow(2).sum())
            if count >= 2:
                scale = float(self._sq_norms[cls]) / count
                ranks.append(class_covariance_rank(centred, scale))
            if weight_unit is not None:
                predicted = (rows @ weight_unit.T).argmax(dim=1)
                # argmin_c ||u - mu_c||^2 = argmax_c (2 u^T mu_c - ||mu_c||^2)
                nearest = present[(2.0 * rows @ means.T - mean_sq_norms).argmax(dim=1)]
                agreeing += int((predicted == nearest).sum())
        return _ClassScan(ranks, within, projected, agreeing)


def compute_nc_metrics(features, labels, weight=None, num_classes: int | None = None,
                       normalize: bool = True) -> dict:
    """Compute the NC metrics of one set of features in a single call.

    Args:
        features: (N, dim) tensor or array; float64 input is stored in float64, anything
            else in float32.
        labels: (N,) integer class indices in [0, K).
        weight: optional (K, dim) classifier rows as the model applies them.
        num_classes: K; by default the number of weight rows, else max(label) + 1.
        normalize: L2-normalise the features first.

    Returns:
        A dict of python floats with the keys in METRIC_KEYS, less WEIGHT_KEYS when weight
        is None. See the module docstring for definitions and class weighting.
    """
    x = torch.as_tensor(features).detach()
    if x.dim() != 2:
        raise ValueError(f"features have shape {tuple(x.shape)}; expected (N, dim)")
    if weight is not None:
        weight_rows = torch.as_tensor(weight).shape[0]
        if num_classes is not None and num_classes != weight_rows:
            raise ValueError(
                f"num_classes={num_classes} but weight has {weight_rows} rows; pass a "
                f"weight with one row per class"
            )
        num_classes = weight_rows
    if num_classes is None:
        y = torch.as_tensor(labels)
        if y.numel() == 0:
            raise ValueError("labels are empty; pass at least one sample")
        num_classes = max(int(y.max()) + 1, 1)
    storage = torch.float64 if x.dtype == torch.float64 else torch.float32
    with NCAccumulator(num_classes, x.shape[1], normalize=normalize,
                       storage_dtype=storage) as accumulator:
        accumulator.update(x, labels)
        return accumulator.compute(weight)


# ----------------------------------------------------------------------------------------
# Logging during training


def add_monitor_args(parser) -> None:
    """Add --nc_freq and --nc_samples, the in-training NC logging of main_ce/main_supcon."""
    group = parser.add_argument_group("neural-collapse logging")
    group.add_argument("--nc_freq", type=int, default=0,
                       help="measure the NC metrics every this many training iterations "
                            "(0: never); the records go to metrics.jsonl and TensorBoard")
    group.add_argument("--nc_samples", type=int, default=10000,
                       help="images in the fixed, class-balanced training subset that the NC "
                            "metrics are measured on, without augmentation and in eval mode")


class TrainingMonitor:
    """Measure the NC metrics every ``freq`` iterations and hand each record to ``log``.

    ``extract(module)`` yields (features, labels) batches of a fixed subset of the
    training set with the module in eval mode. A weight of None scores the class-mean
    prototypes of the subset, which is how a SupCon encoder classifies without probing.
    """

    def __init__(self, num_classes: int, freq: int, log, extract):
        self.num_classes = num_classes
        self.freq = freq
        self.log = log
        self.extract = extract

    @classmethod
    def from_options(cls, opt, recorder):
        """Build the monitor of a training script, or None with --nc_freq 0 or off rank 0.

        The subset is ``data.build_nc_loader(opt)``: --nc_samples class-balanced training
        images without augmentation, the same at every measurement.
        """
        import data
        import util

        if opt.nc_freq <= 0 or not util.is_main_process(opt):
            return None
        loader = data.build_nc_loader(opt)
        return cls(opt.n_cls, opt.nc_freq, recorder.log,
                   lambda module: util.iterate_features(module, loader, opt))

    def step(self, iteration: int, epoch: int, module, weight=None) -> dict | None:
        """Measure and log at multiples of ``freq``; return the metrics or None."""
        if self.freq <= 0 or iteration % self.freq:
            return None
        accumulator = None
        for features, labels in self.extract(module):
            if accumulator is None:
                accumulator = NCAccumulator(self.num_classes, features.shape[1])
            accumulator.update(features, labels)
        with accumulator, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            prototypes = accumulator.class_means() if weight is None else weight.detach()
            metrics = accumulator.compute(weight=prototypes)
        self.log({"iter": iteration, "epoch": epoch, "nc": metrics}, step=iteration)
        print(f"NC at iteration {iteration}: " + format_row(metrics), flush=True)
        return metrics


def format_row(metrics: dict) -> str:
    """Format metrics as the columns of the paper's Table 2, then the classic measures."""
    names = [("erank_intra", "intra"), ("erank_inter", "inter"), ("erank_weights", "weights"),
             ("weight_alignment", "w-align"), ("instance_alignment", "i-align"),
             ("mir", "MIR"), ("hdr", "HDR"), ("nc1", "NC1"), ("ncc_agreement", "NCC")]
    return "  ".join(f"{label} {metrics[key]:.3f}" for key, label in names if key in metrics)


# ----------------------------------------------------------------------------------------
# Command line


def parse_option(argv=None):
    import argparse

    import data
    import util

    parser = argparse.ArgumentParser(
        description="Print the NC metrics (the paper's Table 2 row) of a trained model.")
    data.add_data_args(parser)
    util.add_pretrained_args(parser)
    group = parser.add_argument_group("measurement")
    group.add_argument("--split", choices=["train", "test"], default="train",
                       help="which split to measure, without augmentation (paper: train)")
    group.add_argument("--classifier", type=str, default=None, metavar="PATH",
                       help="a main_linear.py or main_prototype.py checkpoint whose rows are "
                            "the classifier (SupCon 'w probing'); default: the model's own "
                            "classifier, or the class-mean prototypes for a SupCon encoder "
                            "('w/o probing')")
    group.add_argument("--batch_size", type=int, default=256, help="images per forward pass")
    group.add_argument("--memory_budget_gb", type=float, default=2.0,
                       help="GB of features kept in RAM before spilling to a temporary file")
    group.add_argument("--json", action="store_true", help="also print the result as JSON")
    group.add_argument("--out", type=str, default=None, metavar="FILE",
                       help="write the result as JSON to this file")
    util.add_device_args(group)
    opt = parser.parse_args(argv)
    opt.n_cls, opt.mean, opt.std = data.dataset_stats(opt)
    opt.world_size, opt.rank, opt.dry_run = 1, 0, False
    return opt


def load_classifier_rows(path: str) -> torch.Tensor:
    """Return the (K, dim) rows of a classifier checkpoint written by main_linear.py."""
    import util

    state = util.strip_wrapper_prefixes(util.load_checkpoint(path)["model"])
    if "fc.weight" not in state:
        raise util.UsageError(f"{path} contains no classifier (no fc.weight); pass a checkpoint "
                              "of main_linear.py or main_prototype.py")
    return state["fc.weight"].float()


def main(argv=None) -> dict:
    import data
    import util

    opt = parse_option(argv)
    util.init_distributed(opt)
    if opt.world_size > 1:
        raise util.UsageError("nc_metrics.py runs in one process; start it with python, "
                              "not torchrun")

    # model and the classifier to score
    model, encode = util.load_encoder(opt)
    options = opt.ckpt_opt
    if opt.classifier:
        weight = load_classifier_rows(opt.classifier)
    elif hasattr(model, "fc"):
        weight = model.fc.weight.detach().float().cpu()
    else:
        weight = None

    # features of the split, without augmentation
    dataset = data.build_dataset(opt, opt.split, data.build_transform(opt, "eval"))
    loader = util.make_eval_loader(dataset, opt)
    accumulator = None
    for features, labels in util.iterate_features(encode, loader, opt):
        if accumulator is None:
            accumulator = NCAccumulator(opt.n_cls, features.shape[1],
                                        memory_budget=int(opt.memory_budget_gb * 1024**3))
        accumulator.update(features.cpu(), labels.cpu())
    if accumulator is None:
        raise util.UsageError(f"the {opt.split} split is empty; check --data_folder")
    with accumulator:
        if weight is None:
            weight = accumulator.class_means()
        if tuple(weight.shape) != (opt.n_cls, accumulator.dim):
            raise util.UsageError(
                f"the classifier has shape {tuple(weight.shape)} but the features need "
                f"({opt.n_cls}, {accumulator.dim}); check --classifier and --feature")
        metrics = accumulator.compute(weight=weight)

    result = {"ckpt": opt.ckpt, "classifier": opt.classifier, "split": opt.split,
              "feature": opt.feature, "dataset": opt.dataset,
              "script": options.get("script", "SupContrast"), "loss": options.get("loss"),
              "method": options.get("method"), "head": options.get("head"),
              "num_samples": accumulator.num_samples, "metrics": metrics}
    print(f"{opt.ckpt} ({opt.split} split, {accumulator.num_samples} images, "
          f"{opt.feature} features)")
    print(format_row(metrics))
    if opt.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    if opt.out:
        util.write_json(opt.out, result)
    return result


if __name__ == "__main__":
    import sys

    import util

    util.run_main(lambda: main(sys.argv[1:]))
