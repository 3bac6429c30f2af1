"""sj_ei's counting rules for spikingjelly 2's operation counters (``spikingjelly.activation_based.op_counter``),
so that a spikingjelly 2 user counts an E-I network as ``sj_ei.energy`` does (spikingjelly 2 only).

    from spikingjelly.activation_based.op_counter import ModuleCounterMode
    counters = sj_ei.op_counter.counters(net)     # {'ac': EICounter, 'mac': ..., 'div': ..., 'mul': ..., 'add': ...}
    with ModuleCounterMode(list(counters.values()), model=net):
        net(x)
    counters['div'].get_total(), counters['mac'].get_counts()   # totals over the calls, and per module scope

``EICounter`` is a spikingjelly ``ModuleCounter``: rules keyed by ``('forward', module type)``
that spikingjelly's ``ModuleCounterMode`` calls with each module's input and output.  Its rules
are the functions of ``sj_ei.energy`` (``synapse_ops``, ``inhibition_ops``, ``ei_output_ops``), so
the counts are the same numbers: spike and count input as ACs, real input as MACs, the I
population's ``W_EI`` paths as MACs per nonzero ``r_I``, one division per E neuron and step.
They cover what E-I layers do (the projection, the I population, stabilization, division,
``g_E`` and ``b_E``); spikingjelly's own counters (``ACCounter``, ``MACCounter`` under
``DispatchCounterMode``) count the rest of a network their way, per aten operation.
Counts are totals over every call (``sj_ei.energy`` reports them per sample).
"""
from typing import Dict

from torch import nn

from . import _compat
from .layers import EILayer, ei_layers
from .i_population import IPopulation
from .energy import OPS, ei_output_ops, inhibition_ops, pool_quantum, synapse_ops

_op_counter = _compat.op_counter()


class EICounter(_op_counter.ModuleCounter):
    """Counts operation ``op`` (one of ``sj_ei.energy.OPS``: ``'ac'``, ``'mac'``, ``'div'``, ``'mul'``,
    ``'add'``) of the E-I layers of ``net``, as ``sj_ei.energy`` counts them."""

    def __init__(self, op: str, net: nn.Module):
        super().__init__()
        if op not in OPS:
            raise ValueError(f'EICounter: op must be one of {", ".join(OPS)}, got {op!r}')
        self.op, self._quanta = op, {1.0}
        self._owner = {id(layer.i_population): layer for _, layer in ei_layers(net)}
        self.rules = {('forward', EILayer): self._layer, ('forward', IPopulation): self._i_population,
                      ('forward', nn.AvgPool2d): self._pool, ('forward', nn.AdaptiveAvgPool2d): self._pool}

    def _sum(self, ops: Dict[str, Dict[str, float]]) -> float:
        return sum(counts.get(self.op, 0) for counts in ops.values())

    def _layer(self, layer, args, kwargs, out) -> float:
        _, _, ops = synapse_ops(layer, args[0], self._quanta)
        return self._sum(ops) + self._sum(ei_output_ops(layer, out))

    def _i_population(self, module, args, kwargs, r) -> float:
        layer = self._owner.get(id(module))
        return 0 if layer is None else self._sum(inhibition_ops(layer, r))

    def _pool(self, module, args, kwargs, out) -> float:
        self._quanta.add(pool_quantum(args[0], out))  # what pooled spikes are multiples of
        return 0


def counters(net: nn.Module) -> Dict[str, EICounter]:
    """One ``EICounter`` per operation of ``sj_ei.energy.OPS``, for ``net``."""
    return {op: EICounter(op, net) for op in OPS}
