"""Training augmentations of the paper (SPEC section 6)."""
import torch
import torch.nn.functional as F
from torchvision.transforms import v2


class EventAugment:
    """DVS-Gesture training augmentation on frames ``[T, 2, H, W] -> [T, 2, size, size]``:
    random resized crop (scale 0.5-1.0, nearest, the same crop for every frame),
    horizontal flip with probability 1/2, and random temporal deletion: with probability
    1/2, up to ``T // 4`` random frames are deleted and the remaining ones are stretched
    back to ``T`` frames by nearest-neighbour resampling in time."""

    def __init__(self, size: int):
        self.crop = v2.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=v2.InterpolationMode.NEAREST)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self.crop(x)
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        T = x.shape[0]
        if T >= 4 and torch.rand(()) < 0.5:
            deleted = int(torch.randint(1, T // 4 + 1, ()))
            kept = torch.randperm(T)[:T - deleted].sort().values
            x = x[kept[torch.linspace(0, len(kept) - 1, T).round().long()]]
        return x


class Cutout:
    """Zero one ``length x length`` square, centred on a random pixel and clipped at the border,
    of an image ``[C, H, W]`` (all channels)."""

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
