"""Readers of the two event-camera file formats of the paper's event datasets, giving the events
spikingjelly (0.0.0.0.14 and 2) gives for them, as ``{'t', 'x', 'y', 'p'}`` numpy arrays (int64), read
with numpy (no Python loop per event).

- AEDAT 3.1 (DVS128 Gesture): ``#`` header lines up to ``#!END-HEADER``, then packets of a
  28-byte little-endian header (``uint16`` event type, ``uint16`` source, then ``uint32`` event
  size, offset, timestamp overflow, capacity, number, valid) followed by ``capacity x size``
  bytes of events.  Type 1 are polarity events, each a ``uint32`` address (x = bits 17-31,
  y = bits 2-16, polarity = bit 1) and a ``uint32`` timestamp in us, to which the packet adds
  ``overflow << 31``; packets of other types are skipped.
- AEDAT 2.0 (CIFAR10-DVS): ``#`` header lines, then big-endian ``uint32`` pairs (address,
  timestamp), the address holding x in bits 1-7, y in bits 8-14, the polarity in bit 0; turned
  to spikingjelly's orientation ``x = 127 - y``, ``y = 127 - x``, ``p = 1 - polarity``.

A file that does not hold whole events is a ``ValueError``.
"""
import struct

import numpy as np

AEDAT3_END_HEADER = b'#!END-HEADER\r\n'
AEDAT3_PACKET_HEADER = struct.Struct('<HHIIIIII')  # type, source, size, offset, ts overflow, capacity, number, valid
POLARITY_EVENT = 1


def read_aedat3(path) -> dict:
    """The polarity events of the AEDAT 3.1 file ``path``: ``{'t', 'x', 'y', 'p'}``, each ``[events]``."""
    with open(path, 'rb') as f:
        data = f.read()
    start = 0
    while data.startswith(b'#', start):
        end = data.find(b'\n', start) + 1 or len(data)
        line, start = data[start:end], end
        if line == AEDAT3_END_HEADER:
            break
    parts = []
    while start < len(data):
        if start + AEDAT3_PACKET_HEADER.size > len(data):
            raise ValueError(f'{path}: truncated AEDAT 3.1 packet header at byte {start}')
        kind, _, size, _, overflow, capacity, _, _ = AEDAT3_PACKET_HEADER.unpack_from(data, start)
        start += AEDAT3_PACKET_HEADER.size
        body, start = data[start:start + capacity * size], start + capacity * size
        if kind != POLARITY_EVENT:
            continue
        if size < 8 or size % 4 or len(body) % size:
            raise ValueError(f'{path}: an AEDAT 3.1 polarity packet of {len(body)} bytes does not hold whole events '
                             f'of {size} bytes')
        words = np.frombuffer(body, dtype='<u4').reshape(-1, size // 4)[:, :2].astype(np.int64)
        parts.append((words[:, 0], words[:, 1] | overflow << 31))
    address, t = (np.concatenate(column) for column in zip(*parts)) if parts else (np.zeros(0, np.int64),) * 2
    return dict(t=t, x=(address >> 17) & 0x7FFF, y=(address >> 2) & 0x7FFF, p=(address >> 1) & 1)


def aedat2_header_length(data: bytes) -> int:
    """Bytes of the ``#`` header lines at the start of AEDAT 2.0 ``data`` (a line that is not text ends them)."""
    length = 0
    while length < len(data):
        end = data.find(b'\n', length) + 1 or len(data)
        try:
            text = data[length:end].decode().strip()
        except UnicodeDecodeError:
            break
        if not text.startswith('#'):
            break
        length = end
    return length


def read_cifar10dvs(path) -> dict:
    """The events of the CIFAR10-DVS recording ``path`` (AEDAT 2.0), in spikingjelly's orientation."""
    with open(path, 'rb') as f:
        data = f.read()
    start = aedat2_header_length(data)
    if (len(data) - start) % 8:
        raise ValueError(f'{path}: the {len(data) - start} bytes after the AEDAT 2.0 header are not whole events '
                         '(8 bytes each: address, timestamp)')
    words = np.frombuffer(data, dtype='>u4', offset=start)
    address = words[0::2].astype(np.int64)
    x, y, polarity = (address & 0xFE) >> 1, (address & 0x7F00) >> 8, address & 1
    return dict(t=words[1::2].astype(np.int64), x=127 - y, y=127 - x, p=1 - polarity)
