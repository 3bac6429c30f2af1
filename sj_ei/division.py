"""Hardware-friendly forms of the divisive inhibition ``(..) / I_sh~`` (issue 14).

An E-I layer's ``division`` attribute (default ``None``: exact division) holds a module
``i_sh -> i_sh'`` applied to the stabilized ``I_sh~`` before the division, so the layer
computes ``g_E (I_EE - I_EI) / i_sh' + b_E``.  ``i_sh'`` is chosen so that dividing by it is
what a digital chip does instead of a division:

- ``ShiftDivision``: ``i_sh' = 2^round(log2 I_sh~)``, the division is a bit shift (an
  exponent subtraction); ``I_sh~ / i_sh'`` lies in ``[2^-1/2, 2^1/2]``.
- ``LUTDivision(table_size)``: the top ``log2(table_size)`` mantissa bits of
  ``I_sh~ = f 2^e`` (``f`` in ``[1, 2)``) index a table of reciprocals; entry ``i`` is
  ``1 / c_i`` with ``c_i = 1 + (i + 1/2) / table_size`` the midpoint of its bucket
  (the minimax choice for relative error), and ``i_sh' = c_i 2^e``, so the division is
  one table read and one multiplication.  ``|I_sh~ / i_sh' - 1| <= 1 / (2 table_size + 1)``.

Both keep the sign, and ``+inf`` (a sample with no shunting current) stays ``+inf``.
The forward value is the approximation, the gradient is the identity (straight-through),
so the backward pass is that of the exact division at ``i_sh'``: a network can be
fine-tuned with the approximation in the forward pass.  Shapes: any, element-wise.
"""
import math

import torch
from torch import nn

from .layers import ei_layers

NAMES = ('exact', 'shift', 'lut')


def _straight_through(i_sh: torch.Tensor, approx: torch.Tensor) -> torch.Tensor:
    """``approx`` in the forward pass (``i_sh`` itself where it is not finite), gradient of the
    identity in the backward pass."""
    return i_sh + torch.where(torch.isfinite(i_sh), approx - i_sh, 0).detach()


class ShiftDivision(nn.Module):
    """``I_sh~ -> sign(I_sh~) 2^round(log2 |I_sh~|)``: division by a power of two (a bit shift)."""

    def forward(self, i_sh: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mantissa, exponent = torch.frexp(i_sh)  # |mantissa| in [1/2, 1): i_sh = mantissa 2^exponent
            # log2|i_sh| = exponent + log2|mantissa| rounds to exponent iff |mantissa| >= 2^-1/2
            exponent = exponent - (mantissa.abs() < math.sqrt(0.5)).to(exponent.dtype)
            approx = torch.ldexp(mantissa.sign(), exponent).to(i_sh.dtype)
        return _straight_through(i_sh, approx)


class LUTDivision(nn.Module):
    """``I_sh~ = f 2^e`` (``f`` in ``[1, 2)``) ``-> c 2^e`` with ``c`` the midpoint of ``f``'s bucket
    among ``table_size`` equal buckets of ``[1, 2)``: a reciprocal ``1 / c`` from a table indexed
    by the top ``log2(table_size)`` mantissa bits, then one multiplication."""

    def __init__(self, table_size: int = 64):
        super().__init__()
        if isinstance(table_size, bool) or not isinstance(table_size, int) or table_size < 1 \
                or table_size & (table_size - 1):
            raise ValueError(f'LUTDivision: table_size must be a power of two (1, 2, 4, ..., 64, ...) so that '
                             f'it is indexed by the top mantissa bits, got {table_size!r}')
        if table_size > 2 ** 22:
            raise ValueError(f'LUTDivision: table_size {table_size} exceeds the 23 mantissa bits of float32; '
                             f'use at most 2**22')
        self.table_size = table_size

    @property
    def max_relative_error(self) -> float:
        """The bound on ``|I_sh~ / i_sh' - 1|``: half a bucket over the first bucket's midpoint."""
        return 1.0 / (2 * self.table_size + 1)

    def forward(self, i_sh: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mantissa, exponent = torch.frexp(i_sh)                   # i_sh = (2 |mantissa|) 2^(exponent - 1)
            fraction = 2 * mantissa.abs()                            # f in [1, 2)
            index = torch.floor((fraction - 1) * self.table_size)    # the top log2(table_size) mantissa bits
            midpoint = 1 + (index + 0.5) / self.table_size
            approx = torch.ldexp(mantissa.sign() * midpoint, exponent - 1).to(i_sh.dtype)
        return _straight_through(i_sh, approx)

    def extra_repr(self):
        return f'table_size={self.table_size}'


def approximation(name: str, table_size: int = None):
    """The division module called ``name`` (``'exact'`` gives ``None``); ``table_size`` for ``'lut'`` only."""
    if name not in NAMES:
        raise ValueError(f'unknown division approximation {name!r}; choose one of {", ".join(NAMES)}')
    if name != 'lut':
        if table_size is not None:
            raise ValueError(f"table_size applies to the 'lut' division only, not to {name!r}")
        return ShiftDivision() if name == 'shift' else None
    return LUTDivision() if table_size is None else LUTDivision(table_size)


def set_division(net: nn.Module, name: str, table_size: int = None) -> nn.Module:
    """Set the division of every hidden E-I layer of ``net`` to ``name`` (``'exact'``, ``'shift'``
    or ``'lut'`` with ``table_size``, default 64); readout layers have no division.  Returns ``net``."""
    layers = [layer for _, layer in ei_layers(net) if not layer.readout]
    if not layers:
        raise ValueError(f'set_division: {type(net).__name__} has no hidden E-I layer (sj_ei.EIConv2d / '
                         f'sj_ei.EILinear with readout=False), so it has no division to approximate')
    for layer in layers:
        layer.division = approximation(name, table_size)
    return net
