"""Bring existing work in: sj_ei and DeepEISNN checkpoints, and spikingjelly CNNs with batch norm.

``load_pretrained(model, source)`` loads a checkpoint into a model built by ``sj_ei.models.build``:
sj_ei's own (``train.classify``'s ``checkpoint_max.pth``/``checkpoint_latest.pth``, or a saved
``state_dict()``), or the DeepEISNN authors' (``norm='ei'`` models only).  ``from_deepeisnn(source,
config)`` builds the sj_ei model of a DeepEISNN checkpoint (the authors' published
``model.safetensors`` with its ``config.json``, or a ``.pth`` training checkpoint) and loads it.  The authors' model splits each E-I layer in
two modules: a projection (``conv_ee.weight``/``conv_ie.weight``, or ``weight_ee``/``weight_ie``
of a linear layer) and the inhibition module after it (``weight_ei``, ``gain_i``, ``gain_e``,
``bias``; ``alpha`` and ``gain`` in checkpoints written before their 2026-02-14 renaming).  Their
forward clamps ``W_EE, W_IE, W_EI, g_I, g_E`` to ``>= 0`` before use, so the loaded values are
clamped too; their output layer's ``g_I, g_E, b_E`` are unused by their forward and sj_ei's
readout has none, so those are dropped.

``to_ei(net)`` makes a spikingjelly network an E-I network (every ``Conv2d`` and ``Linear`` an
uninitialized E-I layer, batch norms removed, each layer's neuron the paper's E population unless
kept), ready for E-I Init; ``from_zoo(name, ...)`` builds a spikingjelly model zoo network and
converts it (the trainer's zoo models).
"""
import copy
import importlib
import json
import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from spikingjelly.activation_based import functional, neuron, surrogate

from . import _compat, datasets, models
from .errors import UserError
from .block import EIBlock
from .constraint import clamp_
from .layers import EIConv2d, EILinear, ei_layers
from .neurons import EILIFNode

#: DeepEISNN dataset name -> sj_ei's name of it (``sj_ei.datasets.info``), or its classes and channels where sj_ei
#: has no such dataset
DATASETS = {'CIFAR10': 'cifar10', 'CIFAR100': 'cifar100', 'TinyImageNet200': 'tinyimagenet',
            'CIFAR10DVS': 'cifar10dvs', 'DVSGesture': 'dvsgesture', 'MNIST': dict(num_classes=10, in_channels=1)}
#: the authors' LIF arguments (config ``neuron``) -> how sj_ei's E population takes them
_SURROGATES = {'sigmoid': surrogate.Sigmoid, 'atan': surrogate.ATan, 'leaky_relu': surrogate.LeakyKReLU}
_NEURON_KEYS = ('tau', 'surrogate_function', 'decay_input', 'v_threshold', 'v_reset', 'detach_reset', 'step_mode')
#: sj_ei parameter -> its names in the authors' projection module (convolution, linear) ...
_PROJECTION = {EIConv2d: {'weight_ee': ('conv_ee.weight',), 'weight_ie': ('conv_ie.weight',)},
               EILinear: {'weight_ee': ('weight_ee',), 'weight_ie': ('weight_ie',)}}
#: ... and in their inhibition module (current name first, then the one before 2026-02-14)
_INHIBITION = {'weight_ei': ('weight_ei',), 'gain_i': ('gain_i', 'alpha'), 'gain_e': ('gain_e', 'gain'),
               'bias': ('bias',)}


class ConversionError(UserError, ValueError):
    """A checkpoint or network that cannot be converted; the message names what did not map."""


