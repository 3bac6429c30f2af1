"""Writes a tiny DVS128 Gesture in its real on-disk format, as the dataset's archive
extracts: ``DvsGesture/`` with AEDAT 3.1 recordings, one ``*_labels.csv`` per
recording, and the ``trials_to_train.txt`` / ``trials_to_test.txt`` lists."""
import struct
from pathlib import Path

import numpy as np

HEADER = (b'#!AER-DAT3.1\r\n'
          b'#Format: RAW\r\n'
          b'#Source 1: DVS128\r\n'
          b'#Start-Time: 2017-01-01 12:00:00 (TZ+0000)\r\n'
          b'#!END-HEADER\r\n')
POLARITY_EVENT, EVENT_SIZE, TS_OFFSET = 1, 8, 4


def polarity_packet(x, y, p, t) -> bytes:
    """One AEDAT 3.1 polarity packet: a 28-byte header, then 8-byte events
    (address word ``x << 17 | y << 2 | p << 1 | valid``, then the 32-bit timestamp)."""
    n = len(t)
    header = struct.pack('<HHIIIIII', POLARITY_EVENT, 1, EVENT_SIZE, TS_OFFSET, 0, n, n, n)
    address = (np.asarray(x, np.uint32) << 17) | (np.asarray(y, np.uint32) << 2) \
        | (np.asarray(p, np.uint32) << 1) | 1
    events = np.empty((n, 2), dtype='<u4')
    events[:, 0], events[:, 1] = address, t
    return header + events.tobytes()


def gesture_events(label: int, rng, t_start: int, count: int = 200):
    """``count`` events of one gesture; all of polarity ``label % 2``, x in the left half
    for even labels and the right half for odd ones (so a test can check where they land)."""
    x = rng.integers(0, 64, count) + (64 if label % 2 else 0)
    y = rng.integers(0, 128, count)
    t = t_start + np.sort(rng.integers(0, 100_000, count))
    return x, y, np.full(count, label % 2), t


def write_dvs_gesture(root, users=(('user01', 'train'), ('user24', 'test')), classes=11, seed=0) -> Path:
    """Write ``root/extract/DvsGesture/`` (the layout spikingjelly reads) and return it."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / 'extract' / 'DvsGesture'
    folder.mkdir(parents=True)
    trials = {'train': [], 'test': []}
    for user, split in users:
        name = f'{user}_fluorescent'
        rows, packets = ['class,startTime_usec,endTime_usec'], []
        for label in range(classes):
            start = 1_000_000 + label * 200_000
            packets.append(polarity_packet(*gesture_events(label, rng, start)))
            rows.append(f'{label + 1},{start},{start + 150_000}')
        (folder / f'{name}.aedat').write_bytes(HEADER + b''.join(packets))
        (folder / f'{name}_labels.csv').write_text('\n'.join(rows) + '\n')
        trials[split].append(f'{name}.aedat')
    for split, names in trials.items():
        (folder / f'trials_to_{split}.txt').write_text('\n'.join(names) + '\n')
    return folder
