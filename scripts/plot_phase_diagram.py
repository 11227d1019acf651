"""Draw Figure 2: accuracy over temperature x batch size, one heat map per loss and data set.

Figure 2 is the phase diagram of "Neural Collapse by Design: Learning Class Prototypes on
the Hypersphere" (the paper), appendix A.3.

Reads the finished main_ce.py runs under SAVE_ROOT (args.json and results.json), as
scripts/figure2_sweep.sh writes them, and draws one panel per loss (columns: NormFace,
NTCE, NONL) and data set (rows: CIFAR-10, CIFAR-100). In each panel the temperature is
on x, the global batch on y and the accuracy is the colour, with white iso-accuracy
lines, a red dashed outline around the top 10% of the panel's runs, and one marker per
run whose size grows with its accuracy. Each row has its own colour range, as in the
paper. The same numbers are printed as one text table per panel.

Usage:
  python scripts/plot_phase_diagram.py ./save --out ./save/figure2/figure2.png
"""

import argparse
import math
import os
import sys

import numpy as np

from collect_results import DATASET_LABELS, as_number, discover, global_batch

LOSS_LABELS = {'ce': 'CE', 'normface': 'NormFace', 'ntce': 'NTCE', 'nonl': 'NONL'}


def collect_grid(runs, datasets, losses, metric, epochs=None):
    """Return {(dataset, loss): {(temp, batch): [accuracies]}} from finished main_ce runs."""
    grid = {(dataset, loss): {} for dataset in datasets for loss in losses}
    for run in runs:
        args = run.args
        if args.get('script') != 'main_ce' or run.results is None:
            continue
        key = (args.get('dataset'), args.get('loss'))
        if key not in grid:
            continue
        if epochs is not None and args.get('epochs') != epochs:
            continue
        accuracy = as_number(run.results.get(metric))
        temperature = as_number(args.get('temp'))
        if accuracy is None or temperature is None:
            continue
        cell = (temperature, int(global_batch(args)))
        grid[key].setdefault(cell, []).append(accuracy)
    return grid


def panel_matrix(cells, temperatures, batches):
    """Return the [batches, temperatures] accuracy matrix, NaN where no run exists.

    A cell with several runs (repeated trials) shows the best of them.
    """
    matrix = np.full((len(batches), len(temperatures)), np.nan)
    for (temperature, batch), values in cells.items():
        matrix[batches.index(batch), temperatures.index(temperature)] = max(values)
    return matrix


def x_positions(temperatures, x_scale):
    if x_scale == 'log':
        return np.log10(np.asarray(temperatures, dtype=float))
    return np.arange(len(temperatures), dtype=float)


def cell_edges(centres):
    """Return the cell boundaries around sorted centres, half-way between neighbours."""
    centres = np.asarray(centres, dtype=float)
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middle = (centres[1:] + centres[:-1]) / 2
    first = centres[0] - (middle[0] - centres[0])
    last = centres[-1] + (centres[-1] - middle[-1])
    return np.concatenate([[first], middle, [last]])


def top_threshold(matrix, fraction=0.1):
    """Return the accuracy at or above which a run is in the top `fraction` of the panel."""
    values = matrix[np.isfinite(matrix)]
    return float(np.quantile(values, 1.0 - fraction)) if values.size else math.nan


