"""Contrastive and normalised-softmax losses on the unit hypersphere.

The five losses of "Neural Collapse by Design: Learning Class Prototypes on the
Hypersphere", in the order of its equations:

    SupConLoss     eq. 2  instance-to-instance contrast (Khosla et al., 2020); SimCLR without labels
    NormFaceLoss   eq. 3  instance-to-class normalised softmax (Wang et al., 2017)
    NTCELoss       eq. 4  class-to-instance contrast over the M batch instances
    NONLLoss       eq. 5  class-to-instance contrast over the negatives only
    PrototypeLoss  eq. 6  instance-to-class-mean contrast, weighted by batch class counts

Notation: u_i = z_i / ||z_i|| is the normalised feature of instance i, w_hat_c = w_c / ||w_c||
the normalised class weight (prototype) of class c, y_i the label of instance i, tau the
temperature, M the batch size, K the number of classes and C(i) the other batch instances
that share the class of instance i.

Conventions shared by all five losses:
- Each loss L2-normalises its features and class weights itself, so raw encoder outputs
  may be passed; unit-norm inputs give the same value.
- Logits are computed in float32, or in float64 when an input is float64, with autocast
  disabled. The loss is returned in that dtype, so float16 and bfloat16 inputs give a
  float32 loss.
- An anchor whose term is undefined (an empty sum in the equation) is left out of the
  mean. When no anchor of the batch has a defined term, the loss is a zero that stays
  connected to the autograd graph, so `backward()` runs and yields zero gradients.
- With `torch.distributed` initialised, world size R > 1 and `gather=True`, SupConLoss,
  NTCELoss, NONLLoss and PrototypeLoss gather features and labels from all ranks with
  gradients, so M is the global batch. Each rank's anchors are its local rows, and a rank
  returns R * (sum of its defined anchor terms) / N, with N the global number of defined
  anchors. The mean of the R rank losses then equals the single-process loss on the
  concatenated batch, and the gradients after DDP averaging equal the single-process
  gradients. Ranks may have different batch sizes.
"""

import contextlib
import math

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------

def _check_positive(name, value):
    """Return `value` as a float, or raise ValueError unless it is finite and > 0."""
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f'{name} must be a finite number > 0, got {value}')
    return value


def _check_view_features(features):
    """Return features as [bsz, n_views, dim], flattening trailing dimensions as SupContrast does."""
    if features.dim() < 3:
        raise ValueError(
            f'features must have shape [bsz, n_views, dim], got shape {tuple(features.shape)}. '
            f'For a single view, pass features.unsqueeze(1)')
    if features.shape[0] == 0:
        raise ValueError(f'features has no rows (shape {tuple(features.shape)}); pass a non-empty batch')
    return features.reshape(features.shape[0], features.shape[1], -1)


def _check_instance_features(features):
    if features.dim() != 2:
        raise ValueError(f'features must have shape [M, dim], got shape {tuple(features.shape)}')
    if features.shape[0] == 0:
        raise ValueError(f'features has no rows (shape {tuple(features.shape)}); pass a non-empty batch')
    return features


def _check_labels(labels, batch_size, device):
    """Return labels as a long tensor [batch_size].

    Like SupContrast, any shape with one entry per sample (such as [bsz, 1]) and
    integer-valued floating-point labels are accepted.
    """
    labels = torch.as_tensor(labels, device=device)
    if labels.numel() != batch_size:
        raise ValueError(
            f'labels must contain one label per sample, expected shape [{batch_size}], '
            f'got shape {tuple(labels.shape)}')
    labels = labels.reshape(-1)
    if labels.is_complex():
        raise ValueError(f'labels must be integer class indices, got dtype {labels.dtype}')
    if labels.is_floating_point():
        integral = torch.isfinite(labels) & (labels == labels.round())
        if not bool(integral.all()):
            bad = labels[~integral][0].item()
            raise ValueError(f'labels must be integer class indices, got the non-integer value {bad}')
    return labels.long()


def _check_weight(weight, dim):
    if weight.dim() != 2:
        raise ValueError(f'weight must have shape [K, {dim}], got shape {tuple(weight.shape)}')
    if weight.shape[1] != dim:
        raise ValueError(
            f'weight must have shape [K, {dim}] to match the feature dimension {dim}, '
            f'got shape {tuple(weight.shape)}')
    return weight


def _check_class_range(labels, num_classes):
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f'labels must lie in [0, {num_classes}) for a weight with K={num_classes} rows, '
            f'got the label {bad}')


