"""sj_ei's torch LIF backend (``sj_ei.lif``, what ``EILIFNode`` runs on backend 'torch') is
spikingjelly's ``LIFNode`` (backend 'torch', with autograd) applied to
``sj_ei.currents.integrate(c)``: equal spikes and potentials, gradients to 1e-6 of their scale
(on spikingjelly 2 where its LIFNode rounds the charge as sj_ei does: at every tau with input decay
or a hard reset to v_reset != 0, otherwise at the paper's tau = 2; see ``sj_ei._compat``)."""
import pytest
import torch
from spikingjelly.activation_based import neuron, surrogate

import sj_ei
from sj_ei import _compat
from sj_ei.currents import EICurrents, integrate
from sj_ei.lif import LIFConfig, lif

SURROGATES = {'sigmoid': surrogate.Sigmoid, 'atan': surrogate.ATan}
LIF_SETTINGS = {  # spikingjelly LIFNode arguments; the first is the paper's
    'paper': dict(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=None, detach_reset=True),
    'decay-input': dict(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=None, detach_reset=True),
    'soft-attached': dict(tau=3.0, decay_input=False, v_threshold=0.5, v_reset=None, detach_reset=False),
    'hard-0': dict(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=True),
    'hard-attached': dict(tau=2.5, decay_input=False, v_threshold=1.0, v_reset=-0.25, detach_reset=False),
    'hard-decay': dict(tau=4.0, decay_input=True, v_threshold=1.5, v_reset=0.5, detach_reset=False),
}


def moving_bar(T: int, B: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Event frames ``[T, B, 2, size, size]`` of a bright bar sweeping right (ON events at its
    leading edge, OFF at its trailing edge), each sample at its own speed, with sparse noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(T, B, 2, size, size)
    for b in range(B):
        speed = 1 + b % 2
        for t in range(T):
            edge = (2 + speed * t) % size
            x[t, b, 0, 1:-1, edge] = 1.0
            x[t, b, 1, 1:-1, (edge - 2) % size] = 1.0
    return torch.maximum(x, (torch.rand(x.shape, generator=g) < 0.03).float())


def layer_currents(T: int = 4, B: int = 2, seed: int = 0) -> EICurrents:
    """The ``EICurrents`` a real ``EIConv2d`` (``output='currents'``) hands its E population on event
    frames, ``[T, B, 8, 8, 8]`` (E-I Init from the batch, then gains and biases as after some training)."""
    torch.manual_seed(seed)
    layer = sj_ei.EIConv2d(2, 8, 3, padding=1, step_mode='m')
    x = moving_bar(T, B, seed=seed)
    sj_ei.ei_init(layer, x)
    with torch.no_grad():
        layer.gain_e.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.3, 0.3)
        layer.output = 'currents'
        c = layer(x)
    return EICurrents(*c[:2], layer.gain_e.detach(), layer.bias.detach())


def config_of(settings: dict, kind: str, alpha: float) -> LIFConfig:
    return LIFConfig(**settings, surrogate=kind, surrogate_alpha=alpha)


def loss_weights(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g), torch.randn(shape[1:], generator=g), torch.randn(shape, generator=g)]


def reference(c: EICurrents, settings, sg, v0, plain: bool):
    """spikingjelly: ``LIFNode`` on ``integrate(c)`` (or on the given ``I_int`` when ``plain``)."""
    leaves = [t.clone().requires_grad_() for t in ((c.d,) if plain else c)]
    node = neuron.LIFNode(surrogate_function=sg, step_mode='m', store_v_seq=True, **settings)
    v = node.v = v0.clone().requires_grad_() if isinstance(v0, torch.Tensor) else v0
    spikes = node(leaves[0] if plain else integrate(EICurrents(*leaves), 2))
    return spikes, node.v, node.v_seq, leaves + [v]


