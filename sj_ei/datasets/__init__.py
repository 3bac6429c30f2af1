"""Datasets of the paper's settings (SPEC section 6) and the built-in synthetic events.

``build(name, root, T, train)`` gives a ``Dataset`` of ``(x, label)``: event data as
float frames ``[T, 2, H, W]``, static images as ``[C, H, W]`` (the model repeats them
over T).  A dataset that is not on disk raises ``DatasetNotFoundError`` saying which
files to place where, before anything is written, and nothing of the user's is ever
deleted.
"""
from .errors import DatasetNotFoundError
from .synthetic import SyntheticEvents, CLASSES as SYNTHETIC_CLASSES

_INFO = {
    'synthetic': dict(num_classes=len(SYNTHETIC_CLASSES), in_channels=2, size=(32, 32), events=True),
    'dvsgesture': dict(num_classes=11, in_channels=2, size=(48, 48), events=True),
    'cifar10dvs': dict(num_classes=10, in_channels=2, size=(48, 48), events=True),
    'cifar10': dict(num_classes=10, in_channels=3, size=(32, 32), events=False),
    'cifar100': dict(num_classes=100, in_channels=3, size=(32, 32), events=False),
    'tinyimagenet': dict(num_classes=200, in_channels=3, size=(64, 64), events=False),
}
NAMES = tuple(_INFO)


def info(name: str, **options) -> dict:
    """``dict(num_classes, in_channels, size, events)`` of dataset ``name``."""
    if name not in _INFO:
        raise ValueError(f'unknown dataset {name!r}; choose one of {", ".join(NAMES)}')
    result = dict(_INFO[name])
    if name == 'synthetic' and 'size' in options:
        result['size'] = (options['size'], options['size'])
    return result


def build(name: str, root, T: int, train: bool, **options):
    """The train or test split of dataset ``name`` stored under ``root``.

    ``synthetic`` takes ``num_samples``, ``size``, ``seed`` (``root`` unused); the
    event datasets frame their events into ``T`` frames by event count.
    """
    info(name)
    if name == 'synthetic':
        num_samples = options.get('num_samples', 1024) if train else options.get('num_test_samples', 512)
        seed = options.get('seed', 0) * 2 + (0 if train else 1)
        return SyntheticEvents(num_samples, T=T, size=options.get('size', 32), seed=seed)
    if options:
        raise ValueError(f'dataset {name!r} takes no options, got {sorted(options)}')
    if name in ('dvsgesture', 'cifar10dvs'):
        from .events import event_frames
        return event_frames(name, root, T, train)
    from .static import static_images
    return static_images(name, root, train)
