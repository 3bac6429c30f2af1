"""Datasets: the built-in synthetic events, and the paper's datasets in their real on-disk formats."""
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

from sj_ei import datasets
from sj_ei.datasets import events
from sj_ei.datasets.synthetic import CLASSES, SyntheticEvents
from sj_ei.datasets.transforms import Cutout, EventAugment

import dvs_gesture_format as gesture


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob('*'))


def nearest_48(frames):
    """The 48x48 nearest resize of ``[..., 128, 128]``, written out: pixel ``i`` takes source ``floor(i * 128 / 48)``."""
    index = (np.arange(48) * 128) // 48
    return frames[..., index[:, None], index[None, :]]


# ---- DVS128 Gesture ---------------------------------------------------------------------

def expected_frames(recording, label, T):
    """``[T, 2, 128, 128]`` event counts of one gesture as written, split into T frames of equal event count."""
    x, y, p, t = gesture.gesture_events(recording, label)
    frames = np.zeros((T, 2, 128, 128))
    bounds = [len(t) // T * i for i in range(T)] + [len(t)]
    for i in range(T):
        span = slice(bounds[i], bounds[i + 1])
        np.add.at(frames[i], (p[span], y[span], x[span]), 1)
    return frames


def test_tiny_dvs_gesture_in_its_real_format_loads_into_labelled_frames(tmp_path):
    gesture.write_dvs_gesture(tmp_path)
    for train, (recording, _) in zip((True, False), gesture.USERS):
        data = datasets.build('dvsgesture', tmp_path, T=4, train=train)
        assert len(data) == gesture.CLASSES
        labels = []
        for i in range(len(data)):
            x, label = data[i]
            assert x.shape == (4, 2, 48, 48) and x.dtype == torch.float32
            labels.append(label)
            raw, _ = data.frames[i]  # spikingjelly's frames [T, 2, 128, 128], before resizing
            path = data.frames.samples[i][0]
            assert re.search(rf'{recording}_0\.npz$', path)
            # every event of the labelled window, in its polarity channel, row and column, and frame: nothing else
            expected = expected_frames(recording, label, 4)
            np.testing.assert_array_equal(raw, expected)
            unaugmented, _ = events.FramedEvents(data.frames, augment=False, labels=data.labels)[i]
            np.testing.assert_array_equal(unaugmented.numpy(), nearest_48(expected))
        assert sorted(labels) == list(range(gesture.CLASSES))
    assert not [p for p in tree(tmp_path) if '/.' in p or p.startswith('.')]  # no staging folder left
    assert {p.split('/')[0] for p in tree(tmp_path)} == {'extract', 'events_np', 'frames_number_4_split_by_number'}


def test_dvs_gesture_caches_are_reused_and_another_T_gets_its_own(tmp_path):
    gesture.write_dvs_gesture(tmp_path)
    datasets.build('dvsgesture', tmp_path, T=4, train=False)
    stamp = (tmp_path / 'events_np').stat().st_mtime_ns
    data = datasets.build('dvsgesture', tmp_path, T=2, train=False)
    assert (tmp_path / 'events_np').stat().st_mtime_ns == stamp
    assert (tmp_path / 'frames_number_2_split_by_number').is_dir()
    assert data[0][0].shape == (2, 2, 48, 48)


def test_missing_recording_is_named_and_nothing_is_written(tmp_path):
    folder = gesture.write_dvs_gesture(tmp_path)
    (folder / 'user24_lab_labels.csv').unlink()
    before = tree(tmp_path)
    with pytest.raises(datasets.DatasetNotFoundError, match=r'incomplete.*user24_lab_labels\.csv'):
        datasets.build('dvsgesture', tmp_path, T=4, train=True)
    assert tree(tmp_path) == before


def test_damaged_recording_fails_loudly_and_leaves_no_cache(tmp_path):
    folder = gesture.write_dvs_gesture(tmp_path)
    recording = folder / 'user01_fluorescent.aedat'
    recording.write_bytes(recording.read_bytes()[:-3])  # the last event cut short
    before = tree(tmp_path)
    with pytest.raises(ValueError, match=r'user01_fluorescent\.aedat.*damaged'):
        datasets.build('dvsgesture', tmp_path, T=4, train=True)
    assert tree(tmp_path) == before


@pytest.mark.parametrize('name, expected', [
    ('dvsgesture', r'DvsGesture\.tar\.gz.*download.*extract/DvsGesture/'),
    ('cifar10dvs', r'airplane\.zip.*truck\.zip.*extract/airplane/'),
    ('cifar10', r'cifar-10-python\.tar\.gz.*cifar-10-batches-py/ holds data_batch_1'),
    ('cifar100', r'cifar-100-python\.tar\.gz.*cifar-100-python/ holds train, test, meta'),
    ('tinyimagenet', r'tiny-imagenet-200\.zip.*tiny-imagenet-200/ holds wnids\.txt'),
])
def test_missing_dataset_says_what_to_place_where_and_writes_nothing(tmp_path, name, expected):
    with pytest.raises(datasets.DatasetNotFoundError, match=expected) as raised:
        datasets.build(name, tmp_path, T=4, train=True)
    assert isinstance(raised.value, FileNotFoundError)
    assert tree(tmp_path) == []
    with pytest.raises(datasets.DatasetNotFoundError):
        datasets.build(name, tmp_path / 'absent', T=4, train=False)
    assert not (tmp_path / 'absent').exists()


@pytest.mark.parametrize('name, archives', [('dvsgesture', ['DvsGesture.tar.gz']),
                                            ('cifar10dvs', [f'{c}.zip' for c in events.CIFAR10DVS_CLASSES])])
def test_damaged_archive_is_reported_and_kept(tmp_path, name, archives):
    download = tmp_path / 'download'
    download.mkdir()
    for archive in archives:
        (download / archive).write_bytes(b'not the real archive')
    with pytest.raises(ValueError, match=rf'{re.escape(archives[0])}.*MD5.*Nothing was deleted'):
        datasets.build(name, tmp_path, T=4, train=True)
    assert all((download / a).read_bytes() == b'not the real archive' for a in archives)
    assert tree(tmp_path) == ['download'] + [f'download/{a}' for a in sorted(archives)]


# ---- CIFAR10-DVS --------------------------------------------------------------------------

def write_cifar10dvs(root, per_class=12):
    """``root/extract/<class>/cifar10_<class>_<i>.aedat`` in CIFAR10-DVS's format (AEDAT 2.0:
    '#' header lines, then big-endian 32-bit address, timestamp pairs; address bits
    x = 1-7, y = 8-14, polarity = 0).  Returns ``{(class, i): (x_raw, y_raw, pol)}``."""
    rng, written = np.random.default_rng(0), {}
    for c in events.CIFAR10DVS_CLASSES:
        (root / 'extract' / c).mkdir(parents=True)
        for i in range(per_class):
            n = 40
            x, y, pol = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
            words = np.stack([(y << 8) | (x << 1) | pol, np.arange(n) * 10], 1).astype('>u4')
            header = b'#!AER-DAT2.0\r\n# This is a raw AE data file\r\n# created 2016\r\n'
            (root / 'extract' / c / f'cifar10_{c}_{i}.aedat').write_bytes(header + words.tobytes())
            written[c, i] = x, y, pol
    return written


def test_cifar10dvs_reader_matches_spikingjelly(tmp_path, monkeypatch):
    write_cifar10dvs(tmp_path, per_class=1)
    source = tmp_path / 'extract' / 'bird' / 'cifar10_bird_0.aedat'
    events._convert_cifar10dvs(source, tmp_path / 'ours.npz')
    ours = np.load(tmp_path / 'ours.npz')
    # spikingjelly's own reader, run with the numpy-1 meaning of np.fromstring it was written for
    monkeypatch.setattr(np, 'fromstring', lambda data, dtype: np.frombuffer(data, dtype=dtype), raising=False)
    theirs = events.CIFAR10DVS.load_origin_data(str(source))
    for key in 'txyp':
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_tiny_cifar10dvs_in_its_real_format_is_split_per_class(tmp_path):
    written = write_cifar10dvs(tmp_path)
    train = datasets.build('cifar10dvs', tmp_path, T=2, train=True)
    test = datasets.build('cifar10dvs', tmp_path, T=2, train=False)
    assert len(train) == 10 * 11 and len(test) == 10
    # the test recording of every class is the last in natural order (_11, not _9 as in string order)
    subset = test.frames  # a Subset of spikingjelly's CIFAR10DVS
    tests = sorted(subset.dataset.samples[i][0].rsplit('/', 1)[1] for i in subset.indices)
    assert tests == sorted(f'cifar10_{c}_11.npz' for c in events.CIFAR10DVS_CLASSES)
    for i in range(len(test)):
        x, label = test[i]
        raw, _ = subset[i]
        c = events.CIFAR10DVS_CLASSES[label]
        assert f'cifar10_{c}_11.npz' in subset.dataset.samples[subset.indices[i]][0]
        x_raw, y_raw, pol = written[c, 11]
        expected = np.zeros((2, 128, 128))  # spikingjelly's orientation: x = 127 - y_raw, y = 127 - x_raw, p = 1 - pol
        np.add.at(expected, (1 - pol, 127 - x_raw, 127 - y_raw), 1)
        np.testing.assert_array_equal(raw.sum(0), expected)
        assert x.shape == (2, 2, 48, 48)
        np.testing.assert_array_equal(x.numpy(), nearest_48(raw))
    assert sorted({label for _, label in (train[i] for i in range(0, len(train), 11))}) == list(range(10))


# ---- CIFAR and TinyImageNet -----------------------------------------------------------------

def write_cifar(root, name):
    """A tiny copy of the CIFAR python version (pickled dicts of uint8 rows), 4 images per batch."""
    rng = np.random.default_rng(0)
    if name == 'cifar10':
        folder, batches, key = root / 'cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch'], 'labels'
        meta = ('batches.meta', {'label_names': [str(i) for i in range(10)]})
    else:
        folder, batches, key = root / 'cifar-100-python', ['train', 'test'], 'fine_labels'
        meta = ('meta', {'fine_label_names': [str(i) for i in range(100)]})
    folder.mkdir()
    for batch in batches:
        (folder / batch).write_bytes(pickle.dumps({'data': rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                                                   key: [0, 1, 2, 3]}))
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1]))


