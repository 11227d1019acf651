"""Collect finished runs under a save root into Tables 1-4 of the paper.

The paper is "Neural Collapse by Design: Learning Class Prototypes on the Hypersphere".

Every cell shows three numbers: ours (measured), paper, and diff (ours - paper). A cell
without a finished run stays blank, so a missing run never reads as 0.

Sources, per table:
  Table 1 (I)   main_ce.py runs: results.json "best_acc", the "best accuracy" that
                main_ce.py prints (maximum test accuracy over evaluated epochs, as in the
                reference SupContrast code). Only runs at the paper's global batch
                (512 CIFAR, 1024 ImageNet-100, 2048 ImageNet-1K) unless --all_batches.
  Table 1 (II)  main_linear.py runs ("best_acc") and main_prototype.py runs ("test_acc",
                its single evaluation) on the encoder features of SupCon checkpoints
                with a projection head. Their "head" in the checkpoint options is "mlp",
                and a missing "head" counts as "mlp".
  Table 2       nc_*.json files written by `nc_metrics.py --json --out` on the training
                split. The checkpoint's run folder (args.json) gives the method.
  Table 3       SAVE_ROOT/figure1/convergence.json from scripts/plot_nc_convergence.py.
  Table 4       as Table 1 (II), on SupCon checkpoints trained with `--head none`.

When several runs fill one cell (a temperature sweep), the cell shows the best one, and
a note under the table names its temperature and run folder, as the paper reports the
best temperature per method. The paper's numbers are read from
scripts/paper_results.json.

Usage:
  python scripts/collect_results.py ./save
  python scripts/collect_results.py ./save --table 1 --markdown
"""

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

PAPER_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'paper_results.json')

DATASETS = ['cifar10', 'cifar100', 'imagenet100', 'imagenet']
DATASET_LABELS = {'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100',
                  'imagenet100': 'ImageNet-100', 'imagenet': 'ImageNet-1K'}
# Global batch of the paper's Table 1 recipes (appendix A.2).
PAPER_GLOBAL_BATCH = {'cifar10': 512, 'cifar100': 512, 'imagenet100': 1024, 'imagenet': 2048}

LOSS_ROWS = [('ce', 'CE'), ('normface', 'NormFace'), ('ntce', 'NTCE'), ('nonl', 'NONL')]
PROBE_ROWS = [('linear', 'Linear probing', 'T x N'),
              ('normalized', 'Normalized linear probing', 'T x N'),
              ('prototype', 'Fixed prototypes', 'N')]

# Table 2 columns: (metric key written by nc_metrics.py, column label, decimals).
NC_COLUMNS = [('erank_intra', 'Intra ER', 1), ('erank_inter', 'Inter ER', 1),
              ('erank_weights', 'Weights ER', 1), ('weight_alignment', 'Weight align', 2),
              ('instance_alignment', 'Instance align', 2), ('mir', 'MIR', 2),
              ('hdr', 'HDR', 2)]
NC_ROWS = LOSS_ROWS + [('scl_probe', 'SCL (w probing)'), ('scl_proto', 'SCL (w/o probing)')]

# Table 3 columns: (metric key, column label, other spellings accepted in convergence.json).
CONVERGENCE_COLUMNS = [
    ('instance_alignment', 'Instance alignment', ()),
    ('weight_alignment', 'Weight alignment', ()),
    ('erank_weights', 'Weights erank', ('weights_erank',)),
    ('erank_intra', 'Intra erank', ('intra_erank',)),
    ('erank_inter', 'Inter erank', ('inter_erank',)),
]
CONVERGENCE_ROWS = [('normface', 'NormFace'), ('ntce', 'NTCE'), ('nonl', 'NONL')]


# ----------------------------------------------------------------------------- loading

@dataclass
class Run:
    """One run folder: its args.json and, once finished, its results.json."""
    folder: str
    args: dict
    results: dict = None

    @property
    def name(self):
        return os.path.basename(self.folder)

    @property
    def key(self):
        """(dataset models folder, run name), the part of the path that survives a move."""
        return (os.path.basename(os.path.dirname(self.folder)), self.name)


