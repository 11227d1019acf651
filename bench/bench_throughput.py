"""Measure training throughput (images per second) of one epoch of main_supcon.py and main_ce.py.

    python bench/bench_throughput.py                                 # our scripts only
    python bench/bench_throughput.py --reference /path/to/SupContrast --images 512
    python bench/bench_throughput.py --reference /path/to/SupContrast --repeats 3 --skip_digits

Every run is a subprocess of the script under test with --epochs 1 at --size 32. The
bench reads the `epoch 1, total time X` line that both our scripts and the reference
SupContrast scripts print. X covers the training loop of the epoch only: data loading,
forward, backward and optimizer steps, but not start-up, test evaluation or checkpoint
writing. Throughput is training images / X, and each image counts once, although
main_supcon.py feeds two augmented views of it through the network. The reference's
main_supcon.py does the same, so the two rates compare the same work.

Data:
- digits: our --dataset digits, always all 1,437 images of the training split
  (--skip_digits leaves these runs out).
- digits PNGs: the first --images images of the same training split, written as an
  ImageFolder of 8x8 RGB PNG files in a temporary folder. Our scripts and the reference
  main_supcon.py both read it with --dataset path, so they decode the same files and
  apply the same augmentation (the SupContrast one: crop of 20-100% of the area, flip,
  color jitter, grayscale). main_ce.py also gets the test split as --val_folder.
The reference main_ce.py accepts only cifar10 and cifar100, and it checks the CIFAR
files against the official MD5 sums, so it cannot read these data. main_ce.py is
therefore measured for our code only.

The reference scripts import tensorboard_logger (last release 0.1.0, February 2018),
which our requirements do not include. The bench writes a stand-in module whose Logger
does nothing into a temporary folder and puts that folder first on the reference's
PYTHONPATH. The reference writes ./save under its working directory, so it runs in a
temporary folder as well. Every run gets the same environment otherwise, OMP_NUM_THREADS included, and the same
--model, --batch_size and --num_workers. The remaining options keep each script's
defaults (learning rate 0.05 and temperature 0.07 for main_supcon.py in both code bases).
"""

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data  # noqa: E402  (the repository root is added to the path above)
import util  # noqa: E402

EPOCH_LINE = re.compile(r'^epoch 1, total time ([0-9.]+)', re.MULTILINE)
DIGITS_DATA = 'digits'
PNG_DATA = 'digits PNGs'
TENSORBOARD_LOGGER_STAND_IN = '''\
"""Stand-in for tensorboard_logger: a Logger that accepts every call and records nothing."""


class Logger:
    def __init__(self, *args, **kwargs):
        pass

    def log_value(self, *args, **kwargs):
        pass
'''


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

def parse_option(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--reference', type=str, default=None,
                        help='folder of a SupContrast checkout (the one with main_supcon.py); '
                             'without it only our scripts are measured')
    parser.add_argument('--images', type=int, default=None,
                        help='number of training images written as PNGs for the same-data '
                             'comparison (default: all 1,437 of the digits training split)')
    parser.add_argument('--batch_size', type=int, default=64,
                        help='images per batch, passed to every script (default: 64)')
    parser.add_argument('--num_workers', type=int, default=2,
                        help='data-loading worker processes, passed to every script (default: 2)')
    parser.add_argument('--model', type=str, default='resnet18',
                        help='encoder architecture, passed to every script (default: resnet18)')
    parser.add_argument('--repeats', type=int, default=1,
                        help='number of runs of each case, and the table shows the median '
                             'epoch time (default: 1)')
    parser.add_argument('--skip_digits', action='store_true',
                        help='skip the runs of our scripts on --dataset digits, which always '
                             'train on all 1,437 images')
    parser.add_argument('--python', type=str, default=sys.executable,
                        help='Python interpreter for the runs (default: the one running the bench)')
    opt = parser.parse_args(argv)

    train_size = len(data.DigitsDataset(train=True).targets)
    if opt.images is None:
        opt.images = train_size
    if not 1 <= opt.images <= train_size:
        raise util.UsageError(f'invalid --images {opt.images}; the digits training split has '
                              f'{train_size} images, so pass 1 to {train_size}')
    if opt.batch_size < 1:
        raise util.UsageError(f'invalid --batch_size {opt.batch_size}; pass 1 or more')
    if opt.num_workers < 0:
        raise util.UsageError(f'invalid --num_workers {opt.num_workers}; pass 0 or more')
    if opt.repeats < 1:
        raise util.UsageError(f'invalid --repeats {opt.repeats}; pass 1 or more')
    if opt.reference is not None:
        opt.reference = Path(opt.reference).resolve()
        if not (opt.reference / 'main_supcon.py').is_file():
            raise util.UsageError(f'main_supcon.py not found in --reference {opt.reference}; '
                                  'pass the folder of a SupContrast checkout')
    opt.train_size = train_size
    return opt


