"""Every config in configs/ (E-I and batch-norm) trains end to end through the trainer's
command line, on a tiny dataset in its real on-disk format (written once per session by
``formats``), at width 1/16 for one epoch of a few batches: E-I Init succeeds on the
paper's preprocessing, an epoch's accuracy is printed and a checkpoint is written."""
import re
from pathlib import Path

import pytest
import torch

import formats
from sj_ei import config as cfg, convert
from train import classify

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / 'configs').rglob('*.yaml'))
#: each writes 8-11 training samples (2 batches of 4) and 4-11 test samples
WRITERS = {
    'cifar10': lambda root: formats.write_cifar(root, 'cifar10', per_batch=2, test=4),
    'cifar100': lambda root: formats.write_cifar(root, 'cifar100', per_batch=2, test=4),
    'tinyimagenet': lambda root: formats.write_tinyimagenet(root, per_class=2, val=formats.TINYIMAGENET_WNIDS),
    'dvsgesture': formats.write_dvs_gesture,
    'cifar10dvs': lambda root: formats.write_cifar10dvs(root, per_class=2),
}


@pytest.fixture(scope='session')
def data_dirs(tmp_path_factory):
    """``name -> folder`` holding a tiny copy of dataset ``name``, written on first use; the event
    datasets' converted events and frame caches built there are then shared by all configs."""
    dirs = {}

    def get(name):
        if name not in dirs:
            dirs[name] = tmp_path_factory.mktemp(name)
            WRITERS[name](dirs[name])
        return dirs[name]
    return get


def test_every_dataset_of_the_configs_has_a_writer():
    assert len(CONFIGS) >= 23
    assert {cfg.load(path)['dataset'] for path in CONFIGS} - {'synthetic'} == set(WRITERS)


@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(ROOT / 'configs')) for p in CONFIGS])
def test_config_trains_end_to_end_on_its_dataset_in_the_real_format(path, data_dirs, tmp_path, monkeypatch, capsys):
    config = cfg.load(path)
    argv = ['-cfg', str(path), '-out-dir', str(tmp_path / 'run'), '-epochs', '1', '-b', '4',
            '-device', 'cpu', '-backend', 'torch', '-j', '0']
    if config['model'] not in convert.ZOO:  # a spikingjelly zoo model has the width spikingjelly builds
        argv += ['-width', '0.0625']
    if config['dataset'] == 'synthetic':
        argv += ['-set', 'num_samples=16', '-set', 'num_test_samples=8']
    else:
        argv += ['-data-dir', str(data_dirs(config['dataset']))]
    # a tiny copy cannot have the published MD5 checksums that torchvision checks CIFAR against
    monkeypatch.setattr('torchvision.datasets.cifar.check_integrity', lambda path, md5=None: True)
    monkeypatch.setenv('TRAIN_DUMP_RANK_PARAMS', str(tmp_path / 'params'))  # the parameters after E-I Init
    classify.main(argv)
    out = capsys.readouterr().out
    assert re.search(r'epoch 0: .*test loss \d+\.\d+ acc@1 \d+\.\d+', out), out
    checkpoints = list((tmp_path / 'run').rglob('checkpoint_latest.pth'))  # in out_dir (or a run folder in it)
    assert len(checkpoints) == 1, checkpoints
    state = torch.load(checkpoints[0], map_location='cpu', weights_only=False)
    assert state['epoch'] == 0
    assert all(torch.isfinite(value).all() for value in state['model'].values() if value.is_floating_point())
    if config['norm'] == 'ei':
        init = torch.load(tmp_path / 'params' / 'rank0_init.pth')
        assert all(value for key, value in init.items() if key.endswith('.initialized'))
        gains = {key: value for key, value in init.items() if key.endswith('.gain_i')}
        assert gains and all(torch.isfinite(g).all() and (g > 0).all() for g in gains.values())
        if config['dataset'] not in ('synthetic', 'dvsgesture', 'cifar10dvs'):
            # pixels in [0, 1] with photo-like statistics: g_I = sqrt(E[x^2] + Var x) / (sqrt(27) E[x]) is
            # about 0.25 on CIFAR-10 (more on a first batch of 4 with dark images); normalized pixels gave 14.5
            first = next(iter(gains.values()))
            assert 0.1 < first.mean() < 1, first


def test_the_reproduction_page_names_every_config_and_the_readme_links_it():
    """docs/reproduce.md has a command for every config in configs/ (ablations included) and names no config
    that does not exist; the README links it."""
    page = (ROOT / 'docs' / 'reproduce.md').read_text()
    named = set(re.findall(r'configs/[\w/.]+?\.yaml', page))
    assert named == {str(path.relative_to(ROOT)) for path in CONFIGS}
    assert '(docs/reproduce.md)' in (ROOT / 'README.md').read_text()
