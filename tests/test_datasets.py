"""Datasets: the built-in synthetic events, and the paper's datasets in their real on-disk formats."""
import contextlib
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spikingjelly.datasets import split_to_train_test_set

from sj_ei import _compat, datasets
from sj_ei.datasets import aedat, events
from sj_ei.datasets.synthetic import CLASSES, SyntheticEvents
from sj_ei.datasets.transforms import Cutout, RandomErase, RandomRoll, event_transform

import formats
from formats import write_cifar, write_cifar10dvs, write_dvs_gesture, write_tinyimagenet


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob('*'))


def resized_48(frames):
    """``[T, 2, 128, 128] -> [T, 2, 48, 48]``: bilinear resize with antialiasing (torchvision's default
    ``Resize`` on tensors, the authors' pipeline): each output pixel averages the events under it."""
    return F.interpolate(torch.as_tensor(frames, dtype=torch.float32), size=(48, 48), mode='bilinear',
                         antialias=True, align_corners=False)


# ---- DVS128 Gesture ---------------------------------------------------------------------

def expected_frames(recording, label, T):
    """``[T, 2, 128, 128]`` event counts of one gesture as written, split into T frames of equal event count."""
    x, y, p, t = formats.gesture_events(recording, label)
    frames = np.zeros((T, 2, 128, 128))
    bounds = [len(t) // T * i for i in range(T)] + [len(t)]
    for i in range(T):
        span = slice(bounds[i], bounds[i + 1])
        np.add.at(frames[i], (p[span], y[span], x[span]), 1)
    return frames


def test_tiny_dvs_gesture_in_its_real_format_loads_into_labelled_frames(tmp_path):
    write_dvs_gesture(tmp_path)
    for train, (recording, _) in zip((True, False), formats.GESTURE_USERS):
        data = datasets.build('dvsgesture', tmp_path, T=4, train=train)
        assert len(data) == formats.GESTURE_CLASSES
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
            if not train:  # the test split is resized only, and keeps every event's mass
                torch.testing.assert_close(x, resized_48(expected))
                assert x.sum().item() * (128 / 48) ** 2 == pytest.approx(expected.sum(), rel=0.02)
        assert sorted(labels) == list(range(formats.GESTURE_CLASSES))
    plain = datasets.build('dvsgesture', tmp_path, T=4, train=True, augment=False)  # the training split unaugmented
    for i in (0, len(plain) - 1):
        torch.testing.assert_close(plain[i][0], resized_48(plain.frames[i][0]))
    assert not [p for p in tree(tmp_path) if '/.' in p or p.startswith('.')]  # no staging folder left
    assert {p.split('/')[0] for p in tree(tmp_path)} == {'extract', 'events_np', 'frames_number_4_split_by_number'}


def test_aedat3_reader_matches_spikingjelly(tmp_path):
    """Every polarity event of a DVS128 Gesture recording as spikingjelly's reader gives it (its
    per-event Python loop), values and order."""
    folder = write_dvs_gesture(tmp_path)
    source = folder / f'{formats.GESTURE_USERS[0][0]}.aedat'
    if _compat.SJ_MAJOR == 0:
        from spikingjelly.datasets import load_aedat_v3
    else:
        from spikingjelly.datasets.utils import load_aedat_v3
    ours, theirs = aedat.read_aedat3(source), load_aedat_v3(str(source))
    assert len(ours['t']) > 1000
    for key in 'txyp':
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_a_cut_aedat_file_is_a_value_error_naming_it(tmp_path):
    folder = write_dvs_gesture(tmp_path)
    source = folder / f'{formats.GESTURE_USERS[0][0]}.aedat'
    source.write_bytes(source.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r'user01_fluorescent\.aedat: an AEDAT 3\.1 polarity packet .* whole events'):
        aedat.read_aedat3(source)
    write_cifar10dvs(tmp_path, per_class=1)
    source = tmp_path / 'extract' / 'bird' / 'cifar10_bird_0.aedat'
    source.write_bytes(source.read_bytes()[:-4])
    with pytest.raises(ValueError, match=r'cifar10_bird_0\.aedat: the \d+ bytes after the AEDAT 2\.0 header'):
        aedat.read_cifar10dvs(source)


def test_dvs_gesture_caches_are_reused_and_another_T_gets_its_own(tmp_path):
    write_dvs_gesture(tmp_path)
    datasets.build('dvsgesture', tmp_path, T=4, train=False)
    stamp = (tmp_path / 'events_np').stat().st_mtime_ns
    data = datasets.build('dvsgesture', tmp_path, T=2, train=False)
    assert (tmp_path / 'events_np').stat().st_mtime_ns == stamp
    assert (tmp_path / 'frames_number_2_split_by_number').is_dir()
    assert data[0][0].shape == (2, 2, 48, 48)


def test_a_frame_cache_of_another_size_is_refused_with_what_to_do(tmp_path):
    write_dvs_gesture(tmp_path)
    data = datasets.build('dvsgesture', tmp_path, T=4, train=False)
    path = data.frames.samples[0][0]
    np.savez_compressed(path, frames=resized_48(np.load(path)['frames']).numpy())  # frames made at 48x48
    with pytest.raises(ValueError, match=r"frames of \(48, 48\) pixels .* sensor's 128x128.*Move the frames_number_"):
        data[0]


def test_missing_recording_is_named_and_nothing_is_written(tmp_path):
    folder = write_dvs_gesture(tmp_path)
    (folder / 'user24_lab_labels.csv').unlink()
    before = tree(tmp_path)
    with pytest.raises(datasets.DatasetNotFoundError, match=r'incomplete.*user24_lab_labels\.csv'):
        datasets.build('dvsgesture', tmp_path, T=4, train=True)
    assert tree(tmp_path) == before


def test_damaged_recording_fails_loudly_and_leaves_no_cache(tmp_path):
    folder = write_dvs_gesture(tmp_path)
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

def test_cifar10dvs_reader_matches_spikingjelly(tmp_path, monkeypatch):
    write_cifar10dvs(tmp_path, per_class=1)
    source = tmp_path / 'extract' / 'bird' / 'cifar10_bird_0.aedat'
    events._convert_cifar10dvs(source, tmp_path / 'ours.npz')
    ours = np.load(tmp_path / 'ours.npz')
    # spikingjelly's own reader (its name differs by release), run with the numpy-1 meaning of
    # np.fromstring it was written for
    from spikingjelly.datasets import cifar10_dvs
    monkeypatch.setattr(np, 'fromstring', lambda data, dtype: np.frombuffer(data, dtype=dtype), raising=False)
    theirs = (cifar10_dvs.CIFAR10DVS.load_origin_data(str(source)) if _compat.SJ_MAJOR == 0 else
              cifar10_dvs._load_origin_data(source))
    for key in 'txyp':
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_tiny_cifar10dvs_in_its_real_format_is_split_per_class(tmp_path):
    written = write_cifar10dvs(tmp_path, per_class=12)
    train = datasets.build('cifar10dvs', tmp_path, T=2, train=True)
    test = datasets.build('cifar10dvs', tmp_path, T=2, train=False)
    assert len(train) == 10 * 11 and len(test) == 10
    # the authors' split: spikingjelly's split_to_train_test_set(0.9) over the file names in string order,
    # so the test recording of every class is _9 (after _0, _1, _10, _11, _2 ... _8)
    subset = test.frames  # a Subset of spikingjelly's CIFAR10DVS
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        theirs = split_to_train_test_set(0.9, subset.dataset, 10)
    assert (train.frames.indices, subset.indices) == (theirs[0].indices, sorted(theirs[1].indices))
    tests = sorted(subset.dataset.samples[i][0].rsplit('/', 1)[1] for i in subset.indices)
    assert tests == sorted(f'cifar10_{c}_9.npz' for c in events.CIFAR10DVS_CLASSES)
    for i in range(len(test)):
        x, label = test[i]
        raw, _ = subset[i]
        c = events.CIFAR10DVS_CLASSES[label]
        assert f'cifar10_{c}_9.npz' in subset.dataset.samples[subset.indices[i]][0]
        x_raw, y_raw, pol = written[c, 9]
        expected = np.zeros((2, 128, 128))  # spikingjelly's orientation: x = 127 - y_raw, y = 127 - x_raw, p = 1 - pol
        np.add.at(expected, (1 - pol, 127 - x_raw, 127 - y_raw), 1)
        np.testing.assert_array_equal(raw.sum(0), expected)
        assert x.shape == (2, 2, 48, 48)
        torch.testing.assert_close(x, resized_48(raw))
    assert sorted({label for _, label in (train[i] for i in range(0, len(train), 11))}) == list(range(10))


# ---- CIFAR and TinyImageNet -----------------------------------------------------------------

@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_cifar_in_its_real_format_gives_the_pixels_in_0_1_unnormalized(tmp_path, monkeypatch, name):
    folder = write_cifar(tmp_path, name, per_batch=4, test=6)
    with pytest.raises(ValueError, match='do.*not match the published MD5'):  # a tiny copy is not the published one
        datasets.build(name, tmp_path, T=4, train=True)
    monkeypatch.setattr('torchvision.datasets.cifar.check_integrity', lambda path, md5=None: True)
    train = datasets.build(name, tmp_path, T=4, train=True)
    test = datasets.build(name, tmp_path, T=4, train=False)
    assert len(train) == 20 and len(test) == 6
    with open(folder / ('test_batch' if name == 'cifar10' else 'test'), 'rb') as f:
        batch = pickle.load(f, encoding='latin1')
    for i in range(6):  # the test split: exactly the stored bytes / 255 (ToTensor, no mean/std normalization)
        image, label = test[i]
        assert torch.equal(image, torch.from_numpy(batch['data'][i]).view(3, 32, 32).float() / 255)
        assert label == batch['labels' if name == 'cifar10' else 'fine_labels'][i]
    erase = train.transform.transforms[-1]
    assert isinstance(erase, RandomErase) and erase.p == 0.5  # the authors' cutout, on half the images
    for i in range(len(train)):  # augmented (crop with zero padding, flip, cutout), still in [0, 1]
        image, _ = train[i]
        assert image.shape == (3, 32, 32) and image.min() >= 0 and image.max() <= 1
    plain = datasets.build(name, tmp_path, T=4, train=True, augment=False)  # augment: false, the stored pixels
    with open(folder / ('data_batch_1' if name == 'cifar10' else 'train'), 'rb') as f:
        batch = pickle.load(f, encoding='latin1')
    assert torch.equal(plain[1][0], torch.from_numpy(batch['data'][1]).view(3, 32, 32).float() / 255)


def test_written_images_look_like_photos(tmp_path, monkeypatch):
    """The test images are not noise: channel means like CIFAR-10's, bright shapes, some dark scenes."""
    write_cifar(tmp_path, 'cifar10', per_batch=1, test=300)
    monkeypatch.setattr('torchvision.datasets.cifar.check_integrity', lambda path, md5=None: True)
    test = datasets.build('cifar10', tmp_path, T=4, train=False)
    x = torch.stack([test[i][0] for i in range(len(test))])  # [N, 3, 32, 32]
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.tensor(formats.CIFAR10_MEANS), atol=0.04, rtol=0)
    brightness = x.mean((1, 2, 3))
    assert 0.1 < (brightness < 0.2).float().mean() < 0.4  # mostly dark scenes
    assert (x.amax((1, 2, 3)) > 0.7).all()  # every image has a bright shape or stroke
    neighbours = torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.8  # neighbouring pixels are alike, as in photos (uniform noise: 0)


