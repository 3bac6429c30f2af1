"""Bring existing work in: DeepEISNN checkpoints, and spikingjelly CNNs with batch norm.

``from_deepeisnn(path_or_state_dict, config)`` reads the authors' published models
(``model.safetensors`` with its ``config.json``) and their ``.pth`` training checkpoints
into an sj_ei model of the same architecture.  Their layout pairs a projection module
(``conv_ee``/``conv_ie`` convolutions, or ``weight_ee``/``weight_ie`` of a linear layer)
with the next inhibition module (``weight_ei``, ``alpha`` = g_I, ``gain`` = g_E, ``bias``);
the pairs, in order, are sj_ei's E-I layers in order.  Their output layer's ``alpha``,
``gain`` and ``bias`` are not used by their forward pass (it returns ``I_EE - I_EI``),
and sj_ei's readout has no such parameters, so they are dropped.

``to_ei(net)`` replaces every Conv2d -> BatchNorm2d pair of a spikingjelly network by an
uninitialized ``EIConv2d`` (batch norm removed), ready for E-I Init.
"""
import json
import re
from pathlib import Path

import torch
from torch import nn

from . import models
from .init import ei_layers, name_layers
from .layers import EIConv2d

#: DeepEISNN dataset name -> (num_classes, in_channels)
DATASETS = {'CIFAR10': (10, 3), 'CIFAR100': (100, 3), 'TinyImageNet200': (200, 3), 'CIFAR10DVS': (10, 2),
            'DVSGesture': (11, 2), 'MNIST': (10, 1)}
_PROJECTION = {'conv_ee.weight': 'weight_ee', 'conv_ie.weight': 'weight_ie',
               'weight_ee': 'weight_ee', 'weight_ie': 'weight_ie'}
_INHIBITION = {'weight_ei': 'weight_ei', 'alpha': 'gain_i', 'gain': 'gain_e', 'bias': 'bias'}


class ConversionError(ValueError):
    """A checkpoint or network that cannot be converted; the message names what did not map."""


def _load_state_dict(source) -> dict:
    if isinstance(source, dict):
        state = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConversionError(f'{path} does not exist')
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location='cpu', weights_only=True)
    for wrapper in ('state_dict', 'model', 'model_state_dict'):  # training checkpoints wrap the weights
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return {re.sub(r'^(module\.|_orig_mod\.)+', '', k): v for k, v in state.items()}


def _load_config(config, source) -> dict:
    if config is None and not isinstance(source, dict):
        beside = Path(source).with_name('config.json')
        if beside.is_file():
            config = beside
    if config is None:
        raise ConversionError('from_deepeisnn needs the model config: config.json of the model card, '
                              'or a dict with arch, num_layers and dataset')
    if not isinstance(config, dict):
        config = json.loads(Path(config).read_text())
    missing = [k for k in ('arch', 'num_layers') if k not in config]
    if missing:
        raise ConversionError(f'the DeepEISNN config lacks {missing}')
    return config


def _partner(prefix: str) -> str:
    """The inhibition module that goes with projection module ``prefix`` in the authors' models:
    ``layers.i`` -> ``layers.{i+1}`` (VGG), ``downsample.0`` -> ``downsample.1``, ``convK`` ->
    ``normK`` (ResNet), ``fc`` -> ``final_ei_norm``."""
    parent, _, leaf = prefix.rpartition('.')
    join = lambda name: f'{parent}.{name}' if parent else name
    if leaf.isdigit():
        return join(str(int(leaf) + 1))
    if leaf.startswith('conv'):
        return join('norm' + leaf[4:])
    return join('final_ei_norm') if leaf == 'fc' else ''


def _order(prefix: str):
    """Forward order of the authors' modules: numbers compared as numbers, the classifier last."""
    return (prefix == 'fc', [(0, int(p), '') if p.isdigit() else (1, 0, p) for p in prefix.split('.')])


def _units(state: dict):
    """The checkpoint's (projection, inhibition) parameter groups in forward order, and the keys left over."""
    modules = {}
    for key in state:
        for suffix in (*_PROJECTION, *_INHIBITION):
            if key.endswith('.' + suffix) or key == suffix:
                modules.setdefault(key[:len(key) - len(suffix)].rstrip('.'), {})[suffix] = key
                break
    units, used = [], set()
    for prefix in sorted(modules, key=_order):
        found, partner = modules[prefix], modules.get(_partner(prefix), {})
        is_projection = {'conv_ee.weight', 'conv_ie.weight'} <= set(found) or (
            {'weight_ee', 'weight_ie'} <= set(found) and 'weight_ei' not in found)
        if is_projection and set(_INHIBITION) <= set(partner):
            units.append((found, partner))
            used.update(found.values(), partner.values())
    return units, [k for k in state if k not in used]


