"""sj_ei.config and the trainer's command line: every key checked, flags over the file, the paper's settings."""
import re
import subprocess
import sys

import pytest
import yaml

import sj_ei
from train import classify
from sj_ei import config as cfg

from train_helpers import ROOT, tiny_config

#: the paper's Table 5: config -> (dataset, model, batch, T, peak lr, warm-up epochs)
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
    with pytest.raises(cfg.ConfigError, match="unknown key 'warmup_epoch' \\(did you mean 'warmup_epochs'\\?\\)"):
        cfg.load(tiny_config(tmp_path, warmup_epoch=2))
    (tmp_path / 'list.yaml').write_text('- lr\n- 0.1\n')
    with pytest.raises(cfg.ConfigError, match='must be a mapping'):
        cfg.load(tmp_path / 'list.yaml')


@pytest.mark.parametrize('typo, key', [('lerning_rate', 'lr'), ('learning_rate', 'lr'), ('Learning-Rate', 'lr'),
                                       ('warmup_epoch', 'warmup_epochs'), ('batchsize', 'batch_size'),
                                       ('num_workers', 'workers'), ('timesteps', 'T'), ('epoch', 'epochs'),
                                       ('weight_deacy', 'weight_decay'), ('eiratio', 'ei_ratio')])
def test_an_unknown_key_suggests_the_key_a_user_meant(tmp_path, typo, key):
    with pytest.raises(cfg.ConfigError, match=re.escape(f"unknown key {typo!r} (did you mean {key!r}?)")):
        cfg.load(tiny_config(tmp_path, **{typo: 1}))


def test_every_key_has_a_type_a_default_of_that_type_and_a_meaning():
    for key, (kind, default, meaning) in cfg.SCHEMA.items():
        assert isinstance(default, kind) or default is None and key in cfg.NULLABLE, key
        assert len(meaning) > 10, key
        null = ' or null' if key in cfg.NULLABLE else ''
        assert f'  {key} ({cfg.TYPE_NAMES.get(key, kind.__name__)}{null}, default {default!r}): {meaning}' \
            in cfg.valid_keys()


