"""The fused LIF as ``torch.ops.sj_ei`` operators: ``torch.library.opcheck`` on every operator (schema,
autograd registration, fake tensors, AOT dispatch with dynamic shapes; ``pytest -k opcheck``), and the
fused E-I VGG-8 compiled with ``fullgraph=True`` is one graph of ``sj_ei`` operators that matches eager,
on the torch kernel and on the CuPy kernels (run on the CPU through the CUDA emulation).  Inputs are
an E-I layer's real currents on event frames of moving bars (``test_lif.layer_currents``)."""
import ast
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch.library import opcheck
from spikingjelly.activation_based import functional

import sj_ei
from sj_ei.currents import EICurrents, integrate
from sj_ei.lif import LIFConfig, cupy_launch, operators

from test_cupy_backend import HALF_CONFIGS
from test_lif import layer_currents, moving_bar

ROOT = Path(__file__).parents[1]
CONFIG_CASES = {'paper': LIFConfig(), 'atan-attached': LIFConfig(3.0, 0.5, detach_reset=False, surrogate='atan'),
                'hard-decay': LIFConfig(4.0, 1.5, v_reset=0.5, decay_input=True, detach_reset=False)}
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}


def linear_currents(T: int = 3, B: int = 2, seed: int = 1) -> EICurrents:
    """The ``EICurrents [T, B, 6]`` of a real ``EILinear`` (E-I Init from the batch) on flattened events."""
    torch.manual_seed(seed)
    layer = sj_ei.EILinear(2 * 4 * 4, 6, step_mode='m')
    x = moving_bar(T, B, size=4, seed=seed).flatten(2)
    sj_ei.ei_init(layer, x)
    with torch.no_grad():
        layer.output = 'currents'
        c = layer(x)
    return EICurrents(*c[:2], layer.gain_e.detach().clone(), layer.bias.detach().clone())


SHAPES = {'conv': lambda: layer_currents(T=2, B=1, seed=2), 'linear': linear_currents}


def case_inputs(shape: str, dtype: torch.dtype, v_start: str, plain: bool, grad: bool = True):
    """``(tensors, v_init)``: the currents (or their ``I_int``) in ``dtype``, ``v_init`` None (at rest) or a
    float32 tensor of one step, leaves requiring gradients where ``grad``."""
    c = SHAPES[shape]()
    tensors = (integrate(c, 2),) if plain else tuple(c)
    tensors = tuple((t.to(dtype) if t.dim() > 1 else t).detach().requires_grad_(grad) for t in tensors)
    step = tensors[0].shape[1:]
    v_init = None if v_start == 'rest' else torch.randn(step, generator=torch.Generator().manual_seed(3))
    return tensors, None if v_init is None else v_init.requires_grad_(grad)


OPCHECK = [pytest.param(config, shape, dtype, v_start, store_v_seq, id=f'{config}-{shape}-{dtype}-{v_start}-{s}')
           for config in CONFIG_CASES for shape in SHAPES for dtype in DTYPES for v_start in ('rest', 'tensor')
           for store_v_seq, s in ((False, 'spikes'), (True, 'v_seq'))
           if (config == 'paper' or dtype == 'float32') and (shape == 'conv' or v_start == 'tensor')]


@pytest.mark.parametrize('plain', [False, True], ids=['ei', 'plain'])
@pytest.mark.parametrize('config, shape, dtype, v_start, store_v_seq', OPCHECK)
def test_opcheck_torch_kernel_operators(config, shape, dtype, v_start, store_v_seq, plain):
    """The torch kernel's forward operator (and through its autograd formula, its backward operator)."""
    tensors, v_init = case_inputs(shape, DTYPES[dtype], v_start, plain)
    constants = CONFIG_CASES[config].args()
    if plain:
        opcheck(torch.ops.sj_ei.lif_forward.default, (*tensors, v_init, 0.0, store_v_seq, True, *constants))
    else:
        opcheck(torch.ops.sj_ei.ei_lif_forward.default, (*tensors, v_init, 0.25, store_v_seq, *constants))


