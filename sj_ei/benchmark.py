"""Benchmarks: training-step time and memory of E-I networks against the batch-norm SNN
of the same shape, for each LIF implementation and backend, in one run.

    python -m sj_ei.benchmark -models vgg8,vgg16,resnet18 -shape cifar -b 16 -floor -o results.json

Rows: every (norm, neuron, backend) of each model.  ``norm``: ``ei`` (E-I layers), ``bn``
(batch norm) and, with ``-floor``, ``bnwide`` (the batch-norm network doing the E-I network's
convolutions, ``n_E + n_I`` channels: what E-I's arithmetic costs before any inhibition).
``neuron`` (see ``neurons``): ``lif``, spikingjelly's ``LIFNode`` (the composable path: the E-I
layer hands it ``I_int``), and ``eilif``, sj_ei's ``EILIFNode`` (E-I currents integrated with
the LIF dynamics over all T in one pass; a plain fast LIF after batch norm).  Backends:
``torch``, and on a GPU with CuPy also ``cupy``.

Time: forward + backward + optimizer step + ``reset_net``, median, quartiles and range over
``-repeats`` steps after ``-warmup`` steps (spikingjelly's TorchScript functions are
re-optimized during the first steps).  The variants of one model are timed in turns, one
step each, so that a load on the machine slows them alike.  Memory, measured with one
variant alive at a time: the bytes of the tensors autograd saves for backward (exact and
machine-independent; each storage counted once, parameters excluded and reported apart) and,
on a GPU, the peak allocated memory of a step.  Ratios ("x BN") are against the fastest
batch-norm row of the same model and backend in the same run (marked ``*``), so that the
baseline has the fastest LIF available to it and the ratio measures E-I, not a slower neuron.
A variant that fails (say a CuPy kernel that does not launch) is a row with its error; the
others are still measured.
"""
import argparse
import contextlib
import gc
import json
import platform
import statistics
import sys
import time
from importlib import metadata

import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional, layer, neuron as sj_neuron

import sj_ei
from . import _compat

SHAPES = {'cifar': dict(in_channels=3, size=32, T=4, num_classes=10),
          'dvs': dict(in_channels=2, size=48, T=16, num_classes=11)}


def neurons() -> dict:
    """The LIF implementations every network is timed with: name -> a factory of a multi-step
    node with the paper's settings (``sj_ei.set_backend`` then picks its backend)."""
    return {'lif': lambda: sj_ei.e_population(step_mode='m'), 'eilif': lambda: sj_ei.EILIFNode(step_mode='m')}


def use_neuron(module: nn.Module, make) -> nn.Module:
    """``module`` with every spikingjelly LIF node replaced by ``make()``; E-I blocks are rebuilt
    around the new node, so that each layer hands its node what it takes (currents or ``I_int``)."""
    for name, child in module.named_children():
        if isinstance(child, sj_ei.EIBlock):
            setattr(module, name, sj_ei.EIBlock(child.layer, make()))
        elif isinstance(child, sj_neuron.LIFNode):
            setattr(module, name, make())
        else:
            use_neuron(child, make)
    return module


