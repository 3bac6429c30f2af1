"""The fused LIF's CuPy kernels on torch tensors: whether CuPy can run here (``require_cupy``, one clear
``CupyUnavailableError`` otherwise), launching a generated kernel (``sj_ei.lif.cupy_code``) on the
current torch CUDA stream, and the four kernels the ``torch.ops.sj_ei.*_cupy`` operators run::

    ei_lif_forward(d, i_sh, gain_e, bias, v_init, v_rest, store_v_seq, save, config)
        -> spikes, v_last, v_seq, h_seq, n_seq
    ei_lif_backward(grad_spikes, grad_v_last, grad_v_seq, h_seq, n_seq, i_sh, gain_e, bias, dtype, config)
        -> grad_d, grad_i_sh, grad_gain_e, grad_bias, grad_v_init
    lif_forward(x_seq, v_init, v_rest, store_v_seq, save, config) -> spikes, v_last, v_seq, h_seq
    lif_backward(grad_spikes, grad_v_last, grad_v_seq, h_seq, x_dtype, config) -> grad_x, grad_v_init

- ``d``, ``i_sh`` ``[T, N, C, *S]`` (any layout; float32, float16 or bfloat16, also mixed: promoted to
  the storage ``dtype``), ``gain_e``, ``bias`` ``[C]``; ``x_seq [T, N, *F]``.
- ``v_init``: None (every neuron at ``v_rest``) or a tensor broadcastable to one step ``[N, ...]``.
- Outputs are float32: ``spikes [T, N, ...]``, ``v_last [N, ...]``, ``v_seq [T, N, ...]`` (``[0]`` unless
  ``store_v_seq``), the sequences the backward reads, ``h_seq`` and ``n_seq = d / I_sh~``
  ``[T, N, ...]`` (``[0]`` unless ``save``: inference writes none).  The backward returns the currents'
  gradients in the storage dtype, ``g_E``'s and ``b_E``'s in theirs, ``dL/dV[-1]`` per neuron in float32.
- An absent incoming gradient (None) is read as a single 0 (stride 0), not materialized.
"""
import math
import warnings
from functools import lru_cache
from typing import Optional

import numpy as np
import torch

from ..errors import UserError
from .config import LIFConfig
from .cupy_code import Kernel, backward_kernel, forward_kernel

BLOCK = 256
_HINT = "use backend='torch' (sj_ei.set_backend(net, 'torch')) or move the network and its input to a CUDA device"


def install_hint() -> str:
    """How to install the CuPy wheel built for the CUDA major version of the installed torch."""
    cuda = torch.version.cuda
    if cuda is None:
        return ('pip install the CuPy of your CUDA torch: cupy-cuda12x for CUDA 12, cupy-cuda13x for CUDA 13 '
                '(or sj_ei[cupy-cuda12x] / sj_ei[cupy-cuda13x])')
    wheel = f"cupy-cuda{cuda.split('.')[0]}x"
    extra = f' (or sj_ei[{wheel}])' if wheel in ('cupy-cuda12x', 'cupy-cuda13x') else ''
    return f'pip install {wheel}{extra}, the CuPy for the CUDA {cuda} of this torch'


class CupyUnavailableError(UserError, RuntimeError):
    """backend 'cupy' was asked for where it cannot run."""


@lru_cache(maxsize=None)
def _cupy_problem() -> Optional[str]:
    """Why CuPy cannot launch kernels here, or None."""
    try:
        import cupy
    except Exception as e:  # ImportError, or CuPy's own error when its CUDA libraries are missing
        return f"backend 'cupy' needs CuPy, which cannot be imported ({e}): {install_hint()}; or " + _HINT
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"backend 'cupy' needs a GPU that CuPy can use, and CuPy reports: {e}; " + _HINT
    return None


@torch.compiler.assume_constant_result
def _problem() -> Optional[str]:
    """``_cupy_problem()``, which ``torch.compile`` asks once while it traces (CuPy's device query is no
    torch operation), so that a compiled network with backend 'cupy' stays one graph."""
    return _cupy_problem()


