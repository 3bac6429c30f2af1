"""DVS128 Gesture and CIFAR10-DVS through spikingjelly's dataset classes, framed by
event count (``split_by='number'``) and resized to 48x48 (SPEC section 6).

spikingjelly converts raw recordings to ``events_np/`` and frames to
``frames_number_T_split_by_number/`` under the dataset root. It also deletes an
archive whose checksum does not match and tries to download missing files; this
module never lets it: it checks what is on disk first, verifies archives itself,
stops with a clear message, and builds each cache folder under a temporary name
that is renamed only when complete, so an interrupted run leaves nothing half-made.
"""
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset
from torchvision.datasets.utils import extract_archive
from spikingjelly import datasets as sjds
from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS
from spikingjelly.datasets.dvs128_gesture import DVS128Gesture

from .errors import DatasetNotFoundError
from .transforms import EventAugment

SIZE = 48
CIFAR10DVS_TEST_FRACTION = 0.1
_SOURCES = {'dvsgesture': DVS128Gesture, 'cifar10dvs': CIFAR10DVS}


@contextmanager
def _staged(final: Path):
    """A temporary folder beside ``final`` that becomes ``final`` only if the block completes."""
    partial = Path(tempfile.mkdtemp(dir=final.parent, prefix=f'.{final.name}-'))
    try:
        yield partial
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _extracted(name: str, extract: Path) -> bool:
    if name == 'dvsgesture':
        return all((extract / 'DvsGesture' / f).is_file() for f in ('trials_to_train.txt', 'trials_to_test.txt'))
    return all((extract / cls).is_dir() for cls in _CIFAR10DVS_CLASSES)


_CIFAR10DVS_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
_WHERE = {
    'dvsgesture': ('DvsGesture.tar.gz from the DVS128 Gesture page of IBM Research '
                   '(https://research.ibm.com/interactive/dvsgesture/)',
                   "or the archive's DvsGesture/ folder (the .aedat files, their *_labels.csv, "
                   'trials_to_train.txt, trials_to_test.txt) as {root}/extract/DvsGesture/'),
    'cifar10dvs': ('the ten class archives airplane.zip ... truck.zip of CIFAR10-DVS '
                   '(https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671)',
                   'or their extracted folders as {root}/extract/airplane/ ... {root}/extract/truck/ '
                   '(the .aedat files)'),
}


def _prepare_events(name: str, root: Path):
    """Make sure ``root/events_np`` exists, converting from the extracted recordings or the
    verified archives; raise ``DatasetNotFoundError`` (having written nothing) otherwise."""
    source = _SOURCES[name]
    events_np, extract, download = root / 'events_np', root / 'extract', root / 'download'
    if events_np.is_dir():
        return
    if not _extracted(name, extract):
        archives = [(download / f, md5) for f, _, md5 in source.resource_url_md5() if f.endswith(('.zip', '.tar.gz'))]
        missing = [p.name for p, _ in archives if not p.is_file()]
        if missing:
            what, alternative = _WHERE[name]
            raise DatasetNotFoundError(
                f'{name} is not in {root}: place {what} in {download}/ (missing: {", ".join(missing)}), '
                + alternative.format(root=root) + '; then run again. Nothing is downloaded automatically.')
        damaged = [p.name for p, md5 in archives if _md5(p) != md5]
        if damaged:
            raise ValueError(f'{name}: the archive(s) {", ".join(damaged)} in {download} do not match their '
                             'published MD5 checksum (incomplete or damaged download?). They were left as they '
                             'are: replace them with complete copies and run again.')
        with _staged(extract) as partial:
            for archive, _ in archives:
                extract_archive(str(archive), str(partial))
    with _staged(events_np) as partial:
        source.create_events_np_files(str(extract), str(partial))
        if not any(files for _, _, files in os.walk(partial)):
            raise DatasetNotFoundError(f'{name}: no recording in {extract} could be converted; '
                                       'check that the recordings are complete')


def _prepare_frames(name: str, root: Path, T: int):
    """Frame every recording into ``T`` frames by event count, into spikingjelly's cache folder."""
    frames = root / f'frames_number_{T}_split_by_number'
    if frames.is_dir():
        return
    H, W = _SOURCES[name].get_H_W()
    events_np = root / 'events_np'
    with _staged(frames) as partial:
        sjds.create_same_directory_structure(str(events_np), str(partial))
        for folder, _, files in os.walk(events_np):
            out = os.path.join(partial, os.path.relpath(folder, events_np))
            for f in files:
                sjds.integrate_events_file_to_frames_file_by_fixed_frames_number(
                    _SOURCES[name].load_events_np, os.path.join(folder, f), out, 'number', T, H, W)


class FramedEvents(Dataset):
    """spikingjelly frames ``[T, 2, 128, 128]`` -> float ``[T, 2, 48, 48]`` (nearest resize),
    with the paper's augmentation when ``augment``.  ``labels[i]`` is the true label of
    spikingjelly's class index ``i`` (its folder order sorts '10' before '2')."""

    def __init__(self, frames: Dataset, augment: bool, labels=None):
        self.frames, self.labels = frames, labels
        self.augment = EventAugment(SIZE) if augment else None

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, index):
        frames, label = self.frames[index]
        x = torch.from_numpy(np.asarray(frames, dtype=np.float32))
        x = self.augment(x) if self.augment else F.interpolate(x, size=(SIZE, SIZE), mode='nearest')
        return x, int(label) if self.labels is None else self.labels[label]


def _cifar10dvs_split(dataset, train: bool):
    """Deterministic per-class split: the last 10% of each class (in spikingjelly's sorted
    file order) is the test set."""
    by_class = {}
    for index, label in enumerate(dataset.targets):
        by_class.setdefault(label, []).append(index)
    chosen = []
    for indices in by_class.values():
        cut = len(indices) - max(1, round(CIFAR10DVS_TEST_FRACTION * len(indices)))
        chosen += indices[:cut] if train else indices[cut:]
    return Subset(dataset, sorted(chosen))


def event_frames(name: str, root, T: int, train: bool) -> Dataset:
    """The ``train`` or test split of ``'dvsgesture'`` / ``'cifar10dvs'`` as ``([T, 2, 48, 48], label)``."""
    root = Path(root)
    if not root.is_dir():
        what, alternative = _WHERE[name]
        raise DatasetNotFoundError(f'{name}: the data directory {root} does not exist: create it and place {what} '
                                   f'in {root}/download/, ' + alternative.format(root=root))
    _prepare_events(name, root)
    _prepare_frames(name, root, T)
    if name == 'dvsgesture':
        frames = DVS128Gesture(str(root), train=train, data_type='frame', frames_number=T, split_by='number')
        return FramedEvents(frames, augment=train, labels=[int(folder) for folder in frames.classes])
    frames = CIFAR10DVS(str(root), data_type='frame', frames_number=T, split_by='number')
    assert tuple(frames.classes) == _CIFAR10DVS_CLASSES  # alphabetical is CIFAR-10's label order
    return FramedEvents(_cifar10dvs_split(frames, train), augment=False)
