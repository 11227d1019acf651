"""Data sets, augmentations and the data-related command-line options of the training scripts.

Data sets (`--dataset`):
  cifar10, cifar100  torchvision's CIFAR files under --data_folder, downloaded when missing.
  digits             scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes);
                     no download, small enough for CPU runs and tests.
  path               any ImageFolder: --data_folder (train) and --val_folder (test).
  imagenet           ImageFolder at {data_folder}/train and {data_folder}/val.
  imagenet100        the 100 ImageNet classes listed in data/imagenet100_classes.txt, read
                     from the same full ImageNet folder without copying images.
"""
import math
import os
import pickle
import urllib.error

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms
from torchvision.datasets.utils import download_and_extract_archive

from util import UsageError

DATASETS = ('cifar10', 'cifar100', 'digits', 'path', 'imagenet', 'imagenet100')
KINDS = ('classifier', 'contrastive', 'eval')
SPLITS = ('train', 'test')

IMAGENET100_CLASSES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        'data', 'imagenet100_classes.txt')

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Pixel mean and standard deviation (ddof=0) over all pixels of the digits train split
# (1,437 images from build_dataset), after the 0..16 -> 0..255 scaling and ToTensor's
# division by 255. The three channels are equal because the images are grayscale.
DIGITS_MEAN, DIGITS_STD = (0.3054, 0.3054, 0.3054), (0.3760, 0.3760, 0.3760)

# Side length in pixels of every image in the data set. Data sets not listed have
# images of varying size.
NATIVE_SIZE = {'cifar10': 32, 'cifar100': 32, 'digits': 8}


def add_data_args(parser):
    """Add the data-set options shared by all training scripts to an argparse parser."""
    parser.add_argument('--dataset', type=str, default='cifar10', choices=DATASETS,
                        help='data set; the paper uses cifar10, cifar100, imagenet100 and imagenet')
    parser.add_argument('--data_folder', type=str, default='./datasets/',
                        help='folder with the data: the CIFAR files (downloaded here when missing), '
                             'the train ImageFolder for path, or the folder with train/ and val/ '
                             'for imagenet and imagenet100 (default: ./datasets/)')
    parser.add_argument('--val_folder', type=str, default=None,
                        help='held-out ImageFolder used as the test split of --dataset path')
    parser.add_argument('--mean', type=str, default=None,
                        help='per-channel RGB mean for Normalize with --dataset path, '
                             'on the 0..1 scale, e.g. "(0.5, 0.5, 0.5)"')
    parser.add_argument('--std', type=str, default=None,
                        help='per-channel RGB standard deviation for Normalize with --dataset path, '
                             'on the 0..1 scale, e.g. "(0.25, 0.25, 0.25)"')
    parser.add_argument('--size', type=int, default=32,
                        help='side length in pixels of the network input, the output of '
                             'RandomResizedCrop (paper: 32 for CIFAR, 224 for ImageNet); '
                             '64 or more selects the ImageNet stem')
    parser.add_argument('--num_workers', type=int, default=16,
                        help='DataLoader worker processes per training process (default: 16)')
    return parser


def parse_triple(text, name):
    """Parse "(r, g, b)", "r,g,b" or "[r, g, b]" into a tuple of three finite floats.

    A tuple or list of three numbers is accepted as well, so options that already contain
    parsed values (for example, loaded from args.json) pass through. Raise UsageError
    naming the option `name` and the value when the input has another form.
    """
    expected = 'expected three comma-separated numbers such as "(0.5, 0.5, 0.5)"'
    if isinstance(text, (tuple, list)):
        if any(isinstance(part, bool) or not isinstance(part, (int, float)) for part in text):
            raise UsageError(f'invalid {name} {text!r}; {expected}')
        parts = list(text)
    elif isinstance(text, str):
        body = text.strip()
        if len(body) >= 2 and (body[0], body[-1]) in (('(', ')'), ('[', ']')):
            body = body[1:-1]
        parts = body.split(',')
    else:
        raise UsageError(f'invalid {name} {text!r}; {expected}')
    if len(parts) != 3:
        raise UsageError(f'invalid {name} {text!r}; {expected}')
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise UsageError(f'invalid {name} {text!r}; {expected}') from None
        if not math.isfinite(value):
            raise UsageError(f'invalid {name} {text!r}; {expected}')
        values.append(value)
    return tuple(values)


