"""The CuPy backend equals the torch path (``sj_ei.currents.integrate``, then spikingjelly's
``LIFNode``, backend 'torch', multi-step, with autograd): spikes and potentials exactly,
gradients to 1e-6 of each tensor's scale.

No GPU is needed: the generated kernels are compile-checked with nvcc (sm_80, sm_90) and NVRTC,
and run on the CPU through an emulation of the CUDA thread grid (``cuda_emulation``) that
replaces CuPy's launcher, so ``sj_ei.lif.lif(..., backend='cupy')``, the ``torch.ops.sj_ei.*_cupy`` operators
and their autograd formulas run unchanged around them.  Where CuPy can launch on a CUDA GPU the same comparisons also run with
real launches (the ``cuda`` cases, skipped elsewhere with the reason; ``SJ_EI_REQUIRE_GPU=1``
turns that skip into a failure, as ``.ci/gpu-check`` does).
"""
import configparser
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import neuron, surrogate

from sj_ei import _compat, backends
from sj_ei.lif import cupy_launch
from sj_ei.lif.cupy_code import CONVERSIONS, KINDS, Kernel, backward_kernel, forward_kernel
from sj_ei.lif.cupy_launch import BLOCK
from sj_ei.currents import EICurrents, integrate
from sj_ei.lif import SURROGATES, LIFConfig, lif as fused

from cuda_emulation import Emulator

PAPER = LIFConfig()  # tau 2, v_th 1, soft reset, detach_reset, sigmoid surrogate (alpha 4)
CONFIGS = [PAPER,
           LIFConfig(surrogate='atan', surrogate_alpha=2.0),
           LIFConfig(3.0, 0.5, detach_reset=False, surrogate='atan', surrogate_alpha=3.0),
           LIFConfig(3.0, 0.5, detach_reset=False, surrogate_alpha=2.0),
           LIFConfig(2.0, 1.0, decay_input=True, surrogate='atan'),
           LIFConfig(2.0, 1.0, v_reset=0.0, decay_input=True),
           LIFConfig(2.5, 1.0, v_reset=-0.25, detach_reset=False, surrogate='atan', surrogate_alpha=1.5),
           LIFConfig(4.0, 1.5, v_reset=0.5, decay_input=True, detach_reset=False, surrogate_alpha=3.0)]
HALF_CONFIGS = CONFIGS[:2]
HALF_TYPES = [torch.float16, torch.bfloat16]
SHAPES = {'conv': (3, 6, 5, 7), 'linear': (2, 10)}  # [N, C, *S]: 630 and 20 neurons, not multiples of BLOCK
REQUIRE_GPU = os.environ.get('SJ_EI_REQUIRE_GPU') == '1'


def all_kernels():
    """Every kernel the tests run: all configurations in float32, two (one per surrogate) also in 16-bit types."""
    return [make(config, kind, dtype) for config in CONFIGS for kind in KINDS
            for make in (forward_kernel, backward_kernel)
            for dtype in [torch.float32] + (HALF_TYPES if config in HALF_CONFIGS else [])]


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
        from cupy_launchs.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # CuPy or its NVRTC library is missing
        pytest.skip(f'NVRTC is not available here: {e}')
    program = nvrtc.createProgram(''.join(k.source for k in all_kernels()), 'kernels.cu', [], [])
    try:
        nvrtc.compileProgram(program, ['-arch=compute_80'])
    except nvrtc.NVRTCError:
        pytest.fail(nvrtc.getProgramLog(program))


# ---------------------------------------------------------------- running the kernels

@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
    """All kernels compiled for the CPU once (one g++ run)."""
    if shutil.which('g++') is None:
        pytest.skip('g++ is not on PATH: the kernels are not run through the CPU emulation here')
    emulator = Emulator(tmp_path_factory.mktemp('kernels'))
    emulator.compile(all_kernels() + [CONVERSION_TEST])
    return emulator


