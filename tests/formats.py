"""Writers of tiny copies of the paper's datasets in their real on-disk formats, with
content that looks like the real thing.

- Images (CIFAR-10/100, TinyImageNet): a class-dependent bright shape plus a few strokes
  on a textured colour gradient or, for about a quarter of the images, a dark background;
  channel means near real photos' (CIFAR-10: 0.49, 0.48, 0.45).  ``image(rng, label, side)``.
- Events (DVS128 Gesture, CIFAR10-DVS): what a DVS sees when a scene moves, ON events
  where a pixel brightens and OFF events where it darkens between two moments
  (``motion_events``), plus a little sensor noise: a hand-sized blob waving along a
  class-dependent direction (gestures); a class-dependent image shifted along the small
  closed path of the recording monitor (CIFAR10-DVS).

Every writer is deterministic, so a test can recompute what a sample must contain.
"""
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# ---- images -----------------------------------------------------------------------------

DARK_FRACTION = 0.25
CIFAR10_MEANS = (0.4914, 0.4822, 0.4465)


def image(rng, label: int, side: int) -> np.ndarray:
    """``[side, side, 3]`` uint8: shape ``label % 4`` (disk, box, triangle, ring) in a colour set by
    ``label``, at a random place and size, 1-3 random bright strokes, on a background that is
    a textured colour gradient or (probability ``DARK_FRACTION``) nearly black."""
    if rng.random() < DARK_FRACTION:
        background = rng.uniform(0.0, 0.08, 3)[None, None] + rng.normal(0, 0.02, (side, side, 1))
    else:
        ramp = np.linspace(-1, 1, side)
        direction = rng.normal(size=2)
        gradient = (ramp[:, None] * direction[0] + ramp[None, :] * direction[1])[..., None] * 0.12
        coarse = rng.normal(0, 0.08, (4, 4, 3)).repeat(side // 4, 0).repeat(side // 4, 1)
        background = np.clip(rng.normal((0.59, 0.56, 0.51), 0.12), 0.1, 0.9) + gradient + coarse
        background += rng.normal(0, 0.03, (side, side, 1))
    canvas = Image.fromarray((np.clip(background, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    hue = np.array([(label * 37) % 256, (label * 91 + 80) % 256, (label * 53 + 160) % 256])
    colour = tuple(int(v) for v in np.clip(0.55 * hue + 110, 0, 255))
    r = side * rng.uniform(0.15, 0.3)
    cx, cy = rng.uniform(r, side - r, 2)
    box = [cx - r, cy - r, cx + r, cy + r]
    kind = label % 4
    if kind == 0:
        draw.ellipse(box, fill=colour)
    elif kind == 1:
        draw.rectangle(box, fill=colour)
    elif kind == 2:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        draw.ellipse(box, outline=colour, width=max(2, side // 16))
    for _ in range(rng.integers(1, 4)):
        draw.line([tuple(rng.uniform(0, side, 2)), tuple(rng.uniform(0, side, 2))],
                  fill=tuple(int(v) for v in rng.integers(180, 256, 3)), width=max(1, side // 20))
    return np.asarray(canvas)


def write_cifar(root, name: str, per_batch: int = 3, test: int = 5, seed: int = 0) -> Path:
    """A tiny CIFAR python version: ``cifar-10-batches-py/`` (``data_batch_1`` ... ``_5``,
    ``test_batch``, ``batches.meta``) or ``cifar-100-python/`` (``train``, ``test``, ``meta``),
    pickled dicts of uint8 rows ``[N, 3072]`` (R, G, B planes) and labels, as published.
    The training batches hold ``per_batch`` images each, the test batch ``test``; labels
    cycle through the classes.  Returns the folder."""
    rng = np.random.default_rng(seed)
    cifar10 = name == 'cifar10'
    classes = 10 if cifar10 else 100
    folder = Path(root) / ('cifar-10-batches-py' if cifar10 else 'cifar-100-python')
    folder.mkdir(parents=True)
    batches = [(f'data_batch_{i}', per_batch) for i in range(1, 6)] if cifar10 else [('train', 5 * per_batch)]
    batches.append(('test_batch' if cifar10 else 'test', test))
    start = 0
    for batch, n in batches:
        labels = [(start + i) % classes for i in range(n)]
        start += n
        data = np.stack([image(rng, label, 32).transpose(2, 0, 1).reshape(-1) for label in labels])
        entry = {'batch_label': f'{batch} (tiny copy)', 'data': data,
                 'filenames': [f'image_{start - n + i}.png' for i in range(n)]}
        if cifar10:
            entry['labels'] = labels
        else:
            entry.update(fine_labels=labels, coarse_labels=[label // 5 for label in labels])
        (folder / batch).write_bytes(pickle.dumps(entry, protocol=2))
    meta = ({'label_names': ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                             'truck'], 'num_cases_per_batch': per_batch, 'num_vis': 3072} if cifar10 else
            {'fine_label_names': [f'fine_{i}' for i in range(100)], 'coarse_label_names': [f'coarse_{i}' for i in range(20)]})
    (folder / ('batches.meta' if cifar10 else 'meta')).write_bytes(pickle.dumps(meta, protocol=2))
    return folder


TINYIMAGENET_WNIDS = ('n02124075', 'n01443537', 'n04067472', 'n09246464')


def write_tinyimagenet(root, wnids=TINYIMAGENET_WNIDS, per_class: int = 3, val=('n04067472', 'n01443537',
                       'n04067472', 'n02124075', 'n09246464'), seed: int = 0) -> Path:
    """``tiny-imagenet-200/`` as the zip extracts: ``wnids.txt``, ``train/<wnid>/images/<wnid>_<i>.JPEG``
    (64x64) with ``<wnid>_boxes.txt``, ``val/images/val_<i>.JPEG`` labelled by
    ``val/val_annotations.txt`` (file, wnid, box).  Returns the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / 'tiny-imagenet-200'
    (folder / 'val' / 'images').mkdir(parents=True)
    (folder / 'wnids.txt').write_text('\n'.join(wnids) + '\n')
    label = {wnid: i for i, wnid in enumerate(sorted(wnids))}
    for wnid in wnids:
        (folder / 'train' / wnid / 'images').mkdir(parents=True)
        boxes = []
        for i in range(per_class):
            Image.fromarray(image(rng, label[wnid], 64)).save(folder / 'train' / wnid / 'images' / f'{wnid}_{i}.JPEG')
            boxes.append(f'{wnid}_{i}.JPEG\t8\t8\t55\t55')
        (folder / 'train' / wnid / f'{wnid}_boxes.txt').write_text('\n'.join(boxes) + '\n')
    rows = []
    for i, wnid in enumerate(val):
        Image.fromarray(image(rng, label[wnid], 64)).save(folder / 'val' / 'images' / f'val_{i}.JPEG')
        rows.append(f'val_{i}.JPEG\t{wnid}\t8\t8\t55\t55')
    (folder / 'val' / 'val_annotations.txt').write_text('\n'.join(rows) + '\n')
    return folder


# ---- events -----------------------------------------------------------------------------

NOISE_FRACTION = 0.05


def motion_events(rng, scene, path, start: int, end: int, n: int):
    """``(x, y, p, t)`` (time-sorted, ``t`` in ``[start, end)`` us, 128x128 sensor) of a DVS watching
    ``scene(dx, dy) -> [128, 128]`` brightness (indexed ``[y, x]``) while its offset moves along
    ``path`` ``[K + 1, 2]``: in step ``k`` the pixels whose brightness rises (falls) by more than
    0.1 fire ON (OFF, p = 0) events, about ``n`` in all; ``NOISE_FRACTION`` of them are noise
    at random pixels."""
    K = len(path) - 1
    per_step = int(n * (1 - NOISE_FRACTION)) // K
    xs, ys, ps, ts = [], [], [], []
    frame = scene(*path[0])
    for k in range(K):
        following = scene(*path[k + 1])
        change = following - frame
        frame = following
        y, x = np.nonzero(np.abs(change) > 0.1)
        if len(x) == 0:
            continue
        pick = rng.integers(0, len(x), per_step)
        xs.append(x[pick]), ys.append(y[pick]), ps.append((change[y[pick], x[pick]] > 0).astype(np.int64))
        ts.append(rng.integers(start + (end - start) * k // K, start + (end - start) * (k + 1) // K, per_step))
    noise = n - sum(map(len, xs))
    xs.append(rng.integers(0, 128, noise)), ys.append(rng.integers(0, 128, noise))
    ps.append(rng.integers(0, 2, noise)), ts.append(rng.integers(start, end, noise))
    x, y, p, t = map(np.concatenate, (xs, ys, ps, ts))
    order = np.argsort(t, kind='stable')
    return x[order], y[order], p[order], t[order]


# DVS128 Gesture: AEDAT 3.1 recordings (DvsGesture.tar.gz extracted), read by spikingjelly
GESTURE_HEADER = (b'#!AER-DAT3.1\r\n'
                  b'#Format: RAW\r\n'
                  b'#Source 1: DVS128\r\n'
                  b'#Start-Time: 2017-01-01 12:00:00 (TZ+0000)\r\n'
                  b'#!END-HEADER\r\n')
SPECIAL_EVENT, POLARITY_EVENT, EVENT_SIZE, TS_OFFSET = 0, 1, 8, 4
GESTURE_CLASSES, EVENTS_PER_GESTURE, PACKET = 11, 1500, 256
IDLE_ROWS = range(122, 128)
GESTURE_USERS = (('user01_fluorescent', 'train'), ('user24_lab', 'test'))
_GRID = np.mgrid[0:128, 0:128]  # [2 (y, x), 128, 128]


def packet(event_type: int, words) -> bytes:
    """One AEDAT 3.1 event packet: the 28-byte header (type, source, event size, timestamp
    offset, timestamp overflow, capacity, number, valid), then 8-byte events."""
    words = np.asarray(words, dtype='<u4').reshape(-1, 2)
    n = len(words)
    return struct.pack('<HHIIIIII', event_type, 1, EVENT_SIZE, TS_OFFSET, 0, n, n, n) + words.tobytes()


def polarity_packets(x, y, p, t) -> bytes:
    """Polarity events in packets of at most ``PACKET``: address word
    ``x << 17 | y << 2 | p << 1 | 1`` (bit 0: valid), then the 32-bit timestamp (us)."""
    address = (np.asarray(x, np.uint32) << 17) | (np.asarray(y, np.uint32) << 2) | (np.asarray(p, np.uint32) << 1) | 1
    words = np.stack([address, np.asarray(t, np.uint32)], 1)
    return b''.join(packet(POLARITY_EVENT, words[i:i + PACKET]) for i in range(0, len(words), PACKET))


def gesture_window(label: int):
    """``(start, end)`` in microseconds of gesture ``label`` (0-based) in every recording."""
    start = 1_000_000 + label * 300_000
    return start, start + 200_000


def gesture_events(recording: str, label: int, seed: int = 0):
    """``(x, y, p, t)`` of gesture ``label`` (0-based) in ``recording``: a bright blob of radius 12
    (a hand) waving ``1 + label % 3`` times along the direction ``pi * label / 11`` around a
    recording-dependent place; time-sorted, all inside the gesture's window."""
    rng = np.random.default_rng([seed, sum(map(ord, recording)), label])
    start, end = gesture_window(label)
    centre = 64 + rng.uniform(-6, 6, 2)
    angle = np.pi * label / GESTURE_CLASSES
    phase = np.sin(2 * np.pi * (1 + label % 3) * np.linspace(0, 1, 25))
    path = centre + 34 * phase[:, None] * np.array([np.cos(angle), np.sin(angle)])

    def hand(cx, cy):
        return ((_GRID[1] - cx) ** 2 + (_GRID[0] - cy) ** 2 < 12 ** 2).astype(float)
    return motion_events(rng, hand, path, start, end, EVENTS_PER_GESTURE)


def write_dvs_gesture(root, users=GESTURE_USERS, seed: int = 0) -> Path:
    """Write ``root/extract/DvsGesture/`` (AEDAT 3.1 recordings, one ``<recording>_labels.csv``
    each (``class,startTime_usec,endTime_usec``, classes 1-11), ``trials_to_train.txt`` /
    ``trials_to_test.txt``) with one recording per ``(name, split)`` of ``users``, each holding
    all 11 gestures once; between gestures, idle events in rows ``IDLE_ROWS`` (in no labelled
    window) and one special-event packet, which a reader must skip.  Returns the folder."""
    folder = Path(root) / 'extract' / 'DvsGesture'
    folder.mkdir(parents=True)
    trials = {'train': [], 'test': []}
    for recording, split in users:
        rows, chunks = ['class,startTime_usec,endTime_usec'], []
        for label in range(GESTURE_CLASSES):
            start, end = gesture_window(label)
            idle = np.arange(start - 50_000, start - 40_000, 1_000)  # before the window: in no sample
            chunks.append(polarity_packets(idle % 128, IDLE_ROWS[0] + idle % len(IDLE_ROWS), idle % 2, idle))
            chunks.append(polarity_packets(*gesture_events(recording, label, seed)))
            rows.append(f'{label + 1},{start},{end}')
        chunks.insert(1, packet(SPECIAL_EVENT, [[0, 990_000], [0, 990_001]]))
        (folder / f'{recording}.aedat').write_bytes(GESTURE_HEADER + b''.join(chunks))
        (folder / f'{recording}_labels.csv').write_text('\n'.join(rows) + '\n')
        trials[split].append(f'{recording}.aedat')
    for split, names in trials.items():
        (folder / f'trials_to_{split}.txt').write_text('\n'.join(names) + '\n')
    return folder


# CIFAR10-DVS: AEDAT 2.0 recordings, one folder per class (the class archives extracted)
CIFAR10DVS_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
CIFAR10DVS_HEADER = b'#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# created Fri Mar 04 2016\r\n'
EVENTS_PER_RECORDING = 800
#: the monitor's image offset (pixels) along one recording: a small closed path, twice
MONITOR_PATH = np.array([(0, 0), (3, 0), (3, 3), (0, 3), (0, 0)] * 2 + [(0, 0)])


def cifar10dvs_events(label: int, index: int, seed: int = 0):
    """``(x_raw, y_raw, p_raw, t)`` of recording ``index`` of class ``label``: a CIFAR-like
    ``image`` (grey, upscaled to the 128x128 sensor) moved along ``MONITOR_PATH``."""
    rng = np.random.default_rng([seed, label, index])
    grey = image(rng, label, 32).mean(2).repeat(4, 0).repeat(4, 1) / 255

    def shifted(dx, dy):
        return np.roll(grey, (int(dy), int(dx)), axis=(0, 1))
    return motion_events(rng, shifted, MONITOR_PATH, 0, 1_200_000, EVENTS_PER_RECORDING)


def write_cifar10dvs(root, per_class: int = 2, seed: int = 0) -> dict:
    """``root/extract/<class>/cifar10_<class>_<i>.aedat`` in CIFAR10-DVS's format (AEDAT 2.0:
    '#' header lines, then big-endian 32-bit address, timestamp pairs; address bits
    x = 1-7, y = 8-14, polarity = 0).  Returns ``{(class, i): (x_raw, y_raw, p_raw)}``."""
    written = {}
    for label, c in enumerate(CIFAR10DVS_CLASSES):
        (Path(root) / 'extract' / c).mkdir(parents=True)
        for i in range(per_class):
            x, y, p, t = cifar10dvs_events(label, i, seed)
            words = np.stack([(y << 8) | (x << 1) | p, t], 1).astype('>u4')
            (Path(root) / 'extract' / c / f'cifar10_{c}_{i}.aedat').write_bytes(CIFAR10DVS_HEADER + words.tobytes())
            written[c, i] = x, y, p
    return written
