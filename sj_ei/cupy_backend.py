"""sj_ei's multi-step CuPy backend: E-I integration fused with the LIF dynamics.

For every E neuron one CUDA thread runs the whole time loop

    I_int[t] = g_E (I_EE[t] - I_EI[t]) / I_sh~[t] + b_E            (SPEC section 1)
    H[t] = charge(V[t-1], I_int[t]);  S[t] = Heaviside(H[t] - v_th);  V[t] = reset(H[t], S[t])

so ``I_int`` never reaches memory; it saves ``H`` and ``(I_EE - I_EI) / I_sh~`` (float32)
for the backward kernel, which runs the sigmoid surrogate gradient back through time and
writes the gradients of ``I_EE``, ``I_EI``, ``I_sh~`` and the per-neuron parts of those of
``g_E``, ``b_E`` and the initial potential.  The forward arithmetic is that of
``sj_ei.circuit.integrate`` followed by spikingjelly's ``LIFNode`` (torch backend), operation
by operation, with round-to-nearest intrinsics so that no fused multiply-add changes a spike.

Kernels are CUDA C generated from Python, one per (LIF configuration, storage dtype), and
compiled by CuPy on first use.  Currents may be float32, float16 or bfloat16 (autocast);
the kernels always compute in float32 (half precision would lose the division), read
half values through header-free conversions, and write spikes and current gradients in
the currents' dtype.
"""
import hashlib
import math
from functools import lru_cache
from typing import NamedTuple, Optional

import numpy as np
import torch

BLOCK = 256
_HINT = "use backend='torch' (functional.set_backend(net, 'torch')) or move the network and its input to a CUDA device"


class CupyUnavailableError(RuntimeError):
    """backend 'cupy' was asked for where it cannot run."""


@lru_cache(maxsize=None)
def _cupy_problem() -> Optional[str]:
    """Why CuPy cannot launch kernels here, or None."""
    try:
        import cupy
    except Exception as e:  # ImportError, or CuPy's own error when its CUDA libraries are missing
        return f"backend 'cupy' needs CuPy, which cannot be imported ({e}): pip install cupy-cuda12x, or " + _HINT
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"backend 'cupy' needs a GPU that CuPy can use, and CuPy reports: {e}; " + _HINT
    return None


def require_cupy(tensor: torch.Tensor) -> None:
    """Raise one clear ``CupyUnavailableError`` unless CuPy kernels can process ``tensor``."""
    if not tensor.is_cuda:
        where = ('this machine has no CUDA GPU' if not torch.cuda.is_available()
                 else f'the tensor is on {tensor.device}')
        raise CupyUnavailableError(f"backend 'cupy' needs CUDA tensors, but {where}; " + _HINT)
    problem = _cupy_problem()
    if problem:
        raise CupyUnavailableError(problem)


def _f(value: float) -> str:
    """A C float literal of ``float32(value)`` that reads back exactly."""
    text = f'{float(np.float32(value)):.9g}'
    return f'({text}f)' if any(ch in text for ch in '.e') else f'({text}.0f)'


class LIFConfig(NamedTuple):
    """The spikingjelly ``LIFNode`` arguments a kernel is generated for (sigmoid surrogate)."""
    tau: float
    v_threshold: float
    detach_reset: bool
    surrogate_alpha: float
    decay_input: bool = False
    v_reset: Optional[float] = None

    def charge(self) -> str:
        """C expression of ``H`` from ``v`` (``V[t-1]``) and ``x`` (``I_int[t]``), as spikingjelly writes it."""
        tau, reset0 = _f(self.tau), self.v_reset is None or self.v_reset == 0.0
        if self.decay_input:
            leaked = 'v' if reset0 else f'__fsub_rn(v, {_f(self.v_reset)})'
            return f'__fadd_rn(v, __fdiv_rn(__fsub_rn(x, {leaked}), {tau}))'
        if reset0:
            return f'__fadd_rn(__fmul_rn(v, {_f(1.0 - 1.0 / self.tau)}), x)'
        return f'__fadd_rn(__fsub_rn(v, __fdiv_rn(__fsub_rn(v, {_f(self.v_reset)}), {tau})), x)'

    def reset(self) -> str:
        """C expression of ``V[t]`` from ``h`` and the spike ``s``."""
        if self.v_reset is None:
            return f'__fsub_rn(h, __fmul_rn(s, {_f(self.v_threshold)}))'
        return f'__fadd_rn(__fmul_rn(__fsub_rn(1.0f, s), h), __fmul_rn(s, {_f(self.v_reset)}))'

    def reset_derivative(self) -> str:
        """C expression of ``dV[t]/dH[t]`` from ``h``, ``s`` and the surrogate derivative ``sg``."""
        if self.v_reset is None:
            return '1.0f' if self.detach_reset else f'(1.0f - {_f(self.v_threshold)} * sg)'
        if self.detach_reset:
            return '(1.0f - s)'
        return f'((1.0f - s) + ({_f(self.v_reset)} - h) * sg)'

    def input_derivative(self) -> str:
        """``dH[t]/dI_int[t]``."""
        return _f(1.0 / self.tau) if self.decay_input else '1.0f'

    def leak(self) -> str:
        """``dH[t]/dV[t-1]``, the same for every charge equation."""
        return _f(1.0 - 1.0 / self.tau)


