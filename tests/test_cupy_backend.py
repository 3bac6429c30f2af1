"""The fused CuPy backend equals the torch backend (I_int by ``sj_ei.circuit.integrate``, then
spikingjelly's LIFNode, backend 'torch', multi-step, with autograd).

No GPU is needed: the generated kernels are compile-checked with nvcc and NVRTC, and run on
the CPU through an emulation of the CUDA thread grid (``cuda_emulation``) that replaces the
CuPy launcher, so ``fused_ei_lif`` and its autograd function run unchanged around them.
"""
import importlib
import math
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate

import sj_ei
from sj_ei import _compat, cupy_backend
from sj_ei.circuit import integrate, stabilize
from sj_ei.cupy_backend import BLOCK, CONVERSIONS, Kernel, LIFConfig, backward_kernel, forward_kernel

from cuda_emulation import Emulator

PAPER = LIFConfig(tau=2.0, v_threshold=1.0, detach_reset=True, surrogate_alpha=4.0)
CONFIGS = [PAPER,
           LIFConfig(3.0, 0.5, False, 2.0),
           LIFConfig(2.0, 1.0, True, 4.0, decay_input=True),
           LIFConfig(2.0, 1.0, True, 4.0, decay_input=True, v_reset=0.0),
           LIFConfig(2.5, 1.0, False, 4.0, v_reset=-0.25),
           LIFConfig(4.0, 1.5, False, 3.0, decay_input=True, v_reset=0.5)]
HALF_TYPES = [torch.float16, torch.bfloat16]
SHAPES = {'conv': (3, 6, 5, 7), 'linear': (2, 10)}  # [N, C, *S]: 630 and 20 neurons, not multiples of BLOCK


def all_kernels():
    """Every kernel the tests run: all configurations in float32, the paper's also in 16-bit types."""
    return [make(config, dtype) for config in CONFIGS for make in (forward_kernel, backward_kernel)
            for dtype in [torch.float32] + (HALF_TYPES if config == PAPER else [])]


CONVERSION_TEST = Kernel('sj_ei_test_conversions', CONVERSIONS + r'''
extern "C" __global__ void sj_ei_test_conversions(const unsigned short* bits, float* from_f16, float* from_bf16,
        const float* x, unsigned short* to_f16, unsigned short* to_bf16, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < 65536) { from_f16[i] = sj_ei_f16_to_f32(bits[i]); from_bf16[i] = sj_ei_bf16_to_f32(bits[i]); }
    if (i < n) { to_f16[i] = sj_ei_f32_to_f16(x[i]); to_bf16[i] = sj_ei_f32_to_bf16(x[i]); }
}
''', (('const unsigned short*', 'bits'), ('float*', 'from_f16'), ('float*', 'from_bf16'), ('const float*', 'x'),
      ('unsigned short*', 'to_f16'), ('unsigned short*', 'to_bf16'), ('int', 'n')))


# ---------------------------------------------------------------- compile checks for the GPU

NVCC = shutil.which('nvcc')


def ptx_functions(ptx: str) -> dict:
    """``{entry name: body}`` of a PTX module."""
    parts = re.split(r'\.visible \.entry (\w+)\(', ptx)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.skipif(NVCC is None, reason='nvcc is not on PATH: the generated CUDA sources are not compile-checked')
