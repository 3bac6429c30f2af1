"""sj_ei's multi-step CuPy backend: LIF neurons over all T steps in one kernel, driven either by
an E-I layer's currents (the integration fused in) or by a plain input current.

API (what ``EILIFNode``'s ``'cupy'`` backend calls)::

    config = LIFConfig.of(node)        # sj_ei.lif.LIFConfig of a spikingjelly LIFNode; or LIFConfig(tau=2.0, ...)
    spikes, v_seq, v_last = fused_ei_lif(currents, v_init, config, store_v_seq=False)
    spikes, v_seq, v_last = fused_lif(x_seq, v_init, config, store_v_seq=False)

- ``currents``: an ``sj_ei.EICurrents(d, i_sh, gain_e, bias)`` (or the same four as a tuple):
  CUDA tensors ``[T, N, C, *S]`` (``d = I_EE - I_EI``; ``i_sh`` stabilized, ``+inf`` gives
  ``I_int = b_E``) and ``[C]``; the kernel computes ``I_int = b_E + d g_E / I_sh~``, operation by
  operation as ``sj_ei.currents.integrated``, without writing it to memory.
- ``x_seq``: a CUDA tensor ``[T, N, *F]``, the input current ``I[t]`` itself.
- ``v_init``: the neurons' potential before step 0: a float (``node.v`` after ``reset_net``)
  or a tensor broadcastable to one step's shape ``[N, ...]``.
- Returns ``spikes [T, N, ...]``, ``v_seq [T, N, ...]`` (``V[t]`` after the reset, what
  spikingjelly stores as ``node.v_seq``) or ``None`` unless ``store_v_seq``, and
  ``v_last [N, ...]`` (the new ``node.v``).  All three are float32; all are differentiable
  (surrogate gradient through the spikes) with respect to every tensor argument.

dtypes: currents may be float32, float16 or bfloat16 (under autocast), also mixed (promoted).
The kernels read 16-bit values in place and compute in float32 (a 16-bit division would lose
the integration), so the outputs are float32, as the torch path computing in float32 gives;
the gradients of the currents come back in their own dtype.

Dynamics, per neuron and step (spikingjelly ``LIFNode``, any ``tau``, ``decay_input``,
``v_reset``, ``detach_reset``)::

    H[t] = charge(V[t-1], I[t]);  S[t] = Heaviside(H[t] - v_th);  V[t] = reset(H[t], S[t])

with round-to-nearest intrinsics in the forward so that no fused multiply-add changes a
spike: spikes equal spikingjelly's torch backend exactly.  The backward kernel runs the
surrogate derivative back through time; supported surrogates are spikingjelly's ``Sigmoid``
(``sigma'(alpha x) alpha``) and ``ATan`` (``alpha / 2 / (1 + (pi / 2 alpha x)^2)``), the
formulas of ``spikingjelly.activation_based.surrogate``, written here (sj_ei does not use
spikingjelly's ``cuda_codes``).  One kernel is generated per (``LIFConfig``, input kind,
storage dtype) as header-free CUDA C and compiled by CuPy (NVRTC) on first use.
"""
import dataclasses
import hashlib
import math
import warnings
from functools import lru_cache
from typing import NamedTuple, Optional

import numpy as np
import torch

from .lif import LIFConfig

BLOCK = 256
_HINT = "use backend='torch' (sj_ei.set_backend(net, 'torch')) or move the network and its input to a CUDA device"


def install_hint() -> str:
    """How to install the CuPy wheel built for the CUDA major version of the installed torch."""
    cuda = torch.version.cuda
    if cuda is None:
        return ('pip install the CuPy of your CUDA torch: cupy-cuda12x for CUDA 12, cupy-cuda13x for CUDA 13 '
                '(or sj_ei[cupy-cuda12x] / sj_ei[cupy-cuda13x])')
    wheel = f"cupy-cuda{cuda.split('.')[0]}x"
    extra = f' (or sj_ei[{wheel}])' if wheel in ('cupy-cuda12x', 'cupy-cuda13x') else ''
    return f'pip install {wheel}{extra}, the CuPy for the CUDA {cuda} of this torch'


class CupyUnavailableError(RuntimeError):
    """backend 'cupy' was asked for where it cannot run."""


