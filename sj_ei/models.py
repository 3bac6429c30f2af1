"""Model builders: the paper's VGG and ResNet-18 (docs/method.md section 6) as E-I networks,
batch-norm SNNs (the baseline) and plain SNNs of the same shape.

All models are multi-step: ``[T, B, C, H, W] -> [T, B, num_classes]`` (average over T
for the prediction); a static image ``[B, C, H, W]`` is repeated T times (direct encoding).
"""
import copy
from typing import Optional

import torch
from torch import nn
from spikingjelly.activation_based import layer

from .block import EIBlock
from .layers import EIConv2d, EILinear, ei_layers
from .neurons import EILIFNode, e_population

VGG_LAYOUTS = {
    'vgg8': [64, 'P', 128, 'P', 256, 'P', 512, 'P', 512, 'P'],
    'vgg11': [64, 'P', 128, 'P', 256, 256, 'P', 512, 512, 'P', 512, 512, 'P'],
    'vgg16': [64, 64, 'P', 128, 128, 'P', 256, 256, 256, 'P', 512, 512, 512, 'P', 512, 512, 512, 'P'],
    'vgg19': [64, 64, 'P', 128, 128, 'P', 256, 256, 256, 256, 'P', 512, 512, 512, 512, 'P',
              512, 512, 512, 512, 'P'],
}
NAMES = (*VGG_LAYOUTS, 'resnet18')
NORMS = ('ei', 'bn', 'none')


class _Builder:
    """Makes the spiking conv blocks and the readout for one ``norm``."""

    def __init__(self, norm: str, ei_ratio: int, layer_options: dict):
        self.norm, self.ei_ratio, self._options = norm, ei_ratio, layer_options

    @property
    def options(self) -> dict:
        """The E-I layer options, with a module of its own (``i_population``) for every layer."""
        return copy.deepcopy(self._options)

    def conv(self, cin: int, cout: int, kernel_size: int, stride: int = 1) -> nn.Module:
        """Spiking conv block ``[T, B, cin, H, W] -> spikes [T, B, cout, H', W']``."""
        padding = kernel_size // 2
        if self.norm == 'ei':
            return EIBlock(EIConv2d(cin, cout, kernel_size, stride, padding, ei_ratio=self.ei_ratio,
                                    step_mode='m', **self.options), EILIFNode(step_mode='m'))
        conv = layer.Conv2d(cin, cout, kernel_size, stride, padding, bias=False, step_mode='m')
        nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')
        norm = [layer.BatchNorm2d(cout, step_mode='m')] if self.norm == 'bn' else []
        return nn.Sequential(conv, *norm, e_population(step_mode='m'))

    def readout(self, features: int, num_classes: int) -> nn.Module:
        if self.norm == 'ei':
            return EILinear(features, num_classes, ei_ratio=min(self.ei_ratio, num_classes), readout=True,
                            step_mode='m', **self.options)
        return layer.Linear(features, num_classes, step_mode='m')


class BasicBlock(nn.Module):
    """ResNet basic block on spikes: ``conv3x3(stride) -> conv3x3``, plus the shortcut
    (identity, or a 1x1 spiking conv block when the shape changes), added as spikes."""

    def __init__(self, make: _Builder, cin: int, cout: int, stride: int):
        super().__init__()
        self.main = nn.Sequential(make.conv(cin, cout, 3, stride), make.conv(cout, cout, 3))
        self.shortcut = make.conv(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x_seq):
        return self.main(x_seq) + self.shortcut(x_seq)


def time_sequence(x: torch.Tensor, T: Optional[int], in_channels: int) -> torch.Tensor:
    """A classifier's input as ``[T, B, C, H, W]``: events as they are, a static ``[B, C, H, W]`` repeated ``T``
    times; one clear error for any other shape, or for a static input without ``T``."""
    if x.dim() == 4:
        if T is None:
            raise ValueError('a static input [B, C, H, W] needs the number of time steps: '
                             'build the model with T=..., or pass [T, B, C, H, W]')
        return x.unsqueeze(0).expand(T, *x.shape)
    if x.dim() != 5:
        raise ValueError(f'expected input [T, B, C, H, W] or [B, C, H, W] with C={in_channels}, got {tuple(x.shape)}')
    return x


