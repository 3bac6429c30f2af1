"""Inputs a user gets wrong give one clear error that names the layer and says what to do."""
import pytest
import torch

import sj_ei


@pytest.fixture
def net():
    return sj_ei.models.build('vgg8', 10, 2, width=0.125)


def test_single_step_input_to_a_multi_step_network(net):
    """Called on ``net.features``, the layer is named within ``net.features``."""
    with pytest.raises(ValueError, match=r"EIConv2d '0\.layer' in step_mode='m' expects input of shape "
                                         r"\[T, B, C, H, W\] with C=2, got \(2, 2, 32\)"):
        net.features(torch.rand(2, 2, 32))


def test_wrong_channel_count_names_the_layer(net):
    with pytest.raises(ValueError, match=r"'features\.0\.layer'.*with C=2, got \(4, 2, 3, 32, 32\)"):
        net(torch.rand(4, 2, 3, 32, 32))


def test_multi_step_input_to_a_single_step_layer_hints_at_set_step_mode():
    layer = sj_ei.EILinear(8, 8)
    with pytest.raises(ValueError, match=r"got \(3, 2, 8\) \(multi-step input needs functional.set_step_mode"):
        layer(torch.rand(3, 2, 8))


def test_non_float_input(net):
    with pytest.raises(TypeError, match=r"'features\.0\.layer': expects a floating-point tensor.*torch.int64.*x.float\(\)"):
        net(torch.ones(2, 2, 2, 32, 32, dtype=torch.long))


def test_static_input_without_T(net):
    with pytest.raises(ValueError, match='needs the number of time steps'):
        net(torch.rand(2, 2, 32, 32))


@pytest.mark.parametrize('kwargs, message', [
    (dict(ei_ratio=16), 'leaves no inhibitory neuron'),
    (dict(init='xavier'), 'init must be one of'),
    (dict(eps=0.0), 'eps must be > 0'),
])
def test_bad_layer_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sj_ei.EIConv2d(3, 8, 3, **kwargs)


def test_unknown_model_and_norm():
    with pytest.raises(ValueError, match='unknown model .*vgg8, vgg11'):
        sj_ei.models.build('vgg13', 10, 3)
    with pytest.raises(ValueError, match="unknown norm 'ln'"):
        sj_ei.models.build('vgg8', 10, 3, norm='ln')