class Kernel(NamedTuple):
    """A generated kernel: its name, CUDA C source and parameters ``((C type, name), ...)``."""
    name: str
    source: str
    params: tuple


# Storage type of the currents, and how a value is loaded into / stored from a float.
_STORAGE = {torch.float32: ('f32', 'float', '{}', '{}'),
            torch.float16: ('f16', 'unsigned short', 'sj_ei_f16_to_f32({})', 'sj_ei_f32_to_f16({})'),
            torch.bfloat16: ('bf16', 'unsigned short', 'sj_ei_bf16_to_f32({})', 'sj_ei_f32_to_bf16({})')}

# Round-to-nearest-even conversions between float and the 16-bit formats, on the raw bits, so
# that the kernels need no CUDA header (NVRTC finds none unless a CUDA toolkit is installed).
CONVERSIONS = r'''
#ifndef SJ_EI_CONVERSIONS
#define SJ_EI_CONVERSIONS
__device__ __forceinline__ float sj_ei_f16_to_f32(unsigned short h) {
    const unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
    const unsigned int exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0u) {  /* zero or subnormal: mantissa * 2^-24, exact in float */
        const float magnitude = __fmul_rn((float)mantissa, 5.9604644775390625e-8f);
        return sign ? -magnitude : magnitude;
    }
    return __uint_as_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}
__device__ __forceinline__ unsigned short sj_ei_f32_to_f16(float f) {
    unsigned int u = __float_as_uint(f);
    const unsigned int sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    if (u >= 0x47800000u) return (unsigned short)(sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (u < 0x38800000u)  /* half subnormal: adding 0.5f rounds the magnitude to a multiple of 2^-24 */
        return (unsigned short)(sign | (__float_as_uint(__fadd_rn(__uint_as_float(u), 0.5f)) - 0x3f000000u));
    u += 0xc8000fffu + ((u >> 13) & 1u);  /* rebias the exponent, round half to even */
    return (unsigned short)(sign | (u >> 13));
}
__device__ __forceinline__ float sj_ei_bf16_to_f32(unsigned short b) {
    return __uint_as_float((unsigned int)b << 16);
}
__device__ __forceinline__ unsigned short sj_ei_f32_to_bf16(float f) {
    const unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
#endif
'''

_LOCATE = '''
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= numel) return;
    const int sample = i / per_sample;           /* b: the index of the sample in the batch */
    const int j = i - sample * per_sample;       /* the position inside the sample [C, *S] */
    const int c = j / inner;
    const long long batch = numel / per_sample;'''


def _kernel(kind: str, config: LIFConfig, dtype: torch.dtype, params: tuple, body: str) -> Kernel:
    tag, *_ = _STORAGE[dtype]
    digest = hashlib.sha1(repr(tuple(config)).encode()).hexdigest()[:12]
    name = f'sj_ei_lif_{kind}_{tag}_{digest}'
    signature = ', '.join(f'{t} {n}' for t, n in params)
    prelude = CONVERSIONS if dtype != torch.float32 else ''
    return Kernel(name, f'{prelude}extern "C" __global__ void {name}({signature})\n{{{_LOCATE}{body}}}\n', params)


