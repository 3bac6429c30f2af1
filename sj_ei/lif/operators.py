"""The fused LIF as ``torch.library`` custom operators, ``torch.ops.sj_ei.*``: what ``torch.compile``,
``torch.export``, FakeTensor tracing and ``torch.library.opcheck`` see instead of Python that loops or
launches kernels.  Two families with the same arguments, one per kernel::

    torch.ops.sj_ei.ei_lif_forward(d, i_sh, gain_e, bias, v_init, v_rest, store_v_seq, *constants)
        -> spikes, v_last, v_seq                                     (the torch kernel: sj_ei.lif.reference)
    torch.ops.sj_ei.ei_lif_forward_cupy(d, i_sh, gain_e, bias, v_init, v_rest, store_v_seq, save, *constants)
        -> spikes, v_last, v_seq, h_seq, n_seq                       (the CuPy kernel: sj_ei.lif.cupy_launch)
    torch.ops.sj_ei.lif_forward[_cupy](x_seq, v_init, v_rest, store_v_seq, save, *constants)
        -> spikes, v_last, v_seq, h_seq
    and a ``*_backward`` operator for each (what ``register_autograd`` calls).

- ``d``, ``i_sh [T, N, C, *S]`` (``d = I_EE - I_EI``, ``i_sh = I_sh~``), ``gain_e``, ``bias [C]``: an E-I
  layer's ``EICurrents``; ``x_seq [T, N, ...]``: a plain input current.
- ``v_init``: ``[N, ...]`` (the CuPy kernels: anything broadcastable to it), or None: every neuron at
  the float ``v_rest`` (nothing to keep for the backward).
- ``constants``: ``LIFConfig.args()`` (tau, v_threshold, v_reset, decay_input, detach_reset, surrogate,
  surrogate_alpha); every kernel is specialized for them.
- ``save``: whether the forward writes what its backward reads (``h_seq``, ``n_seq``; ``[0]`` otherwise);
  the caller passes True exactly when autograd will need them.  ``v_seq`` is ``[0]`` unless ``store_v_seq``.

The torch family runs on every device (the CPU, and CUDA with backend 'torch'); the CuPy family
launches the generated CUDA kernels on the tensors' device (a tensor CuPy cannot process is
refused by ``sj_ei.lif.dispatch`` before, with one clear error; the tests run it on the CPU through
an emulation of the CUDA thread grid that replaces the launcher).  Each operator has a fake
implementation (shapes and dtypes only) and each forward an autograd formula calling its backward
operator.
"""
import torch
from torch.library import custom_op

from . import cupy_launch, reference
from .config import CONSTANTS, config_of_args

_N_CONSTANTS = len(CONSTANTS.split(','))
_OPTIONAL_GRADS = 'Tensor? grad_spikes, Tensor? grad_v_last, Tensor? grad_v_seq'
_SCHEMAS = {
    'ei_lif_forward': f'(Tensor d, Tensor i_sh, Tensor gain_e, Tensor bias, Tensor? v_init, float v_rest, '
                      f'bool store_v_seq, {CONSTANTS}) -> (Tensor, Tensor, Tensor)',
    'ei_lif_backward': f'({_OPTIONAL_GRADS}, Tensor d, Tensor i_sh, Tensor gain_e, Tensor bias, Tensor? v_init, '
                       f'float v_rest, {CONSTANTS}) -> (Tensor, Tensor, Tensor, Tensor, Tensor)',
    'ei_lif_forward_cupy': f'(Tensor d, Tensor i_sh, Tensor gain_e, Tensor bias, Tensor? v_init, float v_rest, '
                           f'bool store_v_seq, bool save, {CONSTANTS}) -> (Tensor, Tensor, Tensor, Tensor, Tensor)',
    'ei_lif_backward_cupy': f'({_OPTIONAL_GRADS}, Tensor h_seq, Tensor n_seq, Tensor i_sh, Tensor gain_e, '
                            f'Tensor bias, ScalarType dtype, {CONSTANTS}) -> (Tensor, Tensor, Tensor, Tensor, Tensor)',
    'lif_forward': f'(Tensor x_seq, Tensor? v_init, float v_rest, bool store_v_seq, bool save, {CONSTANTS}) '
                   '-> (Tensor, Tensor, Tensor, Tensor)',
    'lif_backward': f'({_OPTIONAL_GRADS}, Tensor h_seq, ScalarType x_dtype, {CONSTANTS}) -> (Tensor, Tensor)',
}
_SCHEMAS['lif_forward_cupy'], _SCHEMAS['lif_backward_cupy'] = _SCHEMAS['lif_forward'], _SCHEMAS['lif_backward']