def _gpu_problem():
    if not torch.cuda.is_available():
        return 'real CuPy launches need a CUDA GPU, and torch sees none here (the emulated cases cover the kernels)'
    cupy_launch._cupy_problem.cache_clear()
    return cupy_launch._cupy_problem()


class Grid:
    """Where the kernels run (``device``) and the launches they made: ``[(kernel, {param: arg})]``."""

    def __init__(self, device, launch):
        self.device, self.launch, self.made = torch.device(device), launch, []

    def record(self, kernel, grid, block, args):
        assert grid[0] * block[0] >= args[[n for _, n in kernel.params].index('numel')] > (grid[0] - 1) * block[0]
        self.launch(kernel, grid, block, args)
        self.made.append((kernel, dict(zip((n for _, n in kernel.params), args))))

    def kinds(self):
        return [kernel.name.split('_')[3:5] for kernel, _ in self.made]  # e.g. ['ei', 'forward']


@pytest.fixture(params=['emulated', 'cuda'])
def grid(request, monkeypatch):
    """The kernels on the CPU through the emulator, or (case 'cuda') on a GPU through CuPy."""
    if request.param == 'emulated':
        grid = Grid('cpu', request.getfixturevalue('emulator').launch)
        monkeypatch.setattr(cupy_launch, 'require_cupy', lambda tensor: None)
    else:
        problem = _gpu_problem()
        if problem:
            (pytest.fail if REQUIRE_GPU else pytest.skip)(problem)
        grid = Grid('cuda', cupy_launch._launch)
    monkeypatch.setattr(cupy_launch, '_launch', grid.record)
    return grid


def stabilized(raw: torch.Tensor) -> torch.Tensor:
    """docs/method.md section 1's ``I_sh~`` of ``raw [T, N, ...]``: zeros -> the smallest positive value of the
    same (t, b) sample, or ``+inf`` where the sample has none."""
    flat = raw.flatten(2)
    lowest = flat.where(flat > 0, math.inf).amin(-1, keepdim=True)
    return flat.where(flat > 0, lowest).view_as(raw)


