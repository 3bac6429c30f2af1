"""Synthetic DVS-like event data, built in: no download, deterministic per (seed, index).

Each sample is a random-dot motion pattern, the classic stimulus of motion vision: a
cloud of small bright dots in a round aperture of random size and place moves with one
of eight flow fields (``CLASSES``): a translation right, left, down or up, a rotation
clockwise or counterclockwise on screen, an expansion or a contraction about the
aperture's centre.  A fraction of the dots (random per sample) moves in random
directions instead.  An event camera's ON/OFF events are the pixels whose brightness
rises/falls between consecutive sub-steps, counted into ``T`` frames ``[T, 2, H, W]``.

Nothing but the motion tells the classes apart:

- the aperture is anywhere in the frame, so no single pixel is informative;
- the flow fields are scaled to the same mean dot speed, and then every frame and
  polarity keeps exactly the same number of events (the fewest any of them has, the
  others thinned at random), so event totals, ON/OFF balance and the per-frame profile
  carry (almost) nothing about the class;
- background noise events are added uniformly.

A local detector sees where ON events lead OFF events (the local motion direction);
the class is the arrangement of those directions over the cloud.
"""
import math

import torch
from torch.utils.data import Dataset

CLASSES = ('right', 'left', 'down', 'up', 'clockwise', 'counterclockwise', 'expand', 'contract')
_DIRECTIONS = {'right': (1.0, 0.0), 'left': (-1.0, 0.0), 'down': (0.0, 1.0), 'up': (0.0, -1.0)}


