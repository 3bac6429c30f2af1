"""python -m sj_ei.neuron_benchmark: every E population implementation timed on one layer's currents;
here the fused CuPy kernel runs through the CUDA emulation and spikingjelly's CuPy LIF (0.0.0.0.14)
cannot run, so it is a row with its error."""
import json

import torch

from sj_ei import _compat, neuron_benchmark


def test_every_variant_is_a_row_timed_or_with_its_error(emulated_cupy, tmp_path, capsys):
    out = tmp_path / 'neurons.json'
    neuron_benchmark.main(['-device', 'cpu', '-b', '1', '-warmup', '1', '-repeats', '2', '-o', str(out)])
    result = json.loads(out.read_text())
    assert result['currents'] == [4, 1, 64, 32, 32] and result['spikingjelly'] == _compat.SJ_VERSION
    rows = {(r['variant'], r['backend']): r for r in result['rows']}
    expected = {('fused', 'torch'), ('fused', 'cupy'), ('composable', 'torch')}
    assert set(rows) == expected | ({('composable', 'cupy')} if _compat.HAS_CUPY_BACKEND else set())
    for key in expected:
        assert 'error' not in rows[key] and rows[key]['min_s'] > 0 and rows[key]['speedup'] > 0, key
    assert rows['composable', 'torch']['speedup'] == 1.0
    if _compat.HAS_CUPY_BACKEND:  # spikingjelly's CuPy kernel needs a GPU (the emulation runs sj_ei's only)
        assert 'NVIDIA' in rows['composable', 'cupy']['error'] and 'median_s' not in rows['composable', 'cupy']
    assert 'composable  torch' in capsys.readouterr().out


def test_currents_are_near_balance_with_a_positive_shunt():
    c = neuron_benchmark.currents((2, 3, 4, 5, 5), torch.device('cpu'))
    assert c.d.abs().max() <= 0.2 and c.d.min() < 0 < c.d.max() and c.i_sh.min() >= 0.05
    assert all(t.requires_grad for t in c)