def currents(T, shape, seed, device='cpu'):
    """``(d, i_sh~, gain_e, bias)`` for ``[T, *shape]`` on ``device``, as an E-I layer makes them.

    ``d = I_EE - I_EI`` is a channel slice of a larger tensor (a strided view, as the kernels
    may be handed).  Half of the values, and those of even channels' ``g_E``, ``b_E``, are dyadic
    (exact in float32 throughout), and where all are, in half of the places, ``d`` is chosen
    so that ``I_int`` is exactly 1: the paper's neurons at rest land exactly on the threshold.
    ``i_sh`` has exact zeros and one silent sample (t=0, b=0) before the stabilization.
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
    d = y[:, :, :C]
    d[dyadic] = (randint(0, 12, *size) / 4)[dyadic]
    d -= torch.where(dyadic, randint(0, 4, *size) / 4, rand(*size))  # I_EE - I_EI
    raw = torch.where(dyadic, 2.0 ** randint(-1, 2, *size), rand(*size) + 0.1)
    zero = rand(*size) < 0.1
    zero[:, -1, 0] = False
    raw[zero] = 0.0
    raw[0, 0] = 0.0
    i_sh = stabilized(raw)
    per_channel = (C,) + (1,) * len(S)
    at_one = dyadic & even.view(per_channel) & (raw != 0) & (rand(*size) < 0.5)
    at_one[:, -1, 0] = True
    d[at_one] = ((1 - bias.view(per_channel)) * raw / gain_e.view(per_channel))[at_one]
    return (y.to(device)[:, :, :C], *(t.to(device) for t in (i_sh, gain_e, bias)))


def inputs_for(kind, T, shape, seed, device='cpu'):
    """The kernel's tensor inputs: the four of ``EICurrents`` ('ei'), or ``(x_seq,)`` ('plain'),
    the current an E-I layer integrates (with its values exactly at the threshold)."""
    ei = currents(T, shape, seed)
    if kind == 'ei':
        return currents(T, shape, seed, device)
    return (integrate(EICurrents(*ei), channel_dim=2).to(device),)


def lif(config: LIFConfig, **kwargs) -> neuron.LIFNode:
    """The spikingjelly LIFNode ``config`` describes, multi-step, backend 'torch'."""
    function = getattr(surrogate, SURROGATES[config.surrogate])(alpha=config.surrogate_alpha)
    return neuron.LIFNode(tau=config.tau, decay_input=config.decay_input, v_threshold=config.v_threshold,
                          v_reset=config.v_reset, detach_reset=config.detach_reset, surrogate_function=function,
                          step_mode='m', **kwargs)


def forward(how, config, inputs, v_init, store_v_seq):
    """``(spikes, v_seq or None, v_last)`` of the torch path ('torch') or the kernels ('kernel')."""
    if how == 'kernel':
        spikes, v_last, v_seq = fused(EICurrents(*inputs) if len(inputs) == 4 else inputs[0], v_init, config,
                                      store_v_seq, backend='cupy')
        return spikes, v_seq, v_last
    x_seq = integrate(EICurrents(*inputs), channel_dim=2) if len(inputs) == 4 else inputs[0]
    node = lif(config, store_v_seq=store_v_seq)
    if isinstance(v_init, torch.Tensor):
        node.v = v_init
    spikes = node(x_seq)
    return spikes, (node.v_seq if store_v_seq else None), node.v


def run(how, config, inputs, v_init, weights, store_v_seq):
    """Outputs and the gradients of ``inputs + (v_init,)`` (None where not a tensor) of the loss
    ``sum(spikes * w[0]) + sum(v_last * w[1]) (+ sum(v_seq * w[2]))``."""
    leaves = [t.detach().requires_grad_() for t in inputs]  # same memory layout as the inputs
    v0 = v_init.detach().requires_grad_() if isinstance(v_init, torch.Tensor) else v_init
    spikes, v_seq, v_last = forward(how, config, leaves, v0, store_v_seq)
    loss = spikes.mul(weights[0]).sum() + v_last.mul(weights[1]).sum()
    if store_v_seq:
        loss = loss + v_seq.mul(weights[2]).sum()
    loss.backward()
    grads = [t.grad for t in leaves] + [v0.grad if isinstance(v0, torch.Tensor) else None]
    outputs = [None if o is None else o.detach().cpu() for o in (spikes, v_seq, v_last)]
    return outputs, [None if g is None else g.cpu() for g in grads]


def assert_grads_close(got, want, rtol=1e-6):
    """Each gradient within ``rtol`` of the reference, relative to the element or to the tensor's scale."""
    for index, (g, w) in enumerate(zip(got, want)):
        assert (g is None) == (w is None), index
        if w is not None:
            assert g.dtype == w.dtype, index
            scale = w.abs().max().item()
            torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * scale, msg=lambda m: f'gradient {index}: {m}')


CASES = {'T1': (1, 'rest', False), 'T5-v_seq': (5, 'tensor', True), 'T16': (16, 'tensor', False),
         'T4-rest-v_seq': (4, 'rest', True)}


# every configuration, input kind and case on the conv shape; the linear shape (the E-I kernel's
# other indexing) for the E-I kernel in every case and for the plain kernel once
MATCH = [pytest.param(config, kind, shape, case, id=f'{config.surrogate}{i}-{kind}-{shape}-{case}')
         for i, config in enumerate(CONFIGS) for kind in KINDS for shape in SHAPES for case in CASES
         if (kind, shape) != ('plain', 'linear') or case == 'T5-v_seq']


