"""Summarise the quick start's runs: a miniature of Tables 1 to 3 and summary.json.

Reads the run folders under SAVE_ROOT/SupCon/digits_models (args.json, results.json,
and for classifier learning the last NC record of metrics.jsonl, measured on the whole
training set) and SAVE_ROOT/convergence.json, writes SAVE_ROOT/summary.json with one
entry per method, and prints the tables and whether each claim of the quick start
holds in this run.

    python scripts/quickstart_summary.py save/quickstart
"""

import argparse
import glob
import json
import os
import sys

CLASSIFIER_LEARNING = ('ce', 'normface', 'ntce', 'nonl')
LABELS = {'ce': 'CE', 'normface': 'NormFace', 'ntce': 'NTCE', 'nonl': 'NONL',
          'supcon_linear': 'SupCon + linear probing',
          'supcon_normlinear': 'SupCon + normalized linear probing',
          'supcon_prototype': 'SupCon + class-mean prototypes'}
NC_COLUMNS = (('erank_intra', 'Intra ER'), ('erank_inter', 'Inter ER'),
              ('erank_weights', 'Weights ER'), ('weight_alignment', 'Weight align'),
              ('instance_alignment', 'Inst. align'), ('mir', 'MIR'), ('hdr', 'HDR'))


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def read_jsonl(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def method_key(args):
    """Map a run's args.json to its summary key, or None for runs that have none."""
    if args.get('script') == 'main_ce':
        return args.get('loss')
    if args.get('script') == 'main_linear':
        return 'supcon_linear' if args.get('classifier') == 'linear' else 'supcon_normlinear'
    if args.get('script') == 'main_prototype':
        return 'supcon_prototype'
    return None


def collect(save_root):
    """Return {method: entry} from the finished runs; a later run replaces an earlier one."""
    summary = {}
    pattern = os.path.join(save_root, 'SupCon', 'digits_models', '*', 'results.json')
    for results_path in sorted(glob.glob(pattern), key=os.path.getmtime):
        folder = os.path.dirname(results_path)
        args = read_json(os.path.join(folder, 'args.json'))
        key = method_key(args)
        if key is None:
            continue
        results = read_json(results_path)
        entry = {'test_acc': results['test_acc'], 'best_acc': results['best_acc'],
                 'run': folder}
        if key == 'supcon_prototype':
            entry['forward_passes'] = results['forward_passes']
        if key in CLASSIFIER_LEARNING:
            nc_records = [record for record in read_jsonl(os.path.join(folder, 'metrics.jsonl'))
                          if 'nc' in record]
            if nc_records:
                entry['nc'] = nc_records[-1]['nc']
                entry['nc_iter'] = nc_records[-1]['iter']
        summary[key] = entry
    return summary


def check_claims(summary):
    """Return (claim, holds) pairs for the quick start's claims; missing data fails them."""
    def acc(key):
        return summary.get(key, {}).get('test_acc', float('nan'))

    def nc(key, metric):
        return summary.get(key, {}).get('nc', {}).get(metric, float('nan'))

    return [
        ('CE test accuracy >= 95%', acc('ce') >= 95),
        ('NONL test accuracy >= 95%', acc('nonl') >= 95),
        ('prototype test accuracy >= 95%', acc('supcon_prototype') >= 95),
        ('prototypes within 2 points of linear probing',
         abs(acc('supcon_prototype') - acc('supcon_linear')) <= 2),
        ('NONL inter-class effective rank >= 8.5 (K-1 = 9)', nc('nonl', 'erank_inter') >= 8.5),
        ('NONL intra-class effective rank below CE',
         nc('nonl', 'erank_intra') < nc('ce', 'erank_intra')),
        ('NONL weight alignment below CE',
         nc('nonl', 'weight_alignment') < nc('ce', 'weight_alignment')),
    ]


def print_tables(summary, convergence):
    print('\nTable 1 in miniature: test accuracy (%) on digits, final epoch')
    for key, label in LABELS.items():
        if key in summary:
            extra = ''
            if key == 'supcon_prototype':
                extra = f'  ({summary[key]["forward_passes"]} forward passes, no training)'
            print(f'  {label:<36} {summary[key]["test_acc"]:6.2f}{extra}')

    print('\nTable 2 in miniature: NC metrics of the training set')
    print('  ' + ' ' * 10 + ''.join(f'{title:>13}' for _, title in NC_COLUMNS))
    for key in CLASSIFIER_LEARNING:
        metrics = summary.get(key, {}).get('nc')
        if metrics:
            cells = ''.join(f'{metrics[metric]:13.3f}' for metric, _ in NC_COLUMNS)
            print(f'  {LABELS[key]:<10}{cells}')

    if convergence:
        table = convergence['table3']
        for part, title in (('I', 'iterations to the 95% NC threshold, share of the run'),
                            ('II', "iterations to CE's final value, share of the iteration "
                                   'where CE settles')):
            print(f'\nTable 3 ({part}) in miniature: {title}')
            print('  ' + ' ' * 10 + ''.join(f'{m[:12]:>13}' for m in convergence['metrics']))
            for label, row in table[part].items():
                cells = ''.join(f'{"never":>13}' if row.get(m) is None else
                                f'{100 * row[m]:12.1f}%' for m in convergence['metrics'])
                print(f'  {label:<10}{cells}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('save_root', help='the SAVE_ROOT of scripts/quickstart.sh')
    opt = parser.parse_args(argv)
    if not os.path.isdir(opt.save_root):
        print(f'error: {opt.save_root} does not exist; run scripts/quickstart.sh first',
              file=sys.stderr)
        return 2

    summary = collect(opt.save_root)
    convergence_path = os.path.join(opt.save_root, 'convergence.json')
    convergence = read_json(convergence_path) if os.path.exists(convergence_path) else None
    if convergence:
        summary['convergence'] = convergence['table3']
    claims = check_claims(summary)
    summary['claims'] = {claim: bool(holds) for claim, holds in claims}
    with open(os.path.join(opt.save_root, 'summary.json'), 'w') as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)

    print_tables(summary, convergence)
    print('\nClaims:')
    for claim, holds in claims:
        print(f'  [{"holds" if holds else "FAILS"}] {claim}')
    print(f'\nwrote {os.path.join(opt.save_root, "summary.json")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
