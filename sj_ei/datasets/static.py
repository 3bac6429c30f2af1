"""CIFAR-10/100 and TinyImageNet-200 through torchvision, with the paper's augmentation
(random crop with padding, horizontal flip, cutout; SPEC section 6).  Images ``[3, H, W]``."""
from pathlib import Path

from torchvision import datasets, transforms

from .errors import DatasetNotFoundError
from .transforms import Cutout

_STATS = {
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    'tinyimagenet': ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}
_REQUIRED = {
    'cifar10': ('cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch', 'batches.meta'],
                'the CIFAR-10 python version (cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html), '
                'extracted'),
    'cifar100': ('cifar-100-python', ['train', 'test', 'meta'],
                 'the CIFAR-100 python version (cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html), '
                 'extracted'),
    'tinyimagenet': ('tiny-imagenet-200', ['train', 'val/images', 'val/val_annotations.txt', 'wnids.txt'],
                     'Tiny ImageNet (tiny-imagenet-200.zip from http://cs231n.stanford.edu/), extracted'),
}


def _check(name: str, root: Path) -> Path:
    folder, files, what = _REQUIRED[name]
    missing = [f for f in files if not (root / folder / f).exists()]
    if missing:
        raise DatasetNotFoundError(f'{name} is not in {root}: place {what} so that {root / folder}/ holds '
                                   f'{", ".join(files)} (missing: {", ".join(missing)}). Nothing is downloaded '
                                   'automatically.')
    return root / folder


def _transform(name: str, train: bool):
    size = 64 if name == 'tinyimagenet' else 32
    mean, std = _STATS[name]
    steps = [transforms.RandomCrop(size, padding=size // 8), transforms.RandomHorizontalFlip()] if train else []
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if train:
        steps.append(Cutout(size // 2))
    return transforms.Compose(steps)


class TinyImageNet(datasets.ImageFolder):
    """Tiny ImageNet-200 in its distributed layout: ``train/<wnid>/images/*.JPEG``;
    validation images in one folder labelled by ``val/val_annotations.txt`` (used as the test set)."""

    def __init__(self, folder: Path, train: bool, transform):
        super().__init__(str(folder / 'train'), transform=transform)
        if not train:
            lines = (folder / 'val' / 'val_annotations.txt').read_text().split('\n')
            pairs = [line.split('\t')[:2] for line in lines if line.strip()]
            self.samples = [(str(folder / 'val' / 'images' / f), self.class_to_idx[wnid]) for f, wnid in pairs]
            self.imgs, self.targets = self.samples, [label for _, label in self.samples]


def static_images(name: str, root, train: bool):
    """The ``train`` or test split of ``'cifar10'``, ``'cifar100'`` or ``'tinyimagenet'``."""
    root = Path(root)
    folder = _check(name, root)
    transform = _transform(name, train)
    if name == 'tinyimagenet':
        return TinyImageNet(folder, train, transform)
    dataset = datasets.CIFAR10 if name == 'cifar10' else datasets.CIFAR100
    return dataset(str(root), train=train, transform=transform, download=False)
