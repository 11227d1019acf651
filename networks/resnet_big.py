"""ResNet encoders, projection heads and classifiers.

ResNet-18/34/50/101 from He et al., "Deep Residual Learning for Image Recognition"
(CVPR 2016), with the module layout of the SupContrast repository (Khosla et al.,
2020): parameter and buffer names (encoder.conv1, encoder.layer2.0.shortcut.0, head.0,
fc, ...) match its checkpoints, so those load into these models unchanged.

Additions over that layout, none of which adds or renames a parameter:
- `stem='imagenet'`: 7x7 stride-2 convolution and 3x3 stride-2 max-pool for large
  images. The default `stem='cifar'` is a 3x3 stride-1 convolution with no pooling.
- `width`: base number of channels (64 in the standard networks).
- `head='none'` in SupConResNet: no projection, so the loss receives the normalised
  encoder feature.
- `normalized=True` in SupCEResNet and LinearClassifier: a bias-free weight matrix
  W [K, h] whose rows are class prototypes, and cosine-similarity logits.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

STEMS = ('cifar', 'imagenet')
HEADS = ('mlp', 'linear', 'none')


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity or 1x1-projection shortcut."""
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with an identity or projection shortcut."""
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes, out_planes, stride):
    # An empty Sequential is the identity. The projection is a Sequential of (conv, bn) so
    # its parameters are named shortcut.0 and shortcut.1, as in the reference checkpoints.
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class ResNet(nn.Module):
    """ResNet encoder: stem, four stages and global average pooling, giving [B, 8 * width * expansion]."""

    def __init__(self, block, num_blocks, in_channel=3, zero_init_residual=False, width=64, stem='cifar'):
        super().__init__()
        _check_width(width)
        if stem not in STEMS:
            raise ValueError(f"invalid stem {stem!r}; expected one of {', '.join(STEMS)}")
        self.stem = stem

        if stem == 'cifar':
            self.conv1 = nn.Conv2d(in_channel, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channel, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)

        self.in_planes = width
        self.layer1 = self._make_layer(block, width, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, width * 2, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

        # Zero gamma in the last BN of each residual branch makes every block start as the
        # identity (Goyal et al., 2017, "Accurate, Large Minibatch SGD").
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for index in range(num_blocks):
            layers.append(block(self.in_planes, planes, stride if index == 0 else 1))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        return torch.flatten(self.avgpool(out), 1)


def resnet18(**kwargs):
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs):
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs):
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


def resnet101(**kwargs):
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


# name -> [constructor, encoder output dimension at width 64]
model_dict = {
    'resnet18': [resnet18, 512],
    'resnet34': [resnet34, 512],
    'resnet50': [resnet50, 2048],
    'resnet101': [resnet101, 2048],
}


def _check_width(width):
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise ValueError(f"invalid width {width!r}; expected a positive integer (64 for the standard ResNet)")


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"invalid {name} {value!r}; expected a positive integer")


def _lookup(name):
    if name not in model_dict:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(model_dict)}")
    return model_dict[name]


def feature_dim(name, width=64):
    """Return the encoder output dimension of model `name` at base width `width`."""
    _, dim_at_64 = _lookup(name)
    _check_width(width)
    # Every dimension at width 64 is a multiple of 64, so this division is exact.
    return dim_at_64 * width // 64


def stem_for_size(size):
    """Return 'imagenet' (7x7/2 conv and max-pool) for images of 64 pixels or more, else 'cifar'."""
    return 'imagenet' if size >= 64 else 'cifar'


def _build_encoder(name, width, stem):
    constructor, _ = _lookup(name)
    return constructor(width=width, stem=stem)


def _cosine_logits(features, weight):
    # Cosine similarity of every feature to every row of W, in [-1, 1]: shape [B, K].
    return F.linear(F.normalize(features, dim=1), F.normalize(weight, dim=1))


class SupConResNet(nn.Module):
    """Encoder + projection head; forward returns the L2-normalised projection [B, feat_dim].

    head='mlp': Linear(h, h), ReLU, Linear(h, feat_dim). head='linear': Linear(h, feat_dim).
    head='none': no projection, so the output is the normalised encoder feature [B, h]
    and feat_dim is ignored.
    """

    def __init__(self, name='resnet50', head='mlp', feat_dim=128, width=64, stem='cifar'):
        super().__init__()
        dim_in = feature_dim(name, width)
        self.encoder = _build_encoder(name, width, stem)
        if head == 'mlp':
            _check_positive_int(feat_dim, 'feat_dim')
            self.head = nn.Sequential(
                nn.Linear(dim_in, dim_in),
                nn.ReLU(inplace=True),
                nn.Linear(dim_in, feat_dim),
            )
        elif head == 'linear':
            _check_positive_int(feat_dim, 'feat_dim')
            self.head = nn.Linear(dim_in, feat_dim)
        elif head == 'none':
            self.head = nn.Identity()
        else:
            raise ValueError(f"invalid head {head!r}; expected one of {', '.join(HEADS)}")

    def forward(self, x):
        return F.normalize(self.head(self.encoder(x)), dim=1)


class SupCEResNet(nn.Module):
    """Encoder + classifier.

    normalized=False: fc is a biased Linear(h, K), and the logits fc(z) feed cross-entropy.
    normalized=True: fc is a bias-free Linear(h, K) whose weight W [K, h] is the matrix of
    class prototypes, and the logits are the cosines normalize(z) @ normalize(W).T, so the
    argmax is the nearest prototype by cosine similarity.
    """

    def __init__(self, name='resnet50', num_classes=10, width=64, stem='cifar', normalized=False):
        super().__init__()
        _check_positive_int(num_classes, 'num_classes')
        dim_in = feature_dim(name, width)
        self.encoder = _build_encoder(name, width, stem)
        self.normalized = normalized
        self.fc = nn.Linear(dim_in, num_classes, bias=not normalized)

    def forward(self, x, return_features=False):
        """Return the logits [B, K], or (encoder features [B, h], logits) when return_features is True."""
        features = self.encoder(x)
        if self.normalized:
            logits = _cosine_logits(features, self.fc.weight)
        else:
            logits = self.fc(features)
        if return_features:
            return features, logits
        return logits


class LinearClassifier(nn.Module):
    """Classifier on frozen features: forward(features [B, h]) returns logits [B, K].

    normalized=False: biased Linear(h, K), the usual linear probe.
    normalized=True: bias-free weight W [K, h] and cosine logits, as in SupCEResNet.
    h is the encoder dimension of `name` at `width`, unless feat_dim overrides it
    (for example, to classify 128-dimensional projection-head outputs).
    """

    def __init__(self, name='resnet50', num_classes=10, width=64, normalized=False, feat_dim=None):
        super().__init__()
        _check_positive_int(num_classes, 'num_classes')
        dim_in = feature_dim(name, width)
        if feat_dim is not None:
            _check_positive_int(feat_dim, 'feat_dim')
            dim_in = feat_dim
        self.normalized = normalized
        self.fc = nn.Linear(dim_in, num_classes, bias=not normalized)

    def forward(self, features):
        if self.normalized:
            return _cosine_logits(features, self.fc.weight)
        return self.fc(features)
