"""An independent float64 implementation of docs/method.md section 1, written from the formulas,
that the tests compare sj_ei's layers against (never calls sj_ei)."""
import torch
import torch.nn.functional as F


def stabilized(i_sh: torch.Tensor) -> torch.Tensor:
    """Per sample (dim 0): exact zeros -> smallest strictly positive value of the sample, or +inf."""
    out = i_sh.clone()
    for n in range(i_sh.shape[0]):
        positive = i_sh[n][i_sh[n] > 0]
        floor = positive.min() if positive.numel() else torch.tensor(float('inf'), dtype=i_sh.dtype)
        out[n][i_sh[n] == 0] = floor
    return out


def rate(i_ie: torch.Tensor) -> torch.Tensor:
    """The I population ``ReLU(I_IE)``, its gradient passing at exactly 0 (a silent receptive field),
    as in the authors' code (docs/collapse.md)."""
    return torch.where(i_ie >= 0, i_ie, 0.0)


def channel_mix(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``sum_c w[e, c] r[n, c, ...]``."""
    return torch.einsum('ec,nc...->ne...', w, r)


def ei_layer(x, weight_ee, weight_ie, weight_ei, gain_i=None, gain_e=None, bias=None,
             readout=False, straight_through=True, **conv):
    """docs/method.md section 1 for one batch of samples ``x [N, ...]`` in float64; ``conv`` holds
    stride/padding/dilation for a convolution (absent: linear layer)."""
    project = (lambda w: F.conv2d(x, w, **conv)) if weight_ee.dim() == 4 else (lambda w: x @ w.T)
    i_ee, i_ie = project(weight_ee), project(weight_ie)
    r_i = rate(i_ie)
    i_ei = channel_mix(weight_ei, r_i)
    if readout:
        return i_ee - i_ei
    per_channel = (-1,) + (1,) * (i_ee.dim() - 2)
    i_sh = channel_mix(weight_ei, gain_i.view(per_channel) * r_i)
    denominator = i_sh + (stabilized(i_sh) - i_sh).detach() if straight_through else stabilized(i_sh)
    return gain_e.view(per_channel) * (i_ee - i_ei) / denominator + bias.view(per_channel)
