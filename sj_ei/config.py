"""Experiment configuration: every key, its type, default and meaning, in one place.

A config is a YAML mapping of these keys; command-line flags override it.  The trainer
(``python -m train.classify``) and the library's command lines (``sj_ei.energy``, ``sj_ei.analyze``) read it.
Unknown keys (with the closest valid key suggested) and values of the wrong type are a
``ConfigError`` listing the valid keys.  The recipe behind the defaults is the paper's
Appendix F.6 and Table 5; the E-I ablation switches are its Table 2.
"""
import difflib
import math
from pathlib import Path

import torch
import yaml

from . import convert, datasets, models
from .backends import BACKENDS
from .errors import UserError
from .layers import INITS, check_grad_scale
from .neurons import IPopulation

#: key: (type, default, meaning)
SCHEMA = {
    'dataset': (str, 'synthetic', f'one of {", ".join(datasets.NAMES)}'),
    'data_dir': (str, 'data', 'folder holding the dataset (see README, Datasets)'),
    'model': (str, 'vgg8', f'one of {", ".join(models.NAMES)}; or a spikingjelly zoo constructor ({", ".join(convert.ZOO)}), '
                           "converted by sj_ei.convert.to_ei (its neurons the paper's E population) for norm 'ei'"),
    'norm': (str, 'ei', "'ei' (E-I layers), 'bn' (batch-norm SNN baseline) or 'none' (plain SNN)"),
    'width': (float, 1.0, 'channel multiplier of the model (1 = the paper)'),
    'ei_ratio': (int, 4, 'excitatory / inhibitory neurons per layer'),
    'init': (str, 'ei', "E-I ablation (paper Table 2): 'ei' (E-I Init) or 'kaiming' (Kaiming-normal W_EE, W_IE)"),
    'sign_constraint': (bool, True, "E-I ablation (paper Table 2): Dale's law, W_EE, W_IE, W_EI, g_I, g_E "
                                    'clamped to >= 0 (and Kaiming weights clamped at init)'),
    'eps': (float, None, 'E-I ablation (paper Table 2): null = adaptive stabilization of the divisive '
                         'inhibition, or a fixed epsilon added to its denominator'),
    'grad_scale': (bool, True, 'E-I ablation (paper Tables 2 and 3): true scales the gradient of W_EI by 1/d '
                               '(d: the fan-in), false does not scale it, a number p > 0 scales it by d^-p'),
    'i_population': (str, 'rate', "I population outputs: 'rate' (ReLU, the paper's) or 'count' (spike counts "
                                  'of threshold i_theta)'),
    'i_theta': (float, 1.0, "threshold of the I population's spike counts (i_population: count)"),
    'T': (int, 4, 'time steps (event frames, or repetitions of a static image)'),
    'batch_size': (int, 128, 'samples per optimizer step (per process under torchrun)'),
    'epochs': (int, 300, 'training epochs (paper Table 5: 300)'),
    'lr': (float, 0.001, 'peak learning rate (after warm-up)'),
    'momentum': (float, 0.9, 'SGD momentum'),
    'weight_decay': (float, 5e-4, 'SGD weight decay'),
    'warmup_epochs': (int, 10, 'epochs of linear learning-rate warm-up before cosine annealing'),
    'workers': (int, 4, 'data-loading worker processes'),
    'amp': (bool, False, 'automatic mixed precision: bfloat16 autocast (float16 with loss scaling on GPUs '
                         'without bfloat16, where a small I_sh~ can overflow the E-I gradient)'),
    'backend': (str, 'torch', "neuron backend: 'torch' or 'cupy' (GPU)"),
    'device': (str, 'cpu', "torch device, e.g. 'cpu', 'cuda', 'cuda:1'"),
    'seed': (int, 0, 'seed of every random number generator (0 to 4294967295)'),
    'threads': (int, 0, 'torch CPU threads per process (torch.set_num_threads; 0: OMP_NUM_THREADS if set, else the '
                        'cores this process may run on, shared by the processes torchrun starts on a machine); on a '
                        'machine busy with other work give the idle cores: more threads than idle cores makes '
                        'training many times slower'),
    'checkpoint_every': (int, 0, 'also write checkpoint_latest.pth every this many training steps (0: only at the '
                                 'end of every epoch); a run killed outright loses at most that many steps'),
    'out_dir': (str, 'runs/run', 'folder of this run: TensorBoard logs and checkpoints (must not hold another run)'),
    'init_from': (str, None, "start from the weights of this checkpoint (this trainer's, or a DeepEISNN model) "
                             'instead of E-I Init, with a fresh optimizer and schedule (fine-tuning, more epochs)'),
    'histograms': (bool, False, "TensorBoard histograms of E-I parameters and each layer's I_int, every epoch"),
    'collapse_check': (bool, True, 'stop with an error when, for a whole epoch, an E population is silent or '
                                   'saturated or the loss is flat at ln(classes) (docs/collapse.md)'),
    'figures': (bool, True, 'TensorBoard images of the E-I balance, firing rates and feature maps at the end of training '
                            '(sj_ei.analyze; needs matplotlib: pip install sj_ei[analyze])'),
    'augment': (bool, True, "training augmentation of the dataset as in the authors' code (README, Datasets); "
                            'false: none (the test-time preprocessing alone)'),
    'image_size': (int, 32, "TinyImageNet only: 32, the authors' pipeline (random resized crop 32, flip, colour "
                            'jitter, cutout; Resize(32) at test time), or 64, its native size (random crop 64 pad 8, '
                            'flip, cutout; a departure from the paper, 4x the compute)'),
    'num_samples': (int, 1024, 'synthetic dataset only: training samples'),
    'num_test_samples': (int, 512, 'synthetic dataset only: test samples'),
    'size': (int, 32, 'synthetic dataset only: frame height and width (>= 8; >= 32 for the VGGs)'),
}
CHOICES = {'dataset': datasets.NAMES, 'model': (*models.NAMES, *convert.ZOO), 'norm': models.NORMS, 'backend': BACKENDS,
           'init': INITS, 'i_population': IPopulation.MODES}
