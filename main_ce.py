"""Train an encoder and its classifier with cross-entropy or a normalised softmax loss.

The equation numbers are those of "Neural Collapse by Design: Learning Class Prototypes
on the Hypersphere". --loss ce is the usual biased linear classifier (eq. 1). normface,
ntce and nonl keep a bias-free prototype matrix W [K, h] and train through cosine logits
(eqs. 3 to 5), predicting the class of the nearest prototype.

One process (CPU or one GPU):
    python main_ce.py --dataset cifar100 --model resnet18 --loss nonl --temp 0.1 \\
        --batch_size 512 --learning_rate 0.2 --epochs 1000 --cosine
One node with 4 GPUs (--batch_size is per GPU):
    torchrun --standalone --nproc_per_node=4 main_ce.py --dataset imagenet100 \\
        --data_folder /data/imagenet --model resnet50 --size 224 --loss nonl --temp 0.2 \\
        --batch_size 256 --learning_rate 0.1 --lr_scaling linear --cosine --warm --syncBN
Two nodes with 8 GPUs each (run on every node, with its own --node_rank):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 main_ce.py ...
"""

import sys

import torch
import torch.nn.functional as F

import data
import nc_metrics
import util
from losses import NONLLoss, NTCELoss, NormFaceLoss
from networks.resnet_big import SupCEResNet, stem_for_size

NORMALISED_LOSSES = {'normface': NormFaceLoss, 'ntce': NTCELoss, 'nonl': NONLLoss}


def parse_option(argv=None):
    parser = util.ArgumentParser(
        description='Classifier learning with cross-entropy, NormFace, NTCE or NONL.')
    util.add_training_args(parser, epochs=500, learning_rate=0.2,
                           lr_decay_epochs='350,400,450')
    util.add_model_args(parser)
    data.add_data_args(parser)
    group = parser.add_argument_group('loss')
    group.add_argument('--loss', choices=['ce', *NORMALISED_LOSSES], default='ce',
                       help='ce: biased linear classifier; normface, ntce, nonl: bias-free '
                            'prototypes on the unit hypersphere')
    group.add_argument('--temp', type=float, default=0.1,
                       help='temperature tau of the normalised losses (ignored by ce; paper: '
                            'best of 0.07..1.0 on CIFAR, 0.2 on ImageNet)')
    nc_metrics.add_monitor_args(parser)
    opt = parser.parse_args(argv)

    util.check_temperature(opt)
    opt.n_cls, opt.mean, opt.std = data.dataset_stats(opt)
    util.finish_training_options(
        opt, 'main_ce',
        'SupCE_{dataset}_{model}_{loss}_lr_{base_learning_rate}_decay_{weight_decay}'
        '_bsz_{batch_size}_temp_{temp}_trial_{trial}')
    return opt


def set_loader(opt):
    train_dataset = data.build_dataset(opt, 'train', data.build_transform(opt, 'classifier'))
    test_dataset = data.build_dataset(opt, 'test', data.build_transform(opt, 'eval'))
    return util.make_train_loader(train_dataset, opt), util.make_eval_loader(test_dataset, opt)


def set_model(opt):
    model = SupCEResNet(name=opt.model, num_classes=opt.n_cls, width=opt.width,
                        stem=stem_for_size(opt.size), normalized=opt.loss != 'ce')
    criterion = None if opt.loss == 'ce' else NORMALISED_LOSSES[opt.loss](temperature=opt.temp)
    return model, criterion


def compute_loss(model, criterion, images, labels, opt):
    """Return (loss, logits) of one batch; the normalised losses see W directly."""
    with util.autocast(opt):
        features, logits = model(images, return_features=True)
    if criterion is None:
        loss = F.cross_entropy(logits.float(), labels)
    else:
        loss = criterion(features, labels, util.unwrap(model).fc.weight)
    return loss, logits


