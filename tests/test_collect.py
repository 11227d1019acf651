"""Tests for scripts/collect_results.py and scripts/plot_phase_diagram.py on fake finished runs.

Each test writes the files that the main scripts and nc_metrics.py leave in a run folder
(args.json, results.json, nc_*.json) and the convergence.json of
scripts/plot_nc_convergence.py, then checks the rendered cells: measured value, the
published value from scripts/paper_results.json, and their difference.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, 'scripts')


def load_script(name):
    """Import scripts/<name>.py as a module (scripts/ is not a package)."""
    if SCRIPTS not in sys.path:
        sys.path.insert(0, SCRIPTS)
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


collect = load_script('collect_results')

with open(os.path.join(SCRIPTS, 'paper_results.json')) as handle:
    PAPER = json.load(handle)


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        json.dump(value, handle)


def make_run(save_root, dataset, name, args, results=None):
    """Write a run folder as the main scripts do and return its path."""
    folder = os.path.join(str(save_root), 'SupCon', f'{dataset}_models', name)
    write_json(os.path.join(folder, 'args.json'), dict(args, dataset=dataset, run_name=name))
    if results is not None:
        write_json(os.path.join(folder, 'results.json'), results)
    return folder


def make_ce_run(save_root, dataset, loss, temp, best_acc, global_batch=512, finished=True):
    args = {'script': 'main_ce', 'loss': loss, 'temp': temp, 'batch_size': global_batch,
            'world_size': 1, 'global_batch': global_batch, 'epochs': 1000}
    results = None
    if finished:
        results = {'script': 'main_ce', 'dataset': dataset, 'test_acc': best_acc - 1.0,
                   'best_acc': best_acc, 'epochs': 1000}
    return make_run(save_root, dataset, f'SupCE_{dataset}_{loss}_temp_{temp}_bsz_{global_batch}',
                    args, results)


def make_probe_run(save_root, dataset, script, ckpt_opt, test_acc, best_acc, classifier=None,
                   ckpt='/elsewhere/last.pth', name=None):
    args = {'script': script, 'ckpt': ckpt, 'ckpt_opt': ckpt_opt, 'feature': 'encoder'}
    if classifier is not None:
        args['classifier'] = classifier
    name = name or f'{script}_{classifier}_{ckpt_opt.get("head", "default")}_{test_acc}'
    return make_run(save_root, dataset, name, args,
                    {'script': script, 'dataset': dataset, 'test_acc': test_acc,
                     'best_acc': best_acc})


def table_by_title(tables, prefix):
    matches = [table for table in tables if table.title.startswith(prefix)]
    assert len(matches) == 1, [table.title for table in tables]
    return matches[0]


def cell(table, row_label, column):
    """Return the (ours, paper, diff) strings of one cell."""
    index = table.groups.index(column)
    for labels, cells in table.rows:
        if cells is not None and labels[0] == row_label:
            return cells[index].strings()
    raise KeyError(row_label)


def build(save_root, numbers, all_batches=False):
    return collect.build_tables(str(save_root), numbers, all_batches)


# ---------------------------------------------------------------------------- Table 1

def test_table1_measured_paper_difference(tmp_path):
    make_ce_run(tmp_path, 'cifar100', 'nonl', 0.1, 74.1)
    table = table_by_title(build(tmp_path, [1]), 'Table 1 (I)')
    ours, paper, diff = cell(table, 'NONL', 'CIFAR-100')
    assert ours == '74.10'
    assert paper == f'{PAPER["table1"]["I"]["nonl"]["cifar100"]:.1f}'
    assert paper == '73.6'
    assert diff == '+0.50'


def test_table1_missing_cells_blank(tmp_path):
    make_ce_run(tmp_path, 'cifar100', 'nonl', 0.1, 74.1)
    table = table_by_title(build(tmp_path, [1]), 'Table 1 (I)')
    for row, column in [('CE', 'CIFAR-10'), ('NONL', 'CIFAR-10'), ('NTCE', 'ImageNet-1K')]:
        ours, paper, diff = cell(table, row, column)
        assert ours == ''
        assert diff == ''
        assert paper != ''


def test_table1_missing_not_zero_in_text(tmp_path, capsys):
    make_ce_run(tmp_path, 'cifar100', 'nonl', 0.1, 74.1)
    assert collect.main([str(tmp_path), '--table', '1']) == 0
    lines = capsys.readouterr().out.splitlines()
    ce_line = next(line for line in lines if line.startswith('CE '))
    numbers = [part.strip().split() for part in ce_line.split('|')[1:]]
    # Only the published value appears in each CE cell: no measured value, no difference.
    assert numbers == [['94.6'], ['72.1'], ['84.4'], ['75.4']]
    nonl_line = next(line for line in lines if line.startswith('NONL '))
    assert nonl_line.split('|')[2].split() == ['74.10', '73.6', '+0.50']


def test_table1_unfinished_run_ignored(tmp_path):
    make_ce_run(tmp_path, 'cifar10', 'ce', 0.1, 95.0, finished=False)
    table = table_by_title(build(tmp_path, [1]), 'Table 1 (I)')
    assert cell(table, 'CE', 'CIFAR-10')[0] == ''


def test_table1_sweep_reports_best_temperature(tmp_path):
    for temp, accuracy in [(0.07, 72.0), (0.2, 73.9), (0.5, 71.5)]:
        make_ce_run(tmp_path, 'cifar100', 'ntce', temp, accuracy)
    table = table_by_title(build(tmp_path, [1]), 'Table 1 (I)')
    assert cell(table, 'NTCE', 'CIFAR-100') == ('73.90', '72.9', '+1.00')
    notes = [note for note in table.notes if note.startswith('NTCE / CIFAR-100')]
    assert len(notes) == 1
    assert 'best of 3 runs' in notes[0]
    assert 'temp 0.2,' in notes[0]


def test_table1_other_batch_excluded(tmp_path):
    make_ce_run(tmp_path, 'cifar10', 'normface', 0.1, 80.0, global_batch=64)
    table = table_by_title(build(tmp_path, [1]), 'Table 1 (I)')
    assert cell(table, 'NormFace', 'CIFAR-10')[0] == ''
    assert any('another global batch' in note for note in table.notes)
    table = table_by_title(build(tmp_path, [1], all_batches=True), 'Table 1 (I)')
    assert cell(table, 'NormFace', 'CIFAR-10') == ('80.00', '94.8', '-14.80')


def test_table1_probe_rows(tmp_path):
    make_probe_run(tmp_path, 'cifar10', 'main_linear', {'head': 'mlp', 'temp': 0.1},
                   test_acc=94.0, best_acc=95.3, classifier='linear')
    # A reference SupContrast checkpoint stores no "head": it had an MLP head.
    make_probe_run(tmp_path, 'cifar10', 'main_linear', {'temp': 0.1},
                   test_acc=94.1, best_acc=94.4, classifier='normalized')
    make_probe_run(tmp_path, 'imagenet100', 'main_prototype', {'head': 'mlp', 'temp': 0.1},
                   test_acc=86.0, best_acc=99.0)
    table = table_by_title(build(tmp_path, [1]), 'Table 1 (II)')
    assert cell(table, 'Linear probing', 'CIFAR-10') == ('95.30', '95.0', '+0.30')
    assert cell(table, 'Normalized linear probing', 'CIFAR-10') == ('94.40', '94.9', '-0.50')
    # main_prototype: test_acc, its single evaluation.
    assert cell(table, 'Fixed prototypes', 'ImageNet-100') == ('86.00', '86.8', '-0.80')
    assert cell(table, 'Fixed prototypes', 'CIFAR-10')[0] == ''


def test_table4_head_none_rows(tmp_path):
    make_probe_run(tmp_path, 'cifar100', 'main_linear', {'head': 'none', 'temp': 0.1},
                   test_acc=70.0, best_acc=70.9, classifier='linear')
    make_probe_run(tmp_path, 'cifar100', 'main_prototype', {'head': 'none', 'temp': 0.1},
                   test_acc=71.0, best_acc=71.0)
    tables = build(tmp_path, [1, 4])
    table4 = table_by_title(tables, 'Table 4')
    assert cell(table4, 'Linear probing', 'CIFAR-100') == ('70.90', '70.6', '+0.30')
    assert cell(table4, 'Fixed prototypes', 'CIFAR-100') == ('71.00', '71.4', '-0.40')
    table1 = table_by_title(tables, 'Table 1 (II)')
    assert cell(table1, 'Linear probing', 'CIFAR-100')[0] == ''


def test_table1_simclr_probe_ignored(tmp_path):
    make_probe_run(tmp_path, 'cifar10', 'main_linear', {'head': 'mlp', 'method': 'SimCLR'},
                   test_acc=90.0, best_acc=90.0, classifier='linear')
    table = table_by_title(build(tmp_path, [1]), 'Table 1 (II)')
    assert cell(table, 'Linear probing', 'CIFAR-10')[0] == ''


# ---------------------------------------------------------------------------- Table 2

NC_VALUES = {'erank_intra': 23.0, 'erank_inter': 8.5, 'erank_weights': 8.9,
             'weight_alignment': 0.61, 'instance_alignment': 0.69, 'mir': 0.98, 'hdr': 0.03}


def write_nc(folder, ckpt, metrics, classifier=None, name='nc_train.json', split='train'):
    write_json(os.path.join(folder, name),
               {'ckpt': ckpt, 'classifier': classifier, 'split': split, 'feature': 'encoder',
                'metrics': metrics})


def test_table2_classifier_learning_row(tmp_path):
    folder = make_ce_run(tmp_path, 'cifar10', 'ce', 0.1, 94.0)
    write_nc(folder, os.path.join(folder, 'last.pth'), NC_VALUES)
    table = table_by_title(build(tmp_path, [2]), 'Table 2: NC metrics, CIFAR-10 ')
    assert cell(table, 'CE', 'Intra ER') == ('23.00', '22.5', '+0.50')
    assert cell(table, 'CE', 'Inter ER') == ('8.50', '8.6', '-0.10')
    assert cell(table, 'CE', 'Weight align') == ('0.610', '0.59', '+0.020')
    assert cell(table, 'NONL', 'Intra ER') == ('', '4.0', '')


def test_table2_test_split_ignored(tmp_path):
    folder = make_ce_run(tmp_path, 'cifar10', 'ce', 0.1, 94.0)
    write_nc(folder, os.path.join(folder, 'last.pth'), NC_VALUES, name='nc_test.json',
             split='test')
    table = table_by_title(build(tmp_path, [2]), 'Table 2: NC metrics, CIFAR-10 ')
    assert cell(table, 'CE', 'Intra ER')[0] == ''


def test_table2_moved_checkpoint_path(tmp_path):
    folder = make_ce_run(tmp_path, 'cifar100', 'nonl', 0.1, 73.0)
    moved = os.path.join('/cluster/scratch/save/SupCon/cifar100_models',
                         os.path.basename(folder), 'last.pth')
    write_nc(os.path.join(str(tmp_path), 'elsewhere'), moved, dict(NC_VALUES, erank_intra=11.0))
    table = table_by_title(build(tmp_path, [2]), 'Table 2: NC metrics, CIFAR-100')
    assert cell(table, 'NONL', 'Intra ER') == ('11.00', '11.4', '-0.40')


def test_table2_supcon_rows(tmp_path):
    supcon = make_run(tmp_path, 'cifar100', 'SupCon_cifar100_temp_0.1',
                      {'script': 'main_supcon', 'method': 'SupCon', 'head': 'mlp',
                       'temp': 0.1})
    ckpt = os.path.join(supcon, 'last.pth')
    probe = make_probe_run(tmp_path, 'cifar100', 'main_linear', {'head': 'mlp', 'temp': 0.1},
                           test_acc=73.0, best_acc=73.5, classifier='linear', ckpt=ckpt)
    write_nc(supcon, ckpt, dict(NC_VALUES, weight_alignment=0.0, mir=0.9))
    write_nc(supcon, ckpt, dict(NC_VALUES, weight_alignment=1.1), name='nc_train_probe.json',
             classifier=os.path.join(probe, 'last.pth'))
    table = table_by_title(build(tmp_path, [2]), 'Table 2: NC metrics, CIFAR-100')
    assert cell(table, 'SCL (w probing)', 'Weight align') == ('1.100', '1.03', '+0.070')
    assert cell(table, 'SCL (w/o probing)', 'Weight align') == ('0.000', '0.00', '+0.000')
    assert cell(table, 'SCL (w/o probing)', 'MIR') == ('0.900', '0.87', '+0.030')


def test_table2_best_accuracy_run_chosen(tmp_path):
    for temp, accuracy, intra in [(0.1, 72.0, 30.0), (0.2, 74.0, 12.0), (0.5, 70.0, 5.0)]:
        folder = make_ce_run(tmp_path, 'cifar100', 'ntce', temp, accuracy)
        write_nc(folder, os.path.join(folder, 'last.pth'), dict(NC_VALUES, erank_intra=intra))
    table = table_by_title(build(tmp_path, [2]), 'Table 2: NC metrics, CIFAR-100')
    assert cell(table, 'NTCE', 'Intra ER') == ('12.00', '12.6', '-0.60')


# ---------------------------------------------------------------------------- Table 3

def test_table3_fractions_as_percent(tmp_path):
    write_json(os.path.join(str(tmp_path), 'figure1', 'convergence.json'), {
        'baseline': 'CE',
        'metrics': ['instance_alignment', 'weight_alignment', 'erank_weights', 'erank_intra',
                    'erank_inter'],
        'iterations': {},
        'table3': {
            'I': {'NONL': {'erank_intra': 0.15, 'erank_inter': 0.5},
                  'NormFace': {'instance_alignment': None}},
            'II': {'NTCE': {'erank_intra': 0.0}},
        },
    })
    table = table_by_title(build(tmp_path, [3]), 'Table 3')
    part_one = table.rows[:table.rows.index(next(r for r in table.rows
                                                  if r[1] is None and r[0][0].startswith('(II)')))]
    rows = {labels[0]: cells for labels, cells in part_one if cells is not None}
    columns = table.groups
    assert rows['NONL'][columns.index('Intra erank')].strings() == ('15.00', '14.6', '+0.40')
    assert rows['NONL'][columns.index('Inter erank')].strings() == ('50.00', '47.2', '+2.80')
    assert rows['NONL'][columns.index('Weights erank')].strings() == ('', '34.6', '')
    assert rows['NormFace'][columns.index('Instance alignment')].strings() == ('n.r.', '79.4', '')
    assert rows['NTCE'][columns.index('Intra erank')].strings() == ('', '36.6', '')
    part_two = {labels[0]: cells for labels, cells in table.rows[len(part_one):]
                if cells is not None}
    assert part_two['NTCE'][columns.index('Intra erank')].strings() == ('0.00', '0.0', '+0.00')


def test_table3_missing_file_blank(tmp_path):
    table = table_by_title(build(tmp_path, [3]), 'Table 3')
    measured = [c.strings()[0] for _, cells in table.rows if cells is not None for c in cells]
    assert measured == [''] * 30


# ---------------------------------------------------------------------------- command line

def test_markdown_output(tmp_path, capsys):
    make_ce_run(tmp_path, 'cifar10', 'ntce', 0.1, 95.2)
    assert collect.main([str(tmp_path), '--table', '1', '--markdown']) == 0
    out = capsys.readouterr().out
    assert '| NTCE | 95.20 | 94.7 | +0.50 |' in out
    assert '| CE |  | 94.6 |  |' in out


def test_bad_save_root_exit(tmp_path):
    missing = os.path.join(str(tmp_path), 'no_such_folder')
    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, 'collect_results.py'),
                             missing], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stdout == ''
    assert len(result.stderr.strip().splitlines()) == 1
    assert missing in result.stderr


def test_help_names_accuracy_keys():
    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, 'collect_results.py'),
                             '--help'], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert 'best_acc' in result.stdout
    assert 'test_acc' in result.stdout


def test_paper_results_complete():
    datasets = ['cifar10', 'cifar100', 'imagenet100', 'imagenet']
    for row in ['ce', 'normface', 'ntce', 'nonl']:
        assert sorted(PAPER['table1']['I'][row]) == sorted(datasets)
    for table in (PAPER['table1']['II'], PAPER['table4']):
        for row in ['linear', 'normalized', 'prototype']:
            assert sorted(table[row]) == sorted(datasets)
    for dataset in ['cifar10', 'cifar100']:
        assert len(PAPER['table2'][dataset]) == 6
        for values in PAPER['table2'][dataset].values():
            assert sorted(values) == sorted(NC_VALUES)


# ---------------------------------------------------------------------------- Figure 2

def test_phase_diagram_png_and_table(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    phase = load_script('plot_phase_diagram')
    accuracy = {(0.1, 64): 70.0, (0.1, 512): 73.0, (0.2, 64): 71.0, (0.2, 512): 72.5,
                (0.5, 64): 65.0, (0.5, 512): 66.0}
    for (temp, batch), value in accuracy.items():
        make_ce_run(tmp_path, 'cifar100', 'nonl', temp, value, global_batch=batch)
    out = os.path.join(str(tmp_path), 'figure2.png')
    assert phase.main([str(tmp_path), '--out', out, '--datasets', 'cifar100',
                       '--losses', 'nonl,ntce']) == 0
    with open(out, 'rb') as handle:
        assert handle.read(8) == b'\x89PNG\r\n\x1a\n'
    printed = capsys.readouterr().out
    assert '  512  73.00  72.50  66.00' in printed
    assert '   64  70.00  71.00  65.00' in printed
    assert 'best: 73.00 at temperature 0.1, batch 512' in printed


def test_phase_diagram_no_runs(tmp_path, capsys):
    phase = load_script('plot_phase_diagram')
    assert phase.main([str(tmp_path), '--out', os.path.join(str(tmp_path), 'f.png')]) == 1
    assert 'no finished main_ce.py runs' in capsys.readouterr().err
