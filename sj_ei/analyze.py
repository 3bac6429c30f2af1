"""E-I diagnostics of a running network: the paper's Figures 4, 5 and 8, E-I balance and activity.

    rec = sj_ei.analyze.record(net, batches)                   # hooks on the running network (eval, no grad)
    grads = sj_ei.analyze.gradient_norms(fresh_net, x, labels) # Figure 5: at initialization, with/without 1/d
    maps = sj_ei.analyze.feature_maps({'E-I': net, 'BN': bn_net}, x)  # Figure 8: input and firing-rate maps
    summary = sj_ei.analyze.summarize(rec, init=rec0, twin=bn_rec, gradients=grads)  # JSON-ready numbers
    sj_ei.analyze.save(summary, 'analysis/')                   # summary.json and the PNG figures
    python -m sj_ei.analyze -cfg configs/quickstart.yaml -pretrained CKPT [-bn-pretrained CKPT] [-out DIR]

``record`` hooks every hidden E-I layer (its ``EICurrents``: ``d = I_EE - I_EI [.., n_E, ..]`` and
``I_sh~``, and ``I_EE``, ``I_EI`` apart, recomputed from its input and its I population's ``r_I``; a
layer whose neuron takes ``I_int`` is switched to hand over its currents while recorded and given
``I_int = sj_ei.currents.integrate(currents)`` back, the same numbers), every I population
(``r_I``) and every spiking neuron (its spikes; in a network without E-I layers also its input
current, e.g. after batch norm).  Per layer it keeps exact running sums (float64) of what the
summary reports as means, correlations and moments, and a random sample of the values for the
histograms.  Everything a figure draws is in the summary (histogram counts and edges included),
so figures and numbers cannot disagree.  Plotting needs matplotlib (``pip install sj_ei[analyze]``).

Summary numbers, per hidden E-I layer: ``I_int`` mean, std, skewness ``g``, excess kurtosis ``k`` and
Sarle's bimodality coefficient ``BC = (g^2 + 1) / (k + 3 (n-1)^2 / ((n-2)(n-3)))`` (moments of all
``n`` values; ``BC > 5/9``, the uniform distribution's, suggests two modes); the E-I balance:
means of ``I_EE`` and ``I_EI``, their ratio ``mean I_EI / mean I_EE``, and their Pearson correlation
across neurons, positions, samples and time steps; the divisive gain ``g_E / I_sh~`` (mean, and the
5/50/95% quantiles of the sample).  Per E population: the firing rate (spikes per neuron per step)
and its per-channel values; per I population: mean ``r_I`` and the fraction of nonzero ``r_I``.
Feature maps (Figure 8): for a few inputs and one block (an E population and what feeds it), each
network's firing rate per position (spikes averaged over time steps and channels), its Pearson
correlation with the input's contours (Sobel gradient magnitude of its intensity, pooled to the map's
size) and with the intensity itself, and the fraction of positions that fire at all.
"""
import json
import math
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional, neuron

from .circuit import pointwise
from .currents import EICurrents, channel_view, integrate
from .layers import ei_init, ei_layers

#: values of each quantity kept per layer for the histograms
SAMPLE = 200_000
#: the E-I layer parameters of the paper's Figure 5
PARAMETERS = ('weight_ee', 'weight_ie', 'weight_ei', 'gain_i', 'gain_e')
#: test inputs the feature-map figure (Figure 8) shows
MAP_SAMPLES = 4


