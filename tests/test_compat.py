"""sj_ei on both spikingjelly releases (0.0.0.0.14 and 2.x): what ``sj_ei._compat`` promises,
checked on whichever release this environment has (CI runs the suite once on each)."""
import copy
import importlib.metadata
import importlib.util
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, layer, monitor, neuron, surrogate

from sj_ei import _compat, backends

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
        backends.set_backend(net, backend)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error on a machine without a GPU')
def test_set_backend_cupy_without_a_gpu_is_one_clear_error():
    net = torch.nn.Sequential(layer.Linear(4, 4, step_mode='m'), FusedLIF(step_mode='m'))
    with pytest.raises(backends.BackendError,
                       match="backend 'cupy' runs CuPy kernels on a CUDA GPU.*use backend 'torch'"):
        backends.set_backend(net, 'cupy')
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
    backends.set_backend(net, 'cupy')
    assert [net[1].backend, net[3].backend] == ['cupy', 'cupy']
    backends.set_backend(net, 'torch')
    assert [net[1].backend, net[3].backend] == ['torch', 'torch']


@needs_0_0_0_0_14
def test_set_backend_on_0_0_0_0_14_also_switches_spikingjellys_lif_nodes(a_gpu_machine):
    net = torch.nn.Sequential(layer.Linear(4, 4, step_mode='m'), paper_lif(), FusedLIF(step_mode='m'))
    backends.set_backend(net, 'cupy')
    assert [net[1].backend, net[2].backend] == ['cupy', 'cupy']


@needs_2
def test_set_backend_cupy_on_2_refuses_spikingjellys_own_neurons_and_changes_nothing(a_gpu_machine):
    net = torch.nn.Sequential(layer.Linear(4, 4, step_mode='m'), FusedLIF(step_mode='m'),
                              layer.Linear(4, 4, step_mode='m'), paper_lif(), FusedLIF(step_mode='s'))
    with pytest.raises(backends.BackendError, match=r"'3' \(spikingjelly's LIFNode: spikingjelly 2 has no CuPy "
                                                    r"backend\), '4' \(FusedLIF in step_mode 's' supports "
                                                    r"\('torch',\)\)"):
        backends.set_backend(net, 'cupy')
    assert net[1].backend == 'torch'
    backends.set_backend(net, 'torch')


@needs_2
def test_spikingjelly_2_has_no_cupy_backend_of_its_own():
    """What sj_ei adapts to on 2.x (checked against the installed wheel)."""
    from spikingjelly.activation_based import base
    assert not hasattr(functional, 'set_backend')
    assert importlib.util.find_spec('spikingjelly.activation_based.auto_cuda') is None
    assert not hasattr(base.MemoryModule, 'backend')
    with pytest.raises(TypeError, match='backend'):
        neuron.LIFNode(backend='torch')


# ---------------------------------------------------------------- same numbers, README example

