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

The resize is torchvision's default (bilinear with antialiasing), so each output pixel
averages the events of the 128x128 pixels it covers instead of keeping one of them.
"""
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
