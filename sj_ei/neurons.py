"""The two neuron populations of an E-I layer.

- I population: stateless, ``IPopulation`` (in ``sj_ei.i_population``, which the layers import).
- E population: a spikingjelly ``LIFNode`` with the paper's settings (docs/method.md section 2).
  ``EPopulation`` (made by ``e_population()``) is spikingjelly's own, for the composable
  path (the layer returns ``I_int``); ``EILIFNode`` is sj_ei's fused E population: it takes
  the layer's ``EICurrents`` and integrates them with the LIF dynamics over all T steps
  (``sj_ei.lif``: the ``torch.ops.sj_ei`` operators of its backend), or a plain ``I_int``.
"""
from typing import Optional, Union

import torch
from torch import nn
from spikingjelly.activation_based import surrogate

from . import _compat
from .currents import EICurrents
from .i_population import IPopulation  # noqa: F401 (sj_ei.neurons.IPopulation)
from .lif import LIFConfig, cupy_launch, lif


class EPopulation(_compat.LIFNode):
    """spikingjelly's ``LIFNode`` with the paper's defaults: ``tau=2``, ``decay_input=False``,
    ``v_threshold=1``, soft reset (``v_reset=None``), ``detach_reset=True``, sigmoid surrogate
    (a fresh ``surrogate.Sigmoid()`` when ``surrogate_function`` is None).  Input ``[N, ...]``
    (``'s'``) or ``[T, N, ...]`` (``'m'``), output spikes of the same shape.  On backend 'cupy'
    an input that CuPy cannot process is one clear error naming what to do, not a CUDA
    driver error from inside spikingjelly."""

    def __init__(self, tau: float = 2.0, decay_input: bool = False, v_threshold: float = 1.0,
                 v_reset: Optional[float] = None, surrogate_function: Optional[nn.Module] = None,
                 detach_reset: bool = True, step_mode: str = 's', backend: str = 'torch', store_v_seq: bool = False):
        super().__init__(tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                         surrogate_function=surrogate.Sigmoid() if surrogate_function is None else surrogate_function,
                         detach_reset=detach_reset, step_mode=step_mode, backend=backend, store_v_seq=store_v_seq)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.backend == 'cupy' and self.training:  # spikingjelly runs its CuPy kernel in training only
            cupy_launch.require_cupy(x_seq)
        return super().multi_step_forward(x_seq)


def e_population(**overrides) -> EPopulation:
    """The E population of the composable path: ``EPopulation`` (spikingjelly's ``LIFNode``
    with the paper's settings); any argument can be overridden, e.g.
    ``e_population(step_mode='m', backend='cupy')``."""
    return EPopulation(**overrides)


class EILIFNode(EPopulation):
    """sj_ei's fused E population: a spikingjelly ``LIFNode`` (the paper's defaults, see
    ``EPopulation``) that takes either

    - ``EICurrents`` (an E-I layer with ``output='currents'``, see ``sj_ei.EIBlock``):
      ``d = I_EE - I_EI`` and ``I_sh~`` ``[T, N, n_E, *S]`` (``'m'``) or ``[N, n_E, *S]`` (``'s'``); it
      integrates ``I_int = g_E d / I_sh~ + b_E`` inside the LIF loop, in float32, so ``I_int``
      never reaches memory; or
    - a plain ``I_int`` tensor (then it is a fast LIF for any layer).

    Output: spikes shaped like the currents, float32 (float64 for float64 input).  Backends:
    'torch' (the torch kernel, one operator over all T steps, on any device) and, in multi-step mode,
    'cupy' (one CUDA kernel over all T steps), both ``torch.ops.sj_ei`` operators (``sj_ei.lif``), so
    ``torch.compile`` sees one operator per neuron.  The state ``v`` ``[N, ...]``, ``store_v_seq``
    (``v_seq [T, N, ...]``), ``reset()``, hooks and spikingjelly monitors work as for ``LIFNode``.
    Surrogates: spikingjelly's ``Sigmoid`` and ``ATan``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lif_config()  # an unsupported surrogate is an error at once

    @property
    def supported_backends(self) -> tuple:
        """'cupy' (sj_ei's own kernels, on both spikingjelly releases) in step mode 'm' only."""
        return ('torch', 'cupy') if self.step_mode == 'm' else ('torch',)

    def lif_config(self) -> LIFConfig:
        """The node's settings; one clear error for a surrogate it cannot fuse."""
        return LIFConfig.of(self)

    def single_step_forward(self, x: Union[EICurrents, torch.Tensor]) -> torch.Tensor:
        if isinstance(x, EICurrents):
            x = x._replace(d=x.d.unsqueeze(0), i_sh=x.i_sh.unsqueeze(0))
        else:
            x = x.unsqueeze(0)
        spikes, self.v, _ = lif(x, self.v, self.lif_config())
        return spikes[0]

    def multi_step_forward(self, x_seq: Union[EICurrents, torch.Tensor]) -> torch.Tensor:
        spikes, self.v, v_seq = lif(x_seq, self.v, self.lif_config(), self.store_v_seq, self.backend)
        if self.store_v_seq:
            self.v_seq = v_seq
        return spikes
