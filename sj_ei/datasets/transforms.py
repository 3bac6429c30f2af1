"""The paper's augmentations, as in the authors' code.

Event frames ``[T, 2, 128, 128]`` (spikingjelly's frames at the sensor's size) become
``[T, 2, 48, 48]``; every random choice is made once per sample, so all T frames move
together:

- DVS-Gesture, training: random resized crop at 128x128 (scale 0.5-1.0, nearest), resize
  to 48x48, horizontal flip with probability 1/2;
- CIFAR10-DVS, training: random resized crop at 128x128 (scale 0.7-1.0, nearest), resize
  to 48x48, horizontal flip with probability 1/2, then one of (chosen uniformly) a roll by
  up to 5 pixels along each axis, a rotation by up to 30 degrees (nearest, zero fill) or a
  16x16 cutout;
- both, test: the resize alone.

Static images ``[3, H, W]`` (``ToTensor()`` pixels) get the authors' cutout (``RandomErase``).

The resize is torchvision's default (bilinear with antialiasing), so each output pixel
averages the events of the 128x128 pixels it covers instead of keeping one of them.
"""
import math

import torch
from torchvision import transforms

SENSOR, SIZE = 128, 48


def event_transform(name: str, train: bool):
    """The transform of the ``train`` or test split of ``'dvsgesture'`` / ``'cifar10dvs'``:
    float frames ``[T, 2, 128, 128] -> [T, 2, 48, 48]``."""
    resize = transforms.Resize((SIZE, SIZE))
    if not train:
        return resize
    scale = (0.5, 1.0) if name == 'dvsgesture' else (0.7, 1.0)
    steps = [transforms.RandomResizedCrop(SENSOR, scale=scale, interpolation=transforms.InterpolationMode.NEAREST),
             resize, transforms.RandomHorizontalFlip()]
    if name == 'cifar10dvs':
        steps.append(transforms.RandomChoice([RandomRoll(5), transforms.RandomRotation(30), Cutout(16)]))
    return transforms.Compose(steps)


class RandomRoll:
    """Roll ``[..., H, W]`` cyclically by ``dy, dx``, each uniform in ``-max_shift ... max_shift``."""

    def __init__(self, max_shift: int):
        self.max_shift = max_shift

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dy, dx = torch.randint(-self.max_shift, self.max_shift + 1, (2,)).tolist()
        return x.roll((dy, dx), dims=(-2, -1))


class Cutout:
    """Zero one ``length x length`` square, centred on a random pixel and clipped at the border,
    of ``[..., H, W]`` (all leading channels and frames)."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        H, W = image.shape[-2:]
        cy, cx = int(torch.randint(H, ())), int(torch.randint(W, ()))
        y0, x0 = cy - self.length // 2, cx - self.length // 2
        y0, y1, x0, x1 = max(0, y0), min(H, y0 + self.length), max(0, x0), min(W, x0 + self.length)
        image = image.clone()
        image[..., y0:y1, x0:x1] = 0
        return image


class RandomErase:
    """The authors' image cutout (torchtoolbox's ``Cutout()`` as their code calls it), on ``[C, H, W]``
    pixels in [0, 1]: with probability ``p``, one rectangle of a uniform share ``scale`` of the image's
    area and aspect ratio (height / width) uniform in ``ratio`` is painted with one level ``v / 255``,
    ``v`` uniform in 0..255, in the first channel and 0 in the others.  (That is the colour their
    code paints: torchtoolbox pastes the integer ``v`` into an RGB image, which PIL reads as the
    colour ``(v, 0, 0)``.)  sj_ei zeroed a square on every image before (DeVries & Taylor's
    cutout); the authors' code is the reference for training dynamics (docs/collapse.md)."""

    def __init__(self, p: float = 0.5, scale=(0.02, 0.4), ratio=(0.4, 2.5)):
        self.p, self.scale, self.ratio = p, scale, ratio

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return image
        H, W = image.shape[-2:]
        area = float(torch.empty(()).uniform_(*self.scale)) * H * W
        aspect = float(torch.empty(()).uniform_(*self.ratio))
        h, w = min(H, int(math.sqrt(area * aspect))), min(W, int(math.sqrt(area / aspect)))
        top, left = int(torch.randint(H - h + 1, ())), int(torch.randint(W - w + 1, ()))
        image = image.clone()
        image[..., top:top + h, left:left + w] = 0
        image[..., 0, top:top + h, left:left + w] = int(torch.randint(256, ())) / 255
        return image