class SyntheticEvents(Dataset):
    """``num_samples`` samples ``(frames [T, 2, size, size] float, label)``; labels cycle
    through ``CLASSES`` (``label = index % 8``), so the classes are balanced.

    ``seed`` selects the split (use different seeds for train and test).  Ranges are
    ``(low, high)``, drawn uniformly per sample; lengths are in pixels of a 32x32 frame
    and scale with ``size``: ``dots`` (count), ``dot_radius``, ``aperture`` (radius, as a
    fraction of ``size``), ``speed`` (mean pixels per sub-step), ``coherence`` (fraction
    of dots following the flow).  ``substeps`` brightness changes are counted into each
    frame; ``noise`` is the probability of a spurious event per pixel, polarity and
    sub-step.
    """

    def __init__(self, num_samples: int = 1024, T: int = 8, size: int = 32, seed: int = 0, *,
                 dots=(12, 24), dot_radius=(0.8, 1.4), aperture=(0.25, 0.4), speed=(0.25, 0.5),
                 coherence=(0.85, 1.0), substeps: int = 4, noise: float = 0.003):
        if num_samples < 1 or T < 1 or size < 8 or substeps < 1:
            raise ValueError(f'SyntheticEvents needs num_samples >= 1, T >= 1, size >= 8 and substeps >= 1, '
                             f'got num_samples={num_samples}, T={T}, size={size}, substeps={substeps}')
        self.num_samples, self.T, self.size, self.seed = num_samples, T, size, seed
        self.dots, self.dot_radius, self.aperture = dots, dot_radius, aperture
        self.speed, self.coherence, self.substeps, self.noise = speed, coherence, substeps, noise
        self._made = {}  # index -> int8 frames: every sample is made once per process

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_samples:
            raise IndexError(f'index {index} out of range for {self.num_samples} samples')
        if index not in self._made:
            self._made[index] = self._make(index)
        return self._made[index].float(), index % len(CLASSES)

    def _make(self, index: int) -> torch.Tensor:
        """The frames ``[T, 2, H, W]`` (int8 event counts) of sample ``index``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        position = self._positions(CLASSES[index % len(CLASSES)], g)                   # [steps, n, 2]
        radius = self._uniform(self.dot_radius, g) * self.size / 32
        T, s = self.T, self.size
        change = _draw(position, radius, s).float().diff(dim=0)                          # [steps - 1, H, W]
        events = torch.stack([change > 0, change < 0], 1).view(T, self.substeps, 2, s * s).long()
        events = sum(events.unbind(1))  # per frame: a sum of small tensors (a reduction here runs threaded and slow)
        events = _thin_to_fewest(events.view(2 * T, s * s), g).view(T, 2, s, s)
        noise = torch.rand(events.shape, generator=g) < self.noise * self.substeps
        return (events + noise).to(torch.int8)

    def _positions(self, name: str, g: torch.Generator) -> torch.Tensor:
        """Dot centres ``[T * substeps + 1, n, (x, y)]`` at every sub-step, moving with flow ``name``."""
        s = self.size
        n = int(torch.randint(self.dots[0], self.dots[1] + 1, (), generator=g))
        R = self._uniform(self.aperture, g) * s
        speed = self._uniform(self.speed, g) * s / 32
        steps = self.T * self.substeps + 1
        # a growing/shrinking cloud is kept further from the border, where it would lose events
        margin = R + (speed * (steps - 1) / 4 if name in ('expand', 'contract') else 0.0)
        centre = margin + max(s - 2 * margin, 0.0) * torch.rand(2, generator=g)
        r = R * torch.rand(n, generator=g).sqrt()                # uniform over the disc
        phi = 2 * math.pi * torch.rand(n, generator=g)
        offset = torch.stack([r * phi.cos(), r * phi.sin()], -1)  # [n, 2] from the centre
        k = torch.arange(steps, dtype=torch.float32)[:, None, None] - steps // 2   # sub-step, 0 in the middle
        rate = speed / r.mean()                                     # rotation / scaling rate of that mean speed
        if name in _DIRECTIONS:
            flow = offset + k * speed * torch.tensor(_DIRECTIONS[name])
        elif name in ('clockwise', 'counterclockwise'):            # y points down: a positive angle turns clockwise
            angle = (1 if name == 'clockwise' else -1) * rate * k
            cos, sin = angle.cos(), angle.sin()
            flow = torch.stack([cos[..., 0] * offset[:, 0] - sin[..., 0] * offset[:, 1],
                                sin[..., 0] * offset[:, 0] + cos[..., 0] * offset[:, 1]], -1)
        else:  # the cloud is as dense as the aperture at its smallest: first frame (expand) or last (contract)
            grown = k - k[0] if name == 'expand' else k[-1] - k
            flow = offset * (1 + rate * grown)
        theta = 2 * math.pi * torch.rand(n, generator=g)
        wandering = offset + k * speed * torch.stack([theta.cos(), theta.sin()], -1)
        incoherent = torch.rand(n, generator=g) > self._uniform(self.coherence, g)
        return centre + torch.where(incoherent[:, None], wandering, flow)

    @staticmethod
    def _uniform(bounds, g: torch.Generator) -> float:
        low, high = bounds
        return low + (high - low) * float(torch.rand((), generator=g))


def _draw(centres: torch.Tensor, radius: float, size: int) -> torch.Tensor:
    """Binary images ``[steps, size, size]``: a pixel is on when its centre lies within
    ``radius`` of one of the dot ``centres [steps, n, (x, y)]``.  Only the few pixels
    around each dot are tested (small tensors, fast on one thread)."""
    steps = centres.shape[0]
    reach = math.ceil(radius) + 1
    d = torch.arange(-reach, reach + 1)
    x = centres[..., 0, None, None].floor().long() + d[None, :]          # [steps, n, 1, patch]
    y = centres[..., 1, None, None].floor().long() + d[:, None]          # [steps, n, patch, 1]
    on = ((x + 0.5 - centres[..., 0, None, None]) ** 2 + (y + 0.5 - centres[..., 1, None, None]) ** 2
          <= radius ** 2) & (x >= 0) & (x < size) & (y >= 0) & (y < size)
    step = torch.arange(steps)[:, None, None, None].expand_as(on)
    image = torch.zeros(steps, size, size, dtype=torch.bool)
    image[step[on], y.expand_as(on)[on], x.expand_as(on)[on]] = True
    return image


def _thin_to_fewest(counts: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Event counts ``[cells, pixels]`` with every cell (a frame and polarity) thinned, by
    drawing events uniformly without replacement, to the event total of the sparsest cell."""
    cells, pixels = counts.shape
    cell, pixel, _ = (torch.arange(int(counts.max())) < counts[..., None]).nonzero(as_tuple=True)  # one row per event
    order = torch.argsort(cell + torch.rand(len(cell), generator=g))  # cell by cell, shuffled within each
    totals = torch.bincount(cell, minlength=cells)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - (totals.cumsum(0) - totals)[cell[order]]
    kept = rank < totals.min()
    return torch.bincount(cell[kept] * pixels + pixel[kept], minlength=cells * pixels).view(cells, pixels)
