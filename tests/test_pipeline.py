"""End-to-end runs of the four main scripts on small real and generated data."""

import argparse
import json
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, run_script, write_image_folder

import data
import main_ce
import main_linear
import main_prototype
import main_supcon
import util
from networks.resnet_big import SupCEResNet, SupConResNet


def read_jsonl(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def supcon_args(save_root, *extra):
    return ['--dataset', 'digits', *TINY, '--epochs', '1', '--save_root', str(save_root),
            '--learning_rate', '0.05', '--temp', '0.1', *extra]


def trained_supcon(save_root):
    main_supcon.main(supcon_args(save_root))
    return os.path.join(main_supcon.parse_option(supcon_args(save_root)).save_folder,
                        'last.pth')


@pytest.mark.parametrize('loss', ['ce', 'normface', 'ntce', 'nonl'])
def test_main_ce_digits_one_epoch(tmp_path, capsys, loss):
    args = ['--dataset', 'digits', *TINY, '--epochs', '1', '--loss', loss,
            '--save_root', str(tmp_path), '--learning_rate', '0.1']
    main_ce.main(args)
    folder = main_ce.parse_option(args).save_folder

    assert os.path.isfile(os.path.join(folder, 'last.pth'))
    options = read_json(os.path.join(folder, 'args.json'))
    assert options['loss'] == loss
    assert options['iters_per_epoch'] == 23  # 1,437 training digits in batches of 64
    records = read_jsonl(os.path.join(folder, 'metrics.jsonl'))
    assert [record['epoch'] for record in records] == [1]
    assert 0 <= records[0]['test_acc'] <= 100
    results = read_json(os.path.join(folder, 'results.json'))
    assert results['best_acc'] == records[0]['test_acc']
    assert f'best accuracy: {results["best_acc"]:.2f}' in capsys.readouterr().out
    assert os.path.isdir(os.path.join(str(tmp_path), 'SupCon', 'digits_tensorboard',
                                      options['run_name']))


def test_main_ce_normalized_checkpoint_has_no_bias(tmp_path):
    args = ['--dataset', 'digits', *TINY, '--epochs', '1', '--loss', 'nonl',
            '--save_root', str(tmp_path)]
    main_ce.main(args)
    state = util.load_checkpoint(
        os.path.join(main_ce.parse_option(args).save_folder, 'last.pth'))['model']
    assert 'fc.weight' in state
    assert 'fc.bias' not in state


def test_main_ce_cifar_folder(tmp_path, cifar_folder):
    args = ['--dataset', 'cifar10', '--data_folder', cifar_folder, *TINY, '--epochs', '1',
            '--save_root', str(tmp_path), '--loss', 'ntce']
    main_ce.main(args)
    folder = main_ce.parse_option(args).save_folder
    assert read_json(os.path.join(folder, 'results.json'))['epochs'] == 1


def test_supcon_image_folder_then_probe_and_prototypes(tmp_path):
    train = write_image_folder(str(tmp_path / 'train'), seed=1)
    val = write_image_folder(str(tmp_path / 'val'), seed=2)
    data_args = ['--dataset', 'path', '--data_folder', train, '--val_folder', val,
                 '--mean', '(0.5, 0.5, 0.5)', '--std', '0.25,0.25,0.25']
    save = ['--save_root', str(tmp_path / 'save')]
    args = [*data_args, *TINY, '--epochs', '1', *save]
    main_supcon.main(args)
    ckpt = os.path.join(main_supcon.parse_option(args).save_folder, 'last.pth')

    linear_args = [*data_args, *TINY, '--epochs', '1', *save, '--ckpt', ckpt]
    main_linear.main(linear_args)
    prototype_args = [*data_args, '--num_workers', '0', '--size', '8', *save, '--ckpt', ckpt]
    main_prototype.main(prototype_args)

    for module, argv in ((main_linear, linear_args), (main_prototype, prototype_args)):
        results = read_json(os.path.join(module.parse_option(argv).save_folder,
                                         'results.json'))
        assert 0 <= results['test_acc'] <= 100


def test_supcon_chain_on_digits(tmp_path, capsys):
    ckpt = trained_supcon(tmp_path)
    for classifier in ('linear', 'normalized'):
        args = ['--dataset', 'digits', *TINY, '--epochs', '1', '--save_root', str(tmp_path),
                '--ckpt', ckpt, '--classifier', classifier]
        main_linear.main(args)
        options = read_json(os.path.join(main_linear.parse_option(args).save_folder,
                                         'args.json'))
        assert options['ckpt_opt']['head'] == 'mlp'
        assert options['ckpt_opt']['script'] == 'main_supcon'
        state = util.load_checkpoint(os.path.join(
            main_linear.parse_option(args).save_folder, 'last.pth'))['model']
        assert ('fc.bias' in state) == (classifier == 'linear')
    assert 'best accuracy:' in capsys.readouterr().out


def test_prototypes_equal_class_means(tmp_path):
    ckpt = trained_supcon(tmp_path)
    args = ['--dataset', 'digits', '--size', '8', '--num_workers', '0', '--batch_size', '100',
            '--save_root', str(tmp_path), '--ckpt', ckpt]
    main_prototype.main(args)
    folder = main_prototype.parse_option(args).save_folder
    saved = util.load_checkpoint(os.path.join(folder, 'last.pth'))
    results = read_json(os.path.join(folder, 'results.json'))
    assert results['forward_passes'] == 1437

    # Independent reference: loop over the training images one at a time.
    opt = argparse.Namespace(dataset='digits', size=8, data_folder='./datasets/')
    opt.n_cls, opt.mean, opt.std = data.dataset_stats(opt)
    dataset = data.build_dataset(opt, 'train', data.build_transform(opt, 'eval'))
    model = SupConResNet(name='resnet18', width=4, stem='cifar')
    model.load_state_dict(util.load_checkpoint(ckpt)['model'])
    model.eval()
    sums = torch.zeros(10, model.encoder(torch.zeros(1, 3, 8, 8)).shape[1], dtype=torch.float64)
    with torch.no_grad():
        for index in range(len(dataset)):
            image, label = dataset[index]
            feature = model.encoder(image.unsqueeze(0))[0].double()
            sums[label] += feature / feature.norm()
    expected = F.normalize(sums, dim=1).float()
    assert torch.allclose(saved['model']['fc.weight'], expected, atol=1e-5)

    # The test accuracy is the share of test images nearest (by cosine) to their prototype.
    test_set = data.build_dataset(opt, 'test', data.build_transform(opt, 'eval'))
    correct = 0
    with torch.no_grad():
        for index in range(len(test_set)):
            image, label = test_set[index]
            feature = F.normalize(model.encoder(image.unsqueeze(0)), dim=1)
            correct += int((feature @ expected.T).argmax() == label)
    assert results['test_acc'] == pytest.approx(100 * correct / len(test_set), abs=1e-6)


def final_state(module, args):
    module.main(args)
    folder = module.parse_option(args).save_folder
    return util.load_checkpoint(os.path.join(folder, 'last.pth'))


@pytest.mark.parametrize('module, extra', [
    (main_ce, ['--loss', 'nonl', '--learning_rate', '0.1']),
    (main_supcon, ['--learning_rate', '0.05']),
])
def test_resume_matches_uninterrupted_run(tmp_path, module, extra):
    common = ['--dataset', 'digits', *TINY, '--epochs', '2', '--save_freq', '1', *extra]
    whole = final_state(module, [*common, '--save_root', str(tmp_path / 'whole')])

    # The epoch-1 checkpoint of the whole run is what a run stopped after epoch 1 leaves.
    first = os.path.join(module.parse_option(
        [*common, '--save_root', str(tmp_path / 'whole')]).save_folder, 'ckpt_epoch_1.pth')
    resumed = final_state(module, [*common, '--save_root', str(tmp_path / 'resumed'),
                                   '--resume', first])

    assert resumed['epoch'] == whole['epoch'] == 2
    for key, value in whole['model'].items():
        assert torch.equal(resumed['model'][key], value), key
    folder = module.parse_option([*common, '--save_root', str(tmp_path / 'resumed')]).save_folder
    assert [record['epoch'] for record in read_jsonl(os.path.join(folder, 'metrics.jsonl'))] \
        == [2]


def reference_checkpoint(path, model_name='resnet18', data_parallel=True):
    """Write a checkpoint laid out like the SupContrast scripts write them."""
    model = SupConResNet(name=model_name)
    state = model.state_dict()
    if data_parallel:
        state = {key.replace('encoder.', 'encoder.module.', 1): value
                 for key, value in state.items()}
    options = argparse.Namespace(model=model_name, dataset='cifar10', batch_size=256,
                                 learning_rate=0.05, temp=0.07, method='SupCon',
                                 lr_decay_epochs=[700, 800, 900], cosine=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.save({'opt': options, 'model': state, 'optimizer': optimizer.state_dict(),
                'epoch': 1000}, path)
    return model


@pytest.mark.parametrize('data_parallel', [True, False])
def test_reference_checkpoint_loads(tmp_path, data_parallel):
    path = str(tmp_path / 'reference.pth')
    model = reference_checkpoint(path, data_parallel=data_parallel)
    opt = argparse.Namespace(ckpt=path, model=None, width=None, device=torch.device('cpu'))
    loaded, options = util.load_pretrained(opt)
    assert options['model'] == 'resnet18'
    assert options['head'] == 'mlp'
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_reference_checkpoint_runs_prototypes(tmp_path):
    path = str(tmp_path / 'reference.pth')
    reference_checkpoint(path)
    args = ['--dataset', 'digits', '--size', '8', '--num_workers', '0', '--batch_size', '256',
            '--save_root', str(tmp_path), '--ckpt', path]
    main_prototype.main(args)
    options = read_json(os.path.join(main_prototype.parse_option(args).save_folder,
                                     'args.json'))
    assert options['ckpt_opt']['method'] == 'SupCon'


def single_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_input_wrong_model_for_checkpoint(tmp_path):
    path = str(tmp_path / 'reference.pth')
    reference_checkpoint(path)
    line = single_error_line(run_script('main_prototype.py', '--dataset', 'digits', '--ckpt',
                                        path, '--model', 'resnet34', '--num_workers', '0'))
    assert 'missing keys' in line
    assert 'unexpected keys' in line


@pytest.mark.parametrize('script, args, expected', [
    ('main_ce.py', ['--dataset', 'path', '--data_folder', '/nonexistent/train', '--mean',
                    '(0.5,0.5,0.5)', '--std', '(0.2,0.2,0.2)'], '/nonexistent/train'),
    ('main_linear.py', ['--dataset', 'digits', '--ckpt', '/nonexistent/last.pth'],
     '/nonexistent/last.pth'),
    ('main_ce.py', ['--dataset', 'digits', '--loss', 'nonl', '--temp', '0'], '--temp'),
    ('main_supcon.py', ['--dataset', 'digits', '--temp', '-0.5'], '-0.5'),
    ('main_ce.py', ['--dataset', 'mnist'], 'mnist'),
    ('main_supcon.py', ['--dataset', 'digits', '--model', 'resnet999'], 'resnet999'),
    ('main_ce.py', ['--dataset', 'path', '--data_folder', '.', '--mean', '(0.5,0.5)',
                    '--std', '(0.2,0.2,0.2)'], '(0.5,0.5)'),
    ('main_prototype.py', ['--dataset', 'path', '--data_folder', '.', '--mean',
                           'import os', '--std', '(0.2,0.2,0.2)', '--ckpt', 'x.pth'],
     'import os'),
])
def test_bad_input_one_line_error(script, args, expected):
    line = single_error_line(run_script(script, *args, '--num_workers', '0'))
    assert expected in line


def test_bad_input_unreadable_checkpoint(tmp_path):
    path = tmp_path / 'broken.pth'
    path.write_bytes(b'this is not a checkpoint')
    line = single_error_line(run_script('main_prototype.py', '--dataset', 'digits', '--ckpt',
                                        str(path), '--num_workers', '0'))
    assert str(path) in line


def test_dry_run_writes_nothing(tmp_path, capsys):
    main_ce.main(['--dataset', 'cifar100', '--data_folder', str(tmp_path / 'missing'),
                  '--save_root', str(tmp_path / 'save'), '--model', 'resnet18', '--dry_run'])
    output = capsys.readouterr().out
    assert 'global batch: 256' in output
    assert not os.path.exists(tmp_path / 'save')


def test_nc_metrics_cli_matches_one_shot_call(tmp_path):
    import nc_metrics

    args = ['--dataset', 'digits', *TINY, '--epochs', '1', '--loss', 'nonl',
            '--save_root', str(tmp_path)]
    main_ce.main(args)
    ckpt = os.path.join(main_ce.parse_option(args).save_folder, 'last.pth')
    out = str(tmp_path / 'nc_train.json')
    nc_metrics.main(['--dataset', 'digits', '--size', '8', '--num_workers', '0',
                     '--ckpt', ckpt, '--out', out])
    written = read_json(out)
    assert written['loss'] == 'nonl'
    assert written['num_samples'] == 1437

    # Independent path: features image by image, then the one-shot function.
    opt = argparse.Namespace(dataset='digits', size=8, data_folder='./datasets/')
    opt.n_cls, opt.mean, opt.std = data.dataset_stats(opt)
    dataset = data.build_dataset(opt, 'train', data.build_transform(opt, 'eval'))
    model = SupCEResNet(name='resnet18', num_classes=10, width=4, normalized=True)
    model.load_state_dict(util.load_checkpoint(ckpt)['model'])
    model.eval()
    with torch.no_grad():
        images = torch.stack([dataset[index][0] for index in range(len(dataset))])
        features = model.encoder(images)
    expected = nc_metrics.compute_nc_metrics(features, torch.tensor(dataset.targets),
                                             weight=model.fc.weight.detach(), num_classes=10)
    assert set(written['metrics']) == set(expected)
    for key, value in expected.items():
        assert written['metrics'][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_nc_metrics_cli_supcon_prototypes_align(tmp_path):
    import nc_metrics

    ckpt = trained_supcon(tmp_path)
    common = ['--dataset', 'digits', '--size', '8', '--num_workers', '0', '--ckpt', ckpt]
    without_probe = nc_metrics.main(common)
    assert without_probe['metrics']['weight_alignment'] == pytest.approx(0.0, abs=1e-9)

    prototype_args = [*common, '--save_root', str(tmp_path)]
    main_prototype.main(prototype_args)
    prototypes = os.path.join(main_prototype.parse_option(prototype_args).save_folder,
                              'last.pth')
    with_prototypes = nc_metrics.main([*common, '--classifier', prototypes])
    assert with_prototypes['metrics']['weight_alignment'] == pytest.approx(0.0, abs=1e-6)
    assert with_prototypes['classifier'] == prototypes