class _Moments:
    """Exact float64 power sums of the values ``x`` seen (``n``, ``sum x^k`` for k = 1..4) and, with a
    partner ``y``, ``sum x y``; plus a random sample of at most ``SAMPLE`` values (pairs)."""

    def __init__(self, generator: torch.Generator):
        self.n, self.sums, self.xy, self.parts, self.generator = 0, [0.0] * 4, 0.0, [], generator

    def add(self, x: torch.Tensor, y: Optional[torch.Tensor] = None):
        x = x.detach().flatten().double()
        self.n += x.numel()
        power = torch.ones_like(x)
        for k in range(4):
            power = power * x
            self.sums[k] += power.sum().item()
        if y is not None:
            y = y.detach().flatten().double()
            self.xy += (x * y).sum().item()
            x = torch.stack([x, y])
        keep = torch.randperm(x.shape[-1], generator=self.generator)[:SAMPLE] if x.shape[-1] > SAMPLE else slice(None)
        self.parts.append(x[..., keep].float())

    def sample(self) -> torch.Tensor:
        """``[k]`` sampled values (``[2, k]`` pairs ``(x, y)`` at the same positions when ``y`` was given)."""
        values = torch.cat(self.parts, -1) if self.parts else torch.zeros(0)
        if values.shape[-1] > SAMPLE:
            values = values[..., torch.randperm(values.shape[-1], generator=self.generator)[:SAMPLE]]
        return values

    def mean(self) -> float:
        return self.sums[0] / self.n

    def variance(self) -> float:
        return max(self.sums[1] / self.n - self.mean() ** 2, 0.0)

    def stats(self) -> dict:
        """Mean, std, skewness, excess kurtosis and Sarle's bimodality coefficient of all values."""
        n, m = self.n, self.mean()
        s1, s2, s3, s4 = (s / n for s in self.sums)
        m2 = self.variance()
        m3 = s3 - 3 * m * s2 + 2 * m ** 3
        m4 = s4 - 4 * m * s3 + 6 * m * m * s2 - 3 * m ** 4
        skew = m3 / m2 ** 1.5 if m2 > 0 else math.nan
        kurt = m4 / m2 ** 2 - 3 if m2 > 0 else math.nan
        bc = (skew ** 2 + 1) / (kurt + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))) if n > 3 else math.nan
        return dict(n=n, mean=m, std=math.sqrt(m2), skewness=skew, excess_kurtosis=kurt, bimodality=bc)


class Record:
    """What ``record`` saw: per hidden E-I layer ``i_int``, ``i_ee``, ``i_ei``, ``gain`` (``g_E / I_sh~``)
    (``_Moments``; ``i_ee`` also holds ``sum I_EE I_EI``); per I population ``r_i``; per spiking neuron
    ``spikes`` (summed per channel) and, in a network without E-I layers, its input ``current``."""

    def __init__(self, label: str, seed: int = 0):
        self.label, self.generator = label, torch.Generator().manual_seed(seed)
        self.layers: Dict[str, Dict[str, _Moments]] = {}
        self.inhibition: Dict[str, dict] = {}   # layer -> {'sum', 'active', 'n'}
        self.spikes: Dict[str, dict] = {}       # neuron -> {'per_channel' [C], 'n_per_channel'}
        self.currents: Dict[str, _Moments] = {}  # neuron -> its input (networks without E-I layers)

    def moments(self, table: dict, name: str, key: Optional[str] = None) -> _Moments:
        slot = table.setdefault(name, {}) if key else table
        key = key or name
        if key not in slot:
            slot[key] = _Moments(self.generator)
        return slot[key]


def _channel_dim(module: nn.Module, x: torch.Tensor) -> int:
    return 2 if getattr(module, 'step_mode', 's') == 'm' and x.dim() >= 3 else 1


def _ee_ei(layer: nn.Module, x: torch.Tensor, r: torch.Tensor, d: torch.Tensor):
    """``(I_EE, I_EI)`` shaped like ``d``, as the layer's circuit computes them from its input ``x`` and
    its I population's ``r_I [N, n_I, ...]`` (the training path hands over only ``d = I_EE - I_EI``)."""
    i_ee, _ = layer.project(x.flatten(0, 1) if layer.step_mode == 'm' else x)
    compute = torch.promote_types(r.dtype, torch.float32)
    return i_ee.reshape(d.shape), pointwise(layer.weight_ei.to(compute), r.to(compute)).reshape(d.shape)


