"""E-I layers: spikingjelly step modules that map input spikes to the integrated
current of the E population (SPEC section 1).

``EIConv2d`` and ``EILinear`` take ``x`` of shape ``[B, C, H, W]`` / ``[B, d]``
(``step_mode='s'``) or ``[T, B, C, H, W]`` / ``[T, B, d]`` (``'m'``) and return
``I_int`` with ``n_E = out_channels`` channels; with ``readout=True`` they return
``I_EE - I_EI`` (the output layer).  The E population (``sj_ei.e_population()``)
or any spikingjelly neuron follows.  On the first forward in training mode an
uninitialized layer initializes itself from its input (E-I Init, SPEC section 3).
"""
import math
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from spikingjelly.activation_based import base

from .circuit import ei_current, inhibition, project, scale_grad
from .neurons import IPopulation

_INITS = ('ei', 'kaiming')


class EIInitError(ValueError):
    """An E-I layer cannot be initialized from the data it was given."""


class _EILayer(nn.Module, base.StepModule):
    """Parameters and behaviour shared by every E-I layer.

    Ablation switches (SPEC section 5); the defaults are the paper's method:
    ``init='kaiming'`` draws ``weight_ee``/``weight_ie`` with Kaiming-normal instead of the
    exponential E-I Init (clamped to >= 0 when ``sign_constraint``);
    ``sign_constraint=False`` lifts Dale's law; ``eps=float`` replaces adaptive
    stabilization by a fixed epsilon in the denominator; ``grad_scale=False`` turns off
    the ``1/d`` scaling of the gradient of ``weight_ei``.
    """

    def __init__(self, out_features: int, weight_tail: tuple, ei_ratio: int, readout: bool, step_mode: str,
                 init: str, sign_constraint: bool, eps: Optional[float], grad_scale: bool,
                 i_population: Optional[IPopulation]):
        super().__init__()
        if ei_ratio < 1 or out_features // ei_ratio < 1:
            raise ValueError(f'{type(self).__name__}: ei_ratio={ei_ratio} leaves no inhibitory neuron for '
                             f'{out_features} excitatory outputs; use 1 <= ei_ratio <= {out_features}')
        if init not in _INITS:
            raise ValueError(f'{type(self).__name__}: init must be one of {_INITS}, got {init!r}')
        if eps is not None and eps <= 0:
            raise ValueError(f'{type(self).__name__}: eps must be > 0 or None (adaptive stabilization), got {eps}')
        self.n_e, self.n_i = out_features, out_features // ei_ratio
        self.ei_ratio, self.readout, self.step_mode = ei_ratio, readout, step_mode
        self.init, self.sign_constraint, self.eps, self.grad_scale = init, sign_constraint, eps, grad_scale
        self.fan_in = math.prod(weight_tail)
        self.i_population = i_population if i_population is not None else IPopulation()
        self.division = None  # exact; a module of sj_ei.division approximates 1 / I_sh~ (sj_ei.set_division)
        self.weight_ee = nn.Parameter(torch.empty(self.n_e, *weight_tail))
        self.weight_ie = nn.Parameter(torch.empty(self.n_i, *weight_tail))
        self.weight_ei = nn.Parameter(torch.empty(self.n_e, self.n_i))
        if not readout:
            self.gain_i = nn.Parameter(torch.empty(self.n_i))
            self.gain_e = nn.Parameter(torch.empty(self.n_e))
            self.bias = nn.Parameter(torch.empty(self.n_e))
        else:
            self.gain_i = self.gain_e = self.bias = None
        self.register_buffer('initialized', torch.tensor(False))
        self._initialized = False
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_initialized())
        self.name = None
        self.reset_parameters()

    # ---- initialization -------------------------------------------------------------
    def reset_parameters(self):
        """Data-free placeholder (the Bernoulli(0.5) form of E-I Init); the layer stays
        *uninitialized*, so E-I Init replaces it on the first training forward."""
        self.init_bernoulli(0.5)
        self._set_initialized(False)

    def init_bernoulli(self, p: float):
        """E-I Init for Bernoulli(``p``) input spikes: ``E_x = E_x2 = p``, ``Var_x = p (1 - p)``."""
        if not 0 < p < 1:
            raise ValueError(f'{self._label()}: Bernoulli firing probability must be in (0, 1), got {p}')
        self.init_from_stats(p, p, p * (1 - p))

    @torch.no_grad()
    def init_from_input(self, x: torch.Tensor):
        """E-I Init from the statistics of an input batch ``x`` (``[T*B, ...]`` samples)."""
        x = x.detach().flatten(0, 1) if self.step_mode == 'm' else x.detach()
        if x.shape[0] < 2:
            raise EIInitError(f'{self._label()}: E-I Init needs at least 2 samples (T*B >= 2) to '
                              f'estimate the input variance, got {x.shape[0]}')
        x = x.double().flatten(1)
        e_x, e_x2 = x.mean().item(), x.square().mean().item()
        var_x = x.var(dim=0).mean().item()
        if not (math.isfinite(e_x) and math.isfinite(var_x)):
            raise EIInitError(f'{self._label()}: its input at E-I Init is not finite (mean {e_x}, variance '
                              f'{var_x}); check the data and the layers before it')
        if e_x <= 0 or var_x <= 0:
            what = 'silent (mean 0)' if e_x == 0 else 'constant (variance 0)' if var_x == 0 else f'negative on average (mean {e_x:.3g})'
            raise EIInitError(f'{self._label()}: its input at E-I Init is {what}, so the layer cannot be '
                              'initialized from it. Initialize from a batch of real data that reaches this '
                              'layer (sj_ei.ei_init(net, x)), or data-free with sj_ei.ei_init(net, p=0.1)')
        self.init_from_stats(e_x, e_x2, var_x)

    @torch.no_grad()
    def init_from_stats(self, e_x: float, e_x2: float, var_x: float):
        """SPEC section 3: exponential ``weight_ee``/``weight_ie`` of mean
        ``sqrt(Var_x / (d (E_x2 + Var_x)))``, ``weight_ei = 1/n_I``,
        ``gain_i = sqrt(E_x2 + Var_x) / (sqrt(d) E_x)``, ``gain_e = 1``, ``bias = 0``."""
        d = self.fan_in
        scale = math.sqrt(var_x / (d * (e_x2 + var_x)))
        for weight in (self.weight_ee, self.weight_ie):
            if self.init == 'ei':
                weight.exponential_(1.0 / scale)
            else:
                nn.init.kaiming_normal_(weight, nonlinearity='relu')
                if self.sign_constraint:
                    weight.clamp_(min=0)
        self.weight_ei.fill_(1.0 / self.n_i)
        if not self.readout:
            self.gain_i.fill_(math.sqrt(e_x2 + var_x) / (math.sqrt(d) * e_x))
            self.gain_e.fill_(1.0)
            self.bias.zero_()
        self._set_initialized(True)

    def _set_initialized(self, value: bool):
        self.initialized.fill_(value)
        self._initialized = value

    def _sync_initialized(self):
        self._initialized = bool(self.initialized)

    # ---- Dale's law -----------------------------------------------------------------
    @torch.no_grad()
    def clamp_(self):
        """Dale's law: ``weight_ee``, ``weight_ie``, ``weight_ei``, ``gain_i``, ``gain_e`` >= 0
        (``bias`` stays free); nothing when ``sign_constraint=False``."""
        if self.sign_constraint:
            for p in (self.weight_ee, self.weight_ie, self.weight_ei, self.gain_i, self.gain_e):
                if p is not None:
                    p.clamp_(min=0)

    # ---- forward --------------------------------------------------------------------
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``W_EE x`` and ``W_IE x`` in one product: ``[N, ...] -> [N, n_E + n_I, ...]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.training and not self._initialized:
            self.init_from_input(x)
        if self.step_mode == 'm':
            return self._forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return ei_current(self.project(x), self.n_e, self.weight_ei, self.gain_i, self.gain_e, self.bias,
                          self.i_population, self.eps, self.readout, self._ei_grad_scale, self.division)

    @property
    def _ei_grad_scale(self) -> float:
        return 1.0 / self.fan_in if self.grad_scale else 1.0

    def currents(self, x_seq: torch.Tensor):
        """The three currents a fused backend integrates, each ``[T, B, n_E, ...]``:
        ``(I_EE, I_EI, I_sh~)`` from a multi-step input ``x_seq [T, B, ...]`` (hidden layers only)."""
        self._check_input(x_seq)
        if self.training and not self._initialized:
            self.init_from_input(x_seq)
        y = self.project(x_seq.flatten(0, 1))
        weight_ei = scale_grad(self.weight_ei, self._ei_grad_scale)
        parts = inhibition(y, self.n_e, weight_ei, self.gain_i, self.i_population, self.eps, self.division)
        return tuple(p.unflatten(0, x_seq.shape[:2]) for p in parts)

    def _check_input(self, x):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f'{self._label()}: expects a floating-point tensor (spikes as 0./1.), got {got}; '
                            'convert it with x.float()')
        layout = self._layout[self.step_mode]
        if x.dim() != len(layout) or x.shape[self._feature_dim] != self._in:
            hint = (" (multi-step input needs functional.set_step_mode(net, 'm'))"
                    if self.step_mode == 's' and x.dim() == len(layout) + 1 else '')
            raise ValueError(f"{self._label()} in step_mode='{self.step_mode}' expects input of shape "
                             f"[{', '.join(layout)}] with {self._in_name}={self._in}, got {tuple(x.shape)}{hint}")

    def _label(self) -> str:
        return f"{type(self).__name__} '{self.name}'" if self.name else type(self).__name__

    def extra_repr(self):
        flags = [f'ei_ratio={self.ei_ratio}', f'step_mode={self.step_mode}']
        if self.readout:
            flags.append('readout=True')
        for key, default in (('init', 'ei'), ('sign_constraint', True), ('eps', None), ('grad_scale', True)):
            if getattr(self, key) != default:
                flags.append(f'{key}={getattr(self, key)}')
        return ', '.join(flags)


