"""sj_ei.analyze against an independent computation: on a small network with fixed weights and
stroke images, the summary's currents, correlations, moments, rates and gradient norms are the
ones the test computes from the paper's equations by hand; the command line writes the figures."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import layer as sj_layer

import formats
import sj_ei
from sj_ei import analyze, models

T, B = 3, 2


def strokes() -> torch.Tensor:
    """``[T=3, B=2, 1, 8, 8]`` event frames on a dark background: a bar moving right in sample 0,
    a diagonal stroke growing in sample 1."""
    x = torch.zeros(T, B, 1, 8, 8)
    for t in range(T):
        x[t, 0, 0, 2:6, 1 + 2 * t] = 1
        for i in range(2 + 2 * t):
            x[t, 1, 0, i, i] = 1
    return x


def fixed_layer(cls, *args, seed, **kwargs):
    """An E-I layer with positive weights drawn from ``seed`` (not E-I Init: known numbers)."""
    layer = cls(*args, step_mode='m', **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 0.6 + 0.2)
        if layer.bias is not None:
            layer.bias.copy_(torch.linspace(-0.2, 0.3, layer.n_e))
    state = {**layer.state_dict(), 'initialized': torch.tensor(True)}
    layer.load_state_dict(state)  # as from a checkpoint: initialized, so training mode keeps these weights
    return layer


class Net(nn.Module):
    """E-I conv block (8 E, 2 I channels, 3x3) -> 2x2 average pooling -> E-I readout (3 classes)."""

    def __init__(self, neuron):
        super().__init__()
        self.block = sj_ei.EIBlock(fixed_layer(sj_ei.EIConv2d, 1, 8, 3, padding=1, ei_ratio=4, seed=1), neuron)
        self.pool, self.flat = sj_layer.AvgPool2d(2, step_mode='m'), sj_layer.Flatten(step_mode='m')
        self.readout = fixed_layer(sj_ei.EILinear, 8 * 16, 3, ei_ratio=3, readout=True, seed=2)

    def forward(self, x):
        return self.readout(self.flat(self.pool(self.block(x))))


def by_hand(layer, x):
    """The paper's currents of E-I conv ``layer`` on ``x [T, B, C, H, W]``, each ``[T*B, n_E, H, W]``."""
    x = x.flatten(0, 1)
    i_ee = F.conv2d(x, layer.weight_ee, padding=1)
    r = F.conv2d(x, layer.weight_ie, padding=1).relu()
    i_ei = torch.einsum('ec,nchw->nehw', layer.weight_ei, r)
    i_sh = torch.einsum('ec,nchw->nehw', layer.weight_ei * layer.gain_i, r)
    floor = torch.where(i_sh > 0, i_sh, torch.inf).flatten(1).amin(1)   # smallest positive value per sample
    i_sh = torch.where(i_sh == 0, floor[:, None, None, None], i_sh)       # adaptive stabilization
    gain = layer.gain_e[:, None, None] / i_sh
    return dict(i_ee=i_ee, i_ei=i_ei, r=r, gain=gain, i_int=gain * (i_ee - i_ei) + layer.bias[:, None, None])


def lif_by_hand(i_int):
    """Spikes of the paper's LIF (tau 2, no input decay, threshold 1, soft reset) on ``[T, ...]``."""
    v, spikes = torch.zeros_like(i_int[0]), []
    for current in i_int:
        h = v - v / 2 + current
        s = (h >= 1).to(h.dtype)
        v = h - s
        spikes.append(s)
    return torch.stack(spikes)


def bimodality(x):
    """Sarle's coefficient from the sample moments, written out."""
    x = x.double().flatten()
    n, d = x.numel(), x - x.mean()
    m2, m3, m4 = (d ** 2).mean(), (d ** 3).mean(), (d ** 4).mean()
    g, k = m3 / m2 ** 1.5, m4 / m2 ** 2 - 3
    return ((g ** 2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))).item()