@pytest.mark.parametrize('arch', ['sm_80', 'sm_90'])
def test_every_generated_kernel_compiles_with_nvcc(tmp_path, arch):
    kernels = all_kernels() + [CONVERSION_TEST]
    source, ptx = tmp_path / 'kernels.cu', tmp_path / 'kernels.ptx'
    source.write_text(''.join(k.source for k in kernels))
    result = subprocess.run([NVCC, '-ptx', f'-arch={arch}', str(source), '-o', str(ptx)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    functions = ptx_functions(ptx.read_text())
    assert set(functions) == {k.name for k in kernels}
    for name, body in functions.items():
        if '_forward_' in name:  # spikes must not depend on the compiler contracting a * b + c
            assert not re.search(r'\bfma\.', body), name


def test_every_generated_kernel_compiles_with_nvrtc_without_headers():
    """NVRTC is the compiler CuPy uses; no include path is given, as where no CUDA toolkit is installed."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # CuPy or its NVRTC library is missing
        pytest.skip(f'NVRTC is not available here: {e}')
    program = nvrtc.createProgram(''.join(k.source for k in all_kernels()), 'kernels.cu', [], [])
    try:
        nvrtc.compileProgram(program, ['-arch=compute_80'])
    except nvrtc.NVRTCError:
        pytest.fail(nvrtc.getProgramLog(program))


# ---------------------------------------------------------------- emulation on the CPU

@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
    """All kernels compiled for the CPU once (one g++ run)."""
    emulator = Emulator(tmp_path_factory.mktemp('kernels'))
    emulator.compile(all_kernels() + [CONVERSION_TEST])
    return emulator


@pytest.fixture
def launches(emulator, monkeypatch):
    """``fused_ei_lif`` runs on the CPU through the emulator; returns the list of launches made."""
    made = []

    def launch(kernel, grid, block, args):
        assert grid[0] * block[0] >= args[[n for _, n in kernel.params].index('numel')] > (grid[0] - 1) * block[0]
        emulator.launch(kernel, grid, block, args)
        made.append((kernel, dict(zip((n for _, n in kernel.params), args))))

    monkeypatch.setattr(cupy_backend, '_launch', launch)
    monkeypatch.setattr(cupy_backend, 'require_cupy', lambda tensor: None)
    return made


def currents(T, shape, seed):
    """``(i_ee, i_ei, i_sh~, gain_e, bias)`` for ``[T, *shape]``, as an E-I layer makes them.

    ``i_ee`` is a channel slice of a larger tensor (the layer's one projection of E and I
    channels).  Half of the values, and those of even channels' ``g_E``, ``b_E``, are dyadic
    (exact in float32 throughout), and where all are, in half of the places, ``I_EE`` is chosen
    so that ``I_int`` is exactly 1: the paper's neurons at rest land exactly on the threshold.
    ``i_sh`` has exact zeros and one silent sample (t=0, b=0) and goes through the adaptive
    stabilization (zeros -> the sample's minimum, or +inf).
    """
    g = torch.Generator().manual_seed(seed)
    rand = lambda *size: torch.rand(size, generator=g)
    randint = lambda low, high, *size: torch.randint(low, high, size, generator=g)
    N, C, *S = shape
    size = (T, *shape)
    even = torch.arange(C) % 2 == 0
    gain_e = torch.where(even, 2.0 ** randint(-1, 2, C), rand(C) + 0.5)
    bias = torch.where(even, randint(-1, 2, C) / 4, rand(C) - 0.5)
    dyadic = rand(*size) < 0.5
    dyadic[:, -1, 0] = True
    y = rand(T, N, C + max(C // 4, 1), *S) * 3
    i_ee = y[:, :, :C]
    i_ee[dyadic] = (randint(0, 12, *size) / 4)[dyadic]
    i_ei = torch.where(dyadic, randint(0, 4, *size) / 4, rand(*size))
    raw = torch.where(dyadic, 2.0 ** randint(-1, 2, *size), rand(*size) + 0.1)
    zero = rand(*size) < 0.1
    zero[:, -1, 0] = False
    raw[zero] = 0.0
    raw[0, 0] = 0.0
    i_sh = stabilize(raw.flatten(0, 1)).unflatten(0, (T, N))
    per_channel = (C,) + (1,) * len(S)
    at_one = dyadic & even.view(per_channel) & (raw != 0) & (rand(*size) < 0.5)
    at_one[:, -1, 0] = True
    i_ee[at_one] = (i_ei + (1 - bias.view(per_channel)) * raw / gain_e.view(per_channel))[at_one]
    return i_ee, i_ei, i_sh, gain_e, bias


def lif(config: LIFConfig, **kwargs):
    return neuron.LIFNode(tau=config.tau, decay_input=config.decay_input, v_threshold=config.v_threshold,
                          v_reset=config.v_reset, detach_reset=config.detach_reset,
                          surrogate_function=surrogate.Sigmoid(alpha=config.surrogate_alpha), step_mode='m', **kwargs)


def integrated(i_ee, i_ei, i_sh, gain_e, bias):
    """``I_int [T, N, C, *S]`` with autograd, in the operation order of ``sj_ei.circuit.integrate``."""
    shape = (-1,) + (1,) * (i_ee.dim() - 3)
    return (i_ee - i_ei).mul(gain_e.view(shape)).div(i_sh).add(bias.view(shape))


def run(backend, config, inputs, v_init, grad_spikes, grad_v):
    """Spikes, last potential and the gradients of ``inputs + (v_init,)`` (None where not a tensor) of
    ``sum(spikes * grad_spikes) + sum(v_last * grad_v)``, by ``backend`` 'torch' or 'fused'."""
    leaves = [t.detach().requires_grad_() for t in inputs]  # same memory layout as the inputs
    v0 = v_init.detach().requires_grad_() if isinstance(v_init, torch.Tensor) else v_init
    if backend == 'torch':
        node = lif(config)
        if isinstance(v0, torch.Tensor):
            node.v = v0
        spikes = node(integrated(*leaves))
        v_last = node.v
    else:
        spikes, v_last = cupy_backend.fused_ei_lif(*leaves, v0, **config._asdict())
    (spikes.float().mul(grad_spikes).sum() + v_last.mul(grad_v).sum()).backward()
    grads = [t.grad for t in leaves] + [v0.grad if isinstance(v0, torch.Tensor) else None]
    return spikes.detach(), v_last.detach(), grads


NAMES = ('i_ee', 'i_ei', 'i_sh', 'gain_e', 'bias', 'v_init')


def assert_grads_close(got, want, rtol=1e-5):
    """Each gradient within ``rtol`` of the reference, relative to the element or to the tensor's scale."""
    for name, g, w in zip(NAMES, got, want):
        assert (g is None) == (w is None), name
        if w is not None:
            assert g.dtype == w.dtype, name
            scale = w.abs().max().item()
            torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * scale, msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('v_start', ['rest', 'tensor'])
@pytest.mark.parametrize('T', [1, 4, 16])
@pytest.mark.parametrize('shape', list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize('config', CONFIGS, ids=[f'config{i}' for i in range(len(CONFIGS))])
def test_emulated_kernels_match_the_torch_backend(launches, config, shape, T, v_start):
    seed = T * 100 + CONFIGS.index(config) * 10 + len(SHAPES[shape])
    inputs = currents(T, SHAPES[shape], seed)
    g = torch.Generator().manual_seed(seed + 1)
    v_init = (config.v_reset or 0.0) if v_start == 'rest' else torch.randn(SHAPES[shape], generator=g)
    grad_spikes, grad_v = torch.randn((T, *SHAPES[shape]), generator=g), torch.randn(SHAPES[shape], generator=g)

    spikes, v_last, grads = run('torch', config, inputs, v_init, grad_spikes, grad_v)
    k_spikes, k_v_last, k_grads = run('fused', config, inputs, v_init, grad_spikes, grad_v)

    assert 0 < spikes.mean() < 1
    assert torch.equal(k_spikes, spikes)
    assert torch.equal(k_v_last, v_last)
    assert_grads_close(k_grads, grads)
    silent = inputs[2].isinf()
    assert silent[0, 0].all() and k_grads[0][silent].eq(0).all() and k_grads[2][silent].eq(0).all()
    with torch.no_grad():
        i_int = integrated(*inputs)  # the same values as sj_ei's torch path computes
        assert torch.equal(integrate(*(t.flatten(0, 1) for t in inputs[:3]), *inputs[3:]), i_int.flatten(0, 1))
        node = lif(config).eval()  # spikingjelly's evaluation path (TorchScript loops) fires the same
        if isinstance(v_init, torch.Tensor):
            node.v = v_init.clone()
        assert torch.equal(node(i_int), spikes)
    forward = [args for kernel, args in launches if '_forward_' in kernel.name]
    assert len(forward) == 1 and len([k for k, _ in launches if '_backward_' in k.name]) == 1
    if config == PAPER and v_start == 'rest':
        assert (forward[0]['h_seq'] == config.v_threshold).any(), 'no membrane potential landed on the threshold'


def test_membrane_exactly_at_threshold_fires_in_both(launches):
    """H = 0.5 * 0 + (1.5 - 0.5) / 1 = 1.0 exactly: both fire, and again after the soft reset to 0."""
    i_ee, i_ei, i_sh = torch.full((3, 1, 2), 1.5), torch.full((3, 1, 2), 0.5), torch.ones(3, 1, 2)
    inputs = (i_ee, i_ei, i_sh, torch.ones(2), torch.zeros(2))
    ones = torch.ones(3, 1, 2)
    spikes, v_last, _ = run('torch', PAPER, inputs, 0.0, ones, torch.ones(1, 2))
    k_spikes, k_v_last, _ = run('fused', PAPER, inputs, 0.0, ones, torch.ones(1, 2))
    assert spikes.eq(1).all() and k_spikes.eq(1).all() and k_v_last.eq(0).all() and v_last.eq(0).all()
    assert launches[0][1]['h_seq'].eq(1.0).all()


@pytest.mark.parametrize('kind', ['float16', 'bfloat16', 'mixed'])
def test_half_precision_currents_are_integrated_in_float32(launches, kind):
    """Under autocast the currents come as float16/bfloat16: the kernel reads them, computes in float32
    (so the spikes are those of the float32 path on the same values) and writes spikes and current
    gradients in the currents' dtype; mixed dtypes are promoted."""
    T, shape = 4, SHAPES['conv']
    i_ee, i_ei, i_sh, gain_e, bias = currents(T, shape, seed=7)
    dtype = torch.float16 if kind == 'mixed' else getattr(torch, kind)
    low = (i_ee.to(dtype), i_ei.to(dtype), i_sh if kind == 'mixed' else i_sh.to(dtype), gain_e, bias)
    g = torch.Generator().manual_seed(8)
    v_init = torch.randn(shape, generator=g)
    grad_v = torch.randn(shape, generator=g)
    grad_spikes = torch.randn((T, *shape), generator=g).to(dtype).float()  # the spikes' gradient is in their dtype
    spikes, v_last, grads = run('torch', PAPER, [t.float() for t in low], v_init, grad_spikes, grad_v)
    k_spikes, k_v_last, k_grads = run('fused', PAPER, low, v_init, grad_spikes, grad_v)
    storage = torch.float32 if kind == 'mixed' else dtype
    tag = {torch.float32: 'f32', torch.float16: 'f16', torch.bfloat16: 'bf16'}[storage]
    assert k_spikes.dtype == storage and f'_forward_{tag}_' in launches[0][0].name
    assert torch.equal(k_spikes.float(), spikes) and torch.equal(k_v_last, v_last)
    for name, got, want, leaf in zip(NAMES, k_grads, grads, list(low) + [v_init]):
        eps = torch.finfo(leaf.dtype).eps if leaf.dtype != torch.float32 else 1e-5
        torch.testing.assert_close(got, want.to(leaf.dtype), rtol=eps, atol=eps * want.abs().max().item(),
                                   msg=lambda m: f'{name}: {m}')


LAYOUTS = {'n-major': lambda t: t.transpose(0, 1).contiguous().transpose(0, 1),
           'every-other-channel': lambda t: torch.stack([t, t + 1], dim=-1)[..., 0]}


@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_layouts_the_kernel_cannot_index_are_copied(launches, layout):
    """Samples must be runs of contiguous features: other layouts (N before T in memory, features
    every other element) are copied first, and give the same results."""
    inputs = currents(4, SHAPES['linear'], seed=3)
    strided = [LAYOUTS[layout](t) for t in inputs[:3]] + list(inputs[3:])
    assert all(torch.equal(a, b) and not a.is_contiguous() for a, b in zip(strided[:3], inputs))
    spikes, v_last, grads = run('torch', PAPER, inputs, 0.0, torch.ones(4, 2, 10), torch.zeros(2, 10))
    k_spikes, k_v_last, k_grads = run('fused', PAPER, strided, 0.0, torch.ones(4, 2, 10), torch.zeros(2, 10))
    assert torch.equal(k_spikes, spikes) and torch.equal(k_v_last, v_last)
    assert_grads_close(k_grads, grads)


def test_conversions_round_like_torch(emulator):
    """Every float16 and bfloat16 value, and floats at and around every rounding tie, convert as torch does."""
    bits = torch.arange(65536, dtype=torch.int32).to(torch.int16)
    values = {dtype: bits.view(dtype).float() for dtype in HALF_TYPES}
    g = torch.Generator().manual_seed(0)
    x = [torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 65504.0, 65519.99, 65520.0, 1e-8, 3e38, -3e-45]),
         torch.randn(20000, generator=g) * 2.0 ** torch.randint(-30, 20, (20000,), generator=g)]
    for v in values.values():
        v = v[v.isfinite()].unique()
        ties = ((v[:-1].double() + v[1:].double()) / 2).float()  # exact: both formats have < 24 bits
        x += [v, ties, ties.nextafter(torch.tensor(math.inf)), ties.nextafter(torch.tensor(-math.inf))]
    x = torch.cat(x)
    from_f16, from_bf16 = torch.empty(65536), torch.empty(65536)
    to_f16, to_bf16 = torch.empty(len(x), dtype=torch.int16), torch.empty(len(x), dtype=torch.int16)
    emulator.launch(CONVERSION_TEST, (math.ceil(len(x) / BLOCK),), (BLOCK,),
                    [bits, from_f16, from_bf16, x, to_f16, to_bf16, len(x)])
    for got, dtype in ((from_f16, torch.float16), (from_bf16, torch.bfloat16)):
        want = values[dtype]
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~want.isnan()], want[~want.isnan()])
    for got, dtype in ((to_f16, torch.float16), (to_bf16, torch.bfloat16)):
        want = x.to(dtype)
        assert torch.equal(got.view(dtype).isnan(), want.isnan())
        assert torch.equal(got[~want.isnan()], want.view(torch.int16)[~want.isnan()])


