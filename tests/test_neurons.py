"""sj_ei's E populations are spikingjelly neurons: the paper's settings by default, backends chosen
the spikingjelly way, state, ``store_v_seq``, ``reset_net``, hooks and monitors as for ``LIFNode``,
and one clear error where a backend or a surrogate cannot be used."""
import copy
import io

import pytest
import torch
from spikingjelly.activation_based import functional, monitor, neuron, surrogate

import sj_ei
from sj_ei import _compat
from sj_ei.lif import cupy_launch
from sj_ei.currents import EICurrents, integrate

from test_lif import layer_currents


@pytest.mark.parametrize('make', [sj_ei.EILIFNode, sj_ei.e_population])
def test_the_papers_settings_by_default_and_any_can_be_overridden(make):
    node = make()
    assert isinstance(node, neuron.LIFNode)
    assert (node.tau, node.decay_input, node.v_threshold, node.v_reset, node.detach_reset) == (2.0, False, 1.0, None, True)
    assert isinstance(node.surrogate_function, surrogate.Sigmoid) and node.surrogate_function.alpha == 4.0
    assert make().surrogate_function is not node.surrogate_function
    other = make(tau=3.0, v_reset=0.0, surrogate_function=surrogate.ATan(), step_mode='m', store_v_seq=True)
    assert (other.tau, other.v_reset, other.step_mode, other.store_v_seq) == (3.0, 0.0, 'm', True)


def test_backends_depend_on_the_step_mode_as_for_lifnode():
    node = sj_ei.EILIFNode()
    assert node.supported_backends == ('torch',)
    with pytest.raises(NotImplementedError, match='cupy is not a supported backend of EILIFNode'):
        sj_ei.EILIFNode(backend='cupy')
    node = sj_ei.EILIFNode(step_mode='m', backend='cupy')
    assert node.supported_backends == ('torch', 'cupy') and node.backend == 'cupy'
    sj_ei.set_backend(node, 'torch')
    assert node.backend == 'torch'


@pytest.mark.parametrize('fn', [surrogate.PiecewiseQuadratic(), surrogate.Sigmoid(spiking=False)])
def test_a_surrogate_it_cannot_fuse_is_one_clear_error(fn):
    message = r"EILIFNode: sj_ei's fused LIF supports the surrogates surrogate.Sigmoid and surrogate.ATan"
    with pytest.raises(ValueError, match=message):
        sj_ei.EILIFNode(surrogate_function=fn)
    node = sj_ei.EILIFNode(step_mode='m')
    node.surrogate_function = fn  # changed after construction: the forward says so
    with pytest.raises(ValueError, match=message):
        node(layer_currents())


def test_state_v_seq_reset_hooks_and_monitors():
    c = layer_currents()
    net = torch.nn.Sequential(sj_ei.EILIFNode(step_mode='m', store_v_seq=True))
    node = net[0]
    seen = []
    node.register_forward_hook(lambda m, inputs, out: seen.append((inputs[0], out)))
    outputs = monitor.OutputMonitor(net, neuron.LIFNode)
    potentials = monitor.AttributeMonitor('v', False, net, neuron.LIFNode)
    spikes = net(c)
    assert seen[0][0] is c and seen[0][1] is spikes and outputs.records[0] is spikes
    assert potentials.records[0] is node.v and node.v.shape == (2, 8, 8, 8) and node.v_seq.shape == (4, 2, 8, 8, 8)
    assert torch.equal(node.v_seq[-1], node.v)
    functional.reset_net(net)
    assert node.v == 0.0 and node.v_seq is None
    torch.testing.assert_close(net(c), spikes, rtol=0, atol=0)


def test_the_whole_node_pickles_and_deepcopies():
    node = sj_ei.EILIFNode(step_mode='m', surrogate_function=surrogate.ATan())
    buffer = io.BytesIO()
    torch.save(node, buffer)
    buffer.seek(0)
    for twin in (torch.load(buffer, weights_only=False), copy.deepcopy(node)):
        assert torch.equal(twin(layer_currents()), node(layer_currents()))
        functional.reset_net(node)


# ---------------------------------------------------------------- backend 'cupy'

def cupy_on_cpu(net, x):
    """``net`` on backend 'cupy' set on each node (``sj_ei.set_backend`` refuses it without a GPU)."""
    functional.set_step_mode(net, 'm')
    for node in net:
        node.backend = 'cupy'
    return lambda: net(x)


@pytest.mark.parametrize('make, x', [
    (sj_ei.EILIFNode, layer_currents), (sj_ei.EILIFNode, lambda: torch.rand(4, 2, 8)),
    pytest.param(sj_ei.e_population, lambda: torch.rand(4, 2, 8), marks=pytest.mark.skipif(
        not _compat.HAS_CUPY_BACKEND, reason=f"spikingjelly {_compat.SJ_VERSION}'s LIFNode has no CuPy backend"))],
    ids=['EILIFNode-currents', 'EILIFNode-I_int', 'e_population'])
def test_cupy_without_a_gpu_is_one_clear_error_from_sj_ei(make, x):
    """Before: spikingjelly accepted the backend and its first forward died with 'Found no NVIDIA driver'."""
    forward = cupy_on_cpu(torch.nn.Sequential(make()), x())
    with pytest.raises(cupy_launch.CupyUnavailableError,
                       match=r"backend 'cupy' needs CUDA tensors, but this machine has no CUDA GPU; use backend='torch'"):
        forward()


def run_node(backend, x, v0, store_v_seq=False):
    leaves = [t.clone().requires_grad_() for t in (x if isinstance(x, EICurrents) else (x,))]
    node = sj_ei.EILIFNode(step_mode='m', backend=backend, store_v_seq=store_v_seq)
    node.v = v0.clone().requires_grad_()
    seen = []
    node.register_forward_hook(lambda m, inputs, out: seen.append(out.detach().clone()))
    spikes = node(EICurrents(*leaves) if isinstance(x, EICurrents) else leaves[0])
    weights = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(5))
    loss = (spikes * weights).sum() + node.v.sum() + (node.v_seq.sum() if store_v_seq else 0)
    loss.backward()
    v_seq = node.v_seq.detach() if store_v_seq else None
    return spikes.detach(), node.v.detach(), v_seq, seen, [t.grad for t in leaves]


@pytest.mark.parametrize('store_v_seq', [False, True])
@pytest.mark.parametrize('plain', [False, True], ids=['currents', 'I_int'])
def test_the_cupy_backend_equals_the_torch_backend(emulated_cupy, plain, store_v_seq):
    c, v0 = layer_currents(seed=3), torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(4))
    x = integrate(c, 2) if plain else c
    spikes, v, v_seq, seen, grads = run_node('torch', x, v0, store_v_seq)
    k_spikes, k_v, k_v_seq, k_seen, k_grads = run_node('cupy', x, v0, store_v_seq)
    assert 0.05 < spikes.mean() < 0.95
    assert torch.equal(k_spikes, spikes) and torch.equal(k_v, v) and torch.equal(k_seen[0], seen[0])
    assert (v_seq is None and k_v_seq is None) or torch.equal(k_v_seq, v_seq)
    for g, w in zip(k_grads, grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5 * w.abs().max().item())
