"""python -m sj_ei.benchmark runs and writes a well-formed table and JSON (no timing claims here)."""
import json

import pytest
import torch
from spikingjelly.activation_based import layer, neuron, surrogate

import sj_ei
from sj_ei import benchmark


def test_benchmark_runs_and_its_output_is_well_formed(tmp_path, capsys):
    out = tmp_path / 'result.json'
    benchmark.main(['-models', 'block', '-b', '2', '-T', '2', '-size', '8', '-channels', '4', '-warmup', '1',
                    '-repeats', '3', '-device', 'cpu', '-o', str(out)])
    result = json.loads(out.read_text())
    assert (result['shape'], result['batch'], result['T'], result['size'], result['device']) == ('cifar', 2, 2, 8, 'cpu')
    assert result['repeats'] == 3 and result['threads'] >= 1 and result['command'].startswith('python -m sj_ei.benchmark')
    rows = {(r['model'], r['norm'], r['neuron'], r['backend']): r for r in result['rows']}
    names = list(benchmark.neurons())
    assert names[0] == 'lif' and set(rows) == {('block', norm, n, 'torch') for norm in ('bn', 'ei') for n in names}
    assert 'CUDA' in result['cupy_skipped']
    bns = [r for r in rows.values() if r['norm'] == 'bn']
    base = min(bns, key=lambda r: r['median_s'])
    assert [r for r in rows.values() if r['baseline']] == [base]
    assert base['time_ratio'] == 1.0 and base['saved_ratio'] == 1.0
    for r in rows.values():
        assert len(r['times_s']) == 3 and all(t > 0 for t in r['times_s'])
        assert r['min_s'] <= r['q1_s'] <= r['median_s'] <= r['q3_s'] <= r['max_s']
        assert r['saved_bytes'] > 0 and r['param_bytes'] > 0 and 'peak_bytes' not in r
        assert r['time_ratio'] == pytest.approx(r['median_s'] / base['median_s'])
        assert r['saved_ratio'] == pytest.approx(r['saved_bytes'] / base['saved_bytes'])
    # the E-I layer (8 E + 2 I channels) keeps its input and 1.25x the conv output; the BN
    # block keeps its input and the conv output; both LIF nodes and poolings keep the same
    assert rows['block', 'ei', 'lif', 'torch']['saved_bytes'] > rows['block', 'bn', 'lif', 'torch']['saved_bytes']
    table = capsys.readouterr().out
    assert 'block     ei      lif     torch' in table and 'saved MB' in table and result['cupy_skipped'] in table
    assert table.count('*') == 2  # the header's key and the baseline row


def test_a_failing_variant_is_a_row_with_its_error_and_the_others_are_measured(tmp_path, monkeypatch, capsys):
    """On the CPU the CuPy variants fail on their own (no CUDA device): forced into the run, each
    becomes a row with that error, and every torch row keeps its figures and ratios."""
    torch_only, _ = benchmark.variants(torch.device('cpu'))
    cupy = [(norm, neuron, 'cupy') for norm, neuron, _ in torch_only]
    monkeypatch.setattr(benchmark, 'variants', lambda device, floor=False: (torch_only + cupy, None))
    out = tmp_path / 'result.json'
    benchmark.main(['-models', 'block', '-b', '2', '-T', '2', '-size', '8', '-channels', '4', '-warmup', '1',
                    '-repeats', '2', '-device', 'cpu', '-o', str(out)])
    rows = json.loads(out.read_text())['rows']
    failed = [r for r in rows if 'error' in r]
    assert [(r['norm'], r['neuron'], r['backend']) for r in failed] == cupy
    assert all("backend 'cupy'" in r['error'] and 'CUDA' in r['error'] and 'median_s' not in r for r in failed)
    measured = [r for r in rows if 'error' not in r]
    assert [(r['norm'], r['neuron'], r['backend']) for r in measured] == torch_only
    assert all(len(r['times_s']) == 2 and r['saved_bytes'] > 0 and 'time_ratio' in r for r in measured)
    assert sum(r['baseline'] for r in measured) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines if '  failed: ' in line] == ['cupy'] * len(cupy)
    assert sum(line.startswith('block') and 'failed' not in line for line in lines) == len(torch_only)


