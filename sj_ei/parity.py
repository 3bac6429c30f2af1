"""Model-level parity: an E-I network's spikes, layer by layer, and its parameter gradients under one
setting (backend, autocast dtype) against another, on the same weights and the same batch.

    python -m sj_ei.parity -model vgg8 -b 128 -T 4 -device cuda -o parity.json

Comparisons (candidate against reference), each one training step's forward and backward:

- ``cupy/float32`` against ``torch/float32``: sj_ei's CUDA kernels against the specification in
  a whole network (spikes must be equal, gradients equal to float32 rounding);
- ``cupy/bfloat16``, ``cupy/float16`` against ``torch`` under the same autocast;
- ``torch/bfloat16``, ``torch/float16`` against ``torch/float32``: what autocast itself changes
  (the projections run in 16 bits; ``I_EE - I_EI`` then cancels much of the value).

Per comparison: for each spiking layer the fraction of spikes that differ (a spike that flips
changes every later layer, so the first layer that differs tells where), the readout's largest
difference, and per parameter tensor the relative gradient error ``|g - g_ref| / |g_ref|``.
A comparison that cannot run (no CUDA GPU or CuPy for ``cupy``) is a row with its error.

Input: photo-like images (smooth random fields, per-channel CIFAR-10 means and deviations, pixels
in [0, 1]) repeated over T; the network is E-I initialized on them.
"""
import argparse
import copy
import statistics
import sys

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

import sj_ei
from .benchmark import recorded, report

COMPARISONS = (('cupy', 'float32', 'torch', 'float32'), ('cupy', 'bfloat16', 'torch', 'bfloat16'),
               ('cupy', 'float16', 'torch', 'float16'), ('torch', 'bfloat16', 'torch', 'float32'),
               ('torch', 'float16', 'torch', 'float32'))