# ---------------------------------------------------------------------------
# Data and environment
# ---------------------------------------------------------------------------

def write_image_folder(dataset, count, folder, classes=None):
    """Write the first `count` images of `dataset` as PNGs in one subfolder per class.

    With `classes`, write only the images of those classes. Return the set of classes written.
    """
    written = set()
    for index in range(count):
        label = dataset.classes[dataset.targets[index]]
        if classes is not None and label not in classes:
            continue
        class_folder = folder / label
        class_folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dataset.data[index]).save(class_folder / f'{index:05d}.png')
        written.add(label)
    return written


def write_png_splits(work_folder, count):
    """Write the train ImageFolder (`count` images) and the test ImageFolder, and return both paths.

    The test folder contains only classes that also occur in the train folder, so the label
    indices that ImageFolder assigns agree between the two.
    """
    train_folder, test_folder = work_folder / 'digits_train', work_folder / 'digits_test'
    classes = write_image_folder(data.DigitsDataset(train=True), count, train_folder)
    test_dataset = data.DigitsDataset(train=False)
    write_image_folder(test_dataset, len(test_dataset.targets), test_folder, classes)
    return train_folder, test_folder


def write_logger_stand_in(work_folder):
    folder = work_folder / 'stand_in'
    folder.mkdir()
    (folder / 'tensorboard_logger.py').write_text(TENSORBOARD_LOGGER_STAND_IN)
    return folder


def read_cpu_model():
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

def build_cases(opt, train_folder, test_folder, stand_in_folder):
    """Return the runs to time: dicts of table labels, command, environment and image count."""
    common = ['--size', '32', '--model', opt.model, '--batch_size', str(opt.batch_size),
              '--epochs', '1', '--num_workers', str(opt.num_workers),
              '--print_freq', '1000', '--save_freq', '1000']
    mean = '({0}, {0}, {0})'.format(data.DIGITS_MEAN[0])
    std = '({0}, {0}, {0})'.format(data.DIGITS_STD[0])
    png_flags = ['--dataset', 'path', '--data_folder', str(train_folder),
                 '--mean', mean, '--std', std]
    environment = dict(os.environ)
    reference_paths = [str(stand_in_folder)]
    if environment.get('PYTHONPATH'):
        reference_paths.append(environment['PYTHONPATH'])
    reference_environment = dict(environment, PYTHONPATH=os.pathsep.join(reference_paths))

    cases = []
    for script in ('main_supcon', 'main_ce'):
        ours = [opt.python, str(ROOT / f'{script}.py')] + common
        extra = ['--val_folder', str(test_folder)] if script == 'main_ce' else []
        if not opt.skip_digits:
            cases.append(dict(implementation='ours', script=script, data=DIGITS_DATA,
                              images=opt.train_size, environment=environment,
                              command=ours + ['--dataset', 'digits']))
        cases.append(dict(implementation='ours', script=script, data=PNG_DATA,
                          images=opt.images, environment=environment,
                          command=ours + png_flags + extra))
        if opt.reference is not None and script == 'main_supcon':
            reference = [opt.python, str(opt.reference / f'{script}.py')] + common
            cases.append(dict(implementation='reference', script=script, data=PNG_DATA,
                              images=opt.images, environment=reference_environment,
                              command=reference + png_flags))
    return cases


