"""Gathered losses on two gloo ranks against the single-process loss on the whole batch.

Each rank receives a slice of the batch. With gather=True, rank r returns
L_r = R * (sum of its defined anchor terms) / N, with R ranks and N defined anchors in
the global batch, so the expected relations are:

- loss:    (1/R) sum_r L_r = L on the concatenated batch.
- features: the all_gather backward sums every rank's gradient into the owning rank, so
            rank r's input gradient is d(sum_r' L_r')/dx_r = R * dL/dx_r, and
            (1/R) * grad_r equals rank r's slice of the single-process gradient. DDP's
            averaging over ranks of the parameter gradients then gives dL/dtheta.
- weight:  the class weights are replicated, so rank r's gradient is dL_r/dW, and the
            DDP average (1/R) sum_r dL_r/dW equals dL/dW.

All ranks run in one spawn, in float64 on CPU.
"""

import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import losses


WORLD_SIZE = 2
TIMEOUT_SECONDS = 120


def _make_cases():
    generator = torch.Generator().manual_seed(0)

    def view_features(bsz, n_views):
        return torch.randn(bsz, n_views, 5, generator=generator, dtype=torch.float64)

    def instance_features(batch):
        return torch.randn(batch, 5, generator=generator, dtype=torch.float64)

    def weight(num_classes):
        return torch.randn(num_classes, 5, generator=generator, dtype=torch.float64)

    def case(loss, kwargs, split, features, labels, class_weight=None):
        return {'loss': loss, 'kwargs': kwargs, 'split': split, 'features': features,
                'labels': labels, 'weight': class_weight}

    return {
        'supcon_all_even': case(
            'SupConLoss', {'temperature': 0.1}, [4, 4], view_features(8, 2),
            torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])),
        # One view with singleton classes 3, 4 and 5: those anchors have no positive.
        'supcon_missing_positives_uneven': case(
            'SupConLoss', {'temperature': 0.1, 'base_temperature': 0.2}, [3, 6], view_features(9, 1),
            torch.tensor([0, 3, 1, 0, 4, 1, 1, 5, 0])),
        'supcon_one_uneven': case(
            'SupConLoss', {'temperature': 0.2, 'contrast_mode': 'one'}, [5, 4], view_features(9, 2),
            torch.tensor([0, 1, 0, 2, 1, 2, 0, 3, 1])),
        'simclr_uneven': case(
            'SupConLoss', {'temperature': 0.5}, [2, 5], view_features(7, 2), None),
        'ntce_even': case(
            'NTCELoss', {'temperature': 0.1}, [5, 5], instance_features(10),
            torch.tensor([0, 3, 3, 6, 1, 0, 6, 6, 2, 3]), weight(7)),
        'ntce_uneven': case(
            'NTCELoss', {'temperature': 0.2}, [3, 8], instance_features(11),
            torch.tensor([1, 1, 1, 0, 2, 1, 0, 2, 3, 3, 0]), weight(4)),
        # Rank 0 has class 4 only, so all its negatives are on rank 1.
        'nonl_uneven': case(
            'NONLLoss', {'temperature': 0.1}, [4, 7], instance_features(11),
            torch.tensor([4, 4, 4, 4, 0, 4, 2, 2, 0, 5, 4]), weight(6)),
        'nonl_single_class': case(
            'NONLLoss', {'temperature': 0.1}, [3, 4], instance_features(7),
            torch.full((7,), 2), weight(3)),
        'prototype_even': case(
            'PrototypeLoss', {'temperature': 0.1}, [4, 4], view_features(8, 2),
            torch.tensor([0, 1, 2, 0, 1, 1, 0, 2])),
        'prototype_uneven': case(
            'PrototypeLoss', {'temperature': 0.3}, [2, 7], view_features(9, 1),
            torch.tensor([5, 0, 5, 5, 1, 0, 7, 1, 5])),
        'ntce_no_gather': case(
            'NTCELoss', {'temperature': 0.1, 'gather': False}, [4, 6], instance_features(10),
            torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2]), weight(3)),
    }


def _slice(split, rank):
    start = sum(split[:rank])
    return slice(start, start + split[rank])


