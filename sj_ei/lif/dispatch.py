"""Which kernel runs the fused LIF, in one place: ``lif`` checks its arguments (one clear error for what a
kernel cannot take) and calls the ``torch.ops.sj_ei`` operators of the backend, 'torch' (the torch
kernel, ``sj_ei.lif.reference``, on any device) or 'cupy' (the CuPy kernels, on a CUDA device)."""
from typing import Union

import torch

from ..currents import EICurrents
from . import cupy_launch, operators  # noqa: F401 (operators: registers torch.ops.sj_ei)
from .config import LIFConfig
from .cupy_code import DTYPES
from .reference import compute_dtype

BACKENDS = ('torch', 'cupy')


def lif(x: Union[torch.Tensor, EICurrents], v_init: Union[float, torch.Tensor], config: LIFConfig,
        store_v_seq: bool = False, backend: str = 'torch'):
    """LIF neurons over all T steps: ``(spikes [T, ...], v_last [...], v_seq [T, ...] or None)``.

    ``x``: ``I_int [T, N, ...]``, or ``EICurrents`` with ``d``, ``i_sh`` ``[T, N, C, *S]`` and ``gain_e``,
    ``bias [C]`` (integrated on the fly, ``I_int = b_E + d g_E / I_sh~``, never written to memory).
    ``v_init``: a float (every neuron at rest) or ``[N, ...]`` (backend 'cupy': broadcastable to it).
    Differentiable in every tensor (spikes through the surrogate).  Spikes and potentials are
    float32 (float64 for float64 input on backend 'torch'; backend 'cupy' takes float32, float16 and
    bfloat16 currents and computes in float32).
    """
    if not isinstance(config, LIFConfig):
        raise TypeError(f'sj_ei.lif: config must be an sj_ei.lif.LIFConfig (e.g. LIFConfig.of(node)), '
                        f'got {type(config).__name__}')
    if backend not in BACKENDS:
        raise ValueError(f'sj_ei.lif: backend must be one of {BACKENDS}, got {backend!r}')
    currents = isinstance(x, EICurrents)
    tensors = tuple(x) if currents else (x,)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors + (v_init,)
                                           if isinstance(t, torch.Tensor))
    if backend == 'cupy':
        v_init, rest = _cupy_arguments(x, v_init, currents)
        if currents:
            spikes, v_last, v_seq, _, _ = torch.ops.sj_ei.ei_lif_forward_cupy(*x, v_init, rest, store_v_seq, save,
                                                                              *config.args())
        else:
            spikes, v_last, v_seq, _ = torch.ops.sj_ei.lif_forward_cupy(x, v_init, rest, store_v_seq, save,
                                                                        *config.args())
        return spikes, v_last, v_seq if store_v_seq else None
    step = tensors[0].shape[1:]
    rest = 0.0 if isinstance(v_init, torch.Tensor) else float(v_init)
    if isinstance(v_init, torch.Tensor):
        if v_init.shape != step:
            raise ValueError(f'the membrane potential v of shape {tuple(v_init.shape)} does not fit the neurons '
                             f'{list(step)}; call functional.reset_net(net) between batches of different shapes')
        v_init = v_init.to(compute_dtype(*tensors[:2]))
    else:
        v_init = None
    if currents:
        spikes, v_last, v_seq = torch.ops.sj_ei.ei_lif_forward(*x, v_init, rest, store_v_seq, *config.args())
    else:
        spikes, v_last, v_seq, _ = torch.ops.sj_ei.lif_forward(x, v_init, rest, store_v_seq, save, *config.args())
    return spikes, v_last, v_seq if store_v_seq else None


def _cupy_arguments(x, v_init, currents: bool):
    """``(v_init or None, v_rest)`` for the CuPy operators; one clear error for what the kernels cannot take."""
    head = x.d if currents else x
    cupy_launch.require_cupy(head)
    if currents:
        d, i_sh, gain_e, bias = x
        if d.shape != i_sh.shape or d.dim() < 3:
            raise ValueError("sj_ei.lif (backend 'cupy'): d and i_sh must both have the shape [T, N, C, *S], got "
                             f'{tuple(d.shape)} and {tuple(i_sh.shape)}')
        C = d.shape[2]
        if tuple(gain_e.shape) != (C,) or tuple(bias.shape) != (C,):
            raise ValueError(f"sj_ei.lif (backend 'cupy'): gain_e and bias must have the shape [C] = [{C}], "
                             f'got {tuple(gain_e.shape)} and {tuple(bias.shape)}')
    elif x.dim() < 2:
        raise ValueError(f"sj_ei.lif (backend 'cupy'): x_seq must have the shape [T, N, *F], got {tuple(x.shape)}")
    step = head.shape[1:]
    tensors = tuple(x) if currents else (x,)
    if isinstance(v_init, torch.Tensor):
        try:
            torch.broadcast_shapes(v_init.shape, step)
        except RuntimeError:
            raise ValueError(f"sj_ei.lif (backend 'cupy'): v_init of shape {tuple(v_init.shape)} does not fit one "
                             f'step of the neurons {list(step)}; call functional.reset_net(net) between batches of '
                             'different shapes') from None
        tensors += (v_init,)
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"sj_ei.lif (backend 'cupy'): all tensors must be on one device, got "
                         f'{sorted(map(str, devices))}')
    dtypes = {t.dtype for t in tensors if t.dim() > 1 and t is not v_init} - set(DTYPES)
    if dtypes:
        raise TypeError(f"backend 'cupy' computes in float32 from float32, float16 or bfloat16 inputs, got "
                        f"{sorted(map(str, dtypes))}; use backend='torch' for other dtypes")
    if step.numel() >= 2 ** 31:
        raise ValueError(f"backend 'cupy' handles fewer than 2**31 neurons per time step, got {step.numel()}; "
                         "use a smaller batch or backend='torch'")
    if isinstance(v_init, torch.Tensor):
        return v_init, 0.0
    return None, float(v_init)