@pytest.mark.parametrize('plain', [False, True], ids=['ei', 'plain'])
@pytest.mark.parametrize('absent', ['none', 'grad_v_seq', 'grad_spikes'])
def test_opcheck_torch_kernel_backward_operators(plain, absent):
    """The backward operators on their own, with an incoming gradient absent (None) or not."""
    tensors, v_init = case_inputs('conv', torch.float32, 'tensor', plain, grad=False)
    config = CONFIG_CASES['atan-attached']
    g = torch.Generator().manual_seed(4)
    grads = {name: torch.randn(shape, generator=g) for name, shape in
             (('grad_spikes', tensors[0].shape), ('grad_v_last', v_init.shape), ('grad_v_seq', tensors[0].shape))}
    grads = [None if name == absent else grads[name] for name in ('grad_spikes', 'grad_v_last', 'grad_v_seq')]
    if plain:
        h_seq = torch.ops.sj_ei.lif_forward(*tensors, v_init, 0.0, False, True, *config.args())[3]
        opcheck(torch.ops.sj_ei.lif_backward.default, (*grads, h_seq, torch.float32, *config.args()))
    else:
        opcheck(torch.ops.sj_ei.ei_lif_backward.default, (*grads, *tensors, v_init, 0.0, *config.args()))


CUPY_OPCHECK = [pytest.param(config, dtype, v_start, store_v_seq, id=f'{config.surrogate}-{dtype}-{v_start}-{s}')
                for config in HALF_CONFIGS for dtype in DTYPES for v_start in ('rest', 'tensor')
                for store_v_seq, s in ((False, 'spikes'), (True, 'v_seq'))
                if dtype == 'float32' or (v_start == 'tensor' and not store_v_seq)]


@pytest.mark.parametrize('plain', [False, True], ids=['ei', 'plain'])
@pytest.mark.parametrize('config, dtype, v_start, store_v_seq', CUPY_OPCHECK)
def test_opcheck_cupy_kernel_operators(emulated_cupy, config, dtype, v_start, store_v_seq, plain):
    """The CuPy kernels' operators (forward, and backward through its autograd formula), the kernels
    run on the CPU through the CUDA emulation."""
    tensors, v_init = case_inputs('conv', DTYPES[dtype], v_start, plain)
    args = (*tensors, v_init, 0.0, store_v_seq, True, *config.args())
    opcheck(torch.ops.sj_ei.lif_forward_cupy.default if plain else torch.ops.sj_ei.ei_lif_forward_cupy.default,
            args)
    if not plain:  # the backward operator on its own, one incoming gradient absent
        _, _, _, h_seq, n_seq = torch.ops.sj_ei.ei_lif_forward_cupy(*args)
        grads = (torch.randn(h_seq.shape, generator=torch.Generator().manual_seed(5)), None, None)
        opcheck(torch.ops.sj_ei.ei_lif_backward_cupy.default,
                (*grads, h_seq, n_seq, *(t.detach() for t in tensors[1:]), DTYPES[dtype], *config.args()))


def test_every_operator_is_opchecked():
    """The tests above reach every ``sj_ei`` operator (forward ones directly, backward ones directly and
    through the autograd formulas)."""
    names = {op._qualname for op in operators.OPERATORS}
    assert names == {f'sj_ei::{kind}_{direction}{suffix}' for kind in ('ei_lif', 'lif')
                     for direction in ('forward', 'backward') for suffix in ('', '_cupy')}
    assert all(hasattr(torch.ops.sj_ei, name.split('::')[1]) for name in names)


# ---------------------------------------------------------------- the compiled fused VGG-8