def moving_bars(T: int, B: int, size: int, seed: int = 0):
    """Event frames ``[T, B, 2, size, size]`` of a bright bar sweeping across the sensor and their
    labels ``[B]``, the direction: 0 right, 1 left, 2 down, 3 up.  ON events (channel 0) where the
    bar's leading edge brightens pixels, OFF events (channel 1) at its trailing edge, each sample
    starting at its own place and speed, and 2% sensor noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(B) % 4
    x = torch.zeros(T, B, 2, size, size)
    for b in range(B):
        start, speed = int(torch.randint(0, size, (), generator=g)), 1 + b % 3
        for t in range(T):
            lead = (start + speed * t) % size
            trail = (lead - 2) % size
            if labels[b] % 2:  # left / up: the edges run the other way
                lead, trail = size - 1 - lead, size - 1 - trail
            if labels[b] < 2:  # a vertical bar moving sideways
                x[t, b, 0, 1:-1, lead], x[t, b, 1, 1:-1, trail] = 1.0, 1.0
            else:              # a horizontal bar moving up or down
                x[t, b, 0, lead, 1:-1], x[t, b, 1, trail, 1:-1] = 1.0, 1.0
    noise = torch.rand(x.shape, generator=g) < 0.02
    return torch.maximum(x, noise.float()), labels


def readme_network(c1: int = 16, c2: int = 32, classes: int = 4) -> torch.nn.Sequential:
    """The README's API example (there with 64 and 128 channels and 11 classes): a hidden E-I
    convolution followed by ``sj_ei.e_population()`` (spikingjelly's LIFNode), a fused E-I block
    (``EIBlock`` with ``EILIFNode``), an E-I readout."""
    import sj_ei
    return torch.nn.Sequential(
        sj_ei.EIConv2d(2, c1, 3, padding=1), sj_ei.e_population(),
        layer.AvgPool2d(2),
        sj_ei.EIBlock(sj_ei.EIConv2d(c1, c2, 3, padding=1), sj_ei.EILIFNode()),
        layer.AdaptiveAvgPool2d(1), layer.Flatten(),
        sj_ei.EILinear(c2, classes, readout=True))


def spikes_output_and_gradients(net, x, labels, step_mode):
    """``(spikes of every E population, output [T, B, classes], {parameter: gradient})`` of one
    cross-entropy step of ``net`` on ``x [T, B, ...]`` in ``step_mode``."""
    functional.set_step_mode(net, step_mode)
    spikes = monitor.OutputMonitor(net, neuron.LIFNode)
    out = net(x) if step_mode == 'm' else torch.stack([net(x_t) for x_t in x])
    torch.nn.functional.cross_entropy(out.mean(0), labels).backward()
    functional.reset_net(net)
    records = spikes.records
    spikes.remove_hooks()
    if step_mode == 's':  # one record per step and population
        records = [torch.stack(records[i::2]) for i in range(2)]
    return records, out.detach(), {name: p.grad for name, p in net.named_parameters()}


@pytest.mark.parametrize('step_mode', ['m', 's'])
def test_spikingjellys_lif_gives_sj_ei_s_numbers_in_a_whole_network(step_mode):
    """Same numbers on both releases: the README's network with this release's LIFNode as its first
    E population gives the spikes, output and parameter gradients of the same network with sj_ei's own
    LIF there (``EILIFNode`` on ``I_int``: ``sj_ei.lif``, code that is the same on every release) -- spikes
    and output bit for bit, gradients to 1e-5 of each tensor's scale.  CI runs it on 0.0.0.0.14 and
    on 2.x, so the torch paths of both releases give the same spikes and gradients."""
    import sj_ei
    torch.manual_seed(0)
    x, labels = moving_bars(T=4, B=4, size=16)
    with_spikingjelly = readme_network()
    functional.set_step_mode(with_spikingjelly, 'm')
    sj_ei.ei_init(with_spikingjelly, x)
    with_sj_ei = copy.deepcopy(with_spikingjelly)
    with_sj_ei[1] = sj_ei.EILIFNode()
    assert not isinstance(with_spikingjelly[1], sj_ei.EILIFNode)  # this release's LIFNode.forward runs

    spikes, out, grads = spikes_output_and_gradients(with_spikingjelly, x, labels, step_mode)
    ref_spikes, ref_out, ref_grads = spikes_output_and_gradients(with_sj_ei, x, labels, step_mode)

    for s, ref in zip(spikes, ref_spikes, strict=True):
        assert 0.02 < ref.mean() < 0.6
        assert torch.equal(s, ref)
    assert torch.equal(out, ref_out)
    for name, ref in ref_grads.items():
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(grads[name], ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item(),
                                   msg=lambda m: f'{name}: {m}')


def test_the_readme_example_trains_and_a_vgg8_step_runs():
    """What a user of either release runs first: the README's example (small shapes) learns the
    direction of moving bars (the loss falls), Dale's law holds after every step, E-I Init keeps the
    first layer firing; then one training step of ``models.build('vgg8', ...)``."""
    import sj_ei
    from sj_ei.constraint import CONSTRAINED
    torch.manual_seed(0)
    x, labels = moving_bars(T=4, B=16, size=16)
    net = readme_network()
    functional.set_step_mode(net, 'm')
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    sj_ei.constrain(net, optimizer)
    sj_ei.ei_init(net, x)
    first = monitor.OutputMonitor(net[:2], neuron.LIFNode, lambda s: s.mean().item())
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(net(x).mean(0), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        functional.reset_net(net)
        losses.append(loss.item())
        for name, p in net.named_parameters():
            if name.split('.')[-1] in CONSTRAINED:
                assert (p >= 0).all(), name
    assert losses[-1] < 0.75 * losses[0], losses
    assert all(0.01 < rate < 0.5 for rate in first.records), first.records

    vgg8 = sj_ei.models.build('vgg8', 4, 2, T=4, width=0.125)
    frames, labels = moving_bars(T=4, B=2, size=32, seed=1)
    optimizer = torch.optim.SGD(vgg8.parameters(), lr=0.01, momentum=0.9)
    sj_ei.constrain(vgg8, optimizer)
    loss = torch.nn.functional.cross_entropy(vgg8(frames).mean(0), labels)
    loss.backward()
    optimizer.step()
    functional.reset_net(vgg8)
    assert torch.isfinite(loss)
    assert all(p.grad.abs().sum() > 0 for p in vgg8.parameters() if p.requires_grad), 'a parameter got no gradient'
    assert all(layer.initialized for _, layer in sj_ei.ei_layers(vgg8))


def test_the_dependency_range_takes_both_releases():
    """setup.cfg's spikingjelly requirement accepts 0.0.0.0.14, 2.x and the one installed here, so pip
    keeps an installed spikingjelly (``.ci/run`` checks that on a fresh install of each)."""
    import configparser
    from pathlib import Path
    from packaging.requirements import Requirement
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parents[1] / 'setup.cfg')
    (spec,) = [Requirement(r).specifier for r in cfg['options']['install_requires'].split('\n')
               if r.strip().startswith('spikingjelly')]
    assert all(spec.contains(v) for v in ('0.0.0.0.14', '2.0.0', '2.9', _compat.SJ_VERSION)), spec
    assert not spec.contains('3.0.0') and not spec.contains('0.0.0.0.13'), spec


# ---------------------------------------------------------------- import hygiene

IMPORTS = 'import sj_ei, sj_ei.benchmark, sj_ei.convert, sj_ei.datasets, train.classify\n'


def test_importing_sj_ei_installs_no_warnings_filter():
    """Users' warnings are left alone: no module of sj_ei or train calls warnings.filterwarnings
    or warnings.simplefilter on the filters in force while being imported (spikingjelly and torch
    may); a filter inside ``warnings.catch_warnings()`` (on a copy, restored after it) is allowed."""
    probe = (
        "import sys, warnings\n"
        "callers, in_force = [], warnings.filters\n"
        "def recording(real):\n"
        "    def call(*args, **kwargs):\n"
        "        if warnings.filters is in_force:\n"
        "            callers.append(sys._getframe(1).f_globals.get('__name__', '?'))\n"
        "        return real(*args, **kwargs)\n"
        "    return call\n"
        "warnings.filterwarnings = recording(warnings.filterwarnings)\n"
        "warnings.simplefilter = recording(warnings.simplefilter)\n"
        + IMPORTS +
        "print(sorted({c for c in callers if c.split('.')[0] in ('sj_ei', 'train')}))\n")
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'


def test_importing_sj_ei_prints_nothing():
    """On both releases: no warning reaches the user's terminal from importing sj_ei (on 0.0.0.0.14,
    torch's FutureWarning about spikingjelly's use of torch.jit.script, silenced in ``sj_ei._compat``
    for that import only), so the trainer's command line starts with its own messages."""
    result = subprocess.run([sys.executable, '-c', IMPORTS], capture_output=True, text=True, check=True)
    assert result.stderr == '' and result.stdout == ''


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