@pytest.mark.parametrize('config, kind, shape, case', MATCH)
def test_kernels_match_the_torch_path(grid, config, kind, shape, case):
    """Spikes, v_seq and v_last equal; gradients of every input (and of v_init) close."""
    if not _compat.lif_node_charges_like_sj_ei(config.tau, config.decay_input, config.v_reset):
        pytest.skip(f"spikingjelly {_compat.SJ_VERSION}'s LIFNode charges V - V/tau + X, which rounds unlike "
                    f"the kernels' (and 0.0.0.0.14's) V * (1 - 1/tau) + X at tau = {config.tau}")
    T, v_start, store_v_seq = CASES[case]
    seed = T * 100 + CONFIGS.index(config) * 10 + len(SHAPES[shape])
    inputs = inputs_for(kind, T, SHAPES[shape], seed, grid.device)
    g = torch.Generator().manual_seed(seed + 1)
    v_init = (config.v_reset or 0.0) if v_start == 'rest' else torch.randn(SHAPES[shape], generator=g)
    weights = [torch.randn((T, *SHAPES[shape]), generator=g), torch.randn(SHAPES[shape], generator=g),
               torch.randn((T, *SHAPES[shape]), generator=g)]

    want, want_grads = run('torch', config, [t.cpu() for t in inputs], v_init, weights, store_v_seq)
    got, got_grads = run('kernel', config, inputs, v_init if v_start == 'rest' else v_init.to(grid.device),
                         [w.to(grid.device) for w in weights], store_v_seq)

    assert 0 < want[0].mean() < 1
    for name, a, b in zip(('spikes', 'v_seq', 'v_last'), got, want):
        assert (a is None) == (b is None) and (a is None or (a.dtype == torch.float32 and torch.equal(a, b))), name
    assert_grads_close(got_grads, want_grads)
    assert grid.kinds() == [[kind, 'forward'], [kind, 'backward']]
    if kind == 'ei':
        silent = inputs[1].cpu().isinf()
        assert silent[0, 0].all() and got_grads[0][silent].eq(0).all() and got_grads[1][silent].eq(0).all()
    if config == PAPER and v_start == 'rest':
        h_seq = grid.made[0][1]['h_seq']
        assert (h_seq == config.v_threshold).any(), 'no membrane potential landed on the threshold'


def test_membrane_exactly_at_threshold_fires_in_both(grid):
    """H = 0.5 * 0 + 1 / 1 = 1.0 exactly: both fire, and again after the soft reset to 0."""
    inputs = (torch.ones(3, 1, 2), torch.ones(3, 1, 2), torch.ones(2), torch.zeros(2))
    weights = [torch.ones(3, 1, 2), torch.ones(1, 2)]
    (spikes, _, v_last), _ = run('torch', PAPER, inputs, 0.0, weights, False)
    (k_spikes, _, k_v_last), _ = run('kernel', PAPER, [t.to(grid.device) for t in inputs], 0.0,
                                     [w.to(grid.device) for w in weights], False)
    assert spikes.eq(1).all() and k_spikes.eq(1).all() and k_v_last.eq(0).all() and v_last.eq(0).all()
    assert grid.made[0][1]['h_seq'].eq(1.0).all()


@pytest.mark.parametrize('config', HALF_CONFIGS, ids=[c.surrogate for c in HALF_CONFIGS])
@pytest.mark.parametrize('kind, dtype', [('ei', 'float16'), ('ei', 'bfloat16'), ('ei', 'mixed'),
                                         ('plain', 'float16'), ('plain', 'bfloat16')])
