"""Existing work comes in: DeepEISNN checkpoints (the authors' layout, safetensors and .pth)
and spikingjelly's own batch-norm CNNs."""
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from spikingjelly.activation_based import functional, neuron, surrogate
from spikingjelly.activation_based.model import spiking_resnet, spiking_vgg

import sj_ei
from sj_ei import convert, datasets, models
from train import checkpoint

import spec

CONFIG = {'type': 'EI-SNN', 'arch': 'VGG', 'num_layers': 8, 'dataset': 'DVSGesture', 'T': 2, 'ei_ratio': 4,
          'light_classifier': True, 'dropout': 0.0, 'neuron': {'tau': 2.0}}
# The authors renamed the inhibition module's alpha/gain to gain_i/gain_e on 2026-02-14; their
# published model.safetensors files load into the renamed code, older .pth checkpoints have the old names.
NEW_NAMES, OLD_NAMES = ('gain_i', 'gain_e'), ('alpha', 'gain')

# ---- the authors' models, as their classes name them (vwOvOwv/DeepEISNN: models/vgg.py, models/resnet.py) ----
# The state-dict keys of their E-I models, in their order.  Each E-I layer is two modules: a projection
# (SpikingEiConv2d: conv_ee.weight, conv_ie.weight; SpikingEiLinear: weight_ee, weight_ie) and an inhibition
# module (SpikingEiNorm2d / SpikingEiNorm1d: weight_ei, gain_i, gain_e, bias); neurons, pooling, Dropout and
# the Split/Merge/AddTemporalDim helpers hold no tensors but take places in their VGG's `layers` Sequential.
#: SpikingEiVGG(num_layers=8), DVSGesture (event input: their `layers` starts with MergeTemporalDim)
AUTHORS_VGG8_DVSGESTURE = [
    'layers.1.conv_ee.weight', 'layers.1.conv_ie.weight', 'layers.2.weight_ei', 'layers.2.gain_i',
    'layers.2.gain_e', 'layers.2.bias', 'layers.8.conv_ee.weight', 'layers.8.conv_ie.weight', 'layers.9.weight_ei',
    'layers.9.gain_i', 'layers.9.gain_e', 'layers.9.bias', 'layers.15.conv_ee.weight', 'layers.15.conv_ie.weight',
    'layers.16.weight_ei', 'layers.16.gain_i', 'layers.16.gain_e', 'layers.16.bias', 'layers.22.conv_ee.weight',
    'layers.22.conv_ie.weight', 'layers.23.weight_ei', 'layers.23.gain_i', 'layers.23.gain_e', 'layers.23.bias',
    'layers.29.conv_ee.weight', 'layers.29.conv_ie.weight', 'layers.30.weight_ei', 'layers.30.gain_i',
    'layers.30.gain_e', 'layers.30.bias', 'layers.37.weight_ee', 'layers.37.weight_ie', 'layers.38.weight_ei',
    'layers.38.gain_i', 'layers.38.gain_e', 'layers.38.bias',
]
#: SpikingEiVGG(num_layers=16), CIFAR10 (static input: AddTemporalDim, MergeTemporalDim first)
AUTHORS_VGG16_CIFAR10 = [
    'layers.2.conv_ee.weight', 'layers.2.conv_ie.weight', 'layers.3.weight_ei', 'layers.3.gain_i',
    'layers.3.gain_e', 'layers.3.bias', 'layers.8.conv_ee.weight', 'layers.8.conv_ie.weight', 'layers.9.weight_ei',
    'layers.9.gain_i', 'layers.9.gain_e', 'layers.9.bias', 'layers.15.conv_ee.weight', 'layers.15.conv_ie.weight',
    'layers.16.weight_ei', 'layers.16.gain_i', 'layers.16.gain_e', 'layers.16.bias', 'layers.21.conv_ee.weight',
    'layers.21.conv_ie.weight', 'layers.22.weight_ei', 'layers.22.gain_i', 'layers.22.gain_e', 'layers.22.bias',
    'layers.28.conv_ee.weight', 'layers.28.conv_ie.weight', 'layers.29.weight_ei', 'layers.29.gain_i',
    'layers.29.gain_e', 'layers.29.bias', 'layers.34.conv_ee.weight', 'layers.34.conv_ie.weight',
    'layers.35.weight_ei', 'layers.35.gain_i', 'layers.35.gain_e', 'layers.35.bias', 'layers.40.conv_ee.weight',
    'layers.40.conv_ie.weight', 'layers.41.weight_ei', 'layers.41.gain_i', 'layers.41.gain_e', 'layers.41.bias',
    'layers.47.conv_ee.weight', 'layers.47.conv_ie.weight', 'layers.48.weight_ei', 'layers.48.gain_i',
    'layers.48.gain_e', 'layers.48.bias', 'layers.53.conv_ee.weight', 'layers.53.conv_ie.weight',
    'layers.54.weight_ei', 'layers.54.gain_i', 'layers.54.gain_e', 'layers.54.bias', 'layers.59.conv_ee.weight',
    'layers.59.conv_ie.weight', 'layers.60.weight_ei', 'layers.60.gain_i', 'layers.60.gain_e', 'layers.60.bias',
    'layers.66.conv_ee.weight', 'layers.66.conv_ie.weight', 'layers.67.weight_ei', 'layers.67.gain_i',
    'layers.67.gain_e', 'layers.67.bias', 'layers.72.conv_ee.weight', 'layers.72.conv_ie.weight',
    'layers.73.weight_ei', 'layers.73.gain_i', 'layers.73.gain_e', 'layers.73.bias', 'layers.78.conv_ee.weight',
    'layers.78.conv_ie.weight', 'layers.79.weight_ei', 'layers.79.gain_i', 'layers.79.gain_e', 'layers.79.bias',
    'layers.86.weight_ee', 'layers.86.weight_ie', 'layers.87.weight_ei', 'layers.87.gain_i', 'layers.87.gain_e',
    'layers.87.bias',
]
#: SpikingEiResNet(num_layers=18), CIFAR10
AUTHORS_RESNET18_CIFAR10 = [
    'conv1.conv_ee.weight', 'conv1.conv_ie.weight', 'norm1.weight_ei', 'norm1.gain_i', 'norm1.gain_e', 'norm1.bias',
    'layer1.0.conv1.conv_ee.weight', 'layer1.0.conv1.conv_ie.weight', 'layer1.0.norm1.weight_ei',
    'layer1.0.norm1.gain_i', 'layer1.0.norm1.gain_e', 'layer1.0.norm1.bias', 'layer1.0.conv2.conv_ee.weight',
    'layer1.0.conv2.conv_ie.weight', 'layer1.0.norm2.weight_ei', 'layer1.0.norm2.gain_i', 'layer1.0.norm2.gain_e',
    'layer1.0.norm2.bias', 'layer1.1.conv1.conv_ee.weight', 'layer1.1.conv1.conv_ie.weight',
    'layer1.1.norm1.weight_ei', 'layer1.1.norm1.gain_i', 'layer1.1.norm1.gain_e', 'layer1.1.norm1.bias',
    'layer1.1.conv2.conv_ee.weight', 'layer1.1.conv2.conv_ie.weight', 'layer1.1.norm2.weight_ei',
    'layer1.1.norm2.gain_i', 'layer1.1.norm2.gain_e', 'layer1.1.norm2.bias', 'layer2.0.conv1.conv_ee.weight',
    'layer2.0.conv1.conv_ie.weight', 'layer2.0.norm1.weight_ei', 'layer2.0.norm1.gain_i', 'layer2.0.norm1.gain_e',
    'layer2.0.norm1.bias', 'layer2.0.conv2.conv_ee.weight', 'layer2.0.conv2.conv_ie.weight',
    'layer2.0.norm2.weight_ei', 'layer2.0.norm2.gain_i', 'layer2.0.norm2.gain_e', 'layer2.0.norm2.bias',
    'layer2.0.downsample.0.conv_ee.weight', 'layer2.0.downsample.0.conv_ie.weight',
    'layer2.0.downsample.1.weight_ei', 'layer2.0.downsample.1.gain_i', 'layer2.0.downsample.1.gain_e',
    'layer2.0.downsample.1.bias', 'layer2.1.conv1.conv_ee.weight', 'layer2.1.conv1.conv_ie.weight',
    'layer2.1.norm1.weight_ei', 'layer2.1.norm1.gain_i', 'layer2.1.norm1.gain_e', 'layer2.1.norm1.bias',
    'layer2.1.conv2.conv_ee.weight', 'layer2.1.conv2.conv_ie.weight', 'layer2.1.norm2.weight_ei',
    'layer2.1.norm2.gain_i', 'layer2.1.norm2.gain_e', 'layer2.1.norm2.bias', 'layer3.0.conv1.conv_ee.weight',
    'layer3.0.conv1.conv_ie.weight', 'layer3.0.norm1.weight_ei', 'layer3.0.norm1.gain_i', 'layer3.0.norm1.gain_e',
    'layer3.0.norm1.bias', 'layer3.0.conv2.conv_ee.weight', 'layer3.0.conv2.conv_ie.weight',
    'layer3.0.norm2.weight_ei', 'layer3.0.norm2.gain_i', 'layer3.0.norm2.gain_e', 'layer3.0.norm2.bias',
    'layer3.0.downsample.0.conv_ee.weight', 'layer3.0.downsample.0.conv_ie.weight',
    'layer3.0.downsample.1.weight_ei', 'layer3.0.downsample.1.gain_i', 'layer3.0.downsample.1.gain_e',
    'layer3.0.downsample.1.bias', 'layer3.1.conv1.conv_ee.weight', 'layer3.1.conv1.conv_ie.weight',
    'layer3.1.norm1.weight_ei', 'layer3.1.norm1.gain_i', 'layer3.1.norm1.gain_e', 'layer3.1.norm1.bias',
    'layer3.1.conv2.conv_ee.weight', 'layer3.1.conv2.conv_ie.weight', 'layer3.1.norm2.weight_ei',
    'layer3.1.norm2.gain_i', 'layer3.1.norm2.gain_e', 'layer3.1.norm2.bias', 'layer4.0.conv1.conv_ee.weight',
    'layer4.0.conv1.conv_ie.weight', 'layer4.0.norm1.weight_ei', 'layer4.0.norm1.gain_i', 'layer4.0.norm1.gain_e',
    'layer4.0.norm1.bias', 'layer4.0.conv2.conv_ee.weight', 'layer4.0.conv2.conv_ie.weight',
    'layer4.0.norm2.weight_ei', 'layer4.0.norm2.gain_i', 'layer4.0.norm2.gain_e', 'layer4.0.norm2.bias',
    'layer4.0.downsample.0.conv_ee.weight', 'layer4.0.downsample.0.conv_ie.weight',
    'layer4.0.downsample.1.weight_ei', 'layer4.0.downsample.1.gain_i', 'layer4.0.downsample.1.gain_e',
    'layer4.0.downsample.1.bias', 'layer4.1.conv1.conv_ee.weight', 'layer4.1.conv1.conv_ie.weight',
    'layer4.1.norm1.weight_ei', 'layer4.1.norm1.gain_i', 'layer4.1.norm1.gain_e', 'layer4.1.norm1.bias',
    'layer4.1.conv2.conv_ee.weight', 'layer4.1.conv2.conv_ie.weight', 'layer4.1.norm2.weight_ei',
    'layer4.1.norm2.gain_i', 'layer4.1.norm2.gain_e', 'layer4.1.norm2.bias', 'fc.weight_ee', 'fc.weight_ie',
    'final_ei_norm.weight_ei', 'final_ei_norm.gain_i', 'final_ei_norm.gain_e', 'final_ei_norm.bias',
]