def _check_mask(mask, batch_size, device):
    mask = torch.as_tensor(mask, device=device)
    if tuple(mask.shape) != (batch_size, batch_size):
        raise ValueError(
            f'mask must have shape [{batch_size}, {batch_size}] (bsz x bsz), got shape {tuple(mask.shape)}')
    return mask


# ---------------------------------------------------------------------------
# Precision and normalisation
# ---------------------------------------------------------------------------

def _compute_dtype(*tensors):
    """Return float64 when any input is float64, otherwise float32."""
    if any(tensor.dtype == torch.float64 for tensor in tensors):
        return torch.float64
    return torch.float32


def _autocast_disabled(device):
    """Return a context that turns autocast off, so logits stay in the compute dtype."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _normalize(x, dtype):
    """Return x / ||x|| along the last dimension, computed in `dtype`."""
    return F.normalize(x.to(dtype), dim=-1)


# ---------------------------------------------------------------------------
# Gathering across ranks
# ---------------------------------------------------------------------------

def _gather_world_size(gather):
    """Return the number of ranks whose batches form the global batch (1 without gathering)."""
    if gather and dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _all_gather_rows(tensor, sizes):
    """Concatenate `tensor` from every rank along dim 0, where rank r contributes sizes[r] rows.

    Rows are padded to the largest size for the collective and stripped afterwards.
    Features that require grad go through the autograd all_gather, whose backward sums
    every rank's gradient into the owning rank's rows.
    NOTE: all ranks must agree on `requires_grad`, because the backward is a collective
    too; a rank that skips it leaves the others waiting.
    """
    padded = tensor
    missing = max(sizes) - tensor.shape[0]
    if missing > 0:
        padded = torch.cat([tensor, tensor.new_zeros((missing,) + tuple(tensor.shape[1:]))])
    if padded.requires_grad:
        parts = dist_nn.all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def _gather_batch(features, labels, world_size):
    """Return (features of all ranks, labels of all ranks, global index of this rank's first row)."""
    if world_size == 1:
        return features, labels, 0
    local_size = torch.tensor([features.shape[0]], device=features.device)
    gathered_sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
    dist.all_gather(gathered_sizes, local_size)
    sizes = [int(size.item()) for size in gathered_sizes]
    offset = sum(sizes[:dist.get_rank()])
    return _all_gather_rows(features, sizes), _all_gather_rows(labels, sizes), offset


# ---------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------

def _masked_logsumexp(logits, keep):
    """Return log sum_j exp(logits[..., j]) over the entries where `keep` is True.

    A row without any kept entry gives 0 and a zero gradient instead of -inf or NaN, in
    the forward and the backward pass. Callers must leave such rows out of the mean.
    """
    filled = logits.masked_fill(~keep, float('-inf'))
    row_max = filled.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    total = torch.exp(filled - row_max).sum(dim=-1)
    has_entry = keep.any(dim=-1)
    total = torch.where(has_entry, total, torch.ones_like(total))
    return torch.log(total) + row_max.squeeze(-1)


def _mean_over_defined(terms, defined, world_size):
    """Return the mean of `terms` over the anchors where `defined` is True.

    Without defined anchors the result is 0 and still part of the autograd graph. With
    world_size R > 1 the count N of defined anchors is summed over all ranks and the
    result is R * (local sum) / N, so the mean over ranks is the global mean.
    """
    total = torch.where(defined, terms, torch.zeros_like(terms)).sum()
    count = defined.sum()
    if world_size > 1:
        count = count.clone()
        dist.all_reduce(count)
        total = total * world_size
    return total / count.clamp_min(1).to(total.dtype)


def _view_major_anchor_index(n_views, batch_size, offset, local_size, device):
    """Return the rows of A = [view 0; view 1; ...] (n_views * batch_size rows) that belong to this rank's samples."""
    views = torch.arange(n_views, device=device)[:, None] * batch_size
    samples = offset + torch.arange(local_size, device=device)[None, :]
    return (views + samples).reshape(-1)


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------

class SupConLoss(nn.Module):
    """Supervised contrastive loss, eq. 2; the SimCLR loss when neither labels nor mask is given.

    With the n_views views stacked view-major, A = [U; V; ...] (n_views * M rows a_i),

        L_SCL = 1/|anchors| sum_{i in anchors} -(tau / base_tau) 1/|C(i)| sum_{l in C(i)}
                log( e^{a_i^T a_l / tau} / sum_{j != i} e^{a_i^T a_j / tau} ),

    where C(i) is the set of rows j != i with the label of row i. For SimCLR, C(i) is the
    other views of the same sample. With an explicit mask, row l enters C(i) with the
    weight mask[s(i), s(l)], where s(r) is the sample of row r, and the average over C(i)
    is weighted. With base_temperature == temperature this is eq. 2. contrast_mode 'all'
    uses every row of A as an anchor and 'one' only the rows of the first view. In both
    modes the denominator runs over all rows but i.

    Call signature, contrast modes, the tau / base_tau factor and the values follow
    SupContrast's SupConLoss (HobbitLong/SupContrast, losses.py), so the two files can be
    swapped. Differences from that implementation:
    - An anchor without positives (|C(i)| = 0) is left out of the mean, because its term
      is undefined, whereas SupContrast counts it as a zero term. Values agree whenever
      every anchor has a positive. When no anchor has one, the loss is a zero with a
      grad_fn.
    - Features are L2-normalised here, while SupContrast expects normalised input.
    - Logits are float32 (float64 for float64 input) under autocast.
    - gather=True contrasts against the global batch under torch.distributed (see the
      module docstring). An explicit mask describes local pairs only, so it raises
      ValueError when gathering over more than one rank.

    Shapes: features [bsz, n_views, dim] (trailing dimensions are flattened), labels
    [bsz] of integer class indices, mask [bsz, bsz] with mask[i, j] = 1 when sample j is a
    positive of sample i. Returns a scalar.
    """

    def __init__(self, temperature=0.07, contrast_mode='all', base_temperature=0.07, gather=True):
        super().__init__()
        self.temperature = _check_positive('temperature', temperature)
        self.base_temperature = _check_positive('base_temperature', base_temperature)
        if contrast_mode not in ('all', 'one'):
            raise ValueError(f"contrast_mode must be 'all' or 'one', got {contrast_mode!r}")
        self.contrast_mode = contrast_mode
        self.gather = gather

    def forward(self, features, labels=None, mask=None):
        features = _check_view_features(features)
        local_size, n_views = features.shape[0], features.shape[1]
        device = features.device
        if labels is not None and mask is not None:
            raise ValueError('pass either labels or mask, not both')
        if labels is not None:
            labels = _check_labels(labels, local_size, device)
        if mask is not None:
            mask = _check_mask(mask, local_size, device)
        world_size = _gather_world_size(self.gather)
        if mask is not None and world_size > 1:
            raise ValueError(
                'an explicit mask covers the local batch only and cannot be gathered across '
                f'{world_size} ranks; pass labels, or construct SupConLoss(gather=False)')
        simclr = labels is None and mask is None
        if simclr:
            # Placeholder labels for the gather. Below, each global sample becomes its own class.
            labels = torch.zeros(local_size, dtype=torch.long, device=device)

        dtype = _compute_dtype(features)
        with _autocast_disabled(device):
            units, all_labels, offset = _gather_batch(_normalize(features, dtype), labels, world_size)
            batch_size = units.shape[0]
            if simclr:
                # Each sample is its own class, so the positives are its other views.
                all_labels = torch.arange(batch_size, device=device)
            contrast = torch.cat(torch.unbind(units, dim=1), dim=0)
            anchor_views = 1 if self.contrast_mode == 'one' else n_views
            anchor_index = _view_major_anchor_index(anchor_views, batch_size, offset, local_size, device)
            column = torch.arange(contrast.shape[0], device=device)
            not_self = column[None, :] != anchor_index[:, None]
            if mask is None:
                contrast_labels = all_labels.repeat(n_views)
                positive = contrast_labels[anchor_index][:, None] == contrast_labels[None, :]
                positive = (positive & not_self).to(dtype)
            else:
                sample = column % batch_size
                positive = mask.to(dtype)[sample[anchor_index]][:, sample] * not_self

            # log of the fraction for every pair (i, l): a_i^T a_l / tau - log sum_{j != i} e^{a_i^T a_j / tau}
            logits = contrast[anchor_index] @ contrast.T / self.temperature
            log_prob = logits - _masked_logsumexp(logits, not_self)[:, None]

            # average over the positives C(i), which is undefined when C(i) is empty
            positive_count = positive.sum(dim=1)
            defined = positive_count > 0
            mean_log_prob = (positive * log_prob).sum(dim=1) / torch.where(defined, positive_count, 1)
            terms = -(self.temperature / self.base_temperature) * mean_log_prob
            return _mean_over_defined(terms, defined, world_size)


class NormFaceLoss(nn.Module):
    """NormFace loss, eq. 3: each instance contrasted against the K class prototypes.

        L_NormFace = -1/M sum_{i=1}^{M} log( e^{u_i^T w_hat_{y_i} / tau} / sum_{c=1}^{K} e^{u_i^T w_hat_c / tau} )

    Every anchor is defined, because the denominator contains all K classes. Each term needs
    only its own instance and W, so nothing is gathered across ranks.
    NOTE: under DDP with different batch sizes per rank, the average of the rank losses
    weights each rank's mean equally, not each instance.

    Shapes: features [M, dim], labels [M] in [0, K), weight [K, dim]. Returns a scalar.
    """

    def __init__(self, temperature=0.1):
        super().__init__()
        self.temperature = _check_positive('temperature', temperature)

    def forward(self, features, labels, weight):
        features = _check_instance_features(features)
        weight = _check_weight(weight, features.shape[1])
        labels = _check_labels(labels, features.shape[0], features.device)
        _check_class_range(labels, weight.shape[0])

        dtype = _compute_dtype(features, weight)
        with _autocast_disabled(features.device):
            units, prototypes = _normalize(features, dtype), _normalize(weight, dtype)
            logits = units @ prototypes.T / self.temperature
            numerator = logits.gather(1, labels[:, None]).squeeze(1)
            denominator = torch.logsumexp(logits, dim=1)
            defined = torch.ones_like(labels, dtype=torch.bool)
            return _mean_over_defined(denominator - numerator, defined, world_size=1)


def _class_to_instance_logits(features, labels, weight, temperature, gather):
    """Compute the class-to-instance logits S[c, j] = w_hat_c^T u_j / tau shared by NTCE and NONL.

    S is built once for the classes present in the (global) batch, shape [C, M], so the
    cost is O(C * M * dim) time and O(C * M) memory with C <= min(K, M).

    Returns (logits [C, M], class index of every batch instance [M], global indices of
    this rank's instances [m], world size).
    """
    features = _check_instance_features(features)
    weight = _check_weight(weight, features.shape[1])
    labels = _check_labels(labels, features.shape[0], features.device)
    _check_class_range(labels, weight.shape[0])

    world_size = _gather_world_size(gather)
    dtype = _compute_dtype(features, weight)
    units, all_labels, offset = _gather_batch(_normalize(features, dtype), labels, world_size)
    classes, class_index = torch.unique(all_labels, return_inverse=True)
    logits = _normalize(weight[classes], dtype) @ units.T / temperature
    local = offset + torch.arange(features.shape[0], device=features.device)
    return logits, class_index, local, world_size


class NTCELoss(nn.Module):
    """Normalised temperature-scaled cross entropy (NTCE), eq. 4: class prototypes as anchors.

        L_NTCE = 1/M sum_{i=1}^{M} -log( e^{w_hat_{y_i}^T u_i / tau} / sum_{j=1}^{M} e^{w_hat_{y_i}^T u_j / tau} )

    The anchor of instance i is the prototype w_hat_{y_i} of its own class, and the
    denominator runs over all M batch instances, instance i included. Every anchor is
    defined. The denominator depends on y_i only, so it is computed once per class present
    in the batch and picked by label. Classes absent from the batch do not enter the loss.

    Shapes: features [M, dim], labels [M] in [0, K), weight [K, dim]. Returns a scalar.
    With gather=True under torch.distributed, M is the global batch (module docstring).
    """

    def __init__(self, temperature=0.1, gather=True):
        super().__init__()
        self.temperature = _check_positive('temperature', temperature)
        self.gather = gather

    def forward(self, features, labels, weight):
        with _autocast_disabled(features.device):
            logits, class_index, local, world_size = _class_to_instance_logits(
                features, labels, weight, self.temperature, self.gather)
            anchor_class = class_index[local]
            numerator = logits[anchor_class, local]
            denominator = torch.logsumexp(logits, dim=1)[anchor_class]
            defined = torch.ones_like(local, dtype=torch.bool)
            return _mean_over_defined(denominator - numerator, defined, world_size)


class NONLLoss(nn.Module):
    """Negatives-only normalisation loss (NONL), eq. 5: NTCE with same-class instances out of the denominator.

        L_NONL = 1/M sum_{i=1}^{M} -log( e^{w_hat_{y_i}^T u_i / tau} / sum_{j=1, y_j != y_i}^{M} e^{w_hat_{y_i}^T u_j / tau} )

    The numerator is the same as in NTCE. The denominator runs over the negatives of class
    y_i only, so instance i and every instance of its class are excluded. An anchor whose
    class is the only one in the batch has no negative, so its term is undefined and it is
    left out of the mean. A batch with a single class therefore gives a zero loss with a
    grad_fn and zero gradients. The denominator is computed once per class present and
    picked by label.

    Shapes: features [M, dim], labels [M] in [0, K), weight [K, dim]. Returns a scalar.
    With gather=True under torch.distributed, M is the global batch (module docstring).
    """

    def __init__(self, temperature=0.1, gather=True):
        super().__init__()
        self.temperature = _check_positive('temperature', temperature)
        self.gather = gather

    def forward(self, features, labels, weight):
        with _autocast_disabled(features.device):
            logits, class_index, local, world_size = _class_to_instance_logits(
                features, labels, weight, self.temperature, self.gather)
            anchor_class = class_index[local]
            numerator = logits[anchor_class, local]
            classes = torch.arange(logits.shape[0], device=logits.device)
            negative = class_index[None, :] != classes[:, None]
            denominator = _masked_logsumexp(logits, negative)[anchor_class]
            defined = negative.any(dim=1)[anchor_class]
            return _mean_over_defined(denominator - numerator, defined, world_size)


class PrototypeLoss(nn.Module):
    """Prototype loss, eq. 6: each row of A contrasted against the batch class means.

    With the views stacked view-major, A = [U; V; ...] (n_views * M rows a_i), B_c the rows
    of class c, n_c = |B_c| and mu_hat_c = 1/n_c sum_{j in B_c} a_j (the mean of unit
    vectors, not renormalised, so a_i^T mu_hat_c <= 1),

        L_proto = -1/|A| sum_i log( e^{a_i^T mu_hat_{y_i} / tau}
                                    / (sum_c n_c e^{a_i^T mu_hat_c / tau} - e^{a_i^T mu_hat_{y_i} / tau}) ).

    The sum over c runs over the classes present in the batch, because absent classes
    have n_c = 0. The denominator equals (n_{y_i} - 1) e^{a_i^T mu_hat_{y_i} / tau} plus the
    other classes' terms, and is computed in that form as a log-sum-exp with weights. It is
    empty only when A has a single row, and such an anchor is left out of the mean.

    Shapes: features [bsz, n_views, dim] (trailing dimensions are flattened), labels [bsz]
    of integer class indices. Returns a scalar. With gather=True under torch.distributed
    the class means and counts come from the global batch (module docstring).
    """

    def __init__(self, temperature=0.1, gather=True):
        super().__init__()
        self.temperature = _check_positive('temperature', temperature)
        self.gather = gather

    def forward(self, features, labels):
        features = _check_view_features(features)
        local_size, n_views = features.shape[0], features.shape[1]
        device = features.device
        labels = _check_labels(labels, local_size, device)
        world_size = _gather_world_size(self.gather)

        dtype = _compute_dtype(features)
        with _autocast_disabled(device):
            units, all_labels, offset = _gather_batch(_normalize(features, dtype), labels, world_size)
            batch_size = units.shape[0]
            rows = torch.cat(torch.unbind(units, dim=1), dim=0)
            _, class_index = torch.unique(all_labels.repeat(n_views), return_inverse=True)
            num_present = int(class_index.max()) + 1
            counts = torch.bincount(class_index, minlength=num_present)
            class_sums = rows.new_zeros(num_present, rows.shape[1]).index_add(0, class_index, rows)
            means = class_sums / counts[:, None].to(dtype)

            anchor_index = _view_major_anchor_index(n_views, batch_size, offset, local_size, device)
            anchor_class = class_index[anchor_index]
            logits = rows[anchor_index] @ means.T / self.temperature
            numerator = logits.gather(1, anchor_class[:, None]).squeeze(1)
            # weights n_c - [c == y_i] of sum_c n_c e^{a_i^T mu_hat_c / tau} - e^{a_i^T mu_hat_{y_i} / tau}
            class_weights = counts[None, :] - F.one_hot(anchor_class, num_present)
            present = class_weights > 0
            denominator = _masked_logsumexp(logits + class_weights.clamp_min(1).to(dtype).log(), present)
            defined = present.any(dim=1)
            return _mean_over_defined(denominator - numerator, defined, world_size)
