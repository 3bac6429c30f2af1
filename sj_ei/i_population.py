"""The I population of an E-I layer: stateless (no membrane, nothing carried across time steps); its
output ``r_I`` is the rate form ``ReLU(I_IE)`` (the paper's default) or the spike-count form
``floor(I_IE / theta) * theta``.  Apart from the E population (``sj_ei.neurons``), whose fused neuron
brings the CUDA code, so that the layers import none."""
import torch
from torch import nn


class _Rate(torch.autograd.Function):
    """``ReLU(I_IE)`` whose gradient also passes where ``I_IE`` is exactly 0, as the authors' I
    population (the identity on ``I_IE >= 0``) does: there the layer's whole receptive field is
    silent, ``I_EE`` and ``I_IE`` are both 0, and the inhibitory path carries the gradient that
    balances the excitatory one (without it, the previous layer receives ``W_EE^T g_E / I_sh~``
    alone, ``I_sh~`` being the tiny stabilization floor: see docs/collapse.md).  Negative ``I_IE``
    (possible only without Dale's law) gives ``-0.0``, whose sign bit blocks the gradient, so
    only the output is saved."""

    @staticmethod
    def forward(ctx, i_ie):
        r = torch.relu(i_ie).copysign_(i_ie)  # arithmetic, vectorized (torch.where is not, on CPUs)
        ctx.save_for_backward(r)
        return r

    @staticmethod
    def backward(ctx, grad):
        r, = ctx.saved_tensors
        return torch.ones_like(r).copysign_(r).clamp_(min=0).mul_(grad)  # 1 where the sign bit is clear


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
    through where ``I_IE >= 0``).
    """
    MODES = ('rate', 'count')

    def __init__(self, mode: str = 'rate', theta: float = 1.0):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"IPopulation mode must be one of {self.MODES}, got {mode!r}")
        if theta <= 0:
            raise ValueError(f'IPopulation theta must be > 0, got {theta}')
        self.mode, self.theta = mode, float(theta)

    def forward(self, i_ie: torch.Tensor) -> torch.Tensor:
        r = _Rate.apply(i_ie)
        return r if self.mode == 'rate' else _SpikeCount.apply(r, self.theta)

    def extra_repr(self):
        return f'mode={self.mode}' + (f', theta={self.theta}' if self.mode == 'count' else '')