@lru_cache(maxsize=None)
def _cupy_problem() -> Optional[str]:
    """Why CuPy cannot launch kernels here, or None."""
    try:
        import cupy
    except Exception as e:  # ImportError, or CuPy's own error when its CUDA libraries are missing
        return f"backend 'cupy' needs CuPy, which cannot be imported ({e}): {install_hint()}; or " + _HINT
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


def _charge(config: LIFConfig) -> str:
    """C expression of ``H`` from ``v`` (``V[t-1]``) and ``x`` (``I[t]``), as spikingjelly writes it."""
    tau, reset0 = _f(config.tau), config.v_reset is None or config.v_reset == 0.0
    if config.decay_input:
        leaked = 'v' if reset0 else f'__fsub_rn(v, {_f(config.v_reset)})'
        return f'__fadd_rn(v, __fdiv_rn(__fsub_rn(x, {leaked}), {tau}))'
    if reset0:
        return f'__fadd_rn(__fmul_rn(v, {_f(1.0 - 1.0 / config.tau)}), x)'
    return f'__fadd_rn(__fsub_rn(v, __fdiv_rn(__fsub_rn(v, {_f(config.v_reset)}), {tau})), x)'


def _reset(config: LIFConfig) -> str:
    """C expression of ``V[t]`` from ``h`` and the spike ``s``."""
    if config.v_reset is None:
        return f'__fsub_rn(h, __fmul_rn(s, {_f(config.v_threshold)}))'
    return f'__fadd_rn(__fmul_rn(__fsub_rn(1.0f, s), h), __fmul_rn(s, {_f(config.v_reset)}))'


def _surrogate_derivative(config: LIFConfig) -> str:
    """C statements defining ``sg``, the surrogate's derivative at ``over = H[t] - v_th``."""
    alpha = config.surrogate_alpha
    if config.surrogate == 'sigmoid':
        return (f'        const float sig = 1.0f / (1.0f + expf(-(over * {_f(alpha)})));\n'
                f'        const float sg = (1.0f - sig) * sig * {_f(alpha)};\n')
    return (f'        const float a = {_f(math.pi / 2 * alpha)} * over;\n'
            f'        const float sg = (1.0f / (1.0f + a * a)) * {_f(alpha / 2)};\n')


def _reset_derivative(config: LIFConfig) -> str:
    """C expression of ``dV[t]/dH[t]`` from ``h``, ``s`` and ``sg``."""
    if config.v_reset is None:
        return '1.0f' if config.detach_reset else f'(1.0f - {_f(config.v_threshold)} * sg)'
    if config.detach_reset:
        return '(1.0f - s)'
    return f'((1.0f - s) + ({_f(config.v_reset)} - h) * sg)'


def _input_derivative(config: LIFConfig) -> str:
    """``dH[t]/dI[t]``."""
    return _f(1.0 / config.tau) if config.decay_input else '1.0f'


def _leak(config: LIFConfig) -> str:
    """``dH[t]/dV[t-1]``, the same for every charge equation."""
    return _f(1.0 - 1.0 / config.tau)


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

# The thread's neuron i; for E-I currents also its sample in the batch and its channel c.
_LOCATE = {'plain': '''
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= numel) return;''', 'ei': '''
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= numel) return;
    const int sample = i / per_sample;           /* b: the index of the sample in the batch */
    const int j = i - sample * per_sample;       /* the position inside the sample [C, *S] */
    const int c = j / inner;
    const long long batch = numel / per_sample;'''}
KINDS = tuple(_LOCATE)


def _kernel(direction: str, kind: str, config: LIFConfig, dtype: torch.dtype, params: tuple, body: str) -> Kernel:
    tag, *_ = _STORAGE[dtype]
    digest = hashlib.sha1(repr(dataclasses.astuple(config)).encode()).hexdigest()[:12]
    name = f'sj_ei_lif_{kind}_{direction}_{tag}_{digest}'
    signature = ', '.join(f'{t} {n}' for t, n in params)
    prelude = CONVERSIONS if dtype != torch.float32 else ''
    return Kernel(name, f'{prelude}extern "C" __global__ void {name}({signature})\n{{{_LOCATE[kind]}{body}}}\n',
                  params)


_GEOMETRY = {'plain': (('int', 'T'), ('int', 'numel')),
             'ei': (('int', 'T'), ('int', 'numel'), ('int', 'per_sample'), ('int', 'inner'))}