def draw_panel(ax, matrix, temperatures, batches, x_scale, vmin, vmax):
    """Draw one heat map with iso-lines, the top-10% outline and one marker per run."""
    xs = x_positions(temperatures, x_scale)
    ys = np.arange(len(batches), dtype=float)
    masked = np.ma.masked_invalid(matrix)
    image = ax.pcolormesh(cell_edges(xs), cell_edges(ys), masked, cmap='viridis',
                          vmin=vmin, vmax=vmax, shading='flat')

    finite = np.isfinite(matrix)
    grid_x, grid_y = np.meshgrid(xs, ys)
    if matrix.shape[0] >= 2 and matrix.shape[1] >= 2 and finite.sum() >= 4:
        values = matrix[finite]
        if values.max() > values.min():
            levels = np.linspace(values.min(), values.max(), 7)[1:-1]
            lines = ax.contour(grid_x, grid_y, masked, levels=levels, colors='white',
                               linewidths=0.8)
            ax.clabel(lines, fmt='%.1f', fontsize=6)
        # Contour the 0/1 mask of the top cells at 0.5: the line runs half-way between a
        # top cell and its neighbours.
        top = np.where(finite, matrix >= top_threshold(matrix), False).astype(float)
        if 0 < top.sum() < top.size:
            ax.contour(grid_x, grid_y, top, levels=[0.5], colors='red', linestyles='--',
                       linewidths=1.5)

    rows, columns = np.nonzero(finite)
    if rows.size:
        values = matrix[rows, columns]
        span = max(values.max() - values.min(), 1e-9)
        sizes = 10 + 60 * (values - values.min()) / span
        ax.scatter(xs[columns], ys[rows], s=sizes, facecolors='none', edgecolors='black',
                   linewidths=0.6)

    ax.set_xticks(xs)
    ax.set_xticklabels([f'{t:g}' for t in temperatures], rotation=90, fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels([str(b) for b in batches], fontsize=7)
    ax.set_xlabel('temperature' + (' (log scale)' if x_scale == 'log' else ''))
    ax.set_ylabel('global batch size')
    return image


def format_table(title, matrix, temperatures, batches):
    """Return a text table of one panel: batches as rows, temperatures as columns."""
    lines = [title]
    header = ['batch'] + [f'{t:g}' for t in temperatures]
    rows = [header]
    for i, batch in enumerate(batches):
        row = [str(batch)]
        for j in range(len(temperatures)):
            value = matrix[i, j]
            row.append('' if math.isnan(value) else f'{value:.2f}')
        rows.append(row)
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    for row in rows:
        lines.append('  '.join(text.rjust(width) for text, width in zip(row, widths)))
    finite = np.isfinite(matrix)
    if finite.any():
        i, j = np.unravel_index(np.nanargmax(matrix), matrix.shape)
        lines.append(f'best: {matrix[i, j]:.2f} at temperature {temperatures[j]:g}, '
                     f'batch {batches[i]}; top 10% from {top_threshold(matrix):.2f}')
    return '\n'.join(lines)


def plot(grid, datasets, losses, x_scale, out_path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(datasets), len(losses), squeeze=False, layout='constrained',
                                figsize=(4.2 * len(losses) + 1, 3.6 * len(datasets)))
    tables = []
    for row, dataset in enumerate(datasets):
        panels = {}
        for loss in losses:
            cells = grid[(dataset, loss)]
            temperatures = sorted({t for t, _ in cells})
            batches = sorted({b for _, b in cells})
            panels[loss] = (panel_matrix(cells, temperatures, batches), temperatures, batches)
        row_values = [m[np.isfinite(m)] for m, _, _ in panels.values()]
        row_values = np.concatenate(row_values) if row_values else np.array([])
        vmin = float(row_values.min()) if row_values.size else 0.0
        vmax = float(row_values.max()) if row_values.size else 1.0
        image = None
        for column, loss in enumerate(losses):
            matrix, temperatures, batches = panels[loss]
            ax = axes[row][column]
            title = f'{LOSS_LABELS.get(loss, loss)}, {DATASET_LABELS.get(dataset, dataset)}'
            ax.set_title(title, fontsize=9)
            tables.append(format_table(title, matrix, temperatures, batches))
            if matrix.size == 0:
                ax.text(0.5, 0.5, 'no runs', ha='center', va='center',
                        transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            image = draw_panel(ax, matrix, temperatures, batches, x_scale, vmin, vmax)
        if image is not None:
            figure.colorbar(image, ax=list(axes[row]), label='accuracy (%)', shrink=0.9)

    folder = os.path.dirname(out_path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    figure.savefig(out_path, dpi=150, bbox_inches='tight')
    plt.close(figure)
    return tables


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Figure 2: accuracy phase diagrams over temperature and batch size from '
                    'the main_ce.py runs of scripts/figure2_sweep.sh.')
    parser.add_argument('save_root', help='the --save_root of the runs, e.g. ./save')
    parser.add_argument('--out', default=None,
                        help='PNG file to write (default SAVE_ROOT/figure2/figure2.png)')
    parser.add_argument('--metric', choices=['best_acc', 'test_acc'], default='best_acc',
                        help='results.json accuracy to plot: best over evaluated epochs '
                             '(default, as Table 1) or the final epoch')
    parser.add_argument('--losses', default='normface,ntce,nonl',
                        help='comma-separated losses, one panel column each')
    parser.add_argument('--datasets', default='cifar10,cifar100',
                        help='comma-separated data sets, one panel row each')
    parser.add_argument('--x_scale', choices=['categorical', 'log'], default='categorical',
                        help='temperature axis: evenly spaced grid values or a log scale')
    parser.add_argument('--epochs', type=int, default=None,
                        help='use only runs trained for this many epochs (default: all)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.save_root):
        print(f'error: save root {args.save_root!r} is not a folder; pass the --save_root '
              'of the sweep (default ./save)', file=sys.stderr)
        return 2
    losses = [name for name in args.losses.split(',') if name]
    datasets = [name for name in args.datasets.split(',') if name]
    runs, _ = discover(args.save_root)
    grid = collect_grid(runs, datasets, losses, args.metric, args.epochs)
    if not any(grid.values()):
        print(f'error: no finished main_ce.py runs of {", ".join(losses)} on '
              f'{", ".join(datasets)} under {args.save_root}; run scripts/figure2_sweep.sh '
              'first', file=sys.stderr)
        return 1
    out_path = args.out or os.path.join(args.save_root, 'figure2', 'figure2.png')
    tables = plot(grid, datasets, losses, args.x_scale, out_path)
    print('\n\n'.join(tables))
    print(f'\nfigure: {out_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