def _define(name: str, kernel):
    """The operator ``sj_ei::name`` whose one implementation (every device) is ``kernel(*args, config)``."""
    def run(*args):
        return kernel(*args[:-_N_CONSTANTS], config_of_args(*args[-_N_CONSTANTS:]))
    return custom_op(f'sj_ei::{name}', run, mutates_args=(), schema=_SCHEMAS[name])


ei_lif_forward = _define('ei_lif_forward', reference.ei_lif_forward)
ei_lif_backward = _define('ei_lif_backward', reference.ei_lif_backward)
ei_lif_forward_cupy = _define('ei_lif_forward_cupy', cupy_launch.ei_lif_forward)
ei_lif_backward_cupy = _define('ei_lif_backward_cupy', cupy_launch.ei_lif_backward)
lif_forward = _define('lif_forward', reference.lif_forward)
lif_backward = _define('lif_backward', reference.lif_backward)
lif_forward_cupy = _define('lif_forward_cupy', cupy_launch.lif_forward)
lif_backward_cupy = _define('lif_backward_cupy', cupy_launch.lif_backward)
OPERATORS = (ei_lif_forward, ei_lif_backward, ei_lif_forward_cupy, ei_lif_backward_cupy,
             lif_forward, lif_backward, lif_forward_cupy, lif_backward_cupy)


# ---------------------------------------------------------------- fake implementations (shapes, dtypes)

def _sequences(like, dtype, *flags):
    """``spikes [T, N, ...]``, ``v_last [N, ...]`` and one ``[T, N, ...]`` (or ``[0]``) per flag."""
    return (like.new_empty(like.shape, dtype=dtype), like.new_empty(like.shape[1:], dtype=dtype),
            *(like.new_empty(like.shape if flag else (0,), dtype=dtype) for flag in flags))


@ei_lif_forward.register_fake
def _(d, i_sh, gain_e, bias, v_init, v_rest, store_v_seq, *constants):
    return _sequences(d, reference.compute_dtype(d, i_sh), store_v_seq)


@ei_lif_forward_cupy.register_fake
def _(d, i_sh, gain_e, bias, v_init, v_rest, store_v_seq, save, *constants):
    return _sequences(d, torch.float32, store_v_seq, save, save)


@lif_forward.register_fake
def _(x_seq, v_init, v_rest, store_v_seq, save, *constants):
    return _sequences(x_seq, reference.compute_dtype(x_seq), store_v_seq, save)


@lif_forward_cupy.register_fake
def _(x_seq, v_init, v_rest, store_v_seq, save, *constants):
    return _sequences(x_seq, torch.float32, store_v_seq, save)


@ei_lif_backward.register_fake
def _(grad_spikes, grad_v_last, grad_v_seq, d, i_sh, gain_e, bias, v_init, v_rest, *constants):
    return (torch.empty_like(d), torch.empty_like(i_sh), torch.empty_like(gain_e), torch.empty_like(bias),
            d.new_empty(d.shape[1:], dtype=reference.compute_dtype(d, i_sh)))


@ei_lif_backward_cupy.register_fake
def _(grad_spikes, grad_v_last, grad_v_seq, h_seq, n_seq, i_sh, gain_e, bias, dtype, *constants):
    return (h_seq.new_empty(h_seq.shape, dtype=dtype), h_seq.new_empty(h_seq.shape, dtype=dtype),
            torch.empty_like(gain_e), torch.empty_like(bias), h_seq.new_empty(h_seq.shape[1:]))


@lif_backward.register_fake
@lif_backward_cupy.register_fake
def _(grad_spikes, grad_v_last, grad_v_seq, h_seq, x_dtype, *constants):
    return h_seq.new_empty(h_seq.shape, dtype=x_dtype), h_seq.new_empty(h_seq.shape[1:])


