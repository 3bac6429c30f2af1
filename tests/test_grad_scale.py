"""``grad_scale`` (paper Table 3): a number ``p`` scales the gradient of ``W_EI`` by ``d^-p`` (``d`` the
layer's fan-in), ``True`` is ``p = 1`` and ``False`` no scaling, on the composable and the fused path and
through ``models.build`` and the config; nothing else's gradient changes."""
import numpy as np
import pytest
import torch
from torch import nn
from spikingjelly.activation_based import functional, layer as sj_layer

import formats
import sj_ei
from sj_ei import config as cfg, models

T = 2


def images(n: int = 6, side: int = 16) -> torch.Tensor:
    """``[T, n, 3, side, side]``: photo-like images (shapes and strokes, some dark backgrounds) repeated over T."""
    rng = np.random.default_rng(0)
    x = torch.stack([torch.from_numpy(formats.image(rng, i, side).copy()).permute(2, 0, 1).float() / 255 for i in range(n)])
    return x.unsqueeze(0).repeat(T, 1, 1, 1, 1)


def network(fused: bool, grad_scale) -> nn.Module:
    """Two hidden E-I convolutions and an E-I readout; ``fused``: ``EIBlock(layer, EILIFNode())``,
    else the layer followed by spikingjelly's LIF node (``e_population``)."""
    def hidden(cin, cout):
        layer = sj_ei.EIConv2d(cin, cout, 3, padding=1, grad_scale=grad_scale)
        return sj_ei.EIBlock(layer, sj_ei.EILIFNode()) if fused else nn.Sequential(layer, sj_ei.e_population())
    net = nn.Sequential(hidden(3, 16), sj_layer.AvgPool2d(2), hidden(16, 16), sj_layer.AdaptiveAvgPool2d(1),
                        sj_layer.Flatten(), sj_ei.EILinear(16, 6, readout=True, grad_scale=grad_scale))
    functional.set_step_mode(net, 'm')
    return net


def gradients(net: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict:
    net.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(x).mean(0), labels).backward()
    functional.reset_net(net)
    return {name: p.grad.clone() for name, p in net.named_parameters()}


@pytest.mark.parametrize('fused', [False, True], ids=['composable', 'fused'])
def test_weight_ei_gradient_at_p_is_d_to_the_minus_p_times_the_unscaled_one(fused):
    x, labels = images(), torch.arange(6)
    torch.manual_seed(0)
    unscaled = network(fused, False)
    sj_ei.ei_init(unscaled, x)
    reference = gradients(unscaled, x, labels)
    layers = dict(sj_ei.ei_layers(unscaled))
    assert {layer.fan_in for layer in layers.values()} == {27, 144, 16}
    for p in (0.5, 1, 2, True):
        net = network(fused, p)
        net.load_state_dict(unscaled.state_dict())  # same weights (E-I Init included), same batch
        grads = gradients(net, x, labels)
        for name, g in grads.items():
            if name.endswith('weight_ei'):
                d = layers[name.rsplit('.', 1)[0]].fan_in
                assert reference[name].abs().sum() > 0, name  # the comparison is not between zeros
                torch.testing.assert_close(g, reference[name] * float(d) ** -float(p), rtol=1e-6, atol=0, msg=name)
            else:
                assert torch.equal(g, reference[name]), name  # nothing else changes
    default = network(fused, True)
    default.load_state_dict(unscaled.state_dict())
    one = network(fused, 1.0)
    one.load_state_dict(unscaled.state_dict())
    for (name, a), b in zip(gradients(default, x, labels).items(), gradients(one, x, labels).values()):
        assert torch.equal(a, b), name  # p = 1 is the paper's 1/d exactly


def test_models_build_and_the_config_hand_p_to_every_ei_layer(tmp_path):
    net = models.build('vgg8', 10, 3, T=T, width=0.0625, grad_scale=0.5)
    assert {layer.grad_scale for _, layer in sj_ei.ei_layers(net)} == {0.5}
    assert 'grad_scale=0.5' in repr(net)
    path = tmp_path / 'c.yaml'
    path.write_text('dataset: cifar10\nmodel: vgg8\nwidth: 0.0625\ngrad_scale: 2\n')
    config = cfg.load(path)
    assert config['grad_scale'] == 2.0 and isinstance(config['grad_scale'], float)
    assert {layer.grad_scale for _, layer in sj_ei.ei_layers(cfg.build_model(config))} == {2.0}
    assert cfg.apply_sets(config, ['grad_scale=1e-1'])['grad_scale'] == 0.1
    assert cfg.apply_sets(config, ['grad_scale=false'])['grad_scale'] is False


@pytest.mark.parametrize('value', [0, -1, 'half', float('nan'), None])
def test_a_grad_scale_that_is_not_a_bool_or_a_positive_number_is_one_clear_error(tmp_path, value):
    message = 'grad_scale must be true .*, false .* or a number p > 0 .*got '
    with pytest.raises(ValueError, match='EIConv2d: ' + message):
        sj_ei.EIConv2d(3, 8, 3, grad_scale=value)
    path = tmp_path / 'c.yaml'
    path.write_text(f'grad_scale: {"null" if value is None else value}\n')
    with pytest.raises(cfg.ConfigError, match=f'{path}: ' + message):
        cfg.load(path)
