"""The fused CuPy backend equals the torch backend (I_int in torch, then spikingjelly's
LIFNode): its generated kernels compile for the GPU, and on the CPU, run through an
emulation of the CUDA thread grid, give the same spikes exactly and the same gradients."""
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import neuron, surrogate

import sj_ei
from sj_ei import cupy_backend
from sj_ei.cupy_backend import BACKWARD_PARAMS, BLOCK, FORWARD_PARAMS, Options

from cuda_emulation import EmulatedKernel

PAPER = Options(tau=2.0, v_threshold=1.0, detach_reset=True, surrogate_alpha=4.0)
VARIANTS = [PAPER, Options(3.0, 0.5, False, 2.0), Options(2.0, 1.0, True, 4.0, decay_input=True, v_reset=0.0),
            Options(2.5, 1.0, False, 4.0, decay_input=False, v_reset=-0.25)]


@pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc is not installed on this machine')
@pytest.mark.parametrize('arch', ['sm_80', 'sm_90'])
def test_every_generated_kernel_compiles_with_nvcc(tmp_path, arch):
    for options in VARIANTS:
        for name, source in (cupy_backend.forward_source(options), cupy_backend.backward_source(options)):
            path = tmp_path / f'{name}.cu'
            path.write_text(source)
            result = subprocess.run(['nvcc', '-ptx', f'-arch={arch}', str(path), '-o', str(tmp_path / 'k.ptx')],
                                    capture_output=True, text=True)
            assert result.returncode == 0, result.stderr


@pytest.fixture(scope='module')
def emulated(tmp_path_factory):
    """The forward and backward kernels of each variant, compiled for the CPU once."""
    workdir = tmp_path_factory.mktemp('kernels')
    return {options.key(): (EmulatedKernel(*cupy_backend.forward_source(options), FORWARD_PARAMS, workdir),
                            EmulatedKernel(*cupy_backend.backward_source(options), BACKWARD_PARAMS, workdir))
            for options in VARIANTS}


def torch_backend(i_ee, i_ei, i_sh, gain_e, bias, grad_spike, options):
    """The specification: sj_ei's integration in torch, then spikingjelly's LIFNode (torch backend)."""
    leaves = [t.clone().requires_grad_() for t in (i_ee, i_ei, i_sh, gain_e, bias)]
    ee, ei, sh, g, b = leaves
    shape = (-1,) + (1,) * (ee.dim() - 3)
    i_int = (ee - ei).mul(g.view(shape)).div(sh).add(b.view(shape))
    lif = neuron.LIFNode(tau=options.tau, decay_input=options.decay_input, v_threshold=options.v_threshold,
                         v_reset=options.v_reset, detach_reset=options.detach_reset,
                         surrogate_function=surrogate.Sigmoid(alpha=options.alpha), step_mode='m')
    spikes = lif(i_int)
    spikes.backward(grad_spike)
    return spikes.detach(), lif.v.detach(), [t.grad for t in leaves]


def emulated_backend(kernels, options, i_ee, i_ei, i_sh, gain_e, bias, grad_spike):
    forward, backward = kernels
    T, numel, channels = i_ee.shape[0], i_ee[0].numel(), i_ee.shape[2]
    inner = numel // (i_ee.shape[1] * channels)
    a = lambda t: np.ascontiguousarray(t.numpy(), dtype=np.float32)
    ee, ei, sh, g, b = map(a, (i_ee, i_ei, i_sh, gain_e, bias))
    spike, h_seq, n_seq = (np.empty_like(ee) for _ in range(3))
    v_last = np.empty(numel, np.float32)
    grid = math.ceil(numel / BLOCK)
    v_init = np.full(numel, options.v_reset or 0.0, np.float32)  # spikingjelly starts at v_reset (or 0)
    forward(grid, BLOCK, ee, ei, sh, g, b, v_init, spike, h_seq, n_seq, v_last,
            numel, T, channels, inner)
    grad_ee, grad_sh = np.empty_like(ee), np.empty_like(ee)
    grad_v, grad_g, grad_b = (np.empty(numel, np.float32) for _ in range(3))
    backward(grid, BLOCK, a(grad_spike), np.zeros(numel, np.float32), h_seq, n_seq, sh, g, grad_ee, grad_sh,
             grad_v, grad_g, grad_b, numel, T, channels, inner)
    per_channel = lambda t: torch.from_numpy(t).view(-1, channels, inner).sum((0, 2))
    grads = [torch.from_numpy(grad_ee), -torch.from_numpy(grad_ee), torch.from_numpy(grad_sh),
             per_channel(grad_g), per_channel(grad_b)]
    return torch.from_numpy(spike), torch.from_numpy(v_last).view(i_ee.shape[1:]), grads


