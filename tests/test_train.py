"""train.classify: configs, the paper's recipe end to end, exact resume, atomic
checkpoints, torchrun, and one clear message for every mistake a user can make."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train import checkpoint, classify
from train import config as cfg

from dvs_gesture_format import write_dvs_gesture

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dataset='synthetic', num_samples=32, num_test_samples=16, size=32, model='vgg8', width=0.125,
            T=2, batch_size=8, epochs=3, lr=0.005, warmup_epochs=1, workers=0, device='cpu')


def tiny_config(tmp_path, **changes) -> Path:
    path = tmp_path / 'tiny.yaml'
    path.write_text(yaml.safe_dump({**TINY, 'out_dir': str(tmp_path / 'run'), **changes}))
    return path


def cli(*args, cwd=ROOT):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    return subprocess.run([sys.executable, '-m', 'train.classify', *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_config_rejects_unknown_keys_and_wrong_types_listing_the_valid_keys(tmp_path):
    with pytest.raises(cfg.ConfigError, match=r"unknown key 'lerning_rate'(.|\n)*  lr \(float"):
        cfg.load(tiny_config(tmp_path, lerning_rate=0.1))
    with pytest.raises(cfg.ConfigError, match=r"T must be int, got 'four'(.|\n)*Valid keys"):
        cfg.load(tiny_config(tmp_path, T='four'))
    with pytest.raises(cfg.ConfigError, match="norm must be one of ei, bn, none, got 'ln'"):
        cfg.load(tiny_config(tmp_path, norm='ln'))


def test_flags_override_the_file(tmp_path):
    args = classify.parse_args(['-cfg', str(tiny_config(tmp_path)), '-b', '4', '-lr', '0.1', '-amp',
                                '-data-dir', 'elsewhere', '-set', 'histograms=true'])
    config = classify.make_config(args)
    assert (config['batch_size'], config['lr'], config['amp'], config['data_dir'], config['histograms']) \
        == (4, 0.1, True, 'elsewhere', True)
    assert config['T'] == 2


def test_every_paper_config_is_valid():
    paths = sorted((ROOT / 'configs').rglob('*.yaml'))
    assert len(paths) == 23
    for path in paths:
        cfg.load(path)


def test_training_logs_checkpoints_and_histograms(tmp_path):
    config = cfg.load(tiny_config(tmp_path, histograms=True))
    classify.train(config)
    run = tmp_path / 'run'
    assert {'checkpoint_latest.pth', 'checkpoint_max.pth'} <= {p.name for p in run.iterdir()}
    events = EventAccumulator(str(run), size_guidance={'histograms': 0}).Reload()
    scalars = set(events.Tags()['scalars'])
    assert {'train/loss', 'test/acc1', 'test/acc5', 'lr', 'train/speed', 'test/speed'} <= scalars
    assert any(tag.startswith('firing_rate/features.0') for tag in scalars)
    assert len(events.Scalars('test/acc1')) == 3
    assert any(tag.startswith('I_int/features.0.layer') for tag in events.Tags()['histograms'])
    assert any(tag.startswith('param/features.0.layer.gain_e') for tag in events.Tags()['histograms'])


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, monkeypatch):
    (tmp_path / 'a').mkdir(), (tmp_path / 'b').mkdir()
    whole = cfg.load(tiny_config(tmp_path / 'a'))
    classify.train(whole)

    stopped = cfg.load(tiny_config(tmp_path / 'b'))
    save = checkpoint.save

    def save_then_stop_after_epoch_1(path, **state):
        save(path, **state)
        if state['epoch'] == 1 and path.name == 'checkpoint_latest.pth':
            raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint, 'save', save_then_stop_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        classify.train(stopped)
    monkeypatch.setattr(checkpoint, 'save', save)
    classify.train(stopped, resume=tmp_path / 'b' / 'run' / 'checkpoint_latest.pth')

    a = torch.load(tmp_path / 'a' / 'run' / 'checkpoint_latest.pth', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'run' / 'checkpoint_latest.pth', weights_only=True)
    assert a['epoch'] == b['epoch'] == 2 and a['best_acc1'] == b['best_acc1']
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    test_acc = [[s.value for s in EventAccumulator(str(d / 'run')).Reload().Scalars('test/loss')]
                for d in (tmp_path / 'a', tmp_path / 'b')]
    assert test_acc[0] == test_acc[1]


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / 'checkpoint_latest.pth'
    config = cfg.load(tiny_config(tmp_path))
    checkpoint.save(path, epoch=0, config=config, weights=torch.ones(3))

    def die_half_way(obj, f):
        f.write(b'PK\x03\x04 half a zip')
        raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', die_half_way)
    with pytest.raises(OSError):
        checkpoint.save(path, epoch=1, config=config, weights=torch.zeros(3))
    monkeypatch.undo()
    state = checkpoint.load(path, config)
    assert state['epoch'] == 0 and torch.equal(state['weights'], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_torchrun_trains_with_identical_parameters(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                             f'--master_port={free_port()}', '-m', 'train.classify', '-cfg', str(config)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'E-I Init: parameters identical on all 2 ranks' in result.stdout
    assert result.stdout.count('epoch 0: train loss') == 1  # only rank 0 logs
    assert (tmp_path / 'run' / 'checkpoint_latest.pth').is_file()


@pytest.mark.parametrize('case, expected', [
    ('missing dataset', r'dvsgesture: .*DvsGesture\.tar\.gz'),
    ('unknown key', r"unknown key 'lerning_rate'"),
    ('bad flag value', r'batch_size must be int'),
    ('damaged checkpoint', r'is damaged or not a PyTorch checkpoint'),
    ('foreign checkpoint', r'is not a checkpoint of train\.classify'),
])
def test_user_errors_are_one_clear_message_without_a_traceback(tmp_path, case, expected):
    args = ['-cfg', tiny_config(tmp_path)]
    if case == 'missing dataset':
        args = ['-cfg', ROOT / 'configs' / 'dvsgesture.yaml', '-data-dir', tmp_path / 'nothing', '-device', 'cpu']
    elif case == 'unknown key':
        args = ['-cfg', tiny_config(tmp_path, lerning_rate=0.1)]
    elif case == 'bad flag value':
        args += ['-b', 'many']
    elif case == 'damaged checkpoint':
        (tmp_path / 'ckpt.pth').write_bytes(b'\x00garbage')
        args += ['-resume', tmp_path / 'ckpt.pth']
    else:
        torch.save({'state_dict': {}}, tmp_path / 'ckpt.pth')
        args += ['-resume', tmp_path / 'ckpt.pth']
    result = cli(*args)
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(error_lines) == 1, result.stderr
    assert __import__('re').search(expected, result.stderr), result.stderr


def test_dvsgesture_config_runs_an_epoch_on_the_real_format(tmp_path):
    write_dvs_gesture(tmp_path / 'data')
    result = cli('-cfg', ROOT / 'configs' / 'dvsgesture.yaml', '-data-dir', tmp_path / 'data', '-device', 'cpu',
                 '-epochs', '1', '-b', '4', '-T', '4', '-j', '0', '-width', '0.125', '-out-dir', tmp_path / 'run')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'vgg8 (ei) on dvsgesture: 11 train / 11 test samples, T=4' in result.stdout
    assert 'epoch 0: train loss' in result.stdout
    assert (tmp_path / 'run' / 'checkpoint_latest.pth').is_file()


def test_pretrained_deepeisnn_model_is_evaluated(tmp_path):
    from safetensors.torch import save_file
    from test_convert import CONFIG, deepeisnn_vgg8
    save_file(deepeisnn_vgg8(), str(tmp_path / 'model.safetensors'))
    (tmp_path / 'config.json').write_text(__import__('json').dumps(CONFIG))
    write_dvs_gesture(tmp_path / 'data')
    result = cli('-cfg', ROOT / 'configs' / 'dvsgesture.yaml', '-data-dir', tmp_path / 'data', '-device', 'cpu',
                 '-T', '2', '-j', '0', '-pretrained', tmp_path / 'model.safetensors')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'model.safetensors: test loss' in result.stdout and '(11 samples' in result.stdout
