"""spikingjelly 0.0.0.0.14's CuPy kernel launcher works on numpy 2 once sj_ei is imported."""
import subprocess
import sys

import numpy as np

import sj_ei  # noqa: F401  (applies the fix)
from spikingjelly.activation_based.auto_cuda import base


class FakeCupyArray:
    """Stands in for a ``cupy.ndarray`` (none can be made without a GPU)."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def test_spikingjelly_kernel_argument_check_accepts_integer_arrays(monkeypatch):
    kernel = base.CKernel1D(kernel_name='k')
    assert kernel.cparams['numel'].startswith('const int')
    monkeypatch.setattr(base.cupy, 'ndarray', FakeCupyArray)
    kernel.check_ctypes({'numel': FakeCupyArray(np.int64)})  # raised AttributeError: np.int on numpy 2


def test_without_the_fix_numpy_2_has_no_np_int():
    code = 'import numpy as np; print(hasattr(np, "int"))'
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip() == \
        str(int(np.__version__.split('.')[0]) < 2)
