"""Tests for data.py and scripts/make_imagenet100.sh on small generated data; nothing is downloaded."""
import argparse
import os
import pickle
import re
import socket
import subprocess
import urllib.error
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torchvision import transforms

import data
from util import UsageError

REPO = Path(__file__).resolve().parent.parent
MAKE_IMAGENET100 = REPO / 'scripts' / 'make_imagenet100.sh'
# The first three ids of data/imagenet100_classes.txt, in file order.
LISTED_WNIDS = ['n02869837', 'n01749939', 'n02488291']
UNLISTED_WNID = 'n99999999'


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that opens a socket or reaches the CIFAR downloader unpatched."""
    attempts = []

    def reject_connect(sock, address):
        attempts.append(address)
        raise OSError(f'network access in a test: {address}')

    def reject_download(*args, **kwargs):
        attempts.append(args)
        raise AssertionError('download_and_extract_archive called without a test double')

    monkeypatch.setattr(socket.socket, 'connect', reject_connect)
    monkeypatch.setattr(data, 'download_and_extract_archive', reject_download)
    yield attempts
    assert attempts == []


def make_opt(**overrides):
    options = dict(dataset='cifar10', data_folder='./datasets/', val_folder=None, mean=None,
                   std=None, size=32, num_workers=0, dry_run=False)
    options.update(overrides)
    return SimpleNamespace(**options)


def write_png(path, size=(10, 12), color=(0, 128, 255)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', size, color).save(path)


# ---------------------------------------------------------------- options

def test_add_data_args_defaults():
    opt = data.add_data_args(argparse.ArgumentParser()).parse_args([])
    assert opt.dataset == 'cifar10'
    assert opt.data_folder == './datasets/'
    assert opt.val_folder is None
    assert opt.mean is None
    assert opt.std is None
    assert opt.size == 32
    assert opt.num_workers == 16


def test_add_data_args_rejects_unknown_dataset():
    parser = data.add_data_args(argparse.ArgumentParser())
    with pytest.raises(SystemExit):
        parser.parse_args(['--dataset', 'mnist'])


@pytest.mark.parametrize('text,expected', [
    ('(0.5, 0.5, 0.5)', (0.5, 0.5, 0.5)),
    ('0.1,0.2,0.3', (0.1, 0.2, 0.3)),
    ('[1, 2, 3]', (1.0, 2.0, 3.0)),
    ('  ( 0.25 ,0.5, 1e-1 ) ', (0.25, 0.5, 0.1)),
    ((0.5, 0.25, 1), (0.5, 0.25, 1.0)),
    ([0.1, 0.2, 0.3], (0.1, 0.2, 0.3)),
])
def test_parse_triple_accepts(text, expected):
    assert data.parse_triple(text, '--mean') == expected


@pytest.mark.parametrize('text', [
    '0.5,0.5', '0.5,0.5,0.5,0.5', '(a, b, c)', '', '(0.5, 0.5, 0.5', '[0.5, 0.5, 0.5)',
    "__import__('os').getcwd()", 'nan, 1, 1', '1, inf, 1', None, 0.5,
    (0.5, 0.5), ('0.5', 0.5, 0.5), (True, 0.5, 0.5), [float('nan'), 1.0, 1.0],
])
def test_parse_triple_rejects(text):
    with pytest.raises(UsageError) as info:
        data.parse_triple(text, '--std')
    message = str(info.value)
    assert '--std' in message
    assert repr(text) in message
    assert 'three comma-separated numbers' in message


# ---------------------------------------------------------------- dataset_stats

@pytest.mark.parametrize('dataset,classes,mean,std', [
    ('cifar10', 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ('cifar100', 100, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    ('imagenet', 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ('imagenet100', 100, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])
def test_dataset_stats_known(dataset, classes, mean, std):
    assert data.dataset_stats(make_opt(dataset=dataset)) == (classes, mean, std)


def digits_train_pixels():
    """Train-split pixels on the 0..1 scale, computed from load_digits and the split definition."""
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    train_images, _, _, _ = train_test_split(digits.images, digits.target, test_size=0.2,
                                             random_state=0, stratify=digits.target)
    return np.rint(train_images * 255 / 16).astype(np.uint8) / 255.0


def test_dataset_stats_digits_constants():
    classes, mean, std = data.dataset_stats(make_opt(dataset='digits'))
    pixels = digits_train_pixels()
    assert classes == 10
    for channel in range(3):
        assert mean[channel] == pytest.approx(pixels.mean(), abs=1e-4)
        assert std[channel] == pytest.approx(pixels.std(), abs=1e-4)


def test_path_stats_counts_folders(tmp_path):
    for name in ['a', 'b', 'c']:
        (tmp_path / name).mkdir()
    (tmp_path / 'notes.txt').write_text('not a class')
    opt = make_opt(dataset='path', data_folder=str(tmp_path), mean='(0.1,0.2,0.3)', std='0.4,0.5,0.6')
    assert data.dataset_stats(opt) == (3, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))


def test_path_stats_parsed_values(tmp_path):
    # Calling dataset_stats again on options whose mean and std were replaced by its output.
    (tmp_path / 'a').mkdir()
    opt = make_opt(dataset='path', data_folder=str(tmp_path), mean='0.1,0.2,0.3', std='0.4,0.5,0.6')
    opt.n_cls, opt.mean, opt.std = data.dataset_stats(opt)
    assert data.dataset_stats(opt) == (1, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))


def test_path_stats_dry_run_no_folder(tmp_path):
    opt = make_opt(dataset='path', data_folder=str(tmp_path / 'absent'), mean='0,0,0', std='1,1,1',
                   dry_run=True)
    assert data.dataset_stats(opt) == (None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_path_stats_missing_folder(tmp_path):
    missing = tmp_path / 'absent'
    opt = make_opt(dataset='path', data_folder=str(missing), mean='0,0,0', std='1,1,1')
    with pytest.raises(UsageError, match=re.escape(str(missing))):
        data.dataset_stats(opt)


@pytest.mark.parametrize('mean,std', [(None, '1,1,1'), ('0,0,0', None)])
def test_path_stats_needs_mean_std(tmp_path, mean, std):
    opt = make_opt(dataset='path', data_folder=str(tmp_path), mean=mean, std=std)
    with pytest.raises(UsageError, match='--mean and --std'):
        data.dataset_stats(opt)


def test_path_stats_rejects_zero_std(tmp_path):
    opt = make_opt(dataset='path', data_folder=str(tmp_path), mean='0,0,0', std='1,0,1')
    with pytest.raises(UsageError, match='--std'):
        data.dataset_stats(opt)


def test_dataset_stats_unknown_dataset():
    with pytest.raises(UsageError, match='mnist'):
        data.dataset_stats(make_opt(dataset='mnist'))


# ---------------------------------------------------------------- transforms

def transform_types(transform):
    found = []
    for step in transform.transforms:
        found.append(type(step))
        if isinstance(step, transforms.RandomApply):
            found.extend(type(inner) for inner in step.transforms)
    return found


@pytest.mark.parametrize('size', [8, 16, 32])
@pytest.mark.parametrize('kind', ['classifier', 'contrastive', 'eval'])
def test_digits_transform_shapes(size, kind):
    image = data.DigitsDataset(train=True)[0][0]
    out = data.build_transform(make_opt(dataset='digits', size=size), kind)(image)
    assert out.shape == (3, size, size)


@pytest.mark.parametrize('kind', ['classifier', 'contrastive'])
def test_digits_augmentation_no_flip(kind):
    steps = transform_types(data.build_transform(make_opt(dataset='digits'), kind))
    assert transforms.RandomHorizontalFlip not in steps
    assert transforms.RandomAffine in steps
    assert transforms.RandomGrayscale not in steps


def test_digits_jitter_no_hue():
    transform = data.build_transform(make_opt(dataset='digits'), 'contrastive')
    jitters = [inner for step in transform.transforms if isinstance(step, transforms.RandomApply)
               for inner in step.transforms]
    assert len(jitters) == 1
    assert jitters[0].saturation is None
    assert jitters[0].hue is None
    assert jitters[0].brightness is not None


def test_digits_crop_scale():
    crop = data.build_transform(make_opt(dataset='digits'), 'classifier').transforms[0]
    assert isinstance(crop, transforms.RandomResizedCrop)
    assert crop.scale == (0.6, 1.0)
    assert crop.ratio == (0.8, 1.25)


def test_cifar_classifier_augmentation():
    transform = data.build_transform(make_opt(dataset='cifar10'), 'classifier')
    assert transform_types(transform) == [transforms.RandomResizedCrop, transforms.RandomHorizontalFlip,
                                          transforms.ToTensor, transforms.Normalize]
    assert transform.transforms[0].scale == (0.2, 1.0)


def test_cifar_contrastive_augmentation():
    transform = data.build_transform(make_opt(dataset='cifar100'), 'contrastive')
    steps = transform_types(transform)
    assert transforms.ColorJitter in steps
    assert transforms.RandomGrayscale in steps
    assert transforms.GaussianBlur not in steps
    jitter_apply = transform.transforms[2]
    assert jitter_apply.p == 0.8
    assert transform.transforms[3].p == 0.2


@pytest.mark.parametrize('size,kernel', [(224, 23), (96, 9), (32, 3)])
def test_imagenet_contrastive_blur(size, kernel):
    transform = data.build_transform(make_opt(dataset='imagenet100', size=size), 'contrastive')
    blur_apply = [step for step in transform.transforms if isinstance(step, transforms.RandomApply)
                  and isinstance(step.transforms[0], transforms.GaussianBlur)]
    assert len(blur_apply) == 1
    assert blur_apply[0].p == 0.5
    assert blur_apply[0].transforms[0].kernel_size == (kernel, kernel)
    assert blur_apply[0].transforms[0].sigma == (0.1, 2.0)


def test_imagenet_classifier_has_no_blur():
    steps = transform_types(data.build_transform(make_opt(dataset='imagenet', size=224), 'classifier'))
    assert transforms.GaussianBlur not in steps


def test_eval_large_size_resize_center_crop():
    transform = data.build_transform(make_opt(dataset='imagenet', size=224), 'eval')
    assert transform_types(transform) == [transforms.Resize, transforms.CenterCrop,
                                          transforms.ToTensor, transforms.Normalize]
    assert transform.transforms[0].size == 256
    out = transform(Image.new('RGB', (300, 200)))
    assert out.shape == (3, 224, 224)


def test_eval_cifar_native_size_no_resize():
    transform = data.build_transform(make_opt(dataset='cifar10', size=32), 'eval')
    assert transform_types(transform) == [transforms.ToTensor, transforms.Normalize]


def test_eval_path_small_size_resizes():
    opt = make_opt(dataset='path', data_folder='absent', mean='0,0,0', std='1,1,1', size=16, dry_run=True)
    out = data.build_transform(opt, 'eval')(Image.new('RGB', (30, 20)))
    assert out.shape == (3, 16, 16)


def test_eval_normalizes_by_dataset_stats():
    image = Image.new('RGB', (32, 32), (51, 102, 204))
    out = data.build_transform(make_opt(dataset='cifar10'), 'eval')(image)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    for channel, value in enumerate((51, 102, 204)):
        expected = (value / 255 - mean[channel]) / std[channel]
        assert torch.allclose(out[channel], torch.full((32, 32), expected), atol=1e-5)


def test_build_transform_invalid_kind():
    with pytest.raises(ValueError, match='train'):
        data.build_transform(make_opt(), 'train')


def test_two_crop_transform_views():
    torch.manual_seed(0)
    transform = data.TwoCropTransform(data.build_transform(make_opt(dataset='cifar10'), 'contrastive'))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    views = transform(image)
    assert isinstance(views, list)
    assert len(views) == 2
    assert views[0].shape == (3, 32, 32)
    assert views[1].shape == (3, 32, 32)
    assert not torch.equal(views[0], views[1])


# ---------------------------------------------------------------- digits

def test_digits_split_sizes():
    assert len(data.DigitsDataset(train=True)) == 1437
    assert len(data.DigitsDataset(train=False)) == 360


def test_digits_build_dataset_split():
    train = data.build_dataset(make_opt(dataset='digits'), 'train', None)
    test = data.build_dataset(make_opt(dataset='digits'), 'test', None)
    assert len(train) == 1437
    assert len(test) == 360
    assert train.classes == [str(digit) for digit in range(10)]


def test_digits_stratified():
    digits = load_digits()
    totals = Counter(int(label) for label in digits.target)
    test_counts = Counter(data.DigitsDataset(train=False).targets)
    for label, total in totals.items():
        assert abs(test_counts[label] - 0.2 * total) <= 1, label


def test_digits_splits_partition_all_images():
    digits = load_digits()
    scaled = np.rint(digits.images * 255 / 16).astype(np.uint8)
    expected = sorted((image.tobytes(), int(label)) for image, label in zip(scaled, digits.target))
    found = []
    for train in (True, False):
        dataset = data.DigitsDataset(train=train)
        found += [(image[..., 0].tobytes(), label) for image, label in zip(dataset.data, dataset.targets)]
    assert sorted(found) == expected


def test_digits_deterministic():
    first, second = data.DigitsDataset(train=True), data.DigitsDataset(train=True)
    assert first.targets == second.targets
    assert np.array_equal(first.data, second.data)


def test_digits_pil_rgb_images():
    dataset = data.DigitsDataset(train=False)
    image, label = dataset[5]
    pixels = np.asarray(image)
    assert isinstance(image, Image.Image)
    assert image.mode == 'RGB'
    assert image.size == (8, 8)
    assert isinstance(label, int)
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    assert pixels.dtype == np.uint8
    assert pixels.max() > 16  # scaled from 0..16 to 0..255


def test_build_dataset_invalid_split():
    with pytest.raises(ValueError, match='val'):
        data.build_dataset(make_opt(dataset='digits'), 'val', None)


# ---------------------------------------------------------------- CIFAR

def write_cifar(root, dataset, per_file=4):
    """Write a CIFAR-format folder: pickled dicts with 'data' uint8 [N, 3072] (R, G, B planes) and labels."""
    rng = np.random.default_rng(0)
    if dataset == 'cifar10':
        folder, label_key, classes = root / 'cifar-10-batches-py', 'labels', 10
        files = [f'data_batch_{index}' for index in range(1, 6)] + ['test_batch']
        meta_name, meta = 'batches.meta', {'label_names': [f'class{i}' for i in range(10)]}
    else:
        folder, label_key, classes = root / 'cifar-100-python', 'fine_labels', 100
        files = ['train', 'test']
        meta_name, meta = 'meta', {'fine_label_names': [f'fine{i}' for i in range(100)],
                                   'coarse_label_names': [f'coarse{i}' for i in range(20)]}
    folder.mkdir(parents=True)
    written = {}
    for name in files:
        entry = {'data': rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, classes, per_file).tolist()}
        with open(folder / name, 'wb') as handle:
            pickle.dump(entry, handle)
        written[name] = entry
    with open(folder / meta_name, 'wb') as handle:
        pickle.dump(meta, handle)
    return written


def test_cifar10_generated_folder(tmp_path):
    written = write_cifar(tmp_path, 'cifar10')
    train = data.build_dataset(make_opt(data_folder=str(tmp_path)), 'train', None)
    test = data.build_dataset(make_opt(data_folder=str(tmp_path)), 'test', None)
    train_files = [f'data_batch_{index}' for index in range(1, 6)]
    assert len(train) == 20
    assert len(test) == 4
    assert train.targets == [label for name in train_files for label in written[name]['labels']]
    assert test.targets == written['test_batch']['labels']
    assert train.classes == [f'class{i}' for i in range(10)]


def test_cifar10_pixel_layout(tmp_path):
    written = write_cifar(tmp_path, 'cifar10')
    test = data.build_dataset(make_opt(data_folder=str(tmp_path)), 'test', None)
    row = written['test_batch']['data'][2]
    pixels = np.asarray(test[2][0])
    # Row layout: 1024 red values, then green, then blue, each plane row-major 32x32.
    for y, x in [(0, 0), (5, 17), (31, 31)]:
        for channel in range(3):
            assert pixels[y, x, channel] == row[channel * 1024 + y * 32 + x]


def test_cifar10_transform_shape(tmp_path):
    write_cifar(tmp_path, 'cifar10')
    opt = make_opt(data_folder=str(tmp_path))
    dataset = data.build_dataset(opt, 'train', data.build_transform(opt, 'classifier'))
    image, label = dataset[0]
    assert image.shape == (3, 32, 32)
    assert isinstance(label, int)


def test_cifar100_generated_folder(tmp_path):
    written = write_cifar(tmp_path, 'cifar100')
    opt = make_opt(dataset='cifar100', data_folder=str(tmp_path))
    train = data.build_dataset(opt, 'train', None)
    test = data.build_dataset(opt, 'test', None)
    assert len(train) == 4
    assert train.targets == written['train']['fine_labels']
    assert test.targets == written['test']['fine_labels']
    assert len(train.classes) == 100


def test_cifar_missing_download_fails(tmp_path, monkeypatch):
    calls = []

    def offline_download(url, root, filename=None, md5=None):
        calls.append((url, root))
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(data, 'download_and_extract_archive', offline_download)
    with pytest.raises(UsageError) as info:
        data.build_dataset(make_opt(data_folder=str(tmp_path)), 'train', None)
    assert calls == [(data.CIFAR10Files.url, str(tmp_path))]
    assert str(tmp_path / 'cifar-10-batches-py') in str(info.value)
    assert 'cifar-10-python.tar.gz' in str(info.value)


def test_cifar_download_into_data_folder(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, root, filename=None, md5=None):
        calls.append((url, root, filename))
        write_cifar(Path(root), 'cifar100')

    monkeypatch.setattr(data, 'download_and_extract_archive', fake_download)
    dataset = data.build_dataset(make_opt(dataset='cifar100', data_folder=str(tmp_path)), 'test', None)
    assert calls == [(data.CIFAR100Files.url, str(tmp_path), 'cifar-100-python.tar.gz')]
    assert len(dataset) == 4


# ---------------------------------------------------------------- path and ImageNet folders

def make_image_folder(root, counts):
    for name, count in counts.items():
        for index in range(count):
            write_png(root / name / f'{index}.png')


def test_path_train_and_val(tmp_path):
    make_image_folder(tmp_path / 'train', {'cat': 3, 'dog': 2})
    make_image_folder(tmp_path / 'val', {'cat': 1, 'dog': 2})
    opt = make_opt(dataset='path', data_folder=str(tmp_path / 'train'),
                   val_folder=str(tmp_path / 'val'), mean='0.5,0.5,0.5', std='0.2,0.2,0.2', size=8)
    train = data.build_dataset(opt, 'train', data.build_transform(opt, 'classifier'))
    test = data.build_dataset(opt, 'test', data.build_transform(opt, 'eval'))
    assert train.classes == ['cat', 'dog']
    assert train.targets == [0, 0, 0, 1, 1]
    assert test.targets == [0, 1, 1]
    assert train[0][0].shape == (3, 8, 8)
    assert test[0][0].shape == (3, 8, 8)
    assert data.dataset_stats(opt)[0] == 2


def test_path_test_needs_val_folder(tmp_path):
    make_image_folder(tmp_path, {'cat': 1})
    opt = make_opt(dataset='path', data_folder=str(tmp_path))
    with pytest.raises(UsageError, match='--val_folder'):
        data.build_dataset(opt, 'test', None)


def test_path_missing_folder(tmp_path):
    missing = tmp_path / 'absent'
    with pytest.raises(UsageError, match=re.escape(str(missing))):
        data.build_dataset(make_opt(dataset='path', data_folder=str(missing)), 'train', None)


def test_path_folder_without_images(tmp_path):
    (tmp_path / 'cat').mkdir()
    with pytest.raises(UsageError, match=re.escape(str(tmp_path))):
        data.build_dataset(make_opt(dataset='path', data_folder=str(tmp_path)), 'train', None)


def test_imagenet_folder(tmp_path):
    make_image_folder(tmp_path / 'train', {'n01': 2, 'n02': 1})
    make_image_folder(tmp_path / 'val', {'n01': 1, 'n02': 1})
    opt = make_opt(dataset='imagenet', data_folder=str(tmp_path))
    assert data.build_dataset(opt, 'train', None).targets == [0, 0, 1]
    assert data.build_dataset(opt, 'test', None).targets == [0, 1]


def test_imagenet_missing_val(tmp_path):
    make_image_folder(tmp_path / 'train', {'n01': 1})
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / 'val'))):
        data.build_dataset(make_opt(dataset='imagenet', data_folder=str(tmp_path)), 'test', None)


def test_imagenet100_shipped_list():
    wnids = data.read_class_list(data.IMAGENET100_CLASSES_FILE)
    assert len(wnids) == 100
    assert len(set(wnids)) == 100
    assert all(re.fullmatch(r'n\d{8}', wnid) for wnid in wnids)
    assert wnids[:3] == LISTED_WNIDS


@pytest.fixture
def imagenet_root(tmp_path):
    """Generated ImageNet folder: three listed classes and one unlisted class in train/ and val/."""
    root = tmp_path / 'imagenet'
    for split, count in [('train', 2), ('val', 1)]:
        make_image_folder(root / split, {wnid: count for wnid in LISTED_WNIDS + [UNLISTED_WNID]})
    return root


def write_class_list(path, wnids):
    path.write_text(''.join(wnid + '\n' for wnid in wnids))
    return path


def test_imagenet100_subset(imagenet_root, tmp_path, monkeypatch):
    class_list = write_class_list(tmp_path / 'classes.txt', LISTED_WNIDS)
    monkeypatch.setattr(data, 'IMAGENET100_CLASSES_FILE', str(class_list))
    opt = make_opt(dataset='imagenet100', data_folder=str(imagenet_root))
    train = data.build_dataset(opt, 'train', None)
    test = data.build_dataset(opt, 'test', None)
    assert train.classes == sorted(LISTED_WNIDS)
    assert len(train) == 6
    assert len(test) == 3
    assert not any(UNLISTED_WNID in path for path, _ in train.samples)
    for path, label in train.samples:
        assert Path(path).parent.name == train.classes[label]
    assert data.dataset_stats(opt)[0] == 3


def test_imagenet100_missing_class(imagenet_root, tmp_path, monkeypatch):
    class_list = write_class_list(tmp_path / 'classes.txt', LISTED_WNIDS + ['n01440764'])
    monkeypatch.setattr(data, 'IMAGENET100_CLASSES_FILE', str(class_list))
    opt = make_opt(dataset='imagenet100', data_folder=str(imagenet_root))
    with pytest.raises(UsageError) as info:
        data.build_dataset(opt, 'train', None)
    assert 'n01440764' in str(info.value)
    assert str(imagenet_root / 'train') in str(info.value)


# ---------------------------------------------------------------- make_imagenet100.sh

def run_make_imagenet100(args, class_list=None):
    env = dict(os.environ)
    env.pop('IMAGENET100_CLASSES', None)
    if class_list is not None:
        env['IMAGENET100_CLASSES'] = str(class_list)
    return subprocess.run(['bash', str(MAKE_IMAGENET100), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_make_imagenet100_links(imagenet_root, tmp_path):
    class_list = write_class_list(tmp_path / 'classes.txt', LISTED_WNIDS)
    dst = tmp_path / 'imagenet100'
    result = run_make_imagenet100([imagenet_root, dst], class_list)
    assert result.returncode == 0, result.stderr
    for split in ('train', 'val'):
        assert sorted(os.listdir(dst / split)) == sorted(LISTED_WNIDS)
        for wnid in LISTED_WNIDS:
            link = dst / split / wnid
            assert link.is_symlink()
            assert link.resolve() == (imagenet_root / split / wnid).resolve()


def test_make_imagenet100_rerun(imagenet_root, tmp_path):
    class_list = write_class_list(tmp_path / 'classes.txt', LISTED_WNIDS)
    dst = tmp_path / 'imagenet100'
    assert run_make_imagenet100([imagenet_root, dst], class_list).returncode == 0
    result = run_make_imagenet100([imagenet_root, dst], class_list)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(dst / 'val')) == sorted(LISTED_WNIDS)


def test_make_imagenet100_missing_class(imagenet_root, tmp_path):
    class_list = write_class_list(tmp_path / 'classes.txt', LISTED_WNIDS + ['n01440764'])
    dst = tmp_path / 'imagenet100'
    result = run_make_imagenet100([imagenet_root, dst], class_list)
    assert result.returncode != 0
    assert 'n01440764' in result.stderr
    assert not dst.exists()


def test_make_imagenet100_default_list(tmp_path):
    # The generated folder lacks most listed classes, so the shipped list fails at its first id.
    src = tmp_path / 'src'
    make_image_folder(src / 'train', {UNLISTED_WNID: 1})
    make_image_folder(src / 'val', {UNLISTED_WNID: 1})
    result = run_make_imagenet100([src, tmp_path / 'dst'])
    assert result.returncode != 0
    assert LISTED_WNIDS[0] in result.stderr


def test_make_imagenet100_usage():
    result = run_make_imagenet100(['only_one_argument'])
    assert result.returncode == 2
    assert 'usage' in result.stderr
