"""Tests for the shell scripts in scripts/: dry runs, parsed commands, and a few tiny real runs.

Every script runs with DRY_RUN=1 from a folder outside the repository. Each printed line
is split with shlex, the python / torchrun prefix is removed, and the arguments go
through the target script's own parser in this process, so a flag that the script does
not know fails here. The run folders that the shell code computes (for skipping
finished runs, for the default checkpoint of the probes, for the plot of Figure 1) are
compared with the save_folder that parse_option derives. A few scripts then train for
real on a generated CIFAR-10-format folder with a width-8 ResNet-18 and one epoch.
"""

import importlib
import importlib.util
import itertools
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import write_cifar10_folder

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / 'scripts'
NOT_TESTED_HERE = {'common.sh', 'quickstart.sh', 'make_imagenet100.sh'}
SHELL_SCRIPTS = sorted(p.name for p in SCRIPTS.glob('*.sh') if p.name not in NOT_TESTED_HERE)
DATASETS = ['cifar10', 'cifar100', 'imagenet100', 'imagenet']
LOSSES = ['ce', 'normface', 'ntce', 'nonl']
TEMPERATURES = [0.07, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
BATCH_SIZES = [32, 64, 128, 256, 512, 1024, 2048]
# Variables that the scripts read. The tests start from an environment without them.
SCRIPT_VARIABLES = {
    'DATA', 'EPOCHS', 'BATCH', 'LR', 'TEMP', 'MODEL', 'NGPUS', 'CKPT', 'HEAD', 'TRIAL',
    'SEED', 'SAVE_ROOT', 'EXTRA', 'DRY_RUN', 'FORCE', 'PYTHON', 'TORCHRUN', 'TEMPS',
    'BATCHES', 'LOSSES', 'DATASETS', 'LOSS', 'DATASET', 'NC_FREQ', 'NC_POINTS', 'NC_SAMPLES',
}
# A 2 x 2 part of the Figure 2 grid for the tests that run every script. The full grid
# has its own test.
SMALL_GRID = {'figure2_sweep.sh': dict(TEMPS='0.1 0.5', BATCHES='64 512')}
# Flags of a tiny CPU run that do not enter run names: a width-4 ResNet-18 on 8x8 crops.
TINY_EXTRA = '--width 4 --size 8 --num_workers 0 --print_freq 1000'
TINY_EVAL_EXTRA = '--size 8 --num_workers 0'


# ---------------------------------------------------------------------------- helpers

def script_env(save_root, **overrides):
    env = {key: value for key, value in os.environ.items() if key not in SCRIPT_VARIABLES}
    env.update(PYTHON=sys.executable, SAVE_ROOT=str(save_root), DRY_RUN='1',
               PYTHONUNBUFFERED='1')
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def run_shell(name, cwd, env, timeout=300):
    return subprocess.run(['bash', str(SCRIPTS / name)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class Command:
    """One printed command line: launcher, processes, target script and its arguments."""
    launcher: str
    nproc: int
    target: str
    argv: list

    def value(self, flag):
        """Return the value after the last occurrence of flag (argparse keeps the last)."""
        positions = [i for i, word in enumerate(self.argv) if word == flag]
        assert positions, f'{flag} missing in {self.argv}'
        return self.argv[positions[-1] + 1]


def parse_line(line):
    words = shlex.split(line)
    assert words, 'empty command line'
    launcher = os.path.basename(words[0])
    if launcher == 'torchrun':
        nproc = None
        rest = words[1:]
        while rest and rest[0].startswith('--'):
            option = rest.pop(0)
            if option.startswith('--nproc_per_node='):
                nproc = int(option.split('=', 1)[1])
        assert nproc is not None, f'torchrun without --nproc_per_node: {line}'
        return Command('torchrun', nproc, rest[0], rest[1:])
    assert words[0] == sys.executable, f'unexpected launcher in {line}'
    return Command('python', 1, words[1], words[2:])


def dry_commands(name, tmp_path, **env):
    """Run a script with DRY_RUN=1 from tmp_path and return its parsed command lines."""
    save_root = env.pop('SAVE_ROOT', tmp_path / 'save')
    result = run_shell(name, tmp_path, script_env(save_root, **env))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return [parse_line(line) for line in lines]


def load_target(target):
    """Import the module that a command runs (main_*.py, nc_metrics.py or scripts/*.py)."""
    path = REPO / target
    assert path.is_file(), f'{target} not found in the repository'
    if path.parent == REPO:
        return importlib.import_module(path.stem)
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_options(command, monkeypatch, world_size=None):
    """Parse a main_*.py command with its parse_option as torchrun would start it.

    world_size overrides the number of processes of the command.
    """
    monkeypatch.setenv('WORLD_SIZE', str(world_size or command.nproc))
    try:
        return load_target(command.target).parse_option(command.argv)
    finally:
        monkeypatch.delenv('WORLD_SIZE')


def dry_run_main(command, capsys):
    """Run the target's main(argv + ['--dry_run']) in this process and return its output."""
    capsys.readouterr()
    try:
        load_target(command.target).main(command.argv + ['--dry_run'])
    except SystemExit as exit_:
        assert exit_.code in (0, None), f'{command.target} exited with {exit_.code}'
    return capsys.readouterr().out


def check_parses(command, monkeypatch):
    """Parse one command with the parser of its target and return the options."""
    module = load_target(command.target)
    if hasattr(module, 'parse_option'):
        return parse_options(command, monkeypatch)
    if hasattr(module, 'parse_args'):
        return module.parse_args(command.argv)
    raise AssertionError(f'{command.target} has neither parse_option nor parse_args')


def done_file(command, options):
    """Return the file whose existence makes the scripts skip this command."""
    if command.target == 'nc_metrics.py':
        return Path(command.value('--out'))
    return Path(options.save_folder) / 'results.json'


# ---------------------------------------------------------------------------- every script

def test_script_list_complete():
    expected = {f'{d}_{s}.sh' for d in DATASETS
                for s in LOSSES + ['supcon', 'supcon_linear', 'supcon_normlinear',
                                   'supcon_prototype', 'supcon_nohead']}
    expected |= {'table2_nc_metrics.sh', 'figure1_nc_convergence.sh', 'figure2_sweep.sh',
                 'cifar_temperature_sweep.sh'}
    assert set(SHELL_SCRIPTS) == expected


@pytest.mark.parametrize('name', SHELL_SCRIPTS)
def test_dry_run_commands_parse(name, tmp_path, monkeypatch):
    commands = dry_commands(name, tmp_path, **SMALL_GRID.get(name, {}))
    assert len(commands) >= 1
    for command in commands:
        check_parses(command, monkeypatch)
    assert not (tmp_path / 'save').exists(), 'a dry run wrote into SAVE_ROOT'


@pytest.mark.parametrize('name', SHELL_SCRIPTS)
def test_dry_run_skips_finished(name, tmp_path, monkeypatch):
    """The run folders computed in bash are the ones parse_option derives."""
    grid = SMALL_GRID.get(name, {})
    commands = dry_commands(name, tmp_path, **grid)
    for command in commands:
        if command.target.startswith('scripts/'):
            continue
        path = done_file(command, check_parses(command, monkeypatch))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{}')
    remaining = dry_commands(name, tmp_path, **grid)
    assert [c.target for c in remaining] == [c.target for c in commands
                                             if c.target.startswith('scripts/')]
    forced = dry_commands(name, tmp_path, FORCE=1, **grid)
    assert len(forced) == len(commands)


@pytest.mark.parametrize('name', [n for n in SHELL_SCRIPTS if n.split('_')[0] in DATASETS])
def test_dataset_script_main_dry_run(name, tmp_path, capsys, monkeypatch):
    (command,) = dry_commands(name, tmp_path)
    # main() runs in this single process, so its run name is that of a world size of 1.
    options = parse_options(command, monkeypatch, world_size=1)
    output = dry_run_main(command, capsys)
    assert f'run folder: {options.save_folder}' in output
    assert not (tmp_path / 'save').exists()


# ---------------------------------------------------------------------------- paper values

def test_cifar100_nonl_paper_recipe(tmp_path, monkeypatch):
    (command,) = dry_commands('cifar100_nonl.sh', tmp_path)
    assert command.launcher == 'python'
    assert command.target == 'main_ce.py'
    options = parse_options(command, monkeypatch)
    assert options.dataset == 'cifar100'
    assert options.loss == 'nonl'
    assert options.model == 'resnet18'
    assert options.epochs == 1000
    assert options.batch_size == 512
    assert options.global_batch == 512
    assert options.learning_rate == 0.2
    assert options.cosine
    assert options.lr_decay_rate == 0.1
    assert options.weight_decay == 1e-4
    assert options.momentum == 0.9
    assert options.seed == 42
    assert options.temp == 0.1
    assert options.size == 32


def test_cifar_recipe_without_warmup(tmp_path, monkeypatch):
    """The CIFAR recipe has no warm-up, although the global batch of 512 exceeds 256."""
    util = importlib.import_module('util')
    for name in ['cifar10_ce.sh', 'cifar100_supcon.sh', 'cifar10_supcon_linear.sh']:
        (command,) = dry_commands(name, tmp_path)
        options = parse_options(command, monkeypatch)
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.123)
        for epoch, batch in [(1, 0), (1, 50), (2, 0)]:
            util.warmup_learning_rate(options, epoch, batch, 98, optimizer)
            assert optimizer.param_groups[0]['lr'] == 0.123, name


def test_cifar_supcon_recipe(tmp_path, monkeypatch):
    (command,) = dry_commands('cifar10_supcon.sh', tmp_path)
    options = parse_options(command, monkeypatch)
    assert command.target == 'main_supcon.py'
    assert (options.model, options.epochs, options.batch_size) == ('resnet18', 1000, 512)
    assert options.learning_rate == 0.05
    assert options.method == 'SupCon'
    assert options.head == 'mlp'
    assert options.feat_dim == 128
    assert options.cosine


@pytest.mark.parametrize('dataset, nproc', [('imagenet100', 4), ('imagenet', 8)])
@pytest.mark.parametrize('stage', ['ce', 'ntce', 'nonl', 'supcon', 'supcon_nohead'])
def test_imagenet_torchrun_lr_scaling(dataset, nproc, stage, tmp_path, monkeypatch):
    (command,) = dry_commands(f'{dataset}_{stage}.sh', tmp_path)
    assert command.launcher == 'torchrun'
    assert command.nproc == nproc
    options = parse_options(command, monkeypatch)
    supcon = stage.startswith('supcon')
    base = 0.8 if supcon and dataset == 'imagenet100' else 0.1
    assert options.model == 'resnet50'
    assert options.size == 224
    assert options.epochs == 500
    assert options.batch_size == 256
    assert options.global_batch == 256 * nproc
    assert options.lr_scaling == 'linear'
    assert options.learning_rate == pytest.approx(base * 256 * nproc / 256)
    assert options.warm
    assert options.warm_epochs == (5 if supcon and dataset == 'imagenet' else 10)
    assert options.syncBN
    assert options.temp == (0.1 if supcon else 0.2)


@pytest.mark.parametrize('dataset, epochs, lr, milestones', [
    ('cifar10', 100, 5.0, [60, 75, 90]), ('cifar100', 100, 5.0, [60, 75, 90]),
    ('imagenet100', 90, 2.0, [30, 60, 80]), ('imagenet', 90, 0.8, [30, 60, 80])])
def test_linear_probe_recipe(dataset, epochs, lr, milestones, tmp_path, monkeypatch):
    for name, classifier in [('supcon_linear', 'linear'), ('supcon_normlinear', 'normalized')]:
        (command,) = dry_commands(f'{dataset}_{name}.sh', tmp_path)
        options = parse_options(command, monkeypatch)
        assert options.classifier == classifier
        assert options.epochs == epochs
        assert options.learning_rate == lr
        assert options.lr_decay_epochs == milestones
        assert options.lr_decay_rate == 0.2
        assert options.weight_decay == 0
        assert not options.cosine
        assert options.feature == 'encoder'


@pytest.mark.parametrize('dataset', DATASETS)
@pytest.mark.parametrize('head, suffix', [('mlp', 'supcon'), ('none', 'supcon_nohead')])
def test_default_ckpt_is_pretraining_output(dataset, head, suffix, tmp_path, monkeypatch):
    (pretrain,) = dry_commands(f'{dataset}_{suffix}.sh', tmp_path)
    expected = os.path.join(parse_options(pretrain, monkeypatch).save_folder, 'last.pth')
    for name in ['supcon_linear', 'supcon_normlinear', 'supcon_prototype']:
        (command,) = dry_commands(f'{dataset}_{name}.sh', tmp_path, HEAD=head)
        assert command.value('--ckpt') == expected, name


def test_ckpt_variable_overrides_default(tmp_path):
    (command,) = dry_commands('cifar100_supcon_prototype.sh', tmp_path, CKPT='/ckpts/x.pth')
    assert command.value('--ckpt') == '/ckpts/x.pth'


def test_environment_overrides(tmp_path, monkeypatch):
    (command,) = dry_commands('cifar10_ntce.sh', tmp_path, EPOCHS=3, BATCH=64, TEMP=0.3,
                              LR=0.05, DATA='/data/c10', TRIAL='t1', SEED=7)
    options = parse_options(command, monkeypatch)
    assert (options.epochs, options.batch_size, options.temp) == (3, 64, 0.3)
    assert (options.learning_rate, options.data_folder) == (0.05, '/data/c10')
    assert (options.trial, options.seed) == ('t1', 7)


def test_ngpus_uses_torchrun(tmp_path, monkeypatch):
    (command,) = dry_commands('cifar10_nonl.sh', tmp_path, NGPUS=2, BATCH=256)
    assert command.launcher == 'torchrun'
    assert command.nproc == 2
    assert parse_options(command, monkeypatch).global_batch == 512


def test_extra_appended_verbatim(tmp_path, monkeypatch):
    extra = "--mean '(0.5, 0.5, 0.5)' --amp --print_freq 5"
    (command,) = dry_commands('cifar10_ce.sh', tmp_path, EXTRA=extra)
    assert command.argv[-5:] == ['--mean', '(0.5, 0.5, 0.5)', '--amp', '--print_freq', '5']
    assert parse_options(command, monkeypatch).print_freq == 5


@pytest.mark.parametrize('env', [{'NGPUS': '0'}, {'BATCH': 'big'}, {'EXTRA': "--mean '(0.5"}])
def test_invalid_setting_rejected(env, tmp_path):
    result = run_shell('cifar10_ce.sh', tmp_path, script_env(tmp_path / 'save', **env))
    assert result.returncode == 2
    assert result.stdout == ''
    assert 'error:' in result.stderr


# ---------------------------------------------------------------------------- sweeps

def test_figure2_sweep_grid(tmp_path, monkeypatch):
    commands = dry_commands('figure2_sweep.sh', tmp_path)
    assert len(commands) == 2 * 3 * 11 * 7
    cells = []
    for command in commands:
        options = parse_options(command, monkeypatch)
        assert options.learning_rate == 0.2
        assert options.epochs == 1000
        cells.append((options.dataset, options.loss, options.temp, options.global_batch))
    expected = itertools.product(['cifar10', 'cifar100'], ['normface', 'ntce', 'nonl'],
                                 TEMPERATURES, BATCH_SIZES)
    assert sorted(cells) == sorted(expected)


def test_figure2_sweep_batch_per_process(tmp_path, monkeypatch):
    commands = dry_commands('figure2_sweep.sh', tmp_path, NGPUS=2, BATCHES='64 2048',
                            TEMPS='0.1', LOSSES='nonl', DATASETS='cifar10')
    assert [c.nproc for c in commands] == [2, 2]
    batches = [parse_options(c, monkeypatch).global_batch for c in commands]
    assert batches == [64, 2048]


def test_figure2_sweep_indivisible_batch(tmp_path):
    env = script_env(tmp_path / 'save', NGPUS=3)
    result = run_shell('figure2_sweep.sh', tmp_path, env)
    assert result.returncode == 2
    assert 'NGPUS=3' in result.stderr


def test_temperature_sweep_grid(tmp_path, monkeypatch):
    commands = dry_commands('cifar_temperature_sweep.sh', tmp_path, LOSS='ntce',
                            DATASET='cifar10')
    options = [parse_options(c, monkeypatch) for c in commands]
    assert [o.temp for o in options] == TEMPERATURES
    assert {(o.dataset, o.loss, o.global_batch, o.epochs) for o in options} == {
        ('cifar10', 'ntce', 512, 1000)}


def test_temperature_sweep_supcon_chain(tmp_path, monkeypatch):
    commands = dry_commands('cifar_temperature_sweep.sh', tmp_path, LOSS='supcon',
                            TEMPS='0.1 0.5')
    assert [c.target for c in commands] == [
        'main_supcon.py', 'main_linear.py', 'main_linear.py', 'main_prototype.py'] * 2
    for start in (0, 4):
        pretrain = parse_options(commands[start], monkeypatch)
        ckpt = os.path.join(pretrain.save_folder, 'last.pth')
        for command in commands[start + 1:start + 4]:
            assert command.value('--ckpt') == ckpt
    assert [parse_options(commands[i], monkeypatch).temp for i in (0, 4)] == [0.1, 0.5]


def test_temperature_sweep_ce_single_run(tmp_path):
    commands = dry_commands('cifar_temperature_sweep.sh', tmp_path, LOSS='ce')
    assert len(commands) == 1


# ---------------------------------------------------------------------------- Table 2, Figure 1

def test_table2_commands(tmp_path, monkeypatch):
    commands = dry_commands('table2_nc_metrics.sh', tmp_path)
    assert len(commands) == 2 * 6
    assert {c.target for c in commands} == {'nc_metrics.py'}
    for command in commands:
        assert command.value('--split') == 'train'
        assert '--json' in command.argv
        ckpt = Path(command.value('--ckpt'))
        assert ckpt.name == 'last.pth'
        probed = '--classifier' in command.argv
        expected = ckpt.parent / ('nc_train_probe.json' if probed else 'nc_train.json')
        assert Path(command.value('--out')) == expected


def test_table2_paths_match_training_scripts(tmp_path, monkeypatch):
    commands = dry_commands('table2_nc_metrics.sh', tmp_path)
    expected_ckpts = set()
    probes = set()
    for dataset in ['cifar10', 'cifar100']:
        for script in [f'{dataset}_{loss}.sh' for loss in LOSSES] + [f'{dataset}_supcon.sh']:
            (command,) = dry_commands(script, tmp_path)
            folder = parse_options(command, monkeypatch).save_folder
            expected_ckpts.add(os.path.join(folder, 'last.pth'))
        (probe,) = dry_commands(f'{dataset}_supcon_linear.sh', tmp_path)
        probes.add(os.path.join(parse_options(probe, monkeypatch).save_folder, 'last.pth'))
    assert {c.value('--ckpt') for c in commands} == expected_ckpts
    assert {c.value('--classifier') for c in commands if '--classifier' in c.argv} == probes


def test_table2_missing_checkpoints(tmp_path):
    result = run_shell('table2_nc_metrics.sh', tmp_path,
                       script_env(tmp_path / 'save', DRY_RUN=0, DATASETS='cifar10'))
    assert result.returncode == 1
    assert result.stdout == ''
    assert result.stderr.count('missing: ') == 6
    assert 'scripts/cifar10_nonl.sh' in result.stderr


def test_figure1_commands(tmp_path, monkeypatch):
    commands = dry_commands('figure1_nc_convergence.sh', tmp_path)
    assert [c.target for c in commands] == ['main_ce.py'] * 4 + ['scripts/plot_nc_convergence.py']
    folders = []
    for command, loss in zip(commands, LOSSES):
        options = parse_options(command, monkeypatch)
        assert (options.dataset, options.loss, options.trial) == ('cifar100', loss, 'nc')
        # 98 iterations per epoch x 1000 epochs / 500 measurements.
        assert options.nc_freq == 196
        folders.append(options.save_folder)
    plot = commands[-1]
    assert plot.argv[:4] == folders
    assert plot.value('--baseline') == folders[0]
    save_root = str(tmp_path / 'save')
    assert plot.value('--out') == os.path.join(save_root, 'figure1', 'figure1.png')
    assert plot.value('--json') == os.path.join(save_root, 'figure1', 'convergence.json')


def test_figure1_nc_freq_follows_epochs(tmp_path, monkeypatch):
    commands = dry_commands('figure1_nc_convergence.sh', tmp_path, EPOCHS=10, BATCH=1000)
    # 50 iterations per epoch x 10 epochs / 500 measurements rounds down to 1.
    assert parse_options(commands[0], monkeypatch).nc_freq == 1


# ---------------------------------------------------------------------------- real runs

@pytest.fixture(scope='module')
def tiny_runs(tmp_path_factory):
    """Run a classifier-learning script and the SupCon chains for one tiny epoch each."""
    root = tmp_path_factory.mktemp('scripts_real')
    # 5 images per class and file: 250 training and 50 test images, 8 steps per epoch.
    data = write_cifar10_folder(str(root / 'cifar'), images_per_class=5)
    save_root = root / 'save'
    train = dict(DATA=data, EPOCHS=1, BATCH=32, EXTRA=TINY_EXTRA)
    probe = dict(train, EXTRA=TINY_EVAL_EXTRA)
    evaluate = dict(DATA=data, BATCH=32, EXTRA=TINY_EVAL_EXTRA)
    outputs = {}

    def run(name, **env):
        env = script_env(save_root, DRY_RUN=0, OMP_NUM_THREADS=1, **env)
        result = run_shell(name, root, env, timeout=600)
        assert result.returncode == 0, f'{name} failed:\n{result.stdout}\n{result.stderr}'
        outputs.setdefault(name, []).append(result.stdout)
        return result.stdout

    def folder_of(name, **env):
        """Return the run folder of a script's (finished) run, from its dry run."""
        (command,) = dry_commands(name, root, SAVE_ROOT=save_root, FORCE=1, **env)
        monkeypatch = pytest.MonkeyPatch()
        try:
            return parse_options(command, monkeypatch).save_folder
        finally:
            monkeypatch.undo()

    run('cifar10_ntce.sh', **train)

    run('cifar10_supcon.sh', **train)
    ckpt = os.path.join(folder_of('cifar10_supcon.sh', **train), 'last.pth')
    run('cifar10_supcon_linear.sh', CKPT=ckpt, **probe)
    run('cifar10_supcon_normlinear.sh', CKPT=ckpt, **probe)
    run('cifar10_supcon_prototype.sh', CKPT=ckpt, **evaluate)

    run('cifar10_supcon_nohead.sh', **train)
    ckpt = os.path.join(folder_of('cifar10_supcon_nohead.sh', **train), 'last.pth')
    run('cifar10_supcon_linear.sh', CKPT=ckpt, **probe)
    run('cifar10_supcon_prototype.sh', CKPT=ckpt, **evaluate)
    return save_root, outputs, folder_of, train


def read_results(folder):
    with open(os.path.join(folder, 'results.json')) as handle:
        return json.load(handle)


def test_real_classifier_learning_run(tiny_runs):
    save_root, outputs, folder_of, train = tiny_runs
    folder = folder_of('cifar10_ntce.sh', **train)
    results = read_results(folder)
    assert results['script'] == 'main_ce'
    assert results['epochs'] == 1
    assert os.path.isfile(os.path.join(folder, 'last.pth'))
    last_line = outputs['cifar10_ntce.sh'][0].strip().splitlines()[-1]
    assert last_line == f'best accuracy: {results["best_acc"]:.2f}'


def test_real_supcon_chain_outputs(tiny_runs):
    save_root, outputs, folder_of, train = tiny_runs
    runs = [json.load(open(path)) for path in save_root.glob('SupCon/cifar10_models/*/args.json')]
    by_script = {}
    for args in runs:
        head = args.get('ckpt_opt', args).get('head', 'mlp')
        by_script.setdefault((args['script'], args.get('classifier'), head), []).append(args)
    for head in ['mlp', 'none']:
        assert len(by_script[('main_supcon', None, head)]) == 1
        assert len(by_script[('main_linear', 'linear', head)]) == 1
        assert len(by_script[('main_prototype', None, head)]) == 1
    assert len(by_script[('main_linear', 'normalized', 'mlp')]) == 1
    prototype_output = outputs['cifar10_supcon_prototype.sh'][0]
    assert prototype_output.strip().splitlines()[-1].startswith('test accuracy: ')


def test_real_runs_collected(tiny_runs, capsys):
    save_root, _, folder_of, train = tiny_runs
    collect = load_target('scripts/collect_results.py')
    tables = collect.build_tables(str(save_root), [1, 4], all_batches=True)
    table1, table1_probes, table4 = tables
    ntce = read_results(folder_of('cifar10_ntce.sh', **train))['best_acc']
    row = {labels[0]: cells for labels, cells in table1.rows}
    assert row['NTCE'][0].measured == pytest.approx(ntce)
    assert row['NONL'][0].measured is None
    filled = {(table.title[:7], labels[0]) for table in (table1_probes, table4)
              for labels, cells in table.rows if cells[0].measured is not None}
    assert filled == {('Table 1', 'Linear probing'), ('Table 1', 'Normalized linear probing'),
                      ('Table 1', 'Fixed prototypes'), ('Table 4', 'Linear probing'),
                      ('Table 4', 'Fixed prototypes')}
    for table in (table1_probes, table4):
        assert all(cells[1].measured is None for _, cells in table.rows)