class EIConv2d(_EILayer):
    """E-I convolution: ``weight_ee [n_E, C_in, kh, kw]`` and ``weight_ie [n_I, C_in, kh, kw]``
    share stride, padding and dilation; ``weight_ei [n_E, n_I]`` is point-wise across channels;
    ``gain_i [n_I]``, ``gain_e [n_E]``, ``bias [n_E]`` are per channel.

    ``[B, C_in, H, W] -> [B, n_E, H', W']`` (``'s'``), ``[T, B, C_in, H, W] -> [T, B, n_E, H', W']`` (``'m'``).
    """
    _layout = {'s': ('B', 'C', 'H', 'W'), 'm': ('T', 'B', 'C', 'H', 'W')}
    _feature_dim = -3
    _in_name = 'C'

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 ei_ratio: int = 4, readout: bool = False, step_mode: str = 's', init: str = 'ei',
                 sign_constraint: bool = True, eps: Optional[float] = None, grad_scale: bool = True,
                 i_population: Optional[IPopulation] = None):
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self._in = in_channels
        super().__init__(out_channels, (in_channels, *self.kernel_size), ei_ratio, readout, step_mode,
                         init, sign_constraint, eps, grad_scale, i_population)

    def project(self, x):
        return project(x, self.weight_ee, self.weight_ie, (self.stride, self.padding, self.dilation))

    def extra_repr(self):
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, ' + ('' if self.dilation == (1, 1) else f'dilation={self.dilation}, ')
                + super().extra_repr())


class EILinear(_EILayer):
    """E-I fully connected layer: ``weight_ee [n_E, d]``, ``weight_ie [n_I, d]``,
    ``weight_ei [n_E, n_I]``; ``[B, d] -> [B, n_E]`` (``'s'``), ``[T, B, d] -> [T, B, n_E]`` (``'m'``)."""
    _layout = {'s': ('B', 'd'), 'm': ('T', 'B', 'd')}
    _feature_dim = -1
    _in_name = 'd'

    def __init__(self, in_features: int, out_features: int, ei_ratio: int = 4, readout: bool = False,
                 step_mode: str = 's', init: str = 'ei', sign_constraint: bool = True,
                 eps: Optional[float] = None, grad_scale: bool = True, i_population: Optional[IPopulation] = None):
        self.in_features, self.out_features = in_features, out_features
        self._in = in_features
        super().__init__(out_features, (in_features,), ei_ratio, readout, step_mode,
                         init, sign_constraint, eps, grad_scale, i_population)

    def project(self, x):
        return project(x, self.weight_ee, self.weight_ie)

    def extra_repr(self):
        return f'{self.in_features}, {self.out_features}, ' + super().extra_repr()
