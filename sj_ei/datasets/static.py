"""CIFAR-10/100 and TinyImageNet-200 through torchvision, images ``[3, H, W]`` of
``ToTensor()`` pixels in [0, 1], not normalized: E-I Init and Dale's law assume
non-negative input, and the authors' code feeds the network these pixels directly (the
batch-norm baselines get the same input, so both are compared on the same data).

Training augmentation (``augment=False``: none): CIFAR, random crop 32 with zero padding 4,
horizontal flip, then the authors' cutout (``transforms.RandomErase``: on half the images a
rectangle of 2-40% of the area).  TinyImageNet (the authors' ``get_tinyimagenet``), at
``image_size=32``: random resized crop 32 (scale 0.08-1), horizontal flip, colour jitter
(brightness, contrast, saturation 0.4, hue 0.1), the cutout; at ``image_size=64`` (its native
size, a departure from the paper): random crop 64 pad 8, flip, the cutout.  The test splits are
CIFAR's test batches and TinyImageNet's validation images (resized to 32, ``Resize(32)``, at
``image_size=32``), unaugmented."""
from pathlib import Path

from torchvision import datasets, transforms
from torchvision.datasets import cifar

from .errors import DatasetDamagedError, DatasetNotFoundError
from .transforms import RandomErase

_TORCHVISION = {'cifar10': datasets.CIFAR10, 'cifar100': datasets.CIFAR100}
_REQUIRED = {
    'cifar10': ('cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch', 'batches.meta'],
                'the CIFAR-10 python version (cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html), '
                'extracted'),
    'cifar100': ('cifar-100-python', ['train', 'test', 'meta'],
                 'the CIFAR-100 python version (cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html), '
                 'extracted'),
    'tinyimagenet': ('tiny-imagenet-200', ['wnids.txt', 'train/', 'val/images/', 'val/val_annotations.txt'],
                     'Tiny ImageNet-200 (tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip), '
                     'extracted'),
}


def static_images(name: str, root, train: bool, augment: bool = True, image_size: int = 32):
    """The ``train`` or test split of ``'cifar10'``, ``'cifar100'`` or ``'tinyimagenet'`` (``image_size``:
    TinyImageNet only, 32 or 64); the training split augmented unless not ``augment``."""
    root = Path(root)
    folder = _check(name, root)
    transform = _transform(name, train and augment, image_size if name == 'tinyimagenet' else 32)
    if name == 'tinyimagenet':
        return TinyImageNet(folder, train, transform)
    try:
        return _TORCHVISION[name](str(root), train=train, transform=transform, download=False)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        cls = _TORCHVISION[name]
        damaged = [f for f, md5 in cls.train_list + cls.test_list + [[cls.meta['filename'], cls.meta['md5']]]
                   if not cifar.check_integrity(str(folder / f), md5)]
        raise DatasetDamagedError(f'{name}: {", ".join(damaged) or "some files"} in {folder} do(es) not match the published '
                         f'MD5 checksum (an incomplete or damaged copy?): place {_REQUIRED[name][2]} there again. '
                         'Nothing was changed.') from error


class TinyImageNet(datasets.ImageFolder):
    """Tiny ImageNet-200 in its distributed layout, read in place: training images
    ``train/<wnid>/images/*.JPEG`` (classes numbered in sorted wnid order); the test split
    is the validation set, ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``
    (file, wnid, box), so nothing needs to be reorganized."""

    def __init__(self, folder: Path, train: bool, transform=None):
        super().__init__(str(folder / 'train'), transform=transform)
        wnids = (folder / 'wnids.txt').read_text().split()
        if sorted(wnids) != self.classes:
            missing = sorted(set(wnids) - set(self.classes))
            raise DatasetNotFoundError(f'tinyimagenet: {folder / "train"} should hold one folder per wnid of '
                                       f'wnids.txt; missing {", ".join(missing[:5]) or "none"}'
                                       f'{" ..." if len(missing) > 5 else ""}, unexpected '
                                       f'{", ".join(sorted(set(self.classes) - set(wnids))[:5]) or "none"}. '
                                       'Extract tiny-imagenet-200.zip there again.')
        if not train:
            rows = [line.split('\t') for line in (folder / 'val' / 'val_annotations.txt').read_text().splitlines()
                    if line.strip()]
            unknown = sorted({'\t'.join(row) for row in rows if len(row) < 2 or row[1] not in self.class_to_idx})
            if unknown:
                raise DatasetNotFoundError(f'tinyimagenet: lines of val/val_annotations.txt without a wnid of '
                                           f'wnids.txt ({"; ".join(unknown[:3])}); extract tiny-imagenet-200.zip '
                                           'there again.')
            self.samples = [(str(folder / 'val' / 'images' / row[0]), self.class_to_idx[row[1]]) for row in rows]
            self.imgs, self.targets = self.samples, [label for _, label in self.samples]


def _check(name: str, root: Path) -> Path:
    folder, files, what = _REQUIRED[name]
    missing = [f for f in files if not (root / folder / f).exists()]
    if missing:
        raise DatasetNotFoundError(f'{name} is not in {root}: place {what} so that {root / folder}/ holds '
                                   f'{", ".join(files)} (missing: {", ".join(missing)}). Nothing is downloaded '
                                   'automatically, and nothing was written.')
    return root / folder


def _transform(name: str, augment: bool, size: int):
    """PIL image -> ``[3, size, size]`` pixels in [0, 1]: augmented (``augment``) or not; ``size`` 32 of a
    64x64 TinyImageNet image is the authors' random resized crop in training, their ``Resize(32)`` otherwise."""
    authors = name == 'tinyimagenet' and size == 32
    if augment and authors:
        steps = [transforms.RandomResizedCrop(size, scale=(0.08, 1.0)), transforms.RandomHorizontalFlip(),
                 transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)]
    elif augment:
        steps = [transforms.RandomCrop(size, padding=size // 8), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(size)] if authors else []
    steps.append(transforms.ToTensor())
    if augment:
        steps.append(RandomErase())
    return transforms.Compose(steps)