def test_16_bit_currents_are_integrated_in_float32(grid, config, kind, dtype):
    """Under autocast the currents come as float16/bfloat16: the kernels read them in place and
    compute in float32, so spikes and potentials are those of the float32 path on the same values,
    returned in float32; the currents' gradients come back in their own dtype.  Mixed dtypes are
    promoted (one float32 current: the float32 kernel)."""
    T, shape = 4, SHAPES['conv']
    low = getattr(torch, dtype) if dtype != 'mixed' else torch.float16
    inputs = inputs_for(kind, T, shape, seed=7, device=grid.device)
    inputs = [t.to(low) if t.dim() > 1 and (dtype != 'mixed' or i < 1) else t for i, t in enumerate(inputs)]
    g = torch.Generator().manual_seed(8)
    v_init = torch.randn(shape, generator=g)
    weights = [torch.randn((T, *shape), generator=g), torch.randn(shape, generator=g)]
    want, want_grads = run('torch', config, [t.float().cpu() for t in inputs], v_init, weights, False)
    got, got_grads = run('kernel', config, inputs, v_init.to(grid.device), [w.to(grid.device) for w in weights],
                         False)
    storage = torch.float32 if dtype == 'mixed' else low
    tag = {torch.float32: 'f32', torch.float16: 'f16', torch.bfloat16: 'bf16'}[storage]
    assert f'_{kind}_forward_{tag}_' in grid.made[0][0].name
    assert got[0].dtype == got[2].dtype == torch.float32
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    for index, (got_grad, want_grad, leaf) in enumerate(zip(got_grads, want_grads, list(inputs) + [v_init])):
        eps = torch.finfo(leaf.dtype).eps if leaf.dtype != torch.float32 else 1e-5
        assert got_grad.dtype == leaf.dtype, index
        torch.testing.assert_close(got_grad, want_grad.to(leaf.dtype), rtol=eps, atol=eps * want_grad.abs().max().item(),
                                   msg=lambda m: f'gradient {index}: {m}')


LAYOUTS = {'n-major': lambda t: t.transpose(0, 1).contiguous().transpose(0, 1),
           'every-other-element': lambda t: torch.stack([t, t + 1], dim=-1)[..., 0]}


@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('kind', KINDS)
def test_layouts_the_kernels_cannot_index_are_copied(grid, kind, layout):
    """Samples (time steps, for 'plain') must be runs of contiguous features: other layouts are
    copied first, and give the same results."""
    inputs = inputs_for(kind, 4, SHAPES['linear'], seed=3, device=grid.device)
    strided = [LAYOUTS[layout](t) if t.dim() > 1 else t for t in inputs]
    assert all(torch.equal(a, b) and (a.dim() == 1 or not a.is_contiguous()) for a, b in zip(strided, inputs))
    weights = [torch.ones(4, 2, 10, device=grid.device), torch.zeros(2, 10, device=grid.device)]
    want, want_grads = run('kernel', PAPER, inputs, 0.0, weights, False)
    got, got_grads = run('kernel', PAPER, strided, 0.0, weights, False)
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    assert_grads_close(got_grads, want_grads, rtol=0)


@pytest.mark.parametrize('kind', KINDS)
def test_inference_saves_nothing_and_fires_like_spikingjelly_eval(grid, kind):
    """Without autograd the forward kernel writes no saved sequences (placeholders of one element),
    and fires as spikingjelly's evaluation path (its TorchScript loop) does."""
    config = CONFIGS[1]
    inputs = inputs_for(kind, 6, SHAPES['conv'], seed=11, device=grid.device)
    v_init = torch.randn(SHAPES['conv'], generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        spikes, v_seq, v_last = forward('kernel', config, inputs, v_init.to(grid.device), True)
        node = lif(config, store_v_seq=True).eval()
        node.v = v_init.clone()
        x_seq = integrate(EICurrents(*(t.cpu() for t in inputs)), channel_dim=2) if kind == 'ei' else inputs[0].cpu()
        want = node(x_seq)
    saved = [name for name in ('h_seq', 'n_seq') if name in grid.made[0][1]]
    assert saved and all(grid.made[0][1][name].numel() == 1 for name in saved)
    assert torch.equal(spikes.cpu(), want) and torch.equal(v_seq.cpu(), node.v_seq) and torch.equal(v_last.cpu(), node.v)


def test_conversions_round_like_torch(grid):
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
    device = grid.device
    from_f16, from_bf16 = torch.empty(65536, device=device), torch.empty(65536, device=device)
    to_f16, to_bf16 = (torch.empty(len(x), dtype=torch.int16, device=device) for _ in range(2))
    grid.launch(CONVERSION_TEST, (math.ceil(len(x) / BLOCK),), (BLOCK,),
                [bits.to(device), from_f16, from_bf16, x.to(device), to_f16, to_bf16, len(x)])
    for got, dtype in ((from_f16.cpu(), torch.float16), (from_bf16.cpu(), torch.bfloat16)):
        want = values[dtype]
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~want.isnan()], want[~want.isnan()])
    for got, dtype in ((to_f16.cpu(), torch.float16), (to_bf16.cpu(), torch.bfloat16)):
        want = x.to(dtype)
        assert torch.equal(got.view(dtype).isnan(), want.isnan())
        assert torch.equal(got[~want.isnan()], want.view(torch.int16)[~want.isnan()])