@torch.no_grad()
def record(net: nn.Module, batches: List[torch.Tensor], label: str = 'network') -> Record:
    """Run ``net`` (eval mode, its own backends; the fused ones hand the currents over too) on every
    model input in ``batches`` (``[T, B, ...]`` or static ``[B, C, H, W]``), states reset after each,
    and return what the hooks saw (``Record``)."""
    rec, hooks, outputs, rates = Record(label), [], {}, {}
    layers = [(name, m) for name, m in ei_layers(net) if not m.readout]

    def on_layer(name, layer, x, c: EICurrents):
        dim = _channel_dim(layer, c.d)
        i_int = integrate(c, dim)
        i_ee, i_ei = _ee_ei(layer, x, rates.pop(name), c.d)
        rec.moments(rec.layers, name, 'i_int').add(i_int)
        rec.moments(rec.layers, name, 'i_ee').add(i_ee, i_ei)
        rec.moments(rec.layers, name, 'i_ei').add(i_ei)
        rec.moments(rec.layers, name, 'gain').add(channel_view(c.gain_e, c.i_sh, dim) / c.i_sh)
        return i_int.to(c.d.dtype) if outputs[name] == 'current' else None

    def on_i_population(name, r):
        rates[name] = r
        slot = rec.inhibition.setdefault(name, dict(sum=0.0, active=0, n=0))
        slot['sum'] += r.double().sum().item()
        slot['active'] += int((r != 0).sum().item())
        slot['n'] += r.numel()

    def on_neuron(name, m, x, spikes):
        dim = _channel_dim(m, spikes)
        per_channel = spikes.double().transpose(0, dim).flatten(1).sum(1)
        slot = rec.spikes.setdefault(name, dict(per_channel=0.0, n_per_channel=0))
        slot['per_channel'] = slot['per_channel'] + per_channel
        slot['n_per_channel'] += spikes.numel() // spikes.shape[dim]
        if not layers and isinstance(x, torch.Tensor):
            rec.moments(rec.currents, name).add(x)

    for name, layer in layers:
        outputs[name] = layer.output
        layer.output = 'currents'
        hooks.append(layer.register_forward_hook(lambda m, a, c, n=name: on_layer(n, m, a[0], c)))
        hooks.append(layer.i_population.register_forward_hook(lambda m, a, r, n=name: on_i_population(n, r)))
    for name, m in net.named_modules():
        if isinstance(m, neuron.BaseNode):
            hooks.append(m.register_forward_hook(lambda m, a, out, n=name: on_neuron(n, m, a[0], out)))
    was_training = net.training
    net.eval()
    try:
        for x in batches:
            net(x)
            functional.reset_net(net)
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
        for name, layer in layers:
            layer.output = outputs[name]
    return rec


