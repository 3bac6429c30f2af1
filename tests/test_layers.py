"""EIConv2d and EILinear compute docs/method.md section 1, in both step modes, with the
gradients of docs/method.md section 4 (E-I Prop)."""
import pytest
import torch
from torch.autograd import gradcheck

import sj_ei
from sj_ei import circuit
from sj_ei.circuit import project
from sj_ei.currents import integrate

import spec

CONV = dict(stride=2, padding=1, dilation=1)


def make_layer(kind, readout, seed=0, **options):
    """A layer with random non-negative parameters, some exactly zero, and a batch of
    non-negative inputs in which sample 0 is all zeros and sample 1 is zero on one half."""
    torch.manual_seed(seed)
    if kind == 'conv':
        layer = sj_ei.EIConv2d(3, 8, 3, ei_ratio=4, readout=readout, **CONV, **options)
        x = torch.rand(4, 3, 7, 7)
        x[1, :, :, :4] = 0
    else:
        layer = sj_ei.EILinear(12, 8, ei_ratio=4, readout=readout, **options)
        x = torch.rand(4, 12)
    x[0] = 0
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(0.1, 1.0)
        layer.weight_ei[:3] = 0  # E channels 0-2 get no inhibition: I_sh is 0 there
        if not readout:
            layer.bias.uniform_(-0.5, 0.5)
    layer.set_initialized(True)
    return layer, x


def spec_forward(layer, x, straight_through=True):
    params = {name: p.detach().double().requires_grad_() for name, p in layer.named_parameters()}
    conv = CONV if isinstance(layer, sj_ei.EIConv2d) else {}
    out = spec.ei_layer(x.double(), readout=layer.readout, straight_through=straight_through, **params, **conv)
    return out, params


@pytest.mark.parametrize('kind', ['conv', 'linear'])
@pytest.mark.parametrize('readout', [False, True])
def test_forward_equals_spec_formulas(kind, readout):
    layer, x = make_layer(kind, readout)
    expected, _ = spec_forward(layer, x)
    out = layer(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    if not readout:
        # the all-zero sample has no positive I_sh: it outputs the bias exactly
        shape = (-1,) + (1,) * (out.dim() - 2)
        torch.testing.assert_close(out[0], layer.bias.detach().view(shape).expand_as(out[0]))
        # zeros in I_sh were replaced, so stabilization was exercised
        assert (out[1:, :3] != layer.bias.detach().view(shape)[:3]).any()


@pytest.mark.parametrize('kind', ['conv', 'linear'])
@pytest.mark.parametrize('readout', [False, True])
def test_float64_layer_equals_spec_to_rounding(kind, readout):
    """In float64 the layer and the spec differ only by the order of their sums (~1e-16)."""
    layer, x = make_layer(kind, readout, grad_scale=False)
    layer.double()
    expected, params = spec_forward(layer, x)
    out = layer(x.double())
    torch.testing.assert_close(out, expected.detach(), rtol=1e-15, atol=2e-15)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)
    out.backward(grad_out)
    expected.backward(grad_out)
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, params[name].grad, rtol=1e-13, atol=1e-14, msg=name)


@pytest.mark.parametrize('kind', ['conv', 'linear'])
@pytest.mark.parametrize('readout', [False, True])
def test_gradients_equal_spec_with_straight_through_and_scaled_weight_ei(kind, readout):
    layer, x = make_layer(kind, readout, grad_scale=False)
    x.requires_grad_()
    grad_out = torch.randn_like(layer(x))
    layer(x).backward(grad_out)
    expected, params = spec_forward(layer, x.detach())
    expected.backward(grad_out.double())
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad.double(), params[name].grad, rtol=1e-4, atol=1e-5, msg=name)

    scaled, _ = make_layer(kind, readout, grad_scale=True)
    scaled(x.detach()).backward(grad_out)
    assert torch.equal(scaled.weight_ei.grad, layer.weight_ei.grad * (1.0 / layer.fan_in))
    for name in ('weight_ee', 'weight_ie'):
        assert torch.equal(getattr(scaled, name).grad, getattr(layer, name).grad)


