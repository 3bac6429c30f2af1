"""Writes a tiny DVS128 Gesture in its real on-disk format, as ``DvsGesture.tar.gz``
extracts: ``<root>/extract/DvsGesture/`` with AEDAT 3.1 recordings, one
``<recording>_labels.csv`` per recording (``class,startTime_usec,endTime_usec``, classes
1-11) and the ``trials_to_train.txt`` / ``trials_to_test.txt`` lists.  spikingjelly
accepts this extracted layout in place of the archive.

Every gesture's events are a deterministic function of (seed, recording, class), so a
test can recompute exactly what a sample must contain (``gesture_events``): a cloud of
events of both polarities around a class-dependent place, dense enough for a network to
respond to.  Between gestures the recordings hold idle events (``IDLE_ROWS``), outside
every labelled window, and one special-event packet, which a reader must skip.
"""
import struct
from pathlib import Path

import numpy as np

HEADER = (b'#!AER-DAT3.1\r\n'
          b'#Format: RAW\r\n'
          b'#Source 1: DVS128\r\n'
          b'#Start-Time: 2017-01-01 12:00:00 (TZ+0000)\r\n'
          b'#!END-HEADER\r\n')
SPECIAL_EVENT, POLARITY_EVENT, EVENT_SIZE, TS_OFFSET = 0, 1, 8, 4
CLASSES, EVENTS_PER_GESTURE, PACKET = 11, 1500, 256
IDLE_ROWS = range(122, 128)
USERS = (('user01_fluorescent', 'train'), ('user24_lab', 'test'))


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


def window(label: int):
    """``(start, end)`` in microseconds of gesture ``label`` (0-based) in every recording."""
    start = 1_000_000 + label * 300_000
    return start, start + 200_000


def gesture_events(recording: str, label: int, seed: int = 0):
    """``(x, y, p, t)`` of gesture ``label`` (0-based) in ``recording``, time-sorted, all inside its window."""
    rng = np.random.default_rng([seed, sum(map(ord, recording)), label])
    start, end = window(label)
    angle = 2 * np.pi * label / CLASSES
    centre = 64 + 30 * np.array([np.cos(angle), np.sin(angle)])
    x, y = np.clip(np.rint(rng.normal(centre, 18, (EVENTS_PER_GESTURE, 2))), 0, 127).astype(np.int64).T
    p = rng.integers(0, 2, EVENTS_PER_GESTURE)
    t = np.sort(rng.integers(start, end, EVENTS_PER_GESTURE))
    return x, y, p, t


def write_dvs_gesture(root, users=USERS, seed: int = 0) -> Path:
    """Write ``root/extract/DvsGesture/`` with one recording per ``(name, split)`` of ``users``,
    each holding all 11 gestures once; return that folder."""
    folder = Path(root) / 'extract' / 'DvsGesture'
    folder.mkdir(parents=True)
    trials = {'train': [], 'test': []}
    for recording, split in users:
        rows, chunks = ['class,startTime_usec,endTime_usec'], []
        for label in range(CLASSES):
            start, end = window(label)
            idle = np.arange(start - 50_000, start - 40_000, 1_000)  # before the window: in no sample
            chunks.append(polarity_packets(idle % 128, IDLE_ROWS[0] + idle % len(IDLE_ROWS), idle % 2, idle))
            chunks.append(polarity_packets(*gesture_events(recording, label, seed)))
            rows.append(f'{label + 1},{start},{end}')
        chunks.insert(1, packet(SPECIAL_EVENT, [[0, 990_000], [0, 990_001]]))
        (folder / f'{recording}.aedat').write_bytes(HEADER + b''.join(chunks))
        (folder / f'{recording}_labels.csv').write_text('\n'.join(rows) + '\n')
        trials[split].append(f'{recording}.aedat')
    for split, names in trials.items():
        (folder / f'trials_to_{split}.txt').write_text('\n'.join(names) + '\n')
    return folder