#: per E-I layer: (their projection module, their inhibition module, the sj_ei layer it becomes,
#: in channels, out channels, kernel size; None for the linear readout)
VGG8_DVSGESTURE = [
    ('layers.1', 'layers.2', 'features.0.layer', 2, 64, 3), ('layers.8', 'layers.9', 'features.2.layer', 64, 128, 3),
    ('layers.15', 'layers.16', 'features.4.layer', 128, 256, 3),
    ('layers.22', 'layers.23', 'features.6.layer', 256, 512, 3),
    ('layers.29', 'layers.30', 'features.8.layer', 512, 512, 3), ('layers.37', 'layers.38', 'readout', 512, 11, None),
]
VGG16_CIFAR10 = [
    ('layers.2', 'layers.3', 'features.0.layer', 3, 64, 3), ('layers.8', 'layers.9', 'features.1.layer', 64, 64, 3),
    ('layers.15', 'layers.16', 'features.3.layer', 64, 128, 3),
    ('layers.21', 'layers.22', 'features.4.layer', 128, 128, 3),
    ('layers.28', 'layers.29', 'features.6.layer', 128, 256, 3),
    ('layers.34', 'layers.35', 'features.7.layer', 256, 256, 3),
    ('layers.40', 'layers.41', 'features.8.layer', 256, 256, 3),
    ('layers.47', 'layers.48', 'features.10.layer', 256, 512, 3),
    ('layers.53', 'layers.54', 'features.11.layer', 512, 512, 3),
    ('layers.59', 'layers.60', 'features.12.layer', 512, 512, 3),
    ('layers.66', 'layers.67', 'features.14.layer', 512, 512, 3),
    ('layers.72', 'layers.73', 'features.15.layer', 512, 512, 3),
    ('layers.78', 'layers.79', 'features.16.layer', 512, 512, 3), ('layers.86', 'layers.87', 'readout', 512, 10, None),
]
RESNET18_CIFAR10 = [
    ('conv1', 'norm1', 'features.0.layer', 3, 64, 3),
    ('layer1.0.conv1', 'layer1.0.norm1', 'features.1.main.0.layer', 64, 64, 3),
    ('layer1.0.conv2', 'layer1.0.norm2', 'features.1.main.1.layer', 64, 64, 3),
    ('layer1.1.conv1', 'layer1.1.norm1', 'features.2.main.0.layer', 64, 64, 3),
    ('layer1.1.conv2', 'layer1.1.norm2', 'features.2.main.1.layer', 64, 64, 3),
    ('layer2.0.conv1', 'layer2.0.norm1', 'features.3.main.0.layer', 64, 128, 3),
    ('layer2.0.conv2', 'layer2.0.norm2', 'features.3.main.1.layer', 128, 128, 3),
    ('layer2.0.downsample.0', 'layer2.0.downsample.1', 'features.3.shortcut.layer', 64, 128, 1),
    ('layer2.1.conv1', 'layer2.1.norm1', 'features.4.main.0.layer', 128, 128, 3),
    ('layer2.1.conv2', 'layer2.1.norm2', 'features.4.main.1.layer', 128, 128, 3),
    ('layer3.0.conv1', 'layer3.0.norm1', 'features.5.main.0.layer', 128, 256, 3),
    ('layer3.0.conv2', 'layer3.0.norm2', 'features.5.main.1.layer', 256, 256, 3),
    ('layer3.0.downsample.0', 'layer3.0.downsample.1', 'features.5.shortcut.layer', 128, 256, 1),
    ('layer3.1.conv1', 'layer3.1.norm1', 'features.6.main.0.layer', 256, 256, 3),
    ('layer3.1.conv2', 'layer3.1.norm2', 'features.6.main.1.layer', 256, 256, 3),
    ('layer4.0.conv1', 'layer4.0.norm1', 'features.7.main.0.layer', 256, 512, 3),
    ('layer4.0.conv2', 'layer4.0.norm2', 'features.7.main.1.layer', 512, 512, 3),
    ('layer4.0.downsample.0', 'layer4.0.downsample.1', 'features.7.shortcut.layer', 256, 512, 1),
    ('layer4.1.conv1', 'layer4.1.norm1', 'features.8.main.0.layer', 512, 512, 3),
    ('layer4.1.conv2', 'layer4.1.norm2', 'features.8.main.1.layer', 512, 512, 3),
    ('fc', 'final_ei_norm', 'readout', 512, 10, None),
]