def test_tinyimagenet_in_its_distributed_layout(tmp_path):
    folder = write_tinyimagenet(tmp_path)
    before = tree(tmp_path)
    train = datasets.build('tinyimagenet', tmp_path, T=4, train=True)
    test = datasets.build('tinyimagenet', tmp_path, T=4, train=False)
    assert len(train) == 12 and len(test) == 5
    # sorted wnids: n01443537, n02124075, n04067472, n09246464
    assert [label for _, label in test.samples] == [2, 0, 2, 1, 3]
    image, label = test[0]
    assert image.shape == (3, 32, 32) and label == 2 and image.min() >= 0 and image.max() <= 1
    assert train[0][0].shape == (3, 32, 32)
    assert tree(tmp_path) == before  # read in place
    (folder / 'wnids.txt').write_text('\n'.join(formats.TINYIMAGENET_WNIDS + ('n99999999',)) + '\n')
    with pytest.raises(datasets.DatasetNotFoundError, match='missing n99999999'):
        datasets.build('tinyimagenet', tmp_path, T=4, train=True)


def pixels(image) -> torch.Tensor:
    """A PIL image as ``ToTensor()`` gives it: ``[3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


def test_tinyimagenet_default_config_is_the_authors_32x32_pipeline_and_image_size_64_todays(tmp_path):
    """The default of configs/tinyimagenet_resnet18.yaml (and its batch-norm twin) trains and tests at 32x32
    as the authors' get_tinyimagenet does; image_size: 64 is the native-size pipeline; augment: false none."""
    from PIL import Image
    from sj_ei import config as cfg
    from torchvision import transforms as T
    write_tinyimagenet(tmp_path)
    root = Path(__file__).resolve().parents[1]
    configs = [cfg.load(root / 'configs' / path) for path in ('tinyimagenet_resnet18.yaml', 'bn/tinyimagenet_resnet18.yaml')]
    for config in configs:
        assert (config['image_size'], config['augment']) == (32, True)
    config = {**configs[0], 'data_dir': str(tmp_path)}
    train, test = cfg.dataset(config, True), cfg.dataset(config, False)
    crop, flip, jitter, to_tensor, erase = train.transform.transforms
    assert isinstance(crop, T.RandomResizedCrop) and crop.size == (32, 32) and crop.scale == (0.08, 1.0)
    assert isinstance(flip, T.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(jitter, T.ColorJitter)  # brightness, contrast, saturation 0.4, hue 0.1
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.6, 1.4),) * 3 + ((-0.1, 0.1),)
    assert isinstance(to_tensor, T.ToTensor) and isinstance(erase, RandomErase) and erase.p == 0.5
    torch.manual_seed(0)
    images = torch.stack([train[i][0] for i in range(len(train))])
    assert images.shape == (12, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    # test time: Resize(32) of the 64x64 JPEG (PIL's bilinear resize with its antialiasing), nothing random
    for i, (path, label) in enumerate(test.samples):
        image, got = test[i]
        assert got == label and torch.equal(image, pixels(Image.open(path).convert('RGB').resize((32, 32), Image.BILINEAR)))
    assert datasets.info('tinyimagenet', image_size=32)['size'] == (32, 32)
    # colour jitter changes colours, not only places: the same crops and flips with and without it differ
    changes = []
    for seed, (path, _) in enumerate(train.samples):
        source = Image.open(path).convert('RGB')
        torch.manual_seed(seed)
        jittered = T.Compose([crop, flip, jitter, to_tensor])(source)
        torch.manual_seed(seed)
        plain = T.Compose([crop, flip, to_tensor])(source)
        changes.append((jittered - plain).abs().mean().item())
    assert min(changes) > 0 and sum(changes) / len(changes) > 0.02, changes

    native = {**config, 'image_size': 64}
    train, test = cfg.dataset(native, True), cfg.dataset(native, False)
    crop, flip, to_tensor, erase = train.transform.transforms  # random crop 64 pad 8, flip, cutout: no jitter
    assert isinstance(crop, T.RandomCrop) and crop.size == (64, 64) and crop.padding == 8
    assert isinstance(flip, T.RandomHorizontalFlip) and isinstance(erase, RandomErase)
    assert train[0][0].shape == (3, 64, 64)
    for i, (path, _) in enumerate(test.samples):  # the stored pixels, unresized
        assert torch.equal(test[i][0], pixels(Image.open(path).convert('RGB')))
    assert datasets.info('tinyimagenet', image_size=64)['size'] == (64, 64)

    plain = cfg.dataset({**config, 'augment': False}, True)  # training split without augmentation: test-time pixels
    for i in (0, 5, 11):
        path = plain.samples[i][0]
        assert torch.equal(plain[i][0], pixels(Image.open(path).convert('RGB').resize((32, 32), Image.BILINEAR)))
    with pytest.raises(ValueError, match="image_size must be 32 .* or 64"):
        datasets.build('tinyimagenet', tmp_path, T=4, train=True, image_size=48)
    with pytest.raises(ValueError, match="dataset 'cifar10' has no option image_size"):
        datasets.build('cifar10', tmp_path, T=4, train=True, image_size=64)


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

def test_random_erase_paints_one_red_rectangle_on_half_the_images_as_the_authors_cutout():
    """torchtoolbox's Cutout() as the authors call it: p 0.5, 2-40% of the area, aspect 0.4-2.5, the
    PIL colour (v, 0, 0) of an integer v in 0..255."""
    torch.manual_seed(0)
    erased, shares, levels = 0, [], set()
    for _ in range(400):
        image = torch.full((3, 32, 32), 0.5)
        out = RandomErase()(image)
        assert torch.equal(image, torch.full((3, 32, 32), 0.5))  # the input is not modified
        changed = (out != 0.5).any(0)
        if not changed.any():
            continue
        erased += 1
        rows, cols = changed.nonzero(as_tuple=True)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width  # one rectangle
        shares.append(len(rows) / 32 ** 2)
        patch = out[:, changed]
        assert (patch[1:] == 0).all() and (patch[0] == patch[0, 0]).all()  # (v, 0, 0)
        levels.add(round(float(patch[0, 0]) * 255, 3))
    assert 160 < erased < 240  # about half
    assert 0.01 <= min(shares) and max(shares) <= 0.4 and 0.15 < sum(shares) / len(shares) < 0.25
    assert all(v == int(v) and 0 <= v <= 255 for v in levels) and len(levels) > 100


def test_cutout_zeroes_one_16x16_square_in_every_frame_and_channel():
    torch.manual_seed(0)
    sizes = set()
    for _ in range(50):
        out = Cutout(16)(torch.ones(4, 2, 48, 48))
        zero = out == 0
        assert (zero == zero[0, 0]).all()  # the same square in every frame and channel
        rows, cols = zero[0, 0].nonzero(as_tuple=True)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width and 8 <= height <= 16 and 8 <= width <= 16  # a square, clipped at the border
        sizes.add(len(rows))
    assert 256 in sizes and min(sizes) < 256


def test_roll_moves_a_pixel_by_up_to_5_in_each_direction():
    torch.manual_seed(0)
    x = torch.zeros(3, 2, 48, 48)
    x[:, :, 20, 30] = 1
    shifts = set()
    for _ in range(300):
        out = RandomRoll(5)(x)
        _, _, rows, cols = out.nonzero(as_tuple=True)
        assert len(rows) == 6 and len(set(rows.tolist())) == len(set(cols.tolist())) == 1  # one pixel, all frames
        shifts.add((int(rows[0]) - 20, int(cols[0]) - 30))
    assert {dy for dy, _ in shifts} == {dx for _, dx in shifts} == set(range(-5, 6))
    assert len(shifts) > 80  # the two directions drawn independently


def test_rotation_of_cifar10dvs_turns_a_pixel_about_the_centre_by_up_to_30_degrees():
    roll, rotation, cutout = event_transform('cifar10dvs', True).transforms[-1].transforms
    torch.manual_seed(0)
    x = torch.zeros(2, 2, 48, 48)
    x[..., 23:25, 38:40] = 1  # 15 pixels right of the centre (23.5, 23.5)
    angles = []
    for _ in range(100):
        out = rotation(x)
        assert (out == out[0, 0]).all()
        weights = out[0, 0]
        y, x_ = (weights.nonzero().float() + 0.0).T
        cy, cx = y.mean() - 23.5, x_.mean() - 23.5
        assert float(torch.hypot(cy, cx)) == pytest.approx(15, abs=1.5)
        angles.append(float(torch.rad2deg(torch.atan2(-cy, cx))))  # counter-clockwise, rows grow downwards
    assert max(map(abs, angles)) <= 33 and min(angles) < -20 and max(angles) > 20


def test_resize_to_48_averages_events_instead_of_dropping_them():
    frames = torch.zeros(128, 2, 128, 128)
    frames[torch.arange(128), 0, 64, torch.arange(128)] = 1  # frame t: one event in column t
    out = event_transform('dvsgesture', False)(frames)
    assert out.shape == (128, 2, 48, 48)
    mass = out.sum((1, 2, 3)) * (128 / 48) ** 2  # every event keeps its mass (a nearest resize keeps 48 of 128)
    torch.testing.assert_close(mass[8:-8], torch.ones(112), atol=0.02, rtol=0)
    assert (mass > 0.5).all()
    torch.testing.assert_close(event_transform('cifar10dvs', False)(frames), out)


@pytest.mark.parametrize('name', ['dvsgesture', 'cifar10dvs'])
def test_event_training_augmentation_moves_every_frame_alike(name):
    """A constant scene stays constant through crop, resize and flip; whatever is zeroed (CIFAR10-DVS:
    a rotation's corners or a cutout's square) is zeroed in every frame; a left-right split is flipped
    about half the time."""
    torch.manual_seed(0)
    transform = event_transform(name, True)
    t = torch.arange(1, 3, dtype=torch.float32)[:, None, None, None]
    kinds, flipped = set(), 0
    left = torch.zeros(1, 2, 128, 128)
    left[..., :64] = 1
    for _ in range(40):
        out = transform(t.expand(2, 2, 128, 128).clone())
        assert out.shape == (2, 2, 48, 48)
        mask = out / t
        torch.testing.assert_close(mask, mask[:1].expand_as(mask))  # one draw for all frames (no temporal deletion)
        zero = mask[0, 0] < 0.5
        if not zero.any():
            kinds.add('none')
            torch.testing.assert_close(mask, torch.ones_like(mask))
        else:
            rows, cols = zero.nonzero(as_tuple=True)
            if len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) and len(rows) <= 256:
                kinds.add('square')
            else:
                distance = torch.hypot(rows - 23.5, cols - 23.5)
                assert distance.min() > 20, 'rotation leaves the centre untouched'
                kinds.add('corners')
        out = transform(left)
        flipped += bool(out[0, 0, 24, :6].sum() < out[0, 0, 24, -6:].sum())
    assert kinds == ({'none'} if name == 'dvsgesture' else {'none', 'square', 'corners'})
    assert 8 < flipped < 32