# float16: the loss scaled as torch.amp.GradScaler starts (2^16), so that small gradients do not flush to 0
LOSS_SCALE = {'float32': 1.0, 'bfloat16': 1.0, 'float16': 2.0 ** 16}
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def photo_like(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``[batch, 3, size, size]`` pixels in [0, 1] (what E-I layers take, as the paper's loaders give):
    smooth random fields (4x4 and 8x8 grids upsampled), each channel at CIFAR-10's mean and deviation."""
    coarse = sum(F.interpolate(torch.rand(batch, 3, g, g, generator=generator), size=(size, size),
                               mode='bilinear', align_corners=False) for g in (4, 8)) / 2
    coarse = (coarse - coarse.mean((2, 3), keepdim=True)) / coarse.std((2, 3), keepdim=True).clamp_min(1e-6)
    mean, std = torch.tensor(CIFAR_MEAN).view(3, 1, 1), torch.tensor(CIFAR_STD).view(3, 1, 1)
    return (mean + std * coarse).clamp(0, 1)


def step(model, x: torch.Tensor, labels: torch.Tensor, backend: str, dtype: str) -> dict:
    """One forward and backward of a copy of ``model`` on ``backend`` under autocast ``dtype``
    (``float32``: none; ``float16``: with the loss scaled by ``LOSS_SCALE``, gradients unscaled):
    ``{'spikes': [per EIBlock, in order], 'logits', 'loss', 'grads': {name: g}}``."""
    net = copy.deepcopy(model)
    sj_ei.set_backend(net, backend)
    spikes = []
    hooks = [m.register_forward_hook(lambda m, i, out: spikes.append(out.detach().float()))
             for m in net.modules() if isinstance(m, sj_ei.EIBlock)]
    with torch.autocast(x.device.type, dtype=getattr(torch, dtype), enabled=dtype != 'float32'):
        logits = net(x).mean(0)
        loss = F.cross_entropy(logits.float(), labels)
    (loss * LOSS_SCALE[dtype]).backward()
    for hook in hooks:
        hook.remove()
    functional.reset_net(net)
    return dict(spikes=spikes, logits=logits.detach().float(), loss=loss.item(),
                grads={n: p.grad.float() / LOSS_SCALE[dtype] for n, p in net.named_parameters() if p.grad is not None})


def compare(candidate: dict, reference: dict) -> dict:
    """The figures of one comparison (see the module docstring)."""
    flips = [(a != b).float().mean().item() for a, b in zip(candidate['spikes'], reference['spikes'])]
    errors = {n: ((g - reference['grads'][n]).norm() / reference['grads'][n].norm().clamp_min(1e-30)).item()
              for n, g in candidate['grads'].items()}
    return dict(spike_flips=flips, first_layer_differing=next((i for i, f in enumerate(flips) if f), None),
                firing_rates=[s.mean().item() for s in reference['spikes']],
                logits_max_diff=(candidate['logits'] - reference['logits']).abs().max().item(),
                loss=candidate['loss'], loss_ref=reference['loss'], grad_rel_errors=errors,
                grad_rel_error_max=max(errors.values()), grad_rel_error_median=statistics.median(errors.values()),
                grads_finite=all(g.isfinite().all().item() for g in candidate['grads'].values()))


def run(model_name='vgg8', batch=128, T=4, size=32, width=1.0, device=torch.device('cpu'), seed=0,
        comparisons=COMPARISONS) -> dict:
    """Every comparison as a JSON-ready dict (``rows``: one per comparison)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = photo_like(batch, size, generator).to(device)
    labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
    model = sj_ei.models.build(model_name, 10, 3, norm='ei', T=T, width=width).to(device)
    sj_ei.ei_init(model, x.unsqueeze(0).expand(T, *x.shape))
    done, rows = {}, []
    for backend, dtype, ref_backend, ref_dtype in comparisons:
        row = dict(candidate=f'{backend}/{dtype}', reference=f'{ref_backend}/{ref_dtype}')
        with recorded(row):
            for setting in ((backend, dtype), (ref_backend, ref_dtype)):
                if setting not in done:
                    done[setting] = step(model, x, labels, *setting)
            row.update(compare(done[backend, dtype], done[ref_backend, ref_dtype]))
        rows.append(row)
    return dict(model=model_name, width=width, batch=batch, T=T, size=size, device=str(device),
                torch=torch.__version__, rows=rows)


def table(result: dict) -> str:
    """One line per comparison: spike flips per layer (%), readout and gradient differences."""
    lines = [f"model {result['model']} (width {result['width']}), batch {result['batch']}, T {result['T']}, "
             f"{result['size']}x{result['size']}, device {result['device']}, torch {result['torch']}; "
             'flips: % of spikes that differ, per E-I block in order']
    for r in result['rows']:
        head = f"{r['candidate']:<15} vs {r['reference']:<14}"
        if 'error' in r:
            lines.append(f'{head} failed: {r["error"]}')
            continue
        flips = ' '.join(f'{100 * f:.2g}' for f in r['spike_flips'])
        lines.append(f"{head} flips [{flips}]  logits max diff {r['logits_max_diff']:.3g}  "
                     f"loss {r['loss']:.4f} (ref {r['loss_ref']:.4f})  grad rel error median "
                     f"{r['grad_rel_error_median']:.3g} max {r['grad_rel_error_max']:.3g}{'' if r['grads_finite'] else '  NON-FINITE GRADIENTS'}")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m sj_ei.parity', description=__doc__.split('\n\n')[0])
    parser.add_argument('-model', default='vgg8', choices=sj_ei.models.NAMES)
    parser.add_argument('-b', type=int, default=128, help='batch size (default 128)')
    parser.add_argument('-T', type=int, default=4, help='time steps (default 4)')
    parser.add_argument('-size', type=int, default=32, help='image height and width (default 32, CIFAR)')
    parser.add_argument('-width', type=float, default=1.0, help="channel width factor (default 1, the paper's)")
    parser.add_argument('-device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('-o', default=None, metavar='JSON', help='also write the results here')
    args = parser.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('-device cuda: no CUDA device is available here; use -device cpu')
    result = run(args.model, args.b, args.T, args.size, args.width, torch.device(args.device))
    report(table(result), result, args.o)


if __name__ == '__main__':
    sys.exit(main())
