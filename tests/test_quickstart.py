"""The quick start end to end with one epoch per run, and its claim checks."""

import importlib.util
import json
import os
import subprocess
import sys

from conftest import ROOT


def load_summary_module():
    path = os.path.join(ROOT, 'scripts', 'quickstart_summary.py')
    spec = importlib.util.spec_from_file_location('quickstart_summary', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_one_epoch_writes_summary(tmp_path):
    save_root = tmp_path / 'quickstart'
    env = {**os.environ, 'SAVE_ROOT': str(save_root), 'PYTHON': sys.executable,
           'EPOCHS': '1', 'PROBE_EPOCHS': '1', 'OMP_NUM_THREADS': '1'}
    result = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'quickstart.sh')],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    with open(save_root / 'summary.json') as handle:
        summary = json.load(handle)
    methods = ('ce', 'normface', 'ntce', 'nonl', 'supcon_linear', 'supcon_normlinear',
               'supcon_prototype')
    for method in methods:
        assert 0 <= summary[method]['test_acc'] <= 100, method
    for method in methods[:4]:
        assert 'erank_inter' in summary[method]['nc'], method
    assert summary['supcon_prototype']['forward_passes'] == 1437
    assert set(summary['convergence']) == {'I', 'II'}
    assert len(summary['claims']) == 7
    assert (save_root / 'figure1.png').stat().st_size > 0
    assert 'Table 1 in miniature' in result.stdout


def test_claims_follow_the_numbers():
    summary_module = load_summary_module()
    nc_ce = {'erank_intra': 6.0, 'erank_inter': 8.0, 'weight_alignment': 0.6}
    nc_nonl = {'erank_intra': 3.0, 'erank_inter': 8.9, 'weight_alignment': 0.1}
    summary = {'ce': {'test_acc': 96.0, 'nc': nc_ce}, 'nonl': {'test_acc': 97.0, 'nc': nc_nonl},
               'supcon_linear': {'test_acc': 97.0}, 'supcon_prototype': {'test_acc': 95.5}}
    claims = dict(summary_module.check_claims(summary))
    assert all(claims.values())

    summary['supcon_prototype']['test_acc'] = 94.0
    summary['nonl']['nc'] = {**nc_nonl, 'erank_intra': 7.0}
    claims = dict(summary_module.check_claims(summary))
    assert not claims['prototype test accuracy >= 95%']
    assert not claims['NONL intra-class effective rank below CE']
    assert claims['NONL weight alignment below CE']


def test_claims_fail_for_missing_runs():
    claims = dict(load_summary_module().check_claims({}))
    assert not any(claims.values())
