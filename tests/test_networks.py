"""Tests for networks/resnet_big.py: shapes, checkpoint key layout, cosine classifiers, input checks."""
import math

import pytest
import torch
import torch.nn as nn

from networks.resnet_big import (LinearClassifier, SupCEResNet, SupConResNet, feature_dim,
                                 model_dict, resnet18, resnet50, stem_for_size)

# A small width keeps the forward passes fast on CPU. The layout does not depend on width.
WIDTH = 8

# Module names of the SupContrast reference resnet18 encoder. A 1x1 projection shortcut
# exists only where the stride or channel count changes: layer2.0, layer3.0, layer4.0.
RESNET18_CONVS = [
    'encoder.conv1',
    'encoder.layer1.0.conv1', 'encoder.layer1.0.conv2',
    'encoder.layer1.1.conv1', 'encoder.layer1.1.conv2',
    'encoder.layer2.0.conv1', 'encoder.layer2.0.conv2', 'encoder.layer2.0.shortcut.0',
    'encoder.layer2.1.conv1', 'encoder.layer2.1.conv2',
    'encoder.layer3.0.conv1', 'encoder.layer3.0.conv2', 'encoder.layer3.0.shortcut.0',
    'encoder.layer3.1.conv1', 'encoder.layer3.1.conv2',
    'encoder.layer4.0.conv1', 'encoder.layer4.0.conv2', 'encoder.layer4.0.shortcut.0',
    'encoder.layer4.1.conv1', 'encoder.layer4.1.conv2',
]
RESNET18_BNS = [
    'encoder.bn1',
    'encoder.layer1.0.bn1', 'encoder.layer1.0.bn2',
    'encoder.layer1.1.bn1', 'encoder.layer1.1.bn2',
    'encoder.layer2.0.bn1', 'encoder.layer2.0.bn2', 'encoder.layer2.0.shortcut.1',
    'encoder.layer2.1.bn1', 'encoder.layer2.1.bn2',
    'encoder.layer3.0.bn1', 'encoder.layer3.0.bn2', 'encoder.layer3.0.shortcut.1',
    'encoder.layer3.1.bn1', 'encoder.layer3.1.bn2',
    'encoder.layer4.0.bn1', 'encoder.layer4.0.bn2', 'encoder.layer4.0.shortcut.1',
    'encoder.layer4.1.bn1', 'encoder.layer4.1.bn2',
]
BN_SUFFIXES = ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']


def expected_resnet18_keys(extra):
    keys = {name + '.weight' for name in RESNET18_CONVS}
    keys |= {f'{name}.{suffix}' for name in RESNET18_BNS for suffix in BN_SUFFIXES}
    return keys | set(extra)


def test_supcon_resnet18_mlp_keys():
    model = SupConResNet('resnet18', head='mlp')
    extra = ['head.0.weight', 'head.0.bias', 'head.2.weight', 'head.2.bias']
    assert set(model.state_dict()) == expected_resnet18_keys(extra)


def test_supcon_resnet18_linear_keys():
    model = SupConResNet('resnet18', head='linear')
    assert set(model.state_dict()) == expected_resnet18_keys(['head.weight', 'head.bias'])


def test_supcon_head_none_keys():
    model = SupConResNet('resnet18', head='none')
    assert set(model.state_dict()) == expected_resnet18_keys([])


def test_supce_resnet18_keys():
    model = SupCEResNet('resnet18', num_classes=10)
    assert set(model.state_dict()) == expected_resnet18_keys(['fc.weight', 'fc.bias'])


def test_supce_normalized_has_no_bias():
    model = SupCEResNet('resnet18', num_classes=10, normalized=True)
    assert set(model.state_dict()) == expected_resnet18_keys(['fc.weight'])


def test_imagenet_stem_same_keys():
    cifar = SupConResNet('resnet18', stem='cifar')
    imagenet = SupConResNet('resnet18', stem='imagenet')
    assert set(cifar.state_dict()) == set(imagenet.state_dict())


def test_resnet18_reference_shapes():
    shapes = {name: tuple(value.shape) for name, value in SupConResNet('resnet18').state_dict().items()}
    # Shapes of the reference resnet18 + mlp head at width 64 with feat_dim 128.
    assert shapes['encoder.conv1.weight'] == (64, 3, 3, 3)
    assert shapes['encoder.layer2.0.shortcut.0.weight'] == (128, 64, 1, 1)
    assert shapes['encoder.layer4.1.conv2.weight'] == (512, 512, 3, 3)
    assert shapes['head.0.weight'] == (512, 512)
    assert shapes['head.2.weight'] == (128, 512)


