"""Benchmarks: training-step time and memory of E-I networks against the batch-norm SNN
of the same shape, on the torch backend and (with a GPU) the CuPy backend, in one run.

    python -m sj_ei.benchmark -models vgg8,vgg16,resnet18 -shape cifar -b 16 -o results.json

Time: forward + backward + optimizer step + reset_net, median and quartiles over
``-repeats`` steps after ``-warmup`` steps.  Memory: the bytes of the tensors autograd
saves for backward (exact, machine-independent; parameters excluded, each storage
counted once) and, on a GPU, the peak allocated memory.  Ratios are against the
batch-norm network of the same shape measured in the same run.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional, layer

import sj_ei

SHAPES = {'cifar': dict(in_channels=3, size=32, T=4, num_classes=10),
          'dvs': dict(in_channels=2, size=48, T=16, num_classes=11)}


def saved_bytes(forward, model) -> int:
    """Bytes autograd saves for backward during ``forward()``, parameters excluded, storages once."""
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
    """One spiking conv block ``channels -> 2 * channels`` (3x3) as a model with a readout."""
    if norm == 'ei':
        conv = sj_ei.EIBlock(sj_ei.EIConv2d(channels, 2 * channels, 3, padding=1, step_mode='m'),
                             sj_ei.e_population(step_mode='m'))
    else:
        conv = nn.Sequential(layer.Conv2d(channels, 2 * channels, 3, padding=1, bias=False, step_mode='m'),
                             layer.BatchNorm2d(2 * channels, step_mode='m'), sj_ei.e_population(step_mode='m'))
    return nn.Sequential(conv, layer.AdaptiveAvgPool2d(1, step_mode='m'), layer.Flatten(step_mode='m'),
                         layer.Linear(2 * channels, 10, step_mode='m'))


def make_model(name: str, norm: str, shape: dict, channels: int) -> nn.Module:
    if name == 'block':
        return block(norm, channels)
    return sj_ei.models.build(name, shape['num_classes'], shape['in_channels'], norm=norm)


def measure(name, norm, backend, shape, batch, T, device, warmup, repeats, channels, seed=0):
    """One row: step times (s) and memory of ``name`` with ``norm`` on ``backend``."""
    torch.manual_seed(seed)
    model = make_model(name, norm, shape, channels).to(device)
    in_channels = channels if name == 'block' else shape['in_channels']
    x = (torch.rand(T, batch, in_channels, shape['size'], shape['size'], device=device) < 0.2).float()
    labels = torch.randint(0, 10, (batch,), device=device)
    if norm == 'ei':
        sj_ei.ei_init(model, x)
    functional.set_backend(model, backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if norm == 'ei':
        sj_ei.constrain(model, optimizer)

    def forward():
        return F.cross_entropy(model(x).mean(0), labels)

    def step():
        loss = forward()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        functional.reset_net(model)

    def synchronize():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        step()
    memory = saved_bytes(forward, model)
    functional.reset_net(model)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=4, method='inclusive') if len(times) > 1 else times * 3
    row = dict(model=name, norm=norm, backend=backend, median_s=statistics.median(times), q1_s=q[0], q3_s=q[2],
               saved_bytes=memory)
    if device.type == 'cuda':
        row['peak_bytes'] = torch.cuda.max_memory_allocated(device)
    return row


def variants(device):
    """(norm, backend) pairs to compare, and the reason a CuPy row is absent."""
    rows = [('bn', 'torch'), ('ei', 'torch')]
    try:
        from . import cupy_backend
        if device.type != 'cuda':
            return rows, 'CuPy backend needs a CUDA device'
        cupy_backend.require_cupy(torch.empty(1, device=device))
    except (ImportError, RuntimeError) as e:
        return rows, f'CuPy backend not measured: {e}'
    return rows + [('ei', 'cupy')], None


def run(models, shape_name, batch, T, device, warmup, repeats, channels):
    shape = SHAPES[shape_name]
    T = T or shape['T']
    pairs, skipped = variants(device)
    rows = []
    for name in models:
        for norm, backend in pairs:
            row = measure(name, norm, backend, shape, batch, T, device, warmup, repeats, channels)
            rows.append(row)
        base = next(r for r in rows if r['model'] == name and r['norm'] == 'bn')
        for r in rows:
            if r['model'] == name:
                r['time_ratio'] = r['median_s'] / base['median_s']
                r['saved_ratio'] = r['saved_bytes'] / base['saved_bytes']
                if 'peak_bytes' in r:
                    r['peak_ratio'] = r['peak_bytes'] / base['peak_bytes']
    return dict(shape=shape_name, batch=batch, T=T, device=str(device), torch=torch.__version__,
                threads=torch.get_num_threads(), warmup=warmup, repeats=repeats, cupy_skipped=skipped, rows=rows)


def table(result) -> str:
    gpu = any('peak_bytes' in r for r in result['rows'])
    head = (f"shape {result['shape']}, batch {result['batch']}, T {result['T']}, device {result['device']}, "
            f"{result['threads']} threads, median of {result['repeats']} steps")
    lines = [head, f"{'model':<10}{'norm':<6}{'backend':<9}{'step ms (q1-q3)':>22}{'x BN':>7}"
                   f"{'saved MB':>11}{'x BN':>7}" + (f"{'peak MB':>10}{'x BN':>7}" if gpu else '')]
    for r in result['rows']:
        spread = f"{1e3 * r['median_s']:.1f} ({1e3 * r['q1_s']:.1f}-{1e3 * r['q3_s']:.1f})"
        line = (f"{r['model']:<10}{r['norm']:<6}{r['backend']:<9}{spread:>22}{r['time_ratio']:>7.2f}"
                f"{r['saved_bytes'] / 2**20:>11.1f}{r['saved_ratio']:>7.2f}")
        if gpu:
            line += f"{r.get('peak_bytes', 0) / 2**20:>10.1f}{r.get('peak_ratio', float('nan')):>7.2f}"
        lines.append(line)
    if result['cupy_skipped']:
        lines.append(result['cupy_skipped'])
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m sj_ei.benchmark', description=__doc__.split('\n\n')[0])
    parser.add_argument('-models', default='block,vgg8,vgg16,resnet18',
                        help="comma-separated: block (one 3x3 conv block), vgg8, vgg11, vgg16, vgg19, resnet18")
    parser.add_argument('-shape', choices=SHAPES, default='cifar', help='cifar: 3x32x32 T=4; dvs: 2x48x48 T=16')
    parser.add_argument('-b', type=int, default=16, help='batch size')
    parser.add_argument('-T', type=int, default=None, help="time steps (default: the shape's)")
    parser.add_argument('-device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('-warmup', type=int, default=2)
    parser.add_argument('-repeats', type=int, default=5)
    parser.add_argument('-channels', type=int, default=64, help='input channels of the single block')
    parser.add_argument('-o', default=None, metavar='JSON', help='also write the results here')
    args = parser.parse_args(argv)
    models = args.models.split(',')
    unknown = [m for m in models if m not in ('block', *sj_ei.models.NAMES)]
    if unknown or args.b < 1 or args.repeats < 1:
        parser.error(f'unknown model(s) {unknown}' if unknown else '-b and -repeats must be >= 1')
    result = run(models, args.shape, args.b, args.T, torch.device(args.device), args.warmup, args.repeats,
                 args.channels)
    print(table(result))
    if args.o:
        with open(args.o, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    sys.exit(main())
