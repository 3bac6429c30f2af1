"""Dale's law (docs/method.md section 4): E-I weights and gains stay non-negative."""
import torch
from torch import nn

from .layers import ei_layers

CONSTRAINED = ('weight_ee', 'weight_ie', 'weight_ei', 'gain_i', 'gain_e')


@torch.no_grad()
def clamp_(net: nn.Module) -> nn.Module:
    """Clamp ``weight_ee``, ``weight_ie``, ``weight_ei``, ``gain_i``, ``gain_e`` of every E-I
    layer of ``net`` (``net`` itself may be one) to ``>= 0``; ``bias`` stays free, and layers
    built with ``sign_constraint=False`` are left alone."""
    for _, layer in ei_layers(net):
        if layer.sign_constraint:
            for name in CONSTRAINED:
                p = getattr(layer, name)
                if p is not None:
                    p.clamp_(min=0)
    return net


def constrain(net: nn.Module, optimizer: torch.optim.Optimizer):
    """Keep ``net`` under Dale's law after every ``optimizer.step()`` of any torch optimizer.

    Clamps once now, then after each step.  Returns the hook handle (``.remove()`` undoes it).
    """
    clamp_(net)
    return optimizer.register_step_post_hook(lambda opt, args, kwargs: clamp_(net))
