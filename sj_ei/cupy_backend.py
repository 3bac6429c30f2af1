"""sj_ei's multi-step CuPy backend: E-I integration fused with the LIF dynamics.

One forward kernel per E-I block runs, for every neuron, the whole time loop

    I_int[t] = g_E (I_EE[t] - I_EI[t]) / I_sh~[t] + b_E      (SPEC section 1)
    H[t] = charge(V[t-1], I_int[t]);  S[t] = Heaviside(H[t] - v_th);  V[t] = reset(H[t], S[t])

so ``I_int`` never reaches memory; one backward kernel runs the surrogate gradient
back through time and gives the gradients of ``I_EE``, ``I_EI``, ``I_sh~`` and the
per-neuron parts of those of ``g_E`` and ``b_E``.  The arithmetic is that of
spikingjelly's ``LIFNode`` (torch backend) operation by operation, with rounding
intrinsics so that no fused multiply-add changes a spike.  Kernels are CUDA C
generated from Python, one per neuron configuration, compiled by CuPy on first use.
"""
import math
from functools import lru_cache

import numpy as np
import torch

BLOCK = 256

FORWARD_PARAMS = (('const float*', 'i_ee'), ('const float*', 'i_ei'), ('const float*', 'i_sh'),
                  ('const float*', 'gain_e'), ('const float*', 'bias'), ('const float*', 'v_init'),
                  ('float*', 'spike_seq'), ('float*', 'h_seq'), ('float*', 'n_seq'), ('float*', 'v_last'),
                  ('int', 'numel'), ('int', 'T'), ('int', 'channels'), ('int', 'inner'))
BACKWARD_PARAMS = (('const float*', 'grad_spike_seq'), ('const float*', 'grad_v_last'),
                   ('const float*', 'h_seq'), ('const float*', 'n_seq'), ('const float*', 'i_sh'),
                   ('const float*', 'gain_e'), ('float*', 'grad_i_ee'), ('float*', 'grad_i_sh'),
                   ('float*', 'grad_v_init'), ('float*', 'grad_gain_e'), ('float*', 'grad_bias'),
                   ('int', 'numel'), ('int', 'T'), ('int', 'channels'), ('int', 'inner'))


class CupyUnavailableError(RuntimeError):
    """backend 'cupy' was asked for where it cannot run."""


def require_cupy(tensor: torch.Tensor) -> None:
    """Raise one clear ``CupyUnavailableError`` unless ``tensor`` can be processed by CuPy kernels."""
    if not tensor.is_cuda:
        raise CupyUnavailableError(
            f"backend 'cupy' runs on CUDA tensors, got a tensor on {tensor.device}: move the network and its "
            "input to a GPU (net.to('cuda')), or use functional.set_backend(net, 'torch')")
    try:
        import cupy  # noqa: F401
    except ImportError:
        raise CupyUnavailableError("backend 'cupy' needs CuPy: pip install 'sj_ei[cupy]' (cupy-cuda12x), "
                                   "or use functional.set_backend(net, 'torch')") from None


def _f(value: float) -> str:
    """A float32 literal of ``value`` that C reads back exactly."""
    text = f'{float(np.float32(value)):.9g}'
    return text + ('f' if any(ch in text for ch in '.e') else '.0f')


