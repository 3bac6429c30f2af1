"""What a run leaves behind: TensorBoard scalars, E firing rates, E-I histograms and figures, checkpoints."""
import pytest
import torch
from spikingjelly.activation_based import functional
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import sj_ei
from train import classify
from sj_ei import config as cfg
from train.monitor import FiringRates, e_populations

from train_helpers import tiny_config

SCALARS = {'train/loss', 'train/acc1', 'train/acc5', 'test/loss', 'test/acc1', 'test/acc5', 'lr', 'train/speed',
           'test/speed'}


def test_an_ei_run_logs_scalars_firing_rates_histograms_and_checkpoints(tmp_path, capsys):
    summary = classify.train(cfg.load(tiny_config(tmp_path, epochs=2, histograms=True)))
    run = tmp_path / 'run'
    assert {'checkpoint_latest.pth', 'checkpoint_max.pth'} <= {p.name for p in run.iterdir()}
    events = EventAccumulator(str(run), size_guidance={'histograms': 0, 'scalars': 0}).Reload()
    scalars = set(events.Tags()['scalars'])
    assert SCALARS <= scalars
    test_acc1 = [s.value for s in events.Scalars('test/acc1')]
    assert [s.step for s in events.Scalars('test/acc1')] == [0, 1]
    # the summary: the first best epoch, the last epoch, where the checkpoints are, on one line at the end
    best_epoch = test_acc1.index(max(test_acc1))
    assert summary[:3] == pytest.approx((max(test_acc1), best_epoch, test_acc1[-1])) and summary.out_dir == run
    assert torch.load(run / 'checkpoint_max.pth', weights_only=True)['epoch'] == best_epoch
    last_line = capsys.readouterr().out.splitlines()[-1]
    assert last_line.startswith(f'done: best test acc@1 {summary.best_acc1:.2f} at epoch {best_epoch}, '
                                f'last {summary.last_acc1:.2f}, in ')
    assert last_line.endswith(f' s; checkpoints in {run} (checkpoint_max.pth: best, checkpoint_latest.pth: last)')
    rates = sorted(tag for tag in scalars if tag.startswith('firing_rate/'))
    assert rates == [f'firing_rate/features.{i}.neuron' for i in (0, 2, 4, 6, 8)]  # one per E population of VGG-8
    assert all(0 < s.value < 1 for tag in rates for s in events.Scalars(tag))
    lr = [s.value for s in events.Scalars('lr')]
    assert lr[0] == pytest.approx(0.005, rel=0.2) and lr[1] < lr[0]  # warm-up (1 epoch), then cosine
    histograms = set(events.Tags()['histograms'])
    for layer in ('features.0.layer', 'features.8.layer', 'readout'):
        assert f'I_int/{layer}' in histograms
    for name in ('weight_ee', 'weight_ie', 'weight_ei', 'gain_i', 'gain_e', 'bias'):
        assert f'param/features.0.layer.{name}' in histograms
    # operation counts and energy of the test set, per sample (sj_ei.energy)
    energy = [s.value for s in events.Scalars('ops/energy_pJ')]
    assert len(energy) == 2 and all(e > 0 for e in energy)
    assert 0 < events.Scalars('ops/inhibition_share')[-1].value < 1
    # at the end, the E-I balance and firing-rate figures of sj_ei.analyze, as images of the last epoch
    assert set(events.Tags()['images']) == {'analysis/balance', 'analysis/rates', 'analysis/feature_maps'}
    assert [image.step for image in events.Images('analysis/balance')] == [1]


def test_a_batch_norm_baseline_trains_without_ei_init(tmp_path):
    classify.train(cfg.load(tiny_config(tmp_path, epochs=1, norm='bn', lr=0.1, warmup_epochs=0, figures=False)))
    events = EventAccumulator(str(tmp_path / 'run')).Reload()
    assert SCALARS <= set(events.Tags()['scalars'])
    assert events.Tags()['images'] == []  # figures: false
    assert 'firing_rate/features.0.2' in events.Tags()['scalars']  # conv, batch norm, LIF node


def test_firing_rates_are_the_mean_spikes_of_each_e_population():
    net = sj_ei.models.build('vgg8', 7, 2, width=0.125)
    assert list(e_populations(net)) == [f'features.{i}.neuron' for i in (0, 2, 4, 6, 8)]
    bn = sj_ei.models.build('vgg8', 7, 2, norm='bn', width=0.125)
    assert list(e_populations(bn)) == [f'features.{i}.2' for i in (0, 2, 4, 6, 8)]
    x = (torch.rand(2, 3, 2, 32, 32) < 0.3).float()
    sj_ei.ei_init(net, x)
    rates = FiringRates(net)
    spikes = {}
    net.features[2].register_forward_hook(lambda m, i, out: spikes.__setitem__('2', out))
    for _ in range(2):
        net(x)
        functional.reset_net(net)
    assert rates.rates()['features.2.neuron'] == pytest.approx(spikes['2'].mean().item(), rel=1e-6)
    with torch.no_grad():  # evaluation and E-I Init do not count
        net(x)
    assert rates.rates()['features.2.neuron'] == pytest.approx(spikes['2'].mean().item(), rel=1e-6)