def currents(T, shape, seed):
    """Random E-I currents ``[T, *shape]`` with zeros replaced as stabilization would (some +inf),
    and some neurons driven exactly to threshold (dyadic values: 1.5 - 0.5 = 1 over 1)."""
    g = torch.Generator().manual_seed(seed)
    i_ee = torch.rand((T, *shape), generator=g) * 3
    i_ei = torch.rand((T, *shape), generator=g)
    i_sh = torch.rand((T, *shape), generator=g) + 0.25
    at_threshold = torch.rand((T, *shape), generator=g) < 0.2
    i_ee[at_threshold], i_ei[at_threshold], i_sh[at_threshold] = 1.5, 0.5, 1.0
    i_sh[:, 0] = math.inf                                    # a silent sample: I_int = b_E
    channels = shape[1]
    gain_e = torch.ones(channels)
    gain_e[1::2] = torch.rand(channels // 2, generator=g) + 0.5
    bias = torch.zeros(channels)
    bias[1::2] = torch.rand(channels // 2, generator=g) - 0.5
    return i_ee, i_ei, i_sh, gain_e, bias, torch.randn((T, *shape), generator=g)


@pytest.mark.parametrize('T', [1, 4, 16])
@pytest.mark.parametrize('shape', [(3, 6, 5, 7), (2, 10)], ids=['conv', 'linear'])
@pytest.mark.parametrize('variant', range(len(VARIANTS)))
def test_emulated_kernels_match_the_torch_backend(emulated, T, shape, variant):
    options = VARIANTS[variant]
    inputs = currents(T, shape, seed=T + variant)
    assert inputs[0][0].numel() % BLOCK != 0
    spikes, v_last, grads = torch_backend(*inputs, options)
    k_spikes, k_v_last, k_grads = emulated_backend(emulated[options.key()], options, *inputs)
    if options is PAPER:
        assert 0 < spikes.mean() < 1 and (spikes[:, 0, 0::2] == 0).all()  # silent sample, b_E = 0
    assert torch.equal(k_spikes, spikes)
    torch.testing.assert_close(k_v_last, v_last, rtol=1e-6, atol=1e-6)
    for name, k_grad, grad in zip(('i_ee', 'i_ei', 'i_sh', 'gain_e', 'bias'), k_grads, grads):
        torch.testing.assert_close(k_grad, grad, rtol=1e-5, atol=1e-5, msg=name)


def test_membrane_exactly_at_threshold_fires_in_both():
    i_ee, i_ei, i_sh = torch.full((1, 1, 2), 1.5), torch.full((1, 1, 2), 0.5), torch.ones(1, 1, 2)
    spikes, _, _ = torch_backend(i_ee, i_ei, i_sh, torch.ones(2), torch.zeros(2), torch.ones(1, 1, 2), PAPER)
    assert spikes.flatten().tolist() == [1.0, 1.0]


def test_cupy_without_a_gpu_is_one_clear_error():
    x = torch.rand(2, 1, 3)
    with pytest.raises(cupy_backend.CupyUnavailableError, match="backend 'cupy' runs on CUDA tensors.*set_backend"):
        cupy_backend.fused_ei_lif(x, x, x, torch.ones(3), torch.zeros(3), 0.0, tau=2.0, v_threshold=1.0,
                                  detach_reset=True, surrogate_alpha=4.0)
    block = sj_ei.EIBlock(sj_ei.EIConv2d(2, 8, 3, padding=1, step_mode='m'), sj_ei.e_population())
    from spikingjelly.activation_based import functional
    functional.set_backend(block, 'cupy')
    with pytest.raises(cupy_backend.CupyUnavailableError, match='move the network'):
        block((torch.rand(2, 2, 2, 8, 8) < 0.3).float())
