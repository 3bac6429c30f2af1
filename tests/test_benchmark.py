"""python -m sj_ei.benchmark runs and writes a well-formed table and JSON (no timing claims here)."""
import json

import pytest
import torch

from sj_ei import benchmark


def test_benchmark_runs_and_its_output_is_well_formed(tmp_path, capsys):
    out = tmp_path / 'result.json'
    benchmark.main(['-models', 'block', '-b', '2', '-T', '2', '-size', '8', '-channels', '4', '-warmup', '1',
                    '-repeats', '3', '-device', 'cpu', '-o', str(out)])
    result = json.loads(out.read_text())
    assert (result['shape'], result['batch'], result['T'], result['size'], result['device']) == ('cifar', 2, 2, 8, 'cpu')
    assert result['repeats'] == 3 and result['threads'] >= 1 and result['command'].startswith('python -m sj_ei.benchmark')
    rows = {(r['model'], r['norm'], r['backend']): r for r in result['rows']}
    assert set(rows) == {('block', 'bn', 'torch'), ('block', 'ei', 'torch')}
    assert 'CUDA' in result['cupy_skipped']
    bn, ei = rows['block', 'bn', 'torch'], rows['block', 'ei', 'torch']
    assert bn['time_ratio'] == 1.0 and bn['saved_ratio'] == 1.0
    for r in rows.values():
        assert len(r['times_s']) == 3 and all(t > 0 for t in r['times_s'])
        assert r['min_s'] <= r['q1_s'] <= r['median_s'] <= r['q3_s'] <= r['max_s']
        assert r['saved_bytes'] > 0 and r['param_bytes'] > 0 and 'peak_bytes' not in r
    assert ei['time_ratio'] == pytest.approx(ei['median_s'] / bn['median_s'])
    assert ei['saved_ratio'] == pytest.approx(ei['saved_bytes'] / bn['saved_bytes'])
    # the E-I layer (8 E + 2 I channels) keeps its input and 1.25x the conv output; the BN
    # block keeps its input and the conv output; both LIF nodes and poolings keep the same
    assert ei['saved_bytes'] > bn['saved_bytes']
    table = capsys.readouterr().out
    assert 'block     ei      torch' in table and 'saved MB' in table and result['cupy_skipped'] in table


def test_floor_network_computes_the_e_i_convolutions_and_keeps_the_bn_shape(tmp_path):
    torch.manual_seed(0)
    conv = benchmark.layer.Conv2d(4, 8, 3, padding=1, bias=False, step_mode='m')
    wide = benchmark.widen(torch.nn.Sequential(conv))[0]
    x = torch.rand(2, 3, 4, 6, 6)
    assert wide.conv.out_channels == 10 and wide.conv.kernel_size == (3, 3)
    expected = torch.nn.functional.conv2d(x.flatten(0, 1), wide.conv.weight[:8], padding=1).unflatten(0, (2, 3))
    assert torch.allclose(wide(x), expected, atol=1e-6)
    out = tmp_path / 'floor.json'
    benchmark.main(['-models', 'block', '-b', '2', '-T', '2', '-size', '8', '-channels', '4', '-warmup', '0',
                    '-repeats', '1', '-device', 'cpu', '-floor', '-o', str(out)])
    rows = {r['norm']: r for r in json.loads(out.read_text())['rows']}
    assert set(rows) == {'bn', 'ei', 'bnwide'} and rows['bnwide']['param_bytes'] > rows['bn']['param_bytes']


def test_saved_bytes_counts_each_activation_once_and_no_parameters():
    weight = torch.nn.Parameter(torch.ones(4, 4))
    x = torch.ones(8, 4, requires_grad=True)
    # x @ W saves x and W (a parameter: excluded); (x @ W).sin() saves its input (8*4 floats);
    # x.exp() saves its output; a view of x saved by mul counts with x's storage
    forward = lambda: (x @ weight).sin().sum() + x.exp().sum() + (x[:2] * x[:2]).sum()
    assert benchmark.saved_bytes(forward, torch.nn.ParameterList([weight])) == 3 * 8 * 4 * 4


@pytest.mark.parametrize('argv, message', [
    (['-models', 'vgg7'], 'unknown model'),
    (['-models', 'vgg8', '-size', '16'], 'too small'),
    (['-b', '0'], '-b must be >= 1'),
])
def test_bad_arguments_are_reported(argv, message, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(argv + ['-device', 'cpu'])
    assert message in capsys.readouterr().err