def gradient_norms(net: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Dict[str, Dict[str, Dict[str, float]]]:
    """The paper's Figure 5: L2 norms of the gradients of every E-I layer's ``weight_ee``, ``weight_ie``,
    ``weight_ei``, ``gain_i``, ``gain_e`` (those it has) for the cross-entropy of the time-averaged
    output on ``(x, labels)``, ``{'with_1/d': {layer: {parameter: norm}}, 'without_1/d': ...}``: the
    gradient of ``weight_ei`` scaled by ``1/fan-in`` (``grad_scale=True``) and not.  ``net`` is used as
    it is (e.g. right after E-I Init); its ``grad_scale`` switches and gradients are restored."""
    layers = ei_layers(net)
    switches = [layer.grad_scale for _, layer in layers]
    saved = [p.grad for p in net.parameters()]
    result = {}
    try:
        for key, scale in (('with_1/d', True), ('without_1/d', False)):
            for _, layer in layers:
                layer.grad_scale = scale
            net.zero_grad(set_to_none=True)
            out = net(x)
            F.cross_entropy(out.mean(0) if out.dim() == 3 else out, labels).backward()
            functional.reset_net(net)
            result[key] = {name: {p: getattr(layer, p).grad.norm().item() for p in PARAMETERS
                                  if getattr(layer, p) is not None} for name, layer in layers}
    finally:
        for (_, layer), scale in zip(layers, switches):
            layer.grad_scale = scale
        for p, g in zip(net.parameters(), saved):
            p.grad = g
    return result


def blocks(net: nn.Module) -> List[str]:
    """The names of ``net``'s blocks that end in a spiking neuron (``features.0``, ...): the parents of its
    neurons, in forward order; an E-I network and its batch-norm twin share them."""
    return [name.rpartition('.')[0] for name, m in net.named_modules() if isinstance(m, neuron.BaseNode)]


def _input_image(x: torch.Tensor, n: int):
    """``(rgb [n, H, W, 3] in [0, 1], intensity [n, H, W])`` of the first ``n`` model inputs of ``x``: static
    ``[B, C, H, W]`` pixels, or events ``[T, B, C, H, W]`` as counts over time (ON red, OFF blue)."""
    x = x.detach().float()
    image = x[:, :n].sum(0) if x.dim() == 5 else x[:n]
    intensity = image.mean(1)
    if x.dim() == 5:
        image = image / image.amax((1, 2, 3), keepdim=True).clamp(min=1e-12)
    if image.shape[1] == 3:
        rgb = image
    elif image.shape[1] == 2:
        rgb = torch.stack([image[:, 0], torch.zeros_like(image[:, 0]), image[:, 1]], 1)
    else:
        rgb = image.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return rgb.clamp(0, 1).permute(0, 2, 3, 1), intensity


def _contours(intensity: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude ``[n, H, W]`` of ``intensity [n, H, W]`` (borders replicated)."""
    sobel = torch.tensor([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]])
    kernels = torch.stack([sobel, sobel.t()]).unsqueeze(1)
    grad = F.conv2d(F.pad(intensity.unsqueeze(1), (1, 1, 1, 1), mode='replicate'), kernels)
    return grad.pow(2).sum(1).sqrt()


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    norm = (a.norm() * b.norm()).item()
    return (a @ b).item() / norm if norm > 0 else math.nan


@torch.no_grad()
def feature_maps(nets: Dict[str, nn.Module], x: torch.Tensor, block: Optional[str] = None,
                 n: int = MAP_SAMPLES) -> dict:
    """The paper's Figure 8: for the first ``n`` model inputs of ``x`` (``[T, B, ...]`` or static ``[B, C, H, W]``),
    the firing rate per position of ``block`` (a name of ``blocks(net)``; default the first) in every network of
    ``nets`` (label -> network, e.g. the E-I network and its batch-norm twin), spikes ``[T, n, C, H', W']``
    averaged over T and C, run in eval mode.  Returns JSON-ready ``dict(block, input, intensity, contours,
    networks={label: dict(rates, mean_rate, active, contour_correlation, intensity_correlation)})``, maps as
    nested lists ``[n][H][W]`` (``input``: ``[n][H][W][3]``); the correlations are against the contours and the
    intensity pooled to each map's size."""
    rgb, intensity = _input_image(x, n)
    contours = _contours(intensity)
    result = dict(block=block, input=rgb.tolist(), intensity=intensity.tolist(), contours=contours.tolist(),
                  networks={})
    for label, net in nets.items():
        names = blocks(net)
        name = block or (names[0] if names else None)
        if name not in names:
            raise ValueError(f'feature maps: {label} network ({type(net).__name__}) has no block {name!r} ending in a '
                             f'spiking neuron; its blocks: {", ".join(names) or "none"}')
        result['block'] = name
        last = [m for m in dict(net.named_modules())[name].children() if isinstance(m, neuron.BaseNode)][-1]
        seen = []
        hook = last.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
        was_training = net.training
        net.eval()
        try:
            net(x[:, :n] if x.dim() == 5 else x[:n])
        finally:
            functional.reset_net(net)
            net.train(was_training)
            hook.remove()
        spikes = seen[0]
        if spikes.dim() != 5:
            raise ValueError(f'feature maps: block {name!r} of the {label} network gives spikes of shape '
                             f'{tuple(spikes.shape)}, not multi-step feature maps [T, B, C, H, W]')
        rates = spikes.float().mean((0, 2))                                       # [n, H', W']
        size = rates.shape[-2:]
        result['networks'][label] = dict(
            rates=rates.tolist(), mean_rate=rates.mean().item(), active=(rates > 0).double().mean().item(),
            contour_correlation=_correlation(rates, F.adaptive_avg_pool2d(contours, size)),
            intensity_correlation=_correlation(rates, F.adaptive_avg_pool2d(intensity, size)))
    return result


def _histogram(samples: List[torch.Tensor], bins: int, log: bool = False) -> List[dict]:
    """Histograms of ``samples`` on shared edges (0.5-99.5% of their union; log10 of the values when
    ``log``): ``[{'edges': [...], 'counts': [...], 'outside': fraction beyond the edges}, ...]``."""
    values = [s[s > 0].log10() if log else s for s in samples]
    union = torch.cat(values)
    if union.numel() == 0:
        return [dict(edges=[0.0, 1.0], counts=[0], log10=log, outside=0.0) for _ in samples]
    lo, hi = torch.quantile(union, torch.tensor([0.005, 0.995])).tolist()
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = torch.linspace(lo, hi, bins + 1)
    return [dict(edges=edges.tolist(), counts=torch.histc(v, bins, lo, hi).long().tolist(), log10=log,
                 outside=((v < lo) | (v > hi)).double().mean().item() if v.numel() else 0.0) for v in values]


def summarize(trained: Record, init: Optional[Record] = None, twin: Optional[Record] = None,
              gradients: Optional[dict] = None, bins: int = 60) -> dict:
    """The JSON-ready summary of ``trained`` (and of the same network at E-I Init ``init``, and the
    batch-norm ``twin``), with the numbers and histograms behind every figure (see the module docstring)."""
    summary = dict(network=trained.label, layers={}, e_populations={}, i_populations={})
    for name, m in trained.layers.items():
        i_ee, i_ei = m['i_ee'], m['i_ei']
        cov = i_ee.xy / i_ee.n - i_ee.mean() * i_ei.mean()
        std = math.sqrt(i_ee.variance() * i_ei.variance())
        gain = m['gain'].sample()
        quantiles = torch.quantile(gain, torch.tensor([0.05, 0.5, 0.95])).tolist() if gain.numel() else [math.nan] * 3
        entry = dict(i_int=m['i_int'].stats(), i_ee_mean=i_ee.mean(), i_ei_mean=i_ei.mean(),
                     ei_over_ee=i_ei.mean() / i_ee.mean() if i_ee.mean() else math.nan,
                     ee_ei_correlation=cov / std if std > 0 else math.nan,
                     gain=dict(mean=m['gain'].mean(), q05=quantiles[0], median=quantiles[1], q95=quantiles[2]))
        at_init = init.layers[name]['i_int'] if init and name in init.layers else None
        hists = _histogram([m['i_int'].sample()] + ([at_init.sample()] if at_init else []), bins)
        entry['i_int_histogram'] = hists[0]
        if at_init:
            entry['init'] = dict(i_int=at_init.stats(), i_int_histogram=hists[1])
        entry['gain_histogram'] = _histogram([gain], bins, log=True)[0]
        entry['ee_ei_histogram2d'] = _histogram2d(i_ee.sample(), bins)
        summary['layers'][name] = entry
    summary['e_populations'] = _rates(trained)
    summary['i_populations'] = {name: dict(mean_r=s['sum'] / s['n'], active=s['active'] / s['n'])
                                for name, s in trained.inhibition.items()}
    if twin is not None:
        currents = list(twin.currents.items())
        hists = _histogram([m.sample() for _, m in currents], bins) if currents else []
        summary['twin'] = dict(network=twin.label, e_populations=_rates(twin), currents={
            name: dict(stats=m.stats(), histogram=h) for (name, m), h in zip(currents, hists)})
    if gradients is not None:
        summary['gradients'] = gradients
    return summary


def _rates(rec: Record) -> dict:
    out = {}
    for name, s in rec.spikes.items():
        per_channel = (s['per_channel'] / s['n_per_channel']).tolist()
        out[name] = dict(rate=sum(per_channel) / len(per_channel), per_channel=per_channel,
                         silent_channels=sum(r == 0 for r in per_channel) / len(per_channel))
    return out


def _histogram2d(pairs: torch.Tensor, bins: int) -> dict:
    """A 2-D histogram of ``(I_EE, I_EI)`` samples on one shared range (from 0 or below to the 99.5% quantile of both)."""
    if pairs.shape[1] == 0:
        return dict(edges=[0.0, 1.0], counts=[[0]])
    lo, hi = min(pairs.min().item(), 0.0), torch.quantile(pairs.flatten(), 0.995).item()
    hi = hi if hi > lo else lo + 1.0
    edges = torch.linspace(lo, hi, bins + 1)
    counts, _ = torch.histogramdd(pairs.t().contiguous(), bins=[edges, edges])
    return dict(edges=edges.tolist(), counts=counts.long().tolist())


# ---- figures: each draws only what the summary holds ----------------------------------------------

def _short(name: str) -> str:
    """``features.0.layer`` -> ``features.0``: a layer's name in a panel title."""
    return name[:-len('.layer')] if name.endswith('.layer') else name


def _grid(plt, rows: int, columns: int, height: float = 2.4):
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns + 0.4, height * rows + 0.3), squeeze=False)
    return fig, axes