# ---- reading a checkpoint ---------------------------------------------------------------
def _numpy_globals() -> list:
    """What unpickles the NumPy arrays in the authors' training checkpoints (their RNG state),
    under both NumPy 1 and 2 module names; nothing here runs code."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    allowed = [np.ndarray, np.dtype, *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType'))]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed += [(multiarray._reconstruct, f'{module}._reconstruct'), (multiarray.scalar, f'{module}.scalar')]
    return allowed


def read_checkpoint(source):
    """``(state_dict, config or None)`` of a DeepEISNN checkpoint: a state dict, a
    ``.safetensors`` file, a ``.pth`` file (``torch.load(weights_only=True)``; a training
    checkpoint's ``model_state_dict``/``state_dict``/``model`` and ``config`` entries are
    used, ``module.``/``_orig_mod.`` prefixes dropped), or a model card folder holding
    ``model.safetensors``.  The config is the checkpoint's own, else ``config.json`` beside it."""
    config = None
    if isinstance(source, dict):
        state = source
    else:
        path = Path(source)
        if path.is_dir():
            path = path / 'model.safetensors'
        if not path.is_file():
            raise ConversionError(f'{path} does not exist; give a model.safetensors or .pth file, or a state dict')
        try:
            if path.suffix == '.safetensors':
                from safetensors.torch import load_file
                state = load_file(str(path))
            else:
                with torch.serialization.safe_globals(_numpy_globals()):
                    state = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:  # any reader's failure means the same thing to the user
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            found = [re.search(r'Unsupported (global: GLOBAL [\w.]+|[^.]*)', line) for line in lines]  # e.g. 'Unsupported global: GLOBAL x'
            reason = next((m.group(0) for m in found if m), lines[0])[:200]
            hint = ('it holds Python objects besides tensors: save its state dict alone with torch.save'
                    if 'Unsupported global' in str(e) else 'the file is damaged or not a PyTorch / safetensors checkpoint')
            raise ConversionError(f'cannot read {path} as a checkpoint ({reason}); {hint}') from None
        beside = path.with_name('config.json')
        if beside.is_file():
            config = json.loads(beside.read_text())
    if not isinstance(state, dict):
        raise ConversionError(f'the checkpoint holds a {type(state).__name__}, not a state dict')
    if isinstance(state.get('config'), dict):
        config = state['config']
    for wrapper in ('model_state_dict', 'state_dict', 'model'):  # training checkpoints wrap the weights
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return {re.sub(r'^(module\.|_orig_mod\.)+', '', k): v for k, v in state.items()}, config


def _read_config(config) -> Optional[dict]:
    if config is None or isinstance(config, dict):
        return config
    path = Path(config)
    if not path.is_file():
        raise ConversionError(f'DeepEISNN config {path} does not exist')
    return json.loads(path.read_text())


# ---- where each sj_ei parameter lives in the authors' model ------------------------------
def _authors_modules(net: models.SpikingClassifier, vgg_start: int):
    """``[(sj_ei layer name, layer, projection prefix, inhibition prefix)]`` in forward order.

    VGG: ``layers`` is a Sequential starting with ``[AddTemporalDim,] MergeTemporalDim``
    (``vgg_start`` = index of the first convolution: 2 for static, 1 for event input); each
    conv block takes 6 entries (EiConv2d, EiNorm2d, Split, LIF, Dropout, Merge), each pooling
    1, then Flatten, then the readout (EiLinear, EiNorm1d).  ResNet: ``conv1/norm1``, then
    ``layer{1-4}.{0,1}.conv1/norm1/conv2/norm2`` and ``downsample.0/.1``, then ``fc/final_ei_norm``.
    """
    names = {id(layer): name for name, layer in ei_layers(net)}
    units = []
    add = lambda layer, projection, inhibition: units.append((names[id(layer)], layer, projection, inhibition))
    if any(isinstance(m, models.BasicBlock) for m in net.features):
        add(net.features[0].layer, 'conv1', 'norm1')
        for i, block in enumerate(net.features[1:]):
            at = f'layer{i // 2 + 1}.{i % 2}.'
            add(block.main[0].layer, at + 'conv1', at + 'norm1')
            add(block.main[1].layer, at + 'conv2', at + 'norm2')
            if isinstance(block.shortcut, EIBlock):
                add(block.shortcut.layer, at + 'downsample.0', at + 'downsample.1')
        add(net.readout, 'fc', 'final_ei_norm')
        return units
    index = vgg_start
    for module in net.features:
        if isinstance(module, EIBlock):
            add(module.layer, f'layers.{index}', f'layers.{index + 1}')
            index += 6
        else:
            index += 1
    add(net.readout, f'layers.{index + 1}', f'layers.{index + 2}')  # after Flatten
    return units