def dataset_stats(opt):
    """Return (num_classes, mean, std) for opt.dataset, with mean and std as RGB triples on the 0..1 scale.

    For 'path', num_classes is the number of class folders in opt.data_folder, or None
    when that folder does not exist and opt.dry_run is true.
    """
    if opt.dataset == 'cifar10':
        return 10, CIFAR10_MEAN, CIFAR10_STD
    if opt.dataset == 'cifar100':
        return 100, CIFAR100_MEAN, CIFAR100_STD
    if opt.dataset == 'digits':
        return 10, DIGITS_MEAN, DIGITS_STD
    if opt.dataset == 'imagenet':
        return 1000, IMAGENET_MEAN, IMAGENET_STD
    if opt.dataset == 'imagenet100':
        return len(read_class_list(IMAGENET100_CLASSES_FILE)), IMAGENET_MEAN, IMAGENET_STD
    if opt.dataset == 'path':
        return _path_stats(opt)
    raise UsageError(f"unknown dataset {opt.dataset!r}; expected one of {', '.join(DATASETS)}")


def _path_stats(opt):
    mean_text, std_text = getattr(opt, 'mean', None), getattr(opt, 'std', None)
    if mean_text is None or std_text is None:
        raise UsageError('--dataset path requires --mean and --std, '
                         'e.g. --mean "(0.5, 0.5, 0.5)" --std "(0.25, 0.25, 0.25)"')
    mean = parse_triple(mean_text, '--mean')
    std = parse_triple(std_text, '--std')
    if min(std) <= 0:
        raise UsageError(f'invalid --std {std_text!r}; every standard deviation must be positive')

    if not os.path.isdir(opt.data_folder):
        if getattr(opt, 'dry_run', False):
            return None, mean, std
        raise UsageError(f'data folder not found: {opt.data_folder}; set --data_folder to an '
                         'ImageFolder with one subfolder per class')
    num_classes = sum(1 for entry in os.scandir(opt.data_folder) if entry.is_dir())
    if num_classes == 0:
        raise UsageError(f'no class folders in {opt.data_folder}; --data_folder must be an '
                         'ImageFolder with one subfolder per class')
    return num_classes, mean, std