def test_straight_through_gradient_ignores_the_replacement():
    """Through stabilization, d I_int / d I_sh is -g (I_EE - I_EI) / I_sh~^2 at every
    position, replaced or not: the replacement value itself receives no gradient."""
    layer, x = make_layer('conv', readout=False, grad_scale=False)
    layer(x).sum().backward()
    ste, params = spec_forward(layer, x, straight_through=True)
    ste.sum().backward()
    through_min, params_min = spec_forward(layer, x, straight_through=False)
    through_min.sum().backward()
    torch.testing.assert_close(layer.gain_i.grad.double(), params['gain_i'].grad, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(params['gain_i'].grad, params_min['gain_i'].grad)


def double_layer(kind, readout, size=8):
    """A float64 layer with parameters bounded away from 0 and a map of ``size x size``
    (>= 8: 64 positions, the batched-matmul branch of the point-wise product).  Its I_sh has
    no zero: the straight-through replacement is not differentiable (see the spec tests above);
    without the 1/d scale, the gradient of ``weight_ei`` is the true one."""
    torch.manual_seed(0)
    layer = (sj_ei.EIConv2d(3, 8, 3, padding=1, readout=readout, grad_scale=False) if kind == 'conv'
             else sj_ei.EILinear(12, 8, readout=readout, grad_scale=False)).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(0.2, 1.0)
    layer.set_initialized(True)
    x = torch.rand(2, 3, size, size, dtype=torch.float64) if kind == 'conv' else torch.rand(3, 12, dtype=torch.float64)
    return layer, x.requires_grad_()


@pytest.mark.parametrize('kind', ['conv', 'linear'])
@pytest.mark.parametrize('readout', [False, True])
def test_gradcheck_of_the_layer(kind, readout):
    layer, x = double_layer(kind, readout)
    names = [n for n, _ in layer.named_parameters()]

    def forward(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))

    assert gradcheck(forward, (x, *layer.parameters()), fast_mode=True)


@pytest.mark.parametrize('kind', ['conv', 'linear'])
def test_gradcheck_of_the_currents(kind):
    layer, x = double_layer(kind, readout=False)
    layer.output = 'currents'
    names = [n for n, _ in layer.named_parameters()]

    def forward(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))[:2]

    assert gradcheck(forward, (x, *layer.parameters()), fast_mode=True)