def _vgg_start(state: dict, config: Optional[dict]) -> int:
    """Index of the first convolution in the authors' VGG ``layers``: their DVS models take
    ``[B, T, ...]`` input (no AddTemporalDim), static ones repeat the image (AddTemporalDim)."""
    if config and 'dataset' in config:
        return 1 if 'DVS' in str(config['dataset']) else 2
    found = [int(m.group(1)) for k in state for m in [re.match(r'layers\.(\d+)\.conv_ee\.weight$', k)] if m]
    return min(found) if found and min(found) in (1, 2) else 2


def _value(state: dict, key: str, target: torch.Tensor):
    """``state[key]`` in ``target``'s shape (per-channel vectors are stored ``[n, 1, 1]`` or ``[1, n]``),
    or ``None`` when the shapes differ."""
    value = state[key]
    if target.dim() == 1 and value.dim() >= 1 and max(value.shape) == value.numel() == target.numel():
        value = value.reshape(-1)
    return value if value.shape == target.shape else None


def is_sj_ei(state: dict) -> bool:
    """Whether state dict ``state`` has the names of an ``sj_ei.models.build`` model (``features.*``, ``readout.*``)."""
    return any(k.startswith(('features.', 'readout.')) for k in state)


def _layout(state: dict, source) -> str:
    """``'sj_ei'`` or ``'deepeisnn'``: whose names the checkpoint ``source`` (read into ``state``) has."""
    if is_sj_ei(state):
        return 'sj_ei'
    if any(k.endswith(('.conv_ee.weight', '.weight_ee', '.weight_ei')) for k in state):
        return 'deepeisnn'
    raise ConversionError(f'{"the state dict" if isinstance(source, dict) else source} is neither an sj_ei '
                          'model (keys features.*, readout.*) nor a DeepEISNN E-I model (keys ending in '
                          f'conv_ee.weight, weight_ee, weight_ei); its keys: {_listed(list(state))}')


def _listed(items: list) -> str:
    """``"(14) ['a', 'b', ...]"``: how many, and the first 12."""
    return f'({len(items)}) [' + ', '.join(map(repr, items[:12])) + (', ...' if len(items) > 12 else '') + ']'


def _load_sj_ei(model: nn.Module, state: dict) -> nn.Module:
    """Load an sj_ei state dict into ``model``, after checking that every key and shape agrees."""
    own = model.state_dict()
    unexpected, missing = [k for k in state if k not in own], [k for k in own if k not in state]
    wrong = [f'{k} {tuple(state[k].shape)} -> {tuple(own[k].shape)}' for k in state
             if k in own and state[k].shape != own[k].shape]
    if unexpected or missing or wrong:
        problems = [f'keys the model lacks {_listed(unexpected)}'] if unexpected else []
        problems += [f'model entries with no value {_listed(missing)}'] if missing else []
        problems += [f'shapes that differ {_listed(wrong)}'] if wrong else []
        raise ConversionError('not a checkpoint of this sj_ei model: ' + '; '.join(problems) + '. Build the model '
                              'it was trained as (model, norm, width, ei_ratio, the E-I options; a train.classify '
                              "checkpoint holds them in its 'config')")
    model.load_state_dict(state)  # E-I layers' 'initialized' buffers come along: no E-I Init again
    return model


