"""What the trainer measures inside the network: E firing rates (``sj_ei.health``, which also
says when a network has collapsed) and E-I histograms."""
import torch
from spikingjelly.activation_based import functional

import sj_ei
from sj_ei.currents import EICurrents, integrate
from sj_ei.health import FiringRates, e_populations  # noqa: F401  (the trainer's monitor)


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
