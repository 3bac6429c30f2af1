"""What an E-I layer hands a fused E population, and the integration of it (written once).

``EICurrents(d, i_sh, gain_e, bias)``: ``d = I_EE - I_EI`` (``W_EE x - W_EI r_I``) and the
stabilized shunting current ``i_sh = I_sh~``, each shaped like the layer's output
(``[T, B, n_E, ...]`` in multi-step mode, ``[B, n_E, ...]`` in single-step mode), and the
layer's per-channel ``gain_e`` and ``bias`` parameters ``[n_E]``.

``I_int = g_E d / I_sh~ + b_E`` (docs/method.md section 1) is computed by ``integrated`` and
differentiated by ``integrate_backward_`` for every torch path (the composable layer, the fused
LIF, ``integrate``); the CuPy kernel reproduces ``integrated`` operation by operation.
"""
from typing import NamedTuple

import torch


class EICurrents(NamedTuple):
    d: torch.Tensor
    i_sh: torch.Tensor
    gain_e: torch.Tensor
    bias: torch.Tensor


def channel_view(p: torch.Tensor, like: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``p [n_E]`` viewed to broadcast along dimension ``channel_dim`` of ``like``."""
    shape = [1] * like.dim()
    shape[channel_dim] = -1
    return p.view(shape)


def integrated(d, i_sh, gain, bias, out=None) -> torch.Tensor:
    """``I_int = b_E + (d g_E) / I_sh~``, in this order of operations, into ``out`` (None: a new
    tensor, differentiable by autograd); ``gain`` and ``bias`` viewed to broadcast along the
    channels (``channel_view``)."""
    scaled = torch.mul(d, gain, out=out)
    return torch.addcdiv(bias, scaled, i_sh, out=out)


def integrate_backward_(grad: torch.Tensor, d, i_sh, gain, channel_dim: int):
    """``(dL/dd, dL/dI_sh~, dL/dg_E [n_E], dL/db_E [n_E])`` from ``grad = dL/dI_int``, which becomes
    ``dL/dd`` (overwritten): five passes over the currents and one new tensor, ``dL/dI_sh~``."""
    others = [k for k in range(grad.dim()) if k != channel_dim]
    grad_bias = grad.sum(others)
    scaled = grad.div_(i_sh)                                    # dL/dI_int / I_sh~
    grad_sh = torch.mul(scaled, d)
    grad_gain = grad_sh.sum(others)
    grad_sh.mul_(gain.neg()).div_(i_sh)                         # -g_E d dL/dI_int / I_sh~^2
    return scaled.mul_(gain), grad_sh, grad_gain, grad_bias


def integrate(c: EICurrents, channel_dim: int) -> torch.Tensor:
    """``I_int`` of ``c`` (``integrated``, differentiable by autograd); ``channel_dim``: where ``n_E``
    is (2 for ``[T, B, n_E, ...]``, 1 for ``[B, n_E, ...]``)."""
    return integrated(c.d, c.i_sh, *(channel_view(p, c.d, channel_dim) for p in (c.gain_e, c.bias)))
