"""Existing work comes in: DeepEISNN checkpoints (their layout, safetensors and .pth) and
spikingjelly's own batch-norm CNNs."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.model import spiking_resnet, spiking_vgg

import sj_ei
from sj_ei import convert

import spec

VGG8 = [64, 'P', 128, 'P', 256, 'P', 512, 'P', 512, 'P']
CONFIG = {'type': 'EI-SNN', 'arch': 'VGG', 'num_layers': 8, 'dataset': 'DVSGesture', 'T': 2, 'ei_ratio': 4,
          'light_classifier': True}


def deepeisnn_vgg8(seed=0):
    """A state dict in the layout of the authors' EI-VGG-8 for DVS-Gesture (input with a time
    dimension, so no AddTemporalDim module: ``layers.0`` is MergeTemporalDim), random values."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, lo=0.0, hi=1.0: lo + (hi - lo) * torch.rand(shape, generator=g)
    state, index, cin = {}, 1, 2
    for item in VGG8:
        if item == 'P':
            index += 1  # AvgPool2d
            continue
        d, n_i = cin * 9, item // 4
        state[f'layers.{index}.conv_ee.weight'] = rand(item, cin, 3, 3, hi=2 / math.sqrt(d) / 3)
        state[f'layers.{index}.conv_ie.weight'] = rand(n_i, cin, 3, 3, hi=2 / math.sqrt(d) / 3)
        state[f'layers.{index + 1}.weight_ei'] = rand(item, n_i, hi=2 / n_i)
        state[f'layers.{index + 1}.alpha'] = rand(n_i, 1, 1, lo=0.05, hi=0.15)
        state[f'layers.{index + 1}.gain'] = rand(item, 1, 1, lo=0.5, hi=1.5)
        state[f'layers.{index + 1}.bias'] = rand(item, 1, 1, lo=-0.2, hi=0.4)
        index += 6  # EiConv2d, EiNorm2d, SplitTemporalDim, LIF, Dropout, MergeTemporalDim
        cin = item
    index += 1  # Flatten
    state[f'layers.{index}.weight_ee'] = rand(11, 512, hi=0.1)
    state[f'layers.{index}.weight_ie'] = rand(2, 512, hi=0.1)
    state[f'layers.{index + 1}.weight_ei'] = rand(11, 2, hi=1.0)
    state[f'layers.{index + 1}.alpha'] = rand(1, 2)
    state[f'layers.{index + 1}.gain'] = rand(1, 11)
    state[f'layers.{index + 1}.bias'] = rand(1, 11)
    return state


def spec_vgg8_logits(state, x):
    """SPEC sections 1-2 applied to the checkpoint's tensors in float64: E-I layers, LIF with
    tau=2 and soft reset, 2x2 average pooling, readout after global pooling, mean over T."""
    w = {k: v.double() for k, v in state.items()}
    keys = sorted({k.rsplit('.', 2)[0] for k in w if k.endswith('conv_ee.weight')}, key=lambda k: int(k.split('.')[1]))
    out = x.double()
    for prefix in keys:
        i = int(prefix.split('.')[1])
        norm = f'layers.{i + 1}.'
        currents = torch.stack([spec.ei_layer(
            out_t, w[f'{prefix}.conv_ee.weight'], w[f'{prefix}.conv_ie.weight'], w[norm + 'weight_ei'],
            w[norm + 'alpha'].flatten(), w[norm + 'gain'].flatten(), w[norm + 'bias'].flatten(), padding=1)
            for out_t in out])
        v, spikes = torch.zeros_like(currents[0]), []
        for i_int in currents:
            h = 0.5 * v + i_int
            s = (h >= 1.0).double()
            v = h - s
            spikes.append(s)
        out = torch.stack([F.avg_pool2d(s, 2) for s in spikes])
    features = out.flatten(2)
    fc, head = sorted({k.rsplit('.', 1)[0] for k in w if k.endswith('weight_ie') and 'conv' not in k})[0], None
    head = f'layers.{int(fc.split(".")[1]) + 1}.'
    logits = torch.stack([spec.ei_layer(f, w[fc + '.weight_ee'], w[fc + '.weight_ie'], w[head + 'weight_ei'],
                                        readout=True) for f in features])
    return logits.mean(0)


@pytest.mark.parametrize('fmt', ['safetensors', 'pth'])
def test_deepeisnn_checkpoint_gives_the_spec_logits(tmp_path, fmt):
    state = deepeisnn_vgg8()
    if fmt == 'safetensors':
        path = tmp_path / 'model.safetensors'
        save_file(state, str(path))
        (tmp_path / 'config.json').write_text(json.dumps(CONFIG))
        net = convert.from_deepeisnn(path)  # config.json read from beside the weights
    else:
        path = tmp_path / 'checkpoint.pth'
        torch.save({'epoch': 3, 'state_dict': {'module.' + k: v for k, v in state.items()}}, path)
        net = convert.from_deepeisnn(path, CONFIG)
    assert all(bool(layer.initialized) for _, layer in sj_ei.ei_layers(net))
    torch.manual_seed(0)
    x = (torch.rand(2, 2, 2, 32, 32) < 0.3).float()
    net.eval().double()  # in float64 like the reference, so that no spike flips on rounding
    with torch.no_grad():
        logits = net(x.double()).mean(0)
    expected = spec_vgg8_logits(state, x)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)


def test_a_file_of_another_layout_names_the_keys_that_did_not_map(tmp_path):
    state = deepeisnn_vgg8()
    state['layers.99.running_mean'] = torch.zeros(3)
    del state['layers.2.weight_ei']
    with pytest.raises(convert.ConversionError, match=r"keys that did not map: \[.*'layers.99.running_mean'"):
        convert.from_deepeisnn(state, CONFIG)


def trains_one_step(net, x):
    sj_ei.ei_init(net, x)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    sj_ei.constrain(net, optimizer)
    before = [p.detach().clone() for p in net.parameters()]
    loss = F.cross_entropy(net(x).mean(0), torch.arange(x.shape[1]) % 10)
    loss.backward()
    optimizer.step()
    functional.reset_net(net)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize('build', [
    lambda: spiking_vgg.spiking_vgg11_bn(num_classes=10, spiking_neuron=sj_ei.e_population().__class__,
                                         tau=2.0, decay_input=False, v_reset=None, detach_reset=True),
    lambda: spiking_resnet.spiking_resnet18(num_classes=10, spiking_neuron=sj_ei.e_population().__class__,
                                            tau=2.0, decay_input=False, v_reset=None, detach_reset=True),
], ids=['spiking_vgg11_bn', 'spiking_resnet18'])
def test_to_ei_converts_spikingjelly_zoo_networks(build):
    net = convert.to_ei(build())
    functional.set_step_mode(net, 'm')
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert len(sj_ei.ei_layers(net)) >= 8
    torch.manual_seed(0)
    trains_one_step(net, (torch.rand(2, 4, 3, 32, 32) < 0.3).float())


def test_to_ei_names_what_it_cannot_convert():
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, groups=2), torch.nn.BatchNorm2d(8),
                              torch.nn.ReLU(), torch.nn.BatchNorm2d(8))
    with pytest.raises(convert.ConversionError, match=r"0: a Conv2d with groups=2.*3: a BatchNorm2d that does not follow"):
        convert.to_ei(net)