def test_emulator_catches_a_thread_writing_past_the_end(emulator):
    """The harness can fail: without its bounds check, the last block's surplus threads write past the tensors."""
    kernel = forward_kernel(PAPER)
    name = kernel.name + '_unchecked'
    unchecked = Kernel(name, kernel.source.replace('if (i >= numel) return;', '').replace(kernel.name, name),
                       kernel.params)
    x = torch.rand(1, 2, 10)
    args = [x, 10, x, 10, x + 1, 10, torch.ones(10), torch.zeros(10), torch.zeros(1), 0,
            torch.empty(1, 20), torch.empty(1, 20), torch.empty(1, 20), torch.empty(20), 1, 20, 10, 1]
    emulator.launch(kernel, (1,), (BLOCK,), args)
    with pytest.raises(AssertionError, match='wrote outside'):
        emulator.launch(unchecked, (1,), (BLOCK,), args)


def test_launch_hands_cupy_pointers_and_typed_integers_on_the_torch_stream(monkeypatch):
    """``_launch`` (never run without a GPU) against a stand-in CuPy that records what it is given."""
    calls = []

    class Context:
        def __init__(self, *args):
            self.args = args

        def __enter__(self):
            calls.append(('enter', type(self).__name__, self.args))

        def __exit__(self, *exc):
            calls.append(('exit', type(self).__name__))

    class Stream(Context):
        from_external = classmethod(lambda cls, stream: cls(stream))

    class RawKernel:
        def __init__(self, source, name):
            calls.append(('compile', name, source))

        def __call__(self, grid, block, args):
            calls.append(('launch', grid, block, args))

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=type('Device', (Context,), {}), Stream=Stream),
                                 RawKernel=RawKernel)
    monkeypatch.setitem(sys.modules, 'cupy', fake)
    monkeypatch.setattr(torch.cuda, 'current_stream', lambda device: ('torch stream of', device))
    cupy_backend._cupy_kernel.cache_clear()
    kernel = backward_kernel(PAPER)
    tensors = [torch.zeros(3) for _ in kernel.params]
    args = [3 if ctype in ('int', 'long long') else t for (ctype, _), t in zip(kernel.params, tensors)]
    cupy_backend._launch(kernel, (1,), (BLOCK,), args)
    cupy_backend._cupy_kernel.cache_clear()
    assert [c[:2] for c in calls] == [('enter', 'Device'), ('enter', 'Stream'), ('compile', kernel.name),
                                      ('launch', (1,)), ('exit', 'Stream'), ('exit', 'Device')]
    assert calls[1][2] == (('torch stream of', torch.device('cpu')),) and calls[2][2] == kernel.source
    for (ctype, name), value, arg in zip(kernel.params, calls[3][3], args):
        if '*' in ctype:
            assert type(value) is np.uint64 and value == arg.data_ptr(), name
        else:
            assert type(value) is {'int': np.int32, 'long long': np.int64}[ctype] and value == 3, name


