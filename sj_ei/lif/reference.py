"""The torch kernel of the fused LIF, the specification every other kernel matches: the LIF dynamics over
all T steps, forward and backward, on tensors of any device (what the ``torch.ops.sj_ei`` reference
operators run: on the CPU, and on a CUDA device with backend 'torch').

Forward, per step (spikingjelly ``LIFNode``, operation by operation, so spikes are equal)::

    I_int[t] = b_E + d[t] g_E / I_sh~[t]     (E-I form only, d = I_EE - I_EI; sj_ei.currents.integrated)
    H[t] = charge(V[t-1], I_int[t]);  S[t] = Heaviside(H[t] - v_th);  V[t] = reset(H[t], S[t])

For the backward the plain form keeps ``H``; the E-I form keeps nothing but its inputs (``d`` and
``I_sh~``, from which the backward replays ``H`` exactly).  The backward runs the surrogate gradient
back through time in one loop and writes each gradient once: no ``[T, ...]`` gradient is zero-filled
per step, as indexing ``x_seq[t]`` under autograd does in spikingjelly's torch LIF.
Arithmetic is in float32 (float64 for float64 input), also for 16-bit currents under autocast.
"""
import math
from typing import Optional

import torch

from ..currents import channel_view, integrate_backward_, integrated
from .config import LIFConfig


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
    v_last = v.clone() if v_seq is not None or v is v_init else v  # never a view of an input or of v_seq
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
    if grad_v is grad_v_last:                                            # T = 0: an operator returns no input
        grad_v = grad_v.clone()
    if config.decay_input:
        grad.div_(config.tau)
    return grad, grad_v


def compute_dtype(*tensors) -> torch.dtype:
    """The dtype the kernel computes in: float32, or float64 where an input is."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _initial(v_init: Optional[torch.Tensor], v_rest: float, like: torch.Tensor, dtype) -> torch.Tensor:
    """``V[-1]`` of one step ``[N, ...]`` (``like[0]``'s shape): ``v_init``, or every neuron at ``v_rest``."""
    if v_init is None:
        return torch.full(like.shape[1:], v_rest, dtype=dtype, device=like.device)
    return v_init.to(dtype)


def _v_seq(v_init: torch.Tensor, T: int, store_v_seq: bool) -> Optional[torch.Tensor]:
    return v_init.new_empty((T, *v_init.shape)) if store_v_seq else None


def lif_forward(x_seq, v_init, v_rest: float, store_v_seq: bool, save: bool, config: LIFConfig):
    """``I_int`` ``x_seq [T, N, ...]`` -> ``(spikes [T, N, ...], v_last [N, ...], v_seq [T, N, ...] or [0],
    h_seq [T, N, ...] or [0])``; ``h_seq`` (what the backward needs) only when ``save``."""
    dtype = compute_dtype(x_seq)
    v0 = _initial(v_init, v_rest, x_seq, dtype)
    v_seq = _v_seq(v0, x_seq.shape[0], store_v_seq)
    spikes, v_last, h_seq = _run(lambda t: x_seq[t].to(dtype), v0, config, x_seq.shape[0], save, v_seq)
    return spikes, v_last, v0.new_empty(0) if v_seq is None else v_seq, v0.new_empty(0) if h_seq is None else h_seq


def lif_backward(grad_spikes, grad_v_last, grad_v_seq, h_seq, x_dtype: torch.dtype, config: LIFConfig):
    """``(dL/dx_seq [T, N, ...] in x_dtype, dL/dv_init [N, ...])`` from ``h_seq`` and the gradients of the
    outputs (each may be None)."""
    grad_x, grad_v = _backward_through_time(h_seq, grad_spikes, grad_v_last, grad_v_seq, config, False)
    return grad_x.to(x_dtype), grad_v


def _integrator(d, i_sh, gain_e, bias, like: torch.Tensor):
    """``t -> I_int[t]`` (``sj_ei.currents.integrated`` of step ``t``, in the dtype of ``like [N, C, *S]``,
    into one reused buffer)."""
    dtype = like.dtype
    gain, bias_c = (channel_view(p.to(dtype), like, 1) for p in (gain_e, bias))
    x = torch.empty_like(like)
    return lambda t: integrated(d[t].to(dtype), i_sh[t].to(dtype), gain, bias_c, out=x)


def ei_lif_forward(d, i_sh, gain_e, bias, v_init, v_rest: float, store_v_seq: bool, config: LIFConfig):
    """``(d, i_sh [T, N, C, *S], gain_e, bias [C])`` -> ``(spikes, v_last, v_seq or [0])``; keeps nothing:
    the backward recomputes ``I_int`` and replays the membrane exactly from the inputs, so an E
    population saves as much as the composable path's ``I_int`` and LIF, and nothing per step."""
    T = d.shape[0]
    v0 = _initial(v_init, v_rest, d, compute_dtype(d, i_sh))
    v_seq = _v_seq(v0, T, store_v_seq)
    spikes, v_last, _ = _run(_integrator(d, i_sh, gain_e, bias, v0), v0, config, T, False, v_seq)
    return spikes, v_last, v0.new_empty(0) if v_seq is None else v_seq


def ei_lif_backward(grad_spikes, grad_v_last, grad_v_seq, d, i_sh, gain_e, bias, v_init, v_rest: float,
                    config: LIFConfig):
    """``(dL/dd, dL/dI_sh~ [T, N, C, *S], dL/dg_E, dL/db_E [C], dL/dv_init [N, C, *S])``, each in its
    input's dtype (``dL/dv_init`` in the compute dtype)."""
    dtype = compute_dtype(d, i_sh)
    if v_init is not None or v_rest != 0.0 or config.decay_input:  # else H[0] = I_int[0]: no initial state
        v_init = _initial(v_init, v_rest, d, dtype)
    d32, sh32 = d.to(dtype), i_sh.to(dtype)
    gain, bias_c = (channel_view(p.to(dtype), d32, 2) for p in (gain_e, bias))
    x_seq = integrated(d32, sh32, gain, bias_c, out=torch.empty_like(d32))  # I_int, then H, then dL/dI_int
    h_seq = _replay_(x_seq, v_init, config)
    grad_x, grad_v = _backward_through_time(h_seq, grad_spikes, grad_v_last, grad_v_seq, config, True)
    grad_d, grad_sh, grad_gain, grad_bias = integrate_backward_(grad_x, d32, sh32, gain, 2)
    return grad_d.to(d.dtype), grad_sh.to(i_sh.dtype), grad_gain.to(gain_e.dtype), grad_bias.to(bias.dtype), grad_v
