"""Train a classifier on the frozen encoder of a pre-trained checkpoint (linear probing).

--classifier linear trains a biased linear layer with cross-entropy, as linear probing
usually does; --classifier normalized trains bias-free prototypes with the NormFace loss
at --temp: the "normalized linear probing" of "Neural Collapse by Design: Learning Class
Prototypes on the Hypersphere". The encoder stays in eval mode.

One process (CPU or one GPU):
    python main_linear.py --dataset cifar100 --ckpt save/SupCon/cifar100_models/RUN/last.pth \\
        --learning_rate 5 --lr_decay_rate 0.2 --lr_decay_epochs 60,75,90 --epochs 100
One node with 4 GPUs (--batch_size is per GPU):
    torchrun --standalone --nproc_per_node=4 main_linear.py --dataset imagenet100 \\
        --data_folder /data/imagenet --size 224 --ckpt RUN/last.pth --learning_rate 2.0 \\
        --lr_decay_rate 0.2 --lr_decay_epochs 30,60,80 --epochs 90
"""

import os
import sys

import torch
import torch.nn.functional as F

import data
import util
from losses import NormFaceLoss
from networks.resnet_big import LinearClassifier


def parse_option(argv=None):
    parser = util.ArgumentParser(description='Linear probing of a frozen encoder.')
    util.add_training_args(parser, epochs=100, learning_rate=0.1, lr_decay_epochs='60,75,90',
                           lr_decay_rate=0.2, weight_decay=0.0)
    data.add_data_args(parser)
    util.add_pretrained_args(parser)
    group = parser.add_argument_group('classifier')
    group.add_argument('--classifier', choices=['linear', 'normalized'], default='linear',
                       help='linear: biased layer and cross-entropy; normalized: bias-free '
                            'prototypes trained with NormFace')
    group.add_argument('--temp', type=float, default=0.1,
                       help='NormFace temperature tau for --classifier normalized')
    opt = parser.parse_args(argv)

    util.check_temperature(opt)
    opt.n_cls, opt.mean, opt.std = data.dataset_stats(opt)
    parent = os.path.basename(os.path.dirname(os.path.abspath(opt.ckpt)))
    stem = os.path.splitext(os.path.basename(opt.ckpt))[0]
    util.finish_training_options(
        opt, 'main_linear',
        f'Linear_{opt.classifier}_{parent}_{stem}' + '_lr_{base_learning_rate}_bsz_{batch_size}'
        '_trial_{trial}')
    return opt


def set_loader(opt):
    train_dataset = data.build_dataset(opt, 'train', data.build_transform(opt, 'classifier'))
    test_dataset = data.build_dataset(opt, 'test', data.build_transform(opt, 'eval'))
    return util.make_train_loader(train_dataset, opt), util.make_eval_loader(test_dataset, opt)


def set_classifier(opt, pretrained_options):
    classifier = LinearClassifier(
        name=pretrained_options['model'], num_classes=opt.n_cls,
        width=pretrained_options['width'], normalized=opt.classifier == 'normalized',
        feat_dim=util.classifier_input_dim(pretrained_options, opt.feature))
    criterion = NormFaceLoss(temperature=opt.temp) if opt.classifier == 'normalized' else None
    return classifier, criterion


def train(train_loader, encode, classifier, criterion, optimizer, epoch, opt):
    """Train the classifier for one epoch on frozen features; return (loss, accuracy)."""
    classifier.train()
    batch_time, data_time = util.AverageMeter(), util.AverageMeter()
    losses, top1 = util.AverageMeter(), util.AverageMeter()

    timer = util.Timer()
    for idx, (features, labels) in enumerate(util.iterate_features(encode, train_loader, opt)):
        data_time.update(timer.seconds())
        util.warmup_learning_rate(opt, epoch, idx, len(train_loader), optimizer)

        logits = classifier(features)
        if criterion is None:
            loss = F.cross_entropy(logits, labels)
        else:
            loss = criterion(features, labels, util.unwrap(classifier).fc.weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        losses.update(loss.item(), labels.shape[0])
        top1.update((logits.argmax(dim=1) == labels).float().mean().item() * 100,
                    labels.shape[0])
        batch_time.update(timer.seconds())
        timer = util.Timer()
        if (idx + 1) % opt.print_freq == 0:
            util.print_progress(epoch, idx, len(train_loader), batch_time, data_time, losses,
                                extra=f'Acc@1 {top1.val:.2f} ({top1.avg:.2f})\t')
    return losses.avg, top1.avg


def main(argv=None):
    opt = parse_option(argv)
    util.init_distributed(opt)
    util.set_seed(opt.seed)
    if opt.dry_run:
        options = util.pretrained_options({'script': 'dry run'}, opt)
        classifier, _ = set_classifier(opt, options)
        data.build_transform(opt, 'classifier')
        opt.model, opt.width = options['model'], options['width']
        util.print_plan(opt, classifier)
        return

    # pre-trained encoder
    model, encode = util.load_encoder(opt)

    # data
    train_loader, test_loader = set_loader(opt)
    opt.iters_per_epoch = len(train_loader)
    opt.total_iters = opt.epochs * len(train_loader)

    # classifier, optimiser, resume
    classifier, criterion = set_classifier(opt, opt.ckpt_opt)
    classifier = util.wrap_model(classifier, opt)
    optimizer = util.set_optimizer(opt, classifier)
    start_epoch, best_acc, test_acc = 1, 0.0, 0.0
    if opt.resume:
        start_epoch, checkpoint = util.resume_from(opt, classifier, optimizer)
        best_acc = checkpoint.get('best_acc', 0.0)
        test_acc = checkpoint.get('test_acc', 0.0)
    util.print_plan(opt, classifier)
    recorder = util.RunRecorder(opt, resume_epoch=start_epoch - 1 if opt.resume else None)

    # training
    for epoch in range(start_epoch, opt.epochs + 1):
        util.seed_epoch(opt, epoch)
        util.set_loader_epoch(train_loader, epoch)
        util.adjust_learning_rate(opt, optimizer, epoch)
        timer = util.Timer()
        loss, train_acc = train(train_loader, encode, classifier, criterion, optimizer, epoch,
                                opt)
        seconds = timer.seconds()

        probe = util.unwrap(classifier).eval()
        test_acc, _ = util.evaluate(lambda images: probe(encode(images)), test_loader, opt)
        best_acc = max(best_acc, test_acc)
        print(f'epoch {epoch}, total time {seconds:.2f}, loss {loss:.4f}, train accuracy '
              f'{train_acc:.2f}, test accuracy {test_acc:.2f}', flush=True)
        recorder.log({'epoch': epoch, 'loss': loss, 'lr': optimizer.param_groups[0]['lr'],
                      'seconds': seconds, 'train_acc': train_acc, 'test_acc': test_acc})
        util.save_epoch(classifier, optimizer, opt, epoch, best_acc=best_acc,
                        test_acc=test_acc)

    recorder.finish(opt, {'script': 'main_linear', 'dataset': opt.dataset,
                          'classifier': opt.classifier, 'feature': opt.feature,
                          'ckpt': opt.ckpt, 'epochs': opt.epochs, 'test_acc': test_acc,
                          'best_acc': best_acc})
    print(f'run folder: {opt.save_folder}')
    print(f'best accuracy: {best_acc:.2f}')


if __name__ == '__main__':
    util.run_main(lambda: main(sys.argv[1:]))
