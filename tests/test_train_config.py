"""train.config and the command line: every key checked, flags over the file, the paper's settings."""
import re

import pytest
import yaml

from train import classify
from train import config as cfg

from train_helpers import ROOT, tiny_config

#: SPEC section 6: config -> (dataset, model, batch, T, peak lr, warm-up epochs)
PAPER = {
    'cifar10_vgg8': ('cifar10', 'vgg8', 128, 4, 0.002, 10),
    'cifar10_vgg11': ('cifar10', 'vgg11', 128, 4, 0.002, 10),
    'cifar10_vgg16': ('cifar10', 'vgg16', 128, 4, 0.001, 30),
    'cifar10_vgg19': ('cifar10', 'vgg19', 128, 4, 0.001, 30),
    'cifar10_resnet18': ('cifar10', 'resnet18', 128, 4, 0.001, 30),
    'cifar100_vgg16': ('cifar100', 'vgg16', 128, 4, 0.001, 30),
    'cifar100_vgg19': ('cifar100', 'vgg19', 128, 4, 0.001, 30),
    'tinyimagenet_resnet18': ('tinyimagenet', 'resnet18', 128, 4, 0.003, 10),
    'cifar10dvs_vgg8': ('cifar10dvs', 'vgg8', 32, 10, 0.001, 10),
    'cifar10dvs_vgg11': ('cifar10dvs', 'vgg11', 32, 10, 0.001, 10),
    'dvsgesture': ('dvsgesture', 'vgg8', 32, 16, 0.001, 10),
}


def test_unknown_keys_and_wrong_types_are_errors_listing_the_valid_keys(tmp_path):
    with pytest.raises(cfg.ConfigError, match=r"unknown key 'lerning_rate'(.|\n)*  lr \(float"):
        cfg.load(tiny_config(tmp_path, lerning_rate=0.1))
    with pytest.raises(cfg.ConfigError, match=r"T must be int, got 'four'(.|\n)*Valid keys"):
        cfg.load(tiny_config(tmp_path, T='four'))
    with pytest.raises(cfg.ConfigError, match=r"amp must be bool, got 1(.|\n)*Valid keys"):
        cfg.load(tiny_config(tmp_path, amp=1))
    with pytest.raises(cfg.ConfigError, match="norm must be one of ei, bn, none, got 'ln'"):
        cfg.load(tiny_config(tmp_path, norm='ln'))
    with pytest.raises(cfg.ConfigError, match='batch_size must be > 0, got 0'):
        cfg.load(tiny_config(tmp_path, batch_size=0))
    (tmp_path / 'list.yaml').write_text('- lr\n- 0.1\n')
    with pytest.raises(cfg.ConfigError, match='must be a mapping'):
        cfg.load(tmp_path / 'list.yaml')


def test_every_key_has_a_type_a_default_of_that_type_and_a_meaning():
    for key, (kind, default, meaning) in cfg.SCHEMA.items():
        assert isinstance(default, kind) and len(meaning) > 10, key
        assert f'  {key} ({kind.__name__}, default {default!r}): {meaning}' in cfg.valid_keys()


def test_flags_override_the_file(tmp_path):
    args = classify.parse_args(['-cfg', str(tiny_config(tmp_path)), '-b', '4', '-lr', '0.1', '-amp', '-T', '3',
                                '-epochs', '7', '-j', '2', '-seed', '5', '-width', '0.5', '-backend', 'cupy',
                                '-device', 'cuda:1', '-data-dir', 'elsewhere', '-out-dir', 'out',
                                '-set', 'histograms=true', '-set', 'momentum=0.8'])
    config = classify.make_config(args)
    assert {k: config[k] for k in ('batch_size', 'lr', 'amp', 'T', 'epochs', 'workers', 'seed', 'width', 'backend',
                                   'device', 'data_dir', 'out_dir', 'histograms', 'momentum')} == dict(
        batch_size=4, lr=0.1, amp=True, T=3, epochs=7, workers=2, seed=5, width=0.5, backend='cupy',
        device='cuda:1', data_dir='elsewhere', out_dir='out', histograms=True, momentum=0.8)
    assert config['num_samples'] == 32  # untouched keys keep the file's value
    assert classify.make_config(classify.parse_args(['-cfg', str(tiny_config(tmp_path))]))['amp'] is False


@pytest.mark.parametrize('flags, message', [
    (['-b', 'many'], 'flag -b: batch_size must be int'),
    (['-backend', 'jax'], 'backend must be one of torch, cupy'),
    (['-device', 'gpu0'], "device must be a torch device such as 'cpu'"),
    (['-set', 'lerning_rate=1'], "unknown key 'lerning_rate'"),
    (['-set', 'lr'], 'expects KEY=VALUE'),
])
def test_bad_flag_values_are_config_errors(tmp_path, flags, message):
    with pytest.raises(cfg.ConfigError, match=re.escape(message)):
        classify.make_config(classify.parse_args(['-cfg', str(tiny_config(tmp_path)), *flags]))


def test_frames_too_small_for_the_model_are_a_config_error(tmp_path):
    config = cfg.load(tiny_config(tmp_path, size=16))
    with pytest.raises(cfg.ConfigError, match='16x16 are too small for vgg8: its 5 2x2 poolings need at least 32x32'):
        classify.check_setup(config)
    classify.check_setup({**config, 'model': 'resnet18'})


def test_the_paper_configs_hold_the_paper_settings():
    paths = sorted((ROOT / 'configs').rglob('*.yaml'))
    assert {p.stem for p in paths} == {*PAPER, 'quickstart'}
    assert len(paths) == 2 * len(PAPER) + 1
    for path in paths:
        config = cfg.load(path)
        assert path.read_text().startswith('#'), f'{path}: no comment header'
        if path.stem == 'quickstart':
            assert config['dataset'] == 'synthetic' and config['device'] == 'cpu'
            continue
        dataset, model, batch, T, lr, warmup = PAPER[path.stem]
        assert (config['dataset'], config['model'], config['batch_size'], config['T']) == (dataset, model, batch, T)
        assert config['epochs'] == 300 and config['momentum'] == 0.9
        if path.parent.name == 'bn':
            assert config['norm'] == 'bn'
        else:
            assert config['norm'] == 'ei' and config['ei_ratio'] == 4
            assert (config['lr'], config['warmup_epochs'], config['weight_decay']) == (lr, warmup, 5e-4)
        assert set(yaml.safe_load(path.read_text())) <= set(cfg.SCHEMA)
