"""One E-I block: an E-I layer followed by its E population (a spikingjelly LIF node).

With ``backend='torch'`` the block is simply ``neuron(layer(x))``.  With
``backend='cupy'`` (``functional.set_backend(net, 'cupy')``) and multi-step mode
the integration ``I_int = g_E (I_EE - I_EI) / I_sh~ + b_E`` and the LIF dynamics
run fused in one CuPy kernel over all T steps (``sj_ei.cupy_backend``); the
projections and the point-wise ``W_EI`` stay with torch.
"""
import torch
from spikingjelly.activation_based import base, neuron as sj_neuron, surrogate

from .layers import _EILayer


class EIBlock(base.MemoryModule):
    """``[.., C_in, ..] -> spikes [.., n_E, ..]``: ``layer`` (a hidden E-I layer), then
    ``neuron`` (a ``LIFNode``, e.g. ``sj_ei.e_population()``), whose state is the block's.
    The neuron takes the layer's step mode."""

    def __init__(self, layer: _EILayer, neuron: sj_neuron.LIFNode):
        super().__init__()
        if layer.readout:
            raise ValueError('EIBlock takes a hidden E-I layer; a readout layer (readout=True) has no E population')
        neuron.step_mode = layer.step_mode
        self.layer, self.neuron = layer, neuron
        self.step_mode = layer.step_mode

    @property
    def supported_backends(self):
        return ('torch', 'cupy')

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(self.layer(x))

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.backend != 'cupy':
            return self.neuron(self.layer(x_seq))
        from . import cupy_backend
        cupy_backend.require_cupy(x_seq)
        lif = self.neuron
        if not isinstance(lif, sj_neuron.LIFNode) or not isinstance(lif.surrogate_function, surrogate.Sigmoid):
            raise TypeError(f"EIBlock backend 'cupy' fuses a LIFNode with the sigmoid surrogate, got "
                            f"{type(lif).__name__} with {type(lif.surrogate_function).__name__}; use backend='torch'")
        i_ee, i_ei, i_sh = self.layer.currents(x_seq)
        spikes, v_last = cupy_backend.fused_ei_lif(
            i_ee, i_ei, i_sh, self.layer.gain_e, self.layer.bias, lif.v,
            tau=lif.tau, v_threshold=lif.v_threshold, detach_reset=lif.detach_reset,
            surrogate_alpha=lif.surrogate_function.alpha, decay_input=lif.decay_input, v_reset=lif.v_reset)
        lif.v = v_last
        return spikes