def events(T: int = 2, B: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``[T, B, 2, size, size]`` event frames of two bright bars moving right, with sparse noise."""
    return torch.cat([moving_bar(T, B, size=size, seed=seed)[:, :, :1],
                      moving_bar(T, B, size=size, seed=seed + 1)[:, :, 1:].roll(size // 2, -2)], dim=2)


class Recorder:
    """A ``torch.compile`` backend: AOT autograd (no code generation), recording the forward and backward
    graphs it is handed."""

    def __init__(self):
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd
        self.graphs = {}

        def keep(kind):
            def compile_graph(gm, example_inputs):
                self.graphs.setdefault(kind, []).append(gm)
                return make_boxed_func(gm.forward)
            return compile_graph
        self.backend = aot_autograd(fw_compiler=keep('forward'), bw_compiler=keep('backward'))

    def targets(self, kind: str) -> set:
        return {str(node.target) for gm in self.graphs.get(kind, []) for node in gm.graph.nodes
                if node.op == 'call_function'}


def forward_backward(net, x, run=None):
    """``(output, {parameter: gradient}, [v of every EILIFNode])`` of one step of ``net`` (through ``run``,
    e.g. its compiled form) from a reset network."""
    functional.reset_net(net)
    net.zero_grad()
    out = (net if run is None else run)(x)
    out.backward(torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out))
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    vs = [m.v.detach().clone() for m in net.modules() if isinstance(m, sj_ei.EILIFNode)]
    return out.detach(), grads, vs


def compiled_matches_eager(backend: str, suffix: str, device: str = 'cpu'):
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 4, 2, width=0.25).to(device)
    x = events().to(device)
    net(x)  # E-I Init
    nodes = [m for m in net.modules() if isinstance(m, sj_ei.EILIFNode)]
    for node in nodes:
        node.backend = backend  # sj_ei.set_backend(net, 'cupy') refuses without a GPU
    rates = []
    hooks = [m.register_forward_hook(lambda m, inputs, s: rates.append(s.mean().item())) for m in nodes]
    want = forward_backward(net, x)
    for hook in hooks:
        hook.remove()
    assert len(rates) == len(nodes) == 5 and all(0.005 < rate < 0.5 for rate in rates), rates
    recorder = Recorder()
    got = forward_backward(net, x, torch.compile(net, backend=recorder.backend, fullgraph=True))
    assert len(recorder.graphs['forward']) == 1 and len(recorder.graphs['backward']) == 1
    assert f'sj_ei.ei_lif_forward{suffix}.default' in recorder.targets('forward')
    assert f'sj_ei.ei_lif_backward{suffix}.default' in recorder.targets('backward')
    assert want[0].abs().sum() > 0 and len(want[1]) == len(list(net.parameters()))
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    for v_got, v_want in zip(got[2], want[2]):
        assert torch.equal(v_got, v_want)
    assert got[1].keys() == want[1].keys()
    for name in want[1]:
        scale = want[1][name].abs().max().item()
        torch.testing.assert_close(got[1][name], want[1][name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_compiled_fused_vgg8_is_one_graph_of_sj_ei_operators_and_matches_eager():
    """``torch.compile(models.build('vgg8', width=0.25), fullgraph=True)``: one forward graph, in which every
    fused E population is a ``torch.ops.sj_ei.ei_lif_forward`` call (its backward graph:
    ``ei_lif_backward``), equal to eager in outputs, final potentials and parameter gradients."""
    compiled_matches_eager('torch', '')


@pytest.mark.parametrize('where', ['emulated', 'cuda'])
def test_compiled_fused_vgg8_on_the_cupy_kernels_matches_eager(where, request, monkeypatch):
    """The same with the CuPy kernels (backend 'cupy' on every E population), emulated on the CPU or
    (case 'cuda', what ``.ci/gpu-check`` runs) launched on a GPU: skipped without one, a failure
    then with ``SJ_EI_REQUIRE_GPU=1``."""
    if where == 'emulated':
        request.getfixturevalue('emulated_cupy')
        return compiled_matches_eager('cupy', '_cupy')
    try:
        cupy_launch.require_cupy(torch.empty(1, device='cuda') if torch.cuda.is_available() else torch.empty(1))
    except cupy_launch.CupyUnavailableError as e:
        (pytest.fail if os.environ.get('SJ_EI_REQUIRE_GPU') == '1' else pytest.skip)(str(e))
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', True)  # eager and compiled: the same convolutions
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    compiled_matches_eager('cupy', '_cupy', 'cuda')


# ---------------------------------------------------------------- layout

def _module(name: str):
    """The source file of sj_ei module ``name``, or None if ``name`` is not a module."""
    path = ROOT / name.replace('.', '/')
    return next((p for p in (path.with_suffix('.py'), path / '__init__.py') if p.exists()), None)


def test_layers_never_import_the_cuda_code():
    """``sj_ei.layers`` and everything it imports reach neither the CuPy launch nor the kernel code."""
    seen, todo = set(), ['sj_ei.layers']
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module(name)
        package = name if path.name == '__init__.py' else name.rpartition('.')[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name('.' * node.level + (node.module or ''), package)
                if base.split('.')[0] == 'sj_ei':
                    todo += [f'{base}.{a.name}' if _module(f'{base}.{a.name}') else base for a in node.names]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith('sj_ei.')]
    assert {'sj_ei.circuit', 'sj_ei.init'} <= seen
    assert not {m for m in seen if m.startswith('sj_ei.lif') or m == 'sj_ei.cupy_backend'}, sorted(seen)
