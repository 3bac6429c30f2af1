"""The seam between an E-I layer and its E population: ``EIBlock(layer, neuron)`` is
``neuron(layer(x))`` on every backend -- the composable path (the layer's ``I_int``, then
spikingjelly's LIFNode), the fused torch backend and the fused CuPy backend (its kernels run
on the CPU through ``cuda_emulation``) -- with the same spikes, gradients, hooks and monitors."""
import pytest
import torch
from spikingjelly.activation_based import functional, monitor, neuron

import sj_ei
from sj_ei.currents import EICurrents, integrate

from test_lif import moving_bar


BACKENDS = {'composable': lambda: sj_ei.e_population(),
            'fused-torch': lambda: sj_ei.EILIFNode(),
            'fused-cupy': lambda: sj_ei.EILIFNode(step_mode='m', backend='cupy')}


def block(kind: str, **neuron_settings) -> sj_ei.EIBlock:
    """One E-I block ``[T, B, 2, 8, 8] -> [T, B, 16, 8, 8]``, E-I initialized on the moving-bar events,
    its gains and biases as after some training; the same parameters for every ``kind``."""
    torch.manual_seed(0)
    layer = sj_ei.EIConv2d(2, 16, 3, padding=1, step_mode='m')
    sj_ei.ei_init(layer, moving_bar(4, 2))
    with torch.no_grad():
        layer.gain_e.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.3, 0.3)
    node = BACKENDS[kind]()
    for key, value in neuron_settings.items():
        setattr(node, key, value)
    return sj_ei.EIBlock(layer, node)


def test_the_neuron_chooses_what_the_layer_returns():
    fused, composable = block('fused-torch'), block('composable')
    assert fused.layer.output == 'currents' and composable.layer.output == 'current'
    assert fused.neuron.step_mode == 'm' and fused.step_mode == 'm'
    fused.neuron = sj_ei.e_population(step_mode='m')  # swapped later: the layer follows
    assert fused.layer.output == 'current' and isinstance(fused(moving_bar(4, 2)), torch.Tensor)
    functional.set_step_mode(fused, 's')
    assert fused.layer.step_mode == fused.neuron.step_mode == 's'
    with pytest.raises(ValueError, match='readout layer'):
        sj_ei.EIBlock(sj_ei.EILinear(8, 4, readout=True), sj_ei.EILIFNode())


def run(kind):
    """Spikes, what a hook on the layer (as ``I_int``), a hook on the neuron and spikingjelly's
    monitors saw, and the gradients of the input and of every parameter."""
    net = torch.nn.Sequential(block(kind))
    layer, node = net[0].layer, net[0].neuron
    seen = {}
    layer.register_forward_hook(lambda m, i, out: seen.__setitem__(
        'I_int', integrate(out, 2) if isinstance(out, EICurrents) else out))
    node.register_forward_hook(lambda m, i, out: seen.__setitem__('spikes', out))
    outputs = monitor.OutputMonitor(net, neuron.LIFNode)
    potentials = monitor.AttributeMonitor('v', False, net, neuron.LIFNode)
    x = moving_bar(4, 2, seed=1).requires_grad_()
    spikes = net(x)
    weights = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(2))
    ((spikes * weights).sum() + node.v.sum()).backward()
    grads = {'x': x.grad, **{name: p.grad for name, p in layer.named_parameters()}}
    return spikes.detach(), seen, outputs.records, potentials.records, grads


def test_every_backend_gives_the_same_spikes_gradients_hooks_and_monitors(emulated_cupy):
    spikes, seen, outputs, potentials, grads = run('composable')
    assert 0.05 < spikes.mean() < 0.95
    assert set(grads) == {'x', 'weight_ee', 'weight_ie', 'weight_ei', 'gain_i', 'gain_e', 'bias'}
    for kind in ('fused-torch', 'fused-cupy'):
        f_spikes, f_seen, f_outputs, f_potentials, f_grads = run(kind)
        assert torch.equal(f_spikes, spikes), kind
        assert torch.equal(f_seen['I_int'], seen['I_int']) and torch.equal(f_seen['spikes'], spikes), kind
        assert len(f_outputs) == len(f_potentials) == 1 and torch.equal(f_outputs[0], spikes), kind
        assert torch.equal(f_potentials[0], potentials[0]), kind
        for name, want in grads.items():
            torch.testing.assert_close(f_grads[name], want, rtol=1e-5, atol=1e-5 * want.abs().max().item(),
                                       msg=lambda m: f'{kind} {name}: {m}')


def test_store_v_seq_records_the_potentials_on_the_fused_path():
    x = moving_bar(4, 2, seed=1)
    composable, fused = block('composable', store_v_seq=True), block('fused-torch', store_v_seq=True)
    assert torch.equal(fused(x), composable(x))
    assert fused.neuron.v_seq.shape == (4, 2, 16, 8, 8) and torch.equal(fused.neuron.v_seq, composable.neuron.v_seq)


def test_under_autocast_the_fused_block_integrates_in_float32():
    """Under autocast the projection is 16-bit, the currents the layer hands over are float32 (its
    circuit computes in float32), and the spikes are those of spikingjelly's LIFNode on their integration."""
    fused = block('fused-torch')
    handed = []
    fused.layer.register_forward_hook(lambda m, i, out: handed.append(out))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        spikes = fused(moving_bar(4, 2, seed=1))
    c = handed[0]
    assert spikes.dtype == c.d.dtype == c.i_sh.dtype == torch.float32
    want = sj_ei.e_population(step_mode='m')(integrate(c, 2))
    assert torch.equal(spikes, want) and 0 < spikes.mean() < 1