def load_pretrained(model: nn.Module, source, config=None) -> nn.Module:
    """Load a checkpoint into ``model`` (built by ``sj_ei.models.build`` or ``from_zoo``, of the checkpoint's
    architecture); returns ``model``, its E-I layers initialized.

    ``source``: as for ``read_checkpoint``.  An sj_ei checkpoint (``train.classify``'s, or a saved
    ``model.state_dict()``) loads as it is, into a model of any ``norm``; every key and shape must
    agree.  A DeepEISNN checkpoint loads into a ``norm='ei'`` model: ``config`` (dict or
    ``config.json`` path, optional; by default the checkpoint's own or the ``config.json`` beside
    it) gives the LIF settings (``neuron``), which replace the E populations' when given.  Every
    checkpoint key must map and every parameter of ``model`` must get a value.  Anything else is a
    ``ConversionError`` that lists the keys that did not map and the parameters left without one.
    """
    state, found = read_checkpoint(source)
    if _layout(state, source) == 'sj_ei':
        return _load_sj_ei(model, state)
    if not isinstance(model, models.SpikingClassifier):
        raise ConversionError('a DeepEISNN checkpoint loads into a model of sj_ei.models.build(name, num_classes, '
                              f'in_channels, ...), got {type(model).__name__}')
    config = _read_config(config) or found
    if not isinstance(model.readout, EILinear):
        raise ConversionError("a DeepEISNN checkpoint loads into an E-I model (sj_ei.models.build(..., norm='ei')), "
                              f'got one with a {type(model.readout).__name__} readout')
    if config and config.get('type', 'EI-SNN') != 'EI-SNN':
        raise ConversionError(f"the checkpoint is a DeepEISNN {config['type']} model; only their E-I models "
                              "(type EI-SNN) have an sj_ei counterpart")
    if config and config.get('light_classifier') is False:
        raise ConversionError('DeepEISNN VGGs with the 4096-4096 classifier (light_classifier: false) have no '
                              'sj_ei counterpart; sj_ei reads out after global average pooling')
    plan, used, missing, wrong = [], set(), [], []
    for name, layer, projection, inhibition in _authors_modules(model, _vgg_start(state, config)):
        sources = [(ours, projection, aliases) for ours, aliases in _PROJECTION[type(layer)].items()]
        sources += [(ours, inhibition, aliases) for ours, aliases in _INHIBITION.items()]
        for ours, prefix, aliases in sources:
            keys = [f'{prefix}.{alias}' for alias in aliases if f'{prefix}.{alias}' in state]
            target = getattr(layer, ours)
            used.update(keys)
            if target is None:
                continue  # the output layer's g_I, g_E, b_E: unused by the authors' forward
            if not keys:
                missing.append(f'{name}.{ours} (from {prefix}.{aliases[0]})')
            elif (value := _value(state, keys[0], target)) is None:
                wrong.append(f'{keys[0]} {tuple(state[keys[0]].shape)} -> {name}.{ours} {tuple(target.shape)}')
            else:
                plan.append((target, value))
    unmapped = [k for k in state if k not in used]
    if unmapped or missing or wrong:
        problems = [f'keys that did not map {_listed(unmapped)}'] if unmapped else []
        problems += [f'sj_ei parameters with no value {_listed(missing)}'] if missing else []
        problems += [f'shapes that differ {_listed(wrong)}'] if wrong else []
        raise ConversionError('not a DeepEISNN E-I checkpoint of this sj_ei model: ' + '; '.join(problems)
                              + '. Check the architecture (arch, num_layers), dataset and ei_ratio it was built with')
    with torch.no_grad():
        for target, value in plan:
            target.copy_(value)
    for _, layer in ei_layers(model):
        clamp_(layer)  # what the authors' forward does before every use
        layer.set_initialized(True)
    if config and config.get('neuron'):
        _set_neurons(model, config['neuron'])
    return model


