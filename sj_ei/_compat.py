"""The one module that knows which spikingjelly is installed: 0.0.0.0.14 (the paper's
release, with a CuPy backend for its neurons) or 2.x (no CuPy backend, no ``backend``
argument, no ``functional.set_backend``).  Everything else in sj_ei imports what differs
from here.

- ``SJ_VERSION``: the installed spikingjelly's version string (neither release defines
  ``__version__``; the package metadata tells them apart).
- ``HAS_CUPY_BACKEND``: spikingjelly's own neurons (``LIFNode``, ...) can run on CuPy
  (0.0.0.0.14 only).  sj_ei's fused E-I neuron has its own CuPy kernels on both.
- ``MemoryModule`` / ``LIFNode``: base classes for sj_ei's stateful modules that carry a
  ``backend`` attribute the spikingjelly way on both versions (validated against the
  subclass's ``supported_backends``; ``LIFNode(..., backend='torch')`` accepted on both).
- ``NEURON_BASES``: the base classes of spikingjelly's spiking neurons (2.x adds ``SimpleBaseNode``).
- ``switch_backend(net, backend)``: how this release switches a network's modules to a backend
  (``sj_ei.set_backend``, in ``sj_ei.backends``, is the public call that checks and explains).
- ``lif_node_charges_like_sj_ei(tau, decay_input, v_reset)``: whether spikingjelly's ``LIFNode``
  rounds its charge as sj_ei's LIF does (always on 0.0.0.0.14; on 2.x at the paper's tau = 2, not
  at every tau).
- ``op_counter()``: spikingjelly 2's operation counters (``activation_based.op_counter``); an
  ``ImportError`` saying so on 0.0.0.0.14, which has none.

numpy 2 and spikingjelly 0.0.0.0.14: its CuPy kernel launcher
(``auto_cuda.base.CKernel.check_ctypes``, run before every launch of its CuPy LIF kernels)
compares integer arguments with ``np.int``, an alias of ``int`` that numpy removed in 1.24,
so every such launch raises ``AttributeError``.  sj_ei gives that one module a view of
numpy that still has the alias (``_NumpyWithIntAlias``); numpy itself, and every other
module, is left as it is.
"""
import importlib.metadata
import math
import types
import warnings
from typing import Optional

import numpy as np
from torch import nn

SJ_VERSION: str = importlib.metadata.version('spikingjelly')
SJ_MAJOR: int = int(SJ_VERSION.split('.')[0])  # 0 (0.0.0.0.14) or 2
HAS_CUPY_BACKEND: bool = SJ_MAJOR == 0

with warnings.catch_warnings():
    # spikingjelly 0.0.0.0.14 compiles functions with torch.jit.script while its modules are imported
    # (here those sj_ei uses: layer for sj_ei.models, neuron with surrogate), which torch 2.14 answers
    # with a FutureWarning users cannot act on (and which preceded every message of sj_ei's command
    # line).  Only that warning, only during this import: the filters are restored after it.
    warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
    from spikingjelly.activation_based import base, functional, layer, neuron  # noqa: F401 (layer: compiled here)
    if SJ_MAJOR == 0:
        from spikingjelly.activation_based.auto_cuda import base as _auto_cuda_base

if SJ_MAJOR == 0:
    class _NumpyWithIntAlias(types.ModuleType):
        """numpy, as ``auto_cuda.base`` sees it: with the ``np.int`` alias numpy removed."""
        int = int

        def __getattr__(self, name):
            return getattr(np, name)

    if not hasattr(np, 'int'):  # numpy >= 1.24
        _auto_cuda_base.np = _NumpyWithIntAlias('numpy')

    MemoryModule = base.MemoryModule
    LIFNode = neuron.LIFNode
    NEURON_BASES = (neuron.BaseNode,)
else:
    class _Backend:
        """The ``backend`` attribute spikingjelly 2 dropped, as 0.0.0.0.14 had it: one of
        ``supported_backends`` (default ``('torch',)``), checked when it is set."""
        _backend = 'torch'

        @property
        def supported_backends(self) -> tuple:
            return ('torch',)

        @property
        def backend(self) -> str:
            return self._backend

        @backend.setter
        def backend(self, value: str):
            if value not in self.supported_backends:
                raise NotImplementedError(
                    f"{value} is not a supported backend of {self._get_name()} in step_mode "
                    f"'{self.step_mode}'; it supports {self.supported_backends}")
            self._backend = value

        def extra_repr(self):
            return f'{super().extra_repr()}, backend={self.backend}'

    class MemoryModule(_Backend, base.MemoryModule):
        """spikingjelly 2's ``MemoryModule`` with a ``backend`` attribute."""

    NEURON_BASES = (neuron.BaseNode, neuron.SimpleBaseNode)

    class LIFNode(_Backend, neuron.LIFNode):
        """spikingjelly 2's ``LIFNode`` that takes ``backend=`` like 0.0.0.0.14's."""

        def __init__(self, *args, backend: str = 'torch', **kwargs):
            super().__init__(*args, **kwargs)
            self.backend = backend


def lif_node_charges_like_sj_ei(tau: float, decay_input: bool, v_reset: Optional[float]) -> bool:
    """Whether spikingjelly's ``LIFNode`` charges ``H[t]`` bit for bit as sj_ei's LIF does (``sj_ei.lif``
    and the CuPy kernels, which follow 0.0.0.0.14).  Without input decay and with ``v_reset`` None or 0,
    0.0.0.0.14 charges ``V * (1 - 1/tau) + X`` and spikingjelly 2 ``V - V/tau + X``: both round the same
    only when ``tau`` is a power of two (the paper's tau = 2); otherwise potentials may be 1 ulp apart."""
    if SJ_MAJOR == 0 or decay_input or v_reset not in (None, 0.0):
        return True
    return math.frexp(tau)[0] == 0.5


def op_counter() -> types.ModuleType:
    """spikingjelly 2's ``spikingjelly.activation_based.op_counter`` (counters, counter modes, energy models)."""
    if SJ_MAJOR == 0:
        raise ImportError(f'spikingjelly {SJ_VERSION} has no op_counter (spikingjelly 2 has it); '
                          'count with sj_ei.energy, which works on both releases')
    from spikingjelly.activation_based import op_counter as module
    return module


def switch_backend(net: nn.Module, backend: str) -> list:
    """Switch every module of ``net`` that has a backend to ``backend`` (a known one this machine can run:
    ``sj_ei.set_backend`` checks), the way this spikingjelly release does; or, where some modules cannot
    run it, change nothing and return what each of them is (``"'name' (why)"``).

    On spikingjelly 0.0.0.0.14 this is ``functional.set_backend(net, backend)`` (its own
    neurons switch too; modules without that backend keep theirs, with spikingjelly's warning).
    On 2.x it switches sj_ei's modules; spikingjelly 2's own neurons have no CuPy backend.
    """
    if SJ_MAJOR == 0:
        functional.set_backend(net, backend)
        return []
    cannot = []
    for name, m in net.named_modules():
        if isinstance(m, _Backend) and backend not in m.supported_backends:
            cannot.append(f"'{name}' ({type(m).__name__} in step_mode '{m.step_mode}' supports {m.supported_backends})")
        elif isinstance(m, NEURON_BASES) and not isinstance(m, _Backend) \
                and backend != 'torch':
            cannot.append(f"'{name}' (spikingjelly's {type(m).__name__}: spikingjelly 2 has no CuPy backend)")
    if not cannot:
        for m in net.modules():
            if isinstance(m, _Backend):
                m.backend = backend
    return cannot

