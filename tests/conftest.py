"""Fixtures shared by the test files that run sj_ei's CuPy backend on the CPU."""
import pytest

from sj_ei import cupy_backend

from cuda_emulation import Emulator


@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
    """Compiles sj_ei's CUDA kernels as C++ and runs them over an emulated thread grid."""
    return Emulator(tmp_path_factory.mktemp('kernels'))


@pytest.fixture
def emulated_cupy(emulator, monkeypatch):
    """``sj_ei.cupy_backend`` runs its kernels on the CPU (as in test_cupy_backend)."""
    monkeypatch.setattr(cupy_backend, '_launch', emulator.launch)
    monkeypatch.setattr(cupy_backend, 'require_cupy', lambda tensor: None)