def _set_neurons(model: nn.Module, neuron: dict):
    """Give every E-I block the authors' LIF settings (their config ``neuron``)."""
    unknown = sorted(set(neuron) - set(_NEURON_KEYS))
    if unknown or neuron.get('surrogate_function', 'sigmoid') not in _SURROGATES:
        raise ConversionError(f'DeepEISNN neuron settings {neuron} have no sj_ei counterpart: keys must be among '
                              f'{list(_NEURON_KEYS)}, surrogate_function one of {list(_SURROGATES)}')
    settings = {k: v for k, v in neuron.items() if k != 'step_mode'}
    settings['surrogate_function'] = _SURROGATES[settings.get('surrogate_function', 'sigmoid')]()
    if 'tau' in settings:
        settings['tau'] = float(settings['tau'])
    for block in model.modules():
        if isinstance(block, EIBlock):
            block.neuron = EILIFNode(**settings, step_mode=block.step_mode, backend=block.neuron.backend)


def from_deepeisnn(source, config=None, T: Optional[int] = None) -> models.SpikingClassifier:
    """The sj_ei model (``models.build(..., norm='ei')``) holding a DeepEISNN checkpoint.

    ``source``: a state dict, a ``model.safetensors`` / ``.pth`` file or a model card folder.
    ``config``: a dict or ``config.json`` path (by default the checkpoint's own, or the
    ``config.json`` beside it) with ``arch`` (``'VGG'``/``'ResNet'`` and ``num_layers``, or e.g.
    ``'vgg8'``), ``dataset`` (or ``num_classes`` and ``in_channels``), ``ei_ratio`` (default 4),
    ``T`` (or the ``T`` argument: time steps for static input), optionally ``neuron``.
    The model takes ``[T, B, C, H, W]`` (the authors' event models take ``[B, T, ...]``) or a
    static ``[B, C, H, W]``; its ``forward(x).mean(0)`` equals the authors' output.
    """
    state, found = read_checkpoint(source)
    if _layout(state, source) == 'sj_ei':
        raise ConversionError(f'{"the state dict" if isinstance(source, dict) else source} is an sj_ei model: '
                              'load it with load_pretrained(sj_ei.models.build(...), source)')
    config = _read_config(config) or found
    if config is None:
        raise ConversionError('from_deepeisnn needs the model config: the config.json of the model card, or a dict '
                              'with arch, num_layers and dataset (or num_classes and in_channels)')
    arch = str(config.get('arch', '')).lower() + str(config.get('num_layers', ''))
    if arch not in models.NAMES:
        raise ConversionError(f'DeepEISNN architecture {arch or "(none given)"} has no sj_ei counterpart; sj_ei '
                              f'builds {", ".join(models.NAMES)} (config keys arch and num_layers)')
    if 'num_classes' in config and 'in_channels' in config:
        num_classes, in_channels = config['num_classes'], config['in_channels']
    elif config.get('dataset') in DATASETS:
        meta = DATASETS[config['dataset']]
        meta = datasets.info(meta) if isinstance(meta, str) else meta
        num_classes, in_channels = meta['num_classes'], meta['in_channels']
    else:
        raise ConversionError(f'the config needs dataset (one of {", ".join(DATASETS)}) or num_classes and '
                              f'in_channels, got {config.get("dataset")!r}')
    net = models.build(arch, num_classes, in_channels, T=T or config.get('T'), ei_ratio=config.get('ei_ratio', 4))
    return load_pretrained(net, state, config)


# ---- spikingjelly networks ---------------------------------------------------------------
#: what ``to_ei`` does with the neuron after each converted layer
NEURONS = ('ei', 'keep')


def _is_neuron(module: nn.Module) -> bool:
    return isinstance(module, _compat.NEURON_BASES)


