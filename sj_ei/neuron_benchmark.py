"""The E population alone: forward + backward of each LIF implementation on one E-I layer's
currents, without the convolutions around it (``sj_ei.benchmark`` times whole networks).

    python -m sj_ei.neuron_benchmark -shape cifar -device cuda -o neurons.json

Variants, each from the same ``EICurrents [T, B, C, H, W]`` (VGG-8's first E-I layer: ``cifar``
T 4, B 128, 64 x 32 x 32; ``dvs`` T 16, B 32, 64 x 48 x 48):

- ``fused``: ``sj_ei.EILIFNode`` on the currents (the integration inside the LIF loop), on
  backend ``torch`` (``sj_ei.lif``) and ``cupy`` (one CUDA kernel over all T);
- ``composable``: ``sj_ei.currents.integrate`` then spikingjelly's ``LIFNode`` (the paper's E
  population) on ``I_int``, on backend ``torch`` (spikingjelly's loop over T) and, on spikingjelly
  0.0.0.0.14, ``cupy`` (spikingjelly's CuPy kernel).

Time: median of ``-repeats`` after ``-warmup`` calls, taken in turns; on a GPU also the peak
memory of one call above what the currents take.  A variant that fails is a row with its error.
"""
import argparse
import sys
import time

import torch
from spikingjelly.activation_based import functional

import sj_ei
from . import _compat
from .benchmark import recorded, report, spread
from .currents import EICurrents, integrate

SHAPES = {'cifar': (4, 128, 64, 32, 32), 'dvs': (16, 32, 64, 48, 48)}


def currents(shape, device, seed=0) -> EICurrents:
    """Currents as an E-I layer hands them over: ``d = I_EE - I_EI`` near balance (``I_EE`` in [0, 1),
    ``I_EI`` within 20% of it, so ``|d| <= 0.2``), ``I_sh~ > 0``."""
    g = torch.Generator(device=device).manual_seed(seed)
    i_ee = torch.rand(shape, generator=g, device=device)
    d = i_ee * (0.2 - 0.4 * torch.rand(shape, generator=g, device=device))
    i_sh = 0.05 + torch.rand(shape, generator=g, device=device)
    C = shape[2]
    return EICurrents(*(t.requires_grad_() for t in (d, i_sh)),
                      torch.full((C,), 4.0, device=device, requires_grad=True), torch.zeros(C, device=device,
                                                                                             requires_grad=True))


def variants() -> list:
    """``(variant, backend)`` pairs: every implementation this spikingjelly has."""
    found = [('fused', 'torch'), ('fused', 'cupy'), ('composable', 'torch')]
    if _compat.HAS_CUPY_BACKEND:
        found.append(('composable', 'cupy'))
    return found


def call(name: str, node, c: EICurrents, weights: torch.Tensor) -> None:
    """One forward and backward of ``node`` on ``c`` (a random linear read-out of the spikes as the loss)."""
    x = c if name == 'fused' else integrate(c, channel_dim=2)
    (node(x) * weights).sum().backward()
    functional.reset_net(node)
    for t in c:
        t.grad = None


def run(shape_name: str, device: torch.device, warmup: int, repeats: int, batch: int = None) -> dict:
    """Every variant on the currents of ``shape_name`` (``batch`` replacing its B) as a JSON-ready dict."""
    T, B, *rest = SHAPES[shape_name]
    shape = (T, batch or B, *rest)
    c = currents(shape, device)
    weights = torch.randn(shape, device=device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    rows, live = [], []
    for name, backend in variants():
        row = dict(variant=name, backend=backend)
        rows.append(row)
        with recorded(row):
            node = sj_ei.EILIFNode(step_mode='m') if name == 'fused' else sj_ei.e_population(step_mode='m')
            node.backend = backend  # sj_ei.set_backend's check, on the node alone
            call(name, node, c, weights)
            if device.type == 'cuda':
                sync()
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                call(name, node, c, weights)
                sync()
                row['peak_extra_bytes'] = torch.cuda.max_memory_allocated(device) - base
            for _ in range(warmup):
                call(name, node, c, weights)
            live.append((row, node, []))
    for _ in range(repeats):
        for row, node, times in live:
            if 'error' not in row:
                with recorded(row):
                    sync()
                    start = time.perf_counter()
                    call(row['variant'], node, c, weights)
                    sync()
                    times.append(time.perf_counter() - start)
    for row, _, times in live:
        if 'error' not in row:
            row.update(spread(times))
    reference = next((r for r in rows if (r['variant'], r['backend']) == ('composable', 'torch') and 'error' not in r),
                     None)
    for row in rows:
        if reference and 'error' not in row:
            row['speedup'] = reference['median_s'] / row['median_s']
    machine = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    return dict(shape=shape_name, currents=list(shape), device=str(device), machine=machine,
                spikingjelly=_compat.SJ_VERSION, warmup=warmup, repeats=repeats, rows=rows)


def table(result: dict) -> str:
    lines = [f"E population alone, currents {'x'.join(map(str, result['currents']))} (T B C H W), "
             f"device {result['device']} ({result['machine']}), spikingjelly {result['spikingjelly']}, median of "
             f"{result['repeats']}; x: speed-up over composable/torch (integrate, then spikingjelly's LIF loop)"]
    for r in result['rows']:
        head = f"{r['variant']:<12}{r['backend']:<7}"
        if 'error' in r:
            lines.append(f'{head}failed: {r["error"]}')
            continue
        memory = f"  peak +{r['peak_extra_bytes'] / 2**20:.0f} MB" if 'peak_extra_bytes' in r else ''
        lines.append(f"{head}{1e3 * r['median_s']:>9.2f} ms ({1e3 * r['q1_s']:.2f}-{1e3 * r['q3_s']:.2f})"
                     f"{r.get('speedup', float('nan')):>7.2f}x{memory}")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m sj_ei.neuron_benchmark', description=__doc__.split('\n\n')[0])
    parser.add_argument('-shape', choices=SHAPES, default='cifar')
    parser.add_argument('-device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('-b', type=int, default=None, help="batch size (default: the shape's)")
    parser.add_argument('-warmup', type=int, default=5)
    parser.add_argument('-repeats', type=int, default=20)
    parser.add_argument('-o', default=None, metavar='JSON', help='also write the results here')
    args = parser.parse_args(argv)
    result = run(args.shape, torch.device(args.device), args.warmup, args.repeats, args.b)
    report(table(result), result, args.o)


if __name__ == '__main__':
    sys.exit(main())
