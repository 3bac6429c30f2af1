"""sj_ei on both spikingjelly releases (0.0.0.0.14 and 2.x): what ``sj_ei._compat`` promises,
checked on whichever release this environment has (CI runs the suite once on each)."""
import importlib.metadata
import importlib.util
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate

from sj_ei import _compat

needs_0_0_0_0_14 = pytest.mark.skipif(_compat.SJ_MAJOR != 0, reason='spikingjelly 0.0.0.0.14 only')
needs_2 = pytest.mark.skipif(_compat.SJ_MAJOR != 2, reason='spikingjelly 2 only')


class FusedLIF(_compat.LIFNode):
    """A LIF node with its own multi-step path and a 'cupy' backend in step mode 'm', the way
    sj_ei's fused E-I neuron is written: ``[T, B, n] -> spikes [T, B, n]``."""

    @property
    def supported_backends(self):
        return ('torch', 'cupy') if self.step_mode == 'm' else ('torch',)

    def multi_step_forward(self, x_seq):
        self.steps_seen = x_seq.shape[0]
        return torch.stack([self.single_step_forward(x) for x in x_seq])


def paper_lif(**overrides):
    """spikingjelly's own LIFNode with the paper's E-population settings."""
    settings = dict(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=None,
                    surrogate_function=surrogate.Sigmoid(), detach_reset=True, step_mode='m')
    return neuron.LIFNode(**{**settings, **overrides})


class SigmoidSpike(torch.autograd.Function):
    """``h >= 0`` forward, ``alpha * sigmoid(alpha h) (1 - sigmoid(alpha h))`` backward."""

    @staticmethod
    def forward(ctx, h, alpha):
        ctx.save_for_backward(h)
        ctx.alpha = alpha
        return (h >= 0).to(h)

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.alpha * h)
        return grad * ctx.alpha * s * (1 - s), None


def reference_lif(x_seq, alpha=4.0):
    """The paper's LIF, written out: ``H = V - V / 2 + X``, spike ``H >= 1`` with the sigmoid
    surrogate, soft reset without gradient. ``[T, ...] -> (spikes [T, ...], V [...])``."""
    v, spikes = torch.zeros_like(x_seq[0]), []
    for x in x_seq:
        h = v - v / 2 + x
        spike = SigmoidSpike.apply(h - 1, alpha)
        v = h - spike.detach()
        spikes.append(spike)
    return torch.stack(spikes), v


def bursting_currents(T=8, batch=4, n=16, seed=0):
    """Input currents ``[T, B, n]`` like an E-I layer's: neurons with a steady drive around the
    threshold, some in bursts that start and stop, the rest quiet."""
    g = torch.Generator().manual_seed(seed)
    drive = torch.rand(batch, n, generator=g) * 1.2
    on = (torch.arange(T)[:, None, None] // 3 + torch.randint(0, 2, (1, batch, n), generator=g)) % 2
    return (drive * on + 0.05 * torch.randn(T, batch, n, generator=g)).requires_grad_()


def test_the_version_comes_from_the_installed_package():
    assert _compat.SJ_VERSION == importlib.metadata.version('spikingjelly')
    assert _compat.SJ_MAJOR in (0, 2)
    assert _compat.HAS_CUPY_BACKEND == hasattr(functional, 'set_backend')


def test_spikingjelly_lif_gives_the_papers_spikes_and_gradients():
    """The E population's dynamics are the same on both releases: spikingjelly's LIFNode
    equals the LIF written out, in spikes, last potential and input gradients.  Bit for bit at
    the paper's tau = 2 only: 0.0.0.0.14 charges ``V * (1 - 1/tau) + X``, 2.x ``V - V/tau + X``,
    which round differently when ``1/tau`` is not a power of two."""
    x = bursting_currents()
    lif = paper_lif()
    spikes = lif(x)
    grad_out = torch.linspace(-1, 1, spikes.numel()).view_as(spikes)
    (grad_sj,) = torch.autograd.grad((spikes * grad_out).sum(), x)
    ref_spikes, ref_v = reference_lif(x)
    (grad_ref,) = torch.autograd.grad((ref_spikes * grad_out).sum(), x)
    assert 0.1 < spikes.mean() < 0.6
    torch.testing.assert_close(spikes, ref_spikes, rtol=0, atol=0)
    torch.testing.assert_close(lif.v, ref_v.detach())
    torch.testing.assert_close(grad_sj, grad_ref)


def test_an_sj_ei_neuron_takes_a_backend_and_runs_its_own_multi_step_path():
    """``_compat.LIFNode`` takes ``backend=`` and validates it on both releases; a subclass's
    own ``multi_step_forward`` runs in step mode 'm' and its state resets with reset_net."""
    node = FusedLIF(tau=2.0, decay_input=False, v_reset=None, detach_reset=True, step_mode='m', backend='cupy')
    assert node.backend == 'cupy' and 'backend=cupy' in repr(node)
    node.backend = 'torch'
    x = bursting_currents()
    spikes = node(x)
    assert node.steps_seen == x.shape[0]
    torch.testing.assert_close(spikes, paper_lif()(x), rtol=0, atol=0)
    functional.reset_net(node)
    assert node.v == 0.0
    node.step_mode = 's'
    with pytest.raises(NotImplementedError, match='cupy'):
        node.backend = 'cupy'
    assert node.backend == 'torch'


@pytest.mark.parametrize('backend', ['lava', 'CuPy', None])
def test_set_backend_names_the_backends_it_knows(backend):
    net = torch.nn.Sequential(layer.Linear(4, 4, step_mode='m'), paper_lif())
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'cupy'\)"):
        _compat.set_backend(net, backend)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error on a machine without a GPU')