@lru_cache(maxsize=None)
def forward_kernel(config: LIFConfig, kind: str = 'ei', dtype: torch.dtype = torch.float32) -> Kernel:
    """The forward kernel for ``kind`` 'ei' (currents) or 'plain' (``x_seq``): one thread per
    neuron (``numel`` of one time step), looping over T; ``save`` != 0 writes what backward needs."""
    _, scalar, load, _ = _STORAGE[dtype]
    if kind == 'ei':
        inputs = ((f'const {scalar}* __restrict__', 'd'), ('long long', 'd_stride'),
                  (f'const {scalar}* __restrict__', 'i_sh'), ('long long', 'sh_stride'),
                  ('const float* __restrict__', 'gain_e'), ('const float* __restrict__', 'bias'))
        saved = (('float* __restrict__', 'h_seq'), ('float* __restrict__', 'n_seq'))
        d, sh = load.format('d[n * d_stride + j]'), load.format('i_sh[n * sh_stride + j]')
        prologue = '    const float g = gain_e[c];\n    const float bias_c = bias[c];\n'
        current = f'''        const long long n = t * batch + sample;
        const float diff = {d};
        const float sh = {sh};
        const float x = __fadd_rn(__fdiv_rn(__fmul_rn(diff, g), sh), bias_c);
'''
        save = 'if (save) { h_seq[k] = h; n_seq[k] = __fdiv_rn(diff, sh); }'
    else:
        inputs = ((f'const {scalar}* __restrict__', 'x_seq'), ('long long', 'x_stride'))
        saved = (('float* __restrict__', 'h_seq'),)
        prologue = ''
        current = f'        const float x = {load.format("x_seq[t * x_stride + i]")};\n'
        save = 'if (save) h_seq[k] = h;'
    params = (inputs + (('const float* __restrict__', 'v_init'), ('int', 'v_init_step'),
                        ('float* __restrict__', 'spike_seq'), ('float* __restrict__', 'v_seq'), ('int', 'store_v_seq'))
              + saved + (('int', 'save'), ('float* __restrict__', 'v_last')) + _GEOMETRY[kind])
    body = f'''
{prologue}    float v = v_init[i * v_init_step];
    for (int t = 0; t < T; ++t) {{
{current}        const float h = {_charge(config)};
        const float s = __fsub_rn(h, {_f(config.v_threshold)}) >= 0.0f ? 1.0f : 0.0f;
        const long long k = (long long)t * numel + i;
        spike_seq[k] = s;
        {save}
        v = {_reset(config)};
        if (store_v_seq) v_seq[k] = v;
    }}
    v_last[i] = v;
'''
    return _kernel('forward', kind, config, dtype, params, body)


@lru_cache(maxsize=None)
def backward_kernel(config: LIFConfig, kind: str = 'ei', dtype: torch.dtype = torch.float32) -> Kernel:
    """The backward kernel: the surrogate gradient back through time, one thread per neuron.
    A ``*_step`` of 0 reads an absent gradient as a single 0."""
    _, scalar, load, store = _STORAGE[dtype]
    grads_in = (('const float* __restrict__', 'grad_spike_seq'), ('int', 'grad_spike_step'),
                ('const float* __restrict__', 'grad_v_seq'), ('int', 'grad_v_seq_step'),
                ('const float* __restrict__', 'grad_v_last'), ('int', 'grad_v_step'),
                ('const float* __restrict__', 'h_seq'))
    if kind == 'ei':
        params = grads_in + (('const float* __restrict__', 'n_seq'),
                             (f'const {scalar}* __restrict__', 'i_sh'), ('long long', 'sh_stride'),
                             ('const float* __restrict__', 'gain_e'),
                             (f'{scalar}* __restrict__', 'grad_d'), (f'{scalar}* __restrict__', 'grad_i_sh'), ('float* __restrict__', 'grad_v_init'),
                             ('float* __restrict__', 'grad_gain_e'), ('float* __restrict__', 'grad_bias'))
        prologue = '    const float g = gain_e[c];\n    float grad_g = 0.0f;\n    float grad_b = 0.0f;\n'
        to_input = f'''        const long long n = t * batch + sample;
        const float grad_diff = grad_x * g / {load.format('i_sh[n * sh_stride + j]')};
        const float normalized = n_seq[k];
        grad_d[k] = {store.format('grad_diff')};
        grad_i_sh[k] = {store.format('-grad_diff * normalized')};
        grad_g += grad_x * normalized;
        grad_b += grad_x;
'''
        epilogue = '    grad_gain_e[i] = grad_g;\n    grad_bias[i] = grad_b;\n'
    else:
        params = grads_in + ((f'{scalar}* __restrict__', 'grad_x_seq'), ('float* __restrict__', 'grad_v_init'))
        prologue, epilogue = '', ''
        to_input = f'        grad_x_seq[k] = {store.format("grad_x")};\n'
    spike = '' if config.v_reset is None else '        const float s = over >= 0.0f ? 1.0f : 0.0f;\n'
    body = f'''
{prologue}    float grad_v = grad_v_last[i * grad_v_step];
    for (int t = T - 1; t >= 0; --t) {{
        const long long k = (long long)t * numel + i;
        grad_v += grad_v_seq[k * grad_v_seq_step];
        const float h = h_seq[k];
        const float over = __fsub_rn(h, {_f(config.v_threshold)});
{spike}{_surrogate_derivative(config)}        const float grad_h = grad_spike_seq[k * grad_spike_step] * sg + grad_v * {_reset_derivative(config)};
        const float grad_x = grad_h * {_input_derivative(config)};
{to_input}        grad_v = grad_h * {_leak(config)};
    }}
    grad_v_init[i] = grad_v;
{epilogue}'''
    return _kernel('backward', kind, config, dtype, params + _GEOMETRY[kind], body)


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
    with cupy.cuda.Device(device.index), cupy_stream(cupy, torch.cuda.current_stream(device)):
        _cupy_kernel(kernel.name, kernel.source)(grid, block, values)


