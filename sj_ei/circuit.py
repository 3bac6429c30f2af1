"""The E-I circuit: the one torch implementation of what an E-I layer computes (docs/method.md
sections 1 and 4), used by every path.  ``run(layer, x)`` is every E-I layer's forward.

Shapes: ``N`` samples (``T * B`` in multi-step mode), ``S`` the spatial dimensions
(none for a linear layer).  The projection gives ``I_EE [N, n_E, *S]`` and ``I_IE [N, n_I, *S]``
(the halves of one product); the I population (the module ``layer.i_population``) gives
``r_I [N, n_I, *S]``; both inhibition paths give ``I_EI`` and ``I_sh`` ``[N, n_E, *S]``.
"""
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from .currents import EICurrents, integrate, integrate_backward_, integrated

OUTPUTS = ('current', 'currents')
_LARGE_MAP = 64  # positions per map from which a batched matmul beats a 1x1 convolution


def pointwise(weight: torch.Tensor, r: torch.Tensor, add_to=None) -> torch.Tensor:
    """``weight r`` across channels at every position: ``[K, n_I] x [N, n_I(, H, W)] -> [N, K(, H, W)]``;
    added in place to ``add_to`` (contiguous, ``[N, K(, H, W)]``) if given."""
    if r.dim() == 2:
        return F.linear(r, weight) if add_to is None else add_to.addmm_(r, weight.t())
    if r.shape[-1] * r.shape[-2] >= _LARGE_MAP:
        flat, batch = r.flatten(2), weight.expand(r.shape[0], -1, -1)
        if add_to is None:
            return torch.bmm(batch, flat).unflatten(2, r.shape[2:])
        add_to.flatten(2).baddbmm_(batch, flat)
        return add_to
    out = F.conv2d(r, weight[:, :, None, None])
    return out if add_to is None else add_to.add_(out)