# ---------------------------------------------------------------- errors a user can cause

def test_cupy_without_a_gpu_is_one_clear_error():
    x = torch.rand(2, 1, 3)
    with pytest.raises(cupy_backend.CupyUnavailableError,
                       match=r"backend 'cupy' needs CUDA tensors, but this machine has no CUDA GPU; "
                             r"use backend='torch' .* or move the network and its input to a CUDA device"):
        cupy_backend.require_cupy(x)
    with pytest.raises(RuntimeError, match="backend 'cupy' needs CUDA tensors"):
        cupy_backend.fused_ei_lif(x, x, x, torch.ones(3), torch.zeros(3), 0.0, **PAPER._asdict())
    block = sj_ei.EIBlock(sj_ei.EIConv2d(2, 8, 3, padding=1, step_mode='m'), sj_ei.e_population())
    functional.set_backend(block, 'cupy')
    with pytest.raises(cupy_backend.CupyUnavailableError, match='move the network'):
        block((torch.rand(2, 2, 2, 8, 8) < 0.3).float())


def test_cupy_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'cupy', None)  # import cupy raises ImportError
    cupy_backend._cupy_problem.cache_clear()
    cuda_tensor = types.SimpleNamespace(is_cuda=True, device=torch.device('cuda', 0))
    try:
        with pytest.raises(cupy_backend.CupyUnavailableError, match=r"needs CuPy.*pip install cupy-cuda12x.*'torch'"):
            cupy_backend.require_cupy(cuda_tensor)
    finally:
        cupy_backend._cupy_problem.cache_clear()