def train(train_loader, model, criterion, optimizer, epoch, opt, monitor=None):
    """Train for one epoch; return (mean loss, training accuracy in percent)."""
    model.train()
    batch_time, data_time = util.AverageMeter(), util.AverageMeter()
    losses, top1 = util.AverageMeter(), util.AverageMeter()

    timer = util.Timer()
    for idx, (images, labels) in enumerate(train_loader):
        data_time.update(timer.seconds())
        images = util.to_device(images, opt)
        labels = labels.to(opt.device, non_blocking=True)
        util.warmup_learning_rate(opt, epoch, idx, len(train_loader), optimizer)

        loss, logits = compute_loss(model, criterion, images, labels, opt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        batch_size = labels.shape[0]
        losses.update(loss.item(), batch_size)
        top1.update((logits.argmax(dim=1) == labels).float().mean().item() * 100, batch_size)
        batch_time.update(timer.seconds())
        timer = util.Timer()

        if (idx + 1) % opt.print_freq == 0:
            util.print_progress(epoch, idx, len(train_loader), batch_time, data_time, losses,
                                extra=f'Acc@1 {top1.val:.2f} ({top1.avg:.2f})\t')
        if monitor is not None:
            iteration = (epoch - 1) * len(train_loader) + idx + 1
            monitor.step(iteration, epoch, util.unwrap(model).encoder,
                         util.unwrap(model).fc.weight)
    return losses.avg, top1.avg


def main(argv=None):
    opt = parse_option(argv)
    util.init_distributed(opt)
    util.set_seed(opt.seed)
    model, criterion = set_model(opt)
    if opt.dry_run:
        data.build_transform(opt, 'classifier')
        util.print_plan(opt, model)
        return

    # data
    train_loader, test_loader = set_loader(opt)
    opt.iters_per_epoch = len(train_loader)
    opt.total_iters = opt.epochs * len(train_loader)

    # model, optimiser, resume
    model = util.wrap_model(model, opt)
    optimizer = util.set_optimizer(opt, model)
    start_epoch, best_acc, test_acc = 1, 0.0, 0.0
    if opt.resume:
        start_epoch, checkpoint = util.resume_from(opt, model, optimizer)
        best_acc = checkpoint.get('best_acc', 0.0)
        test_acc = checkpoint.get('test_acc', 0.0)
    util.print_plan(opt, model)
    recorder = util.RunRecorder(opt, resume_epoch=start_epoch - 1 if opt.resume else None)
    monitor = nc_metrics.TrainingMonitor.from_options(opt, recorder)

    # training
    for epoch in range(start_epoch, opt.epochs + 1):
        util.seed_epoch(opt, epoch)
        util.set_loader_epoch(train_loader, epoch)
        util.adjust_learning_rate(opt, optimizer, epoch)
        timer = util.Timer()
        loss, train_acc = train(train_loader, model, criterion, optimizer, epoch, opt, monitor)
        seconds = timer.seconds()

        util.unwrap(model).eval()
        test_acc, _ = util.evaluate(util.unwrap(model), test_loader, opt)
        best_acc = max(best_acc, test_acc)
        print(f'epoch {epoch}, total time {seconds:.2f}, loss {loss:.4f}, train accuracy '
              f'{train_acc:.2f}, test accuracy {test_acc:.2f}', flush=True)
        recorder.log({'epoch': epoch, 'loss': loss, 'lr': optimizer.param_groups[0]['lr'],
                      'seconds': seconds, 'train_acc': train_acc, 'test_acc': test_acc})
        util.save_epoch(model, optimizer, opt, epoch, best_acc=best_acc, test_acc=test_acc)

    recorder.finish(opt, {'script': 'main_ce', 'dataset': opt.dataset, 'loss': opt.loss,
                          'temp': opt.temp, 'epochs': opt.epochs, 'test_acc': test_acc,
                          'best_acc': best_acc})
    print(f'run folder: {opt.save_folder}')
    print(f'best accuracy: {best_acc:.2f}')


if __name__ == '__main__':
    util.run_main(lambda: main(sys.argv[1:]))
