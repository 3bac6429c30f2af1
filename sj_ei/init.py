"""E-I Init over a whole network (SPEC section 3).

Every E-I layer initializes itself from its own input on its first forward in
training mode, so a plain training loop needs nothing more.  ``ei_init`` does
it explicitly from one batch (or data-free for Bernoulli spikes), which is what
a distributed run needs: initialize on one batch, then wrap the network.
"""
from typing import Optional

import torch
from torch import nn
from spikingjelly.activation_based import functional

from .layers import _EILayer


def ei_layers(net: nn.Module):
    """The E-I layers of ``net`` in registration order, as ``(name, layer)`` pairs."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, _EILayer)]


def name_layers(net: nn.Module):
    """Give every E-I layer its qualified name in ``net``, used in its error messages."""
    for name, layer in ei_layers(net):
        layer.name = name or type(layer).__name__


def ei_init(net: nn.Module, x: Optional[torch.Tensor] = None, *, p: Optional[float] = None):
    """(Re-)initialize every E-I layer of ``net``.

    With a batch ``x``: one forward pass in training mode, without gradients, in which each
    layer takes the statistics of its own input, layer by layer in forward order (each sees
    the outputs of the layers initialized before it); neuron states are reset afterwards.
    With ``p``: the data-free Bernoulli form, every layer assuming Bernoulli(``p``) input.
    Errors (e.g. a layer whose input is silent) name the layer.
    """
    if (x is None) == (p is None):
        raise ValueError('ei_init needs exactly one of a batch x or a Bernoulli firing probability p')
    layers = ei_layers(net)
    if not layers:
        raise ValueError(f'ei_init: {type(net).__name__} has no E-I layer (sj_ei.EIConv2d / sj_ei.EILinear)')
    name_layers(net)
    if p is not None:
        for _, layer in layers:
            layer.init_bernoulli(p)
        return net
    for _, layer in layers:
        layer._set_initialized(False)
    was_training = net.training
    net.train()
    try:
        with torch.no_grad():
            net(x)
    finally:
        functional.reset_net(net)
        net.train(was_training)
    missed = [name for name, layer in layers if not layer._initialized]
    if missed:
        raise RuntimeError(f'ei_init: the forward pass did not reach the E-I layers {missed}; '
                           'they are still uninitialized')
    return net