def _stairs(ax, hist: dict, **style):
    counts = torch.tensor(hist['counts'], dtype=torch.float64)
    ax.stairs((counts / counts.sum().clamp(min=1)).tolist(), hist['edges'], **style)


def figure_i_int(summary: dict):
    """The paper's Figure 4: per hidden layer the distribution of ``I_int`` at E-I Init and for this
    network; below, the batch-norm twin's input current to its LIF neurons (when summarized)."""
    import matplotlib.pyplot as plt
    layers = list(summary['layers'].items())
    twin = list(summary.get('twin', {}).get('currents', {}).items())
    fig, axes = _grid(plt, 2 if twin else 1, max(len(layers), len(twin)))
    for ax, (name, entry) in zip(axes[0], layers):
        if 'init' in entry:
            _stairs(ax, entry['init']['i_int_histogram'], color='0.55', fill=True, alpha=0.5,
                    label=f"E-I Init, BC {entry['init']['i_int']['bimodality']:.2f}")
        _stairs(ax, entry['i_int_histogram'], color='C0', linewidth=1.5,
                label=f"{summary['network']}, BC {entry['i_int']['bimodality']:.2f}")
        ax.set_title(f'E-I {_short(name)}', fontsize=9)
        ax.set_xlabel('I_int (a.u., threshold 1)', fontsize=8)
        ax.legend(fontsize=6.5, loc='upper right')
    for ax, (name, entry) in zip(axes[1] if twin else [], twin):
        _stairs(ax, entry['histogram'], color='C3', linewidth=1.5,
                label=f"{summary['twin']['network']}, BC {entry['stats']['bimodality']:.2f}")
        ax.set_title(f'BN {name}', fontsize=9)
        ax.set_xlabel('LIF input after BN (a.u.)', fontsize=8)
        ax.legend(fontsize=6.5, loc='upper right')
    for row in axes:
        row[0].set_ylabel('fraction of values', fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
        if not ax.has_data():
            ax.set_visible(False)
    fig.suptitle('Integrated current per layer (BC: Sarle\'s bimodality coefficient, > 0.56 suggests two modes)',
                 fontsize=9)
    fig.tight_layout()
    return fig


def figure_balance(summary: dict):
    """Per hidden layer: ``I_EI`` against ``I_EE`` (2-D histogram, log colour), and the distribution
    of the divisive gain ``g_E / I_sh~`` (log10)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    layers = list(summary['layers'].items())
    fig, axes = _grid(plt, 2, len(layers), height=2.5)
    for (top, bottom), (name, entry) in zip(axes.T, layers):
        h = entry['ee_ei_histogram2d']
        counts = torch.tensor(h['counts'], dtype=torch.float64).t()
        top.pcolormesh(h['edges'], h['edges'], counts.clamp(min=0.5).tolist(), cmap='Blues',
                       norm=LogNorm(vmin=0.5, vmax=max(1.0, counts.max().item())))
        top.plot(h['edges'][::len(h['edges']) - 1], h['edges'][::len(h['edges']) - 1], 'k--', linewidth=0.7)
        top.set_title(f"{_short(name)}: r = {entry['ee_ei_correlation']:.2f}, "
                      f"<I_EI>/<I_EE> = {entry['ei_over_ee']:.2f}", fontsize=8)
        top.set_xlabel('I_EE (a.u.)', fontsize=8)
        _stairs(bottom, entry['gain_histogram'], color='C2', fill=True, alpha=0.6)
        bottom.set_title(f"g_E / I_sh~: median {entry['gain']['median']:.3g}", fontsize=8)
        bottom.set_xlabel('log10 g_E / I_sh~ (1 / a.u.)', fontsize=8)
    axes[0][0].set_ylabel('I_EI (a.u.)', fontsize=8)
    axes[1][0].set_ylabel('fraction of values', fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
    fig.suptitle(f"E-I balance of {summary['network']}: excitation vs subtractive inhibition (dashed: equal), "
                 'and the divisive gain', fontsize=9)
    fig.tight_layout()
    return fig


def figure_rates(summary: dict):
    """Firing rate of every E population (per channel, and the mean) and activity of every I population."""
    import matplotlib.pyplot as plt
    pops = [('E-I', summary['e_populations'])]
    if 'twin' in summary:
        pops.append(('BN', summary['twin']['e_populations']))
    inhibition = summary['i_populations']
    fig, axes = _grid(plt, 1, len(pops) + bool(inhibition), height=3.2)
    fig.set_figwidth(3.6 * (len(pops) + bool(inhibition)))
    for ax, (kind, rates) in zip(axes[0], pops):
        names = list(rates)
        ax.boxplot([r['per_channel'] for r in rates.values()], showfliers=False)
        ax.plot(range(1, len(names) + 1), [r['rate'] for r in rates.values()], 'o', color='C1', label='mean')
        ax.set_xticks(range(1, len(names) + 1), [_short(n) for n in names], rotation=35, ha='right', fontsize=7)
        ax.set_ylabel('spikes per neuron per step', fontsize=8)
        ax.set_title(f'{kind} E populations (boxes: channels)', fontsize=9)
        ax.legend(fontsize=7)
    if inhibition:
        ax = axes[0][-1]
        names = list(inhibition)
        positions = torch.arange(len(names), dtype=torch.float64)
        bars = ax.bar((positions - 0.2).tolist(), [v['active'] for v in inhibition.values()], 0.4,
                      label='fraction r_I > 0')
        ax.set_ylabel('fraction of I neurons x steps active', fontsize=8)
        twin_ax = ax.twinx()
        means = twin_ax.bar((positions + 0.2).tolist(), [v['mean_r'] for v in inhibition.values()], 0.4,
                            color='C3', label='mean r_I')
        twin_ax.set_ylabel('mean r_I (a.u.)', fontsize=8)
        twin_ax.tick_params(labelsize=7)
        ax.set_ylim(0, 1.3)
        twin_ax.set_ylim(0, 1.3 * max(v['mean_r'] for v in inhibition.values()) or 1.0)
        ax.set_xticks(positions.tolist(), [_short(n) for n in names], rotation=35, ha='right', fontsize=7)
        ax.set_title('I populations', fontsize=9)
        ax.legend(handles=[bars, means], loc='upper left', fontsize=7)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def figure_gradients(summary: dict):
    """The paper's Figure 5: gradient norm of each parameter group per layer at initialization,
    with and without the ``1/d`` scale of ``W_EI``'s gradient (log scale)."""
    import matplotlib.pyplot as plt
    grads = summary['gradients']
    fig, axes = _grid(plt, 1, len(grads), height=3.2)
    fig.set_figwidth(5.0 * len(grads))
    for ax, (key, per_layer) in zip(axes[0], grads.items()):
        names = list(per_layer)
        for i, p in enumerate(PARAMETERS):
            values = [per_layer[n].get(p, math.nan) for n in names]
            ax.bar([j + (i - 2) * 0.16 for j in range(len(names))], values, 0.16, label=p)
        ax.set_yscale('log')
        ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=35, ha='right', fontsize=7)
        ax.set_ylabel('gradient L2 norm', fontsize=8)
        ax.set_title(f"at initialization, {key.replace('_', ' ')} on W_EI's gradient", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc='lower center', ncol=len(PARAMETERS), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def figure_feature_maps(summary: dict):
    """The paper's Figure 8: each test input (a row) next to the firing-rate map of the same block in every
    network summarized (E-I, batch-norm twin), each map on its own colour scale."""
    import matplotlib.pyplot as plt
    maps = summary['feature_maps']
    networks = list(maps['networks'].items())
    rows, columns = len(maps['input']), 1 + len(networks)
    fig, axes = _grid(plt, rows, columns, height=2.3)
    fig.set_figwidth(2.5 * columns + 0.6)
    for i, row in enumerate(axes):
        row[0].imshow(maps['input'][i], interpolation='nearest')
        for ax, (label, entry) in zip(row[1:], networks):
            image = ax.imshow(entry['rates'][i], cmap='magma', vmin=0, interpolation='nearest')
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
    axes[0][0].set_title('input', fontsize=8)
    for ax, (label, entry) in zip(axes[0][1:], networks):
        ax.set_title(f"{label}: rate {entry['mean_rate']:.3f}\nr(contours) {entry['contour_correlation']:.2f}, "
                     f"r(intensity) {entry['intensity_correlation']:.2f}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Firing rate of {_short(maps['block'])} (spikes per neuron and step, averaged over channels)",
                 fontsize=8)
    fig.tight_layout()
    return fig


FIGURES = {'i_int': figure_i_int, 'balance': figure_balance, 'rates': figure_rates, 'gradients': figure_gradients,
           'feature_maps': figure_feature_maps}


def save(summary: dict, out, dpi: int = 90) -> List[Path]:
    """Write ``summary.json`` and every figure the summary has data for as ``NAME.png`` to folder ``out``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / 'summary.json']
    paths[0].write_text(json.dumps(summary, indent=1))
    for name, draw in FIGURES.items():
        if name in ('gradients', 'feature_maps') and name not in summary or name == 'balance' and not summary['layers']:
            continue
        fig = draw(summary)
        fig.savefig(out / f'{name}.png', dpi=dpi)
        plt.close(fig)
        paths.append(out / f'{name}.png')
    return paths


def log_figures(writer, net: nn.Module, batches: List[torch.Tensor], step: int) -> bool:
    """Add the E-I balance (E-I networks), firing-rate and feature-map (its first block on the first inputs)
    figures of ``net`` on ``batches`` to the TensorBoard ``writer`` as images ``analysis/balance``,
    ``analysis/rates`` and ``analysis/feature_maps`` at ``step``.
    Returns False (and warns) where matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        warnings.warn('sj_ei.analyze: matplotlib is not installed, so no figures were logged '
                      '(pip install sj_ei[analyze], or turn them off with -set figures=false)')
        return False
    matplotlib.use('Agg')
    summary = summarize(record(net, batches, f'the model at step {step}'))
    summary['feature_maps'] = feature_maps({f'step {step}': net}, batches[0])
    if summary['layers']:
        writer.add_figure('analysis/balance', figure_balance(summary), step)
    writer.add_figure('analysis/rates', figure_rates(summary), step)
    writer.add_figure('analysis/feature_maps', figure_feature_maps(summary), step)
    return True


def main(argv=None):
    """The command line: ``python -m sj_ei.analyze -h``."""
    from . import cli, config as cfg
    parser = cli.parser('python -m sj_ei.analyze', 'E-I diagnostics of a trained network on batches of its test '
                        "set: I_int per layer at E-I Init and now (the paper's Figure 4, beside the batch-norm "
                        "twin's), E-I balance, firing rates, gradient norms at initialization (Figure 5), firing-rate maps "
                        'of one block of both networks beside their inputs (Figure 8); writes summary.json and PNG '
                        'figures.')
    parser.add_argument('-out', default='analysis', metavar='DIR', help='folder for summary.json and the figures '
                        '(default analysis/)')
    parser.add_argument('-map-layer', metavar='BLOCK', help='block of the feature maps (Figure 8), e.g. features.2 '
                        '(default: the first)')
    parser.add_argument('-map-samples', type=int, default=MAP_SAMPLES, metavar='N',
                        help=f'test inputs of the feature maps (default {MAP_SAMPLES})')
    args = parser.parse_args(argv)
    with cli.errors():
        if args.map_samples < 1:
            raise ValueError(f'-map-samples must be >= 1, got {args.map_samples}')
        try:
            import matplotlib  # noqa: F401 (checked before the work, not after it)
        except ImportError:
            raise cfg.ConfigError('python -m sj_ei.analyze draws with matplotlib, which is not installed: '
                             "pip install 'sj_ei[analyze]' (or pip install matplotlib)") from None
        config, batches, labels, ei_net, bn_net = cli.networks(args)
        torch.manual_seed(config['seed'])
        fresh = cfg.build_model(config, 'ei')
        ei_init(fresh, batches[0])
    what = args.pretrained or 'E-I Init'
    trained = record(ei_net, batches, 'trained' if args.pretrained else 'E-I Init')
    init = record(fresh, batches, 'E-I Init')
    twin = record(bn_net, batches, 'BN trained' if args.bn_pretrained else 'BN untrained (calibrated)')
    summary = summarize(trained, init, twin, gradient_norms(fresh, batches[0], labels[0]))
    with cli.errors():
        names = ('E-I trained' if args.pretrained else 'E-I Init', twin.label)
        summary['feature_maps'] = feature_maps(dict(zip(names, (ei_net, bn_net))), batches[0], args.map_layer,
                                               args.map_samples)
    summary['source'] = dict(config=args.cfg, pretrained=args.pretrained, bn_pretrained=args.bn_pretrained,
                             batches=len(batches), samples=sum(len(y) for y in labels))
    paths = save(summary, args.out)
    print(f'{config["model"]} on {config["dataset"]} ({what}): ' + '; '.join(
        f"{_short(n)} BC {e['i_int']['bimodality']:.2f} r(I_EE, I_EI) {e['ee_ei_correlation']:.2f}"
        for n, e in summary['layers'].items()))
    print('wrote ' + ', '.join(map(str, paths)))


if __name__ == '__main__':
    main()
