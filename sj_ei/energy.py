"""Operation and energy counts of a spiking network on real input, from what actually fired.

    with sj_ei.energy.Counter(net) as counter:        # forward hooks on the running network
        for x in batches: net(x); functional.reset_net(net)
    print(counter.report().table())
    sj_ei.energy.compare(ei_net, bn_net, batches)     # both, side by side
    python -m sj_ei.energy -cfg configs/quickstart.yaml [-pretrained PATH] [-batches N] [-prices mac=3.1,...]

Every count is per sample (over all T steps), from the tensors the network computed:
the input of every synaptic layer (E-I layer, convolution, linear layer), the output of
every E-I layer's I population (``layer.i_population``) and of every spiking neuron.

Counting rules (``docs/ops.md`` has the table):

- Synaptic layer input.  Binary spikes: one AC per weight a spike reaches (zero padding
  reaches none), as spikingjelly 2's ``ACCounter``.  Non-negative multiples of a count
  quantum (event counts, quantum 1; spikes after ``k x k`` average pooling, quantum
  ``1/k^2``, the pooling folded into the next layer's weights): count-weighted ACs, a value
  of ``c`` quanta costs ``c`` ACs per weight it reaches.  Any other (real-valued, e.g. a
  direct-encoded image): dense MACs, fan-in per output, as spikingjelly 2's ``MACCounter``.
  An E-I layer's projection reaches ``n_E + n_I`` output channels (``W_EE`` and ``W_IE``).
- I population (rate form, ``ReLU``): one compare per I neuron and step; both inhibition
  paths ``W_EI r_I`` and ``(W_EI diag(g_I)) r_I`` (``g_I`` folded into the weights) cost
  ``n_E`` MACs per nonzero ``r_I`` (a silent I neuron sends nothing).  Spike-count form
  (``mode='count'``): count-weighted ACs, ``r_I / theta`` ACs per weight.  ``I_EI`` accumulates
  into ``I_EE``'s accumulator with the negative sign, so ``I_EE - I_EI`` costs nothing more.
  A readout layer has only the ``W_EI r_I`` path.
- Per E neuron and step of a hidden E-I layer: 2 compares (adaptive stabilization: the
  per-sample minimum and the replacement of zeros), one division by ``I_sh~`` (exact, bit
  shift or table look-up: ``layer.division``), one multiplication by ``g_E``, one addition of ``b_E``.
- Batch norm (folded into the convolution at inference): one bias addition per output; a
  linear layer with bias likewise.  Average pooling: nothing (folded, see above).
- Spiking neuron (LIF): per neuron and step one multiplication (leak), two additions
  (input, threshold compare), and one subtraction per spike (soft reset).

Energy = sum of counts times ``Prices`` (pJ).  Parts: ``excitatory`` (``W_EE``, convolution,
biases), ``inhibition`` (what only E-I layers do: ``W_IE``, the I population, both
``W_EI`` paths, stabilization, division, ``g_E``), ``neuron`` (LIF).
"""
import math
from dataclasses import dataclass, field, fields
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional, neuron

from . import cli
from . import division
from .config import ConfigError
from .division import LUTDivision, ShiftDivision, set_division
from .layers import EILayer, ei_layers

OPS = ('ac', 'mac', 'div', 'mul', 'add')
PARTS = ('excitatory', 'inhibition', 'neuron')


@dataclass
class Prices:
    """Energy per operation in pJ.  Defaults: 45 nm CMOS, 32-bit float (Horowitz, "Computing's
    energy problem", ISSCC 2014): FAdd 0.9, FMult 3.7, MAC = FMult + FAdd = 4.6, AC = FAdd = 0.9.
    Horowitz gives no divider: ``div`` is a Newton-Raphson reciprocal from a seed table
    (2 iterations of 2 FMult + 1 FAdd) and one FMult, 5 x 3.7 + 2 x 0.9 = 20.3 pJ;
    ``shift`` (divide by a power of two) is an 8-bit exponent subtraction, Add8 = 0.03 pJ;
    ``lut`` is a table read and one FMult, 3.7 pJ.  Memory access is not priced."""
    ac: float = 0.9
    mac: float = 4.6
    mul: float = 3.7
    add: float = 0.9
    div: float = 20.3
    shift: float = 0.03
    lut: float = 3.7

    @classmethod
    def parse(cls, text: str) -> 'Prices':
        """``'mac=3.1,ac=0.1'`` (pJ) on top of the defaults."""
        names = [f.name for f in fields(cls)]
        values = {}
        for item in filter(None, text.split(',')):
            key, sep, value = item.partition('=')
            try:
                values[key.strip()] = float(value) if sep and key.strip() in names else None
            except ValueError:
                values[key.strip()] = None
            if values[key.strip()] is None or values[key.strip()] < 0:
                raise ConfigError(f'prices: {item!r} is not NAME=PICOJOULES with NAME one of {", ".join(names)} '
                                 f'and a number >= 0, e.g. "mac=3.1,ac=0.1"')
        return cls(**values)