@pytest.mark.parametrize('kind', ['conv', 'linear'])
@pytest.mark.parametrize('step_mode', ['s', 'm'])
def test_currents_integrate_to_the_current_bit_for_bit(kind, step_mode):
    """The fused path's currents, integrated by ``sj_ei.currents.integrate``, give exactly the
    layer's ``I_int``, and the same gradients."""
    layer, x = make_layer(kind, readout=False)
    layer.step_mode = step_mode
    x = torch.stack([x, x.flip(0)]) if step_mode == 'm' else x
    out = layer(x)
    out.backward(torch.ones_like(out))
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    layer.output = 'currents'
    currents = layer(x)
    assert isinstance(currents, sj_ei.EICurrents) and currents.i_sh.shape == out.shape
    assert currents.gain_e is layer.gain_e and currents.bias is layer.bias
    integrated = integrate(currents, channel_dim=2 if step_mode == 'm' else 1)
    assert torch.equal(integrated, out)
    integrated.backward(torch.ones_like(out))
    for g, p in zip(grads, layer.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('output', ['current', 'currents'])
def test_division_hook_replaces_the_stabilized_shunting_current(output):
    """``layer.division`` sees ``I_sh~`` and its result divides, on both outputs; its own gradient counts."""
    layer, x = make_layer('conv', readout=False)
    expected, params = spec_forward(layer, x)
    seen = []
    layer.division = lambda i_sh: seen.append(i_sh.detach()) or 2 * i_sh
    layer.output = output
    out = layer(x)
    if output == 'currents':
        assert torch.equal(out.i_sh, 2 * seen[0])
        out = integrate(out, channel_dim=1)
    # I_int = b + g d / (2 I_sh~): the spec with the bias's share unchanged
    bias = params['bias'].detach().view(-1, 1, 1)
    torch.testing.assert_close(out.double(), bias + (expected.detach() - bias) / 2, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    ((expected - params['bias'].view(-1, 1, 1)) / 2 + params['bias'].view(-1, 1, 1)).sum().backward()
    torch.testing.assert_close(layer.gain_i.grad.double(), params['gain_i'].grad, rtol=1e-4, atol=1e-6)


def test_i_population_runs_as_a_module_so_its_hooks_fire():
    layer, x = make_layer('conv', readout=False)
    seen = []
    layer.i_population.register_forward_hook(lambda m, i, o: seen.append(o))
    layer(x).sum().backward()
    assert len(seen) == 1 and seen[0].shape == (4, 2, 4, 4) and (seen[0] >= 0).all()


@pytest.mark.parametrize('kind', ['conv', 'linear'])
def test_multi_step_equals_single_step_over_time(kind):
    layer, x = make_layer(kind, readout=False)
    x_seq = torch.stack([x, x.flip(0), 0.5 * x])
    single = torch.stack([layer(x_t) for x_t in x_seq])
    layer.step_mode = 'm'
    torch.testing.assert_close(layer(x_seq), single)


def test_spike_count_i_population():
    pop = sj_ei.IPopulation('count', theta=0.5)
    i_ie = torch.tensor([-0.3, 0.2, 0.5, 1.26], requires_grad=True)
    r = pop(i_ie)
    assert r.tolist() == [0.0, 0.0, 0.5, 1.0]
    r.sum().backward()
    assert i_ie.grad.tolist() == [0.0, 1.0, 1.0, 1.0]


def test_fixed_epsilon_ablation_shifts_the_denominator():
    layer, x = make_layer('linear', readout=False, eps=1e-3)
    x[0] = 0
    out = layer(x)
    params = {n: p.detach().double() for n, p in layer.named_parameters()}
    i_ee = x.double() @ params['weight_ee'].T
    r = torch.relu(x.double() @ params['weight_ie'].T)
    i_ei, i_sh = r @ params['weight_ei'].T, (params['gain_i'] * r) @ params['weight_ei'].T
    expected = params['gain_e'] * (i_ee - i_ei) / (i_sh + 1e-3) + params['bias']
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('conv', [None, ((2, 1), (1, 0), (1, 1))], ids=['linear', 'conv'])
def test_gradcheck_of_the_projection(conv):
    torch.manual_seed(0)
    shape_x, shape_w = ((3, 5), (5,)) if conv is None else ((2, 3, 6, 5), (3, 3, 3))
    inputs = [torch.rand(*shape_x, dtype=torch.float64), torch.rand(4, *shape_w, dtype=torch.float64),
              torch.rand(2, *shape_w, dtype=torch.float64)]
    assert gradcheck(lambda x, w_ee, w_ie: project(x, w_ee, w_ie, conv), [t.requires_grad_() for t in inputs],
                     fast_mode=True)


def test_without_dales_law_only_exact_zeros_are_replaced():
    """``sign_constraint=False``: negative I_sh stays as it is; exact zeros still take the floor."""
    layer, x = make_layer('conv', readout=False, sign_constraint=False)
    with torch.no_grad():
        layer.weight_ei[3:5] *= -1  # E channels 3 and 4: I_sh < 0
    expected, _ = spec_forward(layer, x)
    out = layer(x)
    torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', ['conv', 'linear'])
def test_the_projection_weights_share_one_storage_and_are_read_whole(kind):
    """``weight_ee`` and ``weight_ie`` stay two parameters (state_dict keys, optimizers, Dale's law)
    in one storage, so each forward reads ``[W_EE; W_IE]`` without concatenating them; moving the
    layer (``.double()``, ``.to``) keeps it so, and separate tensors (a ``functional_call``) are
    concatenated instead, with the same result."""
    layer, x = make_layer(kind, readout=False)
    stacked = lambda l: circuit._stacked(l.weight_ee, l.weight_ie)
    assert stacked(layer).data_ptr() == layer.weight_ee.data_ptr()
    layer.double()
    assert stacked(layer).data_ptr() == layer.weight_ee.data_ptr() and layer.weight_ie.dtype == torch.float64
    layer.float()
    out = layer(x)
    params = {name: p.detach().clone() for name, p in layer.named_parameters()}
    assert torch.equal(torch.func.functional_call(layer, params, (x,)), out)
    assert list(layer.state_dict())[:2] == ['weight_ee', 'weight_ie']
