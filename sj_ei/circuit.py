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
    return F.conv2d(r, weight_ei[:, :, None, None])


def stabilize(i_sh: torch.Tensor) -> torch.Tensor:
    """Adaptive stabilization (forward value only): every exact zero of ``i_sh`` is
    replaced by the smallest strictly positive value of its sample (``+inf`` when the
    sample has none).  ``i_sh``: ``[N, ...]``, one sample per index of dim 0."""
    positive = torch.where(i_sh > 0, i_sh, torch.inf)
    floor = positive.flatten(1).amin(dim=1).view(-1, *([1] * (i_sh.dim() - 1)))
    return torch.where(i_sh == 0, floor, i_sh)


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
    """``I_int = g_E (I_EE - I_EI) / I_sh~ + b_E`` with per-channel ``g_E``, ``b_E`` ``[n_E]``."""
    shape = (-1, *([1] * (i_ee.dim() - 2)))
    return gain_e.view(shape) * (i_ee - i_ei) / i_sh + bias.view(shape)


def _at_least_float32(y: torch.Tensor) -> torch.Tensor:
    return y if y.dtype in (torch.float32, torch.float64) else y.float()


def _currents(y, n_e, weight_ei, gain_i, gain_e, bias, i_population, eps, readout):
    if readout:
        return y[:, :n_e] - pointwise(weight_ei, i_population(y[:, n_e:]))
    return integrate(*inhibition(y, n_e, weight_ei, gain_i, i_population, eps), gain_e, bias)


class _EICurrent(torch.autograd.Function):
    """``I_int`` (or the readout ``I_EE - I_EI``) from ``y``, keeping only ``y`` for backward.

    The element-wise intermediates are recomputed in backward instead of being stored,
    so an E-I layer saves 1.25x the activations of a convolution followed by batch norm.
    The gradient of ``weight_ei`` is multiplied by ``ei_grad_scale`` (SPEC section 4).
    Computation is in float32 (or float64) even under autocast: half precision loses the division.
    """

    @staticmethod
    def forward(ctx, y, weight_ei, gain_i, gain_e, bias, n_e, i_population, eps, readout, ei_grad_scale):
        ctx.config = (n_e, i_population, eps, readout, ei_grad_scale)
        ctx.save_for_backward(y, weight_ei, gain_i, gain_e, bias)
        with torch.autocast(y.device.type, enabled=False):
            return _currents(_at_least_float32(y), n_e, weight_ei, gain_i, gain_e, bias, i_population, eps, readout)

    @staticmethod
    def backward(ctx, grad_out):
        n_e, i_population, eps, readout, ei_grad_scale = ctx.config
        saved = ctx.saved_tensors
        inputs = [t if t is None else t.detach().requires_grad_(need) for t, need in zip(saved, ctx.needs_input_grad)]
        with torch.enable_grad(), torch.autocast(grad_out.device.type, enabled=False):
            out = _currents(_at_least_float32(inputs[0]), n_e, *inputs[1:], i_population, eps, readout)
            wanted = [t for t in inputs if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
        result = [next(grads) if t is not None and t.requires_grad else None for t in inputs]
        if result[1] is not None:
            result[1] = result[1] * ei_grad_scale
        return (*result, None, None, None, None, None)


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
