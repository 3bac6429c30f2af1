"""Preemption: a signal stops a run after the step in progress with its checkpoint written, and the
resumed run ends bitwise equal to one never stopped; ``checkpoint_every`` bounds what a kill -9 loses."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train_helpers import ROOT, cli, tiny_config

#: 3 epochs of 8 steps (64 samples, batches of 8)
EIGHT_STEPS = dict(num_samples=64, epochs=3)


def start(config, folder, *flags) -> subprocess.Popen:
    """``python -m train.classify -cfg config flags`` in the background, output to ``folder/out|err.txt``."""
    with open(folder / 'out.txt', 'w') as out, open(folder / 'err.txt', 'w') as err:
        return subprocess.Popen([sys.executable, '-m', 'train.classify', '-cfg', str(config), *flags], cwd=ROOT,
                                env={**os.environ, 'PYTHONPATH': str(ROOT)}, stdout=out, stderr=err)


def wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 300):
    end = time.time() + timeout
    while not condition():
        if process.poll() is not None or time.time() > end:
            process.kill()
            pytest.fail(f'{what}: not seen (exit status {process.poll()})')
        time.sleep(0.02)


def position(path) -> tuple:
    """``(last finished epoch, steps done of the next)`` of a checkpoint."""
    state = torch.load(path, weights_only=True)
    return state['epoch'], state.get('step', 0)


def assert_same_run(a, b):
    """Two checkpoints of the same point of a run, bitwise: weights, optimizer state, schedule, RNGs."""
    a, b = (torch.load(path, weights_only=True) for path in (a, b))
    assert (a['epoch'], a['step'], a['best_acc1']) == (b['epoch'], b['step'], b['best_acc1'])
    assert a['model'].keys() == b['model'].keys()
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    for key, state in a['optimizer']['state'].items():
        assert torch.equal(state['momentum_buffer'], b['optimizer']['state'][key]['momentum_buffer']), key
    assert a['scheduler'] == b['scheduler'] and a['scaler'] == b['scaler']
    assert torch.equal(a['rng'][0]['torch'], b['rng'][0]['torch'])


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """The folder of the run never stopped."""
    folder = tmp_path_factory.mktemp('uninterrupted')
    result = cli('-cfg', tiny_config(folder, **EIGHT_STEPS))
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / 'run'


def test_sigterm_mid_epoch_then_resume_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path, uninterrupted):
    config, run = tiny_config(tmp_path, **EIGHT_STEPS), tmp_path / 'run'
    process = start(config, tmp_path)
    wait_for(lambda: 'epoch 0: train loss' in (tmp_path / 'out.txt').read_text(), 'the end of epoch 0', process)
    process.send_signal(signal.SIGTERM)  # in epoch 1: it stops after the step in progress
    assert process.wait(timeout=300) == 128 + signal.SIGTERM
    err = (tmp_path / 'err.txt').read_text()
    stop = re.fullmatch(rf'stopped by SIGTERM at epoch 1, step (\d) of 8; continue with -resume '
                        rf'{re.escape(str(run / "checkpoint_latest.pth"))}\n', err)
    assert stop and 1 <= int(stop.group(1)) < 8, err
    assert position(run / 'checkpoint_latest.pth') == (0, int(stop.group(1)))
    # the same command again: the folder holds a stopped run, and the message says what to do
    again = cli('-cfg', config)
    assert again.returncode == 2 and f'stopped by SIGTERM at epoch 1, step {stop.group(1)} of 8: continue that ' \
        f'run with -resume {run / "checkpoint_latest.pth"}' in again.stderr, again.stderr
    resumed = cli('-cfg', config, '-resume', run / 'checkpoint_latest.pth')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'resumed at epoch 1, step {stop.group(1)} of 8' in resumed.stdout
    assert_same_run(run / 'checkpoint_latest.pth', uninterrupted / 'checkpoint_latest.pth')
    assert_same_run(run / 'checkpoint_max.pth', uninterrupted / 'checkpoint_max.pth')
    for tag in ('train/loss', 'train/acc1', 'test/loss', 'lr'):  # epoch 1's train loss counts all its 8 steps
        series = [[(s.step, s.value) for s in EventAccumulator(str(d)).Reload().Scalars(tag)]
                  for d in (run, uninterrupted)]
        assert sorted(set(series[0])) == series[1] and len(series[1]) == 3, tag


def test_a_kill_9_loses_at_most_checkpoint_every_steps(tmp_path, uninterrupted):
    config, run = tiny_config(tmp_path, **EIGHT_STEPS, checkpoint_every=2), tmp_path / 'run'
    latest = run / 'checkpoint_latest.pth'
    process = start(config, tmp_path)
    seen = set()

    def reached_epoch_1():
        if latest.is_file():
            try:
                seen.add(position(latest))
            except (EOFError, RuntimeError, FileNotFoundError):  # replaced while read
                pass
        return any(epoch == 0 for epoch, _ in seen)
    wait_for(reached_epoch_1, 'a checkpoint in epoch 1', process)
    process.kill()
    process.wait(timeout=60)
    # every 2 steps and at the epoch's end: a kill loses the steps since the last of them, at most 2
    assert all(step in (0, 2, 4, 6) for _, step in seen) and {(-1, 2), (-1, 4), (-1, 6)} & seen, seen
    epoch, step = position(latest)
    assert epoch >= 0 and step % 2 == 0
    resumed = cli('-cfg', config, '-resume', latest)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(latest, uninterrupted / 'checkpoint_latest.pth')


def test_sigusr1_stops_as_sigterm_does(tmp_path):
    """SIGUSR1 (SLURM's warning) stops as SIGTERM does (SIGINT: test_run_folder); a signal in the first
    step still leaves a checkpoint to resume."""
    process = start(tiny_config(tmp_path, num_samples=1_000_000), tmp_path)
    wait_for(lambda: 'out_dir' in (tmp_path / 'out.txt').read_text(), 'the header', process)
    process.send_signal(signal.SIGUSR1)
    assert process.wait(timeout=300) == 128 + signal.SIGUSR1
    err = (tmp_path / 'err.txt').read_text()
    assert re.fullmatch(r'stopped by SIGUSR1 at epoch 0, step \d+ of 125000; continue with -resume '
                        r'\S+checkpoint_latest.pth\n', err), err
    assert position(tmp_path / 'run' / 'checkpoint_latest.pth')[0] == -1


def test_sigterm_to_every_process_of_the_job_with_data_loader_workers_still_stops_cleanly(tmp_path):
    """A scheduler signals every process of a job, the data loader's workers too: they leave it to the trainer."""
    config = tiny_config(tmp_path, num_samples=1_000_000, workers=1)
    with open(tmp_path / 'out.txt', 'w') as out, open(tmp_path / 'err.txt', 'w') as err:
        process = subprocess.Popen([sys.executable, '-m', 'train.classify', '-cfg', str(config)], cwd=ROOT,
                                   env={**os.environ, 'PYTHONPATH': str(ROOT)}, stdout=out, stderr=err,
                                   start_new_session=True)
    wait_for(lambda: 'out_dir' in (tmp_path / 'out.txt').read_text(), 'the header', process)
    time.sleep(1)  # the first steps: the worker runs
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM
    err = (tmp_path / 'err.txt').read_text()
    assert re.fullmatch(r'stopped by SIGTERM at epoch 0, step \d+ of 125000; continue with -resume \S+\n', err), err
