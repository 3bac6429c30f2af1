"""Mixed precision: which dtype the trainer's -amp uses, and sj_ei.fp16_range's measure of the E-I
gradient dL/dI_EE against float16's range (docs/benchmarks.md, AMP)."""
import pytest
import torch

from sj_ei import fp16_range
from train import classify


@pytest.mark.parametrize('device, bf16, dtype', [('cpu', None, torch.bfloat16), ('cuda', True, torch.bfloat16),
                                                 ('cuda', False, torch.float16)])
def test_amp_is_bfloat16_unless_the_gpu_lacks_it(monkeypatch, device, bf16, dtype):
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: bf16)
    assert classify.amp_dtype(torch.device(device)) == dtype


def test_exponent_histogram_and_the_float16_summary_at_the_boundaries():
    # one layer, one step: largest |g| 1 (2^16 overflows: 65536 > 65504; the safe scale is 2^15);
    # 2^-40 flushes at 2^15 (2^-25) but not at 2^16 (2^-24 is float16's smallest subnormal); 2^-45 at both
    g = torch.tensor([2.0 ** -45, -2.0 ** -40, 0.0, 0.75, -1.0])
    histogram = fp16_range.exponent_histogram(g)
    assert histogram.shape == fp16_range.exponent_histogram(torch.tensor([3e38])).shape  # one size for all
    counts, mass = histogram
    assert counts.sum() == 4 and counts[-45 - fp16_range.EXPONENT_LOW] == 1 and mass.sum() == 1.75 + 2.0 ** -40 + 2.0 ** -45
    assert counts[-1 - fp16_range.EXPONENT_LOW] == 1 and mass[0 - fp16_range.EXPONENT_LOW] == 1.0
    [row] = fp16_range.summary(dict(layers={'block': [(1.0, histogram)]}, losses=[2.3]))
    assert row['max_grad'] == 1.0 and row['steps_overflowing'] == 1.0 and row['safe_scale'] == 2.0 ** 15
    assert row['flushed_at_safe'] == 2 / 4 and row['flushed_at_first'] == 1 / 4
    assert row['flushed_mass_at_safe'] == (2.0 ** -45 + 2.0 ** -40) / mass.sum().item()
    assert row['flushed_mass_at_first'] == 2.0 ** -45 / mass.sum().item()
    assert torch.tensor(2.0 ** -40 * 2 ** 16).half().item() > 0 and torch.tensor(2.0 ** -40 * 2 ** 15).half() == 0


def test_the_quick_start_network_is_measured_per_e_i_layer():
    torch.manual_seed(0)
    record = fp16_range.train_and_record(3)
    rows = fp16_range.summary(record)
    assert [r['layer'] for r in rows] == [f'features.{i}' for i in (8, 6, 4, 2, 0)]  # in backward order
    assert all(len(steps) == 3 for steps in record['layers'].values()) and len(record['losses']) == 3
    assert all(r['max_grad'] > 0 and 0 <= r['flushed_at_safe'] <= r['flushed_at_first'] <= 1 for r in rows)
    lines = fp16_range.table(rows, record['losses']).splitlines()
    assert lines[0].startswith('3 float32 steps, loss ') and len(lines) == 2 + 5
