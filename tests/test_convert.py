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
from sj_ei import convert, models

import spec

VGG8 = [64, 'P', 128, 'P', 256, 'P', 512, 'P', 512, 'P']
CONFIG = {'type': 'EI-SNN', 'arch': 'VGG', 'num_layers': 8, 'dataset': 'DVSGesture', 'T': 2, 'ei_ratio': 4,
            'light_classifier': True, 'dropout': 0.0, 'neuron': {'tau': 2.0}}
# The authors renamed the inhibition module's alpha/gain to gain_i/gain_e on 2026-02-14; their
# published model.safetensors files load into the renamed code, older .pth checkpoints have the old names.
NEW_NAMES, OLD_NAMES = ('gain_i', 'gain_e'), ('alpha', 'gain')


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

    def ei_layer(self, state, projection, inhibition, fan_in, n_e, weight_tail, names, conv):
        """One E-I layer in the authors' layout: projection module, then inhibition module."""
        n_i = n_e // 4
        ee, ie = ('conv_ee.weight', 'conv_ie.weight') if conv else ('weight_ee', 'weight_ie')
        state[f'{projection}.{ee}'] = self(n_e, *weight_tail, hi=2 / math.sqrt(fan_in) / 3)
        state[f'{projection}.{ie}'] = self(n_i, *weight_tail, hi=2 / math.sqrt(fan_in) / 3)
        state[f'{inhibition}.weight_ei'] = self(n_e, n_i, hi=2 / n_i)
        vector = (lambda n: (n, 1, 1)) if conv else (lambda n: (1, n))
        state[f'{inhibition}.{names[0]}'] = self(*vector(n_i), lo=0.05, hi=0.15)
        state[f'{inhibition}.{names[1]}'] = self(*vector(n_e), lo=0.5, hi=1.5)
        state[f'{inhibition}.bias'] = self(*vector(n_e), lo=-0.2, hi=0.4, negatives=False)


def deepeisnn_vgg8(names=NEW_NAMES, seed=0, in_channels=2, num_classes=11):
    """A state dict in the layout of the authors' EI-VGG-8 for event data: their ``layers``
    Sequential is MergeTemporalDim, then per conv EiConv2d, EiNorm2d, Split, LIF, Dropout, Merge,
    per pooling AvgPool2d, then Flatten, EiLinear, EiNorm1d(output_layer=True), Split."""
    rand, state, index, cin = Random(seed), {}, 1, in_channels
    for item in VGG8:
        if item == 'P':
            index += 1
            continue
        rand.ei_layer(state, f'layers.{index}', f'layers.{index + 1}', cin * 9, item, (cin, 3, 3), names, conv=True)
        index, cin = index + 6, item
    rand.ei_layer(state, f'layers.{index + 1}', f'layers.{index + 2}', 512, num_classes, (512,), names, conv=False)
    return state


def deepeisnn_resnet18(seed=0, in_channels=3, num_classes=10):
    """A state dict in the layout of the authors' EI-ResNet-18: stem conv1/norm1; layer{1-4}.{0,1}
    with conv1/norm1, conv2/norm2 and (shape changes) downsample.0/downsample.1; fc/final_ei_norm."""
    rand, state = Random(seed), {}
    conv = lambda p, n, cin, cout, k: rand.ei_layer(state, p + 'conv' + n, p + 'norm' + n, cin * k * k, cout,
                                                    (cin, k, k), NEW_NAMES, conv=True)
    conv('', '1', in_channels, 64, 3)
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), 1):
        for b in range(2):
            p = f'layer{stage}.{b}.'
            conv(p, '1', cin, cout, 3)
            conv(p, '2', cout, cout, 3)
            if b == 0 and cin != cout:
                rand.ei_layer(state, p + 'downsample.0', p + 'downsample.1', cin, cout, (cin, 1, 1), NEW_NAMES, True)
            cin = cout
    rand.ei_layer(state, 'fc', 'final_ei_norm', 512, num_classes, (512,), NEW_NAMES, conv=False)
    return state


# ---- an independent float64 reference: SPEC sections 1-2 on the authors' tensors ----------------
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
    out, index = x.double(), 1
    for item in VGG8:
        if item == 'P':
            out, index = torch.stack([F.avg_pool2d(s, 2) for s in out]), index + 1
        else:
            out, index = spiking_conv(out, state, (f'layers.{index}', f'layers.{index + 1}'), names), index + 6
    return readout(out.flatten(2), state, (f'layers.{index + 1}', f'layers.{index + 2}'), names), out


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
    net = spiking_vgg.spiking_vgg11_bn(num_classes=10, **PAPER_LIF)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    convert.to_ei(net)
    layers = sj_ei.ei_layers(net)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert [(l.in_channels, l.out_channels, l.kernel_size, l.padding, l.readout, l._initialized) for _, l in layers] == \
        [(c.in_channels, c.out_channels, c.kernel_size, c.padding, False, False) for c in convs]
    assert isinstance(net.classifier[6], torch.nn.Linear)  # the classifier is kept
    functional.set_step_mode(net, 'm')
    trains_one_step(net, (torch.rand(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.3).float())


def test_to_ei_converts_spiking_resnet18_with_an_ei_readout():
    net = convert.to_ei(spiking_resnet.spiking_resnet18(num_classes=10, **PAPER_LIF), readout=True)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert isinstance(net.fc, sj_ei.EILinear) and net.fc.readout and net.fc.n_i == 2
    assert len(sj_ei.ei_layers(net)) == 1 + 16 + 3 + 1  # stem, 8 blocks of 2, 3 downsamples, readout
    functional.set_step_mode(net, 'm')
    trains_one_step(net, (torch.rand(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.3).float())


def test_to_ei_names_what_it_cannot_convert_and_changes_nothing():
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 8, 3, groups=2),
                              torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.BatchNorm2d(8))
    with pytest.raises(convert.ConversionError, match=r"to_ei cannot convert: 2: Conv2d with groups=2.*; "
                                                      r"5: BatchNorm2d not directly after a Conv2d"):
        convert.to_ei(net)
    assert isinstance(net[0], torch.nn.Conv2d) and isinstance(net[1], torch.nn.BatchNorm2d)
    with pytest.raises(convert.ConversionError, match='has no Conv2d followed by a batch norm'):
        convert.to_ei(torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU()))