POSITIVE = ('width', 'ei_ratio', 'T', 'batch_size', 'epochs', 'num_samples', 'num_test_samples', 'size', 'eps',
            'i_theta')
#: keys that may be null (YAML ``null``, ``-set eps=null``)
NULLABLE = ('eps', 'init_from')
#: keys whose value may also be a number (type names as -h shows them)
TYPE_NAMES = {'grad_scale': 'bool or number > 0'}
#: names users write for keys (the suggestion for an unknown key is the closest of these or of the keys)
ALIASES = {'learning_rate': 'lr', 'batch': 'batch_size', 'bs': 'batch_size', 'num_epochs': 'epochs',
           'time_steps': 'T', 'timesteps': 'T', 'steps': 'T', 'wd': 'weight_decay', 'num_workers': 'workers',
           'arch': 'model', 'network': 'model', 'output_dir': 'out_dir', 'log_dir': 'out_dir', 'data_path': 'data_dir',
           'root': 'data_dir', 'warmup': 'warmup_epochs', 'num_threads': 'threads', 'width_mult': 'width'}
#: the E-I layer options (paper Table 2 ablations); other norms take them only at their defaults
ABLATIONS = ('init', 'sign_constraint', 'eps', 'grad_scale', 'i_population', 'i_theta')


class ConfigError(UserError, ValueError):
    """A config file or flag the trainer cannot use."""


def type_name(key: str) -> str:
    return TYPE_NAMES.get(key, SCHEMA[key][0].__name__) + (' or null' if key in NULLABLE else '')


def valid_keys() -> str:
    return '\n'.join(f'  {key} ({type_name(key)}, default {default!r}): {meaning}'
                     for key, (_, default, meaning) in SCHEMA.items())


def check(key: str, value, source: str):
    """``value`` converted to ``key``'s type, or a ``ConfigError`` naming ``source``."""
    if key not in SCHEMA:
        close = difflib.get_close_matches(key.lower().replace('-', '_'), [*SCHEMA, *ALIASES], n=1)
        hint = f' (did you mean {ALIASES.get(close[0], close[0])!r}?)' if close else ''
        raise ConfigError(f'{source}: unknown key {key!r}{hint}. Valid keys:\n{valid_keys()}')
    if value is None and key in NULLABLE:
        return None
    if key == 'grad_scale':
        return _grad_scale(value, source)
    kind = SCHEMA[key][0]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f'{source}: {key} must be {type_name(key)}, got {value!r}. Valid keys:\n{valid_keys()}')
    if kind is float and not math.isfinite(value):
        raise ConfigError(f'{source}: {key} must be a finite number, got {value!r}')
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f'{source}: {key} must be one of {", ".join(CHOICES[key])}, got {value!r}')
    if key in POSITIVE and value <= 0 or key in ('lr', 'weight_decay', 'momentum', 'warmup_epochs', 'workers',
                                                 'checkpoint_every') and value < 0:
        raise ConfigError(f'{source}: {key} must be {"> 0" if key in POSITIVE else ">= 0"}, got {value!r}')
    if key == 'seed' and not 0 <= value < 2 ** 32:
        raise ConfigError(f'{source}: seed must be from 0 to 4294967295 (what numpy accepts), got {value!r}')
    if key == 'threads' and value < 0:
        raise ConfigError(f'{source}: threads must be >= 0 (0: OMP_NUM_THREADS, else every core this process may '
                          f'run on), got {value!r}')
    if key == 'size' and value < 8:
        raise ConfigError(f'{source}: size must be >= 8 (synthetic frames of size x size), got {value!r}')
    if key == 'image_size' and value not in datasets.TINYIMAGENET_SIZES:
        raise ConfigError(f"{source}: image_size must be 32 (the authors' TinyImageNet pipeline) or 64 (its native "
                          f'size), got {value!r}')
    if key == 'device':
        try:
            torch.device(value)
        except RuntimeError:
            raise ConfigError(f"{source}: device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', "
                              f'got {value!r}') from None
    return value


