"""python -m train.classify as a user runs it: a real-format dataset end to end, and one
clear message (no traceback) for every mistake a user can make."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train import checkpoint, classify
from sj_ei import config as cfg

from formats import write_cifar, write_dvs_gesture
from train_helpers import ROOT, cli, tiny_config


def user_error_cases(tmp_path) -> dict:
    """``{case: (arguments, pattern the message must match)}``."""
    tiny = tiny_config(tmp_path)
    (tmp_path / 'garbage.pth').write_bytes(b'\x00garbage')
    torch.save({'state_dict': {'conv1.weight': torch.ones(4, 2, 3, 3)}}, tmp_path / 'foreign.pth')
    taken = tiny_config(tmp_path / 'taken')  # its out_dir holds a run
    (tmp_path / 'taken' / 'run').mkdir()
    checkpoint.save(tmp_path / 'taken' / 'run' / 'checkpoint_latest.pth', model={}, optimizer={}, scheduler={},
                    scaler={}, epoch=0, best_acc1=0.0, config=cfg.load(taken), rng=[checkpoint.rng_states()])
    checkpoint.save(tmp_path / 'cut.pth', model={'w': torch.ones(1000)}, optimizer={}, scheduler={}, scaler={},
                    epoch=0, best_acc1=0.0, config=cfg.load(tiny), rng=[checkpoint.rng_states()])
    data = (tmp_path / 'cut.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'empty').mkdir()  # a folder of its own: resuming locks the checkpoint's folder, and the
    (tmp_path / 'empty' / 'empty.pth').write_bytes(b'')  # command-line test runs this and 'damaged checkpoint' at once
    (tmp_path / 'a_file').write_text('not a folder')
    write_cifar(tmp_path / 'cifar', 'cifar10')  # a tiny copy: its files fail the published MD5
    cases = {
        'missing dataset': ([ROOT / 'configs' / 'dvsgesture.yaml', '-data-dir', tmp_path / 'nothing', '-device', 'cpu'],
                            r'dvsgesture: .*DvsGesture\.tar\.gz'),
        'missing config': ([tmp_path / 'nope.yaml'], r'config file .*nope\.yaml does not exist'),
        'unknown config key': ([tiny_config(tmp_path / 'u', lerning_rate=0.1)],
                               r"unknown key 'lerning_rate' \(did you mean 'lr'\?\)"),
        'mistyped config key': ([tiny_config(tmp_path / 'm', warmup_epoch=2)],
                                r"unknown key 'warmup_epoch' \(did you mean 'warmup_epochs'\?\)"),
        'ablation switch on batch norm': ([tiny, '-set', 'norm=bn', '-set', 'grad_scale=false'],
                                          r"grad_scale: False: the E-I ablation switches .* apply only to norm 'ei'"),
        'folder of another run': ([taken], r'run already holds another run \(checkpoint_latest\.pth\): continue that '
                                           r'run with -resume .*checkpoint_latest\.pth, or .* -out-dir .*run-2'),
        'bad flag value': ([tiny, '-b', 'many'], r'flag -b: batch_size must be int'),
        'bad device': ([tiny, '-device', 'gpu0'], r'device must be a torch device'),
        'damaged checkpoint': ([tiny, '-resume', tmp_path / 'garbage.pth'], r'garbage\.pth is damaged'),
        'checkpoint of no folder': ([tiny, '-resume', tmp_path / 'nowhere' / 'checkpoint_latest.pth'],
                                    r'nowhere, the folder of the checkpoint to resume, does not exist'),
        'empty checkpoint': ([tiny, '-resume', tmp_path / 'empty' / 'empty.pth'],
                             r'empty\.pth is damaged or not a PyTorch checkpoint \(EOFError\)'),
        'negative seed': ([tiny, '-seed', '-5'], r'flag -seed: seed must be from 0 to 4294967295'),
        'seed beyond 32 bits': ([tiny, '-seed', '4294967296'], r'flag -seed: seed must be from 0 to 4294967295'),
        'out_dir a file': ([tiny, '-out-dir', tmp_path / 'a_file'], r'-out-dir .*a_file is a file, not a folder'),
        'dataset failing its MD5': ([tiny, '-set', 'dataset=cifar10', '-data-dir', tmp_path / 'cifar'],
                                    r'cifar10: .*data_batch_1.* do\(es\) not match the published MD5'),
        'width too small': ([tiny, '-width', '0.001'], r"width 0\.001 leaves vgg8's first layer \(features\.0: 0 "
                                                       r'channels.*the smallest width that works is 0\.0625'),
        'ei_ratio above the width': ([tiny, '-set', 'ei_ratio=1000'],
                                     r'ei_ratio=1000 leaves .*features\.0.* no inhibitory neuron.*ei_ratio <= 8'),
        'truncated checkpoint': ([tiny, '-resume', tmp_path / 'cut.pth'], r'cut\.pth is damaged'),
        'foreign checkpoint': ([tiny, '-resume', tmp_path / 'foreign.pth'], r'is not a checkpoint of train\.classify'),
        'damaged model': ([tiny, '-pretrained', tmp_path / 'garbage.pth'],
                          r'cannot read .*garbage\.pth as a checkpoint .*; the file is damaged'),
        'foreign model': ([tiny, '-pretrained', tmp_path / 'foreign.pth'],
                          r"foreign\.pth is neither an sj_ei model .* nor a DeepEISNN E-I model .*\['conv1\.weight'\]"),
        'cupy without GPU': ([tiny, '-backend', 'cupy'], r"backend 'cupy' needs a CUDA device"),
    }
    if not torch.cuda.is_available():
        cases['cuda without GPU'] = ([tiny, '-device', 'cuda'], r'no CUDA device is available here')
    return cases


def test_every_user_error_exits_with_one_clear_message(tmp_path, capsys):
    for case, (args, pattern) in user_error_cases(tmp_path).items():
        with pytest.raises(SystemExit) as exit_info:
            classify.main(['-cfg', *map(str, args)])
        stderr = capsys.readouterr().err
        assert exit_info.value.code == 2, (case, stderr)
        assert stderr.startswith('error: ') and len(stderr.split('error: ')) == 2, (case, stderr)
        assert re.search(pattern, stderr.splitlines()[0]), (case, stderr)


def test_user_errors_from_the_command_line_print_no_traceback(tmp_path):
    cases = user_error_cases(tmp_path)
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    # all at once: importing torch is most of each run
    runs = {case: subprocess.Popen([sys.executable, '-m', 'train.classify', '-cfg', *map(str, cases[case][0])],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for case in ('missing dataset', 'unknown config key', 'bad flag value', 'damaged checkpoint',
                         'cupy without GPU', 'dataset failing its MD5', 'empty checkpoint')}
    for case, process in runs.items():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 2, (case, stderr)
        assert 'Traceback' not in stderr, (case, stderr)
        assert [line for line in stderr.splitlines() if line.startswith('error:')] == \
            [stderr.splitlines()[0]], (case, stderr)
        assert re.search(cases[case][1], stderr.splitlines()[0]), (case, stderr)


def test_dvsgesture_config_runs_an_epoch_on_the_real_format(tmp_path):
    write_dvs_gesture(tmp_path / 'data')
    result = cli('-cfg', ROOT / 'configs' / 'dvsgesture.yaml', '-data-dir', tmp_path / 'data', '-device', 'cpu',
                 '-epochs', '1', '-b', '4', '-T', '4', '-j', '0', '-width', '0.125', '-out-dir', tmp_path / 'run')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'vgg8 (ei) on dvsgesture: 11 train / 11 test samples, T=4' in result.stdout
    assert re.search(r'epoch 0: train loss [\d.]+ acc@1 [\d.]+ \| test loss [\d.]+ acc@1 [\d.]+ acc@5 [\d.]+ .*'
                     r'train [\d.]+ samples/s, test [\d.]+ samples/s', result.stdout), result.stdout
    assert 'done: best test acc@1 ' in result.stdout.splitlines()[-1]
    assert f'checkpoints in {tmp_path / "run"} (checkpoint_max.pth' in result.stdout.splitlines()[-1]
    assert 'it/s' not in result.stderr and 'epoch 0' not in result.stderr  # no progress bar in a log file
    state = torch.load(tmp_path / 'run' / 'checkpoint_latest.pth', weights_only=True)
    assert state['config']['dataset'] == 'dvsgesture' and state['config']['T'] == 4 and state['epoch'] == 0


def test_pretrained_deepeisnn_model_is_evaluated(tmp_path):
    from safetensors.torch import save_file
    from test_convert import CONFIG, deepeisnn_vgg8
    save_file(deepeisnn_vgg8(), str(tmp_path / 'model.safetensors'))
    (tmp_path / 'config.json').write_text(json.dumps(CONFIG))
    write_dvs_gesture(tmp_path / 'data')
    result = cli('-cfg', ROOT / 'configs' / 'dvsgesture.yaml', '-data-dir', tmp_path / 'data', '-device', 'cpu',
                 '-T', '2', '-j', '0', '-pretrained', tmp_path / 'model.safetensors')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'model.safetensors: test loss' in result.stdout and '(11 samples' in result.stdout


def test_the_trainers_own_checkpoint_is_evaluated(tmp_path, capsys):
    tiny = tiny_config(tmp_path, width=0.0625, epochs=1, num_samples=16, num_test_samples=8)
    classify.train(cfg.load(tiny))
    capsys.readouterr()
    classify.main(['-cfg', str(tiny), '-pretrained', str(tmp_path / 'run' / 'checkpoint_max.pth')])
    line = capsys.readouterr().out.strip()
    logged = EventAccumulator(str(tmp_path / 'run')).Reload()
    loss, acc1, acc5 = (logged.Scalars(tag)[0].value for tag in ('test/loss', 'test/acc1', 'test/acc5'))
    assert line.startswith(f'{tmp_path / "run" / "checkpoint_max.pth"}: test loss {loss:.4f} acc@1 {acc1:.2f} '
                           f'acc@5 {acc5:.2f} (8 samples'), line  # what the run measured at that epoch
    with pytest.raises(SystemExit):
        classify.main(['-cfg', str(tiny), '-width', '0.125', '-pretrained', str(tmp_path / 'run' / 'checkpoint_max.pth')])
    assert re.search(r'^error: .*checkpoint_max\.pth holds another model than the config \(width: 0\.0625 in the '
                     r'checkpoint, 0\.125 now\); evaluate it with the config it was trained with$',
                     capsys.readouterr().err.strip())
