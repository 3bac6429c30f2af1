"""Operation counts (sj_ei.energy) against a hand count on a network whose every spike is known,
and the command line on the quick-start config."""
import subprocess
import sys

import pytest
import torch
from torch import nn
from spikingjelly.activation_based import layer as sj_layer

import sj_ei
from sj_ei import energy

T, B = 2, 2


def strokes():
    """``[T=2, B=2, 1, 4, 4]``: step 0 one spike in the top-left corner; step 1 a diagonal
    stroke at (1, 1), (2, 2).  Sample 1 is sample 0 mirrored left-right (the same counts)."""
    x = torch.zeros(T, B, 1, 4, 4)
    x[0, 0, 0, 0, 0] = 1
    x[1, 0, 0, 1, 1] = x[1, 0, 0, 2, 2] = 1
    x[:, 1] = x[:, 0].flip(-1)
    return x


class Small(nn.Module):
    """3x3 conv block (4 channels), 2x2 average pooling, flatten, 2-class readout."""

    def __init__(self, block, readout):
        super().__init__()
        self.block, self.readout = block, readout
        self.pool = sj_layer.AvgPool2d(2, step_mode='m')
        self.flat = sj_layer.Flatten(step_mode='m')

    def forward(self, x):
        return self.readout(self.flat(self.pool(self.block(x))))


def ei_net():
    """W_EE = W_IE = 1, W_EI = 1/2, g_I = 1, g_E = 1.5, b_E = 0: where the 3x3 window holds k > 0
    spikes, I_EE = r_I = k, I_EI = I_sh = k/2, so I_int = 1.5 and the E neuron fires (V: 0 -> 0.5
    after its spike, then H = 0.25 + 1.5 fires again); where k = 0, I_int = 0 and it stays silent."""
    conv = sj_ei.EIConv2d(1, 4, 3, padding=1, ei_ratio=4, step_mode='m')   # n_E = 4, n_I = 1
    readout = sj_ei.EILinear(16, 2, ei_ratio=2, readout=True, step_mode='m')  # n_E = 2, n_I = 1
    with torch.no_grad():
        for p in (conv.weight_ee, conv.weight_ie, conv.gain_i, readout.weight_ee, readout.weight_ie,
                  readout.weight_ei):
            p.fill_(1.0)
        conv.weight_ei.fill_(0.5)
        conv.gain_e.fill_(1.5)
        conv.bias.zero_()
    return Small(sj_ei.EIBlock(conv, sj_ei.e_population(step_mode='m')), readout)


def bn_net():
    """The same shape with batch norm: conv weights 1, batch norm scale 1.5 (running mean 0,
    variance 1), so the same neurons fire; readout with bias."""
    conv = sj_layer.Conv2d(1, 4, 3, padding=1, bias=False, step_mode='m')
    norm = sj_layer.BatchNorm2d(4, step_mode='m', eps=0.0)
    readout = sj_layer.Linear(16, 2, step_mode='m')
    with torch.no_grad():
        conv.weight.fill_(1.0)
        norm.weight.fill_(1.5)
        readout.weight.fill_(1.0)
    return Small(nn.Sequential(conv, norm, sj_ei.e_population(step_mode='m')), readout)


# Hand count, per sample.
# Layer 1 input: the corner spike reaches 2x2 output positions (padding reaches nothing), each
# diagonal spike 3x3: 4 + 9 + 9 = 22 weight uses per output channel.  Input rate 3 / (2 * 16).
# Positions whose window holds a spike: step 0 the 4 around the corner, step 1 the union of two
# 3x3 squares overlapping in 2x2: 9 + 9 - 4 = 14; so 18 nonzero r_I, and 4 x 18 = 72 E spikes.
# Readout input: pooled spikes, c/4 with c the spikes in each 2x2 window; all 72 spikes are counted.
UNITS = 4 * 16 * T          # E neurons x steps of layer 1
SPIKES = 4 * (4 + 14)
LIF = dict(mul=UNITS, add=2 * UNITS + SPIKES)