@pytest.mark.parametrize('name, train_size', [('cifar10', 20), ('cifar100', 4)])
def test_cifar_in_its_real_format(tmp_path, monkeypatch, name, train_size):
    write_cifar(tmp_path, name)
    with pytest.raises(ValueError, match='do.*not match the published MD5'):  # a tiny copy is not the published one
        datasets.build(name, tmp_path, T=4, train=True)
    monkeypatch.setattr('torchvision.datasets.cifar.check_integrity', lambda path, md5=None: True)
    train = datasets.build(name, tmp_path, T=4, train=True)
    test = datasets.build(name, tmp_path, T=4, train=False)
    assert len(train) == train_size and len(test) == 4
    image, label = test[1]
    assert image.shape == (3, 32, 32) and label == 1
    assert train[1][0].shape == (3, 32, 32)


def write_tinyimagenet(root):
    folder = root / 'tiny-imagenet-200'
    wnids = ['n02', 'n01', 'n03']
    (folder / 'val' / 'images').mkdir(parents=True)
    (folder / 'wnids.txt').write_text('\n'.join(wnids) + '\n')
    image = Image.new('RGB', (64, 64), (120, 30, 200))
    for wnid in wnids:
        (folder / 'train' / wnid / 'images').mkdir(parents=True)
        (folder / 'train' / wnid / f'{wnid}_boxes.txt').write_text('')
        for i in range(2):
            image.save(folder / 'train' / wnid / 'images' / f'{wnid}_{i}.JPEG')
    rows = []
    for i, wnid in enumerate(['n03', 'n01', 'n03', 'n02']):
        image.save(folder / 'val' / 'images' / f'val_{i}.JPEG')
        rows.append(f'val_{i}.JPEG\t{wnid}\t0\t0\t63\t63')
    (folder / 'val' / 'val_annotations.txt').write_text('\n'.join(rows) + '\n')
    return folder


