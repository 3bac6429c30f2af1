"""The CUDA C of the fused LIF's CuPy kernels, generated per (``LIFConfig``, input kind, storage dtype):
``forward_kernel`` and ``backward_kernel`` give a ``Kernel`` (name, header-free source, parameters) that
``sj_ei.lif.cupy_launch`` compiles with CuPy (NVRTC) on first use and the tests compile with nvcc and
run on the CPU.

Input kinds: ``'ei'`` (an E-I layer's ``d``, ``i_sh [T, N, C, *S]``, ``gain_e``, ``bias [C]``: the kernel
computes ``I_int = b_E + d g_E / I_sh~``, operation by operation as ``sj_ei.currents.integrated``,
without writing it to memory) and ``'plain'`` (the input current ``x_seq [T, N, *F]`` itself).
Storage dtypes: float32, float16, bfloat16 (read in place, computed in float32: a 16-bit division
would lose the integration).

Dynamics, per neuron and step (spikingjelly ``LIFNode``, any ``tau``, ``decay_input``,
``v_reset``, ``detach_reset``)::

    H[t] = charge(V[t-1], I[t]);  S[t] = Heaviside(H[t] - v_th);  V[t] = reset(H[t], S[t])

with round-to-nearest intrinsics in the forward so that no fused multiply-add changes a
spike: spikes equal spikingjelly's torch backend exactly.  The backward kernel runs the
surrogate derivative back through time; supported surrogates are spikingjelly's ``Sigmoid``
(``sigma'(alpha x) alpha``) and ``ATan`` (``alpha / 2 / (1 + (pi / 2 alpha x)^2)``), the
formulas of ``spikingjelly.activation_based.surrogate``, written here (sj_ei does not use
spikingjelly's ``cuda_codes``).
"""
import dataclasses
import hashlib
import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from .config import LIFConfig


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


DTYPES = tuple(_STORAGE)  # the storage dtypes of the currents
