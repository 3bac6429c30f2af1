"""A network that stops learning says so (docs/collapse.md): ``sj_ei.health`` watches the E
populations of any network, and the trainer stops a collapsed run with one error, keeping its
checkpoints; a run shorter than its warm-up gets a schedule that still reaches its peak."""
import math
import re

import pytest
import torch
from spikingjelly.activation_based import functional

import formats
import sj_ei
from sj_ei import health
from train import classify, config as cfg
from train_helpers import ROOT


def digits_like(n=8, seed=0):
    """``[n, 3, 32, 32]`` pixels in [0, 1]: bright coloured strokes on a dark background."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.05
    for i in range(n):
        row, col = torch.randint(4, 20, (2,), generator=g)
        x[i, :, row:row + 10, col:col + 3] = torch.rand(3, 1, 1, generator=g) * 0.5 + 0.5
    return x


def test_health_names_a_silent_and_a_saturated_e_population_of_a_real_network():
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 10, 3, T=4, width=0.25)
    x = digits_like()
    sj_ei.ei_init(net, x)
    rates = health.FiringRates(net)
    net(x)
    functional.reset_net(net)
    alive = rates.rates()
    assert list(alive) == [f'features.{i}.neuron' for i in (0, 2, 4, 6, 8)]
    assert all(health.SILENT < r < health.SATURATED for r in alive.values()), alive
    assert health.collapse(alive) is None
    health.check(alive)  # no error

    with torch.no_grad():
        net.features[2].layer.bias.fill_(-100.0)  # nothing reaches threshold: silent
        net.features[6].layer.bias.fill_(100.0)   # threshold every step: saturated
    rates.reset()
    net(x)
    functional.reset_net(net)
    dead = rates.rates()
    assert dead['features.2.neuron'] == 0 and dead['features.6.neuron'] == 1
    with pytest.raises(health.CollapseError) as error:
        health.check(dead)
    message = str(error.value)
    assert "'features.2.neuron' is silent" in message and "'features.6.neuron' is saturated" in message
    assert 'features.0.neuron' in message  # every population's rate is listed

    rates.reset()
    with torch.no_grad():  # evaluation does not count
        net(x)
    rates.remove()
    net(x)  # nor anything once the hooks are removed
    assert rates.rates() == {}


def test_a_loss_flat_at_ln_classes_is_a_collapse_and_a_loss_that_moves_is_not():
    alive = {'features.0.neuron': 0.1}
    flat = [math.log(10)] * 5
    assert 'flat at ln(10)' in health.collapse(alive, flat, num_classes=10)
    assert health.collapse(alive, [math.log(10), 2.29, math.log(10)], num_classes=10) is None
    assert health.collapse(alive, flat) is None  # without num_classes the loss is not judged
