"""Runs generated CUDA kernels on the CPU, for tests on machines without a GPU.

The kernel sources are compiled as C++ by g++ behind a prelude that declares the thread-index
variables, empties the CUDA qualifiers and defines the CUDA intrinsics the kernels use with the
same IEEE float semantics (``-ffp-contract=off``: no fused multiply-add, like the ``_rn``
intrinsics).  For each kernel a C++ driver runs it once per (block, thread) of the grid.

``Emulator.launch`` has the signature of ``sj_ei.lif.cupy_launch._launch`` and takes CPU tensors,
so the real ``torch.ops.sj_ei.*_cupy`` operators and their autograd formulas run on the CPU when the
launcher is swapped for it.  Every
tensor's storage is copied into a buffer with guard bytes on both sides, checked after the
launch: a thread writing outside its tensor fails the test instead of corrupting memory.
"""
import ctypes
import subprocess
from pathlib import Path

import torch

PRELUDE = r'''
#include <math.h>
#include <string.h>
struct sj_dim3 { unsigned int x, y, z; };
static sj_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
'''

GUARD = 4096
_PATTERN = 0xA5


def _driver(name: str, params) -> str:
    signature = ', '.join(f'{t} {n}' for t, n in params)
    return (f'extern "C" void launch_{name}(unsigned int grid, unsigned int block, {signature}) {{\n'
            '    gridDim.x = grid; gridDim.y = gridDim.z = 1; blockDim.x = block; blockDim.y = blockDim.z = 1;\n'
            '    for (unsigned int b = 0; b < grid; ++b)\n'
            '        for (unsigned int t = 0; t < block; ++t) {\n'
            f'            blockIdx.x = b; threadIdx.x = t; {name}({", ".join(n for _, n in params)});\n'
            '        }\n}\n')


def _ctype(ctype: str):
    if '*' in ctype:
        return ctypes.c_void_p
    return {'int': ctypes.c_int, 'long long': ctypes.c_longlong}[ctype]


class Emulator:
    """Compiles kernels (objects with ``name``, ``source``, ``params``) for the CPU and launches them."""

    def __init__(self, workdir: Path):
        self.workdir, self.functions, self.libraries = Path(workdir), {}, []

    def compile(self, kernels) -> None:
        """Compile ``kernels`` into one shared library (one g++ run)."""
        kernels = [k for k in {k.name: k for k in kernels}.values() if k.name not in self.functions]
        if not kernels:
            return
        stem = self.workdir / f'kernels{len(self.libraries)}'
        text = PRELUDE + ''.join(k.source + _driver(k.name, k.params) for k in kernels)
        stem.with_suffix('.cpp').write_text(text)
        result = subprocess.run(['g++', '-std=c++17', '-O1', '-ffp-contract=off', '-shared', '-fPIC',
                                 '-o', str(stem.with_suffix('.so')), str(stem.with_suffix('.cpp'))],
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f'g++ failed on the generated kernels:\n{result.stderr}')
        library = ctypes.CDLL(str(stem.with_suffix('.so')))
        self.libraries.append(library)
        for k in kernels:
            function = getattr(library, f'launch_{k.name}')
            function.argtypes = [ctypes.c_uint, ctypes.c_uint] + [_ctype(t) for t, _ in k.params]
            function.restype = None
            self.functions[k.name] = function

    def launch(self, kernel, grid: tuple, block: tuple, args: list) -> None:
        """Run ``kernel`` over ``grid`` x ``block`` (1-D) with CPU tensors for pointers, ints for integers."""
        self.compile([kernel])
        buffers = {}
        values = []
        for (ctype, name), arg in zip(kernel.params, args):
            if '*' not in ctype:
                values.append(int(arg))
                continue
            assert isinstance(arg, torch.Tensor) and arg.device.type == 'cpu', name
            storage = arg.untyped_storage()
            if storage.data_ptr() not in buffers:
                size = storage.nbytes()
                buffer = (ctypes.c_ubyte * (size + 2 * GUARD))()
                ctypes.memset(buffer, _PATTERN, size + 2 * GUARD)
                ctypes.memmove(ctypes.addressof(buffer) + GUARD, storage.data_ptr(), size)
                buffers[storage.data_ptr()] = (buffer, storage, name)
            buffer = buffers[storage.data_ptr()][0]
            values.append(ctypes.addressof(buffer) + GUARD + arg.data_ptr() - storage.data_ptr())
        (grid,), (block,) = grid, block
        self.functions[kernel.name](grid, block, *values)
        for buffer, storage, name in buffers.values():
            raw = bytes(buffer)
            if set(raw[:GUARD]) != {_PATTERN} or set(raw[GUARD + storage.nbytes():]) != {_PATTERN}:
                raise AssertionError(f'{kernel.name} wrote outside the tensor passed as {name}')
            ctypes.memmove(storage.data_ptr(), ctypes.addressof(buffer) + GUARD, storage.nbytes())