def test_help_lists_every_key_and_cites_the_paper_not_a_missing_file():
    result = subprocess.run([sys.executable, '-m', 'train.classify', '-h'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for key in cfg.SCHEMA:
        assert f'\n  {key} (' in result.stdout, key
    assert "sign_constraint (bool, default True): E-I ablation (paper Table 2)" in result.stdout
    assert 'eps (float or null, default None)' in result.stdout and '(Appendix F.6, Table 5)' in result.stdout
    for text in [result.stdout, *(p.read_text() for p in (ROOT / 'configs').rglob('*.yaml'))]:
        assert 'SPEC' not in text


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
    assert classify.make_config(classify.parse_args(['-cfg', str(tiny_config(tmp_path)), '-lr', '1e-3']))['lr'] == 0.001
    (tmp_path / 'exponent.yaml').write_text('lr: 2e-3\nweight_decay: 5e-4\n')  # YAML 1.1 reads these as strings
    assert (cfg.load(tmp_path / 'exponent.yaml')['lr'], cfg.load(tmp_path / 'exponent.yaml')['weight_decay']) == (0.002, 5e-4)
    assert classify.make_config(classify.parse_args(['-cfg', str(tiny_config(tmp_path))]))['amp'] is False


@pytest.mark.parametrize('flags, message', [
    (['-b', 'many'], 'flag -b: batch_size must be int'),
    (['-backend', 'jax'], 'backend must be one of torch, cupy'),
    (['-device', 'gpu0'], "device must be a torch device such as 'cpu'"),
    (['-set', 'lerning_rate=1'], "unknown key 'lerning_rate'"),
    (['-set', 'weight_deacy=0.1'], "unknown key 'weight_deacy' (did you mean 'weight_decay'?)"),
    (['-set', 'norm=bn', '-set', 'init=kaiming'], "init: 'kaiming': the E-I ablation switches (paper Table 2) apply "
                                                   "only to norm 'ei', this config has norm 'bn'"),
    (['-set', 'i_theta=0.5'], 'i_theta: 0.5 applies only to i_population: count'),
    (['-set', 'eps=0'], 'eps must be > 0, got 0.0'),
    (['-set', 'lr'], 'expects KEY=VALUE'),
    (['-seed', '-5'], 'flag -seed: seed must be from 0 to 4294967295 (what numpy accepts), got -5'),
    (['-seed', '4294967296'], 'seed must be from 0 to 4294967295'),
    (['-threads', '-1'], 'threads must be >= 0 (0: OMP_NUM_THREADS, else every core this process may run on), got -1'),
])
def test_bad_flag_values_are_config_errors(tmp_path, flags, message):
    with pytest.raises(cfg.ConfigError, match=re.escape(message)):
        classify.check_setup(classify.make_config(classify.parse_args(['-cfg', str(tiny_config(tmp_path)), *flags])))


def test_the_ablation_switches_reach_every_ei_layer(tmp_path):
    flags = ['-set', 'init=kaiming', '-set', 'sign_constraint=false', '-set', 'eps=0.01', '-set', 'grad_scale=false',
             '-set', 'i_population=count', '-set', 'i_theta=0.5']
    config = classify.make_config(classify.parse_args(['-cfg', str(tiny_config(tmp_path)), *flags]))
    layers = sj_ei.ei_layers(classify.build_model(config))
    assert len(layers) == 6
    for name, layer in layers:
        assert (layer.init, layer.sign_constraint, layer.eps, layer.grad_scale) == ('kaiming', False, 0.01, False), name
        assert (layer.i_population.mode, layer.i_population.theta) == ('count', 0.5), name
    default = sj_ei.ei_layers(classify.build_model(cfg.load(tiny_config(tmp_path))))[0][1]
    assert (default.init, default.sign_constraint, default.eps, default.grad_scale, default.i_population.mode) == \
        ('ei', True, None, True, 'rate')  # the paper's method
    config = classify.make_config(classify.parse_args(['-cfg', str(tiny_config(tmp_path, eps=0.01)), '-set', 'eps=null']))
    assert config['eps'] is None


def test_frames_too_small_for_the_model_are_a_config_error(tmp_path):
    config = cfg.load(tiny_config(tmp_path, size=16))
    with pytest.raises(cfg.ConfigError, match='16x16 are too small for vgg8: its 5 2x2 poolings need at least 32x32'):
        classify.check_setup(config)
    classify.check_setup({**config, 'model': 'resnet18'})


#: the rows of the paper's Tables 2 and 3 (VGG-8, CIFAR-10) -> the switches that differ from the full method
ABLATIONS = {'kaiming_clamped': dict(init='kaiming', sign_constraint=True), 'fixed_eps': dict(eps=1e-5),
             'no_grad_scale': dict(grad_scale=False), 'kaiming_unconstrained': dict(init='kaiming', sign_constraint=False),
             'grad_scale_p05': dict(grad_scale=0.5), 'grad_scale_p2': dict(grad_scale=2.0)}


def test_the_ablation_configs_are_their_setting_with_one_table_2_row_changed():
    paths = sorted((ROOT / 'configs' / 'ablations').glob('*.yaml'))
    assert {p.stem for p in paths} == {f'{base}_{row}' for base in ('cifar10_vgg8', 'quickstart') for row in ABLATIONS}
    for path in paths:
        base, row = next((b, path.stem[len(b) + 1:]) for b in ('cifar10_vgg8', 'quickstart') if path.stem.startswith(b))
        config, full = cfg.load(path), cfg.load(ROOT / 'configs' / f'{base}.yaml')
        cfg.check_combination(config)
        assert config == {**full, **ABLATIONS[row], 'out_dir': f'runs/{path.stem}'}, path
        assert path.read_text().startswith('# Ablation of ') and 'paper' in path.read_text().splitlines()[0]


def test_the_paper_configs_hold_the_paper_settings():
    paths = sorted(p for p in (ROOT / 'configs').rglob('*.yaml') if p.parent.name not in ('ablations', 'zoo'))
    assert {p.stem for p in paths} == {*PAPER, 'quickstart'}
    assert len(paths) == 2 * len(PAPER) + 2
    quickstart = cfg.load(ROOT / 'configs' / 'quickstart.yaml')
    for path in paths:
        config = cfg.load(path)
        assert path.read_text().startswith('#'), f'{path}: no comment header'
        if path.stem == 'quickstart':
            assert config['dataset'] == 'synthetic' and config['device'] == 'cpu'
            if path.parent.name == 'bn':  # the quick start's twin, with the BN-SNN recipe
                assert config == {**quickstart, 'norm': 'bn', 'lr': 0.1, 'warmup_epochs': 0, 'weight_decay': 1e-4,
                                  'out_dir': 'runs/bn_quickstart'}
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