def test_emulator_catches_a_thread_writing_past_the_end(emulator):
    """The harness can fail: without its bounds check, the last block's surplus threads write past the tensors."""
    kernel = forward_kernel(PAPER, 'plain')
    name = kernel.name + '_unchecked'
    unchecked = Kernel(name, kernel.source.replace('if (i >= numel) return;', '').replace(kernel.name, name),
                       kernel.params)
    x = torch.rand(1, 20)
    args = [x, 20, torch.zeros(1), 0, torch.empty(1, 20), torch.empty(1, 20), 1, torch.empty(1, 20), 1,
            torch.empty(20), 1, 20]
    emulator.launch(kernel, (1,), (BLOCK,), args)
    with pytest.raises(AssertionError, match='wrote outside'):
        emulator.launch(unchecked, (1,), (BLOCK,), args)


class TorchStream:
    """A torch CUDA stream as ``_launch`` sees it: its raw pointer and device; ``protocol`` adds the
    CUDA stream protocol (``__cuda_stream__``), which some torch releases lack."""

    def __init__(self, device, protocol):
        self.cuda_stream, self.device = 0x5EED, device
        if protocol:
            self.__cuda_stream__ = lambda: (0, self.cuda_stream)


@pytest.mark.parametrize('protocol', [True, False], ids=['__cuda_stream__', 'raw pointer'])
def test_launch_hands_cupy_pointers_and_typed_integers_on_the_torch_stream(monkeypatch, protocol):
    """``_launch`` against a stand-in CuPy (14: both ways to wrap a stream) that records what it is given
    (the real one is run by the 'cuda' cases): the torch stream goes through ``Stream.from_external``
    where it speaks the CUDA stream protocol, else as its raw pointer through ``ExternalStream``."""
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

    class ExternalStream(Context):
        def __init__(self, ptr, device_id):
            warnings.warn('ExternalStream is deprecated', DeprecationWarning)  # as CuPy 14 says
            super().__init__(ptr, device_id)

    class RawKernel:
        def __init__(self, source, name):
            calls.append(('compile', name, source))

        def __call__(self, grid, block, args):
            calls.append(('launch', grid, block, args))

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=type('Device', (Context,), {}), Stream=Stream,
                                                            ExternalStream=ExternalStream), RawKernel=RawKernel)
    monkeypatch.setitem(sys.modules, 'cupy', fake)
    torch_stream = TorchStream(torch.device('cuda', 1), protocol)
    monkeypatch.setattr(torch.cuda, 'current_stream', lambda device: torch_stream)
    cupy_launch._cupy_kernel.cache_clear()
    kernel = backward_kernel(PAPER)
    tensors = [torch.zeros(3) for _ in kernel.params]
    args = [3 if ctype in ('int', 'long long') else t for (ctype, _), t in zip(kernel.params, tensors)]
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the deprecation of the fallback is not the user's to act on
        cupy_launch._launch(kernel, (1,), (BLOCK,), args)
    cupy_launch._cupy_kernel.cache_clear()
    wrapper = 'Stream' if protocol else 'ExternalStream'
    assert [c[:2] for c in calls] == [('enter', 'Device'), ('enter', wrapper), ('compile', kernel.name),
                                      ('launch', (1,)), ('exit', wrapper), ('exit', 'Device')]
    assert calls[1][2] == ((torch_stream,) if protocol else (0x5EED, 1)) and calls[2][2] == kernel.source
    for (ctype, name), value, arg in zip(kernel.params, calls[3][3], args):
        if '*' in ctype:
            assert type(value) is np.uint64 and value == arg.data_ptr(), name
        else:
            assert type(value) is {'int': np.int32, 'long long': np.int64}[ctype] and value == 3, name