class Random:
    """Random checkpoint tensors: non-negative weights of a scale that keeps the network firing, plus a
    few negative entries (the authors' forward clamps them to 0, and so must the conversion)."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, *shape, lo=0.0, hi=1.0, negatives=True):
        value = lo + (hi - lo) * torch.rand(shape, generator=self.g)
        if negatives:
            value[torch.rand(shape, generator=self.g) < 0.05] *= -1
        return value


def authors_state(layers, names=NEW_NAMES, seed=0) -> dict:
    """A state dict of the authors' model whose E-I layers are ``layers`` (a table above), in their
    shapes: per-channel vectors ``[n, 1, 1]`` after a convolution, ``[1, n]`` after the readout."""
    rand, state = Random(seed), {}
    for projection, inhibition, _, cin, n_e, k in layers:
        n_i, conv = n_e // 4, k is not None
        tail, fan_in = ((cin, k, k), cin * k * k) if conv else ((cin,), cin)
        ee, ie = ('conv_ee.weight', 'conv_ie.weight') if conv else ('weight_ee', 'weight_ie')
        state[f'{projection}.{ee}'] = rand(n_e, *tail, hi=2 / math.sqrt(fan_in) / 3)
        state[f'{projection}.{ie}'] = rand(n_i, *tail, hi=2 / math.sqrt(fan_in) / 3)
        state[f'{inhibition}.weight_ei'] = rand(n_e, n_i, hi=2 / n_i)
        vector = (lambda n: (n, 1, 1)) if conv else (lambda n: (1, n))
        state[f'{inhibition}.{names[0]}'] = rand(*vector(n_i), lo=0.05, hi=0.15)
        state[f'{inhibition}.{names[1]}'] = rand(*vector(n_e), lo=0.5, hi=1.5)
        state[f'{inhibition}.bias'] = rand(*vector(n_e), lo=-0.2, hi=0.4, negatives=False)
    return state


def deepeisnn_vgg8(names=NEW_NAMES, seed=0):
    """A checkpoint of the authors' EI-VGG-8 for DVS-Gesture (2 input channels, 11 classes)."""
    return authors_state(VGG8_DVSGESTURE, names, seed)


