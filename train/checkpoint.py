"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a dict with the model, optimizer, scheduler and grad-scaler states,
``epoch`` (the last finished one), ``best_acc1``, ``config``, and ``rng``: the torch,
CUDA, numpy and Python RNG states of every rank (a list, rank 0 first).  One written in the
middle of an epoch (``train.state``) also holds ``step``, the steps done of the next epoch, and
``partial``, every rank's sums and losses of those steps; one written when a signal stopped the
run, ``stopped``: the line that said so.  It is written
to a temporary file in the same folder, flushed to disk, then renamed over the old one
(and the folder synced), so a crash while saving leaves the previous checkpoint intact.
It loads with ``weights_only=True``.

A checkpoint resumes only in as many processes as wrote it (``len(rng)``): the steps per epoch,
the learning-rate schedule and the global batch depend on it.  Which folder a run may use is
``train.run_folder``'s business.
"""
import errno
import os
import random
import secrets
from pathlib import Path

import numpy as np
import torch

from sj_ei.config import ABLATIONS, SCHEMA
from sj_ei.errors import UserError

FORMAT = 'sj_ei.train.classify'
VERSION = 2
#: what every checkpoint holds besides the format marker, version and ``best_epoch``
CONTENTS = ('model', 'optimizer', 'scheduler', 'scaler', 'epoch', 'best_acc1', 'config', 'rng')
#: config keys that define the model of a checkpoint
SAME_MODEL = ('dataset', 'model', 'norm', 'width', 'ei_ratio', *ABLATIONS)
#: config keys a resumed run must share with its checkpoint
SAME_RUN = (*SAME_MODEL, 'T', 'batch_size', 'epochs', 'lr', 'warmup_epochs', 'seed')


class CheckpointError(UserError, ValueError):
    """A file that is not a usable checkpoint of this trainer, or one that cannot be written."""


class WriteError(CheckpointError):
    """A checkpoint that could not be written (a full disk, a folder not writable); nothing was lost."""


class ProcessCountError(CheckpointError):
    """A checkpoint written by another number of processes than this run has (``processes``: the checkpoint's)."""

    def __init__(self, message: str, processes: int):
        super().__init__(message)
        self.processes = processes


def describe(error: BaseException) -> str:
    """``'Type: first line of the message'``, or ``'Type'`` for an empty message (``EOFError()``)."""
    line = next((line.strip() for line in str(error).splitlines() if line.strip()), '')
    return f'{type(error).__name__}: {line[:300]}' if line else type(error).__name__


def os_error(error: BaseException):
    """The ``OSError`` behind ``error`` (itself, or what it was raised from or during), if any: torch's zip
    writer turns a full disk into ``RuntimeError('unexpected pos ...')`` raised during the ``OSError``."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def rng_states() -> dict:
    """The RNG states of this process: torch, every CUDA device, numpy, Python ``random``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            'numpy': [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            'python': random.getstate()}


def set_rng_states(states: dict) -> None:
    """Restore what ``rng_states`` returned."""
    torch.set_rng_state(states['torch'])
    if states['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])
    kind, keys, pos, has_gauss, cached = states['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states['python']
    random.setstate((version, tuple(internal), gauss))


def save(path, **state) -> None:
    """Write ``state`` (the ``CONTENTS``) with the format marker to ``path`` atomically, with the permissions
    of any new file (0666 less the umask, as TensorBoard's events); a ``CheckpointError`` naming the folder if
    the disk is full or the folder not writable (``WriteError``)."""
    path = Path(path)
    state = {'format': FORMAT, 'version': VERSION, **state}
    partial = path.with_name(f'.{path.name}-{secrets.token_hex(4)}')  # run_folder removes those a kill left
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException as e:
        if partial.exists():
            os.unlink(partial)
        cause = os_error(e)
        if cause is None or cause.errno is None:
            raise
        full = cause.errno in (errno.ENOSPC, errno.EDQUOT)
        raise WriteError(f'cannot write {path.name} in {path.parent}: '
                         f'{"no space left on its device" if full else cause.strerror} '
                         f'({errno.errorcode.get(cause.errno, cause.errno)}){": free space there" if full else ""}') from e
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # makes the rename itself durable
    finally:
        os.close(folder)


def load(path, config: dict, processes: int = 1) -> dict:
    """The checkpoint at ``path``, checked to be this trainer's, of the same run as ``config`` and written by
    ``processes`` processes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise CheckpointError(f'{path} is damaged or not a PyTorch checkpoint ({describe(e)}); resume from another '
                              'checkpoint, e.g. checkpoint_max.pth') from None
    if not isinstance(state, dict) or state.get('format') != FORMAT:
        raise CheckpointError(f'{path} is not a checkpoint of train.classify (no {FORMAT!r} marker); '
                              'to start from foreign weights, load them into the model yourself')
    if state.get('version') != VERSION:
        raise CheckpointError(f'{path} is a version {state.get("version")} checkpoint; this trainer reads '
                              f'version {VERSION}')
    missing = [key for key in CONTENTS if key not in state]
    if missing:
        raise CheckpointError(f'{path} is damaged: it lacks {", ".join(missing)}')
    differ = differences(state['config'], config, SAME_RUN)
    more = f'-init-from {path} -out-dir DIR (fresh optimizer, warm-up and cosine schedule over -epochs)'
    if [key for key, _ in differ] == ['epochs']:
        raise CheckpointError(f'{path} is of a run of {state["config"]["epochs"]} epochs, and -resume continues a '
                              f'run on its own schedule; to train it for more epochs, start a new run from its '
                              f'weights: {more}')
    if differ:
        raise CheckpointError(f'{path} belongs to another run ({"; ".join(text for _, text in differ)}); '
                              'resume with the config it was trained with')
    latest = path.parent / 'checkpoint_latest.pth'
    if path.name != latest.name and latest.is_file():
        try:
            saved = torch.load(latest, map_location='cpu', weights_only=True)
            later = saved['epoch']
        except Exception:
            saved = later = None  # a damaged latest checkpoint: this one is what is left
        if later is not None and (later, saved.get('step', 0)) > (state['epoch'], state.get('step', 0)):
            raise CheckpointError(f'{path} is epoch {state["epoch"]} of a run whose {latest.name} is at epoch {later}: '
                                  f'resuming from it would overwrite the later epochs. Resume with -resume {latest}, '
                                  f'or start a new run from its weights: {more}')
    if state['epoch'] + 1 >= config['epochs']:
        raise CheckpointError(f'{path} is the end of a finished run (epoch {state["epoch"] + 1} of '
                              f'{config["epochs"]}): nothing to resume. To train it further, start a new run '
                              f'from its weights: {more}')
    written = len(state['rng'])
    if written != processes:
        raise ProcessCountError(
            f'{path} was written by {written} process(es) and resumes exactly only with {written}, not {processes} '
            f'(the steps per epoch, the learning-rate schedule and the global batch of {written} x '
            f'{config["batch_size"]} depend on it); resume it with {written} process(es)', written)
    return state


def differences(saved: dict, config: dict, keys) -> list:
    """``[(key, 'key: saved in the checkpoint, now')]`` for the ``keys`` where ``saved`` (a checkpoint's
    config; keys it lacks count as their defaults) and ``config`` differ."""
    return [(k, f'{k}: {saved.get(k, SCHEMA[k][1])!r} in the checkpoint, {config[k]!r} now')
            for k in keys if saved.get(k, SCHEMA[k][1]) != config[k]]


def restore(path, state: dict, rank: int, model, optimizer, scheduler, scaler) -> None:
    """Load ``state`` (from ``load``) into the training objects and this rank's RNGs."""
    try:
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f'{path} does not fit this model ({describe(e)}); '
                              'resume with the config it was trained with') from None
    scheduler.load_state_dict(state['scheduler'])
    scaler.load_state_dict(state['scaler'])
    set_rng_states(state['rng'][rank])