def charge_gain(node: nn.Module) -> Optional[float]:
    """The ``g_E`` that makes spikingjelly neuron ``node`` charge as the paper's E population does
    (docs/method.md section 3): ``v_threshold`` times ``tau`` where it decays its input (``LIFNode``,
    ``ParametricLIFNode`` at its initial ``tau``), ``v_threshold`` for an ``IFNode`` or a ``LIFNode`` without
    input decay; ``None`` for a neuron whose charge sj_ei does not know."""
    if isinstance(node, neuron.ParametricLIFNode):
        tau = 1.0 / torch.sigmoid(node.w.detach()).item()
    elif isinstance(node, neuron.LIFNode):
        tau = node.tau
    elif isinstance(node, neuron.IFNode):
        tau = 1.0
    else:
        return None
    return float(node.v_threshold) * (tau if getattr(node, 'decay_input', False) else 1.0)


def to_ei(net: nn.Module, ei_ratio: int = 4, readout: bool = False, neurons: str = 'ei', **layer_options) -> nn.Module:
    """Make ``net`` (a spikingjelly network, e.g. of its model zoo) an E-I network, in place; returns
    ``net``, ready for ``sj_ei.ei_init``.

    Every ``Conv2d`` and ``Linear`` becomes an uninitialized ``EIConv2d`` / ``EILinear`` of the same
    geometry and step mode (a bias goes: ``b_E`` takes its role), and every batch norm right after one
    becomes ``nn.Identity``; the last ``Linear`` stays a plain layer, or with ``readout=True`` becomes the
    E-I readout (``EILinear(readout=True)``: non-negative weights, no bias), as in the paper's models.
    Dropout, pooling, SEW connect functions and the forward code are kept.  The neuron after each converted
    layer (the next spikingjelly neuron in registration order, before the next converted layer) becomes,
    with ``neurons='ei'`` (the default), the paper's E population ``sj_ei.EILIFNode`` (fused with its layer
    in an ``sj_ei.EIBlock`` where both sit in one ``nn.Sequential``); with ``neurons='keep'`` the user's
    neurons stay and E-I Init sets each layer's ``g_E`` to the neuron's ``charge_gain`` (a warning names a
    layer whose neuron sj_ei does not know).  docs/method.md section 8 says why.  ``layer_options`` go to
    every E-I layer.

    Raises ``ConversionError`` naming every batch norm it cannot remove (not right after a
    ``Conv2d``/``Linear``) and every convolution it cannot replace (groups, padding mode); then ``net``
    is unchanged.
    """
    if neurons not in NEURONS:
        raise ConversionError(f"to_ei: neurons must be 'ei' (the paper's E population) or 'keep' (the network's "
                              f'own neurons), got {neurons!r}')
    problems, plan = [], []  # plan: (qualified name, new module), applied only if all is well
    options = lambda: copy.deepcopy(layer_options)  # an I population module of its own for every layer
    leaves = _leaves(net)
    linears = [name for name, m in leaves if isinstance(m, nn.Linear)]
    if readout and not linears:
        problems.append('readout=True, but the network has no Linear layer to make the readout')
    last = linears[-1] if linears else None
    converted, refused = {}, set()  # name -> new E-I layer; convolutions that cannot be converted
    for i, (name, old) in enumerate(leaves):
        step_mode = getattr(old, 'step_mode', 's')
        if isinstance(old, nn.Linear) and name == last:
            if readout:
                converted[name] = EILinear(old.in_features, old.out_features, ei_ratio=min(ei_ratio, old.out_features),
                                           readout=True, step_mode=step_mode, **options())
        elif isinstance(old, nn.Linear):
            converted[name] = EILinear(old.in_features, old.out_features, ei_ratio=ei_ratio, step_mode=step_mode,
                                       **options())
        elif isinstance(old, nn.Conv2d):
            if old.groups != 1 or old.padding_mode != 'zeros' or isinstance(old.padding, str):
                problems.append(f'{name}: Conv2d with groups={old.groups}, padding={old.padding!r}, padding_mode='
                                f'{old.padding_mode!r}; EIConv2d takes groups=1 and numeric zero padding')
                refused.add(name)
            else:
                converted[name] = EIConv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride,
                                           old.padding, old.dilation, ei_ratio=ei_ratio, step_mode=step_mode,
                                           **options())
        elif isinstance(old, _BatchNorm):
            prev_name, prev = leaves[i - 1] if i else (None, None)
            if prev_name in refused:
                continue  # its convolution is named already
            width = prev.out_channels if isinstance(prev, nn.Conv2d) else \
                prev.out_features if isinstance(prev, nn.Linear) and isinstance(old, nn.BatchNorm1d) else None
            if width != old.num_features or prev_name not in converted \
                    or prev_name.rpartition('.')[0] != name.rpartition('.')[0]:
                problems.append(f'{name}: {type(old).__name__} not directly after a Conv2d (or a Linear, for '
                                'BatchNorm1d) of its channels; convert such a block by hand')
            else:
                plan.append((name, nn.Identity()))
    if not converted and not problems:
        problems.append(f'{type(net).__name__} has no Conv2d or Linear layer to convert')
    if problems:
        raise ConversionError('to_ei cannot convert: ' + '; '.join(problems))
    plan += list(converted.items())
    followers = _followers(leaves, converted)
    if neurons == 'keep':
        _compensate(net, converted, followers)
    else:
        plan += _paper_neurons(net, converted, followers)
    for name, new in plan:
        parent, _, attribute = name.rpartition('.')
        setattr(net.get_submodule(parent), attribute, new)
    return net


