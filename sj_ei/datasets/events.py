"""DVS128 Gesture and CIFAR10-DVS through spikingjelly's dataset classes, framed by
event count (``split_by='number'``) at the sensor's 128x128 and then augmented and
resized to 48x48 as in the authors' code (``transforms.event_transform``).

Under the dataset root spikingjelly reads ``download/`` (the published archives),
``extract/`` (their contents), converts the recordings once to ``events_np/`` and frames
them once into ``frames_number_<T>_split_by_number/``.  Left to itself it deletes an
archive whose checksum does not match, tries to download missing files, and skips a
recording it cannot read without saying so.  This module therefore prepares those
folders itself, reading the recordings with ``aedat`` (the file formats, as spikingjelly
reads them) and framing them with spikingjelly's functions, before handing
the root to spikingjelly's class: it checks what is on disk first and stops with one
clear error before writing anything, verifies archives against their published MD5
and never deletes or changes a user's file, fails loudly on an unreadable recording,
and builds each folder under a temporary name that is renamed only when complete, so
an interrupted run leaves nothing half-made.

CIFAR10-DVS has no official split; the authors' is used: per class, in spikingjelly's
sample order (file names sorted as strings: ``cifar10_airplane_0``, ``_1``, ``_10``,
``_100`` ...), the first 90% (rounded up) are the training set, the rest the test set.
"""
import contextlib
import hashlib
import io
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torchvision.datasets.utils import extract_archive
from spikingjelly import datasets as sjds
from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS
from spikingjelly.datasets.dvs128_gesture import DVS128Gesture

from . import aedat
from .errors import DatasetDamagedError, DatasetNotFoundError
from .transforms import SENSOR, event_transform

CIFAR10DVS_TRAIN_FRACTION = 0.9
CIFAR10DVS_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
_SOURCES = {'dvsgesture': DVS128Gesture, 'cifar10dvs': CIFAR10DVS}
_WHERE = {
    'dvsgesture': ('DvsGesture.tar.gz (from IBM Research, https://research.ibm.com/interactive/dvsgesture/)',
                   "or the archive's extracted DvsGesture/ folder (the .aedat recordings, their *_labels.csv, "
                   'trials_to_train.txt and trials_to_test.txt) as {root}/extract/DvsGesture/'),
    'cifar10dvs': ('the ten class archives airplane.zip ... truck.zip of CIFAR10-DVS '
                   '(https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671)',
                   'or their extracted class folders (the .aedat recordings) as '
                   '{root}/extract/airplane/ ... {root}/extract/truck/'),
}
_WORKERS = min(8, os.cpu_count() or 1)


def event_frames(name: str, root, T: int, train: bool, augment: bool = True) -> Dataset:
    """The ``train`` or test split of ``'dvsgesture'`` / ``'cifar10dvs'`` as float
    ``([T, 2, 48, 48], label)``, the training splits augmented (``transforms.event_transform``) unless not ``augment``."""
    root = Path(root)
    if not root.is_dir():
        raise _not_found(name, root, f'the data directory {root} does not exist')
    _prepare_events(name, root)
    _prepare_frames(name, root, T)
    with contextlib.redirect_stdout(io.StringIO()):  # spikingjelly reports each folder it finds
        if name == 'dvsgesture':
            frames = DVS128Gesture(str(root), train=train, data_type='frame', frames_number=T, split_by='number')
        else:
            frames = CIFAR10DVS(str(root), data_type='frame', frames_number=T, split_by='number')
    if name == 'dvsgesture':  # spikingjelly's class indices follow its folder names' string order: '10' before '2'
        return FramedEvents(frames, event_transform(name, train and augment), labels=[int(folder) for folder in frames.classes])
    if tuple(frames.classes) != CIFAR10DVS_CLASSES:
        raise DatasetNotFoundError(f'cifar10dvs: {root}/events_np/ holds the classes {", ".join(frames.classes)}, '
                                   f'expected exactly {", ".join(CIFAR10DVS_CLASSES)}; move other folders elsewhere')
    return FramedEvents(cifar10dvs_split(frames, train), event_transform(name, train and augment))