@dataclass
class Row:
    """The counts of one synaptic layer and the neurons after it, summed over the samples seen.
    ``ops[part][op]``; ``input`` is ``'spikes'``, ``'counts'`` or ``'real'``; ``rate`` the mean
    input value (the firing rate for spikes); ``division`` the kind of division it does."""
    name: str
    kind: str
    input: str = ''
    rate_sum: float = 0.0
    rate_calls: int = 0
    division: Optional[str] = None
    ops: Dict[str, Dict[str, float]] = field(default_factory=lambda: {p: dict.fromkeys(OPS, 0.0) for p in PARTS})


class Report:
    """Per-sample counts of every synaptic layer (``rows``, in forward order) and their energy."""

    def __init__(self, rows: List[Row], samples: int, prices: Prices):
        self.rows, self.samples, self.prices = rows, samples, prices

    def count(self, op: str, row: Optional[Row] = None, part: Optional[str] = None) -> float:
        """Per-sample count of ``op`` in ``row`` (all rows if None) and ``part`` (all parts if None)."""
        rows = self.rows if row is None else [row]
        parts = PARTS if part is None else (part,)
        return sum(r.ops[p][op] for r in rows for p in parts) / self.samples

    def energy(self, row: Optional[Row] = None, part: Optional[str] = None, op: Optional[str] = None) -> float:
        """Per-sample energy in pJ of ``row``, ``part`` and ``op`` (each: all if None)."""
        rows = self.rows if row is None else [row]
        total = 0.0
        for r in rows:
            price = dict(ac=self.prices.ac, mac=self.prices.mac, mul=self.prices.mul, add=self.prices.add,
                         div=getattr(self.prices, {'shift': 'shift', 'lut': 'lut'}.get(r.division, 'div')))
            for p in (PARTS if part is None else (part,)):
                total += sum(r.ops[p][o] * price[o] for o in (OPS if op is None else (op,)))
        return total / self.samples

    def rate_text(self, row: Row, width: int) -> str:
        """``rate(row)`` formatted, or ``'real'`` for real-valued input."""
        return f'{"real":>{width}}' if row.input == 'real' else f'{self.rate(row):>{width}.3f}'

    def rate(self, row: Row) -> float:
        """Mean input value of ``row`` (its input spike rate), NaN for real-valued input."""
        return math.nan if row.input == 'real' or not row.rate_calls else row.rate_sum / row.rate_calls

    def totals(self) -> Dict[str, float]:
        """Per-sample totals: every op, ``energy_pJ``, ``inhibition_pJ`` and ``inhibition_share``."""
        result = {op: self.count(op) for op in OPS}
        result['energy_pJ'] = self.energy()
        result['inhibition_pJ'] = self.energy(part='inhibition')
        result['inhibition_share'] = result['inhibition_pJ'] / result['energy_pJ'] if result['energy_pJ'] else 0.0
        return result

    def table(self) -> str:
        """A plain-text table: one line per layer, then the total."""
        head = f'{"layer":<22}{"input":>7}{"rate":>7}{"AC":>11}{"MAC":>11}{"div":>10}{"other":>11}{"energy uJ":>11}'
        lines = [head]
        for r in self.rows:
            lines.append(f'{r.name[:21]:<22}{r.input:>7}{self.rate_text(r, 7)}{self.count("ac", r):>11.4g}'
                         f'{self.count("mac", r):>11.4g}{self.count("div", r):>10.4g}'
                         f'{self.count("mul", r) + self.count("add", r):>11.4g}{self.energy(r) / 1e6:>11.4g}')
        t = self.totals()
        lines.append(f'{"total":<36}{t["ac"]:>11.4g}{t["mac"]:>11.4g}{t["div"]:>10.4g}'
                     f'{t["mul"] + t["add"]:>11.4g}{t["energy_pJ"] / 1e6:>11.4g}')
        if t['inhibition_pJ']:
            lines.append(f'inhibition: {t["inhibition_pJ"] / 1e6:.4g} uJ = {100 * t["inhibition_share"]:.1f}% of the energy')
        return '\n'.join(lines)


