"""Is a spiking network alive?  Firing rates of its E populations, and one check for collapse.

A narrow E-I network trained too hard can collapse: a layer falls silent (no spike ever
again, so no gradient through it) or saturates (a spike at every step), and the loss sits at
``ln(num_classes)``.  Training on would only spend time: ``FiringRates`` watches every E
population of a network in your own loop, ``collapse`` says what (if anything) has collapsed::

    rates = sj_ei.health.FiringRates(net)
    for epoch in range(epochs):
        rates.reset(); losses = []
        for x, y in loader:
            ...; losses.append(loss.item())
        sj_ei.health.check(rates.rates(), losses, num_classes=10)   # CollapseError if collapsed
"""
import math
from typing import Optional, Sequence

import torch
from spikingjelly.activation_based import neuron

#: an E population firing less than this (spikes per neuron per time step) is silent ...
SILENT = 1e-4
#: ... and more than this, saturated
SATURATED = 0.99
#: a loss this close to ln(num_classes) at every one of at least FLAT_STEPS steps is flat: the
#: output no longer depends on the input (at E-I Init it is ~1e-2 away, and moves from batch to batch)
FLAT = 1e-3
FLAT_STEPS = 8


class CollapseError(RuntimeError):
    """A network whose E populations or loss show that it no longer learns."""


def e_populations(net: torch.nn.Module) -> dict:
    """``{name: module}`` of every spiking neuron (spikingjelly ``BaseNode``, sj_ei's ``EILIFNode``
    too) of ``net``: the E populations, whose forward output is their spikes ``[T, B, ...]``."""
    return {name: m for name, m in net.named_modules() if isinstance(m, neuron.BaseNode)}


class FiringRates:
    """Mean spike rate of every E population of ``net`` over the forwards since ``reset``.

    A forward hook adds the mean of each population's spikes while gradients are enabled
    (training forwards; not ``torch.no_grad()`` evaluation or E-I Init), on every backend.
    ``remove()`` takes the hooks off.
    """

    def __init__(self, net: torch.nn.Module):
        self._sums, self._counts = {}, {}
        self._hooks = [m.register_forward_hook(lambda m, inputs, spikes, name=name: self._add(name, spikes))
                       for name, m in e_populations(net).items()]

    def _add(self, name: str, spikes: torch.Tensor):
        if torch.is_grad_enabled():
            self._sums[name] = self._sums.get(name, 0) + spikes.detach().float().mean()
            self._counts[name] = self._counts.get(name, 0) + 1

    def reset(self):
        self._sums, self._counts = {}, {}

    def rates(self) -> dict:
        """``{population name: spikes per neuron per time step}``, in forward order."""
        return {name: (total / self._counts[name]).item() for name, total in self._sums.items()}

    def remove(self):
        for hook in self._hooks:
            hook.remove()


def collapse(rates: dict, losses: Sequence[float] = (), num_classes: Optional[int] = None,
             silent: float = SILENT, saturated: float = SATURATED) -> Optional[str]:
    """What has collapsed, in one sentence, or None.

    ``rates``: ``{population: mean firing rate}`` over a period (e.g. ``FiringRates.rates()`` over
    an epoch); ``losses``: the training losses of that period, with ``num_classes``.  Collapsed:
    E populations with a rate below ``silent`` or above ``saturated`` (all are named), or at least
    ``FLAT_STEPS`` losses, every one within ``FLAT`` of ``ln(num_classes)``."""
    dead = [f'{name!r} is {"silent" if rate < silent else "saturated (a spike at nearly every step)"} '
            f'(mean firing rate {rate:.3g})' for name, rate in rates.items() if rate < silent or rate > saturated]
    if dead:
        return 'E population ' + '; '.join(dead)
    if (len(losses) >= FLAT_STEPS and num_classes
            and all(abs(loss - math.log(num_classes)) < FLAT for loss in losses)):
        return (f'the loss is flat at ln({num_classes}) = {math.log(num_classes):.4f} '
                f'(all {len(losses)} steps): the output no longer depends on the input')
    return None


def check(rates: dict, losses: Sequence[float] = (), num_classes: Optional[int] = None, **thresholds) -> None:
    """``CollapseError`` (with ``collapse``'s sentence and every population's rate) if collapsed."""
    problem = collapse(rates, losses, num_classes, **thresholds)
    if problem:
        raise CollapseError(f'{problem}; firing rates {format_rates(rates)}')


def format_rates(rates: dict) -> str:
    """``'features.0.neuron 0.12, features.2.neuron 0'``."""
    return ', '.join(f'{name} {rate:.3g}' for name, rate in rates.items())