def read_json(path):
    """Return the JSON object in path, or None with a warning when it cannot be parsed."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as error:
        print(f'warning: skipped {path}: {error}', file=sys.stderr)
        return None
    if not isinstance(data, dict):
        print(f'warning: skipped {path}: expected a JSON object', file=sys.stderr)
        return None
    return data


def discover(save_root):
    """Walk save_root and return (runs, nc_files) sorted by path.

    runs are the folders that contain args.json, and nc_files are (path, dict) pairs for the
    nc_*.json files that nc_metrics.py writes.
    """
    runs = []
    nc_files = []
    for folder, subfolders, files in os.walk(save_root):
        subfolders.sort()
        if 'args.json' in files:
            args = read_json(os.path.join(folder, 'args.json'))
            if args is not None:
                results = None
                if 'results.json' in files:
                    results = read_json(os.path.join(folder, 'results.json'))
                runs.append(Run(os.path.abspath(folder), args, results))
        for name in sorted(files):
            if name.startswith('nc_') and name.endswith('.json'):
                path = os.path.join(folder, name)
                data = read_json(path)
                if data is not None:
                    nc_files.append((path, data))
    return runs, nc_files


class RunIndex:
    """Look up the run folder that contains a checkpoint path."""

    def __init__(self, runs):
        self.by_path = {os.path.realpath(run.folder): run for run in runs}
        self.by_key = {run.key: run for run in runs}

    def folder_of(self, ckpt_path, fallback_folder=None):
        """Return the run whose folder contains ckpt_path, or None.

        The path is tried as written, then by its last two folder names, because a path
        recorded relative to another working directory or on another machine no longer
        resolves. fallback_folder is tried last.
        """
        if ckpt_path:
            parent = os.path.dirname(str(ckpt_path))
            run = self.by_path.get(os.path.realpath(parent))
            if run is not None:
                return run
            key = (os.path.basename(os.path.dirname(parent)), os.path.basename(parent))
            run = self.by_key.get(key)
            if run is not None:
                return run
        if fallback_folder is not None:
            return self.by_path.get(os.path.realpath(fallback_folder))
        return None


def as_number(value):
    """Return value as a finite float, or None for missing or non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def global_batch(args):
    if 'global_batch' in args:
        return args['global_batch']
    return args.get('batch_size', 0) * args.get('world_size', 1)


def checkpoint_options(args):
    """Return the pre-training options stored with a linear or prototype run, with defaults."""
    options = dict(args.get('ckpt_opt') or {})
    options.setdefault('head', 'mlp')
    options.setdefault('method', 'SupCon')
    return options


# ----------------------------------------------------------------------------- tables

@dataclass
class Cell:
    """One table cell: the measured value next to the paper's value."""
    measured: float = None
    paper: float = None
    decimals: int = 1
    text: str = None  # shown in place of a measured number, e.g. 'n.r.'

    def strings(self):
        """Return the (ours, paper, diff) strings, with empty strings for missing values."""
        ours = self.text or ''
        paper = ''
        diff = ''
        if self.measured is not None:
            ours = f'{self.measured:.{self.decimals + 1}f}'
        if self.paper is not None:
            paper = f'{self.paper:.{self.decimals}f}'
        if self.measured is not None and self.paper is not None:
            diff = f'{self.measured - self.paper:+.{self.decimals + 1}f}'
        return ours, paper, diff


@dataclass
class Table:
    title: str
    row_header: list
    groups: list
    rows: list = field(default_factory=list)  # (row labels, cells)
    notes: list = field(default_factory=list)


@dataclass
class Candidate:
    """A finished run that can fill a cell, with its accuracy and a note naming it."""
    value: float
    description: str


def fill_cell(candidates, paper_value, decimals, notes, row_label, column_label):
    """Build a cell from the candidate with the highest accuracy and note which run it is."""
    if not candidates:
        return Cell(paper=paper_value, decimals=decimals)
    best = max(candidates, key=lambda candidate: candidate.value)
    count = len(candidates)
    plural = 'run' if count == 1 else 'runs'
    notes.append(f'{row_label} / {column_label}: best of {count} {plural}: {best.description}')
    return Cell(best.value, paper_value, decimals)


def describe(run):
    temperature = run.args.get('temp')
    if run.args.get('script') in ('main_linear', 'main_prototype'):
        temperature = checkpoint_options(run.args).get('temp')
    return f'temp {temperature}, {run.folder}'


