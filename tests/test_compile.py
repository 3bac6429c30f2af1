"""torch.compile: an E-I network traces as one graph (the circuit reads no tensor value on
the host), and a compiled E-I layer matches eager in values and gradients.  Compiled with
``backend='aot_eager'`` (AOT autograd traces forward and backward; no C++ compile, which takes
minutes on the CPU)."""
import torch
from torch import nn
from spikingjelly.activation_based import functional, layer

import sj_ei


def events(T=2, B=2, C=2, size=8, seed=0):
    """``[T, B, C, size, size]`` events of a bar moving down, with some noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(T, B, C, size, size)
    for t in range(T):
        x[t, :, :, 2 * t:2 * t + 3] = 0.6
    return torch.bernoulli(x + 0.05, generator=g)


def small_net():
    return nn.Sequential(
        sj_ei.EIConv2d(2, 8, 3, padding=1, step_mode='m'), sj_ei.e_population(step_mode='m'),
        layer.AvgPool2d(2, step_mode='m'),
        sj_ei.EIConv2d(8, 8, 3, padding=1, step_mode='m'), sj_ei.e_population(step_mode='m'),
        layer.Flatten(step_mode='m'), sj_ei.EILinear(8 * 4 * 4, 4, readout=True, step_mode='m'))


def test_ei_network_traces_without_graph_breaks():
    torch.manual_seed(0)
    net = small_net()
    x = events()
    sj_ei.ei_init(net, x)
    explanation = torch._dynamo.explain(net)(x)
    functional.reset_net(net)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_layer_matches_eager():
    torch.manual_seed(0)
    eager = sj_ei.EIConv2d(2, 8, 3, padding=1, step_mode='m')
    x = events()
    x[:, 0, :, 4:] = 0  # sample (t, 0) has zero I_sh where its receptive fields see no event
    eager(x)  # E-I Init
    compiled = torch.compile(eager, backend='aot_eager', fullgraph=True)
    outputs = []
    for f in (eager, compiled):
        out = f(x)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        outputs.append((out.detach(), [p.grad.clone() for p in eager.parameters()]))
        eager.zero_grad()
    (out_e, grads_e), (out_c, grads_c) = outputs
    torch.testing.assert_close(out_c, out_e)
    for g_c, g_e in zip(grads_c, grads_e):
        torch.testing.assert_close(g_c, g_e)
