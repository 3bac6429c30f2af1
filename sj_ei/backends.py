"""Backends: ``set_backend(net, backend)`` runs every module of a network that has a backend on
``'torch'`` or ``'cupy'`` (GPU), on both spikingjelly releases; how each release switches its
modules is ``sj_ei._compat.switch_backend``, the refusals and what to do instead are here."""
import importlib.util

import torch
from torch import nn

from . import _compat
from .errors import UserError
from .lif.cupy_launch import install_hint

BACKENDS = ('torch', 'cupy')


class BackendError(UserError, ValueError):
    """A backend was asked of modules (or of a machine) that cannot run it."""


def set_backend(net: nn.Module, backend: str) -> None:
    """Run every module of ``net`` that has a backend on ``backend`` ('torch' or 'cupy').

    On spikingjelly 0.0.0.0.14 its own neurons switch too (modules without that backend keep
    theirs, with spikingjelly's warning).  On 2.x sj_ei's modules switch; a module that cannot run
    ``backend`` (for 'cupy': spikingjelly 2's own neurons, which have no CuPy backend) is one error,
    and nothing changes.
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if backend == 'cupy' and not torch.cuda.is_available():
        raise BackendError("backend 'cupy' runs CuPy kernels on a CUDA GPU, but torch sees no CUDA device "
                           "on this machine; use backend 'torch'")
    if backend == 'cupy' and importlib.util.find_spec('cupy') is None:
        raise BackendError(f"backend 'cupy' needs CuPy, which is not installed: {install_hint()}; "
                           "or use backend 'torch'")
    cannot = _compat.switch_backend(net, backend)
    if cannot:
        raise BackendError(
            f"backend {backend!r} is not available for {', '.join(cannot)} with spikingjelly {_compat.SJ_VERSION}; "
            "sj_ei's CuPy backend is its fused E-I neuron in step_mode 'm' (models.build(..., norm='ei')), "
            "spikingjelly 2's own neurons use its CUDA kernels on a GPU with backend 'torch', and "
            "spikingjelly 0.0.0.0.14 has CuPy LIF nodes")