def table1_classifier(runs, paper, all_batches):
    """Table 1 (I): classifier-learning losses trained with main_ce.py."""
    table = Table('Table 1 (I): classifier learning, top-1 test accuracy (%), best_acc',
                  ['Loss'], [DATASET_LABELS[d] for d in DATASETS])
    skipped = 0
    for loss, label in LOSS_ROWS:
        cells = []
        for dataset in DATASETS:
            candidates = []
            for run in runs:
                args = run.args
                if (args.get('script') != 'main_ce' or args.get('loss') != loss
                        or args.get('dataset') != dataset or run.results is None):
                    continue
                accuracy = as_number(run.results.get('best_acc'))
                if accuracy is None:
                    continue
                if not all_batches and global_batch(args) != PAPER_GLOBAL_BATCH[dataset]:
                    skipped += 1
                    continue
                candidates.append(Candidate(accuracy, describe(run)))
            cells.append(fill_cell(candidates, paper['table1']['I'][loss][dataset], 1,
                                   table.notes, label, DATASET_LABELS[dataset]))
        table.rows.append(([label], cells))
    if skipped:
        table.notes.append(f'{skipped} finished runs at another global batch were left out '
                           '(--all_batches includes them)')
    return table


def probe_candidates(runs, row, dataset, head):
    """Return the candidates for one Table 1 (II) or Table 4 cell."""
    candidates = []
    for run in runs:
        args = run.args
        if args.get('dataset') != dataset or run.results is None:
            continue
        if args.get('feature', 'encoder') != 'encoder':
            continue
        if row == 'prototype':
            if args.get('script') != 'main_prototype':
                continue
            accuracy = as_number(run.results.get('test_acc'))
        else:
            if args.get('script') != 'main_linear' or args.get('classifier') != row:
                continue
            accuracy = as_number(run.results.get('best_acc'))
        options = checkpoint_options(args)
        if options['head'] != head or options['method'] != 'SupCon' or accuracy is None:
            continue
        candidates.append(Candidate(accuracy, describe(run)))
    return candidates


def table_probes(runs, paper_rows, head, title):
    """Table 1 (II) (head 'mlp') or Table 4 (head 'none'): classifiers on SupCon features."""
    table = Table(title, ['Classifier', 'Passes'], [DATASET_LABELS[d] for d in DATASETS])
    for row, label, passes in PROBE_ROWS:
        cells = []
        for dataset in DATASETS:
            candidates = probe_candidates(runs, row, dataset, head)
            cells.append(fill_cell(candidates, paper_rows[row][dataset], 1, table.notes,
                                   label, DATASET_LABELS[dataset]))
        table.rows.append(([label, passes], cells))
    return table


def nc_row_and_score(nc_path, nc, index, runs):
    """Return (dataset, Table 2 row key, score, run) for one nc_*.json file, or None.

    The score ranks files that fill the same cell: the accuracy of the run behind the
    file, so the cell shows the best-temperature run as in Table 1.
    """
    run = index.folder_of(nc.get('ckpt'), fallback_folder=os.path.dirname(nc_path))
    if run is None:
        return None
    args = run.args
    script = args.get('script')
    if script == 'main_ce':
        accuracy = as_number((run.results or {}).get('best_acc'))
        return args.get('dataset'), args.get('loss'), accuracy, run
    if script != 'main_supcon' or args.get('method', 'SupCon') != 'SupCon':
        return None
    if args.get('head', 'mlp') != 'mlp':
        return None
    if nc.get('classifier'):
        probe = index.folder_of(nc['classifier'])
        accuracy = as_number(((probe.results if probe else None) or {}).get('best_acc'))
        return args.get('dataset'), 'scl_probe', accuracy, run
    accuracies = []
    for other in runs:
        if other.args.get('script') != 'main_prototype' or other.results is None:
            continue
        if index.folder_of(other.args.get('ckpt')) is run:
            accuracies.append(as_number(other.results.get('test_acc')))
    accuracies = [a for a in accuracies if a is not None]
    return args.get('dataset'), 'scl_proto', max(accuracies, default=None), run


