"""The two neuron populations of an E-I layer.

- I population: stateless (no membrane, nothing carried across time steps);
  its output ``r_I`` is the rate form ``ReLU(I_IE)`` (the paper's default) or
  the spike-count form ``floor(I_IE / theta) * theta``.
- E population: spikingjelly's own ``LIFNode`` with the paper's settings, so
  everything spikingjelly offers for it (the CuPy backend, monitors,
  ``reset_net``) keeps working.
"""
import torch
from torch import nn
from spikingjelly.activation_based import neuron, surrogate


class _SpikeCount(torch.autograd.Function):
    """``floor(x / theta) * theta`` for ``x >= 0``; straight-through gradient."""

    @staticmethod
    def forward(ctx, x, theta):
        return torch.floor(x / theta) * theta

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class IPopulation(nn.Module):
    """Stateless inhibitory population: ``[N, n_I, ...] -> [N, n_I, ...]``.

    ``mode='rate'`` gives ``ReLU(I_IE)``; ``mode='count'`` gives the number of
    spikes of threshold ``theta`` times ``theta`` (gradient passed straight
    through where ``I_IE > 0``).
    """

    def __init__(self, mode: str = 'rate', theta: float = 1.0):
        super().__init__()
        if mode not in ('rate', 'count'):
            raise ValueError(f"IPopulation mode must be 'rate' or 'count', got {mode!r}")
        if theta <= 0:
            raise ValueError(f'IPopulation theta must be > 0, got {theta}')
        self.mode, self.theta = mode, float(theta)

    def forward(self, i_ie: torch.Tensor) -> torch.Tensor:
        r = torch.relu(i_ie)
        return r if self.mode == 'rate' else _SpikeCount.apply(r, self.theta)

    def extra_repr(self):
        return f'mode={self.mode}' + (f', theta={self.theta}' if self.mode == 'count' else '')


def e_population(**overrides) -> neuron.LIFNode:
    """The E population after every hidden E-I layer: spikingjelly's ``LIFNode`` with
    ``tau=2``, ``decay_input=False``, ``v_threshold=1``, soft reset, ``detach_reset=True``
    and the sigmoid surrogate (SPEC section 2).  Any argument can be overridden,
    e.g. ``e_population(step_mode='m', backend='cupy')``."""
    settings = dict(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=None,
                    surrogate_function=surrogate.Sigmoid(), detach_reset=True)
    settings.update(overrides)
    return neuron.LIFNode(**settings)