def from_deepeisnn(source, config=None, T=None) -> models.SpikingClassifier:
    """An sj_ei model holding the weights of a DeepEISNN checkpoint.

    ``source``: a ``model.safetensors`` / ``.pth`` path or a state dict; ``config``: the model card's
    ``config.json`` (path or dict; by default the one beside ``source``) giving ``arch``
    (``'VGG'``/``'ResNet'``), ``num_layers``, ``dataset`` (or ``num_classes`` and ``in_channels``),
    ``ei_ratio`` (default 4), ``T``.  The model's ``forward(x).mean(0)`` equals the authors' output.
    """
    state, config = _load_state_dict(source), _load_config(config, source)
    name = f"{str(config['arch']).lower()}{config['num_layers']}"
    if name not in models.NAMES:
        raise ConversionError(f'DeepEISNN architecture {config["arch"]}{config["num_layers"]} has no sj_ei '
                              f'counterpart; sj_ei builds {", ".join(models.NAMES)}')
    if config.get('light_classifier') is False:
        raise ConversionError('DeepEISNN VGGs with the 4096-4096 classifier (light_classifier: false) have no '
                              'sj_ei counterpart; sj_ei reads out after global average pooling')
    num_classes, in_channels = (config['num_classes'], config['in_channels']) if 'num_classes' in config \
        else DATASETS[config['dataset']]
    net = models.build(name, num_classes, in_channels, T=T or config.get('T'), ei_ratio=config.get('ei_ratio', 4))
    units, unmapped = _units(state)
    layers = ei_layers(net)
    problems = []
    if unmapped:
        problems.append(f'keys that did not map: {unmapped[:20]}' + (' ...' if len(unmapped) > 20 else ''))
    if len(units) != len(layers):
        problems.append(f'{len(units)} E-I layers in the checkpoint, {len(layers)} in sj_ei {name}: '
                        f'missing {[n for n, _ in layers[len(units):]]}')
    if problems:
        raise ConversionError('not a DeepEISNN checkpoint of ' + name + ': ' + '; '.join(problems))
    with torch.no_grad():
        for (layer_name, layer), (projection, inhibition) in zip(layers, units):
            for keys, mapping in ((projection, _PROJECTION), (inhibition, _INHIBITION)):
                for suffix, key in keys.items():
                    target = getattr(layer, mapping[suffix])
                    if target is None:
                        continue  # the output layer's unused g_I, g_E, b_E
                    value = state[key].reshape(-1) if target.dim() == 1 else state[key]
                    if value.shape != target.shape:
                        raise ConversionError(f'{key} has shape {tuple(state[key].shape)}, sj_ei '
                                              f'{layer_name}.{mapping[suffix]} needs {tuple(target.shape)}')
                    target.copy_(value)
            layer._set_initialized(True)
    return net


def to_ei(net: nn.Module, ei_ratio: int = 4, **layer_options) -> nn.Module:
    """Replace, in place, every ``Conv2d`` directly followed by a ``BatchNorm2d`` (as siblings in
    registration order, as in spikingjelly's model zoo) by an uninitialized ``EIConv2d`` of the
    same geometry and step mode, and the batch norm by ``nn.Identity`` (a convolution's bias goes
    too: batch norm cancelled it, and ``EIConv2d.bias`` takes its role).  Other layers (neurons,
    pooling, the final ``Linear``) are kept.  Raises ``ConversionError`` naming every batch norm it
    cannot remove and every convolution it cannot replace (groups, padding mode)."""
    problems = []

    def visit(module: nn.Module, prefix: str):
        children = list(module.named_children())
        for (prev_name, prev), (name, child) in zip([(None, None)] + children[:-1], children):
            path = f'{prefix}{name}'
            if isinstance(child, nn.BatchNorm2d):
                if not isinstance(prev, nn.Conv2d):
                    problems.append(f'{path}: a BatchNorm2d that does not follow a Conv2d')
                    continue
                if prev.groups != 1 or prev.padding_mode != 'zeros':
                    problems.append(f'{prefix}{prev_name}: a Conv2d with groups={prev.groups}, padding_mode='
                                    f'{prev.padding_mode!r}; EIConv2d has groups=1 and zero padding')
                    continue
                setattr(module, prev_name, EIConv2d(prev.in_channels, prev.out_channels, prev.kernel_size,
                                                    prev.stride, prev.padding, prev.dilation, ei_ratio=ei_ratio,
                                                    step_mode=getattr(prev, 'step_mode', 's'), **layer_options))
                setattr(module, name, nn.Identity())
            else:
                visit(child, path + '.')
    visit(net, '')
    if problems:
        raise ConversionError('to_ei cannot convert: ' + '; '.join(problems))
    name_layers(net)
    return net
