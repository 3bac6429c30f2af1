"""A run's folder: one run per folder, and no two live processes in it.

``claim`` is how a run (new or resumed) takes its folder: it creates the folder, takes an OS
lock on ``FOLDER/.lock`` (``fcntl.flock``, held while the run lives; the kernel drops it when
the process ends, however it ends, so a killed run never keeps its folder), removes the
temporary files of a checkpoint save that a kill interrupted, and, for a new run, refuses a
folder that holds another run's checkpoints.  A folder with TensorBoard events but no
checkpoint is what a run that stopped in its first epoch leaves: nothing to resume, so its
events are replaced.  The lock file holds the process id for the message; its existence
means nothing.
"""
import fcntl
import os
from pathlib import Path

import torch

from sj_ei.errors import UserError

LOCK = '.lock'


class RunFolderError(UserError, ValueError):
    """A run folder this run cannot use; the message says why and what to do instead."""


def is_checkpoint(name: str) -> bool:
    return name.startswith('checkpoint_') and name.endswith('.pth')


def is_partial_checkpoint(name: str) -> bool:
    """A temporary file of ``checkpoint.save`` (``.checkpoint_latest.pth-XXXXXXXX``)."""
    return name.startswith('.checkpoint_') and '.pth-' in name


def is_events(name: str) -> bool:
    return name.startswith('events.out.tfevents')


class Lock:
    """An exclusive ``flock`` on ``folder/.lock`` (``folder`` created if needed), held until ``release``
    or the end of the process; ``RunFolderError`` if a live process holds it."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise RunFolderError(f'-out-dir {self.folder} is a file, not a folder: choose another -out-dir') from None
        except OSError as e:
            raise RunFolderError(f'cannot create the run folder {self.folder} ({e.strerror}): choose another '
                                 '-out-dir') from None
        self.path = self.folder / LOCK
        while True:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(self.fd, 100).decode(errors='replace').strip()  # empty: it has just taken the lock
                os.close(self.fd)
                who = f'process {holder}' if holder else 'one that is just starting'
                raise RunFolderError(f'{self.folder} is in use by a live run ({who}): wait for it to end '
                                     'or stop it, or choose another -out-dir') from None
            try:  # a run that released the lock removed the file: then this lock is on nothing; take the new one
                if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(self.fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f'{os.getpid()}\n'.encode())

    def release(self) -> None:
        """Drop the lock (removing the file while still holding it; a folder this lock created and that
        stayed empty goes too)."""
        if self.fd is None:
            return
        os.unlink(self.path)
        os.close(self.fd)
        self.fd = None
        if self.created and not any(self.folder.iterdir()):
            self.folder.rmdir()


def remove_partial_checkpoints(folder) -> list:
    """Remove the temporary files of checkpoint saves that a kill interrupted; their names.
    Only under the folder's ``Lock`` (no live run is saving)."""
    partial = sorted(p for p in Path(folder).iterdir() if is_partial_checkpoint(p.name))
    for p in partial:
        p.unlink()
    return [p.name for p in partial]


def check_new(folder) -> list:
    """Refuse a folder that holds another run's checkpoints (a new run never overwrites or mixes with
    another run); return the TensorBoard event files of a run that stopped before its first checkpoint,
    which the new run replaces."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir())
    checkpoints = [n for n in names if is_checkpoint(n)]
    events = [n for n in names if is_events(n)]
    if not checkpoints:
        return events
    found = checkpoints + events
    stem, _, number = str(folder).rpartition('-')  # after runs/x-2 comes runs/x-3, not runs/x-2-2
    stem, first = (stem, int(number) + 1) if stem and number.isdigit() else (str(folder), 2)
    taken = lambda f: f.is_dir() and any(is_checkpoint(p.name) or is_events(p.name) for p in f.iterdir())
    free = next(f'{stem}-{i}' for i in range(first, first + 10 ** 6) if not taken(Path(f'{stem}-{i}')))
    latest = folder / 'checkpoint_latest.pth'
    try:
        saved = torch.load(latest, map_location='cpu', weights_only=True)
        finished = saved['epoch'] + 1 >= saved['config']['epochs']
        stopped = f', {saved["stopped"]}' if saved.get('stopped') else ''
    except Exception:  # no latest checkpoint, or not a readable one: nothing to continue
        finished, stopped = None, ''
    resume = ('' if finished is None else f'continue that run with -resume {latest}, or ' if not finished else
              f'train that finished run further with -init-from {latest} -out-dir {free}, or ')
    raise RunFolderError(f'{folder} already holds another run ({", ".join(found[:3])}'
                         f'{", ..." if len(found) > 3 else ""}){stopped}: {resume}start a new run in a new '
                         f'folder, e.g. -out-dir {free}')


def claim(folder, new: bool) -> tuple:
    """``(lock, notes)``: ``folder`` locked for this run and made ready (``notes``: lines saying what was
    removed); a new run also needs a folder without another run's checkpoints, a resumed one its run's folder."""
    if not new and not Path(folder).is_dir():
        raise RunFolderError(f'{folder}, the folder of the checkpoint to resume, does not exist')
    lock = Lock(folder)
    try:
        notes = []
        partial = remove_partial_checkpoints(folder)
        if partial:
            notes.append(f'{folder}: removed {", ".join(partial)} (left by a run killed while saving a checkpoint)')
        for name in check_new(folder) if new else ():
            (Path(folder) / name).unlink()
            notes.append(f'{folder}: removed {name} of a run that stopped before its first checkpoint (nothing '
                         'to resume); starting afresh')
        return lock, notes
    except BaseException:
        lock.release()
        raise
