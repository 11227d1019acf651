"""Training under several processes (gloo on CPU) against one process on the same batch."""

import argparse
import glob
import json
import os
import re
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import TINY, run_script

import main_ce
import util
from losses import NONLLoss
from networks.resnet_big import SupCEResNet

WORLD_SIZE = 2


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def torchrun(*args):
    return run_script('-m', 'torch.distributed.run', '--standalone',
                      f'--nproc_per_node={WORLD_SIZE}', *args,
                      timeout=600)


@pytest.mark.parametrize('script, extra', [
    ('main_supcon.py', ['--learning_rate', '0.05']),
    ('main_ce.py', ['--loss', 'nonl']),
])
def test_torchrun_two_processes(tmp_path, script, extra):
    result = torchrun(script, '--dataset', 'digits', *TINY, '--batch_size', '32',
                      '--epochs', '1', '--save_root', str(tmp_path), *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'world size: 2, batch per process: 32, global batch: 64' in result.stdout
    checkpoints = glob.glob(os.path.join(str(tmp_path), '**', 'last.pth'), recursive=True)
    assert len(checkpoints) == 1
    # Rank 0 alone prints: one line per epoch, not one per process.
    assert len(re.findall(r'^epoch 1,', result.stdout, flags=re.MULTILINE)) == 1


def step_options(world_size, rank, sync_bn):
    return argparse.Namespace(
        world_size=world_size, rank=rank, device=torch.device('cpu'), syncBN=sync_bn,
        channels_last=False, amp=False, warm=False, print_freq=1000, learning_rate=0.1,
        momentum=0.9, weight_decay=1e-4)


def one_step(model, images, labels, opt):
    """Take one optimiser step of main_ce's training loop on one fixed batch."""
    model = util.wrap_model(model, opt)
    optimizer = util.set_optimizer(opt, model)
    main_ce.train([(images, labels)], model, NONLLoss(temperature=0.1), optimizer, epoch=1,
                  opt=opt)
    return util.unwrap(model).state_dict()


def fixed_batch():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(32, 3, 8, 8, generator=generator, dtype=torch.float64)
    labels = torch.arange(32) % 10
    return images, labels


def fresh_model():
    torch.manual_seed(1)
    return SupCEResNet(name='resnet18', num_classes=10, width=4, normalized=True).double()


def run_on_two_processes(rank, port, output):
    """Worker of the spawned group: two training steps (with and without synchronised
    BatchNorm) and a sharded evaluation; rank 0 saves what the tests compare."""
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    images, labels = fixed_batch()
    shard = slice(rank * 16, (rank + 1) * 16)
    results = {}
    for sync_bn in (True, False):
        results[sync_bn] = one_step(fresh_model(), images[shard], labels[shard],
                                    step_options(WORLD_SIZE, rank, sync_bn=sync_bn))
    results['evaluation'] = evaluate_shard(rank)
    if rank == 0:
        torch.save(results, output)
    dist.destroy_process_group()


@pytest.fixture(scope='module')
def two_process_results(tmp_path_factory):
    output = str(tmp_path_factory.mktemp('distributed') / 'results.pth')
    mp.spawn(run_on_two_processes, args=(free_port(), output), nprocs=WORLD_SIZE, join=True)
    return torch.load(output)


def test_sync_bn_step_matches_single_process(two_process_results):
    distributed = two_process_results[True]
    images, labels = fixed_batch()
    single = one_step(fresh_model(), images, labels, step_options(1, 0, sync_bn=False))
    initial = fresh_model().state_dict()

    changed = [key for key in single if not torch.equal(single[key], initial[key])]
    assert 'fc.weight' in changed
    assert 'encoder.bn1.running_mean' in changed
    for key, value in single.items():
        assert torch.allclose(distributed[key].to(value.dtype), value, atol=1e-5), key


def test_sync_bn_step_differs_without_sync(two_process_results):
    """Per-process BatchNorm statistics change the step, so the test above can fail."""
    distributed = two_process_results[False]
    images, labels = fixed_batch()
    single = one_step(fresh_model(), images, labels, step_options(1, 0, sync_bn=False))
    assert not torch.allclose(distributed['encoder.bn1.running_mean'],
                              single['encoder.bn1.running_mean'], atol=1e-5)


def sampler_options(rank):
    return argparse.Namespace(world_size=WORLD_SIZE, rank=rank, seed=42, batch_size=8,
                              num_workers=0, device=torch.device('cpu'))


def test_train_sampler_covers_every_sample():
    dataset = torch.utils.data.TensorDataset(torch.arange(101))
    seen = []
    for rank in range(WORLD_SIZE):
        loader = util.make_train_loader(dataset, sampler_options(rank))
        util.set_loader_epoch(loader, 3)
        seen += [int(index) for (batch,) in loader for index in batch]
    assert set(seen) == set(range(101))
    # DistributedSampler pads the shorter shard with one repeated sample.
    assert len(seen) == 102


def test_train_sampler_reshuffles_each_epoch():
    dataset = torch.utils.data.TensorDataset(torch.arange(101))
    loader = util.make_train_loader(dataset, sampler_options(0))
    orders = []
    for epoch in (1, 2):
        util.set_loader_epoch(loader, epoch)
        orders.append([int(index) for (batch,) in loader for index in batch])
    assert orders[0] != orders[1]


def test_eval_shards_partition_the_test_set():
    dataset = torch.utils.data.TensorDataset(torch.arange(101))
    seen = []
    for rank in range(WORLD_SIZE):
        loader = util.make_eval_loader(dataset, sampler_options(rank))
        seen += [int(index) for (batch,) in loader for index in batch]
    assert sorted(seen) == list(range(101))


def evaluate_shard(rank):
    labels = torch.arange(101) % 3
    dataset = torch.utils.data.TensorDataset(labels.float().unsqueeze(1), labels)
    loader = util.make_eval_loader(dataset, sampler_options(rank))

    def predict(inputs):
        # Right for labels 0 and 1, wrong for label 2: 68 of 101 correct.
        return torch.nn.functional.one_hot(inputs[:, 0].long() % 2, 3).float()

    accuracy, count = util.evaluate(predict, loader, sampler_options(rank))
    return {'accuracy': accuracy, 'count': count}


def test_evaluation_counts_every_test_image_once(two_process_results):
    result = two_process_results['evaluation']
    assert result['count'] == 101
    assert result['accuracy'] == pytest.approx(100 * 68 / 101)


def test_torchrun_evaluation_scripts(tmp_path):
    """main_linear.py and main_prototype.py under two processes match one process."""
    import main_prototype
    import main_supcon

    supcon_args = ['--dataset', 'digits', *TINY, '--epochs', '1', '--save_root',
                   str(tmp_path / 'pretrain')]
    main_supcon.main(supcon_args)
    ckpt = os.path.join(main_supcon.parse_option(supcon_args).save_folder, 'last.pth')
    common = ['--dataset', 'digits', '--size', '8', '--num_workers', '0', '--ckpt', ckpt]

    linear = torchrun('main_linear.py', *common, '--width', '4', '--epochs', '1',
                      '--batch_size', '32', '--save_root', str(tmp_path / 'linear'))
    assert linear.returncode == 0, linear.stderr[-3000:]
    assert 'global batch: 64' in linear.stdout

    single_args = [*common, '--save_root', str(tmp_path / 'single')]
    main_prototype.main(single_args)
    prototypes = torchrun('main_prototype.py', *common, '--save_root', str(tmp_path / 'two'))
    assert prototypes.returncode == 0, prototypes.stderr[-3000:]
    # Class sums are summed over both processes: every training image counts once and
    # the test accuracy equals the single-process one.
    assert 'prototypes from 1437 training images' in prototypes.stdout
    single = util.load_checkpoint(os.path.join(
        main_prototype.parse_option(single_args).save_folder, 'last.pth'))['model']
    two = util.load_checkpoint(glob.glob(os.path.join(
        str(tmp_path / 'two'), '**', 'last.pth'), recursive=True)[0])['model']
    assert torch.allclose(two['fc.weight'], single['fc.weight'], atol=1e-5)

    def results(root):
        path = glob.glob(os.path.join(root, '**', 'results.json'), recursive=True)[0]
        with open(path) as handle:
            return json.load(handle)

    assert results(str(tmp_path / 'two'))['test_acc'] == pytest.approx(
        results(str(tmp_path / 'single'))['test_acc'])