def test_a_cupy_before_14_takes_the_raw_pointer():
    """CuPy 13 has no ``Stream.from_external``: even a torch stream with the protocol goes by pointer."""
    made = []
    cupy13 = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Stream=object, ExternalStream=lambda ptr, device_id: made.append((ptr, device_id)) or 'external'))
    assert cupy_launch.cupy_stream(cupy13, TorchStream(torch.device('cuda', 0), protocol=True)) == 'external'
    assert made == [(0x5EED, 0)]


# ---------------------------------------------------------------- configuration

@pytest.mark.parametrize('name, key, alpha', [('Sigmoid', 'sigmoid', 5.0), ('ATan', 'atan', 3.0)])
def test_config_of_a_spikingjelly_node(name, key, alpha):
    node = neuron.LIFNode(tau=3.0, decay_input=True, v_threshold=0.5, v_reset=0.0, detach_reset=False,
                          surrogate_function=getattr(surrogate, name)(alpha=alpha))
    assert LIFConfig.of(node) == LIFConfig(3.0, 0.5, 0.0, True, False, key, alpha)
    assert LIFConfig.of(neuron.LIFNode(surrogate_function=getattr(surrogate, name)())).surrogate_alpha == \
        getattr(surrogate, name)().alpha


def test_other_surrogates_are_one_clear_error():
    with pytest.raises(ValueError, match=r"LIFNode: sj_ei's fused LIF supports the surrogates surrogate.Sigmoid and "
                                         r"surrogate.ATan with spiking=True, got PiecewiseQuadratic\(.*\); use one"):
        LIFConfig.of(neuron.LIFNode(surrogate_function=surrogate.PiecewiseQuadratic()))
    with pytest.raises(ValueError, match=r"Sigmoid\(alpha=4.0, spiking=False\)"):
        LIFConfig.of(neuron.LIFNode(surrogate_function=surrogate.Sigmoid(spiking=False)))
    with pytest.raises(ValueError, match=r"supports the surrogates 'sigmoid', 'atan' .* got 'erf'"):
        LIFConfig(surrogate='erf')
    with pytest.raises(ValueError, match='tau > 0'):
        LIFConfig(tau=0.0)


# ---------------------------------------------------------------- errors a user can cause

def test_cupy_without_a_gpu_is_one_clear_error():
    x = torch.rand(2, 1, 3)
    if torch.cuda.is_available():
        pytest.skip('this machine has a CUDA GPU')
    with pytest.raises(cupy_launch.CupyUnavailableError,
                       match=r"backend 'cupy' needs CUDA tensors, but this machine has no CUDA GPU; "
                             r"use backend='torch' .* or move the network and its input to a CUDA device"):
        fused(EICurrents(x, x, torch.ones(3), torch.zeros(3)), 0.0, PAPER, backend='cupy')
    with pytest.raises(cupy_launch.CupyUnavailableError, match="backend 'cupy' needs CUDA tensors"):
        fused(x, 0.0, PAPER, backend='cupy')


def test_cupy_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'cupy', None)  # import cupy raises ImportError
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    cupy_launch._cupy_problem.cache_clear()
    cuda_tensor = types.SimpleNamespace(is_cuda=True, device=torch.device('cuda', 0))
    try:
        with pytest.raises(cupy_launch.CupyUnavailableError,
                           match=r"needs CuPy.*pip install cupy-cuda13x \(or sj_ei\[cupy-cuda13x\]\).*'torch'"):
            cupy_launch.require_cupy(cuda_tensor)
    finally:
        cupy_launch._cupy_problem.cache_clear()


