"""The former name of ``sj_ei.lif.cupy_launch`` (CuPy availability and launching; the kernels' CUDA C is in
``sj_ei.lif.cupy_code``), kept importable for existing code: ``from sj_ei.cupy_backend import
CupyUnavailableError`` still works."""
import sys

from .lif import cupy_launch

sys.modules[__name__] = cupy_launch