def _leaves(net: nn.Module) -> list:
    """``[(name, module)]`` of ``net``'s leaf modules and neurons (not what is inside a neuron), in registration
    order."""
    found, inside = [], ()
    for name, m in net.named_modules():
        if inside and name.startswith(inside):
            continue
        if _is_neuron(m):
            inside = name + '.'
        if _is_neuron(m) or not next(m.children(), None):
            found.append((name, m))
    return found


def _followers(leaves: list, converted: dict) -> dict:
    """``{layer name: (neuron name, neuron)}``: the neuron after each converted hidden layer, the next one in
    registration order before the next converted layer (as spikingjelly's model zoo registers them)."""
    found, layer = {}, None
    for name, m in leaves:
        if name in converted:
            layer = name if not converted[name].readout else None
        elif _is_neuron(m) and layer is not None:
            found[layer], layer = (name, m), None
    return found


def _compensate(net: nn.Module, converted: dict, followers: dict) -> None:
    """``neurons='keep'``: each hidden layer's ``e_gain`` (the ``g_E`` of its E-I Init) from its neuron's
    ``charge_gain``; a layer without a neuron of its own (a shortcut, whose current joins another layer's)
    takes that of the neuron before it.  One warning names the layers whose neuron sj_ei does not know."""
    unknown, gain = [], 1.0
    for name, layer in converted.items():
        if layer.readout:
            continue
        if name in followers:
            node_name, node = followers[name]
            found = charge_gain(node)
            if found is None:
                unknown.append(f"{name} (followed by {type(node).__name__} '{node_name}')")
            gain = 1.0 if found is None else found
        layer.e_gain = gain
    if unknown:
        warnings.warn(f"to_ei(neurons='keep'): E-I Init does not know how these neurons charge, and initializes their "
                      f"layers for the paper's E population (no input decay, threshold 1): {', '.join(unknown)}. If "
                      "one falls silent or saturates, convert with neurons='ei' (the paper's E population)",
                      stacklevel=3)


def _paper_neurons(net: nn.Module, converted: dict, followers: dict) -> list:
    """``neurons='ei'``: the plan that gives every converted hidden layer with a neuron the paper's E population
    (``EILIFNode``), in an ``EIBlock`` with its layer where the two are entries of one ``nn.Sequential`` with
    only removed batch norms between them (the neuron's place then holds an ``nn.Identity``)."""
    plan = []
    for name, (node_name, node) in followers.items():
        fresh = EILIFNode(step_mode=getattr(node, 'step_mode', 's'))
        parent, _, index = name.rpartition('.')
        container = net.get_submodule(parent)
        between = list(container._modules)
        if isinstance(container, nn.Sequential) and node_name.rpartition('.')[0] == parent and \
                all(isinstance(container._modules[k], _BatchNorm)
                    for k in between[between.index(index) + 1:between.index(node_name.rpartition('.')[2])]):
            plan += [(name, EIBlock(converted[name], fresh)), (node_name, nn.Identity())]
        else:
            plan.append((node_name, fresh))
    return plan