@pytest.mark.parametrize('cuda, hint', [
    ('12.8', 'pip install cupy-cuda12x (or sj_ei[cupy-cuda12x]), the CuPy for the CUDA 12.8 of this torch'),
    ('13.0', 'pip install cupy-cuda13x (or sj_ei[cupy-cuda13x]), the CuPy for the CUDA 13.0 of this torch'),
    ('11.8', 'pip install cupy-cuda11x, the CuPy for the CUDA 11.8 of this torch'),
    (None, 'cupy-cuda12x for CUDA 12, cupy-cuda13x for CUDA 13'),
])
def test_the_install_hint_names_the_cupy_of_torchs_cuda(monkeypatch, cuda, hint):
    monkeypatch.setattr(torch.version, 'cuda', cuda)
    assert hint in cupy_launch.install_hint()


def test_set_backend_without_cupy_names_the_cupy_of_torchs_cuda(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'cupy' else find_spec(name, *a))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.version, 'cuda', '12.6')
    with pytest.raises(backends.BackendError, match=r"needs CuPy, which is not installed: pip install cupy-cuda12x "
                                                    r"\(or sj_ei\[cupy-cuda12x\]\).*or use backend 'torch'"):
        backends.set_backend(torch.nn.Linear(2, 2), 'cupy')


def test_every_extra_the_hint_names_exists_and_installs_that_cupy(monkeypatch):
    """setup.cfg's extras: one per CuPy wheel (its own name), ``cupy`` the CUDA 12 one as before, and the
    test extra (what CI installs) with the CUDA 12 one."""
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parents[1] / 'setup.cfg')
    extras = {name: value.split() for name, value in cfg['options.extras_require'].items()}
    assert extras['cupy-cuda12x'] == ['cupy-cuda12x'] and extras['cupy-cuda13x'] == ['cupy-cuda13x']
    assert extras['cupy'] == ['cupy-cuda12x'] and 'cupy-cuda12x' in extras['test']
    for major in ('12', '13'):
        monkeypatch.setattr(torch.version, 'cuda', f'{major}.0')
        named = re.search(r'sj_ei\[([\w-]+)\]', cupy_launch.install_hint()).group(1)
        assert extras[named] == [f'cupy-cuda{major}x']


def test_bad_arguments_are_one_clear_error(grid):
    d, i_sh, gain_e, bias = currents(2, SHAPES['linear'], seed=0, device=grid.device)
    with pytest.raises(ValueError, match=r'gain_e and bias must have the shape \[C\] = \[10\]'):
        fused(EICurrents(d, i_sh, gain_e[:3], bias), 0.0, PAPER, backend='cupy')
    with pytest.raises(ValueError, match=r'd and i_sh must both have the shape \[T, N, C, \*S\]'):
        fused(EICurrents(d, i_sh[:1], gain_e, bias), 0.0, PAPER, backend='cupy')
    with pytest.raises(ValueError, match=r'v_init of shape \(5, 10\) does not fit .*reset_net'):
        fused(EICurrents(d, i_sh, gain_e, bias), torch.zeros(5, 10, device=grid.device), PAPER, backend='cupy')
    with pytest.raises(TypeError, match="use backend='torch' for other dtypes"):
        fused(d.double(), 0.0, PAPER, backend='cupy')
    with pytest.raises(TypeError, match=r'config must be an sj_ei.lif.LIFConfig \(e.g. LIFConfig.of\(node\)\)'):
        fused(d, 0.0, {'tau': 2.0}, backend='cupy')
    with pytest.raises(ValueError, match=r'x_seq must have the shape \[T, N, \*F\]'):
        fused(d[0, 0, 0], 0.0, PAPER, backend='cupy')
    assert grid.made == []