def deepeisnn_resnet18(seed=0):
    """A checkpoint of the authors' EI-ResNet-18 for CIFAR-10."""
    return authors_state(RESNET18_CIFAR10, seed=seed)


@pytest.mark.parametrize('layers, keys', [(VGG8_DVSGESTURE, AUTHORS_VGG8_DVSGESTURE),
                                          (VGG16_CIFAR10, AUTHORS_VGG16_CIFAR10),
                                          (RESNET18_CIFAR10, AUTHORS_RESNET18_CIFAR10)])
def test_the_test_checkpoints_have_the_authors_key_names(layers, keys):
    assert list(authors_state(layers)) == keys


@pytest.mark.parametrize('layers, config', [
    (VGG8_DVSGESTURE, CONFIG),
    (VGG16_CIFAR10, {**CONFIG, 'num_layers': 16, 'dataset': 'CIFAR10'}),
    (RESNET18_CIFAR10, {**CONFIG, 'arch': 'ResNet', 'num_layers': 18, 'dataset': 'CIFAR10'}),
])
def test_every_tensor_of_the_authors_lands_in_its_sj_ei_parameter(layers, config):
    state = authors_state(layers)
    net = convert.from_deepeisnn(state, config)
    assert [name for name, _ in sj_ei.ei_layers(net)] == [row[2] for row in layers]
    for projection, inhibition, ours, _, _, k in layers:
        layer = net.get_submodule(ours)
        ee, ie = ('conv_ee.weight', 'conv_ie.weight') if k else ('weight_ee', 'weight_ie')
        expected = {'weight_ee': state[f'{projection}.{ee}'].clamp(min=0),
                    'weight_ie': state[f'{projection}.{ie}'].clamp(min=0),
                    'weight_ei': state[f'{inhibition}.weight_ei'].clamp(min=0)}
        if k:  # the readout has no g_I, g_E, b_E (the authors' forward does not use theirs)
            expected.update(gain_i=state[f'{inhibition}.gain_i'].flatten().clamp(min=0),
                            gain_e=state[f'{inhibition}.gain_e'].flatten().clamp(min=0),
                            bias=state[f'{inhibition}.bias'].flatten())
        for name, value in expected.items():
            assert torch.equal(getattr(layer, name), value), (ours, name)