def test_ei_counts_equal_the_hand_count():
    report = energy.count(ei_net(), [strokes()])
    conv, readout = report.rows
    assert report.samples == B
    assert (conv.name, conv.input, readout.input) == ('block.layer', 'spikes', 'counts')
    assert report.rate(conv) == 3 / 32 and report.rate(readout) == SPIKES / 4 / (4 * 4 * T)
    hand = {  # (layer, part, op): count
        ('conv', 'excitatory', 'ac'): 22 * 4,            # W_EE: 4 E channels
        ('conv', 'inhibition', 'ac'): 22 * 1,            # W_IE: 1 I channel
        ('conv', 'inhibition', 'mac'): 18 * 4 * 2,       # nonzero r_I x n_E x (W_EI r_I, W_EI g_I r_I)
        ('conv', 'inhibition', 'add'): 1 * 16 * T + 2 * UNITS,  # ReLU per I neuron; stabilization
        ('conv', 'inhibition', 'div'): UNITS,
        ('conv', 'inhibition', 'mul'): UNITS,           # g_E
        ('conv', 'excitatory', 'add'): UNITS,           # b_E
        ('conv', 'neuron', 'mul'): LIF['mul'],
        ('conv', 'neuron', 'add'): LIF['add'],
        ('readout', 'excitatory', 'ac'): SPIKES * 2,    # every spike reaches the 2 E outputs ...
        ('readout', 'inhibition', 'ac'): SPIKES * 1,    # ... and the 1 I neuron
        ('readout', 'inhibition', 'mac'): T * 1 * 2,    # r_I > 0 at both steps, x n_E, one path
        ('readout', 'inhibition', 'add'): T * 1,        # ReLU
    }
    for key, row in (('conv', conv), ('readout', readout)):
        for part in energy.PARTS:
            for op in energy.OPS:
                assert report.count(op, row, part) == hand.get((key, part, op), 0), (key, part, op)
    p = energy.Prices()
    ac, mac = 22 * 5 + SPIKES * 3, 18 * 8 + 2 * T
    adds = 16 * T + 3 * UNITS + LIF['add'] + T
    want = ac * p.ac + mac * p.mac + UNITS * p.div + 2 * UNITS * p.mul + adds * p.add
    assert report.energy() == pytest.approx(want)
    inhibition = (22 + SPIKES) * p.ac + mac * p.mac + UNITS * (p.div + p.mul) + (16 * T + 2 * UNITS + T) * p.add
    assert report.totals()['inhibition_share'] == pytest.approx(inhibition / want)


def test_batch_norm_network_pays_its_convolutions_and_the_folded_bias():
    ei, bn = energy.compare(ei_net(), bn_net(), [strokes()])
    conv, readout = bn.rows
    assert bn.count('ac', conv) == 22 * 4 and bn.count('mac') == 0 and bn.count('div') == 0
    assert bn.count('add', conv) == UNITS + LIF['add']      # folded batch-norm bias, LIF
    assert bn.count('mul', conv) == LIF['mul']
    assert bn.count('ac', readout) == SPIKES * 2 and bn.count('add', readout) == 2 * T  # bias
    assert bn.rate(readout) == ei.rate(readout)              # the same spikes fired
    assert bn.totals()['inhibition_pJ'] == 0


def test_real_valued_input_costs_dense_macs():
    """A direct-encoded image: every output pays fan-in MACs, zero padding included (as
    spikingjelly 2's MACCounter)."""
    x = torch.zeros(T, B, 1, 4, 4)
    x[:, :, 0, 1:3, :] = torch.tensor([0.2, 0.7, 0.9, 0.4])  # a bright bar on a dark background
    report = energy.count(ei_net(), [x])
    conv = report.rows[0]
    assert conv.input == 'real' and report.count('ac', conv) == 0
    assert report.count('mac', conv, 'excitatory') == 16 * T * 9 * 4
    # W_IE dense; every 3x3 window overlaps the bar, so r_I > 0 everywhere: 16 x n_E x 2 paths
    assert report.count('mac', conv, 'inhibition') == 16 * T * 9 * 1 + 16 * T * 4 * 2


def test_approximate_division_is_priced_as_a_shift_or_a_table_read():
    net = ei_net()
    exact = energy.count(net, [strokes()])
    for name, size, price in (('shift', None, 'shift'), ('lut', 16, 'lut')):
        sj_ei.set_division(net, name, size)
        report = energy.count(net, [strokes()])
        assert report.count('div') == exact.count('div')
        saved = exact.count('div') * (energy.Prices().div - getattr(energy.Prices(), price))
        assert exact.energy() - report.energy() == pytest.approx(saved)


def test_a_division_sj_ei_cannot_price_is_one_error_naming_the_layer():
    net = ei_net()
    sj_ei.ei_layers(net)[0][1].division = nn.Identity()
    with pytest.raises(TypeError, match=r"^EIConv2d 'block\.layer': cannot price its division Identity; "
                                        r"count with a division of sj_ei.division"):
        energy.count(net, [strokes()])