@pytest.mark.parametrize('neuron', [sj_ei.EILIFNode, sj_ei.e_population], ids=['fused', 'composable'])
def test_summary_numbers_equal_the_paper_equations_by_hand(neuron):
    net, x = Net(neuron(step_mode='m')), strokes()
    summary = analyze.summarize(analyze.record(net, [x, x.flip(-1)]))
    assert net.block.layer.output == ('currents' if neuron is sj_ei.EILIFNode else 'current')  # restored
    hand = [by_hand(net.block.layer, batch) for batch in (x, x.flip(-1))]
    every = {key: torch.cat([h[key] for h in hand]) for key in hand[0]}
    layer = summary['layers']['block.layer']
    assert layer['i_int']['mean'] == pytest.approx(every['i_int'].mean().item(), rel=1e-5)
    assert layer['i_int']['std'] == pytest.approx(every['i_int'].double().std(unbiased=False).item(), rel=1e-5)
    assert layer['i_int']['bimodality'] == pytest.approx(bimodality(every['i_int']), rel=1e-4)
    assert layer['i_int']['n'] == every['i_int'].numel() == 2 * T * B * 8 * 64
    assert layer['ee_ei_correlation'] == pytest.approx(
        torch.corrcoef(torch.stack([every['i_ee'].flatten(), every['i_ei'].flatten()]))[0, 1].item(), rel=1e-5)
    assert layer['ei_over_ee'] == pytest.approx((every['i_ei'].mean() / every['i_ee'].mean()).item(), rel=1e-6)
    assert layer['gain']['mean'] == pytest.approx(every['gain'].mean().item(), rel=1e-5)
    assert sum(layer['i_int_histogram']['counts']) == pytest.approx(every['i_int'].numel() * 0.99, rel=0.011)
    assert summary['i_populations']['block.layer'] == pytest.approx(
        dict(mean_r=every['r'].mean().item(), active=(every['r'] > 0).double().mean().item()), rel=1e-6)
    spikes = torch.cat([lif_by_hand(h['i_int'].unflatten(0, (T, B))).flatten(0, 1) for h in hand])
    rates = summary['e_populations']['block.neuron']
    assert rates['per_channel'] == pytest.approx(spikes.mean((0, 2, 3)).tolist(), abs=1e-7)
    assert rates['rate'] == pytest.approx(spikes.mean().item(), rel=1e-6)
    assert 0 < rates['rate'] < 1 and min(rates['per_channel']) < max(rates['per_channel'])  # alive, not uniform


def test_gradient_norms_with_and_without_the_1_over_d_scale_equal_autograd_on_the_equations():
    """Without a spiking neuron in between (I_int straight into the readout), the network is the
    paper's equations: autograd on them gives the gradients; 1/d divides W_EI's gradient by its fan-in."""
    net, x, labels = Net(nn.Identity()), strokes(), torch.tensor([0, 2])
    norms = analyze.gradient_norms(net, x, labels)
    conv, readout = net.block.layer, net.readout
    conv_p = {p: getattr(conv, p).detach().clone().requires_grad_() for p in analyze.PARAMETERS}
    read_p = {p: getattr(readout, p).detach().clone().requires_grad_() for p in ('weight_ee', 'weight_ie', 'weight_ei')}
    x2 = x.flatten(0, 1)
    i_ee = F.conv2d(x2, conv_p['weight_ee'], padding=1)
    r = F.conv2d(x2, conv_p['weight_ie'], padding=1).relu()
    i_ei = torch.einsum('ec,nchw->nehw', conv_p['weight_ei'], r)
    i_sh = torch.einsum('ec,nchw->nehw', conv_p['weight_ei'] * conv_p['gain_i'], r)
    floor = torch.where(i_sh > 0, i_sh, torch.inf).flatten(1).amin(1)[:, None, None, None]
    i_sh = i_sh + (torch.where(i_sh == 0, floor, i_sh) - i_sh).detach()  # stabilization: gradient straight through
    i_int = conv_p['gain_e'][:, None, None] * (i_ee - i_ei) / i_sh + conv.bias.detach()[:, None, None]
    h = F.avg_pool2d(i_int, 2).flatten(1)
    r_out = (h @ read_p['weight_ie'].t()).relu()
    out = (h @ read_p['weight_ee'].t() - r_out @ read_p['weight_ei'].t()).unflatten(0, (T, B))
    F.cross_entropy(out.mean(0), labels).backward()
    for layer, grads in (('block.layer', conv_p), ('readout', read_p)):
        fan_in = (conv if layer == 'block.layer' else readout).fan_in
        for p, tensor in grads.items():
            raw = tensor.grad.norm().item()
            assert norms['without_1/d'][layer][p] == pytest.approx(raw, rel=1e-4), (layer, p)
            assert norms['with_1/d'][layer][p] == pytest.approx(raw / fan_in if p == 'weight_ei' else raw, rel=1e-4)
    assert set(norms['with_1/d']['readout']) == {'weight_ee', 'weight_ie', 'weight_ei'}
    assert net.block.layer.grad_scale and all(p.grad is None for p in net.parameters())  # left as found


