"""Pre-train an encoder with supervised contrastive learning (SupCon) or SimCLR.

Each image gives two augmented views, and the loss (eq. 2 of "Neural Collapse by Design:
Learning Class Prototypes on the Hypersphere") contrasts the L2-normalised outputs of the
projection head. Under torchrun the loss uses the global batch because it gathers every
process's features itself. Evaluate the encoder afterwards with main_linear.py (linear
probing) or main_prototype.py (class-mean prototypes, one pass).

One process (CPU or one GPU):
    python main_supcon.py --dataset cifar100 --model resnet18 --batch_size 512 \\
        --learning_rate 0.05 --temp 0.1 --epochs 1000 --cosine
One node with 4 GPUs (--batch_size is per GPU):
    torchrun --standalone --nproc_per_node=4 main_supcon.py --dataset imagenet100 \\
        --data_folder /data/imagenet --model resnet50 --size 224 --batch_size 256 \\
        --learning_rate 0.8 --lr_scaling linear --temp 0.1 --cosine --warm --syncBN
Two nodes with 8 GPUs each (run on every node, with its own --node_rank):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 main_supcon.py ...
"""

import sys

import torch

import data
import nc_metrics
import util
from losses import SupConLoss
from networks.resnet_big import SupConResNet, stem_for_size


def parse_option(argv=None):
    parser = util.ArgumentParser(description='Supervised contrastive pre-training.')
    util.add_training_args(parser, epochs=1000, learning_rate=0.05,
                           lr_decay_epochs='700,800,900')
    util.add_model_args(parser)
    data.add_data_args(parser)
    group = parser.add_argument_group('loss')
    group.add_argument('--method', choices=['SupCon', 'SimCLR'], default='SupCon',
                       help='SupCon uses the labels; SimCLR treats only the two views of an '
                            'image as positives')
    group.add_argument('--temp', type=float, default=0.07,
                       help='temperature tau of the contrastive loss (paper: 0.1)')
    group.add_argument('--head', choices=['mlp', 'linear', 'none'], default='mlp',
                       help='projection head: mlp (paper), linear, or none (the loss acts on '
                            'the encoder output; Table 4 of the paper)')
    group.add_argument('--feat_dim', type=int, default=128,
                       help='output dimension of the projection head (paper: 128)')
    nc_metrics.add_monitor_args(parser)
    opt = parser.parse_args(argv)

    util.check_temperature(opt)
    opt.n_cls, opt.mean, opt.std = data.dataset_stats(opt)
    head = '' if opt.head == 'mlp' else '_head_{head}'
    util.finish_training_options(
        opt, 'main_supcon',
        '{method}_{dataset}_{model}_lr_{base_learning_rate}_decay_{weight_decay}'
        '_bsz_{batch_size}_temp_{temp}_trial_{trial}' + head)
    return opt


def set_loader(opt):
    transform = data.TwoCropTransform(data.build_transform(opt, 'contrastive'))
    return util.make_train_loader(data.build_dataset(opt, 'train', transform), opt)


def set_model(opt):
    model = SupConResNet(name=opt.model, head=opt.head, feat_dim=opt.feat_dim,
                         width=opt.width, stem=stem_for_size(opt.size))
    criterion = SupConLoss(temperature=opt.temp)
    return model, criterion


def compute_loss(model, criterion, views, labels, opt):
    """Return the loss of one batch of two views per image, [bsz, 2, dim] as SupConLoss takes."""
    batch_size = labels.shape[0]
    images = torch.cat(views, dim=0)
    with util.autocast(opt):
        features = model(images)
    features = torch.stack(torch.split(features, [batch_size, batch_size], dim=0), dim=1)
    if opt.method == 'SupCon':
        return criterion(features, labels)
    return criterion(features)


def train(train_loader, model, criterion, optimizer, epoch, opt, monitor=None):
    """Train for one epoch; return the mean loss."""
    model.train()
    batch_time, data_time, losses = util.AverageMeter(), util.AverageMeter(), util.AverageMeter()

    timer = util.Timer()
    for idx, (views, labels) in enumerate(train_loader):
        data_time.update(timer.seconds())
        views = [util.to_device(view, opt) for view in views]
        labels = labels.to(opt.device, non_blocking=True)
        util.warmup_learning_rate(opt, epoch, idx, len(train_loader), optimizer)

        loss = compute_loss(model, criterion, views, labels, opt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        losses.update(loss.item(), labels.shape[0])
        batch_time.update(timer.seconds())
        timer = util.Timer()

        if (idx + 1) % opt.print_freq == 0:
            util.print_progress(epoch, idx, len(train_loader), batch_time, data_time, losses)
        if monitor is not None:
            # Without a trained classifier, the monitor scores the class-mean prototypes.
            iteration = (epoch - 1) * len(train_loader) + idx + 1
            monitor.step(iteration, epoch, util.unwrap(model).encoder, None)
    return losses.avg


def main(argv=None):
    opt = parse_option(argv)
    util.init_distributed(opt)
    util.set_seed(opt.seed)
    model, criterion = set_model(opt)
    if opt.dry_run:
        data.build_transform(opt, 'contrastive')
        util.print_plan(opt, model)
        return

    # data
    train_loader = set_loader(opt)
    opt.iters_per_epoch = len(train_loader)
    opt.total_iters = opt.epochs * len(train_loader)

    # model, optimiser, resume
    model = util.wrap_model(model, opt)
    optimizer = util.set_optimizer(opt, model)
    start_epoch = 1
    if opt.resume:
        start_epoch, _ = util.resume_from(opt, model, optimizer)
    util.print_plan(opt, model)
    recorder = util.RunRecorder(opt, resume_epoch=start_epoch - 1 if opt.resume else None)
    monitor = nc_metrics.TrainingMonitor.from_options(opt, recorder)

    # training
    loss = float('nan')
    for epoch in range(start_epoch, opt.epochs + 1):
        util.seed_epoch(opt, epoch)
        util.set_loader_epoch(train_loader, epoch)
        util.adjust_learning_rate(opt, optimizer, epoch)
        timer = util.Timer()
        loss = train(train_loader, model, criterion, optimizer, epoch, opt, monitor)
        seconds = timer.seconds()

        print(f'epoch {epoch}, total time {seconds:.2f}, loss {loss:.4f}', flush=True)
        recorder.log({'epoch': epoch, 'loss': loss, 'lr': optimizer.param_groups[0]['lr'],
                      'seconds': seconds})
        util.save_epoch(model, optimizer, opt, epoch)

    recorder.finish(opt, {'script': 'main_supcon', 'dataset': opt.dataset,
                          'method': opt.method, 'head': opt.head, 'temp': opt.temp,
                          'epochs': opt.epochs, 'final_loss': loss})
    print(f'run folder: {opt.save_folder}')
    print(f'checkpoint: {opt.save_folder}/last.pth')


if __name__ == '__main__':
    util.run_main(lambda: main(sys.argv[1:]))
