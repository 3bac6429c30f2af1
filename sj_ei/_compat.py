"""The one place where sj_ei adapts spikingjelly 0.0.0.0.14 (the paper's release, the
last with the CuPy neuron backend) to today's numpy and torch.  Imported first by sj_ei.

1. numpy removed the alias ``np.int`` (the builtin ``int``; deprecated in 1.20, gone since
   1.24, so absent from every numpy 2).  spikingjelly's CuPy kernel launcher
   (``auto_cuda.base.CKernel.check_ctypes``, run before every launch of its CuPy LIF
   kernels) still compares integer arguments with ``np.int``, so each such launch raises
   ``AttributeError``.  Restoring the alias with its old meaning fixes that and changes
   nothing else: numpy itself no longer uses the name.
2. spikingjelly decorates its surrogate functions with ``torch.jit.script``, which torch
   2.14 deprecates with a FutureWarning at import; it says nothing a user can act on.
"""
import warnings

import numpy as np

if not hasattr(np, 'int'):
    np.int = int

warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