def test_resnet50_bottleneck_keys():
    keys = set(resnet50().state_dict())
    assert 'layer1.0.conv3.weight' in keys
    assert 'layer1.0.bn3.running_var' in keys
    # Bottleneck expands 64 -> 256 channels, so layer1.0 projects even at stride 1.
    assert 'layer1.0.shortcut.0.weight' in keys
    assert 'layer1.0.shortcut.1.weight' in keys
    assert not any(key.startswith('layer1.1.shortcut') for key in keys)
    assert 'layer4.2.conv3.weight' in keys
    assert not any(key.startswith('layer4.3.') for key in keys)


def test_reference_checkpoint_loads():
    # A state dict with the reference names and shapes, filled with new values, loads strictly.
    source = SupConResNet('resnet18', width=16)
    state = {name: torch.full_like(value, 0.5) for name, value in source.state_dict().items()}
    target = SupConResNet('resnet18', width=16)
    target.load_state_dict(state, strict=True)
    assert torch.equal(target.encoder.layer3[0].conv1.weight, state['encoder.layer3.0.conv1.weight'])
    assert torch.equal(target.head[2].bias, state['head.2.bias'])


@pytest.mark.parametrize('name', list(model_dict))
def test_encoder_output_dim(name):
    constructor, _ = model_dict[name]
    encoder = constructor(width=WIDTH).eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, feature_dim(name, WIDTH))


def test_model_dict_dims_at_width_64():
    dims = {name: dim for name, (_, dim) in model_dict.items()}
    assert dims == {'resnet18': 512, 'resnet34': 512, 'resnet50': 2048, 'resnet101': 2048}


@pytest.mark.parametrize('name,width,expected', [
    ('resnet18', 64, 512), ('resnet18', 32, 256), ('resnet34', 8, 64),
    ('resnet50', 64, 2048), ('resnet50', 16, 512), ('resnet101', 48, 1536),
])
def test_feature_dim_scales_with_width(name, width, expected):
    assert feature_dim(name, width) == expected


def test_width_sets_stage_channels():
    encoder = resnet18(width=16)
    assert encoder.conv1.out_channels == 16
    assert encoder.layer1[0].conv1.out_channels == 16
    assert encoder.layer2[0].conv1.out_channels == 32
    assert encoder.layer3[0].conv1.out_channels == 64
    assert encoder.layer4[0].conv1.out_channels == 128


@pytest.mark.parametrize('stem,size', [('cifar', 8), ('cifar', 32), ('imagenet', 64)])
def test_stems_output_shape(stem, size):
    model = SupConResNet('resnet18', width=WIDTH, stem=stem).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 128)


def test_cifar_stem_layout():
    encoder = resnet18(width=WIDTH, stem='cifar')
    assert encoder.conv1.kernel_size == (3, 3)
    assert encoder.conv1.stride == (1, 1)
    assert isinstance(encoder.maxpool, nn.Identity)


def test_imagenet_stem_layout():
    encoder = resnet18(width=WIDTH, stem='imagenet')
    assert encoder.conv1.kernel_size == (7, 7)
    assert encoder.conv1.stride == (2, 2)
    assert isinstance(encoder.maxpool, nn.MaxPool2d)


def test_imagenet_stem_downsamples_by_4():
    encoder = resnet18(width=WIDTH, stem='imagenet').eval()
    with torch.no_grad():
        stem_out = encoder.maxpool(torch.relu(encoder.bn1(encoder.conv1(torch.randn(1, 3, 64, 64)))))
    assert stem_out.shape == (1, WIDTH, 16, 16)


@pytest.mark.parametrize('size,expected', [(8, 'cifar'), (32, 'cifar'), (63, 'cifar'),
                                           (64, 'imagenet'), (224, 'imagenet')])
def test_stem_for_size(size, expected):
    assert stem_for_size(size) == expected


@pytest.mark.parametrize('head,dim', [('mlp', 32), ('linear', 32), ('none', 8 * WIDTH * 4)])
def test_supcon_head_output_unit_norm(head, dim):
    model = SupConResNet('resnet50', head=head, feat_dim=32, width=WIDTH).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_head_none_normalized_encoder():
    model = SupConResNet('resnet18', head='none', width=WIDTH).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        out = model(x)
        features = model.encoder(x)
    expected = features / features.norm(dim=1, keepdim=True)
    assert torch.allclose(out, expected, atol=1e-6)


def test_supce_logits_shape():
    model = SupCEResNet('resnet34', num_classes=7, width=WIDTH).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 7)


def test_supce_return_features():
    model = SupCEResNet('resnet18', num_classes=5, width=WIDTH).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        features, logits = model(x, return_features=True)
        encoder_out = model.encoder(x)
    assert features.shape == (2, feature_dim('resnet18', WIDTH))
    assert torch.allclose(features, encoder_out)
    assert torch.allclose(logits, features @ model.fc.weight.T + model.fc.bias, atol=1e-5)


def cosine_reference(features, weight):
    # Loop over samples and prototypes: cos = <z, w> / (|z| |w|).
    out = torch.empty(features.shape[0], weight.shape[0])
    for i in range(features.shape[0]):
        for k in range(weight.shape[0]):
            z, w = features[i], weight[k]
            out[i, k] = torch.dot(z, w) / (math.sqrt(torch.dot(z, z)) * math.sqrt(torch.dot(w, w)))
    return out