def cupy_stream(cupy, stream):
    """CuPy's handle of the torch CUDA ``stream``: through the CUDA stream protocol
    (``Stream.from_external``, CuPy >= 14) where the torch stream speaks it (``__cuda_stream__``),
    else from its raw pointer (``ExternalStream``, which CuPy 14 deprecates for the former)."""
    if hasattr(cupy.cuda.Stream, 'from_external') and hasattr(stream, '__cuda_stream__'):
        return cupy.cuda.Stream.from_external(stream)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        return cupy.cuda.ExternalStream(stream.cuda_stream, stream.device.index)


def _grid(numel: int):
    return (math.ceil(numel / BLOCK),), (BLOCK,)


def _rows(x: torch.Tensor, rows: int):
    """``(flat, stride)``: ``x`` as ``[rows, -1]`` with contiguous rows ``stride`` elements apart
    (a view when the layout allows, e.g. a channel slice; else a contiguous copy)."""
    flat = x.reshape(rows, -1)
    if flat.shape[1] > 1 and flat.stride(1) != 1:
        flat = flat.contiguous()
    return flat, flat.stride(0)


def _state(v_init: torch.Tensor, step_shape):
    """``(v0, step)``: the initial potential as float32, one value for all (step 0) or one per neuron."""
    if v_init.numel() == 1:
        return v_init.detach().float().reshape(1), 0
    return v_init.detach().float().expand(step_shape).contiguous(), 1


def _outputs(T: int, step_shape, device, store_v_seq: bool, save_count: int, save: bool):
    """Float32 ``spikes [T, *step]``, ``v_seq`` (or a placeholder), ``v_last`` and the saved sequences."""
    numel = step_shape.numel()
    spikes = torch.empty((T, *step_shape), device=device)
    v_seq = torch.empty((T, *step_shape) if store_v_seq else (1,), device=device)
    saved = [torch.empty((T, numel) if save else (1,), device=device) for _ in range(save_count)]
    return spikes, v_seq, torch.empty(step_shape, device=device), saved


def _grad_args(grad_spikes, grad_v_seq, grad_v_last, device):
    """The three incoming gradients as (tensor, step) kernel arguments; an absent one reads as 0."""
    zero = torch.zeros(1, device=device)
    return [a for g in (grad_spikes, grad_v_seq, grad_v_last)
            for a in ((zero, 0) if g is None else (g.float().contiguous(), 1))]


