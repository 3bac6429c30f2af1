"""E-I layers are ordinary spikingjelly step modules: step modes, reset_net,
set_backend and monitors work on them unchanged."""
import logging

import torch
from torch import nn
from spikingjelly.activation_based import functional, layer, monitor, neuron

import sj_ei

from test_compat import a_gpu_machine, needs_0_0_0_0_14  # noqa: F401 (a fixture)


def user_network():
    """What a spikingjelly user writes by hand with sj_ei's layers."""
    return nn.Sequential(
        sj_ei.EIConv2d(2, 16, 3, padding=1), sj_ei.e_population(),
        layer.AvgPool2d(2),
        sj_ei.EIBlock(sj_ei.EIConv2d(16, 32, 3, padding=1), sj_ei.EILIFNode()),
        layer.Flatten(),
        sj_ei.EILinear(32 * 4 * 4, 10, readout=True),
    )


def test_set_step_mode_and_reset_net():
    torch.manual_seed(0)
    net = user_network()
    x_seq = (torch.rand(3, 4, 2, 8, 8) < 0.3).float()
    functional.set_step_mode(net, 'm')
    assert all(m.step_mode == 'm' for m in net.modules() if hasattr(m, 'step_mode'))
    out = net(x_seq)
    assert out.shape == (3, 4, 10)
    lif = net[1]
    assert isinstance(lif.v, torch.Tensor) and lif.v.abs().sum() > 0
    functional.reset_net(net)
    assert lif.v == 0.0

    functional.set_step_mode(net, 's')
    stepped = torch.stack([net(x_t) for x_t in x_seq])
    functional.reset_net(net)
    torch.testing.assert_close(stepped, out)


def test_set_step_mode_and_set_backend_reach_every_fused_e_population(a_gpu_machine, caplog):
    """``sj_ei.set_backend`` (on both spikingjelly releases) switches sj_ei's E populations, also one
    behind a plain layer (here in place of spikingjelly's LIFNode, which has CuPy only on 0.0.0.0.14)."""
    net = user_network()
    net[1] = sj_ei.EILIFNode()
    with caplog.at_level(logging.WARNING):
        functional.set_step_mode(net, 'm')
        sj_ei.set_backend(net, 'cupy')
    assert not caplog.records
    assert net[1].backend == 'cupy' and net[3].neuron.backend == 'cupy' and net[3].layer.step_mode == 'm'
    sj_ei.set_backend(net, 'torch')
    assert all(m.backend == 'torch' for m in net.modules() if hasattr(m, 'backend'))


@needs_0_0_0_0_14
def test_set_backend_on_0_0_0_0_14_reaches_spikingjellys_lif_node_too(a_gpu_machine, caplog):
    net = user_network()
    with caplog.at_level(logging.WARNING):
        functional.set_step_mode(net, 'm')
        sj_ei.set_backend(net, 'cupy')
    assert not caplog.records
    assert net[1].backend == 'cupy' and net[3].neuron.backend == 'cupy'
    functional.set_backend(net, 'torch')  # spikingjelly's own call keeps working there
    assert all(m.backend == 'torch' for m in net.modules() if hasattr(m, 'backend'))


def test_monitors_record_e_populations_and_e_i_layers():
    torch.manual_seed(0)
    net = user_network()
    functional.set_step_mode(net, 'm')
    spikes = monitor.OutputMonitor(net, neuron.LIFNode, lambda s: s.mean().item())
    currents = monitor.OutputMonitor(net, sj_ei.EIConv2d)
    net((torch.rand(3, 4, 2, 8, 8) < 0.3).float())
    assert len(spikes.records) == 2 and all(0 < r < 1 for r in spikes.records)
    i_int, handed = currents.records  # a layer before a fused E population (EILIFNode) hands it its currents
    assert i_int.shape == (3, 4, 16, 8, 8) and isinstance(handed, sj_ei.EICurrents)
    assert all(t.shape == (3, 4, 32, 4, 4) for t in handed[:2])
    assert spikes.monitored_layers == ['1', '3.neuron']
