"""sj_ei.parity: model-level comparisons of backends and autocast dtypes.  Here the CuPy kernels run
on the CPU through the CUDA emulation (tests/cuda_emulation.py); .ci/gpu-check runs the same
comparisons with real launches at the CIFAR shape."""
import json

import pytest
import torch

import sj_ei
from sj_ei import parity
from sj_ei.lif import cupy_launch

CUPY = [c for c in parity.COMPARISONS if c[0] == 'cupy']


@pytest.fixture
def cupy_selectable(emulated_cupy, monkeypatch):
    """``sj_ei.set_backend`` as on a GPU machine: every ``EILIFNode`` switches (it refuses 'cupy' here);
    returns the list of the kernel launches made."""
    def set_backend(net, backend):
        for m in net.modules():
            if isinstance(m, sj_ei.EILIFNode):
                m.backend = backend
    monkeypatch.setattr(sj_ei, 'set_backend', set_backend)
    launches, launch = [], cupy_launch._launch
    monkeypatch.setattr(cupy_launch, '_launch', lambda kernel, *args: launches.append(kernel.name) or launch(
        kernel, *args))
    return launches


def test_photo_like_images_are_smooth_pixels_with_cifar_statistics():
    x = parity.photo_like(64, 32, torch.Generator().manual_seed(0))
    assert x.shape == (64, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert torch.allclose(x.mean((0, 2, 3)), torch.tensor(parity.CIFAR_MEAN), atol=0.02)
    neighbours = (x[..., 1:] - x[..., :-1]).abs().mean()
    assert neighbours < 0.5 * (x - x.mean()).abs().mean()  # smooth: i.i.d. noise gives 1.3x


def test_the_cupy_kernels_match_the_torch_path_in_a_whole_network(cupy_selectable):
    """An E-I VGG-8 (narrow, small batch): the same spikes in every layer and the same gradients, in
    float32 and under bfloat16 and float16 autocast (the kernels read the 16-bit currents in place)."""
    result = parity.run('vgg8', batch=2, T=2, size=32, width=0.125, comparisons=CUPY)
    assert len(cupy_selectable) == len(CUPY) * 5 * 2  # forward and backward of each E-I block's neuron
    for row in result['rows']:
        assert 'error' not in row, row
        assert all(0.01 < rate < 0.6 for rate in row['firing_rates']), row['firing_rates']  # alive, not saturated
        assert row['spike_flips'] == [0.0] * 5 and row['first_layer_differing'] is None, row['candidate']
        assert row['logits_max_diff'] < 1e-5 and row['grad_rel_error_max'] < 1e-4 and row['grads_finite']


def test_autocast_against_float32_and_unavailable_comparisons_as_rows(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip('checks the rows of a machine without a GPU')
    out = tmp_path / 'parity.json'
    parity.main(['-b', '2', '-T', '2', '-width', '0.125', '-device', 'cpu', '-o', str(out)])
    rows = {(r['candidate'], r['reference']): r for r in json.loads(out.read_text())['rows']}
    assert len(rows) == len(parity.COMPARISONS)
    for backend, dtype, ref_backend, ref_dtype in CUPY:
        assert "backend 'cupy'" in rows[f'{backend}/{dtype}', f'{ref_backend}/{ref_dtype}']['error']
    for dtype in ('bfloat16', 'float16'):
        row = rows[f'torch/{dtype}', 'torch/float32']
        assert row['grads_finite'] and len(row['spike_flips']) == 5 and max(row['spike_flips']) < 0.2
        assert row['loss'] == pytest.approx(row['loss_ref'], abs=0.05)
    table = capsys.readouterr().out
    assert table.count(' failed: ') == len(CUPY) and 'torch/bfloat16  vs torch/float32  flips [' in table