class _FusedEILIF(torch.autograd.Function):
    """``(d, i_sh [T, N, C, *S], gain_e, bias [C], v_init) -> (spikes, v_seq or None, v_last)``."""

    @staticmethod
    def forward(ctx, d, i_sh, gain_e, bias, v_init, config, store_v_seq, save):
        ctx.set_materialize_grads(False)
        T, N, C = d.shape[:3]
        step_shape = d.shape[1:]
        numel = step_shape.numel()
        dtype = torch.promote_types(d.dtype, i_sh.dtype)
        (diff, d_stride), (sh, sh_stride) = (_rows(x.to(dtype), T * N) for x in (d, i_sh))
        gain, bias_f = gain_e.detach().float().contiguous(), bias.detach().float().contiguous()
        v0, v_step = _state(v_init, step_shape)
        spikes, v_seq, v_last, (h_seq, n_seq) = _outputs(T, step_shape, d.device, store_v_seq, 2, save)
        geometry = (T, numel, numel // N, numel // (N * C)) if numel else None
        if geometry:
            _launch(forward_kernel(config, 'ei', dtype), *_grid(numel),
                    [diff, d_stride, sh, sh_stride, gain, bias_f, v0, v_step,
                     spikes, v_seq, int(store_v_seq), h_seq, n_seq, int(save), v_last, *geometry])
        ctx.save_for_backward(h_seq, n_seq, sh, gain)
        ctx.config, ctx.dtype, ctx.geometry, ctx.sh_stride = config, dtype, geometry, sh_stride
        ctx.shapes = (d.shape, C, gain_e.dtype, bias.dtype, v_init.shape)
        return spikes, (v_seq if store_v_seq else None), v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_seq, grad_v_last):
        h_seq, n_seq, sh, gain = ctx.saved_tensors
        shape, C, gain_dtype, bias_dtype, v_shape = ctx.shapes
        device = h_seq.device
        grads = [torch.empty(shape, dtype=ctx.dtype, device=device) for _ in range(2)]
        grad_v_init, grad_gain, grad_bias = (torch.empty(shape[1:], device=device) for _ in range(3))
        if ctx.geometry:
            _launch(backward_kernel(ctx.config, 'ei', ctx.dtype), *_grid(ctx.geometry[1]),
                    [*_grad_args(grad_spikes, grad_v_seq, grad_v_last, device), h_seq, n_seq, sh, ctx.sh_stride,
                     gain, *grads, grad_v_init, grad_gain, grad_bias, *ctx.geometry])
        per_channel = lambda t, dtype: t.reshape(shape[1], C, shape[3:].numel()).sum((0, 2)).to(dtype)
        grad_v = grad_v_init.sum_to_size(v_shape) if ctx.needs_input_grad[4] else None
        return (*grads, per_channel(grad_gain, gain_dtype), per_channel(grad_bias, bias_dtype), grad_v,
                None, None, None)


class _FusedLIF(torch.autograd.Function):
    """``(x_seq [T, N, *F], v_init) -> (spikes, v_seq or None, v_last)``."""

    @staticmethod
    def forward(ctx, x_seq, v_init, config, store_v_seq, save):
        ctx.set_materialize_grads(False)
        T, step_shape = x_seq.shape[0], x_seq.shape[1:]
        numel = step_shape.numel()
        x, x_stride = _rows(x_seq, T)
        v0, v_step = _state(v_init, step_shape)
        spikes, v_seq, v_last, (h_seq,) = _outputs(T, step_shape, x_seq.device, store_v_seq, 1, save)
        if numel:
            _launch(forward_kernel(config, 'plain', x_seq.dtype), *_grid(numel),
                    [x, x_stride, v0, v_step, spikes, v_seq, int(store_v_seq), h_seq, int(save), v_last, T, numel])
        ctx.save_for_backward(h_seq)
        ctx.config, ctx.dtype, ctx.shape, ctx.v_shape = config, x_seq.dtype, x_seq.shape, v_init.shape
        return spikes, (v_seq if store_v_seq else None), v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_seq, grad_v_last):
        h_seq, = ctx.saved_tensors
        T, step_shape = ctx.shape[0], ctx.shape[1:]
        numel = step_shape.numel()
        grad_x = torch.empty(ctx.shape, dtype=ctx.dtype, device=h_seq.device)
        grad_v_init = torch.empty(step_shape, device=h_seq.device)
        if numel:
            _launch(backward_kernel(ctx.config, 'plain', ctx.dtype), *_grid(numel),
                    [*_grad_args(grad_spikes, grad_v_seq, grad_v_last, h_seq.device), h_seq, grad_x, grad_v_init,
                     T, numel])
        grad_v = grad_v_init.sum_to_size(ctx.v_shape) if ctx.needs_input_grad[1] else None
        return grad_x, grad_v, None, None, None