def _weight_grad(g: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``sum over samples and positions of g r^T``: ``[N, K(, H, W)], [N, n_I(, H, W)] -> [K, n_I]``."""
    if g.dim() == 2:
        return g.t() @ r
    if g.shape[-1] * g.shape[-2] >= _LARGE_MAP:  # per-sample products read the maps in place
        return torch.bmm(g.flatten(2), r.flatten(2).transpose(1, 2)).sum(0)
    return torch.einsum('nehw,nchw->ec', g, r)


def _sum_per_channel(t: torch.Tensor) -> torch.Tensor:
    return t.sum(0) if t.dim() == 2 else t.sum((0, 2, 3))


def _stacked(weight_ee: torch.Tensor, weight_ie: torch.Tensor) -> torch.Tensor:
    """``[weight_ee; weight_ie]``: a view when ``weight_ie`` follows ``weight_ee`` in one storage (as
    an E-I layer keeps them, see ``pack_``), else (and under ``torch.compile``, which does not trace
    storage addresses) their concatenation."""
    if (not torch.compiler.is_compiling() and weight_ee.is_contiguous() and weight_ie.is_contiguous() and weight_ee.dtype == weight_ie.dtype
            and weight_ee.device == weight_ie.device
            and weight_ee.untyped_storage().data_ptr() == weight_ie.untyped_storage().data_ptr()
            and weight_ie.storage_offset() == weight_ee.storage_offset() + weight_ee.numel()):
        return weight_ee.as_strided((weight_ee.shape[0] + weight_ie.shape[0], *weight_ee.shape[1:]),
                                    weight_ee.stride())
    return torch.cat([weight_ee, weight_ie])


@torch.no_grad()
def pack_(weight_ee: nn.Parameter, weight_ie: nn.Parameter) -> None:
    """Put the two parameters back into one storage, ``weight_ie`` after ``weight_ee`` (values
    unchanged), unless they are there already (``Module.to`` and its kin move each apart)."""
    stacked = _stacked(weight_ee, weight_ie)
    if stacked.data_ptr() != weight_ee.data_ptr():
        weight_ee.data, weight_ie.data = stacked.split([weight_ee.shape[0], weight_ie.shape[0]])


class _Projection(torch.autograd.Function):
    """``(I_EE, I_IE)``, the two halves (views) of one product of ``x`` with ``[weight_ee; weight_ie]``.

    Saves ``x`` and the two parameters; their stack is a view of one storage (``_stacked``),
    so it is neither copied nor kept.  The backward takes the two gradients apart, one product
    each, instead of concatenating them (a copy of ``[N, n_E + n_I, ..]``; on one thread the
    first layer's weight gradient also is 3-4x faster so).
    """

    @staticmethod
    def forward(ctx, x, weight_ee, weight_ie, conv):
        ctx.conv = conv
        ctx.save_for_backward(x, weight_ee, weight_ie)
        weight = _stacked(weight_ee, weight_ie).to(x.dtype)
        y = F.linear(x, weight) if conv is None else F.conv2d(x, weight, None, *conv)
        return y.split([weight_ee.shape[0], weight_ie.shape[0]], dim=1)

    @staticmethod
    def backward(ctx, grad_ee, grad_ie):
        x, *weights = ctx.saved_tensors
        x = x.to(grad_ee.dtype)  # the two gradients share the product's dtype: cast the input once
        grad_x, grad_w = None, []
        for grad, weight in zip((grad_ee, grad_ie), weights):
            w = weight.to(grad.dtype)
            if ctx.conv is None:
                g_x = grad @ w if ctx.needs_input_grad[0] else None
                g_w = grad.flatten(0, -2).t() @ x.flatten(0, -2)
            else:
                stride, padding, dilation = ctx.conv
                g_x, g_w, _ = torch.ops.aten.convolution_backward(
                    grad, x, w, None, stride, padding, dilation, False, [0, 0], 1,
                    [ctx.needs_input_grad[0], True, False])
            grad_x = g_x if grad_x is None else grad_x.add_(g_x)
            grad_w.append(g_w.to(weight.dtype))
        return grad_x, *grad_w, None


def project(x, weight_ee, weight_ie, conv=None):
    """``(I_EE, I_IE)``: ``[N, d] -> [N, n_E], [N, n_I]`` (``conv=None``), or a convolution
    ``[N, C, H, W] -> [N, n_E, H', W'], [N, n_I, H', W']`` with ``conv = (stride, padding, dilation)``."""
    return _Projection.apply(x, weight_ee, weight_ie, conv)


def zero_floor(i_sh: torch.Tensor) -> torch.Tensor:
    """``[N, ...] -> [N]``: the smallest strictly positive value of each sample (``+inf`` if none),
    which replaces the sample's exact zeros.  One reduction, no branch on the data."""
    return torch.where(i_sh > 0, i_sh, torch.inf).flatten(1).amin(dim=1)


def _floored_(i_sh: torch.Tensor):
    """``(I_sh~, floor [N])`` for ``I_sh >= 0`` (Dale's law): ``max(I_sh, zero_floor(I_sh))``, in
    place and without a mask, in four passes.  On the bits (an integer view, ordered like the
    non-negative floats), adding the largest integer (two's complement, wrapping) maps the positive
    values below ``-1`` in their order and the zeros to ``-1`` (``-0``) and the largest integer
    (``+0``), so one ``amin`` finds the floor (none: the minimum is ``>= -1``); subtracting it
    restores every value exactly, and the ``maximum`` replaces the zeros by the floor (``+inf`` in
    a sample without a positive value)."""
    bits = i_sh.view(torch.int32 if i_sh.element_size() == 4 else torch.int64)
    largest = torch.iinfo(bits.dtype).max
    lowest = bits.add_(largest).flatten(1).amin(dim=1)
    floor = torch.where(lowest >= -1, torch.inf, lowest.sub(largest).view(i_sh.dtype))
    bits.sub_(largest)
    return torch.maximum(i_sh, floor.view(-1, *([1] * (i_sh.dim() - 1))), out=i_sh), floor


def _replace_zeros_(i_sh: torch.Tensor, floor: torch.Tensor, nonnegative: bool) -> torch.Tensor:
    """``i_sh`` with its exact zeros replaced by ``floor [N]`` (in place when ``nonnegative``).
    Under Dale's law (``nonnegative``: ``W_EI``, ``g_I`` >= 0, so ``I_sh >= 0``) the floor is at
    most every positive value of its sample, and replacing the zeros is ``max(I_sh, floor)``."""
    floor = floor.view(-1, *([1] * (i_sh.dim() - 1)))
    if nonnegative:
        return torch.maximum(i_sh, floor, out=i_sh)
    return torch.where(i_sh == 0, floor, i_sh)


def _stabilized_(i_sh, floor, eps, nonnegative):
    """``I_sh~`` from ``I_sh`` (overwritten where possible): its zeros replaced by ``floor``, or
    shifted by a fixed ``eps`` (the ablation; then ``floor`` is None)."""
    return i_sh.add_(eps) if eps is not None else _replace_zeros_(i_sh, floor, nonnegative)


def _through_inhibition(grad_d, grad_sh, r, weight_ei, gain_i, shunting):
    """Backward of ``I_EI = W_EI r`` and ``I_sh = (W_EI diag(g_I)) r`` given ``dL/dd = -dL/dI_EI``
    (``d = I_EE - I_EI``) and ``dL/dI_sh`` (``grad_sh``, or None): ``(dL/dr, dL/dW_EI, dL/dg_I)``."""
    grad_r = pointwise(-weight_ei.t(), grad_d)
    m_ei = _weight_grad(grad_d, r).neg_()                                        # sum of dL/dI_EI r^T
    if grad_sh is None:
        return grad_r, m_ei, None
    pointwise(shunting.t(), grad_sh, add_to=grad_r)
    m_sh = _weight_grad(grad_sh, r)                                              # sum of dL/dI_sh r^T
    return grad_r, m_ei + m_sh * gain_i, (m_sh * weight_ei).sum(0)


class _Circuit(torch.autograd.Function):
    """Everything after the I population, with a written-out backward, for one ``kind`` of output:
    ``'currents'``: ``(d, I_sh~)`` with ``d = I_EE - I_EI``; ``'current'``: ``I_int = g_E d / I_sh~ + b_E``
    (``sj_ei.currents.integrated``); ``'readout'``: ``d``.

    Saves ``r_I`` (which the I population's ReLU saves anyway), the ``[N]`` stabilization floor
    and, for ``I_int``, ``d`` (in the dtype of ``I_EE``); ``I_sh~`` is recomputed in backward (one
    point-wise product) instead of being stored.  Stabilization passes the gradient straight
    through.  The gradient of ``weight_ei`` is multiplied by ``grad_scale`` (``grad_factor``; docs/method.md
    section 4) here and nowhere else.  Computed in float32 (float64 for float64 input) with
    autocast off; ``I_int`` and the readout are returned in ``dtype``.
    """

    @staticmethod
    def forward(ctx, i_ee, r, weight_ei, gain_i, gain_e, bias, kind, eps, nonnegative, grad_scale, dtype):
        compute = torch.promote_types(r.dtype, torch.float32)
        ctx.config = (kind, eps, nonnegative, grad_scale, compute, i_ee.dtype)
        with torch.autocast(r.device.type, enabled=False):
            r32, weight = r.to(compute), weight_ei.to(compute)
            i_ei = pointwise(weight, r32)
            d = torch.sub(i_ee.to(compute), i_ei, out=i_ei)                             # I_EE - I_EI
            if kind == 'readout':
                ctx.save_for_backward(r, weight_ei)
                return d.to(dtype)
            gain = gain_i.to(compute)
            i_sh = pointwise(weight * gain, r32)
            if eps is None and nonnegative:
                i_sh, floor = _floored_(i_sh)
            else:
                floor = zero_floor(i_sh) if eps is None else None
                i_sh = _stabilized_(i_sh, floor, eps, nonnegative)
            if kind == 'currents':
                ctx.save_for_backward(r, weight_ei, gain_i, floor)
                return d, i_sh
            ctx.save_for_backward(d.to(i_ee.dtype), r, weight_ei, gain_i, gain_e, bias, floor)
            shape = (-1,) + (1,) * (i_sh.dim() - 2)
            out = integrated(d, i_sh, gain_e.to(compute).view(shape), bias.to(compute).view(shape),
                             out=torch.empty_like(d))
            return out.to(dtype)

    @staticmethod
    def backward(ctx, *grads):
        kind, eps, nonnegative, grad_scale, compute, ee_dtype = ctx.config
        with torch.autocast(grads[0].device.type, enabled=False):
            if kind == 'readout':
                r, weight_ei = ctx.saved_tensors
                grad_d = grads[0].to(compute)
                grad_r, grad_w, _ = _through_inhibition(grad_d, None, r.to(compute), weight_ei.to(compute), None, None)
                return (grad_d.to(ee_dtype), grad_r.to(r.dtype), (grad_w * grad_scale).to(weight_ei.dtype),
                        None, None, None, None, None, None, None, None)
            if kind == 'currents':
                r, weight_ei, gain_i, _ = ctx.saved_tensors
                grad_d, grad_sh = (g.to(compute) for g in grads)
                grad_gain_e = grad_bias = None
            else:
                d, r, weight_ei, gain_i, gain_e, bias, floor = ctx.saved_tensors
            r32, weight, gain = r.to(compute), weight_ei.to(compute), gain_i.to(compute)
            shunting = weight * gain
            if kind == 'current':
                i_sh = _stabilized_(pointwise(shunting, r32), floor, eps, nonnegative)
                shape = (-1,) + (1,) * (d.dim() - 2)
                grad_d, grad_sh, grad_gain_e, grad_bias = integrate_backward_(
                    grads[0].to(compute, copy=True), d.to(compute), i_sh, gain_e.to(compute).view(shape), 1)
                grad_gain_e, grad_bias = grad_gain_e.to(gain_e.dtype), grad_bias.to(bias.dtype)
            grad_r, grad_w, grad_gain_i = _through_inhibition(grad_d, grad_sh, r32, weight, gain, shunting)
        return (grad_d.to(ee_dtype), grad_r.to(r.dtype), (grad_w * grad_scale).to(weight_ei.dtype),
                grad_gain_i.to(gain_i.dtype), grad_gain_e, grad_bias, None, None, None, None, None)


def grad_factor(grad_scale, fan_in: int) -> float:
    """The factor on ``weight_ei``'s gradient for a layer's ``grad_scale`` and fan-in ``d``: ``d ** -p`` for a
    number ``p`` (paper Table 3); ``True`` is ``p = 1`` (``1/d``, the paper's default), ``False`` is ``p = 0`` (1)."""
    p = float(grad_scale)
    return 1.0 / fan_in if p == 1 else float(fan_in) ** -p


def run(layer, x: torch.Tensor) -> Union[torch.Tensor, EICurrents]:
    """An E-I layer's output for its (checked) input ``x`` (``[N, ...]``, or ``[T, B, ...]`` in
    multi-step mode): ``I_int`` (``layer.output == 'current'``; readout layers: ``I_EE - I_EI``)
    or the ``EICurrents`` a fused E population integrates (``'currents'``), each ``[.., n_E, ..]``.

    ``layer.division`` (None, or a callable ``I_sh~ -> I_sh'`` with its own gradient) replaces
    ``I_sh~`` before the division; then ``I_int`` is ``sj_ei.currents.integrate`` of the currents
    ``(d = I_EE - I_EI, I_sh', g_E, b_E)``.
    """
    if layer.output not in OUTPUTS:
        raise ValueError(f'{type(layer).__name__}: output must be one of {OUTPUTS}, got {layer.output!r}')
    steps = x.shape[:2] if layer.step_mode == 'm' else None
    flat = x.flatten(0, 1) if steps is not None else x
    i_ee, i_ie = layer.project(flat)
    r = layer.i_population(i_ie)
    config = (layer.eps, layer.sign_constraint, grad_factor(layer.grad_scale, layer.fan_in), x.dtype)
    if layer.readout:
        if layer.output != 'current':
            raise ValueError(f"{type(layer).__name__}: a readout layer outputs I_EE - I_EI (output='current'), "
                             f"it has no E population to hand currents to; got output={layer.output!r}")
        out = _Circuit.apply(i_ee, r, layer.weight_ei, None, None, None, 'readout', *config)
    elif layer.output == 'current' and layer.division is None:
        out = _Circuit.apply(i_ee, r, layer.weight_ei, layer.gain_i, layer.gain_e, layer.bias, 'current', *config)
    else:
        d, i_sh = _Circuit.apply(i_ee, r, layer.weight_ei, layer.gain_i, None, None, 'currents', *config)
        if layer.division is not None:
            i_sh = layer.division(i_sh)
        currents = EICurrents(d, i_sh, layer.gain_e, layer.bias)
        if layer.output == 'currents':
            if steps is None:
                return currents
            return currents._replace(d=d.unflatten(0, steps), i_sh=i_sh.unflatten(0, steps))
        out = integrate(currents, channel_dim=1).to(x.dtype)
    return out.unflatten(0, steps) if steps is not None else out