def test_prices_can_be_changed():
    report = energy.count(ei_net(), [strokes()], energy.Prices.parse('ac=0,mac=0,mul=0,add=0,div=1'))
    assert report.energy() == UNITS
    with pytest.raises(ValueError, match='NAME=PICOJOULES'):
        energy.Prices.parse('fma=3')


def test_the_former_name_sj_ei_ops_is_the_same_module():
    import sj_ei.ops
    from sj_ei import ops
    assert ops is sj_ei.ops is energy is sj_ei.energy and sj_ei.ops.Counter is energy.Counter


def test_a_network_without_ei_layers_is_one_clear_error():
    with pytest.raises(ValueError, match='has no E-I layer.*baseline=True'):
        energy.count(bn_net(), [strokes()])


def test_command_line_counts_the_quickstart_networks(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'sj_ei.energy', '-cfg', 'configs/quickstart.yaml', '-batches', '1',
                             '-set', 'batch_size=4', '-division', 'lut', '-table-size', '32'],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 'E-I division lut' in lines[0] and '4 test samples' in lines[0]
    assert [line.split()[0] for line in lines[3:9]] == [f'features.{i}.layer' for i in (0, 2, 4, 6, 8)] + ['readout']
    assert lines[-2].startswith('E-I / BN energy:') and 'inhibition takes' in lines[-2]
    assert lines[-1].startswith('E-I energy per sample: excitatory') and 'divisions' in lines[-1]
    bad = subprocess.run([sys.executable, '-m', 'sj_ei.ops', '-cfg', 'configs/quickstart.yaml', '-division', 'lut',
                          '-table-size', '48'], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and 'table_size must be a power of two' in bad.stderr


def test_counts_follow_spikingjelly2_op_counter_where_installed():
    """spikingjelly 2's ACCounter / MACCounter count the same ACs (spikes through a convolution)
    and MACs (a real-valued image) as sj_ei.energy; they count per forward call, sj_ei.energy per sample."""
    op_counter = pytest.importorskip('spikingjelly.activation_based.op_counter')
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    image = torch.zeros(T, B, 1, 4, 4)
    image[:, :, 0, 1:3, :] = torch.tensor([0.2, 0.7, 0.9, 0.4])
    ac, mac = op_counter.ACCounter(), op_counter.MACCounter()
    with op_counter.DispatchCounterMode([ac]):
        conv(strokes().flatten(0, 1))
    with op_counter.DispatchCounterMode([mac]):
        conv(image.flatten(0, 1))
    bn, ei = energy.count(bn_net(), [strokes()], baseline=True), energy.count(ei_net(), [image])
    assert ac.get_total() / B == bn.count('ac', bn.rows[0])
    assert mac.get_total() / B == ei.count('mac', ei.rows[0], 'excitatory')


@pytest.mark.parametrize('network', ['hand-counted', 'quick-start vgg8'])
def test_spikingjelly2_counts_an_ei_network_as_sj_ei_ops_with_sj_ei_rules(network):
    """sj_ei.op_counter's module rules in spikingjelly 2's ModuleCounterMode give sj_ei.energy' totals:
    ACs, MACs (the I population's W_EI paths), divisions; and the E-I layers' multiplications and
    additions (sj_ei.energy adds the LIF neurons' own, which spikingjelly counts its way)."""
    op_counter = pytest.importorskip('sj_ei.op_counter', reason='spikingjelly 2 only: 0.0.0.0.14 has no op_counter',
                                     exc_type=ImportError)
    from spikingjelly.activation_based.op_counter import ModuleCounterMode
    from spikingjelly.activation_based import functional
    if network == 'hand-counted':
        net, x = ei_net(), strokes()
    else:
        from sj_ei.datasets import synthetic
        net = sj_ei.models.build('vgg8', 8, 2, width=0.125)
        data = synthetic.SyntheticEvents(num_samples=4, T=4, size=32, seed=3)
        x = torch.stack([data[i][0] for i in range(4)], 1)  # moving-dot events [T=4, B=4, 2, 32, 32]
        sj_ei.ei_init(net, x)
    counters = op_counter.counters(net)
    with torch.no_grad(), ModuleCounterMode(list(counters.values()), model=net.eval()):
        net(x)
    functional.reset_net(net)
    report = energy.count(net, [x])
    for op in ('ac', 'mac', 'div'):
        assert counters[op].get_total() == report.count(op) * report.samples > 0, op
    for op in ('mul', 'add'):
        layers = report.count(op, part='excitatory') + report.count(op, part='inhibition')
        assert counters[op].get_total() == layers * report.samples, op