def fused(c: EICurrents, config, v0, plain: bool):
    leaves = [t.clone().requires_grad_() for t in ((c.d,) if plain else c)]
    v = v0.clone().requires_grad_() if isinstance(v0, torch.Tensor) else v0
    spikes, v_last, v_seq = lif(leaves[0] if plain else EICurrents(*leaves), v, config, store_v_seq=True)
    return spikes, v_last, v_seq, leaves + [v]


def assert_grads_close(got, want, rtol=1e-6):
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * w.abs().max().item())


@pytest.mark.parametrize('plain', [False, True], ids=['currents', 'plain'])
@pytest.mark.parametrize('v_start', ['rest', 'carried'])
@pytest.mark.parametrize('kind', list(SURROGATES))
@pytest.mark.parametrize('name', list(LIF_SETTINGS))
def test_spikes_equal_spikingjellys_lif_and_gradients_agree(name, kind, v_start, plain):
    settings = LIF_SETTINGS[name]
    if not _compat.lif_node_charges_like_sj_ei(settings['tau'], settings['decay_input'], settings['v_reset']):
        pytest.skip(f"spikingjelly {_compat.SJ_VERSION}'s LIFNode charges V - V/tau + X, which rounds unlike "
                    f"sj_ei's (and 0.0.0.0.14's) V * (1 - 1/tau) + X at tau = {settings['tau']}")
    c = layer_currents(seed=len(name))
    if plain:  # a plain I_int: the fast LIF of any layer
        c = EICurrents(integrate(c, 2), *c[1:])
    sg = SURROGATES[kind]()
    rest = settings['v_reset'] or 0.0
    v0 = rest if v_start == 'rest' else torch.randn(c.d.shape[1:], generator=torch.Generator().manual_seed(1))
    weights = loss_weights(c.d.shape, seed=2)

    spikes, v_last, v_seq, leaves = reference(c, settings, sg, v0, plain)
    f_spikes, f_v_last, f_v_seq, f_leaves = fused(c, config_of(settings, kind, sg.alpha), v0, plain)

    assert 0.05 < spikes.mean() < 0.95
    assert torch.equal(f_spikes, spikes) and torch.equal(f_v_last, v_last) and torch.equal(f_v_seq, v_seq)
    for outputs in ((spikes, v_last, v_seq), (f_spikes, f_v_last, f_v_seq)):
        sum((o * w).sum() for o, w in zip(outputs, weights)).backward()
    if v_start == 'rest':
        leaves, f_leaves = leaves[:-1], f_leaves[:-1]
    assert_grads_close([t.grad for t in f_leaves], [t.grad for t in leaves])


def test_a_silent_sample_outputs_the_bias_and_passes_no_current_gradient():
    """``I_sh~ = +inf`` (a sample whose I population is silent) gives ``I_int = b_E``."""
    c = layer_currents()
    i_sh = c.i_sh.clone()
    i_sh[:, 0] = torch.inf
    c = c._replace(i_sh=i_sh)
    spikes, v_last, _, leaves = fused(c, config_of(LIF_SETTINGS['paper'], 'sigmoid', 4.0), 0.0, plain=False)
    ref, _, _, _ = reference(c, LIF_SETTINGS['paper'], surrogate.Sigmoid(), 0.0, plain=False)
    assert torch.equal(spikes, ref)
    spikes.sum().backward()
    assert leaves[0].grad[:, 0].eq(0).all() and leaves[1].grad[:, 0].eq(0).all()
    assert leaves[0].grad[:, 1].ne(0).any()


def test_membrane_exactly_at_threshold_fires():
    """``H = 0.5 * 0 + 0.5 + 1 * 1 / 2 = 1`` exactly: a spike, then a soft reset to 0."""
    full = lambda value: torch.full((3, 1, 2), value)
    c = EICurrents(full(1.0), full(2.0), torch.ones(2), torch.full((2,), 0.5))
    spikes, v_last, _ = lif(c, 0.0, config_of(LIF_SETTINGS['paper'], 'sigmoid', 4.0))
    assert spikes.eq(1).all() and v_last.eq(0).all()


