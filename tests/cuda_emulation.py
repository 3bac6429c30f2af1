"""Runs a generated CUDA kernel on the CPU: the kernel source is compiled as C++ with a
few lines that declare the thread-index variables and the CUDA qualifiers and rounding
intrinsics, plus a driver that calls the kernel once per (block, thread) of the grid."""
import ctypes
import subprocess
from pathlib import Path

import numpy as np

PRELUDE = r'''
#include <cmath>
struct sj_dim3 { unsigned int x, y, z; };
static sj_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
'''


class EmulatedKernel:
    """``kernel(grid, block, *args)`` with numpy float32 arrays for pointers and ints for ints."""

    def __init__(self, name: str, source: str, params, workdir: Path):
        self.params = params
        signature = ', '.join(f'{t} {n}' for t, n in params)
        driver = (f'extern "C" void launch(unsigned int grid, unsigned int block, {signature}) {{\n'
                  '    gridDim.x = grid; blockDim.x = block;\n'
                  '    for (unsigned int b = 0; b < grid; ++b)\n'
                  '        for (unsigned int t = 0; t < block; ++t) {\n'
                  f'            blockIdx.x = b; threadIdx.x = t; {name}({", ".join(n for _, n in params)});\n'
                  '        }\n}\n')
        cpp, lib = workdir / f'{name}.cpp', workdir / f'{name}.so'
        cpp.write_text(PRELUDE + source + driver)
        subprocess.run(['g++', '-O2', '-ffp-contract=off', '-shared', '-fPIC', '-o', str(lib), str(cpp)],
                       check=True, capture_output=True)
        self.launch = ctypes.CDLL(str(lib)).launch
        self.launch.argtypes = [ctypes.c_uint, ctypes.c_uint] + [
            ctypes.c_int if t == 'int' else ctypes.c_void_p for t, _ in params]

    def __call__(self, grid: int, block: int, *args):
        converted = []
        for (ctype, name), value in zip(self.params, args):
            if ctype == 'int':
                converted.append(int(value))
            else:
                assert value.dtype == np.float32 and value.flags.c_contiguous, name
                converted.append(value.ctypes.data)
        self.launch(grid, block, *converted)
