"""Fixtures shared by the test files that run sj_ei's CuPy backend on the CPU; one torch thread per
test process and its subprocesses (a second thread makes the suite ~10x slower on a busy 2-core machine)."""
import os

import pytest
import torch

from sj_ei.lif import cupy_launch

from cuda_emulation import Emulator

torch.set_num_threads(1)
os.environ.setdefault('OMP_NUM_THREADS', '1')  # for the subprocesses (the trainer sets 1 itself: its threads key)


@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
    """Compiles sj_ei's CUDA kernels as C++ and runs them over an emulated thread grid."""
    return Emulator(tmp_path_factory.mktemp('kernels'))


@pytest.fixture
def emulated_cupy(emulator, monkeypatch):
    """``sj_ei.lif.cupy_launch`` runs its kernels on the CPU (as in test_cupy_backend)."""
    monkeypatch.setattr(cupy_launch, '_launch', emulator.launch)
    monkeypatch.setattr(cupy_launch, 'require_cupy', lambda tensor: None)