class Options:
    """The LIF configuration a kernel is generated for (spikingjelly ``LIFNode`` arguments)."""

    def __init__(self, tau, v_threshold, detach_reset, surrogate_alpha, decay_input=False, v_reset=None):
        self.tau, self.v_threshold, self.detach_reset = float(tau), float(v_threshold), bool(detach_reset)
        self.alpha, self.decay_input = float(surrogate_alpha), bool(decay_input)
        self.v_reset = None if v_reset is None else float(v_reset)

    def key(self):
        return (self.tau, self.v_threshold, self.detach_reset, self.alpha, self.decay_input, self.v_reset)

    def suffix(self) -> str:
        return format(abs(hash(self.key())) % 16 ** 8, '08x')

    def charge(self) -> str:
        """``H`` from ``v`` (the last membrane potential) and ``x`` (the input current)."""
        tau, reset0 = _f(self.tau), self.v_reset is None or self.v_reset == 0.0
        if self.decay_input:
            leak = 'v' if reset0 else f'__fsub_rn(v, {_f(self.v_reset)})'
            return f'__fadd_rn(v, __fdiv_rn(__fsub_rn(x, {leak}), {tau}))'
        if reset0:
            return f'__fadd_rn(__fmul_rn(v, {_f(1.0 - 1.0 / self.tau)}), x)'
        return f'__fadd_rn(__fsub_rn(v, __fdiv_rn(__fsub_rn(v, {_f(self.v_reset)}), {tau})), x)'

    def reset(self) -> str:
        """``V`` from ``h`` and the spike ``s``."""
        if self.v_reset is None:
            return f'__fsub_rn(h, __fmul_rn(s, {_f(self.v_threshold)}))'
        return f'__fadd_rn(__fmul_rn(__fsub_rn(1.0f, s), h), __fmul_rn(s, {_f(self.v_reset)}))'

    def reset_derivative(self) -> str:
        """``dV/dH`` given ``s`` and the surrogate derivative ``sg``."""
        if self.v_reset is None:
            return '1.0f' if self.detach_reset else f'(1.0f - {_f(self.v_threshold)} * sg)'
        if self.detach_reset:
            return '(1.0f - s)'
        return f'((1.0f - s) + ({_f(self.v_reset)} - h) * sg)'


def _signature(name, params):
    return f'extern "C" __global__ void {name}(' + ', '.join(f'{t} {n}' for t, n in params) + ')'


def forward_source(options: Options) -> tuple:
    """``(name, CUDA source)`` of the forward kernel: one thread per neuron, looping over T."""
    name = f'sj_ei_lif_forward_{options.suffix()}'
    source = _signature(name, FORWARD_PARAMS) + f'''
{{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= numel) return;
    const int c = (i / inner) % channels;
    const float g = gain_e[c];
    const float b = bias[c];
    float v = v_init[i];
    for (int t = 0; t < T; t++) {{
        const int k = t * numel + i;
        const float n = __fdiv_rn(__fsub_rn(i_ee[k], i_ei[k]), i_sh[k]);
        const float x = __fadd_rn(__fdiv_rn(__fmul_rn(__fsub_rn(i_ee[k], i_ei[k]), g), i_sh[k]), b);
        const float h = {options.charge()};
        const float s = __fsub_rn(h, {_f(options.v_threshold)}) >= 0.0f ? 1.0f : 0.0f;
        h_seq[k] = h;
        n_seq[k] = n;
        spike_seq[k] = s;
        v = {options.reset()};
    }}
    v_last[i] = v;
}}
'''
    return name, source


def backward_source(options: Options) -> tuple:
    """``(name, CUDA source)`` of the backward kernel: surrogate gradient back through time."""
    name = f'sj_ei_lif_backward_{options.suffix()}'
    dh_dx = '1.0f' if not options.decay_input else _f(1.0 / options.tau)
    source = _signature(name, BACKWARD_PARAMS) + f'''
{{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= numel) return;
    const int c = (i / inner) % channels;
    const float g = gain_e[c];
    float grad_v = grad_v_last[i];
    float grad_g = 0.0f;
    float grad_b = 0.0f;
    for (int t = T - 1; t >= 0; t--) {{
        const int k = t * numel + i;
        const float h = h_seq[k];
        const float over = __fsub_rn(h, {_f(options.v_threshold)});
        const float s = over >= 0.0f ? 1.0f : 0.0f;
        const float sig = 1.0f / (1.0f + expf(-{_f(options.alpha)} * over));
        const float sg = {_f(options.alpha)} * sig * (1.0f - sig);
        const float grad_h = grad_spike_seq[k] * sg + grad_v * {options.reset_derivative()};
        const float grad_x = grad_h * {dh_dx};
        const float grad_ee = grad_x * g / i_sh[k];
        grad_i_ee[k] = grad_ee;
        grad_i_sh[k] = -grad_ee * n_seq[k];
        grad_g += grad_x * n_seq[k];
        grad_b += grad_x;
        grad_v = grad_h * {_f(1.0 - 1.0 / options.tau)};
    }}
    grad_v_init[i] = grad_v;
    grad_gain_e[i] = grad_g;
    grad_bias[i] = grad_b;
}}
'''
    return name, source