class FramedEvents(Dataset):
    """spikingjelly frames ``[T, 2, 128, 128]`` -> ``transform`` of them as float (``[T, 2, 48, 48]``).
    ``labels[i]`` is the true label of the wrapped dataset's class index ``i`` (identity when ``None``)."""

    def __init__(self, frames: Dataset, transform, labels=None):
        self.frames, self.transform, self.labels = frames, transform, labels

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, index):
        frames, label = self.frames[index]
        x = torch.from_numpy(np.asarray(frames, dtype=np.float32))
        if x.shape[-2:] != (SENSOR, SENSOR):
            raise ValueError(f'frames of {tuple(x.shape[-2:])} pixels in the frame cache of sample {index}, expected '
                             f'the sensor\'s {SENSOR}x{SENSOR}: the cache was not written by sj_ei or spikingjelly. '
                             'Move the frames_number_* folder aside to have the frames made again.')
        x = self.transform(x)
        return x, int(label) if self.labels is None else self.labels[label]


def cifar10dvs_split(dataset, train: bool) -> Subset:
    """The split of spikingjelly's ``split_to_train_test_set(0.9, dataset, 10)`` (the authors'),
    read from the file list instead of loading every sample: per class, in the dataset's order,
    the first ``ceil(0.9 n)`` recordings are the training set, the others (at least one) the test set."""
    by_class = {}
    for index, (_, label) in enumerate(dataset.samples):
        by_class.setdefault(label, []).append(index)
    chosen = []
    for members in by_class.values():
        cut = min(math.ceil(CIFAR10DVS_TRAIN_FRACTION * len(members)), len(members) - 1)
        chosen += members[:cut] if train else members[cut:]
    return Subset(dataset, sorted(chosen))


# ---- on-disk preparation -------------------------------------------------------------

def _not_found(name: str, root: Path, problem: str) -> DatasetNotFoundError:
    what, alternative = _WHERE[name]
    return DatasetNotFoundError(f'{name}: {problem}. Place {what} in {root / "download"}/, '
                                + alternative.format(root=root) + '; then run again (nothing is downloaded '
                                'automatically, and nothing was written).')


