"""sj_ei's torch LIF backend: the LIF dynamics over all T steps as one autograd function.

Forward, per step (spikingjelly ``LIFNode``, operation by operation, so spikes are equal)::

    I_int[t] = b_E + d[t] g_E / I_sh~[t]     (EICurrents input only, d = I_EE - I_EI; sj_ei.currents.integrated)
    H[t] = charge(V[t-1], I_int[t]);  S[t] = Heaviside(H[t] - v_th);  V[t] = reset(H[t], S[t])

For the backward it keeps ``H`` (for EICurrents input: ``d`` and ``I_sh~``, from which the backward
replays ``H`` exactly).  The backward runs the surrogate gradient back through time
in one loop and writes each gradient once: no ``[T, ...]`` gradient is zero-filled per step, as
indexing ``x_seq[t]`` under autograd does in spikingjelly's torch LIF.  Without gradients
nothing is kept.
Arithmetic is in float32 (float64 for float64 input), also for 16-bit currents under autocast.
"""
import dataclasses
import math
from typing import Optional, Union

import torch
from spikingjelly.activation_based import surrogate as sj_surrogate

from .currents import EICurrents, channel_view, integrate_backward_, integrated

SURROGATES = {'sigmoid': 'Sigmoid', 'atan': 'ATan'}  # LIFConfig.surrogate -> spikingjelly surrogate class
_OTHER_NEURON = "or put another spikingjelly neuron after the E-I layer (sj_ei.EIBlock then uses the layer's I_int)"


@dataclasses.dataclass(frozen=True)
class LIFConfig:
    """The spikingjelly ``LIFNode`` arguments of one E population and its surrogate gradient
    (``'sigmoid'`` or ``'atan'``: spikingjelly's ``surrogate.Sigmoid`` / ``surrogate.ATan`` with
    ``surrogate_alpha``), what every backend (and every generated kernel) is specialized for.
    The defaults are the paper's E population (docs/method.md section 2)."""
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: Optional[float] = None
    decay_input: bool = False
    detach_reset: bool = True
    surrogate: str = 'sigmoid'
    surrogate_alpha: float = 4.0

    def __post_init__(self):
        if self.surrogate not in SURROGATES:
            raise ValueError(f"sj_ei's fused LIF supports the surrogates {', '.join(map(repr, SURROGATES))} "
                             f"(spikingjelly's surrogate.Sigmoid and surrogate.ATan), got {self.surrogate!r}; "
                             f"use one of them, {_OTHER_NEURON}")
        numbers = (self.tau, self.v_threshold, self.surrogate_alpha, self.v_reset or 0.0)
        if not all(math.isfinite(x) for x in numbers) or self.tau <= 0:
            raise ValueError(f'LIFConfig needs tau > 0 and finite v_threshold, v_reset, surrogate_alpha, got {self}')

    @classmethod
    def of(cls, node) -> 'LIFConfig':
        """The settings of a spikingjelly ``LIFNode`` (or subclass, e.g. ``sj_ei.EILIFNode``);
        one clear error for a surrogate the fused LIF cannot run."""
        function = node.surrogate_function
        surrogate = next((key for key, name in SURROGATES.items()
                          if type(function) is getattr(sj_surrogate, name) and getattr(function, 'spiking', True)),
                         None)
        if surrogate is None:
            raise ValueError(f"{type(node).__name__}: sj_ei's fused LIF supports the surrogates surrogate.Sigmoid and "
                             f"surrogate.ATan with spiking=True, got {function!r}; use one of them, "
                             f"{_OTHER_NEURON}")
        return cls(float(node.tau), float(node.v_threshold), None if node.v_reset is None else float(node.v_reset),
                   bool(node.decay_input), bool(node.detach_reset), surrogate, float(function.alpha))