def test_a_batch_norm_network_is_summarized_by_its_lif_input_currents():
    conv = sj_layer.Conv2d(1, 4, 3, padding=1, bias=False, step_mode='m')
    norm = sj_layer.BatchNorm2d(4, step_mode='m')
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(0.1, 1.0, 36).view(4, 1, 3, 3))
        norm.running_mean.fill_(0.3)
    net = nn.Sequential(conv, norm, sj_ei.e_population(step_mode='m'))
    x = strokes()
    twin = analyze.record(net, [x], 'BN')
    summary = analyze.summarize(analyze.record(Net(sj_ei.EILIFNode(step_mode='m')), [x]), twin=twin)
    after_bn = norm.eval()(conv(x))
    current = summary['twin']['currents']['2']
    assert current['stats']['mean'] == pytest.approx(after_bn.mean().item(), rel=1e-5)
    assert current['stats']['bimodality'] == pytest.approx(bimodality(after_bn), rel=1e-4)
    assert summary['twin']['e_populations']['2']['rate'] == pytest.approx(lif_by_hand(after_bn).mean().item())


def sobel_by_hand(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of ``[H, W]``, borders replicated, written out with slices."""
    p = np.pad(image, 1, mode='edge')
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.hypot(gx, gy)


def test_feature_maps_are_the_firing_rates_of_a_block_beside_the_input_contours():
    """Figure 8: each network's rate map (spikes of the chosen block averaged over T and channels) is the LIF of
    the paper's currents (E-I) or of the batch-norm output by hand; its correlations are with the Sobel contours
    and the intensity of the input (event counts over time), pooled to the map's size."""
    x = strokes()
    ei = Net(sj_ei.EILIFNode(step_mode='m'))
    conv = sj_layer.Conv2d(1, 4, 3, padding=1, bias=False, step_mode='m')
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-0.5, 1.0, 36).view(4, 1, 3, 3))
    bn = nn.Sequential(nn.Sequential(conv, sj_layer.BatchNorm2d(4, step_mode='m'), sj_ei.e_population(step_mode='m')),
                       sj_layer.AvgPool2d(2, step_mode='m'))
    assert analyze.blocks(ei) == ['block'] and analyze.blocks(bn) == ['0']
    maps = analyze.feature_maps({'E-I': ei}, x, n=2)
    assert maps['block'] == 'block'
    spikes = lif_by_hand(by_hand(ei.block.layer, x)['i_int'].unflatten(0, (T, B)))
    rates = spikes.mean((0, 2))                                              # [B, 8, 8]
    entry = maps['networks']['E-I']
    torch.testing.assert_close(torch.tensor(entry['rates']), rates)
    assert 0 < entry['mean_rate'] < 1 and entry['active'] == pytest.approx((rates > 0).double().mean().item())
    counts = x.sum(0)[:, 0].numpy()                                          # events per pixel over time
    contours = np.stack([sobel_by_hand(c) for c in counts])
    np.testing.assert_allclose(maps['contours'], contours, rtol=1e-6, atol=1e-6)
    assert entry['contour_correlation'] == pytest.approx(np.corrcoef(rates.numpy().ravel(), contours.ravel())[0, 1])
    assert entry['intensity_correlation'] == pytest.approx(np.corrcoef(rates.numpy().ravel(), counts.ravel())[0, 1])
    assert np.asarray(maps['input']).shape == (2, 8, 8, 3)
    bn_maps = analyze.feature_maps({'BN': bn}, x, '0', n=1)
    after_bn = bn[0][1].eval()(conv(x[:, :1]))  # in eval mode, as feature_maps runs it
    torch.testing.assert_close(torch.tensor(bn_maps['networks']['BN']['rates']), lif_by_hand(after_bn).mean((0, 2)))
    with pytest.raises(ValueError, match="E-I network .* has no block 'readout' .*its blocks: block"):
        analyze.feature_maps({'E-I': ei}, x, 'readout')


