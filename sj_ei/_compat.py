"""The one place where sj_ei adapts spikingjelly 0.0.0.0.14 (the paper's release, the
last with the CuPy neuron backend) to today's numpy and torch.  Imported first by sj_ei.

1. numpy 2 removed the alias ``np.int`` (it was the builtin ``int``).  spikingjelly's
   CuPy kernel launcher (``auto_cuda.base.CKernel.check_ctypes``) still compares integer
   kernel arguments with ``np.int``, so every launch of its CuPy LIF kernel raises
   ``AttributeError`` on numpy 2.  Restoring the alias with its old meaning fixes that.
2. spikingjelly decorates its surrogate functions with ``torch.jit.script``, which torch
   2.14 deprecates with a FutureWarning at import; it says nothing a user can act on.
"""
import warnings

import numpy as np

if not hasattr(np, 'int'):
    np.int = int

warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