def _division_kind(layer: EILayer) -> str:
    if layer.division is None:
        return 'exact'
    if isinstance(layer.division, ShiftDivision):
        return 'shift'
    if isinstance(layer.division, LUTDivision):
        return 'lut'
    raise TypeError(f'{layer.label}: cannot price its division {type(layer.division).__name__}; '
                    'count with a division of sj_ei.division (ShiftDivision, LUTDivision) or None')


def _layer_parts(output) -> torch.Tensor:
    """The E-I layer output as a tensor (``I_int``, or ``d`` of an ``EICurrents``)."""
    return output[0] if isinstance(output, tuple) else output


def pool_quantum(x: torch.Tensor, out: torch.Tensor) -> float:
    """``1 / window`` of an average pooling from ``x`` to ``out``: the count quantum of its output."""
    return 1.0 / (x.shape[-1] * x.shape[-2] // (out.shape[-1] * out.shape[-2]))


def _classify(x: torch.Tensor, quanta):
    """``('spikes'|'counts'|'real', counts or None)``: ``counts`` is what each value costs in ACs."""
    if bool(((x == 0) | (x == 1)).all()):
        return 'spikes', x
    if bool((x >= 0).all()):
        for q in sorted(quanta, reverse=True):
            c = x / q
            if bool((c == c.round()).all()):
                return 'counts', c
    return 'real', None


@torch.no_grad()
def synapse_ops(m: nn.Module, x: torch.Tensor, quanta=(1.0,)):
    """``(input kind, mean input value or None, {part: {op: count}})`` of one call of the synaptic
    layer ``m`` (E-I layer, convolution, linear) on ``x``; ``quanta``: the count quanta seen so far
    (1 and ``pool_quantum`` of every average pooling)."""
    x = x.flatten(0, 1) if getattr(m, 'step_mode', 's') == 'm' else x
    kind, counts = _classify(x, quanta)
    rate = None if kind == 'real' else x.float().mean().item()
    ei = isinstance(m, EILayer)
    conv = isinstance(m, nn.Conv2d) or ei and m.weight_ee.dim() == 4
    if conv:
        kernel = m.weight_ee.shape[2:] if ei else m.weight.shape[2:]
        ones = x.new_ones(1, x.shape[1] // getattr(m, 'groups', 1), *kernel)
        source = counts if counts is not None else x.new_ones(x.shape)
        reach = F.conv2d(source, ones, None, m.stride, m.padding, m.dilation, getattr(m, 'groups', 1))
        uses = reach.sum().item() if counts is not None else reach.numel() * ones.numel()
    else:
        uses = counts.sum().item() if counts is not None else x.numel()
    op = 'mac' if counts is None else 'ac'
    if ei:
        return kind, rate, {'excitatory': {op: uses * m.n_e}, 'inhibition': {op: uses * m.n_i}}
    return kind, rate, {'excitatory': {op: uses * (m.out_channels if conv else m.out_features)}}


@torch.no_grad()
def inhibition_ops(layer: nn.Module, r: torch.Tensor):
    """``{part: {op: count}}`` of E-I ``layer``'s I population output ``r`` and both ``W_EI`` paths."""
    paths = 1 if layer.readout else 2
    m = layer.i_population
    if getattr(m, 'mode', 'rate') == 'count':
        sends = {'ac': (r / m.theta).sum().item() * layer.n_e * paths}
    else:
        sends = {'mac': (r != 0).sum().item() * layer.n_e * paths}
    return {'inhibition': {'add': r.numel(), **sends}}  # add: the ReLU / threshold compare


def ei_output_ops(layer: nn.Module, out):
    """``{part: {op: count}}`` after the inhibition of a hidden E-I ``layer`` whose output is ``out``:
    stabilization, division, ``g_E`` and ``b_E`` per E neuron and step (nothing for a readout)."""
    if layer.readout:
        return {}
    n = _layer_parts(out).numel()
    return {'inhibition': {'add': 2 * n, 'div': n, 'mul': n}, 'excitatory': {'add': n}}


class Counter:
    """Context manager that counts the operations of ``net`` while it runs (eval mode, no grad
    needed).  ``net`` must contain E-I layers unless ``baseline=True`` (a batch-norm or plain
    SNN counted for comparison).  Multi-step input ``[T, B, ...]`` or static ``[B, C, H, W]``."""

    def __init__(self, net: nn.Module, baseline: bool = False):
        if not baseline and not ei_layers(net):
            raise ValueError(f'sj_ei.energy: {type(net).__name__} has no E-I layer (sj_ei.EIConv2d / sj_ei.EILinear), '
                             'so there is no E-I cost to count. Build it with sj_ei.models.build(..., norm="ei"), '
                             'or count it as the baseline: Counter(net, baseline=True) / '
                             'sj_ei.energy.compare(ei_net, bn_net, batches)')
        self.net, self.rows, self.samples = net, {}, 0
        self._current, self._handles, self._quanta = None, [], {1.0}
        self._owner = {}  # id(I population) -> its E-I layer

    # ---- hooks ------------------------------------------------------------------------
    def __enter__(self):
        self._handles.append(self.net.register_forward_pre_hook(self._on_net))
        for name, m in self.net.named_modules():
            name = name or type(m).__name__
            if isinstance(m, (EILayer, nn.Conv2d, nn.Linear)):
                self._handles.append(m.register_forward_pre_hook(lambda mod, args, n=name: self._on_synapses(n, mod, args[0])))
            if isinstance(m, EILayer):
                self._owner[id(m.i_population)] = m
                self._handles.append(m.register_forward_hook(lambda mod, args, out, n=name: self._on_ei_output(n, mod, out)))
                self._handles.append(m.i_population.register_forward_hook(
                    lambda mod, args, out, n=name: self._on_i_population(n, mod, out)))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) or isinstance(m, nn.Linear) and m.bias is not None:
                self._handles.append(m.register_forward_hook(lambda mod, args, out: self._add('excitatory', 'add', out.numel())))
            elif isinstance(m, neuron.BaseNode):
                self._handles.append(m.register_forward_hook(lambda mod, args, out: self._on_neuron(out)))
            elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                self._handles.append(m.register_forward_hook(lambda mod, args, out: self._on_pool(args[0], out)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False

    def _add(self, part, op, n):
        self._current.ops[part][op] += float(n)

    def _on_net(self, module, args):
        x = args[0]
        self.samples += x.shape[0] if x.dim() == 4 and getattr(module, 'T', None) else x.shape[1]

    def _on_pool(self, x, out):
        self._quanta.add(pool_quantum(x, out))

    @torch.no_grad()
    def _on_synapses(self, name, m, x):
        if name not in self.rows:
            self.rows[name] = Row(name, 'ei' if isinstance(m, EILayer) else type(m).__name__.lower())
        row = self._current = self.rows[name]
        kind, rate, ops = synapse_ops(m, x, self._quanta)
        row.input = kind if row.input in ('', kind) else 'mixed'
        if rate is not None:
            row.rate_sum, row.rate_calls = row.rate_sum + rate, row.rate_calls + 1
        if isinstance(m, EILayer):
            row.division = None if m.readout else _division_kind(m)
        self._merge(ops)

    @torch.no_grad()
    def _on_i_population(self, name, m, r):
        if name not in self.rows:
            raise RuntimeError(f'sj_ei.energy: the I population of {name} ran without its E-I layer\'s forward '
                               '(a fused backend that skips the layer); count with the torch backend: '
                               "sj_ei.set_backend(net, 'torch')")
        self._current = self.rows[name]
        self._merge(inhibition_ops(self._owner[id(m)], r))

    @torch.no_grad()
    def _on_ei_output(self, name, m, out):
        self._current = self.rows[name]
        self._merge(ei_output_ops(m, out))

    @torch.no_grad()
    def _on_neuron(self, spikes):
        self._add('neuron', 'mul', spikes.numel())
        self._add('neuron', 'add', 2 * spikes.numel() + spikes.sum().item())

    def _merge(self, ops):
        for part, counts in ops.items():
            for op, n in counts.items():
                self._add(part, op, n)

    def report(self, prices: Optional[Prices] = None) -> Report:
        """Per-sample counts of everything run inside the ``with`` block."""
        if not self.samples:
            raise RuntimeError('sj_ei.energy: nothing was counted; run the network inside "with Counter(net):"')
        return Report(list(self.rows.values()), self.samples, prices or Prices())


@torch.no_grad()
def count(net: nn.Module, batches: Iterable[torch.Tensor], prices: Optional[Prices] = None,
          baseline: bool = False) -> Report:
    """Run ``net`` (eval mode, torch backend) on every batch (model input, ``[T, B, ...]`` or static
    ``[B, C, H, W]``) and return the per-sample counts; neuron states are reset after each batch."""
    was_training = net.training
    net.eval()
    try:
        with Counter(net, baseline) as counter:
            for x in batches:
                net(x)
                functional.reset_net(net)
    finally:
        net.train(was_training)
    return counter.report(prices)


def compare(ei_net: nn.Module, bn_net: nn.Module, batches: List[torch.Tensor],
            prices: Optional[Prices] = None):
    """``(E-I report, baseline report)`` of the two networks on the same batches."""
    return count(ei_net, batches, prices), count(bn_net, batches, prices, baseline=True)


def side_by_side(ei: Report, bn: Report) -> str:
    """Per-layer energy and ACs/MACs of both networks, then the totals and their ratio."""
    lines = [f'{"layer":<22}{"E-I rate":>9}{"E-I AC":>11}{"E-I MAC":>11}{"E-I div":>10}{"E-I uJ":>9}'
             f'{"BN rate":>9}{"BN AC":>11}{"BN MAC":>11}{"BN uJ":>9}']
    for a, b in zip(ei.rows, bn.rows):
        lines.append(f'{a.name[:21]:<22}{ei.rate_text(a, 9)}{ei.count("ac", a):>11.4g}{ei.count("mac", a):>11.4g}'
                     f'{ei.count("div", a):>10.4g}{ei.energy(a) / 1e6:>9.4g}{bn.rate_text(b, 9)}'
                     f'{bn.count("ac", b):>11.4g}{bn.count("mac", b):>11.4g}{bn.energy(b) / 1e6:>9.4g}')
    t, u = ei.totals(), bn.totals()
    lines.append(f'{"total":<31}{t["ac"]:>11.4g}{t["mac"]:>11.4g}{t["div"]:>10.4g}{t["energy_pJ"] / 1e6:>9.4g}'
                 f'{"":>9}{u["ac"]:>11.4g}{u["mac"]:>11.4g}{u["energy_pJ"] / 1e6:>9.4g}')
    lines.append(f'E-I / BN energy: {t["energy_pJ"] / u["energy_pJ"]:.2f}x; inhibition takes '
                 f'{100 * t["inhibition_share"]:.1f}% of the E-I energy ({t["inhibition_pJ"] / 1e6:.4g} uJ per sample)')
    lines.append('E-I energy per sample: ' + ', '.join(f'{part} {ei.energy(part=part) / 1e6:.4g} uJ' for part in PARTS)
                 + f'; in the inhibition: MACs {ei.energy(part="inhibition", op="mac") / 1e6:.4g} uJ, '
                 f'divisions {ei.energy(op="div") / 1e6:.4g} uJ')
    return '\n'.join(lines)


def main(argv=None):
    """The command line: ``python -m sj_ei.energy -h``."""
    parser = cli.parser('python -m sj_ei.energy', 'Operations and energy per sample of the E-I network of a '
                        'trainer config and of the batch-norm SNN of the same shape, on batches of the test set.')
    parser.add_argument('-prices', default='', metavar='NAME=PJ,...', help='energy prices in pJ, e.g. '
                        f'"mac=3.1,ac=0.1"; names and defaults: {Prices()}')
    parser.add_argument('-division', default='exact', choices=division.NAMES, help='division of the E-I layers')
    parser.add_argument('-table-size', type=int, metavar='N', help="table size of -division lut (default 64)")
    args = parser.parse_args(argv)
    with cli.errors():
        prices = Prices.parse(args.prices)
        config, batches, _, ei_net, bn_net = cli.networks(args)
        if args.division != 'exact' or args.table_size is not None:
            try:
                set_division(ei_net, args.division, args.table_size)
            except ValueError as e:  # a -division / -table-size the division cannot take
                raise ConfigError(str(e)) from None
    ei, bn = compare(ei_net, bn_net, batches, prices)
    shape = 'x'.join(map(str, batches[0].shape[-3:]))
    source = 'synthetic stand-in for ' + config['dataset'] if args.synthetic else config['dataset']
    print(f'{config["model"]} width {config["width"]} on {source} ({ei.samples} test samples, '
          f'input {shape}, T={config["T"]}), E-I division {args.division}; '
          f'E-I {"from " + args.pretrained if args.pretrained else "after E-I Init (untrained)"}, '
          f'BN {"from " + args.bn_pretrained if args.bn_pretrained else "untrained, statistics of these batches"}')
    print(f'prices (pJ): {prices}')
    print(side_by_side(ei, bn))


if __name__ == '__main__':
    main()