# ---------------------------------------------------------------- autograd: each forward's backward operator

def _setup(ctx, saved, non_differentiable, v_init, constants, store_v_seq, **more):
    """What every backward needs: the saved tensors, ``v_init``'s shape and dtype (None: at rest), the
    constants, whether ``v_seq`` was returned; absent gradients stay None (never zero-filled)."""
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*non_differentiable)
    ctx.save_for_backward(*saved)
    ctx.v_meta = None if v_init is None else (v_init.shape, v_init.dtype)
    ctx.constants, ctx.store_v_seq = constants, store_v_seq
    ctx.__dict__.update(more)


def _grad_v(ctx, grad_v, index: int):
    """``dL/dv_init`` in ``v_init``'s shape and dtype, or None where ``v_init`` is None or needs none."""
    if ctx.v_meta is None or not ctx.needs_input_grad[index]:
        return None
    shape, dtype = ctx.v_meta
    return grad_v.sum_to_size(shape).to(dtype)


def _grads(ctx, grad_spikes, grad_v_last, grad_v_seq):
    return grad_spikes, grad_v_last, grad_v_seq if ctx.store_v_seq else None


def _ei_setup(ctx, inputs, output):
    d, i_sh, gain_e, bias, v_init, v_rest, store_v_seq, *constants = inputs
    _setup(ctx, (d, i_sh, gain_e, bias, v_init), (), v_init, constants, store_v_seq, v_rest=v_rest)


def _ei_backward(ctx, grad_spikes, grad_v_last, grad_v_seq):
    d, i_sh, gain_e, bias, v_init = ctx.saved_tensors
    *grads, grad_v = ei_lif_backward(*_grads(ctx, grad_spikes, grad_v_last, grad_v_seq), d, i_sh, gain_e, bias,
                                     v_init, ctx.v_rest, *ctx.constants)
    return (*grads, _grad_v(ctx, grad_v, 4), None, None, *[None] * _N_CONSTANTS)


def _ei_cupy_setup(ctx, inputs, output):
    d, i_sh, gain_e, bias, v_init, v_rest, store_v_seq, save, *constants = inputs
    _setup(ctx, (output[3], output[4], i_sh, gain_e, bias), output[3:], v_init, constants, store_v_seq,
           dtype=torch.promote_types(d.dtype, i_sh.dtype))


def _ei_cupy_backward(ctx, grad_spikes, grad_v_last, grad_v_seq, grad_h_seq=None, grad_n_seq=None):
    h_seq, n_seq, i_sh, gain_e, bias = ctx.saved_tensors
    *grads, grad_v = ei_lif_backward_cupy(*_grads(ctx, grad_spikes, grad_v_last, grad_v_seq), h_seq, n_seq, i_sh,
                                          gain_e, bias, ctx.dtype, *ctx.constants)
    return (*grads, _grad_v(ctx, grad_v, 4), None, None, None, *[None] * _N_CONSTANTS)


def _lif_setup(ctx, inputs, output):
    x_seq, v_init, v_rest, store_v_seq, save, *constants = inputs
    _setup(ctx, (output[3],), output[3:], v_init, constants, store_v_seq, x_dtype=x_seq.dtype)


def _lif_backward_with(backward):
    def run(ctx, grad_spikes, grad_v_last, grad_v_seq, grad_h_seq=None):
        h_seq, = ctx.saved_tensors
        grad_x, grad_v = backward(*_grads(ctx, grad_spikes, grad_v_last, grad_v_seq), h_seq, ctx.x_dtype,
                                  *ctx.constants)
        return (grad_x, _grad_v(ctx, grad_v, 1), None, None, None, *[None] * _N_CONSTANTS)
    return run


ei_lif_forward.register_autograd(_ei_backward, setup_context=_ei_setup)
ei_lif_forward_cupy.register_autograd(_ei_cupy_backward, setup_context=_ei_cupy_setup)
lif_forward.register_autograd(_lif_backward_with(lif_backward), setup_context=_lif_setup)
lif_forward_cupy.register_autograd(_lif_backward_with(lif_backward_cupy), setup_context=_lif_setup)