# ---- spikingjelly's model zoo, converted ---------------------------------------------------
#: spikingjelly model zoo constructors (``spikingjelly.activation_based.model``, the same on 0.0.0.0.14 and 2.x)
#: that ``from_zoo`` builds; the value is their module
ZOO = {**{f'spiking_vgg{n}{bn}': 'spiking_vgg' for n in (11, 13, 16, 19) for bn in ('', '_bn')},
       **{f'spiking_resnet{n}': 'spiking_resnet' for n in (18, 34, 50, 101, 152)},
       **{f'sew_resnet{n}': 'sew_resnet' for n in (18, 34, 50, 101, 152)}}


class ZooClassifier(nn.Module):
    """A spikingjelly zoo network in step mode ``'m'``: ``[T, B, C, H, W]`` (events) or ``[B, C, H, W]`` (static,
    repeated ``T`` times) ``-> [T, B, num_classes]``, as ``sj_ei.models.SpikingClassifier``."""

    def __init__(self, net: nn.Module, in_channels: int, T: Optional[int]):
        super().__init__()
        self.net, self.in_channels, self.T = net, in_channels, T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(models.time_sequence(x, self.T, self.in_channels))


def from_zoo(name: str, num_classes: int, in_channels: int = 3, T: Optional[int] = None, norm: str = 'ei',
             ei_ratio: int = 4, neurons: str = 'ei', neuron_options: Optional[dict] = None,
             **layer_options) -> ZooClassifier:
    """spikingjelly zoo model ``name`` (one of ``ZOO``) built with ``neuron_options`` (the constructor's
    neuron arguments; by default as spikingjelly's documentation builds it: ``spiking_neuron=neuron.LIFNode,
    surrogate_function=surrogate.Sigmoid(), detach_reset=True``; SEW ResNets with ``cnf='ADD'``), its first
    convolution taking ``in_channels``, in step mode ``'m'``.
    ``norm='ei'``: converted by ``to_ei(readout=True, neurons=neurons)`` (uninitialized, ready for E-I Init);
    ``norm='bn'``: as spikingjelly builds it (the batch-norm twin)."""
    if name not in ZOO:
        raise ConversionError(f'unknown spikingjelly zoo model {name!r}; choose one of {", ".join(ZOO)}')
    if norm not in ('ei', 'bn'):
        raise ConversionError(f"a zoo model is built with norm 'ei' (converted) or 'bn' (as spikingjelly builds it), "
                              f'got {norm!r}')
    module = importlib.import_module(f'spikingjelly.activation_based.model.{ZOO[name]}')
    extra = dict(cnf='ADD') if ZOO[name] == 'sew_resnet' else {}
    if ZOO[name] == 'spiking_vgg' and norm == 'ei':
        extra['init_weights'] = False  # E-I layers replace every weight: no time on drawing 120M of them
    if neuron_options is None:
        neuron_options = dict(spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.Sigmoid(), detach_reset=True)
    net = getattr(module, name)(num_classes=num_classes, **neuron_options, **extra)
    stem_name, stem = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    if stem.in_channels != in_channels:
        parent, _, attribute = stem_name.rpartition('.')
        setattr(net.get_submodule(parent), attribute, type(stem)(
            in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=stem.bias is not None))
    if norm == 'ei':
        to_ei(net, ei_ratio, readout=True, neurons=neurons, **layer_options)
    functional.set_step_mode(net, 'm')
    model = ZooClassifier(net, in_channels, T)
    ei_layers(model)  # names the E-I layers, so that their errors say which one
    return model
