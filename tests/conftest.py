"""Shared fixtures: the repository on sys.path, small generated data sets, script runners."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The test tensors are tiny, so extra threads only add synchronisation, and on a busy
# machine OpenMP threads waiting for each other slow every operation down many times.
torch.set_num_threads(1)

# Small and fast: a ResNet-18 of width 4 on 8x8 inputs trains an epoch of digits in a
# second or two on a CPU.
TINY = ['--model', 'resnet18', '--width', '4', '--size', '8', '--num_workers', '0',
        '--batch_size', '64', '--print_freq', '1000']


def write_cifar10_folder(root, images_per_class=6, num_classes=10, seed=0):
    """Write a CIFAR-10-format folder (cifar-10-batches-py) of random images; return root."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder, exist_ok=True)
    names = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
    for name in names:
        labels = [label for label in range(num_classes) for _ in range(images_per_class)]
        pixels = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(os.path.join(folder, name), 'wb') as handle:
            pickle.dump({'data': pixels, 'labels': labels, 'batch_label': name},
                        handle)
    with open(os.path.join(folder, 'batches.meta'), 'wb') as handle:
        pickle.dump({'label_names': [f'class{i}' for i in range(num_classes)]},
                    handle)
    return root


def write_image_folder(root, classes=('cat', 'dog', 'fox'), images_per_class=5, size=12,
                       seed=0):
    """Write an ImageFolder of small random PNGs; return root."""
    rng = np.random.default_rng(seed)
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for index in range(images_per_class):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, name, f'{index}.png'))
    return root


@pytest.fixture
def cifar_folder(tmp_path):
    return write_cifar10_folder(str(tmp_path / 'cifar'))


def run_script(*args, env=None, timeout=300):
    """Run a repository script in a subprocess; return the CompletedProcess."""
    full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1', **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
