"""What the trainer measures inside the network: E firing rates and E-I histograms."""
import torch
from spikingjelly.activation_based import functional, neuron

import sj_ei
from sj_ei.currents import EICurrents, integrate


def e_populations(model: torch.nn.Module) -> dict:
    """``{name: module}`` of every spiking neuron (spikingjelly ``BaseNode``): the E populations,
    whose forward output is their spikes on every backend (the fused ``EILIFNode`` too)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, neuron.BaseNode)}


class FiringRates:
    """Mean spike rate of every E population over the training batches since ``reset``.

    A forward hook adds the mean of each population's spikes ``[T, B, ...]`` while
    gradients are enabled (training forwards, not E-I Init or evaluation);
    ``batches`` is counted by the training loop.
    """

    def __init__(self, model: torch.nn.Module):
        self.sums, self.batches = {}, 0
        for name, m in e_populations(model).items():
            m.register_forward_hook(lambda m, inputs, spikes, name=name: self._add(name, spikes))

    def _add(self, name, spikes):
        if torch.is_grad_enabled():
            self.sums[name] = self.sums.get(name, 0) + spikes.detach().float().mean()

    def reset(self):
        self.sums, self.batches = {}, 0

    def rates(self) -> dict:
        """``{population name: spikes per neuron per time step}``."""
        return {name: (total / max(1, self.batches)).item() for name, total in self.sums.items()}


@torch.no_grad()
def log_histograms(writer, model: torch.nn.Module, x: torch.Tensor, step: int) -> None:
    """TensorBoard histograms of every E-I layer's parameters, and of its output current
    (``I_int``; ``I_EE - I_EI`` for the readout) on the model input ``x``, in eval mode, on the
    model's own backends.  A layer that hands ``EICurrents`` to a fused E population
    (``output='currents'``) is recorded as the ``I_int`` its neuron integrates."""
    layers = sj_ei.ei_layers(model)
    for name, layer in layers:
        for pname, p in layer.named_parameters(recurse=False):
            writer.add_histogram(f'param/{name}.{pname}', p.detach().float().cpu(), step)
    currents = {}

    def record(layer, name, out):
        if isinstance(out, EICurrents):
            out = integrate(out, channel_dim=2 if layer.step_mode == 'm' else 1)
        currents[name] = out
    hooks = [layer.register_forward_hook(lambda m, i, out, name=name: record(m, name, out)) for name, layer in layers]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        functional.reset_net(model)
        model.train(was_training)
        for h in hooks:
            h.remove()
    for name, current in currents.items():
        writer.add_histogram(f'I_int/{name}', current.float().cpu(), step)