@contextlib.contextmanager
def _staged(final: Path):
    """A temporary folder beside ``final`` that becomes ``final`` only if the block completes
    (if another process completed ``final`` meanwhile, its copy is kept and ours dropped)."""
    partial = Path(tempfile.mkdtemp(dir=final.parent, prefix=f'.{final.name}-partial-'))
    try:
        yield partial
        try:
            os.replace(partial, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _run_all(jobs, what: str):
    """Run ``jobs`` (``(path, function, *args)``) on a thread pool; the first failure is one
    ``ValueError`` naming its file."""
    with contextlib.redirect_stdout(io.StringIO()), ThreadPoolExecutor(_WORKERS) as pool:
        futures = [(path, pool.submit(function, *args)) for path, function, *args in jobs]
        for path, future in futures:
            try:
                future.result()
            except Exception as error:
                pool.shutdown(cancel_futures=True)
                raise ValueError(f'could not {what} {path} ({type(error).__name__}: {error}); the file may be '
                                 'damaged or incomplete: replace it with a complete copy and run again') from error


def _recordings(name: str, extract: Path):
    """``(source file, split or class, output stem)`` of every recording in ``extract``, or
    ``None`` if the extracted layout is absent; ``DatasetNotFoundError`` if it is incomplete."""
    if name == 'dvsgesture':
        folder = extract / 'DvsGesture'
        lists = {'train': folder / 'trials_to_train.txt', 'test': folder / 'trials_to_test.txt'}
        if not all(path.is_file() for path in lists.values()):
            return None
        recordings = [(folder / line.strip(), split, Path(line.strip()).stem)
                      for split, path in lists.items() for line in path.read_text().splitlines() if line.strip()]
        missing = [p.name for source, _, stem in recordings for p in (source, folder / f'{stem}_labels.csv')
                   if not p.is_file()]
    else:
        if not all((extract / c).is_dir() for c in CIFAR10DVS_CLASSES):
            return None
        recordings = [(path, c, path.stem) for c in CIFAR10DVS_CLASSES for path in sorted((extract / c).glob('*.aedat'))]
        missing = [f'{c}/*.aedat' for c in CIFAR10DVS_CLASSES if not any(c == cls for _, cls, _ in recordings)]
    if missing or not recordings:
        shown = ', '.join(missing[:5]) + (f' and {len(missing) - 5} more' if len(missing) > 5 else '')
        raise DatasetNotFoundError(f'{name}: the extracted data in {extract} are incomplete: '
                                   + (f'missing {shown}' if missing else 'no recordings listed')
                                   + '. Extract the complete archive(s) there again (or remove the folder to have '
                                   'them extracted from the archives in download/).')
    return recordings


def _prepare_events(name: str, root: Path):
    """Make ``root/events_np`` from the extracted recordings, extracting the verified archives
    first if needed; ``DatasetNotFoundError`` / ``ValueError`` (having written nothing) if
    the data are missing or damaged."""
    events_np, extract, download = root / 'events_np', root / 'extract', root / 'download'
    if events_np.is_dir():
        return
    if _recordings(name, extract) is None:
        if extract.exists():
            raise DatasetNotFoundError(
                f'{name}: {extract} exists but does not hold the extracted dataset (expected '
                + _WHERE[name][1].split(' or ', 1)[1].format(root=root) + f'). If the archives are in {download}/, '
                f'move {extract} aside to have them extracted there; nothing was written.')
        archives = [(download / f, md5) for f, _, md5 in _SOURCES[name].resource_url_md5()
                    if f.endswith(('.zip', '.tar.gz'))]
        missing = [p.name for p, _ in archives if not p.is_file()]
        if missing:
            raise _not_found(name, root, f'it is not in {root} (missing {download}/{", ".join(missing)})')
        damaged = [p.name for p, md5 in archives if _md5(p) != md5]
        if damaged:
            raise DatasetDamagedError(f'{name}: {", ".join(damaged)} in {download} do(es) not match the published MD5 '
                             'checksum (an incomplete or damaged download?). Nothing was deleted or written: '
                             'replace the file(s) with complete copies and run again.')
        print(f'{name}: extracting the archives in {download} to {extract} (once)')
        with _staged(extract) as partial:
            for archive, _ in archives:
                extract_archive(str(archive), str(partial))
            _recordings(name, partial)  # the verified archives must give the complete layout
    recordings = _recordings(name, extract)
    print(f'{name}: converting {len(recordings)} recordings in {extract} to {events_np} (once)')
    with _staged(events_np) as partial:
        if name == 'dvsgesture':
            for split in ('train', 'test'):
                for label in range(11):
                    (partial / split / str(label)).mkdir(parents=True)
            _run_all([(source, _split_dvs_gesture, source, source.with_name(f'{source.stem}_labels.csv'),
                       partial / split) for source, split, _ in recordings], 'read the recording')
        else:
            for c in CIFAR10DVS_CLASSES:
                (partial / c).mkdir()
            _run_all([(source, _convert_cifar10dvs, source, partial / c / f'{stem}.npz')
                      for source, c, stem in recordings], 'read the recording')


def _split_dvs_gesture(source: Path, labels: Path, output: Path):
    """One DVS128 Gesture recording (AEDAT 3.1) to one events file per gesture of its ``labels`` csv
    (``class, start, end`` in us, classes from 1), ``output/<class - 1>/<recording>_<i>.npz`` for the
    ``i``-th gesture of that class, holding the events of ``start <= t < end``: spikingjelly's layout."""
    events = aedat.read_aedat3(source)
    seen = [0] * 11
    for label, start, end in np.loadtxt(labels, dtype=np.uint32, delimiter=',', skiprows=1, ndmin=2):
        inside = (events['t'] >= start) & (events['t'] < end)
        sjds.np_savez(str(output / str(label - 1) / f'{source.stem}_{seen[label - 1]}.npz'),
                      **{key: value[inside] for key, value in events.items()})
        seen[label - 1] += 1


def _convert_cifar10dvs(source: Path, target: Path):
    """One CIFAR10-DVS recording (AEDAT 2.0) to spikingjelly's events file (whose own reader numpy 2
    no longer runs: ``np.fromstring`` on binary data was removed)."""
    sjds.np_savez(str(target), **aedat.read_cifar10dvs(source))


def _load_events(path) -> dict:
    """One spikingjelly events file (``events_np/**.npz``) as ``{'t', 'x', 'y', 'p'}`` numpy arrays."""
    with np.load(path) as events:
        return {key: events[key] for key in events.files}


def _prepare_frames(name: str, root: Path, T: int):
    """Frame every recording into ``T`` frames by event count, into spikingjelly's cache folder."""
    frames = root / f'frames_number_{T}_split_by_number'
    if frames.is_dir():
        return
    H, W = _SOURCES[name].get_H_W()
    events_np = root / 'events_np'
    print(f'{name}: framing the recordings into {T} frames each in {frames} (once)')
    with _staged(frames) as partial:
        jobs = []
        for folder, _, files in os.walk(events_np):
            out = partial / Path(folder).relative_to(events_np)
            out.mkdir(exist_ok=True)
            jobs += [(Path(folder, f), sjds.integrate_events_file_to_frames_file_by_fixed_frames_number,
                      _load_events, os.path.join(folder, f), str(out), 'number', T, H, W)
                     for f in files]
        _run_all(jobs, 'frame the events file')