def run_case(case, run_folder):
    """Run one case in `run_folder` and return the epoch time in seconds from its output."""
    run_folder.mkdir()
    command = list(case['command'])
    if case['implementation'] == 'ours':
        command += ['--save_root', str(run_folder / 'save')]
    result = subprocess.run(command, cwd=run_folder, env=case['environment'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Delete the checkpoints at once, so that many repeats do not fill the disk.
    shutil.rmtree(run_folder)

    match = EPOCH_LINE.search(result.stdout)
    if result.returncode != 0:
        problem = f'run failed with exit code {result.returncode}'
    elif match is None:
        problem = 'run printed no "epoch 1, total time" line'
    else:
        return float(match.group(1))
    tail = '\n'.join(result.stdout.splitlines()[-30:])
    raise RuntimeError(f'{problem}: {" ".join(command)}\n{tail}')


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def format_table(cases):
    reference_rates = {(case['script'], case['data']): case['rate'] for case in cases
                       if case['implementation'] == 'reference'}
    lines = ['| implementation | script | data | images | epoch seconds | images/s '
             '| ours / reference |',
             '|---|---|---|---:|---:|---:|---:|']
    for case in cases:
        reference_rate = reference_rates.get((case['script'], case['data']))
        if case['implementation'] == 'ours' and reference_rate is not None:
            ratio = f'{case["rate"] / reference_rate:.2f}'
        else:
            ratio = '-'
        lines.append(f'| {case["implementation"]} | {case["script"]}.py | {case["data"]} '
                     f'| {case["images"]} | {case["seconds"]:.2f} | {case["rate"]:.1f} '
                     f'| {ratio} |')
    return '\n'.join(lines)


def main(argv=None):
    opt = parse_option(argv)
    threads = os.environ.get('OMP_NUM_THREADS', 'unset')
    print(f'CPU: {read_cpu_model()}, {os.cpu_count()} logical cores; OMP_NUM_THREADS={threads} '
          f'in every run')
    print(f'--model {opt.model} --batch_size {opt.batch_size} --num_workers {opt.num_workers} '
          f'--size 32, one epoch, median of {opt.repeats} run(s)')
    print(f'reference: {opt.reference or "not given"}')
    # Other jobs on the machine slow every run, so the report shows how busy it was.
    print('load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}'.format(*os.getloadavg()))

    with tempfile.TemporaryDirectory(prefix='bench_throughput_') as work_name:
        work_folder = Path(work_name)
        train_folder, test_folder = write_png_splits(work_folder, opt.images)
        stand_in_folder = write_logger_stand_in(work_folder)
        cases = build_cases(opt, train_folder, test_folder, stand_in_folder)

        # Repeats go round the cases, so a slow phase of the machine spreads over all of them.
        times = [[] for _ in cases]
        for repeat in range(opt.repeats):
            for index, case in enumerate(cases):
                seconds = run_case(case, work_folder / f'run_{repeat}_{index}')
                times[index].append(seconds)
                print(f'{case["implementation"]} {case["script"]}.py on {case["data"]}, '
                      f'run {repeat + 1}/{opt.repeats}: {seconds:.2f} s', file=sys.stderr,
                      flush=True)

    for case, case_times in zip(cases, times):
        case['seconds'] = statistics.median(case_times)
        case['rate'] = case['images'] / case['seconds']
    print('load average (1, 5, 15 min) after: {:.2f} {:.2f} {:.2f}'.format(*os.getloadavg()))
    print()
    print(format_table(cases))


if __name__ == '__main__':
    util.run_main(lambda: main(sys.argv[1:]))
