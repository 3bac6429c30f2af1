"""The stateless math of one E-I layer: the torch specification of every backend.

Shapes: ``y`` is the output of the layer's one projection of the input ``x``
(E and I channels together), ``[N, n_E + n_I, *S]`` where ``N`` is the number
of samples (``T * B`` in multi-step mode) and ``S`` the spatial dimensions
(none for a linear layer).  Everything here follows SPEC sections 1 and 4.
"""
import torch
import torch.nn.functional as F


def pointwise(weight_ei: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``W_EI r`` across channels at every position: ``[n_E, n_I] x [N, n_I(, H, W)] -> [N, n_E(, H, W)]``."""
    if r.dim() == 2:
        return F.linear(r, weight_ei)
    if r.shape[-1] * r.shape[-2] >= 64:  # a batched matmul beats a 1x1 convolution on large maps
        flat = r.flatten(2)
        return torch.bmm(weight_ei.expand(flat.shape[0], -1, -1), flat).unflatten(2, r.shape[2:])
    return F.conv2d(r, weight_ei[:, :, None, None])


def _pointwise_t(weight_ei: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``W_EI^T g``: ``[N, n_E(, H, W)] -> [N, n_I(, H, W)]`` (the backward of ``pointwise`` in ``r``)."""
    return pointwise(weight_ei.t(), g)


def _weight_grad(g: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``sum over samples and positions of g r^T``: ``[N, n_E(, H, W)], [N, n_I(, H, W)] -> [n_E, n_I]``."""
    return g.t() @ r if g.dim() == 2 else torch.einsum('nehw,nchw->ec', g, r)


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


def stabilize(i_sh: torch.Tensor) -> torch.Tensor:
    """Adaptive stabilization (forward value only): every exact zero of ``i_sh`` is
    replaced by the smallest strictly positive value of its sample (``+inf`` when the
    sample has none).  ``i_sh``: ``[N, ...]``, one sample per index of dim 0."""
    zero = i_sh == 0
    if not zero.any():
        return i_sh
    positive = torch.where(i_sh > 0, i_sh, torch.inf)
    floor = positive.flatten(1).amin(dim=1).view(-1, *([1] * (i_sh.dim() - 1)))
    return torch.where(zero, floor, i_sh)


def inhibition(y, n_e, weight_ei, gain_i, i_population, eps=None):
    """Split ``y`` into ``I_EE`` and ``I_IE`` and compute both inhibition paths with one
    point-wise product.  Returns ``(I_EE, I_EI, I_sh~)``, each ``[N, n_E, *S]``; ``I_sh~``
    is stabilized with a straight-through gradient (or shifted by a fixed ``eps``)."""
    i_ee, i_ie = y[:, :n_e], y[:, n_e:]
    r_i = i_population(i_ie)
    gain = gain_i.view(-1, *([1] * (y.dim() - 2)))
    both = pointwise(weight_ei, torch.cat([r_i, gain * r_i], dim=0))
    i_ei, i_sh = both.chunk(2, dim=0)
    if eps is not None:
        return i_ee, i_ei, i_sh + eps
    if not i_sh.requires_grad:
        return i_ee, i_ei, stabilize(i_sh)
    with torch.no_grad():
        shift = stabilize(i_sh) - i_sh
    return i_ee, i_ei, i_sh + shift


def integrate(i_ee, i_ei, i_sh, gain_e, bias):
    """``I_int = g_E (I_EE - I_EI) / I_sh~ + b_E`` with per-channel ``g_E``, ``b_E`` ``[n_E]``,
    in this order of operations (the CuPy kernel follows it, so spikes agree exactly)."""
    shape = (-1, *([1] * (i_ee.dim() - 2)))
    return (i_ee - i_ei).mul_(gain_e.view(shape)).div_(i_sh).add_(bias.view(shape))


def _at_least_float32(y: torch.Tensor) -> torch.Tensor:
    return y if y.dtype in (torch.float32, torch.float64) else y.float()


def _sum_per_channel(t: torch.Tensor) -> torch.Tensor:
    return t.sum(0) if t.dim() == 2 else t.sum((0, 2, 3))


class _EICurrent(torch.autograd.Function):
    """``I_int`` (or the readout ``I_EE - I_EI``) from ``y``, keeping only ``y`` for backward.

    The element-wise intermediates are recomputed in backward instead of being stored,
    so an E-I layer saves 1.25x the activations of a convolution followed by batch norm,
    and backward is written out so that it makes as few passes over them as it can.
    The gradient of ``weight_ei`` is multiplied by ``ei_grad_scale`` (SPEC section 4);
    the stabilization passes the gradient of ``I_sh~`` straight through to ``I_sh``.
    Computation is in float32 (or float64) even under autocast: half precision loses the division.
    """

    @staticmethod
    def forward(ctx, y, weight_ei, gain_i, gain_e, bias, n_e, i_population, eps, readout, ei_grad_scale):
        ctx.config = (n_e, i_population, eps, readout, ei_grad_scale)
        ctx.save_for_backward(y, weight_ei, gain_i, gain_e, bias)
        with torch.autocast(y.device.type, enabled=False):
            y = _at_least_float32(y)
            if readout:
                return y[:, :n_e] - pointwise(weight_ei, i_population(y[:, n_e:]))
            return integrate(*inhibition(y, n_e, weight_ei, gain_i, i_population, eps), gain_e, bias)

    @staticmethod
    def backward(ctx, grad_out):
        n_e, i_population, eps, readout, ei_grad_scale = ctx.config
        y, weight_ei, gain_i, gain_e, bias = ctx.saved_tensors
        with torch.autocast(grad_out.device.type, enabled=False):
            y32 = _at_least_float32(y)
            i_ee, i_ie = y32[:, :n_e], y32[:, n_e:]
            with torch.enable_grad():
                i_ie = i_ie.detach().requires_grad_()
                r_i = i_population(i_ie)
            r = r_i.detach()
            grad_gain_i = grad_gain_e = grad_bias = None
            if readout:
                grad_i_ee = grad_out
                grad_r = -_pointwise_t(weight_ei, grad_out)
                grad_weight_ei = -_weight_grad(grad_out, r)
            else:
                shape = (-1,) + (1,) * (y.dim() - 2)
                gain = gain_i.view(shape)
                gr = gain * r
                i_ei, i_sh = pointwise(weight_ei, torch.cat([r, gr])).chunk(2)
                i_sh = stabilize(i_sh) if eps is None else i_sh + eps
                q = (grad_out * gain_e.view(shape)).div_(i_sh)         # dL/dI_EE = -dL/dI_EI
                normalized = (i_ee - i_ei).div_(i_sh)                  # (I_EE - I_EI) / I_sh~
                grad_gain_e = _sum_per_channel(grad_out * normalized)
                grad_bias = _sum_per_channel(grad_out)
                q_n = q * normalized                                   # = -dL/dI_sh
                back_sh = _pointwise_t(weight_ei, q_n)
                grad_r = -_pointwise_t(weight_ei, q) - gain * back_sh
                grad_gain_i = -_sum_per_channel(r * back_sh)
                grad_weight_ei = -(_weight_grad(q, r) + _weight_grad(q_n, gr))
                grad_i_ee = q
            grad_i_ie, = torch.autograd.grad(r_i, i_ie, grad_r)
            grad_y = torch.cat([grad_i_ee, grad_i_ie], dim=1).to(y.dtype)
        return (grad_y, grad_weight_ei * ei_grad_scale, grad_gain_i, grad_gain_e, grad_bias,
                None, None, None, None, None)


def ei_current(y, n_e, weight_ei, gain_i, gain_e, bias, i_population, eps=None, readout=False, ei_grad_scale=1.0):
    """``[N, n_E + n_I, *S] -> [N, n_E, *S]``: the E-I layer's output current from its projection ``y``.

    ``eps=None`` selects adaptive stabilization; a float is the fixed-epsilon ablation.
    ``readout=True`` gives ``I_EE - I_EI`` (``gain_i``, ``gain_e``, ``bias`` unused, may be None).
    """
    return _EICurrent.apply(y, weight_ei, gain_i, gain_e, bias, n_e, i_population, eps, readout, ei_grad_scale)


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