def table2_nc(runs, nc_files, paper, all_batches):
    """Table 2: NC metrics on the CIFAR training sets, one block per dataset."""
    index = RunIndex(runs)
    candidates = {}
    for path, nc in nc_files:
        if nc.get('split') != 'train' or nc.get('feature', 'encoder') != 'encoder':
            continue
        metrics = nc.get('metrics')
        if not isinstance(metrics, dict):
            continue
        found = nc_row_and_score(path, nc, index, runs)
        if found is None:
            continue
        dataset, row, score, run = found
        if dataset not in paper['table2']:
            continue
        if (run.args.get('script') == 'main_ce' and not all_batches
                and global_batch(run.args) != PAPER_GLOBAL_BATCH[dataset]):
            continue
        candidates.setdefault((dataset, row), []).append((score, metrics, path, run))

    tables = []
    for dataset in ('cifar10', 'cifar100'):
        table = Table(f'Table 2: NC metrics, {DATASET_LABELS[dataset]} training set',
                      ['Method'], [label for _, label, _ in NC_COLUMNS])
        for row, label in NC_ROWS:
            entries = candidates.get((dataset, row), [])
            entries.sort(key=lambda e: -e[0] if e[0] is not None else math.inf)
            metrics = entries[0][1] if entries else {}
            if entries:
                score, _, path, run = entries[0]
                accuracy = 'unknown' if score is None else f'{score:.2f}'
                table.notes.append(f'{label}: {len(entries)} file(s), chose {path} '
                                   f'(accuracy {accuracy}, {describe(run)})')
            cells = []
            for key, _, decimals in NC_COLUMNS:
                paper_value = paper['table2'][dataset][row][key]
                cells.append(Cell(as_number(metrics.get(key)), paper_value, decimals))
            table.rows.append(([label], cells))
        tables.append(table)
    return tables


def normalize_label(text):
    return re.sub(r'[^a-z0-9]', '', str(text).lower())


def table3_convergence(save_root, paper):
    """Table 3: convergence speed in percent of training iterations, from Figure 1's JSON."""
    path = os.path.join(save_root, 'figure1', 'convergence.json')
    measured = {}
    notes = []
    if os.path.isfile(path):
        data = read_json(path) or {}
        measured = data.get('table3') or {}
        notes.append(f'source: {path} (baseline {data.get("baseline")})')
    else:
        notes.append(f'{path} not found; run scripts/figure1_nc_convergence.sh')
    notes.append('n.r.: the target was not reached within training, or the metric was '
                 'not logged')

    table = Table('Table 3: NC convergence speed (% of training iterations)', ['Method'],
                  [label for _, label, _ in CONVERGENCE_COLUMNS], notes=notes)
    parts = [('I', '(I) 95% NC threshold, % of max iterations'),
             ('II', "(II) CE's converged value, % of CE's converged iteration")]
    for part, part_label in parts:
        by_label = {normalize_label(k): v for k, v in (measured.get(part) or {}).items()}
        table.rows.append(([part_label], None))
        for row, label in CONVERGENCE_ROWS:
            values = by_label.get(row) or {}
            values = {normalize_label(k): v for k, v in values.items()}
            cells = []
            for key, column_label, aliases in CONVERGENCE_COLUMNS:
                paper_value = paper['table3'][part][row][key]
                names = [normalize_label(n) for n in (key, column_label) + aliases]
                present = [n for n in names if n in values]
                if not present:
                    cells.append(Cell(paper=paper_value))
                    continue
                fraction = as_number(values[present[0]])
                if fraction is None:
                    cells.append(Cell(paper=paper_value, text='n.r.'))
                else:
                    cells.append(Cell(100.0 * fraction, paper_value))
            table.rows.append(([label], cells))
    return [table]


# ----------------------------------------------------------------------------- rendering

SUBCOLUMNS = ('ours', 'paper', 'diff')


