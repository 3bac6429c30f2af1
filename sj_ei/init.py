"""E-I Init (docs/method.md section 3) of one E-I layer, as ``torch.nn.init``-style functions
(``sj_ei.ei_init``, in ``sj_ei.layers``, does it over a whole network).

Every E-I layer initializes itself from its own input on its first forward in
training mode (``from_input_``), so a plain training loop needs nothing more;
``ei_init`` does it explicitly from one batch, or data-free for Bernoulli spikes.
The layer is any ``sj_ei.layers.EILayer`` (this module reads its attributes and
``label``, and calls its ``set_initialized``).  Under ``torch.distributed`` (world
size > 1) the input statistics are summed over all ranks and the drawn weights
broadcast from rank 0, so every rank starts from the same parameters; every rank
must then initialize, in the same order (as the forward passes of
``DistributedDataParallel`` do).
"""
import math

import torch
import torch.distributed as dist
from torch import nn

from .errors import UserError


class EIInitError(UserError, ValueError):
    """An E-I layer cannot be initialized from the data it was given."""


@torch.no_grad()
def ei_(layer: nn.Module, e_x: float, e_x2: float, var_x: float) -> nn.Module:
    """E-I Init of ``layer`` in place for input statistics ``E[x]``, ``E[x^2]``, ``Var_x``:
    exponential ``weight_ee``/``weight_ie`` of mean ``sqrt(Var_x / (d (E_x2 + Var_x)))``,
    ``weight_ei = 1/n_I``, ``gain_i = sqrt(E_x2 + Var_x) / (sqrt(d) E_x)``, ``gain_e = 1`` (or the
    layer's ``e_gain``, which ``sj_ei.convert.to_ei(neurons='keep')`` sets for the neuron after it),
    ``bias = 0``.  The ``init='kaiming'`` ablation draws Kaiming-normal weights instead
    (clamped to >= 0 under ``sign_constraint``).  Marks the layer initialized."""
    d = layer.fan_in
    scale = math.sqrt(var_x / (d * (e_x2 + var_x)))
    for weight in (layer.weight_ee, layer.weight_ie):
        if layer.init == 'ei':
            weight.exponential_(1.0 / scale)
        else:
            nn.init.kaiming_normal_(weight, nonlinearity='relu')
            if layer.sign_constraint:
                weight.clamp_(min=0)
    layer.weight_ei.fill_(1.0 / layer.n_i)
    if not layer.readout:
        layer.gain_i.fill_(math.sqrt(e_x2 + var_x) / (math.sqrt(d) * e_x))
        layer.gain_e.fill_(getattr(layer, 'e_gain', 1.0))
        layer.bias.zero_()
    layer.set_initialized(True)
    return layer


def bernoulli_(layer: nn.Module, p: float) -> nn.Module:
    """Data-free E-I Init for Bernoulli(``p``) input spikes: ``E_x = E_x2 = p``, ``Var_x = p (1 - p)``."""
    if not 0 < p < 1:
        raise ValueError(f'{layer.label}: Bernoulli firing probability must be in (0, 1), got {p}')
    return ei_(layer, p, p, p * (1 - p))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def input_statistics(x: torch.Tensor):
    """``(samples, E_x, E_x2, Var_x, min)`` of ``x [samples, ...]`` (summed over all ranks under
    torch.distributed); ``Var_x`` is the mean over feature positions of the unbiased variance
    over samples."""
    x = x.detach().flatten(1).double()
    sums = torch.cat([x.new_tensor([x.shape[0]]), x.sum(0), x.square().sum(0)])  # [1 + 2 F]
    lowest = x.amin() if x.numel() else x.new_tensor(math.inf)
    if _distributed():
        dist.all_reduce(sums)
        dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
    n, (total, squares) = sums[0], sums[1:].view(2, -1)
    var = (squares - total.square() / n) / (n - 1)
    e_x, e_x2 = total.mean() / n, squares.mean() / n
    return int(n.item()), e_x.item(), e_x2.item(), var.clamp(min=0).mean().item(), lowest.item()


@torch.no_grad()
def from_input_(layer: nn.Module, x: torch.Tensor) -> nn.Module:
    """E-I Init of ``layer`` from the statistics of its input batch ``x`` (``[N, ...]``, or
    ``[T, B, ...]`` in multi-step mode: ``T*B`` samples).  The input must be non-negative
    (spikes, or [0, 1] pixels): signed input (e.g. images normalized by mean and std) is an error."""
    samples = x.flatten(0, 1) if layer.step_mode == 'm' else x
    n, e_x, e_x2, var_x, lowest = input_statistics(samples)
    label = layer.label
    if n < 2:
        raise EIInitError(f'{label}: E-I Init needs at least 2 samples (T*B >= 2) to estimate the input '
                          f'variance, got {n}')
    if not (math.isfinite(e_x) and math.isfinite(e_x2)):
        raise EIInitError(f'{label}: its input at E-I Init is not finite (mean {e_x}); check the data and '
                          'the layers before it')
    if lowest < 0:
        raise EIInitError(f'{label}: its input at E-I Init has negative values (min {lowest:.3g}, mean '
                          f'{e_x:.3g}), but E-I layers take non-negative input (Dale\'s law; E-I Init '
                          'assumes it): spikes, or images as [0, 1] pixels (transforms.ToTensor() without '
                          'Normalize, as the paper does). Remove the mean/std normalization before this layer')
    if e_x == 0 or var_x <= 1e-12 * e_x2:
        what = 'silent (mean 0)' if e_x == 0 else 'constant (variance 0)'
        raise EIInitError(f'{label}: its input at E-I Init is {what}, so the layer cannot be initialized '
                          'from it. Initialize from a batch of real data that reaches this layer '
                          '(sj_ei.ei_init(net, x)), or data-free with sj_ei.ei_init(net, p=0.1)')
    ei_(layer, e_x, e_x2, var_x)
    return broadcast_(layer)


def broadcast_(layer: nn.Module) -> nn.Module:
    """Under torch.distributed: rank 0's parameters of ``layer`` on every rank (nothing otherwise)."""
    if _distributed():
        for p in layer.parameters():
            dist.broadcast(p.data, src=0)
    return layer