def _run_case(case, rows):
    """Return (loss, features gradient, weight gradient) of one case on the given rows."""
    loss = getattr(losses, case['loss'])(**case['kwargs'])
    features = case['features'][rows].clone().requires_grad_(True)
    labels = None if case['labels'] is None else case['labels'][rows]
    if case['weight'] is None:
        value = loss(features, labels)
        value.backward()
        return value.detach(), features.grad, None
    class_weight = case['weight'].clone().requires_grad_(True)
    value = loss(features, labels, class_weight)
    value.backward()
    return value.detach(), features.grad, class_weight.grad


def _worker(rank, init_file, cases_path, out_dir):
    interfaces = [name for _, name in socket.if_nameindex()]
    if 'lo' in interfaces:
        os.environ.setdefault('GLOO_SOCKET_IFNAME', 'lo')
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=WORLD_SIZE)
    try:
        cases = torch.load(cases_path)
        results = {name: _run_case(case, _slice(case['split'], rank)) for name, case in cases.items()}
        try:
            losses.SupConLoss()(cases['supcon_all_even']['features'], mask=torch.eye(8))
            results['mask_rejected'] = False
        except ValueError:
            results['mask_rejected'] = True
        torch.save(results, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def rank_results(tmp_path_factory):
    """Run every case on two gloo ranks in one spawn and return (cases, [results of rank 0, rank 1])."""
    folder = tmp_path_factory.mktemp('distributed_losses')
    cases = _make_cases()
    cases_path = str(folder / 'cases.pt')
    torch.save(cases, cases_path)
    context = mp.spawn(_worker, args=(str(folder / 'init'), cases_path, str(folder)),
                       nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f'gloo ranks did not finish within {TIMEOUT_SECONDS} s')
    results = [torch.load(folder / f'rank{rank}.pt') for rank in range(WORLD_SIZE)]
    return cases, results


GATHERED_CASES = [name for name in _make_cases() if name != 'ntce_no_gather']
WEIGHT_CASES = [name for name in GATHERED_CASES if name.startswith(('ntce', 'nonl'))]


@pytest.mark.parametrize('name', GATHERED_CASES)
def test_gathered_loss_rank_mean_matches_single(rank_results, name):
    cases, results = rank_results
    single, _, _ = _run_case(cases[name], slice(None))
    rank_mean = sum(results[rank][name][0] for rank in range(WORLD_SIZE)) / WORLD_SIZE
    assert torch.allclose(rank_mean, single, rtol=1e-12, atol=1e-12), (float(rank_mean), float(single))


@pytest.mark.parametrize('name', GATHERED_CASES)
def test_gathered_loss_features_grad_matches_single(rank_results, name):
    cases, results = rank_results
    _, single_grad, _ = _run_case(cases[name], slice(None))
    for rank in range(WORLD_SIZE):
        rank_grad = results[rank][name][1]
        expected = single_grad[_slice(cases[name]['split'], rank)]
        assert torch.allclose(rank_grad / WORLD_SIZE, expected, rtol=1e-10, atol=1e-12), rank


@pytest.mark.parametrize('name', WEIGHT_CASES)
def test_gathered_loss_weight_grad_matches_single(rank_results, name):
    cases, results = rank_results
    _, _, single_grad = _run_case(cases[name], slice(None))
    averaged = sum(results[rank][name][2] for rank in range(WORLD_SIZE)) / WORLD_SIZE
    assert torch.allclose(averaged, single_grad, rtol=1e-10, atol=1e-12)


def test_nonl_single_class_gathered_zero(rank_results):
    _, results = rank_results
    for rank in range(WORLD_SIZE):
        value, features_grad, weight_grad = results[rank]['nonl_single_class']
        assert float(value) == 0.0
        assert torch.count_nonzero(features_grad) == 0
        assert torch.count_nonzero(weight_grad) == 0


def test_ntce_no_gather_uses_local_batch(rank_results):
    cases, results = rank_results
    case = cases['ntce_no_gather']
    for rank in range(WORLD_SIZE):
        rows = _slice(case['split'], rank)
        local_loss, local_grad, _ = _run_case(case, rows)
        assert torch.allclose(results[rank]['ntce_no_gather'][0], local_loss, rtol=1e-12), rank
        assert torch.allclose(results[rank]['ntce_no_gather'][1], local_grad, rtol=1e-10), rank


def test_supcon_mask_with_gather_rejected(rank_results):
    _, results = rank_results
    for rank in range(WORLD_SIZE):
        assert results[rank]['mask_rejected'], rank