def test_supce_normalized_cosine_logits():
    torch.manual_seed(0)
    model = SupCEResNet('resnet18', num_classes=6, width=WIDTH, normalized=True).eval()
    assert model.normalized
    with torch.no_grad():
        features, logits = model(torch.randn(5, 3, 16, 16), return_features=True)
    assert torch.allclose(logits, cosine_reference(features, model.fc.weight.detach()), atol=1e-5)
    assert logits.min() >= -1.0 - 1e-6
    assert logits.max() <= 1.0 + 1e-6


def test_normalized_argmax_nearest_prototype():
    torch.manual_seed(1)
    model = SupCEResNet('resnet18', num_classes=6, width=WIDTH, normalized=True).eval()
    with torch.no_grad():
        features, logits = model(torch.randn(8, 3, 16, 16), return_features=True)
        # On the unit sphere, the smallest Euclidean distance is the largest cosine.
        units = features / features.norm(dim=1, keepdim=True)
        prototypes = model.fc.weight / model.fc.weight.norm(dim=1, keepdim=True)
        distances = torch.cdist(units, prototypes)
    assert torch.equal(logits.argmax(dim=1), distances.argmin(dim=1))


def test_supce_ce_flag():
    assert not SupCEResNet('resnet18', num_classes=3, width=WIDTH).normalized


def test_linear_classifier_probe():
    classifier = LinearClassifier('resnet50', num_classes=4, width=WIDTH)
    features = torch.randn(3, feature_dim('resnet50', WIDTH))
    assert classifier.fc.bias is not None
    assert torch.allclose(classifier(features),
                          features @ classifier.fc.weight.T + classifier.fc.bias, atol=1e-5)


def test_linear_classifier_normalized():
    classifier = LinearClassifier('resnet18', num_classes=4, normalized=True, feat_dim=16)
    features = torch.randn(5, 16)
    assert classifier.fc.bias is None
    assert tuple(classifier.fc.weight.shape) == (4, 16)
    with torch.no_grad():
        logits = classifier(features)
    assert torch.allclose(logits, cosine_reference(features, classifier.fc.weight.detach()), atol=1e-5)


def test_linear_classifier_default_dim():
    assert LinearClassifier('resnet50', num_classes=10).fc.in_features == 2048


def test_kaiming_and_bn_init():
    encoder = resnet18(width=16)
    conv = encoder.layer3[0].conv2.weight
    fan_out = conv.shape[0] * conv.shape[2] * conv.shape[3]
    # Kaiming normal in fan_out mode has std = sqrt(2 / fan_out). The 10% bound allows for sampling noise.
    assert abs(conv.std().item() - math.sqrt(2.0 / fan_out)) < 0.1 * math.sqrt(2.0 / fan_out)
    assert torch.equal(encoder.bn1.weight, torch.ones_like(encoder.bn1.weight))
    assert torch.equal(encoder.bn1.bias, torch.zeros_like(encoder.bn1.bias))


def test_zero_init_residual():
    basic = resnet18(width=WIDTH, zero_init_residual=True)
    bottleneck = resnet50(width=WIDTH, zero_init_residual=True)
    assert torch.count_nonzero(basic.layer2[1].bn2.weight) == 0
    assert torch.count_nonzero(basic.layer2[1].bn1.weight) == basic.layer2[1].bn1.weight.numel()
    assert torch.count_nonzero(bottleneck.layer3[0].bn3.weight) == 0


def test_zero_init_block_identity():
    # With zero gamma in the last BN, a stride-1 block returns relu(x) in eval mode.
    encoder = resnet18(width=WIDTH, zero_init_residual=True).eval()
    x = torch.randn(2, WIDTH, 8, 8)
    with torch.no_grad():
        out = encoder.layer1[0](x)
    assert torch.allclose(out, torch.relu(x))


def test_unknown_model_raises():
    with pytest.raises(ValueError, match='resnet18'):
        SupConResNet('resnet19')


def test_feature_dim_unknown_model_raises():
    with pytest.raises(ValueError, match='resnet_tiny'):
        feature_dim('resnet_tiny')


@pytest.mark.parametrize('width', [0, -64, 32.0, '64', True])
def test_invalid_width_raises(width):
    with pytest.raises(ValueError, match='width'):
        SupCEResNet('resnet18', width=width)


def test_invalid_stem_raises():
    with pytest.raises(ValueError, match='imagenet'):
        resnet18(stem='tiny')


def test_invalid_head_raises():
    with pytest.raises(ValueError, match='mlp'):
        SupConResNet('resnet18', head='conv')


def test_invalid_num_classes_raises():
    with pytest.raises(ValueError, match='num_classes'):
        LinearClassifier('resnet18', num_classes=0)
