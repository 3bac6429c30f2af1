"""The stateless math of one E-I layer: the torch specification of every backend.

Shapes: ``y`` is the output of the layer's one projection of the input ``x``
(E and I channels together), ``[N, n_E + n_I, *S]`` where ``N`` is the number
of samples (``T * B`` in multi-step mode) and ``S`` the spatial dimensions
(none for a linear layer).  Everything here follows SPEC sections 1 and 4.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


_LARGE_MAP = 64  # positions per map from which a batched matmul beats a 1x1 convolution


def pointwise(weight: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``weight r`` across channels at every position: ``[K, n_I] x [N, n_I(, H, W)] -> [N, K(, H, W)]``."""
    if r.dim() == 2:
        return F.linear(r, weight)
    if r.shape[-1] * r.shape[-2] >= _LARGE_MAP:
        flat = r.flatten(2)
        return torch.bmm(weight.expand(flat.shape[0], -1, -1), flat).unflatten(2, r.shape[2:])
    return F.conv2d(r, weight[:, :, None, None])


def _weight_grad(g: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``sum over samples and positions of g r^T``: ``[N, K(, H, W)], [N, n_I(, H, W)] -> [K, n_I]``."""
    if g.dim() == 2:
        return g.t() @ r
    if g.shape[-1] * g.shape[-2] >= _LARGE_MAP:  # per-sample products read the maps in place
        return torch.bmm(g.flatten(2), r.flatten(2).transpose(1, 2)).sum(0)
    return torch.einsum('nehw,nchw->ec', g, r)


class _Projection(torch.autograd.Function):
    """``I_EE`` and ``I_IE`` in one product of ``x`` with ``[weight_ee; weight_ie]``.

    Saves ``x`` and the two parameters, not their concatenation: the concatenated
    weight is rebuilt in backward, so it costs no activation memory.
    """

    @staticmethod
    def forward(ctx, x, weight_ee, weight_ie, conv):
        ctx.conv = conv
        ctx.save_for_backward(x, weight_ee, weight_ie)
        weight = torch.cat([weight_ee, weight_ie]).to(x.dtype)
        return F.linear(x, weight) if conv is None else F.conv2d(x, weight, None, *conv)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight_ee, weight_ie = ctx.saved_tensors
        weight = torch.cat([weight_ee, weight_ie]).to(grad_y.dtype)
        if ctx.conv is None:
            grad_x = grad_y @ weight if ctx.needs_input_grad[0] else None
            grad_w = grad_y.flatten(0, -2).t() @ x.flatten(0, -2).to(grad_y.dtype)
        else:
            stride, padding, dilation = ctx.conv
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_y, x.to(grad_y.dtype), weight, None, stride, padding, dilation, False, [0, 0], 1,
                [ctx.needs_input_grad[0], True, False])
        grad_ee, grad_ie = grad_w.to(weight_ee.dtype).split([weight_ee.shape[0], weight_ie.shape[0]])
        return grad_x, grad_ee, grad_ie, None


def project(x, weight_ee, weight_ie, conv=None):
    """``[N, d] -> [N, n_E + n_I]`` (``conv=None``), or a convolution ``[N, C, H, W] ->
    [N, n_E + n_I, H', W']`` with ``conv = (stride, padding, dilation)``."""
    return _Projection.apply(x, weight_ee, weight_ie, conv)


def _zero_floor(i_sh: torch.Tensor) -> Optional[Tuple[torch.Tensor, bool]]:
    """``None`` when ``i_sh`` (``[N, ...]``) has no exact zero; else ``(floor, nonnegative)``:
    ``floor [N]`` holds the value that replaces the zeros of each sample, its smallest
    strictly positive value (``+inf`` if none), and ``nonnegative`` says that ``i_sh >= 0``
    (Dale's law), where replacing the zeros is ``max(i_sh, floor)``.
    Element-wise work stays in floating point (comparisons to bool masks are slow on the CPU)."""
    lowest = i_sh.amin() if i_sh.numel() else i_sh.new_ones(())
    if lowest > 0:  # the usual case, settled by one reduction
        return None
    if lowest == 0:  # x / sign(x) is x where x > 0 and NaN at the zeros
        positive = torch.div(i_sh, i_sh.sign()).nan_to_num_(nan=torch.inf, posinf=torch.inf)
        return positive.flatten(1).amin(dim=1), True
    if not (i_sh == 0).any():  # negative values (no Dale's law) or NaN
        return None
    return torch.where(i_sh > 0, i_sh, torch.inf).flatten(1).amin(dim=1), False


def _replace_zeros(i_sh: torch.Tensor, floor: torch.Tensor, nonnegative: bool, out=None) -> torch.Tensor:
    """``i_sh`` with its zeros replaced by ``floor`` (``[N]``, per sample; see ``_zero_floor``)."""
    floor = floor.view(-1, *([1] * (i_sh.dim() - 1)))
    if nonnegative:  # the floor is at most every positive value of its sample
        return torch.maximum(i_sh, floor, out=out)
    return torch.where(i_sh == 0, floor, i_sh, out=out)


def stabilize(i_sh: torch.Tensor) -> torch.Tensor:
    """Adaptive stabilization (forward value only): every exact zero of ``i_sh`` is
    replaced by the smallest strictly positive value of its sample (``+inf`` when the
    sample has none).  ``i_sh``: ``[N, ...]``, one sample per index of dim 0."""
    found = _zero_floor(i_sh)
    return i_sh if found is None else _replace_zeros(i_sh, *found)


class _StraightThrough(torch.autograd.Function):
    """``I_sh~`` from ``I_sh`` and the per-sample ``floor``; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, i_sh, floor, nonnegative):
        return _replace_zeros(i_sh, floor, nonnegative)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def _both_paths(weight_ei, gain_i, r):
    """``(I_EI, I_sh)``, each ``[N, n_E, *S]``: ``W_EI r`` and ``(W_EI diag(g_I)) r``.
    Two products, not one with ``[W_EI; W_EI diag(g_I)]``: on the CPU a fresh tensor over
    32 MB (glibc's largest heap block) is mapped anew, page by page, at every call."""
    return pointwise(weight_ei, r), pointwise(weight_ei * gain_i, r)


def inhibition(y, n_e, weight_ei, gain_i, i_population, eps=None, division=None):
    """Split ``y`` into ``I_EE`` and ``I_IE`` and compute both inhibition paths (``_both_paths``).
    Returns ``(I_EE, I_EI, I_sh~)``, each ``[N, n_E, *S]``; ``I_sh~``
    is stabilized with a straight-through gradient (or shifted by a fixed ``eps``), then
    approximated by ``division`` (``sj_ei.division``) unless it is None."""
    i_ee, i_ie = y[:, :n_e], y[:, n_e:]
    i_ei, i_sh = _both_paths(weight_ei, gain_i, i_population(i_ie))
    if eps is not None:
        i_sh = i_sh + eps
    else:
        with torch.no_grad():
            found = _zero_floor(i_sh)
        i_sh = i_sh if found is None else _StraightThrough.apply(i_sh, *found)
    return i_ee, i_ei, (i_sh if division is None else division(i_sh))


def integrate(i_ee, i_ei, i_sh, gain_e, bias):
    """``I_int = g_E (I_EE - I_EI) / I_sh~ + b_E`` with per-channel ``g_E``, ``b_E`` ``[n_E]``,
    in this order of operations (the CuPy kernel follows it, so spikes agree exactly).
    Forward values only (no autograd through it)."""
    return _integrate_difference(torch.sub(i_ee, i_ei), i_sh, gain_e, bias)


def _integrate_difference(d, i_sh, gain_e, bias):
    """``integrate`` from ``d = I_EE - I_EI``, which it leaves unchanged."""
    shape = (-1, *([1] * (d.dim() - 2)))
    out = torch.mul(d, gain_e.view(shape))
    return torch.addcdiv(bias.view(shape), out, i_sh, out=out)  # b + 1 * (out / I_sh~): the same rounding


def _at_least_float32(y: torch.Tensor) -> torch.Tensor:
    return y if y.dtype in (torch.float32, torch.float64) else y.float()


def _sum_per_channel(t: torch.Tensor) -> torch.Tensor:
    return t.sum(0) if t.dim() == 2 else t.sum((0, 2, 3))


class _EICurrent(torch.autograd.Function):
    """``I_int`` (or the readout ``I_EE - I_EI``) from ``y``.

    For backward it keeps ``d = I_EE - I_EI`` and ``I_IE`` (as many values as ``y``, which
    is then freed), and the ``[N]`` replacement values when stabilization replaced zeros;
    it recomputes ``r_I`` and ``I_sh`` (one point-wise product) instead of storing them,
    so an E-I layer saves 1.25x the activations of a convolution followed by batch norm.
    Under autocast ``d`` is kept in the dtype of ``y``.  Backward is written out: the
    gradients of ``I_EE`` and ``I_sh`` are written into reused buffers, and those of
    ``W_EI`` and ``g_I`` come from the two ``[n_E, n_I]`` sums of products.  The gradient
    of ``weight_ei`` is multiplied by ``ei_grad_scale`` (SPEC section 4); the
    stabilization passes the gradient of ``I_sh~`` straight through to ``I_sh``.
    Computation is in float32 (or float64) even under autocast: half precision loses the division.
    """

    @staticmethod
    def forward(ctx, y, weight_ei, gain_i, gain_e, bias, n_e, i_population, eps, readout, ei_grad_scale, division):
        ctx.config = (n_e, i_population, eps, readout, ei_grad_scale, division)
        with torch.autocast(y.device.type, enabled=False):
            y32 = _at_least_float32(y)
            if readout:
                ctx.save_for_backward(y, weight_ei)
                return y32[:, :n_e] - pointwise(weight_ei, i_population(y32[:, n_e:]))
            i_ie = y[:, n_e:].contiguous()
            i_ei, i_sh = _both_paths(weight_ei, gain_i, i_population(_at_least_float32(i_ie)))
            floor, ctx.nonnegative = None, True
            if eps is not None:
                i_sh.add_(eps)
            elif (found := _zero_floor(i_sh)) is not None:
                floor, ctx.nonnegative = found
                _replace_zeros(i_sh, *found, out=i_sh)
            if division is not None:
                i_sh = division(i_sh)
            d = torch.sub(y32[:, :n_e], i_ei, out=i_ei)
            out = _integrate_difference(d, i_sh, gain_e, bias)
            ctx.save_for_backward(d.to(y.dtype), i_ie, weight_ei, gain_i, gain_e, bias, floor)
            return out

    @staticmethod
    def backward(ctx, grad_out):
        n_e, i_population, eps, readout, ei_grad_scale, division = ctx.config
        if readout:
            y, weight_ei = ctx.saved_tensors
            i_ie = y[:, n_e:]
        else:
            d, i_ie, weight_ei, gain_i, gain_e, bias, floor = ctx.saved_tensors
        with torch.autocast(grad_out.device.type, enabled=False):
            with torch.enable_grad():
                i_ie = _at_least_float32(i_ie).detach().requires_grad_()
                r_i = i_population(i_ie)
            r = r_i.detach()
            if readout:
                grad_r = pointwise(-weight_ei.t(), grad_out)
                grad_i_ie, = torch.autograd.grad(r_i, i_ie, grad_r)
                grad_y = torch.cat([grad_out, grad_i_ie], dim=1).to(y.dtype)
                return grad_y, -_weight_grad(grad_out, r) * ei_grad_scale, None, None, None, None, None, None, None, None, None
            shape = (-1,) + (1,) * (d.dim() - 2)
            shunting = weight_ei * gain_i                                                 # I_sh = W_EI diag(g_I) r
            i_sh = pointwise(shunting, r)
            if eps is not None:
                i_sh.add_(eps)
            elif floor is not None:
                _replace_zeros(i_sh, floor, ctx.nonnegative, out=i_sh)
            if division is not None:
                i_sh = division(i_sh)
            grad_y = grad_out.new_empty((d.shape[0], n_e + i_ie.shape[1], *d.shape[2:]))
            q = torch.mul(grad_out, gain_e.view(shape), out=grad_y[:, :n_e]).div_(i_sh)  # dL/dI_EE = -dL/dI_EI
            normalized = torch.div(_at_least_float32(d), i_sh, out=i_sh)                # (I_EE - I_EI) / I_sh~
            product = grad_out * normalized
            grad_gain_e = _sum_per_channel(product)
            grad_bias = _sum_per_channel(grad_out)
            q_n = torch.mul(q, normalized, out=product)                                  # = -dL/dI_sh
            grad_r = pointwise(-weight_ei.t(), q).add_(pointwise(-shunting.t(), q_n))
            grad_y[:, n_e:], = torch.autograd.grad(r_i, i_ie, grad_r)
            m_q, m_n = _weight_grad(q, r), _weight_grad(q_n, r)                          # sums of q r^T, q_n r^T
            grad_weight_ei = -(m_q + m_n * gain_i)
            grad_gain_i = -(m_n * weight_ei).sum(0)
        return (grad_y.to(d.dtype), grad_weight_ei * ei_grad_scale, grad_gain_i, grad_gain_e, grad_bias,
                None, None, None, None, None, None)


def ei_current(y, n_e, weight_ei, gain_i, gain_e, bias, i_population, eps=None, readout=False, ei_grad_scale=1.0,
               division=None):
    """``[N, n_E + n_I, *S] -> [N, n_E, *S]``: the E-I layer's output current from its projection ``y``.

    ``eps=None`` selects adaptive stabilization; a float is the fixed-epsilon ablation.
    ``readout=True`` gives ``I_EE - I_EI`` (``gain_i``, ``gain_e``, ``bias`` unused, may be None).
    ``division``: ``None`` (exact) or a module of ``sj_ei.division`` applied to ``I_sh~``.
    """
    return _EICurrent.apply(y, weight_ei, gain_i, gain_e, bias, n_e, i_population, eps, readout, ei_grad_scale,
                            division)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` whose gradient is multiplied by ``scale`` (the ``1/d`` scaling of ``W_EI``)."""
    return x if scale == 1.0 else _ScaleGrad.apply(x, scale)
