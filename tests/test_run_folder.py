"""A run folder is never shared by two live runs and never stuck after a run died in it."""
import fcntl
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from train import run_folder

from train_helpers import ROOT, cli, free_port, tiny_config

#: an epoch 0 that lasts far longer than any test (synthetic samples are made when first read)
ENDLESS = dict(num_samples=1_000_000, epochs=2)


def ctrl_c_works():
    """In the child: SIGINT raises KeyboardInterrupt, as at a terminal, even where the test runner ignores it
    (e.g. started in the background by a shell without job control)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def start():
    """``start(config, log, *flags)``: ``python -m train.classify -cfg config flags`` in the background, stdout
    and stderr to ``log.out/.err``; whatever still runs at the end of the test is killed."""
    started = []

    def run(config, log, *flags) -> subprocess.Popen:
        env = {**os.environ, 'PYTHONPATH': str(ROOT)}
        with open(f'{log}.out', 'w') as out, open(f'{log}.err', 'w') as err:
            started.append(subprocess.Popen([sys.executable, '-m', 'train.classify', '-cfg', str(config), *flags],
                                            cwd=ROOT, env=env, stdout=out, stderr=err, preexec_fn=ctrl_c_works))
        return started[-1]
    yield run
    for process in started:
        process.kill()
        process.wait()


def wait_for(condition, what: str, timeout: float = 300):
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            pytest.fail(f'timed out waiting for {what}')
        time.sleep(0.2)


def test_two_runs_started_together_into_one_folder_one_trains_and_the_other_is_refused(tmp_path, start):
    config = tiny_config(tmp_path, **ENDLESS)
    run = tmp_path / 'run'
    runs = [start(config, tmp_path / name, '-lr', lr) for name, lr in (('a', '0.005'), ('b', '0.01'))]
    wait_for(lambda: any(p.poll() is not None for p in runs), 'one of the two runs to end')
    loser = next(i for i, p in enumerate(runs) if p.poll() is not None)
    winner = runs[1 - loser]
    err = (tmp_path / 'ab'[loser]).with_suffix('.err').read_text()
    assert runs[loser].returncode == 2 and winner.poll() is None, err
    # the loser may look before the winner has written its process id into the lock
    assert err in (f'error: {run} is in use by a live run ({who}): wait for it to end or stop it, or '
                   'choose another -out-dir\n' for who in (f'process {winner.pid}', 'one that is just starting')), err
    # Ctrl-C in epoch 0: the run stops after the step in progress, with that step's checkpoint
    out = (tmp_path / 'ab'[1 - loser]).with_suffix('.out')
    wait_for(lambda: f'out_dir {run}' in out.read_text(), 'the header of the live run')
    winner.send_signal(signal.SIGINT)
    assert winner.wait(timeout=120) == 130
    latest = run / 'checkpoint_latest.pth'
    stop = re.fullmatch(rf'stopped by SIGINT at epoch 0, step (\d+) of 125000; continue with -resume '
                        rf'{re.escape(str(latest))}\n', (tmp_path / 'ab'[1 - loser]).with_suffix('.err').read_text())
    assert stop
    assert sorted(p.name.split('.')[0] for p in run.iterdir()) == ['checkpoint_latest', 'events']  # no lock left
    # the folder is neither stuck nor shared: a new run there is told what the stopped one needs
    result = cli('-cfg', config, '-set', 'num_samples=16', '-epochs', '1')
    assert result.returncode == 2
    assert result.stderr == (f'error: {run} already holds another run (checkpoint_latest.pth, events.out.tfevents.'
                             f'{result.stderr.split("events.out.tfevents.")[1].split(")")[0]}), stopped by SIGINT at '
                             f'epoch 0, step {stop.group(1)} of 125000: continue that run with -resume {latest}, or '
                             f'start a new run in a new folder, e.g. -out-dir {run}-2\n')


def test_a_run_killed_in_its_first_epoch_leaves_its_folder_usable(tmp_path, start):
    config = tiny_config(tmp_path, **ENDLESS)
    run = tmp_path / 'run'
    first = start(config, tmp_path / 'first')
    wait_for(lambda: f'out_dir {run}' in (tmp_path / 'first.out').read_text(), 'the header')
    first.send_signal(signal.SIGKILL)  # no clean-up at all: the kernel drops the lock with the process
    first.wait(timeout=60)
    result = cli('-cfg', config, '-set', 'num_samples=16', '-epochs', '1')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'removed events.out.tfevents.' in result.stdout.splitlines()[0]


def test_a_folder_locked_by_a_live_process_is_refused_under_torchrun_without_hanging(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    lock = run_folder.Lock(tmp_path / 'run')  # this test's process is the live run
    try:
        result = cli('-cfg', config, launcher=('-m', 'torch.distributed.run', '--nproc_per_node=2',
                                               f'--master_port={free_port()}'))
    finally:
        lock.release()
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert errors == [f'error: {tmp_path / "run"} is in use by a live run (process {os.getpid()}): wait for it to '
                      'end or stop it, or choose another -out-dir'], result.stderr[-3000:]  # rank 0 alone says why
    assert not (tmp_path / 'run').exists()  # the lock's folder went with it; the refused run wrote nothing


def test_a_lock_taken_a_moment_ago_is_refused_as_a_run_just_starting(tmp_path):
    """Between its flock and writing its process id a run's lock file is empty: the refusal says so."""
    (tmp_path / 'run').mkdir()
    fd = os.open(tmp_path / 'run' / run_folder.LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(run_folder.RunFolderError) as error:
            run_folder.Lock(tmp_path / 'run')
    finally:
        os.close(fd)
    assert str(error.value) == (f'{tmp_path / "run"} is in use by a live run (one that is just starting): wait for '
                                'it to end or stop it, or choose another -out-dir')
