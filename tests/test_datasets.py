"""Datasets: the built-in synthetic events and the real formats of the paper's datasets."""
import pickle

import numpy as np
import pytest
import torch

from sj_ei import datasets
from sj_ei.datasets.synthetic import CLASSES, SyntheticEvents

from dvs_gesture_format import write_dvs_gesture


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob('*'))


def test_tiny_dvs_gesture_in_its_real_format_loads_into_labelled_frames(tmp_path):
    write_dvs_gesture(tmp_path)
    for train in (True, False):
        data = datasets.build('dvsgesture', tmp_path, T=4, train=train)
        assert len(data) == 11
        labels = set()
        for x, label in (datasets.events.FramedEvents(data.frames, False, data.labels)[i] for i in range(len(data))):
            assert x.shape == (4, 2, 48, 48) and x.dtype == torch.float32
            # polarity label % 2, x in the left half for even labels (see dvs_gesture_format)
            on_channel, off_channel = x[:, label % 2], x[:, 1 - label % 2]
            assert on_channel.sum() > 0 and off_channel.sum() == 0
            half = slice(0, 24) if label % 2 == 0 else slice(24, 48)
            assert on_channel[..., half].sum() == on_channel.sum()
            labels.add(label)
        assert labels == set(range(11))
    augmented, _ = datasets.build('dvsgesture', tmp_path, T=4, train=True)[0]
    assert augmented.shape == (4, 2, 48, 48)
    assert not any(p.name.startswith('.') for p in tmp_path.iterdir())  # no staging folder left


def test_missing_dataset_says_what_to_place_where_and_writes_nothing(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match=r'DvsGesture\.tar\.gz.*download'):
        datasets.build('dvsgesture', tmp_path, T=4, train=True)
    with pytest.raises(datasets.DatasetNotFoundError, match=r'airplane\.zip'):
        datasets.build('cifar10dvs', tmp_path, T=4, train=True)
    with pytest.raises(datasets.DatasetNotFoundError, match=r'cifar-10-batches-py.*data_batch_1'):
        datasets.build('cifar10', tmp_path, T=4, train=True)
    assert tree(tmp_path) == []


def test_damaged_archive_is_reported_and_kept(tmp_path):
    download = tmp_path / 'download'
    download.mkdir()
    (download / 'DvsGesture.tar.gz').write_bytes(b'not the real archive')
    with pytest.raises(ValueError, match='MD5'):
        datasets.build('dvsgesture', tmp_path, T=4, train=True)
    assert (download / 'DvsGesture.tar.gz').read_bytes() == b'not the real archive'
    assert tree(tmp_path) == ['download', 'download/DvsGesture.tar.gz']


def test_cifar10_in_its_real_format(tmp_path, monkeypatch):
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        batch = {'data': rng.integers(0, 256, (4, 3072), dtype=np.uint8), 'labels': [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / 'batches.meta').write_bytes(pickle.dumps({'label_names': [str(i) for i in range(10)]}))
    # torchvision verifies the published checksums; this tiny copy cannot match them
    monkeypatch.setattr('torchvision.datasets.cifar.check_integrity', lambda path, md5=None: True)
    train = datasets.build('cifar10', tmp_path, T=4, train=True)
    test = datasets.build('cifar10', tmp_path, T=4, train=False)
    assert len(train) == 20 and len(test) == 4
    image, label = train[1]
    assert image.shape == (3, 32, 32) and label == 1


def test_synthetic_events_are_deterministic_balanced_and_event_shaped():
    data = SyntheticEvents(num_samples=14, T=4, size=32, seed=3)
    x, label = data[5]
    assert x.shape == (4, 2, 32, 32)
    assert torch.equal(x, SyntheticEvents(14, T=4, size=32, seed=3)[5][0])
    assert not torch.equal(x, SyntheticEvents(14, T=4, size=32, seed=4)[5][0])
    assert (x >= 0).all() and x.sum() > 0 and torch.equal(x, x.round())
    assert sorted(data[i][1] for i in range(14)) == sorted(list(range(len(CLASSES))) * 2)


def test_no_single_pixel_gives_the_class_away():
    data = SyntheticEvents(num_samples=256, T=4, size=32, seed=0)
    x = torch.stack([data[i][0] for i in range(len(data))]).sum(1).flatten(1)  # [N, 2*H*W]
    y = torch.tensor([data[i][1] for i in range(len(data))])
    best = 0.0
    for pixel in x.std(0).argsort(descending=True)[:20]:
        for threshold in x[:, pixel].unique():
            active = x[:, pixel] > threshold
            for side in (active, ~active):
                if side.any():  # the best rule "class c iff pixel on one side of a threshold"
                    counts = torch.bincount(y[side], minlength=len(CLASSES))
                    best = max(best, (counts.max() + (y[~side] != counts.argmax()).sum()).item() / len(y))
    assert best < 0.9  # a one-pixel threshold rule cannot separate one class from the rest well


def test_cutout_keeps_the_shape_and_zeroes_a_square():
    from sj_ei.datasets.transforms import Cutout
    torch.manual_seed(0)
    out = Cutout(8)(torch.ones(3, 32, 32))
    assert out.shape == (3, 32, 32) and 0 < (out == 0).sum() <= 3 * 64