def _check_common(name: str, tensors, v_init: torch.Tensor, step_shape, config) -> None:
    """One clear error for what both entry points cannot take."""
    if not isinstance(config, LIFConfig):
        raise TypeError(f'{name}: config must be an sj_ei.lif.LIFConfig (e.g. LIFConfig.of(node)), '
                        f'got {type(config).__name__}')
    try:
        torch.broadcast_shapes(v_init.shape, step_shape)
    except RuntimeError:
        raise ValueError(f'{name}: v_init of shape {tuple(v_init.shape)} does not fit one step of the neurons '
                         f'{list(step_shape)}; call functional.reset_net(net) between batches of different '
                         'shapes') from None
    devices = {t.device for t in (*tensors, v_init)}
    if len(devices) != 1:
        raise ValueError(f'{name}: all tensors must be on one device, got {sorted(map(str, devices))}')
    dtypes = {t.dtype for t in tensors if t.dim() > 1} - set(_STORAGE)
    if dtypes:
        raise TypeError(f"backend 'cupy' computes in float32 from float32, float16 or bfloat16 inputs, got "
                        f"{sorted(map(str, dtypes))}; use backend='torch' for other dtypes")
    if step_shape.numel() >= 2 ** 31:
        raise ValueError(f"backend 'cupy' handles fewer than 2**31 neurons per time step, got {step_shape.numel()}; "
                         "use a smaller batch or backend='torch'")


def _as_tensor(v_init, like: torch.Tensor) -> torch.Tensor:
    return v_init if isinstance(v_init, torch.Tensor) else torch.full((1,), float(v_init), device=like.device)


def _save(*tensors) -> bool:
    """Whether backward will run: only then do the kernels write what it needs."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def fused_ei_lif(currents, v_init, config: LIFConfig, store_v_seq: bool = False):
    """LIF neurons driven by ``I_int = g_E d / I_sh~ + b_E``, all T steps in one kernel.

    ``currents``: ``sj_ei.EICurrents(d, i_sh [T, N, C, *S], gain_e, bias [C])`` on a
    CUDA device; ``v_init``: float or tensor broadcastable to ``[N, C, *S]``.  Returns float32
    ``(spikes [T, N, C, *S], v_seq [T, N, C, *S] or None, v_last [N, C, *S])``, differentiable.
    """
    d, i_sh, gain_e, bias = currents
    require_cupy(d)
    v_init = _as_tensor(v_init, d)
    if d.shape != i_sh.shape or d.dim() < 3:
        raise ValueError('fused_ei_lif: d and i_sh must both have the shape [T, N, C, *S], got '
                         f'{tuple(d.shape)} and {tuple(i_sh.shape)}')
    C = d.shape[2]
    if tuple(gain_e.shape) != (C,) or tuple(bias.shape) != (C,):
        raise ValueError(f'fused_ei_lif: gain_e and bias must have the shape [C] = [{C}], '
                         f'got {tuple(gain_e.shape)} and {tuple(bias.shape)}')
    _check_common('fused_ei_lif', (d, i_sh, gain_e, bias), v_init, d.shape[1:], config)
    save = _save(d, i_sh, gain_e, bias, v_init)
    return _FusedEILIF.apply(d, i_sh, gain_e, bias, v_init, config, bool(store_v_seq), save)


def fused_lif(x_seq: torch.Tensor, v_init, config: LIFConfig, store_v_seq: bool = False):
    """LIF neurons driven by the input current ``x_seq [T, N, *F]`` (CUDA), all T steps in one kernel.

    ``v_init``: float or tensor broadcastable to ``[N, *F]``.  Returns float32
    ``(spikes [T, N, *F], v_seq [T, N, *F] or None, v_last [N, *F])``, differentiable.
    """
    require_cupy(x_seq)
    v_init = _as_tensor(v_init, x_seq)
    if x_seq.dim() < 2:
        raise ValueError(f'fused_lif: x_seq must have the shape [T, N, *F], got {tuple(x_seq.shape)}')
    _check_common('fused_lif', (x_seq,), v_init, x_seq.shape[1:], config)
    save = _save(x_seq, v_init)
    return _FusedLIF.apply(x_seq, v_init, config, bool(store_v_seq), save)
