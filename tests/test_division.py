"""Hardware-friendly division (sj_ei.division): values, error bounds, straight-through
gradient through a whole E-I layer, and switching it on a network."""
import math

import pytest
import torch
from spikingjelly.activation_based import functional

import sj_ei
from sj_ei import datasets
from sj_ei.division import LUTDivision, ShiftDivision, set_division

from spec import channel_mix, rate, stabilized


def magnitudes():
    """Shunting currents over 17 decades, both signs (Dale's law lifted), in float32."""
    x = torch.logspace(-8, 8, 20001, dtype=torch.float64).float()
    return torch.cat([x, -x])


def event_frames(T=4, batch=4):
    """``[T, B, 2, 32, 32]`` frames of the synthetic random-dot motion data."""
    data = datasets.build('synthetic', None, T, False, num_test_samples=batch, size=32)
    return torch.stack([data[i][0] for i in range(batch)], dim=1)


def test_shift_divides_by_the_nearest_power_of_two():
    x = torch.tensor([3.0, 2.9, 2.8, 1.0, 0.3, 0.125, -3.0, 6.0e-6, math.inf])
    assert ShiftDivision()(x).tolist() == [4.0, 4.0, 2.0, 1.0, 0.25, 0.125, -4.0, 2.0 ** -17, math.inf]


def test_shift_is_within_a_factor_sqrt2():
    x = magnitudes()
    ratio = x / ShiftDivision()(x)
    assert ratio.min() >= 2 ** -0.5 - 1e-6 and ratio.max() <= 2 ** 0.5 + 1e-6
    assert ratio.min() < 0.7072 and ratio.max() > 1.414  # the bound is reached
    powers = ShiftDivision()(x).abs()
    assert torch.equal(powers, torch.exp2(torch.log2(powers).round()))  # every result is a power of two


def test_lut_takes_the_bucket_midpoint_of_the_top_mantissa_bits():
    # 3 = 1.5 * 2^1: with 4 buckets of [1, 2), 1.5 is in [1.5, 1.75), midpoint 1.625
    x = torch.tensor([3.0, 2.75, 1.0, 1.9999, 0.3, -3.0, math.inf])
    assert LUTDivision(4)(x).tolist() == pytest.approx([3.25, 2.75, 1.125, 1.875, 0.28125, -3.25, math.inf])
    assert LUTDivision(1)(torch.tensor([1.0, 1.99])).tolist() == [1.5, 1.5]


@pytest.mark.parametrize('size', [1, 8, 64, 1024])
def test_lut_relative_error_is_bounded_by_the_table_size(size):
    lut = LUTDivision(size)
    error = (magnitudes() / lut(magnitudes()) - 1).abs()
    assert lut.max_relative_error == 1 / (2 * size + 1)
    assert error.max() <= lut.max_relative_error + 1e-6
    assert error.max() > 0.98 * lut.max_relative_error  # and the bound is tight


def test_approximations_pass_the_gradient_straight_through():
    x = magnitudes().requires_grad_()
    for approx in (ShiftDivision(), LUTDivision(16)):
        x.grad = None
        approx(x).mul(torch.linspace(-1, 1, x.numel())).sum().backward()
        assert torch.equal(x.grad, torch.linspace(-1, 1, x.numel()))


@pytest.mark.parametrize('division', [ShiftDivision(), LUTDivision(8)], ids=['shift', 'lut'])
def test_layer_divides_by_the_approximation_and_backpropagates_the_exact_division(division):
    """The E-I layer's own backward equals autograd of ``g_E (I_EE - I_EI) / i_sh' + b_E``
    with ``i_sh'`` the approximated ``I_sh~`` passed straight through (docs/method.md section 1, float64)."""
    torch.manual_seed(0)
    x = event_frames()
    layer = sj_ei.EIConv2d(2, 16, 3, padding=1, step_mode='m').double()
    sj_ei.init.from_input_(layer, x.double())
    with torch.no_grad():
        layer.gain_e.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.2, 0.2)
    x = x.double().requires_grad_()
    exact = layer(x)
    layer.division = division
    out = layer(x)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, *layer.parameters()], grad)

    flat = x.flatten(0, 1)
    params = [p.detach().clone().requires_grad_() for p in (layer.weight_ee, layer.weight_ie, layer.weight_ei,
                                                           layer.gain_i, layer.gain_e, layer.bias)]
    weight_ee, weight_ie, weight_ei, gain_i, gain_e, bias = params
    conv = lambda w: torch.nn.functional.conv2d(flat, w, padding=1)
    r_i = rate(conv(weight_ie))
    i_ei = channel_mix(weight_ei, r_i)
    i_sh = channel_mix(weight_ei, gain_i.view(-1, 1, 1) * r_i)
    target = division(stabilized(i_sh.detach()))
    ref = gain_e.view(-1, 1, 1) * (conv(weight_ee) - i_ei) / (i_sh + (target - i_sh).detach()) + bias.view(-1, 1, 1)
    ref = ref.unflatten(0, x.shape[:2])
    scale = torch.ones(6, dtype=torch.float64)
    scale[2] = 1 / layer.fan_in  # the 1/d gradient scale of W_EI (docs/method.md section 4)
    want = torch.autograd.grad(ref, [x, *params], grad)
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, exact)  # the approximation is in use
    for g, w, s in zip(got, want, [1.0, *scale.tolist()]):
        torch.testing.assert_close(g, w * s)


def test_set_division_switches_every_hidden_layer_and_back():
    net = sj_ei.models.build('vgg8', 10, 2, T=4, width=0.125)
    hidden = [layer for _, layer in sj_ei.ei_layers(net) if not layer.readout]
    set_division(net, 'lut', table_size=32)
    assert all(isinstance(layer.division, LUTDivision) and layer.division.table_size == 32 for layer in hidden)
    assert net.readout.division is None
    set_division(net, 'shift')
    assert all(isinstance(layer.division, ShiftDivision) for layer in hidden)
    assert set(net.state_dict()) == set(sj_ei.models.build('vgg8', 10, 2, T=4, width=0.125).state_dict())
    set_division(net, 'exact')
    assert all(layer.division is None for layer in hidden)


def test_lut_keeps_a_network_close_to_exact_and_the_shift_moves_it():
    torch.manual_seed(0)
    x = event_frames(T=4, batch=8)
    net = sj_ei.models.build('vgg8', 10, 2, T=4, width=0.25)
    sj_ei.ei_init(net, x)
    net.eval()
    outputs = {}
    for name, size in (('exact', None), ('lut', 256), ('shift', None)):
        set_division(net, name, size)
        with torch.no_grad():
            outputs[name] = net(x).mean(0)
        functional.reset_net(net)
    lut_gap = (outputs['lut'] - outputs['exact']).abs().max()
    shift_gap = (outputs['shift'] - outputs['exact']).abs().max()
    assert lut_gap < shift_gap


@pytest.mark.parametrize('call, message', [
    (lambda net: set_division(net, 'log'), "unknown division approximation 'log'"),
    (lambda net: set_division(net, 'lut', table_size=48), 'table_size must be a power of two'),
    (lambda net: set_division(net, 'lut', table_size=0), 'table_size must be a power of two'),
    (lambda net: set_division(net, 'shift', table_size=64), "table_size applies to the 'lut' division only"),
    (lambda net: set_division(torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3)), 'shift'), 'has no hidden E-I layer'),
])
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(sj_ei.models.build('vgg8', 10, 2, T=4, width=0.125))