def saved_bytes(forward, model: nn.Module) -> int:
    """Bytes of the tensors autograd saves for backward while ``forward()`` runs (it returns a
    scalar loss, which is then back-propagated): each storage once, ``model``'s parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    loss.backward()
    return sum(seen.values())


def block(norm: str, channels: int) -> nn.Module:
    """One spiking 3x3 conv block ``channels -> 2 * channels`` (E-I layer + E population, or
    conv + batch norm + the same LIF node), then pooling and a linear readout."""
    if norm == 'ei':
        conv = sj_ei.EIBlock(sj_ei.EIConv2d(channels, 2 * channels, 3, padding=1, step_mode='m'),
                             sj_ei.e_population(step_mode='m'))
    else:
        conv = nn.Sequential(layer.Conv2d(channels, 2 * channels, 3, padding=1, bias=False, step_mode='m'),
                             layer.BatchNorm2d(2 * channels, step_mode='m'), sj_ei.e_population(step_mode='m'))
    return nn.Sequential(conv, layer.AdaptiveAvgPool2d(1, step_mode='m'), layer.Flatten(step_mode='m'),
                         layer.Linear(2 * channels, 10, step_mode='m'))


class _WideConv(nn.Module):
    """``conv`` widened by ``1 / ei_ratio`` output channels, of which only the first
    ``conv.out_channels`` are kept: the convolution arithmetic of an E-I layer's projection
    (``n_E + n_I`` channels) in a batch-norm network, the ``bnwide`` cost floor."""

    def __init__(self, conv: layer.Conv2d, ei_ratio: int = 4):
        super().__init__()
        self.keep = conv.out_channels
        self.conv = layer.Conv2d(conv.in_channels, conv.out_channels + conv.out_channels // ei_ratio,
                                 conv.kernel_size, conv.stride, conv.padding, bias=False, step_mode=conv.step_mode)

    def forward(self, x):
        return self.conv(x).narrow(-3, 0, self.keep)


def widen(model: nn.Module) -> nn.Module:
    """``model`` with every spiking ``Conv2d`` replaced by its ``_WideConv``."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, layer.Conv2d):
                setattr(parent, name, _WideConv(child))
    return model