def _charge(v: torch.Tensor, x: torch.Tensor, config: LIFConfig, out: torch.Tensor,
            scratch: torch.Tensor) -> torch.Tensor:
    """``H = charge(V, I)`` into ``out`` (which may be ``x`` itself), in spikingjelly's order of
    operations; ``scratch``: a buffer shaped like ``v``."""
    tau, v_reset = config.tau, config.v_reset
    if config.decay_input:
        leaked = v if v_reset is None or v_reset == 0.0 else torch.sub(v, v_reset, out=scratch)
        return torch.sub(x, leaked, out=out).div_(tau).add_(v)           # v + (x - (v - v_reset)) / tau
    if v_reset is None or v_reset == 0.0:
        leaked = torch.mul(v, 1.0 - 1.0 / tau, out=scratch)              # v * (1 - 1/tau) + x
    else:
        leaked = torch.sub(v, v_reset, out=scratch).div_(tau).neg_().add_(v)  # v - (v - v_reset) / tau + x
    return torch.add(leaked, x, out=out)


def _reset(h: torch.Tensor, spike: torch.Tensor, config: LIFConfig, v: torch.Tensor) -> None:
    """``V = reset(H, S)`` into ``v``."""
    if config.v_reset is None:
        torch.sub(h, spike, alpha=config.v_threshold, out=v)            # h - s * v_th (s * v_th is exact)
    else:
        v.copy_(h).masked_fill_(spike.bool(), config.v_reset)            # (1 - s) h + s v_reset


def _run(inputs, v_init: torch.Tensor, config: LIFConfig, T: int, keep_h: bool, v_seq: Optional[torch.Tensor]):
    """The forward loop.  ``inputs(t)``: ``I_int[t]``; returns ``(spikes [T, ...], v_last, h_seq or None)``."""
    spikes = v_init.new_empty((T, *v_init.shape))
    h_seq = v_init.new_empty((T, *v_init.shape)) if keep_h else None
    h_buffer = None if keep_h else torch.empty_like(v_init)
    v, v_next, scratch = v_init, torch.empty_like(v_init), torch.empty_like(v_init)
    for t in range(T):
        h = _charge(v, inputs(t), config, h_seq[t] if keep_h else h_buffer, scratch)
        if v_seq is not None:
            v_next = v_seq[t]
        torch.ge(h, config.v_threshold, out=spikes[t])  # H - v_th >= 0 exactly when H >= v_th (IEEE subtraction)
        _reset(h, spikes[t], config, v_next)
        v = v_next
    v_last = v.clone() if v_seq is not None else v
    return spikes, v_last, h_seq


def _replay_(x_seq: torch.Tensor, v_init: Optional[torch.Tensor], config: LIFConfig) -> torch.Tensor:
    """``H [T, ...]`` of the forward loop, recomputed exactly from ``I_int`` ``x_seq`` (so are its
    spikes), written over ``x_seq``.  ``v_init`` None: every neuron starts at 0 without input decay,
    so ``H[0] = I_int[0]`` (charging from 0 adds 0)."""
    v, spike, scratch = v_init, torch.empty_like(x_seq[0]), torch.empty_like(x_seq[0])
    for t in range(x_seq.shape[0]):
        h = x_seq[t] if v is None else _charge(v, x_seq[t], config, x_seq[t], scratch)
        v = torch.empty_like(spike) if v is None or v is v_init else v
        torch.ge(h, config.v_threshold, out=spike)
        _reset(h, spike, config, v)
    return x_seq


def _surrogate_derivative(h_seq: torch.Tensor, config: LIFConfig, out: Optional[torch.Tensor]) -> torch.Tensor:
    """``dS/dH`` of spikingjelly's surrogate at every step, into ``out`` (may be ``h_seq``; None: a new tensor)."""
    over, alpha = torch.sub(h_seq, config.v_threshold, out=out), config.surrogate_alpha
    if config.surrogate == 'sigmoid':                                    # alpha sig(alpha x) (1 - sig(alpha x))
        sig = over.mul_(alpha).sigmoid_()
        complement = torch.empty_like(sig[0])
        for step in sig:                                                 # (1 - sig) sig, one step at a time
            step.mul_(torch.neg(step, out=complement).add_(1.0))
        return sig.mul_(alpha)
    return over.mul_(math.pi / 2 * alpha).pow_(2).add_(1.0).reciprocal_().mul_(alpha / 2)  # alpha/2 / (1 + (pi/2 alpha x)^2)


