"""E-I Init (SPEC section 3): data-driven, once, in forward order, saved in the state_dict."""
import math

import pytest
import torch
from spikingjelly.activation_based import functional, neuron

import sj_ei


def bernoulli(p, shape=(4, 8, 3, 32, 32)):
    return (torch.rand(shape) < p).float()


def layer_statistics(net, x):
    """Per E population: (mean of its input I_int, std of I_int, firing rate)."""
    stats = []
    hooks = [m.register_forward_hook(lambda m, i, o: stats.append((i[0].mean().item(), i[0].std().item(),
                                                                     o.mean().item())))
             for m in net.modules() if isinstance(m, neuron.LIFNode)]
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