class SpikingClassifier(nn.Module):
    """``features`` (multi-step spiking blocks), global average pooling, ``readout``.
    ``min_size``: the smallest input height and width that ``features`` can pool."""

    def __init__(self, features: nn.Sequential, readout: nn.Module, in_channels: int, T: Optional[int],
                 min_size: int = 1):
        super().__init__()
        self.features, self.readout = features, readout
        self.pool = nn.Sequential(layer.AdaptiveAvgPool2d((1, 1), step_mode='m'), layer.Flatten(step_mode='m'))
        self.in_channels, self.T, self.min_size = in_channels, T, min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, C, H, W]`` (events) or ``[B, C, H, W]`` (static, repeated ``self.T`` times)
        ``-> [T, B, num_classes]``."""
        x = time_sequence(x, self.T, self.in_channels)
        if min(x.shape[-2:]) < self.min_size:
            poolings = self.min_size.bit_length() - 1
            raise ValueError(f'input of {x.shape[-2]}x{x.shape[-1]} is too small for this network: its '
                             f'{poolings} 2x2 poolings need at least {self.min_size}x{self.min_size}; '
                             'resize the input (or use resnet18, which takes any size)')
        return self.readout(self.pool(self.features(x)))


def min_size(name: str) -> int:
    """The smallest input height and width model ``name`` takes: ``2^P`` for a VGG's ``P`` 2x2 poolings;
    1 for ResNet-18 (its padded stride-2 convolutions and adaptive pooling take any size)."""
    return 2 ** VGG_LAYOUTS[name].count('P') if name in VGG_LAYOUTS else 1


def _check_narrowest(name: str, norm: str, ei_ratio: int, width: float) -> None:
    """Refuse a ``width`` or ``ei_ratio`` that leaves the narrowest layer (the first, 64 channels at width 1)
    without a channel or, in an E-I network, without an inhibitory neuron."""
    base = 64
    needed = ei_ratio if norm == 'ei' else 1
    if round(base * width) >= needed:
        return
    have = round(base * width)
    layer = f"{name}'s first layer (features.0: {have} channels at width {width:g}, {base} at width 1)"
    if needed > base:
        raise ValueError(f'ei_ratio={ei_ratio} leaves {layer} no inhibitory neuron (one per {ei_ratio} excitatory '
                         f'neurons); use ei_ratio <= {max(1, have)}')
    why = f'the {needed} that ei_ratio={ei_ratio} needs for one inhibitory neuron' if norm == 'ei' else 'one'
    raise ValueError(f'width {width:g} leaves {layer} fewer channels than {why}; the smallest width that works is '
                     f'{needed / base:g}')


def build(name: str, num_classes: int, in_channels: int, norm: str = 'ei', T: Optional[int] = None,
          ei_ratio: int = 4, width: float = 1.0, **layer_options) -> SpikingClassifier:
    """Build ``vgg8``/``vgg11``/``vgg16``/``vgg19``/``resnet18`` with ``norm`` one of
    ``'ei'`` (E-I layers), ``'bn'`` (batch-norm SNN) or ``'none'`` (plain SNN).

    ``T`` is needed only for static input.  ``width`` scales every layer's channel count
    (the paper's networks are ``width=1``; a small width makes a quick CPU model).  ``layer_options`` go to every E-I layer
    (the ablation switches: ``init``, ``sign_constraint``, ``eps``, ``grad_scale`` (True, False or ``p``: ``d ** -p``),
    ``i_population``).
    """
    if name not in NAMES:
        raise ValueError(f'unknown model {name!r}; choose one of {", ".join(NAMES)}')
    if norm not in NORMS:
        raise ValueError(f'unknown norm {norm!r}; choose one of {", ".join(NORMS)}')
    if layer_options and norm != 'ei':
        raise ValueError(f'E-I layer options {sorted(layer_options)} apply only to norm=\'ei\'')
    if width <= 0:
        raise ValueError(f'width must be > 0, got {width}')
    _check_narrowest(name, norm, ei_ratio, width)
    make = _Builder(norm, ei_ratio, layer_options)
    scaled = lambda channels: round(channels * width)
    blocks, cin = [], in_channels
    if name == 'resnet18':
        blocks.append(make.conv(cin, scaled(64), 3))
        cin = scaled(64)
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            cout = scaled(cout)
            blocks += [BasicBlock(make, cin, cout, stride), BasicBlock(make, cout, cout, 1)]
            cin = cout
    else:
        for item in VGG_LAYOUTS[name]:
            if item == 'P':
                blocks.append(layer.AvgPool2d(2, step_mode='m'))
            else:
                blocks.append(make.conv(cin, scaled(item), 3))
                cin = scaled(item)
    model = SpikingClassifier(nn.Sequential(*blocks), make.readout(cin, num_classes), in_channels, T,
                              min_size(name))
    ei_layers(model)  # names the E-I layers, so that their errors say which one
    return model
