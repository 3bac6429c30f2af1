"""python -m sj_ei.benchmark runs and writes a well-formed table and JSON (no timing claims here)."""
import json

from sj_ei import benchmark


def test_benchmark_runs_and_its_output_is_well_formed(tmp_path, capsys):
    out = tmp_path / 'result.json'
    benchmark.main(['-models', 'block', '-b', '2', '-T', '2', '-channels', '4', '-warmup', '1', '-repeats', '2',
                    '-device', 'cpu', '-o', str(out)])
    result = json.loads(out.read_text())
    assert (result['shape'], result['batch'], result['T'], result['device']) == ('cifar', 2, 2, 'cpu')
    rows = {(r['model'], r['norm'], r['backend']): r for r in result['rows']}
    assert set(rows) == {('block', 'bn', 'torch'), ('block', 'ei', 'torch')}
    assert 'CUDA' in result['cupy_skipped']
    bn, ei = rows['block', 'bn', 'torch'], rows['block', 'ei', 'torch']
    assert bn['time_ratio'] == 1.0 and bn['saved_ratio'] == 1.0
    for r in rows.values():
        assert 0 < r['q1_s'] <= r['median_s'] <= r['q3_s'] and r['saved_bytes'] > 0
    assert ei['saved_ratio'] == ei['saved_bytes'] / bn['saved_bytes']
    table = capsys.readouterr().out
    assert 'block     ei    torch' in table and 'saved MB' in table


def test_saved_bytes_counts_each_activation_once_and_no_parameters():
    import torch
    weight = torch.nn.Parameter(torch.ones(4, 4))
    x = torch.ones(8, 4, requires_grad=True)
    # x @ W saves x and W (a parameter: excluded); (x @ W).sin() saves its input (8*4 floats)
    assert benchmark.saved_bytes(lambda: (x @ weight).sin().sum(), torch.nn.ParameterList([weight])) == 2 * 8 * 4 * 4