# ---- an independent float64 reference: docs/method.md sections 1-2 on the authors' tensors ----------------
def _tensors(state, prefix, names, conv):
    """The authors' tensors of one layer, clamped where their forward clamps them."""
    get = lambda key: state[key].double()
    ee, ie = (get(f'{prefix[0]}.conv_ee.weight'), get(f'{prefix[0]}.conv_ie.weight')) if conv else \
        (get(f'{prefix[0]}.weight_ee'), get(f'{prefix[0]}.weight_ie'))
    ei, gi, ge = (get(f'{prefix[1]}.{n}') for n in ('weight_ei', *names))
    return [t.clamp(min=0) for t in (ee, ie, ei, gi.flatten(), ge.flatten())] + [get(f'{prefix[1]}.bias').flatten()]


def lif(currents):
    """LIF, tau=2, no input decay, threshold 1, soft reset, over ``[T, ...]``."""
    v, spikes = torch.zeros_like(currents[0]), []
    for i_int in currents:
        h = 0.5 * v + i_int
        s = (h >= 1.0).double()
        v = h - s
        spikes.append(s)
    return torch.stack(spikes)


def spiking_conv(x_seq, state, prefix, names=NEW_NAMES, stride=1, padding=1):
    ee, ie, ei, gi, ge, b = _tensors(state, prefix, names, conv=True)
    return lif(torch.stack([spec.ei_layer(x, ee, ie, ei, gi, ge, b, stride=stride, padding=padding) for x in x_seq]))


def readout(features, state, prefix, names=NEW_NAMES):
    ee, ie, ei = _tensors(state, prefix, names, conv=False)[:3]
    return torch.stack([spec.ei_layer(f, ee, ie, ei, readout=True) for f in features]).mean(0)


def reference_vgg8(state, x, names=NEW_NAMES):
    """The authors' EI-VGG-8 (every convolution followed by 2x2 average pooling) on ``x [T, B, 2, H, W]``."""
    out = x.double()
    for projection, inhibition, _, _, _, k in VGG8_DVSGESTURE[:-1]:
        out = spiking_conv(out, state, (projection, inhibition), names)
        out = torch.stack([F.avg_pool2d(s, 2) for s in out])
    return readout(out.flatten(2), state, VGG8_DVSGESTURE[-1][:2], names), out


def reference_resnet18(state, x):
    """The authors' SEW basic block: spikes of conv2 plus the shortcut's spikes (identity or downsample)."""
    out = spiking_conv(x.double(), state, ('conv1', 'norm1'))
    for stage in range(1, 5):
        for b in range(2):
            p, stride = f'layer{stage}.{b}.', 2 if stage > 1 and b == 0 else 1
            main = spiking_conv(out, state, (p + 'conv1', p + 'norm1'), stride=stride)
            main = spiking_conv(main, state, (p + 'conv2', p + 'norm2'))
            shortcut = spiking_conv(out, state, (p + 'downsample.0', p + 'downsample.1'), stride=stride, padding=0) \
                if p + 'downsample.0.conv_ee.weight' in state else out
            out = main + shortcut
    features = out.mean((-2, -1))
    return readout(features, state, ('fc', 'final_ei_norm')), out