@lru_cache(maxsize=None)
def forward_kernel(config: LIFConfig, dtype: torch.dtype = torch.float32) -> Kernel:
    """The forward kernel: one thread per neuron (``numel = N * C * prod(S)`` of them), looping over T."""
    _, scalar, load, store = _STORAGE[dtype]
    params = ((f'const {scalar}* __restrict__', 'i_ee'), ('long long', 'ee_stride'),
              (f'const {scalar}* __restrict__', 'i_ei'), ('long long', 'ei_stride'),
              (f'const {scalar}* __restrict__', 'i_sh'), ('long long', 'sh_stride'),
              ('const float* __restrict__', 'gain_e'), ('const float* __restrict__', 'bias'),
              ('const float* __restrict__', 'v_init'), ('int', 'v_init_step'),
              (f'{scalar}* __restrict__', 'spike_seq'), ('float* __restrict__', 'h_seq'),
              ('float* __restrict__', 'n_seq'), ('float* __restrict__', 'v_last'),
              ('int', 'T'), ('int', 'numel'), ('int', 'per_sample'), ('int', 'inner'))
    ee, ei, sh = (load.format(f'i_{x}[n * {x}_stride + j]') for x in ('ee', 'ei', 'sh'))
    body = f'''
    const float g = gain_e[c];
    const float bias_c = bias[c];
    float v = v_init[i * v_init_step];
    for (int t = 0; t < T; ++t) {{
        const long long n = t * batch + sample;
        const float diff = __fsub_rn({ee}, {ei});
        const float sh = {sh};
        const float x = __fadd_rn(__fdiv_rn(__fmul_rn(diff, g), sh), bias_c);
        const float h = {config.charge()};
        const float s = __fsub_rn(h, {_f(config.v_threshold)}) >= 0.0f ? 1.0f : 0.0f;
        const long long k = (long long)t * numel + i;
        h_seq[k] = h;
        n_seq[k] = __fdiv_rn(diff, sh);
        spike_seq[k] = {store.format('s')};
        v = {config.reset()};
    }}
    v_last[i] = v;
'''
    return _kernel('forward', config, dtype, params, body)


@lru_cache(maxsize=None)
def backward_kernel(config: LIFConfig, dtype: torch.dtype = torch.float32) -> Kernel:
    """The backward kernel: the surrogate gradient back through time, one thread per neuron."""
    _, scalar, load, store = _STORAGE[dtype]
    params = ((f'const {scalar}* __restrict__', 'grad_spike_seq'), ('int', 'grad_spike_step'),
              ('const float* __restrict__', 'grad_v_last'), ('int', 'grad_v_step'),
              ('const float* __restrict__', 'h_seq'), ('const float* __restrict__', 'n_seq'),
              (f'const {scalar}* __restrict__', 'i_sh'), ('long long', 'sh_stride'),
              ('const float* __restrict__', 'gain_e'),
              (f'{scalar}* __restrict__', 'grad_i_ee'), (f'{scalar}* __restrict__', 'grad_i_ei'),
              (f'{scalar}* __restrict__', 'grad_i_sh'), ('float* __restrict__', 'grad_v_init'),
              ('float* __restrict__', 'grad_gain_e'), ('float* __restrict__', 'grad_bias'),
              ('int', 'T'), ('int', 'numel'), ('int', 'per_sample'), ('int', 'inner'))
    alpha = _f(config.surrogate_alpha)
    grad_spike = load.format('grad_spike_seq[k * grad_spike_step]')
    spike = '' if config.v_reset is None else '        const float s = over >= 0.0f ? 1.0f : 0.0f;\n'
    body = f'''
    const float g = gain_e[c];
    float grad_v = grad_v_last[i * grad_v_step];
    float grad_g = 0.0f;
    float grad_b = 0.0f;
    for (int t = T - 1; t >= 0; --t) {{
        const long long n = t * batch + sample;
        const long long k = (long long)t * numel + i;
        const float h = h_seq[k];
        const float over = __fsub_rn(h, {_f(config.v_threshold)});
{spike}        const float sig = 1.0f / (1.0f + expf(-(over * {alpha})));
        const float sg = (1.0f - sig) * sig * {alpha};
        const float grad_h = {grad_spike} * sg + grad_v * {config.reset_derivative()};
        const float grad_x = grad_h * {config.input_derivative()};
        const float grad_ee = grad_x * g / {load.format('i_sh[n * sh_stride + j]')};
        const float normalized = n_seq[k];
        grad_i_ee[k] = {store.format('grad_ee')};
        grad_i_ei[k] = {store.format('-grad_ee')};
        grad_i_sh[k] = {store.format('-grad_ee * normalized')};
        grad_g += grad_x * normalized;
        grad_b += grad_x;
        grad_v = grad_h * {config.leak()};
    }}
    grad_v_init[i] = grad_v;
    grad_gain_e[i] = grad_g;
    grad_bias[i] = grad_b;
'''
    return _kernel('backward', config, dtype, params, body)


