"""Synthetic DVS-like event data, built in: no download, deterministic per (seed, index).

A random object (a union of a few ellipses) moves in one of seven ways (a translation
in one of four directions, a rotation either way, an expansion or a contraction); an event
camera's ON/OFF polarity events are the pixels whose brightness rises/falls
between consecutive sub-steps, counted into ``T`` frames ``[T, 2, H, W]``;
background noise events are added.  Position, size, shape, speed and noise are
random, so neither a single pixel nor the total event count gives the class away.
"""
import math

import torch
from torch.utils.data import Dataset

CLASSES = ('right', 'left', 'down', 'up', 'rotate', 'expand', 'contract')


class SyntheticEvents(Dataset):
    """``len(self)`` samples ``(frames [T, 2, H, W] float, label)`` of ``len(CLASSES)`` balanced classes.

    ``seed`` selects the split (use different seeds for train and test); ``substeps``
    brightness changes are counted into every frame; ``noise`` is the probability of a
    spurious event per pixel, polarity and sub-step.
    """

    def __init__(self, num_samples: int = 1024, T: int = 8, size: int = 32, seed: int = 0,
                 substeps: int = 3, noise: float = 0.01):
        if num_samples < 1 or T < 1 or size < 8:
            raise ValueError(f'SyntheticEvents needs num_samples >= 1, T >= 1 and size >= 8, '
                             f'got {num_samples}, {T}, {size}')
        self.num_samples, self.T, self.size, self.seed = num_samples, T, size, seed
        self.substeps, self.noise = substeps, noise
        axis = torch.arange(size, dtype=torch.float32) + 0.5
        self._grid_y, self._grid_x = torch.meshgrid(axis, axis, indexing='ij')
        self._made = {}  # index -> sample: every sample is made once per process

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        if index not in self._made:
            self._made[index] = self._make(index)
        return self._made[index]

    def _make(self, index: int):
        label = index % len(CLASSES)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        uniform = lambda lo, hi, n=(): lo + (hi - lo) * torch.rand(n, generator=g)
        s = self.size
        # the object: 2-4 ellipses around the origin, in units of the frame size
        parts = int(torch.randint(2, 5, (), generator=g))
        centres = uniform(-0.12, 0.12, (parts, 2)) * s
        radii = uniform(0.08, 0.2, (parts, 2)) * s
        start = uniform(0.3, 0.7, (2,)) * s
        speed = float(uniform(0.6, 1.2)) * s / 32   # pixels per sub-step
        spin = float(uniform(0.12, 0.25)) * (1 if torch.rand((), generator=g) < 0.5 else -1)  # rad per sub-step
        growth = float(uniform(0.04, 0.07))       # relative scale per sub-step
        steps = self.T * self.substeps + 1
        frames = [self._render(centres, radii, *self._pose(label, k, start, speed, spin, growth, steps))
                  for k in range(steps)]
        change = torch.stack(frames).diff(dim=0)                                # [steps-1, H, W]
        events = torch.stack([change > 0, change < 0], dim=1).float()           # ON, OFF
        events += (torch.rand(events.shape, generator=g) < self.noise).float()
        return events.view(self.T, self.substeps, 2, s, s).sum(1), label

    def _pose(self, label, k, start, speed, spin, growth, steps):
        """Centre, rotation angle and scale of the object at sub-step ``k``."""
        centre, angle, scale = start.clone(), 0.0, 1.0
        travel = speed * (k - steps / 2)
        name = CLASSES[label]
        if name in ('right', 'left'):
            centre[0] += travel if name == 'right' else -travel
        elif name in ('down', 'up'):
            centre[1] += travel if name == 'down' else -travel
        elif name == 'rotate':
            angle = spin * k
        else:
            scale = math.exp(growth * (k - steps / 2) * (1 if name == 'expand' else -1))
        return centre, angle, scale

    def _render(self, centres, radii, centre, angle, scale):
        """Brightness image ``[H, W]``: 1 inside the posed object, 0 outside."""
        dx, dy = self._grid_x - centre[0], self._grid_y - centre[1]
        cos, sin = math.cos(angle), math.sin(angle)
        u, v = (cos * dx + sin * dy) / scale, (-sin * dx + cos * dy) / scale
        inside = ((u[None] - centres[:, 0, None, None]) / radii[:, 0, None, None]) ** 2 \
            + ((v[None] - centres[:, 1, None, None]) / radii[:, 1, None, None]) ** 2 <= 1
        return inside.any(0).float()
