"""Checkpoints: atomic writes, exact resume, one run per folder, and a clear error for anything else."""
import errno
import os
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train import checkpoint, classify, run_folder
from sj_ei import config as cfg
from train.distributed import DUMP_ENV

from train_helpers import tiny_config

#: a run of one epoch that costs seconds
SMALL = dict(width=0.0625, epochs=1, num_samples=16, num_test_samples=8)


def files(folder):
    """``{name: bytes}`` of every file in ``folder``."""
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def full_state(config, **changes):
    """A checkpoint's contents with stand-in values."""
    return {'model': {'w': torch.ones(3)}, 'optimizer': {}, 'scheduler': {}, 'scaler': {}, 'epoch': 0,
            'best_acc1': 10.0, 'config': config, 'rng': [checkpoint.rng_states()], **changes}


class FullDisk:
    """A file on a disk with ``room`` bytes left: a write beyond them fails with ENOSPC, as on a full disk."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def fill_the_disk(monkeypatch, room: int):
    """Every ``torch.save`` from now on writes to a disk with ``room`` bytes left."""
    real_save = torch.save
    monkeypatch.setattr(torch, 'save', lambda obj, f: real_save(obj, FullDisk(f, room)))


def test_a_full_disk_while_saving_is_one_error_naming_the_folder_and_the_previous_checkpoint_stays(tmp_path,
                                                                                                    monkeypatch):
    path = tmp_path / 'checkpoint_latest.pth'
    config = cfg.load(tiny_config(tmp_path))
    checkpoint.save(path, **full_state(config))
    fill_the_disk(monkeypatch, room=1000)
    with pytest.raises(checkpoint.WriteError, match=re.escape(f'cannot write checkpoint_latest.pth in {tmp_path}: '
                                                              'no space left on its device (ENOSPC): free space there')):
        checkpoint.save(path, **full_state(config, epoch=1, model={'w': torch.zeros(3)}))
    monkeypatch.undo()
    state = checkpoint.load(path, config)
    assert state['epoch'] == 0 and torch.equal(state['model']['w'], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ['checkpoint_latest.pth', 'tiny.yaml']  # no temporary file left


def test_a_full_disk_during_a_run_is_one_error_line_saying_how_to_go_on(tmp_path, monkeypatch, capsys):
    tiny = tiny_config(tmp_path, **{**SMALL, 'epochs': 2})
    real_save = torch.save
    saved = []

    def full_after_the_first_checkpoints(obj, f):  # epoch 0 saves latest and max; then the disk is full
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(real_save(obj, f))
    monkeypatch.setattr(torch, 'save', full_after_the_first_checkpoints)
    with pytest.raises(SystemExit) as exit_info:
        classify.main(['-cfg', str(tiny)])
    run = tmp_path / 'run'
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count('\n') == 1, err
    assert err == (f'error: cannot write checkpoint_latest.pth in {run}: no space left on its device (ENOSPC): free '
                   f'space there; then continue with -resume {run / "checkpoint_latest.pth"}\n')
    assert checkpoint.load(run / 'checkpoint_latest.pth', cfg.load(tiny))['epoch'] == 0  # epoch 0 is intact
    assert not [p for p in run.iterdir() if p.name.startswith('.')]  # no temporary file, and the lock is gone
    # before the first checkpoint: nothing to resume, and the same command starts afresh
    fill_the_disk(monkeypatch, room=1000)
    with pytest.raises(SystemExit):
        classify.main(['-cfg', str(tiny), '-out-dir', str(tmp_path / 'fresh')])
    assert capsys.readouterr().err.endswith(f'free space there; then run the same command again to start afresh in '
                                            f'{tmp_path / "fresh"} (no epoch finished, so there is nothing to resume; '
                                            'what this run wrote there is replaced)\n')
    monkeypatch.undo()
    classify.main(['-cfg', str(tiny), '-out-dir', str(tmp_path / 'fresh'), '-epochs', '1'])
    out = capsys.readouterr().out
    assert re.search(r'removed events\.out\.tfevents\.\S+ of a run that stopped before its first checkpoint', out), out
    assert len(list((tmp_path / 'fresh').glob('events.out.tfevents.*'))) == 1


def test_checkpoints_get_the_permissions_of_any_new_file(tmp_path):
    config = cfg.load(tiny_config(tmp_path))
    old = os.umask(0o027)
    try:
        checkpoint.save(tmp_path / 'a.pth', **full_state(config))
    finally:
        os.umask(old)
    checkpoint.save(tmp_path / 'b.pth', **full_state(config))
    (tmp_path / 'plain').write_text('')  # how TensorBoard's event files are created
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777
    assert mode('a.pth') == 0o640 and mode('b.pth') == mode('plain') == 0o666 & ~old


def test_a_checkpoint_of_another_number_of_processes_is_refused_with_the_command_that_resumes_it(tmp_path, capsys):
    tiny = tiny_config(tmp_path)
    config = cfg.load(tiny)
    path = tmp_path / 'run' / 'checkpoint_latest.pth'
    path.parent.mkdir()
    checkpoint.save(path, **full_state(config, rng=[checkpoint.rng_states()] * 2))  # as torchrun with 2 writes it
    with pytest.raises(SystemExit) as exit_info:
        classify.main(['-cfg', str(tiny), '-resume', str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f'error: {path} was written by 2 process(es) and resumes exactly only with 2, not 1 (the steps per epoch, '
        'the learning-rate schedule and the global batch of 2 x 8 depend on it); resume it with 2 process(es): '
        f'torchrun --nproc_per_node=2 -m train.classify -cfg {tiny} -resume {path}\n')


def test_a_process_killed_mid_write_leaves_the_old_file_and_only_a_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / 'checkpoint_latest.pth'
    config = cfg.load(tiny_config(tmp_path))
    checkpoint.save(path, **full_state(config))

    def killed(obj, f):
        f.write(b'PK\x03\x04 half a zip')
        f.flush()
        os._exit(9)  # what SIGKILL leaves: no cleanup at all
    pid = os.fork()
    if pid == 0:
        monkeypatch.setattr(torch, 'save', killed)
        checkpoint.save(path, **full_state(config, epoch=1))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    assert checkpoint.load(path, config)['epoch'] == 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith('.checkpoint_latest.pth-')]
    assert len(leftovers) == 1  # the half-written temporary file, never under the checkpoint's name
    # the next run in the folder removes it, under the folder's lock
    lock, notes = run_folder.claim(tmp_path, new=False)
    lock.release()
    assert notes == [f'{tmp_path}: removed {leftovers[0]} (left by a run killed while saving a checkpoint)']
    assert sorted(os.listdir(tmp_path)) == ['checkpoint_latest.pth', 'tiny.yaml']


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, monkeypatch):
    classify.train(cfg.load(tiny_config(tmp_path / 'a')))

    stopped = cfg.load(tiny_config(tmp_path / 'b'))
    save = checkpoint.save

    def save_then_stop_after_epoch_1(path, **state):
        save(path, **state)
        if state['epoch'] == 1 and path.name == 'checkpoint_latest.pth':
            raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint, 'save', save_then_stop_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        classify.train(stopped)
    monkeypatch.undo()
    # a resumed run continues in its checkpoint's folder, whatever out_dir says
    classify.train({**stopped, 'out_dir': str(tmp_path / 'elsewhere')}, resume=tmp_path / 'b' / 'run' / 'checkpoint_latest.pth')
    assert not (tmp_path / 'elsewhere').exists()

    a, b = (torch.load(tmp_path / d / 'run' / 'checkpoint_latest.pth', weights_only=True) for d in 'ab')
    assert a['epoch'] == b['epoch'] == 2 and a['best_acc1'] == b['best_acc1']
    assert a['model'].keys() == b['model'].keys()
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    for key in a['optimizer']['state']:
        assert torch.equal(a['optimizer']['state'][key]['momentum_buffer'],
                           b['optimizer']['state'][key]['momentum_buffer'])
    assert a['scheduler'] == b['scheduler']
    for tag in ('train/loss', 'test/loss', 'test/acc1', 'lr'):
        series = [[(s.step, s.value) for s in EventAccumulator(str(tmp_path / d / 'run')).Reload().Scalars(tag)]
                  for d in 'ab']
        assert len(series[0]) == 3 and sorted(set(series[1])) == series[0], tag


def test_a_checkpoint_of_another_run_or_model_is_refused(tmp_path):
    config = cfg.load(tiny_config(tmp_path))
    path = tmp_path / 'other.pth'
    checkpoint.save(path, **full_state({**config, 'model': 'vgg11', 'width': 0.5}))
    with pytest.raises(checkpoint.CheckpointError, match=r"another run \(model: 'vgg11' in the checkpoint, "
                                                         r"'vgg8' now; width: 0.5 in the checkpoint, 0.125 now\)"):
        checkpoint.load(path, config)
    checkpoint.save(path, **full_state(config))  # same config, but the weights are not this model's
    with pytest.raises(checkpoint.CheckpointError, match='does not fit this model'):
        classify.train(config, resume=path)
    state = full_state(config)
    del state['optimizer']
    checkpoint.save(path, **state)
    with pytest.raises(checkpoint.CheckpointError, match='is damaged: it lacks optimizer'):
        checkpoint.load(path, config)


def test_resuming_from_an_earlier_checkpoint_of_a_run_that_went_further_is_refused(tmp_path):
    config = cfg.load(tiny_config(tmp_path))
    checkpoint.save(tmp_path / 'checkpoint_max.pth', **full_state(config, epoch=0))
    checkpoint.save(tmp_path / 'checkpoint_latest.pth', **full_state(config, epoch=1))
    with pytest.raises(checkpoint.CheckpointError, match=r'checkpoint_max.pth is epoch 0 of a run whose '
                                                         r'checkpoint_latest.pth is at epoch 1: .* -resume .*latest.pth'):
        checkpoint.load(tmp_path / 'checkpoint_max.pth', config)
    assert checkpoint.load(tmp_path / 'checkpoint_latest.pth', config)['epoch'] == 1


def test_a_second_run_into_the_same_folder_is_refused_and_the_first_run_is_untouched(tmp_path, capsys):
    config = cfg.load(tiny_config(tmp_path, **SMALL))
    first = classify.train(config)
    before = files(first.out_dir)
    assert set(before) == {'checkpoint_latest.pth', 'checkpoint_max.pth', next(n for n in before if n.startswith('events'))}
    with pytest.raises(run_folder.RunFolderError) as e:
        classify.train({**config, 'epochs': 2})
    assert str(e.value).startswith(f'{first.out_dir} already holds another run (checkpoint_latest.pth, '
                                   'checkpoint_max.pth, events.out.tfevents.')
    assert f'train that finished run further with -init-from {first.out_dir / "checkpoint_latest.pth"} ' in str(e.value)
    assert f'e.g. -out-dir {first.out_dir}-2' in str(e.value)
    assert files(first.out_dir) == before
    # TensorBoard events alone (a run stopped in its first epoch) are nothing to resume: a new run replaces them
    stopped = tmp_path / 'run-2'
    stopped.mkdir()
    events = next(n for n in before if n.startswith('events'))
    (stopped / events).write_bytes(b'')
    capsys.readouterr()
    classify.train({**config, 'out_dir': str(stopped)})
    assert capsys.readouterr().out.startswith(f'{stopped}: removed {events} of a run that stopped before its first '
                                              'checkpoint (nothing to resume); starting afresh\n')
    assert events not in files(stopped) and {'checkpoint_latest.pth', 'checkpoint_max.pth'} < set(files(stopped))


def test_a_finished_run_trains_further_as_a_new_run_from_its_weights(tmp_path, monkeypatch):
    config = cfg.load(tiny_config(tmp_path, **SMALL))
    first = classify.train(config)
    latest = first.out_dir / 'checkpoint_latest.pth'
    before = files(first.out_dir)
    for epochs, reason in ((1, 'is the end of a finished run (epoch 1 of 1)'), (3, 'is of a run of 1 epochs')):
        with pytest.raises(checkpoint.CheckpointError, match=re.escape(reason) + '.*' + re.escape(
                f'start a new run from its weights: -init-from {latest} -out-dir DIR')):
            classify.train({**config, 'epochs': epochs}, resume=latest)
    monkeypatch.setenv(DUMP_ENV, str(tmp_path / 'dumps'))
    more = classify.train({**config, 'epochs': 2, 'init_from': str(latest), 'out_dir': str(tmp_path / 'more')})
    start = torch.load(tmp_path / 'dumps' / 'rank0_init.pth', weights_only=True)
    saved = torch.load(latest, weights_only=True)
    assert start.keys() == saved['model'].keys()
    assert all(torch.equal(start[k], saved['model'][k]) for k in start)  # its weights, not a new E-I Init
    assert files(first.out_dir) == before and more.out_dir == tmp_path / 'more'
    new = torch.load(more.out_dir / 'checkpoint_latest.pth', weights_only=True)
    assert new['epoch'] == 1 and new['config']['init_from'] == str(latest)
    steps = [s.step for s in EventAccumulator(str(more.out_dir)).Reload().Scalars('test/acc1')]
    assert steps == [0, 1]  # a run of its own: its own epochs, warm-up and schedule