@lru_cache(maxsize=None)
def _cupy_kernel(name: str, source: str):
    import cupy
    return cupy.RawKernel(source, name)


_INTEGER = {'int': np.int32, 'long long': np.int64}


def _launch(kernel: Kernel, grid: tuple, block: tuple, args: list) -> None:
    """Run ``kernel`` on the current PyTorch stream of the tensors' device; ``args`` follow ``kernel.params``
    (tensors for pointers, Python ints for integers)."""
    import cupy
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    values = tuple(np.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else _INTEGER[ctype](a)
                   for (ctype, _), a in zip(kernel.params, args))
    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index):
        if hasattr(cupy.cuda.Stream, 'from_external'):  # CuPy >= 14
            stream = cupy.cuda.Stream.from_external(stream)
        else:
            stream = cupy.cuda.ExternalStream(stream.cuda_stream)
        with stream:
            _cupy_kernel(kernel.name, kernel.source)(grid, block, values)


def _samples(x: torch.Tensor):
    """``(flat, stride)``: ``x [T, N, *F]`` as ``[T * N, prod(F)]`` with contiguous rows ``stride``
    elements apart (a view when the layout allows, e.g. a channel slice; else a contiguous copy)."""
    flat = x.reshape(x.shape[0] * x.shape[1], -1)
    if flat.shape[1] > 1 and flat.stride(1) != 1:
        flat = flat.contiguous()
    return flat, flat.stride(0)


class _FusedEILIF(torch.autograd.Function):
    """``(i_ee, i_ei, i_sh [T, N, C, *S], gain_e, bias [C], v_init) -> (spikes [T, N, C, *S], v_last [N, C, *S])``."""

    @staticmethod
    def forward(ctx, i_ee, i_ei, i_sh, gain_e, bias, v_init, config):
        ctx.set_materialize_grads(False)
        T, N, C = i_ee.shape[:3]
        step_shape = i_ee.shape[1:]
        numel = step_shape.numel()
        dtype = torch.promote_types(torch.promote_types(i_ee.dtype, i_ei.dtype), i_sh.dtype)
        (ee, ee_stride), (ei, ei_stride), (sh, sh_stride) = (_samples(x.to(dtype)) for x in (i_ee, i_ei, i_sh))
        gain, bias_f = gain_e.detach().float().contiguous(), bias.detach().float().contiguous()
        if v_init.numel() == 1:
            v0, v_step = v_init.detach().float().reshape(1), 0
        else:
            v0, v_step = v_init.detach().float().expand(step_shape).contiguous(), 1
        spikes = torch.empty(i_ee.shape, dtype=dtype, device=i_ee.device)
        h_seq, n_seq = (torch.empty((T, numel), device=i_ee.device) for _ in range(2))
        v_last = torch.empty(step_shape, device=i_ee.device)
        geometry = (T, numel, numel // N, numel // (N * C)) if numel else None
        if geometry:
            _launch(forward_kernel(config, dtype), (math.ceil(numel / BLOCK),), (BLOCK,),
                    [ee, ee_stride, ei, ei_stride, sh, sh_stride, gain, bias_f, v0, v_step,
                     spikes, h_seq, n_seq, v_last, *geometry])
        ctx.save_for_backward(h_seq, n_seq, sh, gain)
        ctx.config, ctx.dtype, ctx.geometry, ctx.sh_stride = config, dtype, geometry, sh_stride
        ctx.shapes = (i_ee.shape, C, gain_e.dtype, bias.dtype, v_init.shape)
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last):
        h_seq, n_seq, sh, gain = ctx.saved_tensors
        shape, C, gain_dtype, bias_dtype, v_shape = ctx.shapes
        device = h_seq.device
        grads = [torch.empty(shape, dtype=ctx.dtype, device=device) for _ in range(3)]
        grad_v_init, grad_gain, grad_bias = (torch.empty(shape[1:], device=device) for _ in range(3))
        if ctx.geometry:
            zero = torch.zeros(1, device=device)
            spike_arg, spike_step = ((zero.to(ctx.dtype), 0) if grad_spikes is None
                                     else (grad_spikes.to(ctx.dtype).contiguous(), 1))
            v_arg, v_step = (zero, 0) if grad_v_last is None else (grad_v_last.float().contiguous(), 1)
            numel = ctx.geometry[1]
            _launch(backward_kernel(ctx.config, ctx.dtype), (math.ceil(numel / BLOCK),), (BLOCK,),
                    [spike_arg, spike_step, v_arg, v_step, h_seq, n_seq, sh, ctx.sh_stride, gain,
                     *grads, grad_v_init, grad_gain, grad_bias, *ctx.geometry])
        per_channel = lambda t, dtype: t.reshape(shape[1], C, shape[3:].numel()).sum((0, 2)).to(dtype)
        grad_v = grad_v_init.sum_to_size(v_shape) if ctx.needs_input_grad[5] else None
        return (*grads, per_channel(grad_gain, gain_dtype), per_channel(grad_bias, bias_dtype), grad_v, None)


