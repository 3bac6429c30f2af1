"""Does an E-I network's gradient fit float16?  Under float16 autocast the E current ``I_EE`` comes
out of its convolution in float16, so its gradient ``dL/dI_EE = g_E dL/dI_int / I_sh~`` (computed in
float32, divided by a shunting current that can be small) is cast back to float16, after
``torch.amp.GradScaler`` has multiplied the loss by its scale (2^16 at the start, doubled after
every 2000 steps without an overflow, halved with the step skipped after one).

This trains the quick start's network (E-I VGG-8 at width 0.25 on the synthetic events, SGD as the
trainer) in float32 and records, per E-I layer and step, the largest ``|dL/dI_EE|`` and how many of
its non-zero entries are below float16's smallest subnormal (2^-24, flushed to 0) at a scale:

    python -m sj_ei.fp16_range -steps 512        (the quick start's 16 epochs: about 3 min on one core)

It reports the fraction of steps that would overflow float16 at GradScaler's first scale (2^16:
skipped steps), the largest power-of-two scale that never overflows, and the fraction flushed to
0 there.
"""
import argparse
import math
import sys

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

import sj_ei
from . import datasets

FP16_MAX, FP16_TINY = 65504.0, 2.0 ** -24
FIRST_SCALE = 2.0 ** 16
EXPONENT_LOW, EXPONENT_HIGH = -160, 128  # the histogram's bins: float32's exponents and its subnormals


def exponent_histogram(g: torch.Tensor) -> torch.Tensor:
    """``[2, bins]`` float64: the count (row 0) and the summed magnitude (row 1) of the non-zero entries of
    ``g`` per ``floor(log2 |g|)``, bin ``k - EXPONENT_LOW`` for exponent ``k`` (``|g| < 2^k`` exactly when
    its exponent is below ``k``)."""
    magnitudes = g[g != 0].abs()
    bins = torch.frexp(magnitudes)[1] - 1 - EXPONENT_LOW
    size = EXPONENT_HIGH - EXPONENT_LOW
    return torch.stack([torch.bincount(bins, minlength=size).double(),
                        torch.bincount(bins, weights=magnitudes.double(), minlength=size)]).cpu()


def train_and_record(steps: int, batch: int = 32, seed: int = 0, device=torch.device('cpu')) -> dict:
    """``{'layers': {layer name: [(max |dL/dI_EE|, histogram of floor(log2) of its non-zero entries from
    EXPONENT_LOW) per step]}, 'losses': [...]}``."""
    torch.manual_seed(seed)
    data = datasets.build('synthetic', None, 4, True, num_samples=1024, num_test_samples=64, size=32, seed=seed)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    model = sj_ei.models.build('vgg8', 10, 2, norm='ei', T=4, width=0.25).to(device)
    sj_ei.ei_init(model, datasets.model_input(next(iter(loader))[0].to(device)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=5e-4)
    sj_ei.constrain(model, optimizer)
    record, losses = {}, []

    def keep(name):
        def hook(module, inputs, currents):  # the block's layer hands EICurrents to its EILIFNode; dL/dd = dL/dI_EE
            currents.d.register_hook(lambda g: record.setdefault(name, []).append(g.detach().abs().flatten()))
        return hook
    for name, m in model.named_modules():
        if isinstance(m, sj_ei.EIBlock):
            m.layer.register_forward_hook(keep(name))
    step = 0
    while step < steps:
        for x, labels in loader:
            x, labels = datasets.model_input(x.to(device)), labels.to(device)
            loss = F.cross_entropy(model(x).mean(0), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            functional.reset_net(model)
            losses.append(loss.item())
            for grads in record.values():  # of each step: the maximum and the histogram of the exponents
                grads[-1] = (grads[-1].max().item(), exponent_histogram(grads[-1]))
            step += 1
            if step == steps:
                break
    return dict(layers=record, losses=losses)


def summary(record: dict) -> list:
    """Per layer: the largest gradient, the fraction of steps overflowing at ``FIRST_SCALE``, the largest
    safe power-of-two scale, and the fractions of the non-zero entries and of their summed magnitude
    flushed to 0 at that scale and at ``FIRST_SCALE``."""
    rows = []
    for name, steps in record['layers'].items():
        largest = max(m for m, _ in steps)
        safe = 2.0 ** math.floor(math.log2(FP16_MAX / largest))
        histogram = sum(h for _, h in steps)
        # g scale < 2^-24 exactly when floor(log2 g) < -24 - log2(scale), for a power-of-two scale
        flushed = lambda scale: (histogram[:, :-24 - round(math.log2(scale)) - EXPONENT_LOW].sum(1)
                                 / histogram.sum(1)).tolist()
        (entries_safe, mass_safe), (entries_first, mass_first) = flushed(safe), flushed(FIRST_SCALE)
        rows.append(dict(layer=name, max_grad=largest,
                         steps_overflowing=sum(m * FIRST_SCALE > FP16_MAX for m, _ in steps) / len(steps),
                         safe_scale=safe, flushed_at_safe=entries_safe, flushed_mass_at_safe=mass_safe,
                         flushed_at_first=entries_first, flushed_mass_at_first=mass_first))
    return rows


def table(rows: list, losses: list) -> str:
    lines = [f'{len(losses)} float32 steps, loss {losses[0]:.3f} -> {sum(losses[-10:]) / min(10, len(losses)):.3f} '
             f'(mean of the last 10); dL/dI_EE per E-I layer against float16 (max {FP16_MAX:g}, '
             'smallest subnormal 2^-24), GradScaler first scale 2^16; flushed: % of the non-zero entries '
             '(% of their summed magnitude) below 2^-24 once scaled',
             f"{'layer':<14}{'max |g|':>10}{'steps > max at 2^16':>21}{'safe scale':>12}"
             f"{'flushed at safe':>22}{'flushed at 2^16':>22}"]
    for r in rows:
        lines.append(f"{r['layer']:<14}{r['max_grad']:>10.3g}{100 * r['steps_overflowing']:>20.1f}%"
                     f"{'2^%d' % math.log2(r['safe_scale']):>12}"
                     f"{100 * r['flushed_at_safe']:>11.3f}% ({100 * r['flushed_mass_at_safe']:.2g}%)"
                     f"{100 * r['flushed_at_first']:>11.3f}% ({100 * r['flushed_mass_at_first']:.2g}%)")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m sj_ei.fp16_range', description=__doc__.split('\n\n')[0])
    parser.add_argument('-steps', type=int, default=512, help="training steps (default 512, the quick start's)")
    parser.add_argument('-device', default='cpu')
    args = parser.parse_args(argv)
    record = train_and_record(args.steps, device=torch.device(args.device))
    print(table(summary(record), record['losses']))


if __name__ == '__main__':
    sys.exit(main())
