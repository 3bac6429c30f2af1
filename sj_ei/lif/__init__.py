"""sj_ei's fused LIF neuron: the LIF dynamics over all T steps in one operator, driven by an E-I layer's
currents (the integration ``I_int = b_E + d g_E / I_sh~`` fused in) or by a plain input current, what
``sj_ei.EILIFNode`` runs on every backend.  One file per part, as spikingjelly 2 lays out its neuron ops:

- ``config.py``: ``LIFConfig``, the constants every kernel is specialized for (operator arguments);
- ``reference.py``: the torch kernel, forward and backward on any device (the specification);
- ``cupy_code.py``: the CUDA C of the CuPy kernels, generated per configuration and dtype;
- ``cupy_launch.py``: CuPy on torch tensors (availability, launching, the kernels' forward and backward);
- ``operators.py``: both kernels as ``torch.library`` operators ``torch.ops.sj_ei.*``, with fake
  implementations and autograd formulas;
- ``dispatch.py``: ``lif(x, v_init, config, store_v_seq, backend)``, the one place that checks arguments
  and picks the operators of a backend.
"""
from .config import SURROGATES, LIFConfig
from .dispatch import BACKENDS, lif

__all__ = ['BACKENDS', 'LIFConfig', 'SURROGATES', 'lif']