def _check(i_ee, i_ei, i_sh, gain_e, bias, v_init, config: LIFConfig):
    """One clear error for arguments the kernels cannot take."""
    shapes = {tuple(t.shape) for t in (i_ee, i_ei, i_sh)}
    if len(shapes) != 1 or i_ee.dim() < 3:
        raise ValueError('fused_ei_lif: i_ee, i_ei, i_sh must all have the shape [T, N, C, *S], got '
                         f'{tuple(i_ee.shape)}, {tuple(i_ei.shape)}, {tuple(i_sh.shape)}')
    C = i_ee.shape[2]
    if tuple(gain_e.shape) != (C,) or tuple(bias.shape) != (C,):
        raise ValueError(f'fused_ei_lif: gain_e and bias must have the shape [C] = [{C}], '
                         f'got {tuple(gain_e.shape)} and {tuple(bias.shape)}')
    try:
        torch.broadcast_shapes(v_init.shape, i_ee.shape[1:])
    except RuntimeError:
        raise ValueError(f'fused_ei_lif: v_init of shape {tuple(v_init.shape)} does not fit the neurons '
                         f'[N, C, *S] = {list(i_ee.shape[1:])}; call functional.reset_net(net) between '
                         'batches of different shapes') from None
    devices = {t.device for t in (i_ee, i_ei, i_sh, gain_e, bias, v_init)}
    if len(devices) != 1:
        raise ValueError(f'fused_ei_lif: all tensors must be on one device, got {sorted(map(str, devices))}')
    dtypes = {t.dtype for t in (i_ee, i_ei, i_sh)} - set(_STORAGE)
    if dtypes:
        raise TypeError(f"backend 'cupy' computes in float32 from float32, float16 or bfloat16 currents, got "
                        f"{sorted(map(str, dtypes))}; use backend='torch' for other dtypes")
    if i_ee[0].numel() >= 2 ** 31:
        raise ValueError(f"backend 'cupy' handles fewer than 2**31 neurons per time step, got {i_ee[0].numel()}; "
                         "use a smaller batch or backend='torch'")
    numbers = (config.tau, config.v_threshold, config.surrogate_alpha, config.v_reset or 0.0)
    if not all(math.isfinite(x) for x in numbers) or config.tau <= 0:
        raise ValueError(f'fused_ei_lif: tau > 0 and finite v_threshold, surrogate_alpha, v_reset needed, got {config}')


def fused_ei_lif(i_ee, i_ei, i_sh, gain_e, bias, v_init, *, tau, v_threshold, detach_reset, surrogate_alpha,
                 decay_input=False, v_reset=None):
    """Spikes ``[T, N, C, *S]`` and last membrane potential ``[N, C, *S]`` (float32) of spikingjelly
    ``LIFNode`` neurons (sigmoid surrogate) driven by ``I_int = g_E (I_EE - I_EI) / I_sh~ + b_E``.

    ``i_ee``, ``i_ei``, ``i_sh``: CUDA tensors ``[T, N, C, *S]`` (``i_sh`` already stabilized;
    ``+inf`` gives ``I_int = b_E``); ``gain_e``, ``bias``: ``[C]``; ``v_init``: the neurons'
    state, a float or a tensor ``[N, C, *S]``.  Differentiable in all tensors.  Spikes have the
    currents' dtype (float32, or float16 / bfloat16 under autocast); arithmetic is float32.
    """
    require_cupy(i_ee)
    config = LIFConfig(float(tau), float(v_threshold), bool(detach_reset), float(surrogate_alpha),
                       bool(decay_input), None if v_reset is None else float(v_reset))
    if not isinstance(v_init, torch.Tensor):
        v_init = torch.full((1,), float(v_init), device=i_ee.device)
    _check(i_ee, i_ei, i_sh, gain_e, bias, v_init, config)
    return _FusedEILIF.apply(i_ee, i_ei, i_sh, gain_e, bias, v_init, config)
