"""What an E-I layer hands a fused E population: its three currents and the E gains.

``EICurrents(i_ee, i_ei, i_sh, gain_e, bias)``: ``i_ee = W_EE x``, ``i_ei = W_EI r_I`` and the
stabilized shunting current ``i_sh = I_sh~``, each shaped like the layer's output
(``[T, B, n_E, ...]`` in multi-step mode, ``[B, n_E, ...]`` in single-step mode), and the
layer's per-channel ``gain_e`` and ``bias`` parameters ``[n_E]``.  ``integrate`` is the
reference that every fused backend reproduces operation by operation.
"""
from typing import NamedTuple

import torch


class EICurrents(NamedTuple):
    i_ee: torch.Tensor
    i_ei: torch.Tensor
    i_sh: torch.Tensor
    gain_e: torch.Tensor
    bias: torch.Tensor


def channel_view(p: torch.Tensor, like: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``p [n_E]`` viewed to broadcast along dimension ``channel_dim`` of ``like``."""
    shape = [1] * like.dim()
    shape[channel_dim] = -1
    return p.view(shape)


def integrate(c: EICurrents, channel_dim: int) -> torch.Tensor:
    """``I_int = g_E (I_EE - I_EI) / I_sh~ + b_E`` (docs/method.md section 1), in this order of
    operations: ``d = I_EE - I_EI``, ``d * g_E``, ``b_E + (d g_E) / I_sh~``.
    ``channel_dim``: where ``n_E`` is (2 for ``[T, B, n_E, ...]``, 1 for ``[B, n_E, ...]``)."""
    scaled = (c.i_ee - c.i_ei) * channel_view(c.gain_e, c.i_ee, channel_dim)
    return torch.addcdiv(channel_view(c.bias, c.i_ee, channel_dim), scaled, c.i_sh)
