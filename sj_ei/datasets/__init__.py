"""Datasets of the paper's settings (its Appendix F.6; preprocessing as in the authors' code)
and the built-in synthetic events.

``build(name, root, T, train, **options)`` gives a ``Dataset`` of ``(x, label)``: event
data as float frames ``[T, 2, H, W]``, static images as ``[C, H, W]`` pixels in [0, 1]
(the model repeats them over T; never normalized, as E-I layers need non-negative input).  ``info(name)`` gives what a model needs to know about the data.  A
dataset that is not on disk raises ``DatasetNotFoundError`` saying which files to place
where, before anything is written, and a file that fails its published MD5 checksum raises
``DatasetDamagedError``; nothing is downloaded, and nothing of the user's is
ever deleted or changed.
"""
from .errors import DatasetDamagedError, DatasetNotFoundError
from .synthetic import CLASSES as SYNTHETIC_CLASSES, SyntheticEvents

_INFO = {
    'synthetic': dict(num_classes=len(SYNTHETIC_CLASSES), in_channels=2, size=(32, 32), events=True),
    'dvsgesture': dict(num_classes=11, in_channels=2, size=(48, 48), events=True),
    'cifar10dvs': dict(num_classes=10, in_channels=2, size=(48, 48), events=True),
    'cifar10': dict(num_classes=10, in_channels=3, size=(32, 32), events=False),
    'cifar100': dict(num_classes=100, in_channels=3, size=(32, 32), events=False),
    'tinyimagenet': dict(num_classes=200, in_channels=3, size=(32, 32), events=False),
}
NAMES = tuple(_INFO)
#: options of ``build('synthetic', ...)`` and their defaults
SYNTHETIC_OPTIONS = dict(num_samples=1024, num_test_samples=512, size=32, seed=0)
#: options of ``build`` for the other datasets (``image_size``: TinyImageNet only) and their defaults
OPTIONS = dict(augment=True, image_size=32)
#: TinyImageNet's image sizes: the authors' (the default) and the native one
TINYIMAGENET_SIZES = (32, 64)


def model_input(x):
    """A loader batch as a model's input: events ``[B, T, C, H, W] -> [T, B, C, H, W]``;
    images ``[B, C, H, W]`` as they are (the model repeats them over T)."""
    return x.transpose(0, 1) if x.dim() == 5 else x


def info(name: str, **options) -> dict:
    """``dict(num_classes, in_channels, size=(H, W), events)`` of dataset ``name``
    (``size`` follows the ``size`` option of ``'synthetic'`` and the ``image_size`` of ``'tinyimagenet'``)."""
    if name not in _INFO:
        raise ValueError(f'unknown dataset {name!r}; choose one of {", ".join(NAMES)}')
    result = dict(_INFO[name])
    side = options.get('size') if name == 'synthetic' else options.get('image_size') if name == 'tinyimagenet' else None
    if side is not None:
        result['size'] = (side, side)
    return result


def build(name: str, root, T: int, train: bool, **options):
    """The train or test split of dataset ``name`` stored under ``root``.

    ``'synthetic'`` needs no files (``root`` is unused) and takes the options
    ``SYNTHETIC_OPTIONS``: ``num_samples`` / ``num_test_samples`` (the train / test split's
    size), ``size`` (frame side) and ``seed`` (the two splits never share a sample).
    The event datasets frame their recordings into ``T`` frames by event count; the
    static ones ignore ``T``.  The training splits are augmented as in the authors' code unless
    ``augment=False`` (the synthetic data have no augmentation); ``image_size`` (TinyImageNet only) is
    32, the authors' pipeline, or 64, the native size (``static``).
    """
    info(name)
    if not isinstance(T, int) or T < 1:
        raise ValueError(f'T must be a positive int, got {T!r}')
    if name == 'synthetic':
        unknown = sorted(set(options) - set(SYNTHETIC_OPTIONS) - {'augment'})
        if unknown:
            raise ValueError(f"dataset 'synthetic' has no option {', '.join(unknown)}; "
                             f"its options are {', '.join(SYNTHETIC_OPTIONS)}, augment")
        o = {**SYNTHETIC_OPTIONS, **options}
        return SyntheticEvents(o['num_samples'] if train else o['num_test_samples'], T=T, size=o['size'],
                               seed=2 * o['seed'] + (0 if train else 1))
    allowed = set(OPTIONS) if name == 'tinyimagenet' else {'augment'}
    if set(options) - allowed:
        raise ValueError(f'dataset {name!r} has no option {", ".join(sorted(set(options) - allowed))}; its options '
                         f'are {", ".join(sorted(allowed))}')
    o = {**OPTIONS, **options}
    if o['image_size'] not in TINYIMAGENET_SIZES:
        raise ValueError(f"tinyimagenet: image_size must be 32 (the authors' pipeline) or 64 (the native size), "
                         f"got {o['image_size']!r}")
    if name in ('dvsgesture', 'cifar10dvs'):
        from .events import event_frames
        return event_frames(name, root, T, train, o['augment'])
    from .static import static_images
    return static_images(name, root, train, o['augment'], o['image_size'])
