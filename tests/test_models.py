"""The paper's architectures (docs/method.md section 6) as E-I, batch-norm and plain SNNs."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional

import sj_ei


@pytest.mark.parametrize('name', ['vgg8', 'vgg11', 'vgg16', 'vgg19', 'resnet18'])
@pytest.mark.parametrize('norm', ['ei', 'bn', 'none'])
def test_shapes_and_layouts(name, norm):
    net = sj_ei.models.build(name, 10, 3, norm=norm, width=0.125)
    out = net((torch.rand(2, 2, 3, 32, 32) < 0.3).float())
    assert out.shape == (2, 2, 10)
    convs = sum(isinstance(m, (sj_ei.EIConv2d, nn.Conv2d)) for m in net.modules())
    expected = {'vgg8': 5, 'vgg11': 8, 'vgg16': 13, 'vgg19': 16, 'resnet18': 17 + 3}[name]
    assert convs == expected
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert has_bn == (norm == 'bn')


def test_static_image_is_repeated_over_time():
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 10, 3, T=3, width=0.125)
    image = torch.rand(2, 3, 32, 32)
    out = net(image)
    functional.reset_net(net)
    assert out.shape == (3, 2, 10)
    torch.testing.assert_close(out, net(image.expand(3, 2, 3, 32, 32)))


def test_vgg8_ei_trains_on_dvs_shaped_input_without_batch_norm():
    """48x48 two-channel events, T=4: a fixed problem (two classes of different
    spatial event density) whose loss falls under the paper's recipe."""
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 2, 2)
    labels = torch.arange(8) % 2
    density = torch.where(labels.view(1, 8, 1, 1, 1) == 0, 0.3, 0.05) * torch.ones(4, 8, 2, 48, 48)
    density[..., 24:] = 0.35 - density[..., 24:]
    x = torch.bernoulli(density)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sj_ei.constrain(net, optimizer)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(net(x).mean(0), labels)
        functional.reset_net(net)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def spikes(T=2, B=2, C=3, size=32):
    return (torch.rand(T, B, C, size, size) < 0.3).float()


def test_whole_model_saves_and_deep_copies():
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 10, 3, width=0.125)
    x = spikes()
    sj_ei.ei_init(net, x)
    expected = net(x)
    functional.reset_net(net)
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    for other in (torch.load(buffer, weights_only=False), copy.deepcopy(net)):
        assert torch.equal(other(x), expected)
        functional.reset_net(other)
        assert all(bool(layer.initialized) for _, layer in sj_ei.ei_layers(other))


def test_half_precision_network_divides_in_float32():
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 10, 3, width=0.125)
    x = spikes()
    sj_ei.ei_init(net, x)
    first = net.features[0].layer
    first.output = 'current'  # I_int itself (the block hands its fused neuron the currents)
    expected = first(x)
    net.half()
    out = first(x.half())
    first.output = 'currents'
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    logits = net(x.half())
    assert torch.isfinite(logits).all()  # the fused E population fires float32 spikes (it integrates in float32)
    logits.float().sum().backward()
    assert first.weight_ei.grad.dtype == torch.float16 and torch.isfinite(first.weight_ei.grad).all()


@pytest.mark.parametrize('name, size, needed', [('vgg8', 16, 32), ('vgg16', 24, 32)])
def test_too_small_input_names_the_minimum_size(name, size, needed):
    net = sj_ei.models.build(name, 10, 2, width=0.125)
    with pytest.raises(ValueError, match=rf'input of {size}x{size} is too small.*5 2x2 poolings need at least '
                                         rf'{needed}x{needed}'):
        net(spikes(C=2, size=size))
    assert sj_ei.models.build('resnet18', 10, 2, width=0.125)(spikes(C=2, size=8)).shape == (2, 2, 10)


@pytest.mark.parametrize('name', sj_ei.models.NAMES)
def test_min_size_is_the_smallest_input_a_model_takes(name):
    """``models.min_size`` is the one statement of it (the trainer and sj_ei.benchmark ask it too)."""
    size = sj_ei.models.min_size(name)
    assert size == {'resnet18': 1}.get(name, 32)
    net = sj_ei.ei_init(sj_ei.models.build(name, 10, 2, width=0.0625), p=0.2).eval()
    assert net(spikes(C=2, size=size)).shape == (2, 2, 10)
    if size > 1:
        with pytest.raises(ValueError, match='too small'):
            net(spikes(C=2, size=size - 1))


def test_every_layer_has_an_i_population_of_its_own():
    """One IPopulation passed to build is copied per layer, so hooks on one layer's I population
    (monitors, sj_ei.energy) see only that layer."""
    net = sj_ei.models.build('vgg8', 10, 2, width=0.125, i_population=sj_ei.IPopulation('count', 0.5))
    populations = [layer.i_population for _, layer in sj_ei.ei_layers(net)]
    assert len({id(p) for p in populations}) == len(populations) == 6
    assert all((p.mode, p.theta) == ('count', 0.5) for p in populations)