def logits(net, x):
    net.double()  # in float64 like the reference, so that no spike flips on rounding
    with torch.no_grad():
        return net(x.double()).mean(0)


def test_published_safetensors_model_gives_the_spec_logits(tmp_path):
    """A model card folder as published: model.safetensors (current names) and config.json."""
    state = deepeisnn_vgg8()
    save_file(state, str(tmp_path / 'model.safetensors'))
    (tmp_path / 'config.json').write_text(json.dumps(CONFIG))
    net = convert.from_deepeisnn(tmp_path)
    assert all(bool(layer.initialized) for _, layer in sj_ei.ei_layers(net))
    x = (torch.rand(2, 2, 2, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    expected, last_spikes = reference_vgg8(state, x)
    assert 0.02 < last_spikes.mean() < 0.9  # the comparison is not between silent networks
    torch.testing.assert_close(logits(net, x), expected, rtol=1e-9, atol=1e-9)


def test_training_checkpoint_pth_loads_into_a_built_model(tmp_path):
    """A .pth as the authors' train.py writes it (old parameter names, config and NumPy RNG state
    inside), loaded with weights_only=True into a model the caller built."""
    state = deepeisnn_vgg8(OLD_NAMES, seed=1)
    config = {**CONFIG, 'dataset': 'CIFAR10DVS'}
    path = tmp_path / 'ckpt-best.pth'
    torch.save({'next_epoch': 7, 'model_state_dict': {'module.' + k: v for k, v in state.items()},
                'best_val_acc': 71.5, 'config': config, 'np_rng_state': np.random.get_state(),
                'py_rng_state': random.getstate(), 'rng_state': torch.get_rng_state()}, path)
    net = convert.load_pretrained(models.build('vgg8', 11, 2), path)
    x = (torch.rand(2, 2, 2, 32, 32, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    torch.testing.assert_close(logits(net, x), reference_vgg8(state, x, OLD_NAMES)[0], rtol=1e-9, atol=1e-9)


def test_resnet18_checkpoint_gives_the_spec_logits():
    state = deepeisnn_resnet18()
    net = convert.from_deepeisnn(state, {'arch': 'ResNet', 'num_layers': 18, 'num_classes': 10, 'in_channels': 3,
                                         'T': 2})
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))  # static image, repeated T=2 times
    expected, last_spikes = reference_resnet18(state, torch.stack([x, x]))
    assert 0.02 < (last_spikes > 0).double().mean() < 0.95
    torch.testing.assert_close(logits(net, x), expected, rtol=1e-9, atol=1e-9)


def test_neuron_settings_of_the_config_reach_the_e_populations():
    net = convert.from_deepeisnn(deepeisnn_vgg8(), {**CONFIG, 'neuron': {'tau': 3, 'surrogate_function': 'atan'}})
    lifs = [m.neuron for m in net.modules() if isinstance(m, sj_ei.EIBlock)]
    assert len(lifs) == 5 and all(n.tau == 3.0 and isinstance(n.surrogate_function, surrogate.ATan) for n in lifs)
    assert all(n.step_mode == 'm' and n.v_reset is None and not n.decay_input for n in lifs)


def test_a_checkpoint_of_another_layout_names_what_did_not_map(tmp_path):
    state = deepeisnn_vgg8()
    state['layers.99.running_mean'] = torch.zeros(3)
    del state['layers.9.weight_ei']
    with pytest.raises(convert.ConversionError) as e:
        convert.from_deepeisnn(state, CONFIG)
    assert "keys that did not map (1) ['layers.99.running_mean']" in str(e.value)
    assert "sj_ei parameters with no value (1) ['features.2.layer.weight_ei (from layers.9.weight_ei)']" in str(e.value)
    # the same checkpoint read as a VGG-11: keys and parameters disagree, and the message says which
    with pytest.raises(convert.ConversionError, match=r"did not map \(18\) \['layers.22.conv_ee.weight'.*no value "
                                                      r"\(33\) \['features.5.layer.weight_ee \(from layers.21.conv_ee.weight\)"):
        convert.from_deepeisnn(deepeisnn_vgg8(), {**CONFIG, 'num_layers': 11})
    torch.save({'model_state_dict': deepeisnn_vgg8(), 'run': torch.nn.ReLU()}, tmp_path / 'pickled.pth')
    with pytest.raises(convert.ConversionError, match='cannot read .*pickled.pth as a checkpoint'):
        convert.from_deepeisnn(tmp_path / 'pickled.pth', CONFIG)


@pytest.mark.parametrize('config, message', [
    ({**CONFIG, 'light_classifier': False}, '4096-4096 classifier'),
    ({**CONFIG, 'type': 'BN-SNN'}, 'BN-SNN model'),
    ({**CONFIG, 'num_layers': 13}, 'vgg13 has no sj_ei counterpart'),
    ({'arch': 'VGG', 'num_layers': 8}, 'needs dataset'),
])
def test_configs_without_an_sj_ei_counterpart_are_refused(config, message):
    with pytest.raises(convert.ConversionError, match=message):
        convert.from_deepeisnn(deepeisnn_vgg8(), config)


# ---- sj_ei's own checkpoints ----------------------------------------------------------------
def moving_dots(n=4):
    """``[T=2, n, 2, 32, 32]`` event frames of the built-in synthetic data (dots moving on a dark field)."""
    data = datasets.build('synthetic', None, 2, True, num_samples=n, num_test_samples=n, size=32, seed=0)
    return torch.stack([data[i][0] for i in range(n)], 1)


@pytest.mark.parametrize('norm', ['ei', 'bn'])
def test_an_sj_ei_checkpoint_loads_into_a_new_model_of_its_kind(tmp_path, norm):
    x = moving_dots()
    trained = models.build('vgg8', 8, 2, norm=norm, width=0.0625)
    if norm == 'ei':
        sj_ei.ei_init(trained, x)
    else:  # batch norm running statistics, as after training
        with torch.no_grad():
            trained(x)
        functional.reset_net(trained)
    trained.eval()
    torch.save(trained.state_dict(), tmp_path / 'weights.pth')
    fresh = convert.load_pretrained(models.build('vgg8', 8, 2, norm=norm, width=0.0625), tmp_path / 'weights.pth')
    fresh.eval()
    assert all(bool(layer.initialized) for _, layer in sj_ei.ei_layers(fresh))  # no E-I Init on top of it
    with torch.no_grad():
        expected = trained(x)
        functional.reset_net(trained)
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)


def test_a_train_classify_checkpoint_loads_and_other_models_are_named(tmp_path):
    net = sj_ei.ei_init(models.build('vgg8', 8, 2, width=0.0625), moving_dots())
    checkpoint.save(tmp_path / 'checkpoint_max.pth', model=net.state_dict(), optimizer={}, scheduler={}, scaler={},
                    epoch=3, best_acc1=50.0, config={'model': 'vgg8', 'norm': 'ei'}, rng=[checkpoint.rng_states()])
    loaded = convert.load_pretrained(models.build('vgg8', 8, 2, width=0.0625), tmp_path / 'checkpoint_max.pth')
    assert torch.equal(loaded.features[0].layer.weight_ee, net.features[0].layer.weight_ee)
    with pytest.raises(convert.ConversionError, match=r'not a checkpoint of this sj_ei model: shapes that differ \(32\) '
                                                      r"\['features.0.layer.weight_ee \(4, 2, 3, 3\) -> \(8, 2, 3, 3\)"):
        convert.load_pretrained(models.build('vgg8', 8, 2, width=0.125), tmp_path / 'checkpoint_max.pth')
    with pytest.raises(convert.ConversionError, match=r'keys the model lacks \(39\) .*model entries with no value \(32\)'):
        convert.load_pretrained(models.build('vgg8', 8, 2, norm='bn', width=0.0625), tmp_path / 'checkpoint_max.pth')


def test_a_foreign_or_damaged_checkpoint_is_one_clear_error(tmp_path):
    torch.save({'state_dict': {'fc.weight': torch.ones(2, 3), 'fc.bias': torch.ones(2)}}, tmp_path / 'resnet.pth')
    with pytest.raises(convert.ConversionError, match=r"resnet.pth is neither an sj_ei model .* nor a DeepEISNN E-I "
                                                      r"model .*its keys: \(2\) \['fc.weight', 'fc.bias'\]"):
        convert.load_pretrained(models.build('vgg8', 8, 2, width=0.0625), tmp_path / 'resnet.pth')
    torch.save(deepeisnn_vgg8(), tmp_path / 'cut.pth')
    (tmp_path / 'cut.pth').write_bytes((tmp_path / 'cut.pth').read_bytes()[:5000])
    with pytest.raises(convert.ConversionError, match=r'cannot read .*cut.pth as a checkpoint .*; the file is damaged'):
        convert.load_pretrained(models.build('vgg8', 11, 2), tmp_path / 'cut.pth')


# ---- spikingjelly networks ------------------------------------------------------------------
def trains_one_step(net, x):
    sj_ei.ei_init(net, x)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    sj_ei.constrain(net, optimizer)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    loss = F.cross_entropy(net(x).mean(0), torch.arange(x.shape[1]) % 10)
    loss.backward()
    optimizer.step()
    functional.reset_net(net)
    assert torch.isfinite(loss)
    changed = {name for name, p in net.named_parameters() if not torch.equal(before[name], p)}
    assert {f'{name}.weight_ee' for name, _ in sj_ei.ei_layers(net)} <= changed


PAPER_LIF = dict(spiking_neuron=neuron.LIFNode, tau=2.0, decay_input=False, v_reset=None, detach_reset=True)


def test_to_ei_converts_spiking_vgg11_bn():
    """Every Conv2d and Linear, the classifier's hidden ones too; the last Linear stays (readout=False)."""
    net = spiking_vgg.spiking_vgg11_bn(num_classes=10, **PAPER_LIF)
    linears = [net.classifier[0], net.classifier[3]]
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    convert.to_ei(net)
    layers = sj_ei.ei_layers(net)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert [(l.in_channels, l.out_channels, l.kernel_size, l.padding, l.readout, bool(l.initialized))
            for _, l in layers[:8]] == [(c.in_channels, c.out_channels, c.kernel_size, c.padding, False, False)
                                        for c in convs]
    assert [(l.fan_in, l.n_e, l.readout) for _, l in layers[8:]] == [(m.in_features, m.out_features, False)
                                                                     for m in linears]
    assert type(net.classifier[6]) is type(linears[0]) and type(net.classifier[2]).__name__ == 'Dropout'
    functional.set_step_mode(net, 'm')
    trains_one_step(net, (torch.rand(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.3).float())


def test_to_ei_converts_spiking_resnet18_with_an_ei_readout():
    net = convert.to_ei(spiking_resnet.spiking_resnet18(num_classes=10, **PAPER_LIF), readout=True)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert isinstance(net.fc, sj_ei.EILinear) and net.fc.readout and net.fc.n_i == 2
    assert len(sj_ei.ei_layers(net)) == 1 + 16 + 3 + 1  # stem, 8 blocks of 2, 3 downsamples, readout
    # the block's forward adds the shortcut to conv2's current before sn2: no EIBlock, the neurons replaced in place
    assert isinstance(net.layer2[0].sn2, sj_ei.EILIFNode) and isinstance(net.layer2[0].conv2, sj_ei.EIConv2d)
    functional.set_step_mode(net, 'm')
    trains_one_step(net, (torch.rand(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.3).float())


def test_a_network_without_batch_norm_is_converted_whole():
    """Conv2d and Linear layers with biases and no batch norm; a neuron before the first layer is no E population
    and stays; SEW blocks' connect functions, dropout and pooling stay (tests/test_zoo.py trains them)."""
    encoder = neuron.IFNode()
    net = torch.nn.Sequential(encoder, torch.nn.Conv2d(2, 8, 3, padding=1), neuron.LIFNode(), torch.nn.AvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 16), neuron.LIFNode(),
                              torch.nn.Dropout(0.1), torch.nn.Linear(16, 4))
    convert.to_ei(net, readout=True, i_population=sj_ei.IPopulation('count', 2.0))
    assert net[0] is encoder
    populations = [layer.i_population for _, layer in sj_ei.ei_layers(net)]
    assert len({id(p) for p in populations}) == 3 and all(p.mode == 'count' for p in populations)  # one each
    assert [type(m).__name__ for m in net] == ['IFNode', 'EIBlock', 'Identity', 'AvgPool2d', 'Flatten', 'EIBlock',
                                               'Identity', 'Dropout', 'EILinear']
    assert net[8].readout and net[1].layer.fan_in == 18 and net[5].layer.fan_in == 128


def test_to_ei_names_what_it_cannot_convert_and_changes_nothing():
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 8, 3, groups=2),
                              torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.BatchNorm2d(8))
    with pytest.raises(convert.ConversionError, match=r"to_ei cannot convert: 2: Conv2d with groups=2.*; "
                                                      r"5: BatchNorm2d not directly after a Conv2d"):
        convert.to_ei(net)
    assert isinstance(net[0], torch.nn.Conv2d) and isinstance(net[1], torch.nn.BatchNorm2d)
    with pytest.raises(convert.ConversionError, match='has no Conv2d or Linear layer to convert'):
        convert.to_ei(torch.nn.Sequential(torch.nn.ReLU(), neuron.IFNode()))
    with pytest.raises(convert.ConversionError, match="neurons must be 'ei' .* or 'keep'"):
        convert.to_ei(torch.nn.Sequential(torch.nn.Linear(4, 4)), neurons='lif')