def _grad_scale(value, source: str):
    """``grad_scale``: a bool, or a number ``p > 0`` as a float (``'1e-3'``, which YAML 1.1 reads as a string, too)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    try:
        check_grad_scale(value)
    except ValueError as e:
        raise ConfigError(f'{source}: {e}') from None
    return value if isinstance(value, bool) else float(value)


def check_combination(config: dict) -> None:
    """Raise a ``ConfigError`` for keys that contradict each other (checked once flags are applied)."""
    if config['norm'] != 'ei':
        changed = [f'{key}: {config[key]!r}' for key in ABLATIONS if config[key] != SCHEMA[key][1]]
        if changed:
            raise ConfigError(f"{', '.join(changed)}: the E-I ablation switches (paper Table 2) apply only to "
                              f"norm 'ei', this config has norm {config['norm']!r}; remove them or use norm: ei")
    if config['model'] in convert.ZOO and (config['norm'] == 'none' or config['width'] != SCHEMA['width'][1]):
        raise ConfigError(f"model {config['model']!r} is a spikingjelly zoo model: it takes norm 'ei' (converted) or "
                          f"'bn' (as spikingjelly builds it) and width 1, this config has norm {config['norm']!r}, "
                          f"width {config['width']:g}")
    if config['dataset'] != 'tinyimagenet' and config['image_size'] != SCHEMA['image_size'][1]:
        raise ConfigError(f"image_size: {config['image_size']!r} applies only to dataset tinyimagenet (the others "
                          f"have one pipeline each), this config has dataset {config['dataset']!r}")
    if config['i_population'] == 'rate' and config['i_theta'] != SCHEMA['i_theta'][1]:
        raise ConfigError(f"i_theta: {config['i_theta']!r} applies only to i_population: count (spike counts); "
                          "the config has i_population: rate")


def layer_options(config: dict) -> dict:
    """The ``sj_ei.models.build`` keyword arguments of the E-I ablation switches (none for other norms)."""
    if config['norm'] != 'ei':
        return {}
    return dict(init=config['init'], sign_constraint=config['sign_constraint'], eps=config['eps'],
                grad_scale=config['grad_scale'], i_population=IPopulation(config['i_population'], config['i_theta']))


def dataset(config: dict, train: bool):
    """The training or test split of ``config``'s dataset (``sj_ei.datasets.build`` with its options)."""
    options = dict(augment=config['augment'])
    if config['dataset'] == 'synthetic':
        options.update({k: config[k] for k in ('num_samples', 'num_test_samples', 'size', 'seed')})
    if config['dataset'] == 'tinyimagenet':
        options['image_size'] = config['image_size']
    return datasets.build(config['dataset'], config['data_dir'], config['T'], train, **options)


def build_model(config: dict, norm=None) -> torch.nn.Module:
    """The untrained model of ``config`` (with its E-I ablation switches), or its twin of ``norm``: an
    ``sj_ei.models.SpikingClassifier``, or for a zoo model an ``sj_ei.convert.ZooClassifier``."""
    meta = datasets.info(config['dataset'])
    norm = norm or config['norm']
    try:
        if config['model'] in convert.ZOO:
            return convert.from_zoo(config['model'], meta['num_classes'], meta['in_channels'], T=config['T'], norm=norm,
                                    ei_ratio=config['ei_ratio'], **layer_options(config) if norm == config['norm'] else {})
        return models.build(config['model'], meta['num_classes'], meta['in_channels'], norm=norm, T=config['T'],
                            ei_ratio=config['ei_ratio'], width=config['width'],
                            **layer_options(config) if norm == config['norm'] else {})
    except ValueError as e:  # build checks its arguments: a width or ei_ratio that leaves a layer too narrow
        raise ConfigError(str(e)) from None


def load(path) -> dict:
    """The config in YAML file ``path``, completed with defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'config file {path} does not exist (the paper settings are in configs/)')
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f'{path} is not valid YAML: {e}') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path} must be a mapping of keys to values. Valid keys:\n{valid_keys()}')
    config = {key: default for key, (_, default, _) in SCHEMA.items()}
    config.update({key: check(key, value, str(path)) for key, value in data.items()})
    return config


def override(config: dict, key: str, text: str, source: str) -> None:
    """Set ``key`` from command-line ``text`` (parsed as YAML: ``4``, ``0.1``, ``true``, ``cifar10``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if SCHEMA.get(key, (None,))[0] is str and not (value is None and key in NULLABLE):
        value = text
    config[key] = check(key, value, source)


def apply_sets(config: dict, items) -> dict:
    """``config`` with the command line's ``-set KEY=VALUE`` ``items`` applied (see ``override``)."""
    for item in items:
        key, sep, value = item.partition('=')
        if not sep:
            raise ConfigError(f'-set expects KEY=VALUE, got {item!r}')
        override(config, key, value, f'-set {item}')
    return config