def render_text(table):
    """Render a table as aligned plain text with an ours/paper/diff triple per cell."""
    n_labels = len(table.row_header)
    header = list(table.row_header) + list(SUBCOLUMNS) * len(table.groups)
    body = []
    for labels, cells in table.rows:
        if cells is not None:
            body.append(list(labels) + [text for cell in cells for text in cell.strings()])
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

    # Widen the last column of a group when the group name is wider than its columns.
    for g, name in enumerate(table.groups):
        first = n_labels + 3 * g
        span = sum(widths[first:first + 3]) + 4
        widths[first + 2] += max(0, len(name) - span)

    def format_line(values):
        labels = [values[i].ljust(widths[i]) for i in range(n_labels)]
        parts = ['  '.join(labels)]
        for g in range(len(table.groups)):
            first = n_labels + 3 * g
            numbers = [values[i].rjust(widths[i]) for i in range(first, first + 3)]
            parts.append('| ' + '  '.join(numbers))
        return '  '.join(parts).rstrip()

    group_line = [' ' * (sum(widths[:n_labels]) + 2 * (n_labels - 1))]
    for g, name in enumerate(table.groups):
        first = n_labels + 3 * g
        group_line.append('| ' + name.ljust(sum(widths[first:first + 3]) + 4))
    out = [table.title, '  '.join(group_line).rstrip(), format_line(header)]
    for labels, cells in table.rows:
        if cells is None:
            out.append(labels[0])
        else:
            out.append(format_line(list(labels) + [t for c in cells for t in c.strings()]))
    for note in table.notes:
        out.append(f'  note: {note}')
    return '\n'.join(out)


def render_markdown(table):
    """Render a table as GitHub Markdown with one column per ours/paper/diff value."""
    header = list(table.row_header)
    for group in table.groups:
        header += [f'{group} {sub}' for sub in SUBCOLUMNS]
    out = [f'**{table.title}**', '', '| ' + ' | '.join(header) + ' |',
           '|' + '|'.join(['---'] * len(table.row_header)
                          + ['---:'] * (len(header) - len(table.row_header))) + '|']
    for labels, cells in table.rows:
        if cells is None:
            out.append('| ' + ' | '.join([f'*{labels[0]}*'] + [''] * (len(header) - 1)) + ' |')
            continue
        line = list(labels)
        for cell in cells:
            line += list(cell.strings())
        out.append('| ' + ' | '.join(line) + ' |')
    if table.notes:
        out.append('')
        out += [f'- {note}' for note in table.notes]
    return '\n'.join(out)


# ----------------------------------------------------------------------------- main

def build_tables(save_root, table_numbers, all_batches):
    with open(PAPER_RESULTS) as f:
        paper = json.load(f)
    runs, nc_files = discover(save_root)
    tables = []
    if 1 in table_numbers:
        tables.append(table1_classifier(runs, paper, all_batches))
        tables.append(table_probes(
            runs, paper['table1']['II'], 'mlp',
            'Table 1 (II): SupCon classifiers, top-1 test accuracy (%), '
            'best_acc (linear) / test_acc (prototypes)'))
    if 2 in table_numbers:
        tables += table2_nc(runs, nc_files, paper, all_batches)
    if 3 in table_numbers:
        tables += table3_convergence(save_root, paper)
    if 4 in table_numbers:
        tables.append(table_probes(
            runs, paper['table4'], 'none',
            'Table 4: SupCon without projection head, top-1 test accuracy (%)'))
    return tables


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Print the paper\'s Tables 1-4 from finished runs under SAVE_ROOT, '
                    'each cell as ours / paper / diff (ours - paper); cells without a '
                    'finished run stay blank. Accuracy sources: results.json "best_acc" '
                    '(the best accuracy over evaluated epochs that main_ce.py and '
                    'main_linear.py print, as in the reference SupContrast code) for '
                    'main_ce and main_linear runs, and "test_acc" for main_prototype runs. '
                    'Several runs in one cell (a temperature sweep): the best is shown '
                    'and a note names its temperature.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('save_root', help='the --save_root of the runs, e.g. ./save')
    parser.add_argument('--table', type=int, choices=[1, 2, 3, 4], default=None,
                        help='print only this table (default: all four)')
    parser.add_argument('--markdown', action='store_true',
                        help='print GitHub Markdown tables instead of plain text')
    parser.add_argument('--all_batches', action='store_true',
                        help='also use main_ce.py runs whose global batch differs from the '
                             "paper's (512 CIFAR, 1024 ImageNet-100, 2048 ImageNet-1K)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.save_root):
        print(f'error: save root {args.save_root!r} is not a folder; pass the --save_root '
              'of your runs (default ./save)', file=sys.stderr)
        return 2
    table_numbers = [args.table] if args.table else [1, 2, 3, 4]
    render = render_markdown if args.markdown else render_text
    tables = build_tables(args.save_root, table_numbers, args.all_batches)
    print('\n\n'.join(render(table) for table in tables))
    return 0


if __name__ == '__main__':
    sys.exit(main())
