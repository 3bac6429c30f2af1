"""E-I Init (docs/method.md section 3): data-driven, once, in forward order, saved in the state_dict."""
import math

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron

import sj_ei
from sj_ei.currents import integrate


def bernoulli(p, shape=(4, 8, 3, 32, 32)):
    return (torch.rand(shape) < p).float()


def layer_statistics(net, x):
    """Per E population: (mean of its input I_int, std of I_int, firing rate)."""
    stats = []

    def record(module, inputs, spikes):
        i_int = inputs[0]
        if isinstance(i_int, sj_ei.EICurrents):  # a fused E population integrates the currents itself
            i_int = integrate(i_int, channel_dim=2)
        stats.append((i_int.mean().item(), i_int.std().item(), spikes.mean().item()))

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, neuron.LIFNode)]
    with torch.no_grad():
        net(x)
    functional.reset_net(net)
    for h in hooks:
        h.remove()
    return stats


@pytest.mark.parametrize('p', [0.05, 0.2, 0.5])
def test_vgg16_after_init_neither_silences_nor_saturates(p):
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg16', 10, 3)
    sj_ei.ei_init(net, bernoulli(p))
    stats = layer_statistics(net, bernoulli(p))
    assert len(stats) == 13
    for depth, (mean, std, rate) in enumerate(stats):
        assert abs(mean) <= 0.3, (depth, mean)
        assert 0.5 <= std <= 1.5, (depth, std)
        assert 0.01 < rate < 0.5, (depth, rate)


def test_plain_snn_of_the_same_shape_goes_silent():
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg16', 10, 3, norm='none')
    rates = [rate for _, _, rate in layer_statistics(net, bernoulli(0.2))]
    assert all(rate < 0.01 or rate > 0.5 for rate in rates[4:]), rates


def test_init_follows_the_formulas_of_the_input_statistics():
    torch.manual_seed(0)
    layer = sj_ei.EILinear(400, 64, step_mode='m')
    x = bernoulli(0.3, (4, 64, 400))
    layer.train()(x)
    flat = x.flatten(0, 1).double()
    e_x, e_x2, var_x = flat.mean().item(), flat.square().mean().item(), flat.var(dim=0).mean().item()
    d = 400
    scale = math.sqrt(var_x / (d * (e_x2 + var_x)))
    # exponential weights: mean = std = scale (within sampling error of 64*400 draws)
    for w in (layer.weight_ee, layer.weight_ie):
        assert (w >= 0).all()
        assert w.mean().item() == pytest.approx(scale, rel=0.05)
        assert w.std().item() == pytest.approx(scale, rel=0.08)
    assert torch.equal(layer.weight_ei, torch.full((64, 16), 1 / 16))
    torch.testing.assert_close(layer.gain_i, torch.full((16,), math.sqrt(e_x2 + var_x) / (math.sqrt(d) * e_x)))
    assert torch.equal(layer.gain_e, torch.ones(64)) and torch.equal(layer.bias, torch.zeros(64))
    assert bool(layer.initialized)


def test_init_happens_once_on_the_first_training_forward_only():
    layer = sj_ei.EILinear(20, 8)
    x = bernoulli(0.3, (16, 20))
    layer.eval()(x)
    assert not bool(layer.initialized)
    layer.train()(x)
    weights = layer.weight_ee.detach().clone()
    layer(bernoulli(0.6, (16, 20)))
    assert torch.equal(layer.weight_ee, weights)


def test_initialized_flag_is_saved_so_a_checkpoint_is_never_reinitialized():
    trained = sj_ei.EILinear(20, 8)
    trained(bernoulli(0.3, (16, 20)))
    state = trained.state_dict()
    assert bool(state['initialized'])
    fresh = sj_ei.EILinear(20, 8)
    fresh.load_state_dict(state)
    fresh(bernoulli(0.6, (16, 20)))
    assert torch.equal(fresh.weight_ee, trained.weight_ee)


def test_bernoulli_mode_is_data_free():
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 10, 2, width=0.25)
    sj_ei.ei_init(net, p=0.2)
    d = 2 * 9
    layer = net.features[0].layer
    assert layer.gain_i[0].item() == pytest.approx(math.sqrt(0.2 + 0.16) / (math.sqrt(d) * 0.2))
    assert all(bool(m.initialized) for _, m in sj_ei.ei_layers(net))


def test_silent_input_names_the_layer():
    net = sj_ei.models.build('vgg8', 10, 2, width=0.25)
    with pytest.raises(sj_ei.EIInitError, match=r"EIConv2d 'features\.0\.layer'.*silent"):
        sj_ei.ei_init(net, torch.zeros(2, 2, 2, 32, 32))


def test_constant_input_is_an_error():
    layer = sj_ei.EILinear(20, 8)
    with pytest.raises(sj_ei.EIInitError, match='constant'):
        layer(torch.ones(4, 20))


CIFAR_MEAN, CIFAR_STD = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])


def stroke_images(n, background, seed=0):
    """``[n, 3, 32, 32]`` pixels in [0, 1]: a background of brightness ``background`` with a little
    texture, and a few bright coloured strokes (line segments 2 pixels wide) per image."""
    g = torch.Generator().manual_seed(seed)
    images = (background + 0.05 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    t = torch.linspace(0, 1, 64)
    for image in images:
        for _ in range(3):
            (x0, y0, x1, y1), colour = torch.rand(4, generator=g) * 29, 0.6 + 0.4 * torch.rand(3, generator=g)
            xs, ys = (x0 + (x1 - x0) * t).long(), (y0 + (y1 - y0) * t).long()
            for dx in (0, 1):
                image[:, ys, xs + dx] = colour[:, None]
    return images


def normalized(images):
    return (images - CIFAR_MEAN.view(3, 1, 1)) / CIFAR_STD.view(3, 1, 1)


@pytest.mark.parametrize('background', [0.05, 0.5], ids=['dark', 'grey'])
def test_images_normalized_by_mean_and_std_are_refused_with_what_to_do(background):
    """A dark batch normalized by CIFAR's statistics is negative on average; a grey one is slightly
    positive on average, which used to give silently huge gains.  Both are refused, naming the layer."""
    torch.manual_seed(0)
    images = stroke_images(8, background)
    net = sj_ei.models.build('vgg8', 10, 3, T=2, width=0.125)
    with pytest.raises(sj_ei.EIInitError, match=r"EIConv2d 'features\.0\.layer': its input at E-I Init has "
                                                r"negative values.*non-negative.*ToTensor\(\) without Normalize"):
        sj_ei.ei_init(net, normalized(images))
    sj_ei.ei_init(net, images)  # the same pixels in [0, 1]
    assert 0.05 < net.features[0].layer.gain_i[0].item() < 1.0


def test_lazy_init_in_a_training_forward_names_the_layer():
    net = sj_ei.models.build('vgg8', 10, 2, width=0.125).train()
    with pytest.raises(sj_ei.EIInitError, match=r"EIConv2d 'features\.0\.layer'.*silent"):
        net(torch.zeros(2, 2, 2, 32, 32))
    mine = torch.nn.Sequential(layer.Flatten(step_mode='m'), sj_ei.EILinear(8, 8, step_mode='m'))
    with pytest.raises(sj_ei.EIInitError, match=r"^EILinear: .*constant"):  # not named yet
        mine(torch.ones(2, 3, 2, 2, 2))
    sj_ei.ei_layers(mine)  # names the E-I layers of the network, as ei_init and models.build do
    with pytest.raises(sj_ei.EIInitError, match=r"^EILinear '1': .*constant"):
        mine(torch.ones(2, 3, 2, 2, 2))