def test_set_backend_cupy_without_a_gpu_is_one_clear_error():
    net = torch.nn.Sequential(layer.Linear(4, 4, step_mode='m'), FusedLIF(step_mode='m'))
    with pytest.raises(_compat.BackendError, match="backend 'cupy' runs CuPy kernels on a CUDA GPU.*use backend 'torch'"):
        _compat.set_backend(net, 'cupy')
    assert net[1].backend == 'torch'


@pytest.fixture
def a_gpu_machine(monkeypatch):
    """The machine as set_backend sees it with a CUDA GPU and CuPy (set_backend only selects;
    nothing runs on the GPU here)."""
    if importlib.util.find_spec('cupy') is None:
        pytest.skip('CuPy is not installed')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)


def test_set_backend_switches_sj_ei_neurons_and_back(a_gpu_machine):
    net = torch.nn.Sequential(layer.Linear(4, 4, step_mode='m'), FusedLIF(step_mode='m'),
                              layer.Linear(4, 4, step_mode='m'), FusedLIF(step_mode='m'))
    _compat.set_backend(net, 'cupy')
    assert [net[1].backend, net[3].backend] == ['cupy', 'cupy']
    _compat.set_backend(net, 'torch')
    assert [net[1].backend, net[3].backend] == ['torch', 'torch']


@needs_0_0_0_0_14
def test_set_backend_on_0_0_0_0_14_also_switches_spikingjellys_lif_nodes(a_gpu_machine):
    net = torch.nn.Sequential(layer.Linear(4, 4, step_mode='m'), paper_lif(), FusedLIF(step_mode='m'))
    _compat.set_backend(net, 'cupy')
    assert [net[1].backend, net[2].backend] == ['cupy', 'cupy']


@needs_2
def test_set_backend_cupy_on_2_refuses_spikingjellys_own_neurons_and_changes_nothing(a_gpu_machine):
    net = torch.nn.Sequential(layer.Linear(4, 4, step_mode='m'), FusedLIF(step_mode='m'),
                              layer.Linear(4, 4, step_mode='m'), paper_lif(), FusedLIF(step_mode='s'))
    with pytest.raises(_compat.BackendError, match=r"'3' \(spikingjelly's LIFNode: spikingjelly 2 has no CuPy "
                                                   r"backend\), '4' \(FusedLIF in step_mode 's' supports \('torch',\)\)"):
        _compat.set_backend(net, 'cupy')
    assert net[1].backend == 'torch'
    _compat.set_backend(net, 'torch')


@needs_2
def test_spikingjelly_2_has_no_cupy_backend_of_its_own():
    """What sj_ei adapts to on 2.x (checked against the installed wheel)."""
    from spikingjelly.activation_based import base
    assert not hasattr(functional, 'set_backend')
    assert importlib.util.find_spec('spikingjelly.activation_based.auto_cuda') is None
    assert not hasattr(base.MemoryModule, 'backend')
    with pytest.raises(TypeError, match='backend'):
        neuron.LIFNode(backend='torch')


# ---------------------------------------------------------------- import hygiene

def test_importing_sj_ei_installs_no_warnings_filter():
    """Users' warnings are left alone: no module of sj_ei or train calls warnings.filterwarnings
    or warnings.simplefilter while being imported (spikingjelly and torch may)."""
    probe = (
        "import sys, warnings\n"
        "callers = []\n"
        "def recording(real):\n"
        "    def call(*args, **kwargs):\n"
        "        callers.append(sys._getframe(1).f_globals.get('__name__', '?'))\n"
        "        return real(*args, **kwargs)\n"
        "    return call\n"
        "warnings.filterwarnings = recording(warnings.filterwarnings)\n"
        "warnings.simplefilter = recording(warnings.simplefilter)\n"
        "import sj_ei, sj_ei.benchmark, sj_ei.datasets, train.classify\n"
        "print(sorted({c for c in callers if c.split('.')[0] in ('sj_ei', 'train')}))\n")
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'


def test_importing_sj_ei_leaves_numpy_as_it_is():
    """numpy 2 has no ``np.int``, and sj_ei does not add it back (only spikingjelly 0.0.0.0.14's
    CuPy launcher sees the alias, below)."""
    import sj_ei  # noqa: F401
    if np.lib.NumpyVersion(np.__version__) >= '1.24.0':
        assert not hasattr(np, 'int')


class FakeCupyScalar:
    """Stands in for the ``cupy.ndarray`` scalars spikingjelly's CuPy LIF launch passes
    (none can be made without a GPU)."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


@needs_0_0_0_0_14
def test_spikingjelly_cupy_lif_launch_check_runs_on_numpy_2(monkeypatch):
    """spikingjelly 0.0.0.0.14 checks its CuPy LIF kernels' integer arguments against ``np.int``
    before every launch: with plain numpy 2 that raises, with the view sj_ei gives it, it passes."""
    from spikingjelly.activation_based.auto_cuda import base, neuron_kernel
    monkeypatch.setattr(base, 'cupy', types.SimpleNamespace(ndarray=FakeCupyScalar))
    kernel = neuron_kernel.LIFNodeFPTTKernel(decay_input=False, hard_reset=False, dtype='float')
    arguments = {'numel': FakeCupyScalar(np.int64), 'v_th': FakeCupyScalar(np.float32)}
    kernel.check_ctypes(arguments)
    if np.lib.NumpyVersion(np.__version__) >= '1.24.0':
        monkeypatch.setattr(base, 'np', np)
        with pytest.raises(AttributeError, match="has no attribute 'int'"):
            kernel.check_ctypes(arguments)