@lru_cache(maxsize=None)
def _compiled(name: str, source: str):
    import cupy
    return cupy.RawKernel(source, name, options=('--std=c++11',))


def _launch(name, source, numel, tensors, ints):
    import cupy
    kernel = _compiled(name, source)
    args = [cupy.from_dlpack(t.detach()) for t in tensors] + [np.int32(v) for v in ints]
    with cupy.cuda.ExternalStream(torch.cuda.current_stream(tensors[0].device).cuda_stream):
        kernel((math.ceil(numel / BLOCK),), (BLOCK,), tuple(args))


class _FusedEILIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, i_ee, i_ei, i_sh, gain_e, bias, v_init, options):
        T, shape = i_ee.shape[0], i_ee.shape[1:]
        numel, channels = shape.numel(), shape[1]
        inner = numel // (shape[0] * channels)
        i_ee, i_ei, i_sh = (t.float().contiguous() for t in (i_ee, i_ei, i_sh))
        gain_e, bias = gain_e.float().contiguous(), bias.float().contiguous()
        v_init_shape = v_init.shape
        v_init = v_init.float().expand(shape).contiguous()
        spike, h_seq, n_seq = (torch.empty_like(i_ee) for _ in range(3))
        v_last = torch.empty(shape, device=i_ee.device)
        name, source = forward_source(options)
        _launch(name, source, numel, (i_ee, i_ei, i_sh, gain_e, bias, v_init, spike, h_seq, n_seq, v_last),
                (numel, T, channels, inner))
        ctx.save_for_backward(h_seq, n_seq, i_sh, gain_e)
        ctx.options, ctx.geometry, ctx.v_shape = options, (numel, T, channels, inner), v_init_shape
        return spike, v_last

    @staticmethod
    def backward(ctx, grad_spike, grad_v_last):
        h_seq, n_seq, i_sh, gain_e = ctx.saved_tensors
        numel, T, channels, inner = ctx.geometry
        grad_spike = torch.zeros_like(h_seq) if grad_spike is None else grad_spike.float().contiguous()
        grad_v_last = (torch.zeros(h_seq.shape[1:], device=h_seq.device) if grad_v_last is None
                       else grad_v_last.float().contiguous())
        grad_ee, grad_sh = torch.empty_like(h_seq), torch.empty_like(h_seq)
        grad_v_init, grad_gain, grad_bias = (torch.empty(h_seq.shape[1:], device=h_seq.device) for _ in range(3))
        name, source = backward_source(ctx.options)
        _launch(name, source, numel, (grad_spike, grad_v_last, h_seq, n_seq, i_sh, gain_e, grad_ee, grad_sh,
                                      grad_v_init, grad_gain, grad_bias), (numel, T, channels, inner))
        per_channel = lambda t: t.view(-1, channels, inner).sum((0, 2))
        grad_v_init = grad_v_init.sum_to_size(ctx.v_shape) if ctx.needs_input_grad[5] else None
        return grad_ee, -grad_ee, grad_sh, per_channel(grad_gain), per_channel(grad_bias), grad_v_init, None


def fused_ei_lif(i_ee, i_ei, i_sh, gain_e, bias, v_init, *, tau, v_threshold, detach_reset, surrogate_alpha,
                 decay_input=False, v_reset=None):
    """Spikes ``[T, N, C, *S]`` and the last membrane potential ``[N, C, *S]`` of LIF neurons driven
    by ``I_int = g_E (I_EE - I_EI) / I_sh~ + b_E``; ``i_ee``, ``i_ei``, ``i_sh`` are ``[T, N, C, *S]``
    CUDA tensors (``i_sh`` already stabilized), ``gain_e``, ``bias`` are ``[C]``, ``v_init`` the
    neurons' state (a float or ``[N, C, *S]``).  Computes in float32."""
    require_cupy(i_ee)
    options = Options(tau, v_threshold, detach_reset, surrogate_alpha, decay_input, v_reset)
    if not isinstance(v_init, torch.Tensor):
        v_init = torch.full((), float(v_init), device=i_ee.device)
    return _FusedEILIF.apply(i_ee, i_ei, i_sh, gain_e, bias, v_init, options)