def _backward_through_time(h_seq, grad_spikes, grad_v_last, grad_v_seq, config: LIFConfig, overwrite: bool):
    """``(dL/dI_int [T, ...], dL/dV[-1] [...])`` from the gradients of the spikes, of ``V[T-1]``
    and of the stored ``V`` sequence (each may be None); ``overwrite``: ``h_seq`` may become dL/dI_int."""
    T = h_seq.shape[0]
    in_place = overwrite and config.v_reset is None                     # the loop below reads H only for a hard reset
    grad = _surrogate_derivative(h_seq, config, h_seq if in_place else None)  # becomes dL/dH, step by step
    fast = config.v_reset is None and config.detach_reset               # the paper's: dV[t]/dH[t] = 1
    if fast:
        if grad_spikes is None:
            grad.zero_()
        else:
            grad.mul_(grad_spikes)
    grad_v = grad_v_last if grad_v_last is not None else torch.zeros_like(h_seq[0])
    leak = 1.0 - 1.0 / config.tau                                        # dH[t]/dV[t-1]
    for t in range(T - 1, -1, -1):
        if grad_v_seq is not None:
            grad_v = grad_v + grad_v_seq[t]
        grad_h = grad[t]
        if fast:
            grad_h.add_(grad_v)
        else:
            sg = grad_h.clone()
            if config.v_reset is None:                                   # dV/dH = 1 - v_th sg
                grad_h.mul_(-config.v_threshold).mul_(grad_v).add_(grad_v)
            else:                                                        # dV/dH = (1 - S) [+ (v_reset - H) sg]
                keep = h_seq[t] < config.v_threshold
                reset = torch.where(keep, grad_v, 0.0)
                if not config.detach_reset:
                    reset.addcmul_(torch.rsub(h_seq[t], config.v_reset).mul_(sg), grad_v)
                grad_h.copy_(reset)
            if grad_spikes is not None:
                grad_h.addcmul_(grad_spikes[t], sg)
        grad_v = grad_h * leak
    if config.decay_input:
        grad.div_(config.tau)
    return grad, grad_v


def _compute_dtype(*tensors) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


class _LIF(torch.autograd.Function):
    """``(x_seq [T, ...], v_init [...]) -> (spikes [T, ...], v_last [...], v_seq [T, ...] or nothing)``."""

    @staticmethod
    def forward(ctx, x_seq, v_init, config, store_v_seq):
        ctx.set_materialize_grads(False)
        dtype = v_init.dtype
        v_seq = v_init.new_empty(x_seq.shape) if store_v_seq else None
        spikes, v_last, h_seq = _run(lambda t: x_seq[t].to(dtype), v_init, config, x_seq.shape[0], True, v_seq)
        ctx.save_for_backward(h_seq)
        ctx.config, ctx.x_dtype = config, x_seq.dtype
        return (spikes, v_last, v_seq) if store_v_seq else (spikes, v_last)

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last, grad_v_seq=None):
        h_seq, = ctx.saved_tensors
        grad_x, grad_v = _backward_through_time(h_seq, grad_spikes, grad_v_last, grad_v_seq, ctx.config, False)
        return grad_x.to(ctx.x_dtype), grad_v if ctx.needs_input_grad[1] else None, None, None


def _integrator(d, i_sh, gain_e, bias, like: torch.Tensor):
    """``t -> I_int[t]`` (``sj_ei.currents.integrated`` of step ``t``, in the dtype of ``like [N, C, *S]``,
    into one reused buffer)."""
    dtype = like.dtype
    gain, bias_c = (channel_view(p.to(dtype), like, 1) for p in (gain_e, bias))
    x = torch.empty_like(like)
    return lambda t: integrated(d[t].to(dtype), i_sh[t].to(dtype), gain, bias_c, out=x)


