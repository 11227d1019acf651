"""Classify with class-mean prototypes of a pre-trained encoder: no training at all.

One pass over the training set without augmentation sums the L2-normalised features of
each class; the normalised class means mu_hat_c are the rows of a bias-free classifier,
and a test image gets the class of the prototype with the largest cosine. Theorem 4.1
of "Neural Collapse by Design: Learning Class Prototypes on the Hypersphere" shows that
SupCon's minimisers coincide with those of a loss over exactly these prototypes, so they
replace linear probing (T x N forward passes) with N.

The prototypes are saved as a classifier checkpoint in the format main_linear.py
writes (a LinearClassifier with normalized=True), so nc_metrics.py --classifier reads it.

One process:
    python main_prototype.py --dataset cifar100 --ckpt save/SupCon/cifar100_models/RUN/last.pth
One node with 4 GPUs (class sums and counts are summed over processes):
    torchrun --standalone --nproc_per_node=4 main_prototype.py --dataset imagenet100 \\
        --data_folder /data/imagenet --size 224 --ckpt RUN/last.pth
"""

import os
import sys

import torch

import data
import util
from networks.resnet_big import LinearClassifier


def parse_option(argv=None):
    parser = util.ArgumentParser(
        description='Class-mean prototype classifier of a pre-trained encoder.')
    data.add_data_args(parser)
    util.add_pretrained_args(parser)
    group = parser.add_argument_group('devices')
    group.add_argument('--batch_size', type=int, default=256,
                       help='images per process and forward pass')
    util.add_device_args(group)
    util.add_run_args(parser)
    opt = parser.parse_args(argv)

    util.check_positive(opt.batch_size, '--batch_size')
    util.check_positive(opt.width, '--width')
    util.check_model_name(opt.model)
    opt.n_cls, opt.mean, opt.std = data.dataset_stats(opt)
    opt.script = 'main_prototype'
    opt.world_size = int(os.environ.get('WORLD_SIZE', 1))
    opt.global_batch = opt.batch_size * opt.world_size
    parent = os.path.basename(os.path.dirname(os.path.abspath(opt.ckpt)))
    stem = os.path.splitext(os.path.basename(opt.ckpt))[0]
    opt.run_name = f'Prototype_{opt.feature}_{parent}_{stem}_trial_{opt.trial}'
    util.set_save_folders(opt)
    return opt



@torch.no_grad()
def compute_prototypes(encode, loader, num_classes, opt):
    """Return (prototypes [K, dim], images seen): normalised means of unit features.

    Class sums and counts are summed over processes, so every rank gets the same
    prototypes from the whole training set.
    """
    sums, counts = None, torch.zeros(num_classes, dtype=torch.float64, device=opt.device)
    for features, labels in util.iterate_features(encode, loader, opt):
        unit = torch.nn.functional.normalize(features.double(), dim=1)
        if sums is None:
            sums = torch.zeros(num_classes, unit.shape[1], dtype=torch.float64,
                               device=opt.device)
        sums.index_add_(0, labels, unit)
        counts += torch.bincount(labels, minlength=num_classes).double()
    if sums is None:
        raise util.UsageError('the training set is empty; check --data_folder')
    util.all_reduce_sum(sums)
    util.all_reduce_sum(counts)
    empty = int((counts == 0).sum())
    if empty:
        print(f'warning: {empty} classes have no training images; their prototypes are zero '
              'and their cosine with every feature is 0')
    return util.class_prototypes(sums, counts).float(), int(counts.sum().item())


def main(argv=None):
    opt = parse_option(argv)
    util.init_distributed(opt)
    util.set_seed(opt.seed)
    if opt.dry_run:
        options = util.pretrained_options({'script': 'dry run'}, opt)
        classifier = LinearClassifier(name=options['model'], num_classes=opt.n_cls or 1,
                                      width=options['width'], normalized=True,
                                      feat_dim=util.classifier_input_dim(options, opt.feature))
        data.build_transform(opt, 'eval')
        opt.model, opt.width = options['model'], options['width']
        util.print_plan(opt, classifier)
        return

    # pre-trained encoder
    model, encode = util.load_encoder(opt)

    # data, without augmentation
    transform = data.build_transform(opt, 'eval')
    train_loader = util.make_eval_loader(data.build_dataset(opt, 'train', transform), opt)
    test_loader = util.make_eval_loader(data.build_dataset(opt, 'test', transform), opt)

    # one pass over the training set, then the test set
    timer = util.Timer()
    prototypes, forward_passes = compute_prototypes(encode, train_loader, opt.n_cls, opt)
    classifier = LinearClassifier(name=opt.model, num_classes=opt.n_cls, width=opt.width,
                                  normalized=True, feat_dim=prototypes.shape[1])
    classifier.fc.weight.data.copy_(prototypes)
    classifier = classifier.to(opt.device).eval()
    seconds = timer.seconds()
    test_acc, test_images = util.evaluate(lambda images: classifier(encode(images)),
                                          test_loader, opt)

    # records, in the layout main_linear.py writes
    util.print_plan(opt, classifier)
    recorder = util.RunRecorder(opt)
    util.save_epoch(classifier, None, opt, 1)
    recorder.finish(opt, {'script': 'main_prototype', 'dataset': opt.dataset,
                          'feature': opt.feature, 'ckpt': opt.ckpt, 'epochs': 1,
                          'test_acc': test_acc, 'best_acc': test_acc,
                          'forward_passes': forward_passes, 'seconds': seconds})
    print(f'prototypes from {forward_passes} training images (one forward pass each) in '
          f'{seconds:.1f} s; {test_images} test images')
    print(f'run folder: {opt.save_folder}')
    print(f'test accuracy: {test_acc:.2f}')


if __name__ == '__main__':
    util.run_main(lambda: main(sys.argv[1:]))
