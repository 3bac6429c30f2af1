"""One E-I block: an E-I layer followed by its E population, ``neuron(layer(x))``.

With an ``sj_ei.EILIFNode`` the layer hands over its currents (``layer.output = 'currents'``,
an ``sj_ei.EICurrents``) and the neuron integrates them inside its LIF loop (fused path);
with any other spikingjelly neuron the layer returns ``I_int`` (``layer.output = 'current'``,
composable path).  Both modules' forwards run, so hooks, monitors, ``store_v_seq``,
``reset_net`` and ``set_backend`` reach them as in any spikingjelly network.
"""
import torch
from torch import nn
from spikingjelly.activation_based import base

from .neurons import EILIFNode


class EIBlock(nn.Module, base.StepModule):
    """``[.., C_in, ..] -> spikes [.., n_E, ..]``: ``layer`` (a hidden E-I layer), then ``neuron``
    (``sj_ei.EILIFNode``, or any spikingjelly neuron taking ``I_int``).  The neuron takes the
    layer's step mode; ``step_mode`` reads the layer's and sets both.  Assigning ``neuron``
    (also later, ``block.neuron = ...``) sets ``layer.output`` to what it takes."""

    def __init__(self, layer: nn.Module, neuron: base.MemoryModule):
        super().__init__()
        if layer.readout:
            raise ValueError('EIBlock takes a hidden E-I layer; a readout layer (readout=True) has no E population')
        neuron.step_mode = layer.step_mode
        self.layer, self.neuron = layer, neuron

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == 'neuron':  # also when a neuron is swapped in later
            self.layer.output = 'currents' if isinstance(value, EILIFNode) else 'current'

    @property
    def step_mode(self) -> str:
        return self.layer.step_mode

    @step_mode.setter
    def step_mode(self, value: str):
        self.layer.step_mode = self.neuron.step_mode = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(self.layer(x))