class TwoCropTransform:
    """Apply a random transform twice to one image, giving the two views of contrastive learning."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, x):
        return [self.transform(x), self.transform(x)]


def build_transform(opt, kind):
    """Build the transform of `kind` for opt.dataset at opt.size pixels.

    kind 'classifier': RandomResizedCrop(scale 0.2-1) and horizontal flip, as for CE-type training.
    kind 'contrastive': the classifier augmentation plus color jitter, grayscale and, for
        ImageNet, Gaussian blur; wrap it in TwoCropTransform for two views.
    kind 'eval': no augmentation, only the resizing to opt.size.
    All kinds end with ToTensor and Normalize by the data set's mean and std.
    """
    if kind not in KINDS:
        raise ValueError(f"invalid transform kind {kind!r}; expected one of {', '.join(KINDS)}")
    _, mean, std = dataset_stats(opt)
    size = opt.size
    if kind == 'eval':
        steps = _eval_resize(opt.dataset, size)
    elif opt.dataset == 'digits':
        steps = _digits_augmentation(size, kind)
    else:
        steps = _photo_augmentation(opt.dataset, size, kind)
    steps += [transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)]
    return transforms.Compose(steps)


def _eval_resize(dataset, size):
    if size >= 64:
        # ImageNet convention: resize the short side to size * 256/224, then take the center.
        return [transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size)]
    if NATIVE_SIZE.get(dataset) == size:
        return []
    return [transforms.Resize((size, size))]


def _photo_augmentation(dataset, size, kind):
    steps = [
        transforms.RandomResizedCrop(size=size, scale=(0.2, 1.0)),
        transforms.RandomHorizontalFlip(),
    ]
    if kind == 'contrastive':
        steps += [
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ]
        if dataset in ('imagenet', 'imagenet100'):
            # Odd kernel of about 10% of the image side (23 pixels at 224), as in SimCLR (Chen et al., 2020).
            kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
            steps.append(transforms.RandomApply(
                [transforms.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    return steps


def _digits_augmentation(size, kind):
    # The photo augmentation would destroy 8x8 handwritten digits. A horizontal flip turns
    # some digits into other symbols, for example a mirrored 3 or 7. A crop down to 20% of
    # the area keeps only a stroke fragment. Hue, saturation and grayscale change nothing
    # in gray images. So use mild crops, a small rotation and, for contrastive views, only
    # brightness and contrast jitter. The crop upsamples first, so the rotation works at
    # the output resolution, and fill=0 matches the black background.
    steps = [
        transforms.RandomResizedCrop(size=size, scale=(0.6, 1.0), ratio=(0.8, 1.25)),
        transforms.RandomAffine(degrees=10, fill=0),
    ]
    if kind == 'contrastive':
        steps.append(transforms.RandomApply(
            [transforms.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8))
    return steps


def build_dataset(opt, split, transform):
    """Build the `split` ('train' or 'test') of opt.dataset, applying `transform` to each image.

    The returned Dataset yields (image, label) and has `.targets` (a list of int labels)
    and `.classes` (a list of class names). Raise UsageError when the data are missing.
    """
    if split not in SPLITS:
        raise ValueError(f"invalid split {split!r}; expected one of {', '.join(SPLITS)}")
    train = split == 'train'
    if opt.dataset == 'cifar10':
        return _load_cifar(CIFAR10Files, opt.data_folder, train, transform)
    if opt.dataset == 'cifar100':
        return _load_cifar(CIFAR100Files, opt.data_folder, train, transform)
    if opt.dataset == 'digits':
        return DigitsDataset(train, transform)
    if opt.dataset == 'path':
        return _load_path(opt, train, transform)
    if opt.dataset == 'imagenet':
        return _load_image_folder(_imagenet_split_folder(opt.data_folder, split), transform)
    if opt.dataset == 'imagenet100':
        folder = _imagenet_split_folder(opt.data_folder, split)
        return ClassSubsetFolder(folder, read_class_list(IMAGENET100_CLASSES_FILE), transform)
    raise UsageError(f"unknown dataset {opt.dataset!r}; expected one of {', '.join(DATASETS)}")


# ---------------------------------------------------------------- CIFAR

class CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR10 with the MD5 checks replaced by checks that the files exist.

    torchvision compares the MD5 sum of every batch file with the official release, which
    rejects small CIFAR-format folders written for tests or subsets. Reading an existing
    file needs only the pickle layout, so existence is checked instead. The downloaded
    archive is still checked against its MD5 sum by download_and_extract_archive.
    """

    def _check_integrity(self):
        return all(os.path.isfile(path) for path in self.expected_files(self.root))

    @classmethod
    def expected_files(cls, root):
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta['filename']]
        return [os.path.join(root, cls.base_folder, name) for name in names]

    def _load_meta(self):
        path = os.path.join(self.root, self.base_folder, self.meta['filename'])
        with open(path, 'rb') as handle:
            meta = pickle.load(handle, encoding='latin1')
        self.classes = list(meta[self.meta['key']])
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}


class CIFAR100Files(CIFAR10Files):
    """CIFAR100 files with the same existence-only check as CIFAR10Files."""
    base_folder = datasets.CIFAR100.base_folder
    url = datasets.CIFAR100.url
    filename = datasets.CIFAR100.filename
    tgz_md5 = datasets.CIFAR100.tgz_md5
    train_list = datasets.CIFAR100.train_list
    test_list = datasets.CIFAR100.test_list
    meta = datasets.CIFAR100.meta


def _load_cifar(cls, root, train, transform):
    files = cls.expected_files(root)
    if not all(os.path.isfile(path) for path in files):
        folder = os.path.join(root, cls.base_folder)
        try:
            download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
        except (urllib.error.URLError, OSError, RuntimeError) as error:
            raise UsageError(
                f'CIFAR files not found in {folder} and the download failed ({error}); '
                f'download {cls.url} and extract it into {root}, or set --data_folder') from None
    dataset = cls(root, train=train, transform=transform)
    dataset.targets = [int(label) for label in dataset.targets]
    return dataset


# ---------------------------------------------------------------- digits

