"""Dale's law (SPEC section 4): E-I weights and gains stay non-negative."""
import torch
from torch import nn

from .layers import _EILayer


def clamp_(net: nn.Module) -> nn.Module:
    """Clamp ``weight_ee``, ``weight_ie``, ``weight_ei``, ``gain_i``, ``gain_e`` of every E-I
    layer of ``net`` to ``>= 0``; ``bias`` stays free."""
    for m in net.modules():
        if isinstance(m, _EILayer):
            m.clamp_()
    return net


def constrain(net: nn.Module, optimizer: torch.optim.Optimizer):
    """Keep ``net`` under Dale's law after every ``optimizer.step()`` of any torch optimizer.

    Clamps once now, then after each step.  Returns the hook handle (``.remove()`` undoes it).
    """
    clamp_(net)
    return optimizer.register_step_post_hook(lambda opt, args, kwargs: clamp_(net))