class _Run:
    """One variant (model, norm, backend) ready to train on a fixed batch."""

    def __init__(self, name, norm, neuron, backend, shape, batch, T, size, device, channels, seed=0):
        torch.manual_seed(seed)
        base = 'bn' if norm == 'bnwide' else norm
        if name == 'block':
            self.model, in_channels = block(base, channels), channels
        else:
            self.model = sj_ei.models.build(name, shape['num_classes'], shape['in_channels'], norm=base)
            in_channels = shape['in_channels']
        if norm == 'bnwide':
            widen(self.model)
        use_neuron(self.model, neurons()[neuron])
        self.model.to(device)
        self.device = device
        self.x = (torch.rand(T, batch, in_channels, size, size, device=device) < 0.2).float()
        self.labels = torch.randint(0, 10, (batch,), device=device)
        if norm == 'ei':
            sj_ei.ei_init(self.model, self.x)
        sj_ei.set_backend(self.model, backend)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        if norm == 'ei':
            sj_ei.constrain(self.model, self.optimizer)

    def loss(self):
        return F.cross_entropy(self.model(self.x).mean(0), self.labels)

    def step(self):
        loss = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        functional.reset_net(self.model)

    def timed_step(self) -> float:
        self._synchronize()
        start = time.perf_counter()
        self.step()
        self._synchronize()
        return time.perf_counter() - start

    def memory(self) -> dict:
        """Saved-for-backward bytes, parameter bytes and (GPU) the peak allocated bytes of one step."""
        out = dict(saved_bytes=saved_bytes(self.loss, self.model),
                   param_bytes=sum(p.numel() * p.element_size() for p in self.model.parameters()))
        functional.reset_net(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == 'cuda':
            self._synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            self._synchronize()
            out['peak_bytes'] = torch.cuda.max_memory_allocated(self.device)
        return out

    def _synchronize(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)


def variants(device: torch.device, floor: bool = False):
    """The (norm, neuron, backend) triples to compare, and why CuPy rows are absent (None if present);
    ``floor`` adds the ``bnwide`` network (see ``_WideConv``)."""
    norms = ['bn', 'ei'] + (['bnwide'] if floor else [])
    triples = lambda backend: [(norm, neuron, backend) for norm in norms for neuron in neurons()
                               if backend == 'torch' or neuron != 'lif' or _compat.HAS_CUPY_BACKEND]
    if device.type != 'cuda':
        return triples('torch'), f'no CuPy rows: the CuPy backend runs on a CUDA device, this run is on {device}'
    from .lif import cupy_launch
    try:
        cupy_launch.require_cupy(torch.empty(1, device=device))
    except cupy_launch.CupyUnavailableError as e:
        return triples('torch'), f'no CuPy rows: {e}'
    return triples('torch') + triples('cupy'), None


def spread(times) -> dict:
    q1, _, q3 = statistics.quantiles(times, n=4, method='inclusive') if len(times) > 1 else times * 3
    return dict(median_s=statistics.median(times), q1_s=q1, q3_s=q3, min_s=min(times), max_s=max(times))


def baseline(rows: list, backend: str):
    """The fastest measured batch-norm row of ``backend``: what the ratios are taken against (None if none)."""
    return min((r for r in rows if r['norm'] == 'bn' and r['backend'] == backend and 'error' not in r),
               key=lambda r: r['median_s'], default=None)


@contextlib.contextmanager
def recorded(row: dict):
    """Run the block; an exception it raises ends it and becomes ``row['error']`` (one line), so that a
    variant that fails (a kernel that does not compile or launch, out of memory, ...) is a row with its
    error and the other variants are still measured."""
    try:
        yield
    except Exception as e:
        row['error'] = ' '.join(f'{type(e).__name__}: {e}'.split())[:500]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def measure(name, triples, shape, batch, T, size, device, warmup, repeats, channels):
    """Rows for every (norm, neuron, backend) of model ``name``: memory with one variant alive at a
    time (after one step), then step times taken in turns (one step of each variant per round).
    A variant that fails has ``error`` in its row instead of figures."""
    make = lambda norm, neuron, backend: _Run(name, norm, neuron, backend, shape, batch, T, size, device, channels)
    rows = [dict(model=name, norm=norm, neuron=neuron, backend=backend) for norm, neuron, backend in triples]
    for row, triple in zip(rows, triples):
        with recorded(row):
            run = make(*triple)
            run.step()
            row.update(run.memory())
        run = None
        gc.collect()
    timed = []  # (row, run, step times) of the variants still standing
    for row, triple in zip(rows, triples):
        if 'error' not in row:
            with recorded(row):
                run = make(*triple)
                for _ in range(warmup):
                    run.step()
                timed.append((row, run, []))
            run = None
    for _ in range(repeats):
        timed = [variant for variant in timed if 'error' not in variant[0]]
        for row, run, times in timed:
            with recorded(row):
                times.append(run.timed_step())
    for row, _, times in timed:
        if 'error' not in row:
            row.update(spread(times), times_s=times)
    for row in rows:
        base = baseline(rows, row['backend'])
        if 'error' in row or base is None:
            continue
        row['baseline'] = row is base
        row['time_ratio'] = row['median_s'] / base['median_s']
        row['saved_ratio'] = row['saved_bytes'] / base['saved_bytes']
        if 'peak_bytes' in row:
            row['peak_ratio'] = row['peak_bytes'] / base['peak_bytes']
    return rows


def run(models, shape_name, batch, T, size, device, warmup, repeats, channels, floor=False):
    """The whole benchmark as a JSON-ready dict (``rows``: one per model, norm and backend)."""
    shape = SHAPES[shape_name]
    T, size = T or shape['T'], size or shape['size']
    triples, skipped = variants(device, floor)
    rows = [row for name in models
            for row in measure(name, triples, shape, batch, T, size, device, warmup, repeats, channels)]
    machine = torch.cuda.get_device_name(device) if device.type == 'cuda' else _cpu_name()
    return dict(shape=shape_name, in_channels=shape['in_channels'], size=size, batch=batch, T=T,
                device=str(device), machine=machine, threads=torch.get_num_threads(), torch=torch.__version__,
                spikingjelly=metadata.version('spikingjelly'), warmup=warmup, repeats=repeats,
                cupy_skipped=skipped, rows=rows)


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def table(result: dict) -> str:
    """The results as a text table: absolute figures and ratios to the baseline (``*``)."""
    gpu = any('peak_bytes' in r for r in result['rows'])
    head = (f"shape {result['shape']} ({result['in_channels']}x{result['size']}x{result['size']}), "
            f"batch {result['batch']}, T {result['T']}, device {result['device']} ({result['machine']}), "
            f"{result['threads']} threads, median of {result['repeats']} steps after {result['warmup']}; "
            "x BN: against the fastest bn row of the same model and backend (*)")
    lines = [head, f"{'model':<10}{'norm':<8}{'neuron':<8}{'backend':<9}{'step ms (q1-q3)':>24}{'x BN':>7}"
                   f"{'saved MB':>11}{'x BN':>7}" + (f"{'peak MB':>10}{'x BN':>7}" if gpu else '')]
    ratio = lambda r, key: f"{r[key]:>7.2f}" if key in r else f"{'-':>7}"  # '-': no bn row of its backend
    for r in result['rows']:
        variant = f"{r['model']:<10}{r['norm'] + ('*' if r.get('baseline') else ''):<8}{r['neuron']:<8}{r['backend']:<9}"
        if 'error' in r:
            lines.append(f"{variant}  failed: {r['error']}")
            continue
        spread_ms = f"{1e3 * r['median_s']:.1f} ({1e3 * r['q1_s']:.1f}-{1e3 * r['q3_s']:.1f})"
        line = f"{variant}{spread_ms:>24}{ratio(r, 'time_ratio')}{r['saved_bytes'] / 2**20:>11.1f}{ratio(r, 'saved_ratio')}"
        if gpu:
            line += f"{r['peak_bytes'] / 2**20:>10.1f}{ratio(r, 'peak_ratio')}"
        lines.append(line)
    if result['cupy_skipped']:
        lines.append(result['cupy_skipped'])
    return '\n'.join(lines)


def report(text: str, result: dict, path=None):
    """Print a command line's table ``text`` and, given ``path`` (its ``-o``), write ``result`` there as JSON."""
    print(text)
    if path:
        with open(path, 'w') as f:
            json.dump(result, f, indent=2)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m sj_ei.benchmark', description=__doc__.split('\n\n')[0])
    parser.add_argument('-models', default='block,vgg8,vgg16,resnet18',
                        help='comma-separated: block (one 3x3 conv block), ' + ', '.join(sj_ei.models.NAMES))
    parser.add_argument('-shape', choices=SHAPES, default='cifar',
                        help='cifar: 3x32x32, T=4 (default); dvs: DVS-Gesture 2x48x48, T=16')
    parser.add_argument('-b', type=int, default=16, help='batch size (default 16)')
    parser.add_argument('-T', type=int, default=None, help="time steps (default: the shape's)")
    parser.add_argument('-size', type=int, default=None, help="input height and width (default: the shape's)")
    parser.add_argument('-device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('-threads', type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument('-warmup', type=int, default=8,
                        help="untimed steps per variant before timing (default 8: spikingjelly's TorchScript "
                             'functions are re-optimized during the first steps)')
    parser.add_argument('-repeats', type=int, default=5, help='timed steps per variant (default 5)')
    parser.add_argument('-channels', type=int, default=64, help='input channels of the single block (default 64)')
    parser.add_argument('-floor', action='store_true',
                        help='also time "bnwide": the batch-norm network with the convolutions of the E-I '
                             'network (n_E + n_I output channels, n_I dropped), the floor of its arithmetic')
    parser.add_argument('-o', default=None, metavar='JSON', help='also write the results here')
    args = parser.parse_args(argv)
    models = args.models.split(',')
    unknown = [m for m in models if m not in ('block', *sj_ei.models.NAMES)]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from block, {', '.join(sj_ei.models.NAMES)}")
    for flag in ('b', 'T', 'size', 'threads', 'repeats', 'channels'):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f'-{flag} must be >= 1, got {getattr(args, flag)}')
    size = args.size or SHAPES[args.shape]['size']
    too_small = [f'{m} (needs >= {sj_ei.models.min_size(m)})' for m in models
                 if m != 'block' and size < sj_ei.models.min_size(m)]
    if too_small:
        parser.error(f"-size {size} is too small for {', '.join(too_small)}")
    if args.warmup < 0:
        parser.error(f'-warmup must be >= 0, got {args.warmup}')
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"-device {args.device!r} is not a torch device; use e.g. cpu or cuda:0")
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('-device cuda: no CUDA device is available here; use -device cpu')
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(models, args.shape, args.b, args.T, args.size, device, args.warmup, args.repeats, args.channels,
                 args.floor)
    result['command'] = 'python -m sj_ei.benchmark ' + ' '.join(sys.argv[1:] if argv is None else argv)
    report(table(result), result, args.o)


if __name__ == '__main__':
    sys.exit(main())