class DigitsDataset(Dataset):
    """scikit-learn's 8x8 digits as RGB PIL images, with a fixed stratified 80/20 split.

    load_digits() ships with scikit-learn: 1,797 images with values 0..16. The split is
    train_test_split(test_size=0.2, random_state=0, stratify=labels), giving 1,437 train
    and 360 test images. Pixels are scaled to 0..255 uint8 and repeated over three
    channels, so the torchvision transforms used for CIFAR apply unchanged.
    """

    def __init__(self, train=True, transform=None):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        train_images, test_images, train_labels, test_labels = train_test_split(
            digits.images, digits.target, test_size=0.2, random_state=0, stratify=digits.target)
        images, labels = (train_images, train_labels) if train else (test_images, test_labels)

        gray = np.rint(images * (255.0 / 16.0)).astype(np.uint8)
        self.data = np.repeat(gray[..., None], 3, axis=-1)  # [N, 8, 8, 3] uint8
        self.targets = [int(label) for label in labels]
        self.classes = [str(name) for name in digits.target_names]
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        image = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


# ---------------------------------------------------------------- image folders

def _load_image_folder(folder, transform):
    if not os.path.isdir(folder):
        raise UsageError(f'image folder not found: {folder}; set --data_folder (and --val_folder '
                         'for --dataset path) to a folder with one subfolder per class')
    try:
        return datasets.ImageFolder(folder, transform=transform)
    except FileNotFoundError as error:
        # torchvision raises this for a folder without class subfolders or images.
        raise UsageError(f'no images found in {folder} ({error}); expected one subfolder '
                         'of images per class') from None


def _load_path(opt, train, transform):
    if train:
        return _load_image_folder(opt.data_folder, transform)
    val_folder = getattr(opt, 'val_folder', None)
    if val_folder is None:
        raise UsageError('--dataset path needs --val_folder, a held-out ImageFolder with the '
                         'same class subfolders as --data_folder, for the test split')
    return _load_image_folder(val_folder, transform)


def _imagenet_split_folder(data_folder, split):
    folder = os.path.join(data_folder, 'train' if split == 'train' else 'val')
    if not os.path.isdir(folder):
        raise UsageError(f'ImageNet folder not found: {folder}; set --data_folder to the folder '
                         'that contains train/ and val/, each with one subfolder per WordNet id')
    return folder


def read_class_list(path):
    """Read class names, one per line, skipping blank lines."""
    try:
        with open(path) as handle:
            return [line.strip() for line in handle if line.strip()]
    except FileNotFoundError:
        raise UsageError(f'class list not found: {path}') from None


class ClassSubsetFolder(datasets.ImageFolder):
    """ImageFolder restricted to the listed class folders, reading the images in place without copying.

    Labels follow the sorted class names, as in ImageFolder. Raise UsageError naming the
    first listed class that has no folder under `root`.
    """

    def __init__(self, root, classes, transform=None):
        self.listed_classes = list(dict.fromkeys(classes))  # file order, duplicates dropped
        try:
            super().__init__(root, transform=transform)
        except FileNotFoundError as error:
            raise UsageError(f'no images found for a class in {root} ({error})') from None

    def find_classes(self, directory):
        for name in self.listed_classes:
            if not os.path.isdir(os.path.join(directory, name)):
                raise UsageError(f'class folder not found: {name} in {directory}; '
                                 'the data set needs one folder per listed class')
        names = sorted(self.listed_classes)
        return names, {name: index for index, name in enumerate(names)}


# ----------------------------------------------------------------------------------------
# Fixed subset for neural-collapse logging during training


def balanced_subset(targets, size, seed):
    """Return up to `size` indices with per-class counts as equal as the classes allow.

    Classes are visited round-robin, each in an order fixed by `seed`, so the subset is
    the same in every run and at every measurement.
    """
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(targets))
    ranks = np.empty(len(targets), dtype=np.int64)
    for label in np.unique(targets):
        members = order[targets[order] == label]
        ranks[members] = np.arange(len(members))
    chosen = np.lexsort((targets, ranks))[:size]
    return np.sort(chosen).tolist()


def build_nc_loader(opt):
    """Loader over a fixed class-balanced subset of the training set, without augmentation.

    Used by --nc_freq: eval transforms, opt.nc_samples images, seeded by opt.seed.
    """
    dataset = build_dataset(opt, 'train', build_transform(opt, 'eval'))
    subset = Subset(dataset, balanced_subset(dataset.targets, opt.nc_samples, opt.seed))
    return DataLoader(subset, batch_size=opt.batch_size, shuffle=False,
                      num_workers=opt.num_workers)