def test_tinyimagenet_in_its_distributed_layout(tmp_path):
    folder = write_tinyimagenet(tmp_path)
    before = tree(tmp_path)
    train = datasets.build('tinyimagenet', tmp_path, T=4, train=True)
    test = datasets.build('tinyimagenet', tmp_path, T=4, train=False)
    assert len(train) == 6 and len(test) == 4
    assert [label for _, label in test.samples] == [2, 0, 2, 1]  # sorted wnids: n01, n02, n03
    image, label = test[0]
    assert image.shape == (3, 64, 64) and label == 2
    assert train[0][0].shape == (3, 64, 64)
    assert tree(tmp_path) == before  # read in place
    (folder / 'wnids.txt').write_text('n01\nn02\nn03\nn04\n')
    with pytest.raises(datasets.DatasetNotFoundError, match='missing n04'):
        datasets.build('tinyimagenet', tmp_path, T=4, train=True)


# ---- synthetic events -----------------------------------------------------------------------

def test_synthetic_events_are_deterministic_balanced_and_event_shaped():
    data = SyntheticEvents(num_samples=16, T=4, size=32, seed=3)
    x, label = data[5]
    assert x.shape == (4, 2, 32, 32) and x.dtype == torch.float32 and label == 5
    assert torch.equal(x, SyntheticEvents(16, T=4, size=32, seed=3)[5][0])
    assert not torch.equal(x, SyntheticEvents(16, T=4, size=32, seed=4)[5][0])
    assert (x >= 0).all() and x.sum() > 0 and torch.equal(x, x.round())
    assert sorted(data[i][1] for i in range(16)) == sorted(list(range(len(CLASSES))) * 2)
    with pytest.raises(IndexError):
        data[16]