def test_single_step_mode_equals_multi_step_mode():
    """``EILIFNode`` stepped T times (``'s'``, the state carried with its gradient) equals one multi-step call."""
    c = layer_currents(T=5)
    runs = []
    for mode in ('m', 's'):
        leaves = [t.clone().requires_grad_() for t in c]
        node = sj_ei.EILIFNode(step_mode=mode)
        if mode == 'm':
            spikes = node(EICurrents(*leaves))
        else:
            spikes = torch.stack([node(EICurrents(*(x[t] for x in leaves[:2]), *leaves[2:])) for t in range(5)])
        weights = loss_weights(spikes.shape, seed=3)
        ((spikes * weights[0]).sum() + (node.v * weights[1]).sum()).backward()
        runs.append((spikes.detach(), node.v.detach(), [t.grad for t in leaves]))
    (spikes, v, grads), (s_spikes, s_v, s_grads) = runs
    assert torch.equal(s_spikes, spikes) and torch.equal(s_v, v)
    assert_grads_close(s_grads, grads)


def test_sixteen_bit_currents_are_integrated_in_float32():
    """Under autocast the currents may come in bfloat16: spikes and potentials are float32 and those
    of the float32 path on the same values; the gradients come back in the currents' dtypes."""
    c = layer_currents()
    low = EICurrents(*(t.to(torch.bfloat16) for t in c[:2]), c.gain_e, c.bias)
    config = config_of(LIF_SETTINGS['paper'], 'sigmoid', 4.0)
    spikes, v_last, _, leaves = fused(low, config, 0.0, plain=False)
    want, want_v, _, _ = fused(EICurrents(*(t.float() for t in low[:2]), c.gain_e, c.bias), config, 0.0, plain=False)
    assert spikes.dtype == v_last.dtype == torch.float32
    assert torch.equal(spikes, want) and torch.equal(v_last, want_v)
    spikes.sum().backward()
    assert [t.grad.dtype for t in leaves[:4]] == [torch.bfloat16] * 2 + [torch.float32] * 2


def test_without_gradients_nothing_is_kept_and_the_values_are_the_same():
    c = layer_currents()
    config = config_of(LIF_SETTINGS['paper'], 'atan', 2.0)
    with torch.no_grad():
        spikes, v_last, v_seq = lif(c, 0.0, config, store_v_seq=True)
    f_spikes, f_v_last, f_v_seq, _ = fused(c, config, 0.0, plain=False)
    assert torch.equal(spikes, f_spikes) and torch.equal(v_last, f_v_last) and torch.equal(v_seq, f_v_seq)


def test_backward_keeps_one_sequence_besides_the_inputs():
    """What the autograd function saves: ``I_EE - I_EI`` ``[T, N, ...]`` and the inputs it already
    has (``I_sh~``, ``g_E``, ``b_E``); not ``I_int``, the potentials, the spikes or per-step copies."""
    c = EICurrents(*(t.clone().requires_grad_() for t in layer_currents()))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lif(c, 0.0, config_of(LIF_SETTINGS['paper'], 'sigmoid', 4.0))
    inputs = [c.i_sh, c.gain_e, c.bias]
    new = [t for t in saved if not any(t is x for x in inputs)]
    assert [tuple(t.shape) for t in new] == [(4, 2, 8, 8, 8)]  # I_EE - I_EI (the potential at rest is not kept)
    assert all(sum(t is x for t in saved) == 1 for x in inputs) and len(saved) == 4


def test_bad_arguments_are_one_clear_error():
    c = layer_currents()
    with pytest.raises(ValueError, match=r'v of shape \(3, 8, 8, 8\) does not fit .* functional.reset_net'):
        lif(c, torch.zeros(3, 8, 8, 8), config_of(LIF_SETTINGS['paper'], 'sigmoid', 4.0))
    with pytest.raises(ValueError, match=r"supports the surrogates 'sigmoid', 'atan' .* got 'erf'"):
        lif(c, 0.0, config_of(LIF_SETTINGS['paper'], 'erf', 4.0))