class _EILIF(torch.autograd.Function):
    """``(d, i_sh [T, N, C, *S], gain_e, bias [C], v_init [N, C, *S]) -> (spikes, v_last[, v_seq])``.

    Saves nothing but its inputs ``d = I_EE - I_EI`` and ``I_sh~`` (and ``v_init`` unless it is the
    float ``rest``, every neuron at rest): the backward recomputes ``I_int`` and replays the
    membrane exactly, so an E population saves as much as the composable path's ``I_int`` and
    LIF, and nothing per step."""

    @staticmethod
    def forward(ctx, d, i_sh, gain_e, bias, v_init, config, store_v_seq, rest):
        ctx.set_materialize_grads(False)
        T = d.shape[0]
        v_seq = v_init.new_empty((T, *v_init.shape)) if store_v_seq else None
        spikes, v_last, _ = _run(_integrator(d, i_sh, gain_e, bias, v_init), v_init, config, T, False, v_seq)
        ctx.save_for_backward(d, i_sh, gain_e, bias, None if rest is not None else v_init)
        ctx.config, ctx.rest, ctx.dtype = config, rest, v_init.dtype
        return (spikes, v_last, v_seq) if store_v_seq else (spikes, v_last)

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last, grad_v_seq=None):
        d, i_sh, gain_e, bias, v_init = ctx.saved_tensors
        dtype = ctx.dtype
        if v_init is None and (ctx.rest != 0.0 or ctx.config.decay_input):  # at rest: not kept
            v_init = torch.full(d.shape[1:], ctx.rest, dtype=dtype, device=d.device)
        d32, sh32 = d.to(dtype), i_sh.to(dtype)
        gain, bias_c = (channel_view(p.to(dtype), d32, 2) for p in (gain_e, bias))
        x_seq = integrated(d32, sh32, gain, bias_c, out=torch.empty_like(d32))  # I_int, then H, then dL/dI_int
        h_seq = _replay_(x_seq, v_init, ctx.config)
        grad_x, grad_v = _backward_through_time(h_seq, grad_spikes, grad_v_last, grad_v_seq, ctx.config, True)
        grad_d, grad_sh, grad_gain, grad_bias = integrate_backward_(grad_x, d32, sh32, gain, 2)
        return (grad_d.to(d.dtype), grad_sh.to(i_sh.dtype), grad_gain.to(gain_e.dtype), grad_bias.to(bias.dtype),
                grad_v if ctx.needs_input_grad[4] else None, None, None, None)


def lif(x: Union[torch.Tensor, EICurrents], v_init: Union[float, torch.Tensor], config: LIFConfig,
        store_v_seq: bool = False):
    """LIF neurons over all T steps: ``(spikes [T, ...], v_last [...], v_seq [T, ...] or None)``.

    ``x``: ``I_int [T, N, ...]``, or ``EICurrents`` with ``d``, ``i_sh`` ``[T, N, C, *S]`` and ``gain_e``,
    ``bias [C]`` (integrated on the fly).  ``v_init``: a float (every neuron at rest) or ``[N, ...]``.
    Differentiable in every tensor (spikes through the surrogate).  Spikes and potentials are
    float32 (float64 for float64 input).
    """
    if not isinstance(config, LIFConfig):
        raise TypeError(f'sj_ei.lif: config must be an sj_ei.lif.LIFConfig (e.g. LIFConfig.of(node)), '
                        f'got {type(config).__name__}')
    currents = isinstance(x, EICurrents)
    head = x.d if currents else x
    dtype = _compute_dtype(*(x[:2] if currents else (x,)))
    step = head.shape[1:]
    rest = None if isinstance(v_init, torch.Tensor) else float(v_init)
    if rest is None:
        if v_init.shape != step:
            raise ValueError(f'the membrane potential v of shape {tuple(v_init.shape)} does not fit the neurons '
                             f'{list(step)}; call functional.reset_net(net) between batches of different shapes')
        v_init = v_init.to(dtype)
    else:
        v_init = torch.full(step, rest, dtype=dtype, device=head.device)
    T = head.shape[0]
    tensors = (*x, v_init) if currents else (x, v_init)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):  # evaluation: keep nothing
        v_seq = v_init.new_empty((T, *step)) if store_v_seq else None
        inputs = (_integrator(*x, v_init) if currents else (lambda t: x[t].to(dtype)))
        spikes, v_last, _ = _run(inputs, v_init, config, T, False, v_seq)
        return spikes, v_last, v_seq
    if currents:
        out = _EILIF.apply(*x, v_init, config, store_v_seq, rest)
    else:
        out = _LIF.apply(x, v_init, config, store_v_seq)
    return out if store_v_seq else (*out, None)