def test_bad_arguments_are_one_clear_error(launches):
    i_ee, i_ei, i_sh, gain_e, bias = currents(2, SHAPES['linear'], seed=0)
    with pytest.raises(ValueError, match=r'gain_e and bias must have the shape \[C\] = \[10\]'):
        cupy_backend.fused_ei_lif(i_ee, i_ei, i_sh, gain_e[:3], bias, 0.0, **PAPER._asdict())
    with pytest.raises(ValueError, match='v_init of shape .* does not fit'):
        cupy_backend.fused_ei_lif(i_ee, i_ei, i_sh, gain_e, bias, torch.zeros(5, 10), **PAPER._asdict())
    with pytest.raises(TypeError, match="use backend='torch' for other dtypes"):
        cupy_backend.fused_ei_lif(i_ee.double(), i_ei, i_sh, gain_e, bias, 0.0, **PAPER._asdict())


# ---------------------------------------------------------------- spikingjelly's own CuPy code on numpy 2

class FakeCupyArray:
    """Stands in for the ``cupy.ndarray`` scalars spikingjelly's LIF launch passes (none exist without a GPU)."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def test_spikingjelly_cupy_lif_argument_check_needs_the_numpy_2_fix(monkeypatch):
    """spikingjelly's CuPy LIF launch checks integer arguments against ``np.int`` (gone from numpy):
    it fails on today's numpy until ``sj_ei._compat`` runs, and passes after."""
    from spikingjelly.activation_based.auto_cuda import base, neuron_kernel
    monkeypatch.setattr(base, 'cupy', types.SimpleNamespace(ndarray=FakeCupyArray))
    kernel = neuron_kernel.LIFNodeFPTTKernel(decay_input=False, hard_reset=False, dtype='float')
    arguments = {'numel': FakeCupyArray(np.int64), 'v_th': FakeCupyArray(np.float32)}
    monkeypatch.delattr(np, 'int')  # numpy >= 1.24 as it is before the fix
    with pytest.raises(AttributeError, match="has no attribute 'int'"):
        kernel.check_ctypes(arguments)
    importlib.reload(_compat)
    kernel.check_ctypes(arguments)