def test_synthetic_through_build_and_info():
    train = datasets.build('synthetic', None, T=3, train=True, num_samples=24, num_test_samples=8, size=16)
    test = datasets.build('synthetic', None, T=3, train=False, num_samples=24, num_test_samples=8, size=16)
    assert len(train) == 24 and len(test) == 8
    assert train[0][0].shape == (3, 2, 16, 16)
    assert not torch.equal(train[0][0], test[0][0])  # the splits come from different seeds
    assert datasets.info('synthetic', size=16) == dict(num_classes=8, in_channels=2, size=(16, 16), events=True)
    assert datasets.info('dvsgesture') == dict(num_classes=11, in_channels=2, size=(48, 48), events=True)
    with pytest.raises(ValueError, match='no option noise'):
        datasets.build('synthetic', None, T=3, train=True, noise=0.1)
    with pytest.raises(ValueError, match='unknown dataset'):
        datasets.build('mnist', None, T=3, train=True)


def lookup_accuracy(feature_train, y_train, feature_test, y_test, bins=8):
    """Test accuracy of the best one-feature classifier: per feature (column), quantile bins ->
    the training majority class; the feature is the one most accurate on the training half."""
    edges = torch.quantile(feature_train, torch.linspace(0, 1, bins + 1)[1:-1], dim=0)  # [bins - 1, F]
    b_train = (feature_train[:, None] > edges).sum(1)                                    # [N, F] bin of each value
    b_test = (feature_test[:, None] > edges).sum(1)
    F, C = feature_train.shape[1], len(CLASSES)
    cell = (torch.arange(F) * bins + b_train) * C + y_train[:, None]
    table = torch.bincount(cell.flatten(), minlength=F * bins * C).view(F, bins, C).argmax(2)  # [F, bins]
    column = torch.arange(F)
    train_accuracy = (table[column, b_train] == y_train[:, None]).float().mean(0)
    best = int(train_accuracy.argmax())
    return (table[best, b_test[:, best]] == y_test).float().mean().item()


def test_no_pixel_nor_event_count_gives_the_class_away():
    data = SyntheticEvents(num_samples=400, T=4, size=32, seed=0)
    x = torch.stack([data[i][0] for i in range(len(data))])  # [N, T, 2, H, W]
    y = torch.tensor([data[i][1] for i in range(len(data))])
    features = {'pixel': x.sum(1).flatten(1), 'total': x.sum((1, 2, 3, 4))[:, None],
                'ON fraction': (x[:, :, 1].sum((1, 2, 3)) / x.sum((1, 2, 3, 4)))[:, None],
                'frame x polarity counts': x.sum((3, 4)).flatten(1)}
    for name, f in features.items():
        accuracy = lookup_accuracy(f[:200], y[:200], f[200:], y[200:])
        assert accuracy < 2 / len(CLASSES), (name, accuracy)  # chance: 1/8


# ---- augmentations --------------------------------------------------------------------------

def test_cutout_keeps_the_shape_and_zeroes_one_square():
    torch.manual_seed(0)
    for _ in range(20):
        out = Cutout(8)(torch.ones(3, 32, 32))
        assert out.shape == (3, 32, 32)
        rows, cols = (out[0] == 0).nonzero(as_tuple=True)
        assert 0 < len(rows) <= 64 and (out[1:] == out[0]).all()
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle


def test_event_augmentation_keeps_the_shape_and_deletes_whole_frames():
    torch.manual_seed(0)
    x = torch.arange(1, 9, dtype=torch.float32)[:, None, None, None].expand(8, 2, 64, 64)  # frame t holds t + 1
    deleted_any = False
    for _ in range(30):
        out = EventAugment(48)(x)
        assert out.shape == (8, 2, 48, 48)
        values = out.amax((1, 2, 3))
        assert torch.equal(out.amin((1, 2, 3)), values)            # every output frame is one input frame
        assert (values.diff() >= 0).all()                           # in time order
        assert 8 - len(values.unique()) <= 8 // 4                   # at most T // 4 frames deleted
        deleted_any |= len(values.unique()) < 8
    assert deleted_any
