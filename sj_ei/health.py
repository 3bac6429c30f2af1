"""Is a spiking network alive?  Firing rates of its E populations, and one check for collapse.

A narrow E-I network trained too hard can collapse: a layer falls silent (no spike ever
again, so no gradient through it), saturates (a spike at every step) or goes blind (it still
fires, but every neuron fires alike for every sample, so nothing after it can tell the
inputs apart), and the loss sits at ``ln(num_classes)``.  Training on would only spend time:
``FiringRates`` watches every E population of a network in your own loop, ``collapse`` says
what (if anything) has collapsed::

    rates = sj_ei.health.FiringRates(net)
    for epoch in range(epochs):
        rates.reset(); losses = []
        for x, y in loader:
            ...; losses.append(loss.item())
        sj_ei.health.check(rates.rates(), losses, num_classes=10, shares=rates.input_shares())
"""
import math
from typing import Optional, Sequence

import torch
from spikingjelly.activation_based import neuron

from .errors import UserError

#: an E population firing less than this (spikes per neuron per time step) is silent ...
SILENT = 1e-4
#: ... and more than this, saturated
SATURATED = 0.99
#: ... and one whose input share (``FiringRates.input_shares``) is below this, blind: 0.35-0.75 at
#: E-I Init, 0.000-0.003 in narrow VGG-8s that never learned again; networks that went on to learn
#: passed through 0.04-0.05 for an epoch or two (docs/collapse.md), so those are not judged
BLIND = 0.01
#: ... a population below this at the end of a run that stayed near chance is named as nearly blind
#: (the stuck runs of docs/collapse.md sat at 0.04; runs that learned were above 0.2)
NEARLY_BLIND = 0.05
#: a loss this close to ln(num_classes) at every one of at least FLAT_STEPS steps is flat: the
#: output no longer depends on the input (at E-I Init it is ~1e-2 away, and moves from batch to batch)
FLAT = 1e-3
FLAT_STEPS = 8


class CollapseError(UserError, RuntimeError):
    """A network whose E populations or loss show that it no longer learns."""


def e_populations(net: torch.nn.Module) -> dict:
    """``{name: module}`` of every spiking neuron (spikingjelly ``BaseNode``, sj_ei's ``EILIFNode``
    too) of ``net``: the E populations, whose forward output is their spikes ``[T, B, ...]``."""
    return {name: m for name, m in net.named_modules() if isinstance(m, neuron.BaseNode)}


class FiringRates:
    """Mean spike rate, and input share, of every E population of ``net`` over the forwards
    since ``reset``.

    A forward hook adds each population's spikes (``[T, B, ...]`` in multi-step mode, ``[B, ...]``
    per step in single-step mode) while gradients are enabled (training forwards; not
    ``torch.no_grad()`` evaluation or E-I Init), on every backend.  ``remove()`` takes the hooks off.
    """

    def __init__(self, net: torch.nn.Module):
        self.reset()
        self._hooks = [m.register_forward_hook(lambda m, inputs, spikes, name=name: self._add(m, name, spikes))
                       for name, m in e_populations(net).items()]

    def _add(self, node: torch.nn.Module, name: str, spikes: torch.Tensor):
        if not torch.is_grad_enabled():
            return
        spikes = spikes.detach().float()
        rate = spikes.mean()
        self._sums[name] = self._sums.get(name, 0) + rate
        self._counts[name] = self._counts.get(name, 0) + 1
        samples = 1 if getattr(node, 'step_mode', 's') == 'm' else 0
        if spikes.shape[samples] > 1:  # judged without a device sync: a silent or saturated forward counts 0 of 0
            variance = rate * (1 - rate)
            judged = variance > 0
            share = spikes.var(samples, unbiased=False).mean() / torch.where(judged, variance, 1)
            self._shares[name] = self._shares.get(name, 0) + share
            self._share_counts[name] = self._share_counts.get(name, 0) + judged

    def reset(self):
        self._sums, self._counts, self._shares, self._share_counts = {}, {}, {}, {}

    def rates(self) -> dict:
        """``{population name: spikes per neuron per time step}``, in forward order."""
        return {name: (total / self._counts[name]).item() for name, total in self._sums.items()}

    def input_shares(self) -> dict:
        """``{population name: the share of its spikes' variance that comes from the input}``: the
        variance over a batch's samples of each neuron's spike at each step, averaged, over the
        variance ``p (1 - p)`` of spikes at rate ``p``.  0 when every sample gives the same spikes,
        near 1 when which neurons fire depends on the sample alone; forwards of one sample, or of a
        silent or saturated population, are left out."""
        return {name: (total / count).item() for name, total in self._shares.items()
                if (count := self._share_counts[name])}

    def remove(self):
        for hook in self._hooks:
            hook.remove()


def collapse(rates: dict, losses: Sequence[float] = (), num_classes: Optional[int] = None,
             shares: Optional[dict] = None, silent: float = SILENT, saturated: float = SATURATED,
             blind: float = BLIND) -> Optional[str]:
    """What has collapsed, in one sentence, or None.

    ``rates``: ``{population: mean firing rate}`` over a period (e.g. ``FiringRates.rates()`` over
    an epoch); ``losses``: the training losses of that period, with ``num_classes``; ``shares``:
    ``FiringRates.input_shares()`` of the period.  Collapsed: E populations with a rate below
    ``silent`` or above ``saturated``, else with an input share below ``blind`` (all are named), or at least
    ``FLAT_STEPS`` losses, every one within ``FLAT`` of ``ln(num_classes)``."""
    dead = [f'{name!r} is {"silent" if rate < silent else "saturated (a spike at nearly every step)"} '
            f'(mean firing rate {rate:.3g})' for name, rate in rates.items() if rate < silent or rate > saturated]
    if dead:
        return 'E population ' + '; '.join(dead)
    blinded = [f'{name!r} fires alike for every input (input share {share:.2g}, rate {rates[name]:.3g})'
               for name, share in (shares or {}).items() if share < blind]
    if blinded:
        return 'E population ' + '; '.join(blinded) + ': the output no longer depends on the input'
    if (len(losses) >= FLAT_STEPS and num_classes
            and all(abs(loss - math.log(num_classes)) < FLAT for loss in losses)):
        return (f'the loss is flat at ln({num_classes}) = {math.log(num_classes):.4f} '
                f'(all {len(losses)} steps): the output no longer depends on the input')
    return None


def check(rates: dict, losses: Sequence[float] = (), num_classes: Optional[int] = None,
          shares: Optional[dict] = None, **thresholds) -> None:
    """``CollapseError`` (with ``collapse``'s sentence and every population's rate) if collapsed."""
    problem = collapse(rates, losses, num_classes, shares, **thresholds)
    if problem:
        raise CollapseError(f'{problem}; firing rates {format_rates(rates)}')


def format_rates(rates: dict) -> str:
    """``'features.0.neuron 0.12, features.2.neuron 0'``."""
    return ', '.join(f'{name} {rate:.3g}' for name, rate in rates.items())