def require_cupy(tensor: torch.Tensor) -> None:
    """Raise one clear ``CupyUnavailableError`` unless CuPy kernels can process ``tensor``."""
    if not tensor.is_cuda:
        where = ('this machine has no CUDA GPU' if not torch.cuda.is_available()
                 else f'the tensor is on {tensor.device}')
        raise CupyUnavailableError(f"backend 'cupy' needs CUDA tensors, but {where}; " + _HINT)
    problem = _problem()
    if problem:
        raise CupyUnavailableError(problem)


@lru_cache(maxsize=None)
def _cupy_kernel(name: str, source: str):
    import cupy
    return cupy.RawKernel(source, name)


_INTEGER = {'int': np.int32, 'long long': np.int64}


def _launch(kernel: Kernel, grid: tuple, block: tuple, args: list) -> None:
    """Run ``kernel`` on the current PyTorch stream of the tensors' device; ``args`` follow ``kernel.params``
    (tensors for pointers, Python ints for integers)."""
    import cupy
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    values = tuple(np.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else _INTEGER[ctype](a)
                   for (ctype, _), a in zip(kernel.params, args))
    with cupy.cuda.Device(device.index), cupy_stream(cupy, torch.cuda.current_stream(device)):
        _cupy_kernel(kernel.name, kernel.source)(grid, block, values)


def cupy_stream(cupy, stream):
    """CuPy's handle of the torch CUDA ``stream``: through the CUDA stream protocol
    (``Stream.from_external``, CuPy >= 14) where the torch stream speaks it (``__cuda_stream__``),
    else from its raw pointer (``ExternalStream``, which CuPy 14 deprecates for the former)."""
    if hasattr(cupy.cuda.Stream, 'from_external') and hasattr(stream, '__cuda_stream__'):
        return cupy.cuda.Stream.from_external(stream)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        return cupy.cuda.ExternalStream(stream.cuda_stream, stream.device.index)


def _grid(numel: int):
    return (math.ceil(numel / BLOCK),), (BLOCK,)


def _rows(x: torch.Tensor, rows: int):
    """``(flat, stride)``: ``x`` as ``[rows, -1]`` with contiguous rows ``stride`` elements apart
    (a view when the layout allows, e.g. a channel slice; else a contiguous copy)."""
    flat = x.reshape(rows, -1)
    if flat.shape[1] > 1 and flat.stride(1) != 1:
        flat = flat.contiguous()
    return flat, flat.stride(0)


def _state(v_init: Optional[torch.Tensor], v_rest: float, step_shape, device):
    """``(v0, step)``: the initial potential as float32, one value for all (step 0) or one per neuron."""
    if v_init is None:
        return torch.full((1,), v_rest, device=device), 0
    if v_init.numel() == 1:
        return v_init.detach().float().reshape(1), 0
    return v_init.detach().float().expand(step_shape).contiguous(), 1


def _outputs(T: int, step_shape, device, store_v_seq: bool, save_count: int, save: bool):
    """Float32 ``spikes [T, *step]``, ``v_seq`` (or a one-element placeholder), ``v_last`` and the saved
    sequences (or placeholders)."""
    spikes = torch.empty((T, *step_shape), device=device)
    v_seq = torch.empty((T, *step_shape) if store_v_seq else (1,), device=device)
    saved = [torch.empty((T, *step_shape) if save else (1,), device=device) for _ in range(save_count)]
    return spikes, v_seq, torch.empty(step_shape, device=device), saved


def _returned(spikes, v_last, v_seq, saved, store_v_seq: bool, save: bool):
    """The forward's outputs, ``[0]`` in place of each placeholder."""
    nothing = lambda: spikes.new_empty(0)  # one each: an operator's outputs never alias
    return (spikes, v_last, v_seq if store_v_seq else nothing(), *(s if save else nothing() for s in saved))


def _grad_args(grad_spikes, grad_v_seq, grad_v_last, device):
    """The three incoming gradients as (tensor, step) kernel arguments; an absent one reads as 0."""
    zero = torch.zeros(1, device=device)
    return [a for g in (grad_spikes, grad_v_seq, grad_v_last)
            for a in ((zero, 0) if g is None else (g.float().contiguous(), 1))]