def test_a_variant_failing_while_timed_loses_only_its_own_row(monkeypatch):
    """A step that raises part-way through the timing (say out of memory) ends that variant alone."""
    step = benchmark._Run.step

    def flaky(run):
        run.steps = getattr(run, 'steps', 0) + 1
        if isinstance(run.model[0], sj_ei.EIBlock) and run.steps > 2:
            raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        step(run)
    monkeypatch.setattr(benchmark._Run, 'step', flaky)
    triples = [('bn', 'lif', 'torch'), ('ei', 'lif', 'torch')]
    rows = benchmark.measure('block', triples, benchmark.SHAPES['cifar'], 2, 2, 8, torch.device('cpu'),
                             warmup=1, repeats=3, channels=4)
    bn, ei = rows
    assert ei['error'] == 'OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'
    assert ei['saved_bytes'] > 0 and 'median_s' not in ei and 'time_ratio' not in ei
    assert len(bn['times_s']) == 3 and bn['baseline'] and bn['time_ratio'] == 1.0
    assert 'block     ei      lif     torch      failed: OutOfMemoryError' in benchmark.table(
        dict(shape='cifar', in_channels=3, size=8, batch=2, T=2, device='cpu', machine='test', threads=1,
             warmup=1, repeats=3, cupy_skipped=None, rows=rows))


def test_floor_network_computes_the_e_i_convolutions_and_keeps_the_bn_shape(tmp_path):
    torch.manual_seed(0)
    conv = layer.Conv2d(4, 8, 3, padding=1, bias=False, step_mode='m')
    wide = benchmark.widen(torch.nn.Sequential(conv))[0]
    x = torch.rand(2, 3, 4, 6, 6)
    assert wide.conv.out_channels == 10 and wide.conv.kernel_size == (3, 3)
    expected = torch.nn.functional.conv2d(x.flatten(0, 1), wide.conv.weight[:8], padding=1).unflatten(0, (2, 3))
    assert torch.allclose(wide(x), expected, atol=1e-6)
    out = tmp_path / 'floor.json'
    benchmark.main(['-models', 'block', '-b', '2', '-T', '2', '-size', '8', '-channels', '4', '-warmup', '0',
                    '-repeats', '1', '-device', 'cpu', '-floor', '-o', str(out)])
    rows = {r['norm']: r for r in json.loads(out.read_text())['rows'] if r['neuron'] == 'lif'}
    assert set(rows) == {'bn', 'ei', 'bnwide'} and rows['bnwide']['param_bytes'] > rows['bn']['param_bytes']


def test_use_neuron_swaps_every_lif_node_and_rebuilds_e_i_blocks_around_it():
    torch.manual_seed(0)
    ei = sj_ei.EIBlock(sj_ei.EIConv2d(2, 8, 3, padding=1, step_mode='m'), sj_ei.e_population(step_mode='m'))
    bn = torch.nn.Sequential(layer.Conv2d(8, 8, 3, padding=1, bias=False, step_mode='m'),
                             layer.BatchNorm2d(8, step_mode='m'), sj_ei.e_population(step_mode='m'))
    net = torch.nn.Sequential(ei, bn)
    x = (torch.rand(3, 2, 2, 8, 8) < 0.3).float()
    sj_ei.ei_init(net, x)
    made = []

    def make():
        made.append(neuron.LIFNode(decay_input=False, detach_reset=True, surrogate_function=surrogate.ATan(),
                                   step_mode='m'))
        return made[-1]
    benchmark.use_neuron(net, make)
    lifs = [m for m in net.modules() if isinstance(m, neuron.LIFNode)]
    assert lifs == made and len(made) == 2
    assert isinstance(net[0], sj_ei.EIBlock) and net[0] is not ei and net[0].layer is ei.layer
    assert net[0].neuron is made[0] and net[1][2] is made[1] and net[1][0] is bn[0]
    spikes = net(x)
    assert spikes.shape == (3, 2, 8, 8, 8) and 0 < spikes.mean() < 1


def test_saved_bytes_counts_each_activation_once_and_no_parameters():
    weight = torch.nn.Parameter(torch.ones(4, 4))
    x = torch.ones(8, 4, requires_grad=True)
    # x @ W saves x and W (a parameter: excluded); (x @ W).sin() saves its input (8*4 floats);
    # x.exp() saves its output; a view of x saved by mul counts with x's storage
    forward = lambda: (x @ weight).sin().sum() + x.exp().sum() + (x[:2] * x[:2]).sum()
    assert benchmark.saved_bytes(forward, torch.nn.ParameterList([weight])) == 3 * 8 * 4 * 4


@pytest.mark.parametrize('argv, message', [
    (['-models', 'vgg7'], 'unknown model'),
    (['-models', 'vgg8', '-size', '16'], '-size 16 is too small for vgg8 (needs >= 32)'),
    (['-b', '0'], '-b must be >= 1'),
])
def test_bad_arguments_are_reported(argv, message, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(argv + ['-device', 'cpu'])
    assert message in capsys.readouterr().err