def test_feature_maps_of_an_ei_network_and_its_batch_norm_twin_on_static_images(tmp_path):
    pytest.importorskip('matplotlib')
    rng = np.random.default_rng(0)
    images = torch.stack([torch.from_numpy(formats.image(rng, i, 32).copy()).permute(2, 0, 1) for i in range(3)])
    x = images.float() / 255                                                 # [3, 3, 32, 32] photo-like pixels
    torch.manual_seed(0)
    ei, bn = (models.build('vgg8', 4, 3, norm=norm, T=2, width=0.0625) for norm in ('ei', 'bn'))
    sj_ei.ei_init(ei, x)
    maps = analyze.feature_maps({'E-I Init': ei, 'BN untrained': bn}, x, 'features.2', n=2)
    assert maps['block'] == 'features.2' and list(maps['networks']) == ['E-I Init', 'BN untrained']
    torch.testing.assert_close(torch.tensor(maps['input']), x[:2].permute(0, 2, 3, 1))   # the pixels as they are
    for entry in maps['networks'].values():
        assert np.asarray(entry['rates']).shape == (2, 16, 16) and 0 <= entry['mean_rate'] < 1
    summary = analyze.summarize(analyze.record(ei, [x]), twin=analyze.record(bn, [x]))
    summary['feature_maps'] = maps
    paths = analyze.save(summary, tmp_path)
    assert {p.name for p in paths} == {'summary.json', 'i_int.png', 'balance.png', 'rates.png', 'feature_maps.png'}


def test_command_line_writes_the_summary_and_every_figure(tmp_path):
    pytest.importorskip('matplotlib')
    result = subprocess.run([sys.executable, '-m', 'sj_ei.analyze', '-cfg', 'configs/quickstart.yaml', '-batches', '1',
                             '-set', 'batch_size=4', '-out', str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in tmp_path.iterdir()} == {'summary.json', 'i_int.png', 'balance.png', 'rates.png',
                                                    'gradients.png', 'feature_maps.png'}
    summary = json.loads((tmp_path / 'summary.json').read_text())
    layers = [f'features.{i}.layer' for i in (0, 2, 4, 6, 8)]
    assert list(summary['layers']) == layers and list(summary['gradients']['with_1/d']) == layers + ['readout']
    assert list(summary['twin']['currents']) == [f'features.{i}.2' for i in (0, 2, 4, 6, 8)]
    assert all(0 < e['rate'] < 1 for e in summary['e_populations'].values())
    for name in layers:  # Figure 5: without 1/d, W_EI's gradient is its fan-in times larger
        with_d, without = summary['gradients']['with_1/d'][name], summary['gradients']['without_1/d'][name]
        assert without['weight_ei'] > 8 * with_d['weight_ei'] and without['weight_ee'] == with_d['weight_ee']
    bad = subprocess.run([sys.executable, '-m', 'sj_ei.analyze', '-cfg', 'configs/quickstart.yaml', '-pretrained',
                          str(tmp_path / 'summary.json')], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.startswith('error: -pretrained ') and 'summary.json' in bad.stderr
    assert math.isfinite(summary['layers']['features.0.layer']['i_int']['bimodality'])
    maps = summary['feature_maps']  # Figure 8: the first block of both networks on the first 4 test inputs
    assert maps['block'] == 'features.0' and list(maps['networks']) == ['E-I Init', 'BN untrained (calibrated)']
    assert all(np.asarray(e['rates']).shape == (4, 32, 32) for e in maps['networks'].values())