def _geometry(T: int, step_shape):
    """The E-I kernels' ``(T, numel, per_sample, inner)`` of currents ``[T, N, C, *S]``."""
    numel = step_shape.numel()
    return T, numel, numel // step_shape[0], numel // (step_shape[0] * step_shape[1])


def ei_lif_forward(d, i_sh, gain_e, bias, v_init, v_rest: float, store_v_seq: bool, save: bool, config: LIFConfig):
    T, N = d.shape[:2]
    step_shape = d.shape[1:]
    numel = step_shape.numel()
    dtype = torch.promote_types(d.dtype, i_sh.dtype)
    (diff, d_stride), (sh, sh_stride) = (_rows(x.to(dtype), T * N) for x in (d, i_sh))
    gain, bias_f = gain_e.detach().float().contiguous(), bias.detach().float().contiguous()
    v0, v_step = _state(v_init, v_rest, step_shape, d.device)
    spikes, v_seq, v_last, saved = _outputs(T, step_shape, d.device, store_v_seq, 2, save)
    if numel:
        _launch(forward_kernel(config, 'ei', dtype), *_grid(numel),
                [diff, d_stride, sh, sh_stride, gain, bias_f, v0, v_step,
                 spikes, v_seq, int(store_v_seq), *saved, int(save), v_last, *_geometry(T, step_shape)])
    return _returned(spikes, v_last, v_seq, saved, store_v_seq, save)


def ei_lif_backward(grad_spikes, grad_v_last, grad_v_seq, h_seq, n_seq, i_sh, gain_e, bias, dtype: torch.dtype,
                    config: LIFConfig):
    T, step_shape = h_seq.shape[0], h_seq.shape[1:]
    C = step_shape[1]
    device = h_seq.device
    sh, sh_stride = _rows(i_sh.to(dtype), T * step_shape[0])
    grads = [torch.empty(h_seq.shape, dtype=dtype, device=device) for _ in range(2)]
    grad_v_init, grad_gain, grad_bias = (torch.empty(step_shape, device=device) for _ in range(3))
    if step_shape.numel():
        _launch(backward_kernel(config, 'ei', dtype), *_grid(step_shape.numel()),
                [*_grad_args(grad_spikes, grad_v_seq, grad_v_last, device), h_seq, n_seq, sh, sh_stride,
                 gain_e.detach().float().contiguous(), *grads, grad_v_init, grad_gain, grad_bias,
                 *_geometry(T, step_shape)])
    per_channel = lambda t, like: t.reshape(step_shape[0], C, step_shape[2:].numel()).sum((0, 2)).to(like.dtype)
    return (*grads, per_channel(grad_gain, gain_e), per_channel(grad_bias, bias), grad_v_init)


def lif_forward(x_seq, v_init, v_rest: float, store_v_seq: bool, save: bool, config: LIFConfig):
    T, step_shape = x_seq.shape[0], x_seq.shape[1:]
    numel = step_shape.numel()
    x, x_stride = _rows(x_seq, T)
    v0, v_step = _state(v_init, v_rest, step_shape, x_seq.device)
    spikes, v_seq, v_last, saved = _outputs(T, step_shape, x_seq.device, store_v_seq, 1, save)
    if numel:
        _launch(forward_kernel(config, 'plain', x_seq.dtype), *_grid(numel),
                [x, x_stride, v0, v_step, spikes, v_seq, int(store_v_seq), *saved, int(save), v_last, T, numel])
    return _returned(spikes, v_last, v_seq, saved, store_v_seq, save)


def lif_backward(grad_spikes, grad_v_last, grad_v_seq, h_seq, x_dtype: torch.dtype, config: LIFConfig):
    T, step_shape = h_seq.shape[0], h_seq.shape[1:]
    numel = step_shape.numel()
    grad_x = torch.empty(h_seq.shape, dtype=x_dtype, device=h_seq.device)
    grad_v_init = torch.empty(step_shape, device=h_seq.device)
    if numel:
        _launch(backward_kernel(config, 'plain', x_dtype), *_grid(numel),
                [*_grad_args(grad_spikes, grad_v_seq, grad_v_last, h_seq.device), h_seq, grad_x, grad_v_init,
                 T, numel])
    return grad_x, grad_v_init
