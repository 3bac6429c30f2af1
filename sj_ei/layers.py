"""E-I layers: spikingjelly step modules that map input spikes to the integrated
current of the E population (docs/method.md section 1).

``EIConv2d`` and ``EILinear`` take ``x`` of shape ``[B, C, H, W]`` / ``[B, d]``
(``step_mode='s'``) or ``[T, B, C, H, W]`` / ``[T, B, d]`` (``'m'``) and return
``I_int`` with ``n_E = out_channels`` channels (``output='current'``, the default; any
spikingjelly neuron follows, e.g. ``sj_ei.e_population()``), or with ``output='currents'``
the ``sj_ei.EICurrents`` a fused E population integrates.  With ``readout=True`` they
return ``I_EE - I_EI`` (the output layer).  The math is ``sj_ei.circuit``; on the first
forward in training mode an uninitialized layer initializes itself from its input
(E-I Init, ``sj_ei.init``).

The network walkers live here too: ``ei_layers(net)`` lists a network's E-I layers and
names each (``layer.name``, its qualified name in ``net``, which error messages show
through ``layer.label``); ``ei_init(net, ...)`` initializes them all.
"""
import math
from numbers import Real
from typing import Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from spikingjelly.activation_based import base, functional

from . import circuit
from . import init as _init
from .i_population import IPopulation

#: the values of an E-I layer's ``init``: E-I Init, or the Kaiming-normal ablation
INITS = ('ei', 'kaiming')
#: ``grad_scale``: True (``1/d``), False (none) or a number ``p > 0`` (``d ** -p``)
GradScale = Union[bool, float]


def check_grad_scale(value) -> GradScale:
    """``value`` if it is a valid ``grad_scale`` (a bool, or a finite real number > 0), else a ``ValueError``."""
    if isinstance(value, bool) or isinstance(value, Real) and math.isfinite(value) and value > 0:
        return value
    raise ValueError(f'grad_scale must be true (scale the gradient of W_EI by 1/d, d = fan-in; the paper\'s), false '
                     f'(no scaling) or a number p > 0 (scale by d^-p, paper Table 3: 1 is true), got {value!r}')


def _sync_initialized(layer, incompatible_keys):
    """After ``load_state_dict``: the Python flag follows the loaded ``initialized`` buffer."""
    layer._initialized = bool(layer.initialized)


class EILayer(nn.Module, base.StepModule):
    """Parameters and forward shared by every E-I layer.

    Ablation switches (docs/method.md section 5); the defaults are the paper's method:
    ``init='kaiming'`` draws ``weight_ee``/``weight_ie`` with Kaiming-normal instead of the
    exponential E-I Init (clamped to >= 0 when ``sign_constraint``);
    ``sign_constraint=False`` lifts Dale's law; ``eps=float`` replaces adaptive
    stabilization by a fixed epsilon in the denominator; ``grad_scale=False`` turns off
    the ``1/d`` scaling of the gradient of ``weight_ei``, a number ``p > 0`` scales it by ``d ** -p``
    instead (paper Table 3; ``True`` is ``p = 1``).
    Attributes: ``output`` (``'current'`` or ``'currents'``, see the module docstring),
    ``division`` (None, or a callable ``I_sh~ -> I_sh'`` carrying its own gradient, applied
    before the division) and ``name`` (its qualified name in the network, set by ``ei_layers``;
    ``''`` until a walker has named it).
    """
    name = ''

    def __init__(self, out_features: int, weight_tail: tuple, ei_ratio: int, readout: bool, step_mode: str,
                 init: str, sign_constraint: bool, eps: Optional[float], grad_scale: GradScale,
                 i_population: Optional[IPopulation]):
        super().__init__()
        if ei_ratio < 1 or out_features // ei_ratio < 1:
            raise ValueError(f'{type(self).__name__}: ei_ratio={ei_ratio} leaves no inhibitory neuron for '
                             f'{out_features} excitatory outputs; use 1 <= ei_ratio <= {out_features}')
        if init not in INITS:
            raise ValueError(f'{type(self).__name__}: init must be one of {INITS}, got {init!r}')
        if eps is not None and eps <= 0:
            raise ValueError(f'{type(self).__name__}: eps must be > 0 or None (adaptive stabilization), got {eps}')
        try:
            check_grad_scale(grad_scale)
        except ValueError as e:
            raise ValueError(f'{type(self).__name__}: {e}') from None
        self.n_e, self.n_i = out_features, out_features // ei_ratio
        self.ei_ratio, self.readout, self.step_mode = ei_ratio, readout, step_mode
        self.init, self.sign_constraint, self.eps, self.grad_scale = init, sign_constraint, eps, grad_scale
        self.output, self.division = 'current', None
        self.fan_in = math.prod(weight_tail)
        self.i_population = i_population if i_population is not None else IPopulation()
        projection = torch.empty(self.n_e + self.n_i, *weight_tail)  # one storage: read whole by project
        self.weight_ee = nn.Parameter(projection[:self.n_e])
        self.weight_ie = nn.Parameter(projection[self.n_e:])
        self.weight_ei = nn.Parameter(torch.empty(self.n_e, self.n_i))
        if not readout:
            self.gain_i = nn.Parameter(torch.empty(self.n_i))
            self.gain_e = nn.Parameter(torch.empty(self.n_e))
            self.bias = nn.Parameter(torch.empty(self.n_e))
        else:
            self.gain_i = self.gain_e = self.bias = None
        self.register_buffer('initialized', torch.tensor(False))
        self._initialized = False  # mirrors the buffer, so that forward reads no tensor
        self.register_load_state_dict_post_hook(_sync_initialized)
        self.reset_parameters()

    def reset_parameters(self):
        """Data-free placeholder (the Bernoulli(0.5) form of E-I Init); the layer stays
        *uninitialized*, so E-I Init replaces it on the first training forward."""
        _init.bernoulli_(self, 0.5)
        self.set_initialized(False)

    def set_initialized(self, value: bool):
        """Mark the layer (un)initialized: an uninitialized one runs E-I Init on its next training forward."""
        self.initialized.fill_(value)
        self._initialized = value

    @property
    def label(self) -> str:
        """``EIConv2d 'features.0.layer'``, or ``EIConv2d`` before a walker has named the layer: how errors name it."""
        return f"{type(self).__name__} '{self.name}'" if self.name else type(self).__name__

    def project(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(W_EE x, W_IE x)`` from one product: ``[N, ...] -> [N, n_E, ...], [N, n_I, ...]``."""
        raise NotImplementedError

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        circuit.pack_(self.weight_ee, self.weight_ie)  # .to(), .cuda(), .double() move each apart
        return self

    def forward(self, x: torch.Tensor):
        self._check_input(x)
        if self.training and not self._initialized:
            _init.from_input_(self, x)
        return circuit.run(self, x)

    def _check_input(self, x):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f'{self.label}: expects a floating-point tensor (spikes as 0./1.), got {got}; '
                            'convert it with x.float()')
        layout = self._layout[self.step_mode]
        if x.dim() != len(layout) or x.shape[self._feature_dim] != self._in:
            hint = (" (multi-step input needs functional.set_step_mode(net, 'm'))"
                    if self.step_mode == 's' and x.dim() == len(layout) + 1 else '')
            raise ValueError(f"{self.label} in step_mode='{self.step_mode}' expects input of shape "
                             f"[{', '.join(layout)}] with {self._in_name}={self._in}, got {tuple(x.shape)}{hint}")

    def extra_repr(self):
        flags = [f'ei_ratio={self.ei_ratio}', f'step_mode={self.step_mode}']
        if self.readout:
            flags.append('readout=True')
        for key, default in (('init', 'ei'), ('sign_constraint', True), ('eps', None), ('grad_scale', True),
                             ('output', 'current'), ('division', None)):
            if getattr(self, key) != default:
                flags.append(f'{key}={getattr(self, key)}')
        return ', '.join(flags)


class EIConv2d(EILayer):
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
                 sign_constraint: bool = True, eps: Optional[float] = None, grad_scale: GradScale = True,
                 i_population: Optional[IPopulation] = None):
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self._in = in_channels
        super().__init__(out_channels, (in_channels, *self.kernel_size), ei_ratio, readout, step_mode,
                         init, sign_constraint, eps, grad_scale, i_population)

    def project(self, x):
        return circuit.project(x, self.weight_ee, self.weight_ie, (self.stride, self.padding, self.dilation))

    def extra_repr(self):
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, ' + ('' if self.dilation == (1, 1) else f'dilation={self.dilation}, ')
                + super().extra_repr())


class EILinear(EILayer):
    """E-I fully connected layer: ``weight_ee [n_E, d]``, ``weight_ie [n_I, d]``,
    ``weight_ei [n_E, n_I]``; ``[B, d] -> [B, n_E]`` (``'s'``), ``[T, B, d] -> [T, B, n_E]`` (``'m'``)."""
    _layout = {'s': ('B', 'd'), 'm': ('T', 'B', 'd')}
    _feature_dim = -1
    _in_name = 'd'

    def __init__(self, in_features: int, out_features: int, ei_ratio: int = 4, readout: bool = False,
                 step_mode: str = 's', init: str = 'ei', sign_constraint: bool = True,
                 eps: Optional[float] = None, grad_scale: GradScale = True, i_population: Optional[IPopulation] = None):
        self.in_features, self.out_features = in_features, out_features
        self._in = in_features
        super().__init__(out_features, (in_features,), ei_ratio, readout, step_mode,
                         init, sign_constraint, eps, grad_scale, i_population)

    def project(self, x):
        return circuit.project(x, self.weight_ee, self.weight_ie)

    def extra_repr(self):
        return f'{self.in_features}, {self.out_features}, ' + super().extra_repr()


def ei_layers(net: nn.Module):
    """The E-I layers of ``net`` in registration order, as ``(name, layer)`` pairs; names each layer
    (``layer.name``) by its qualified name in ``net``."""
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, EILayer)]
    for name, m in layers:
        m.name = name
    return layers


def ei_init(net: nn.Module, x: Optional[torch.Tensor] = None, *, p: Optional[float] = None):
    """(Re-)initialize every E-I layer of ``net``.

    With a batch ``x``: one forward pass in training mode, without gradients, in which each
    layer takes the statistics of its own input, layer by layer in forward order (each sees
    the outputs of the layers initialized before it); neuron states are reset afterwards.
    With ``p``: the data-free Bernoulli form, every layer assuming Bernoulli(``p``) input.
    Errors (e.g. a layer whose input is silent) name the layer.
    """
    if (x is None) == (p is None):
        raise ValueError('ei_init needs exactly one of a batch x or a Bernoulli firing probability p')
    layers = ei_layers(net)
    if not layers:
        raise ValueError(f'ei_init: {type(net).__name__} has no E-I layer (sj_ei.EIConv2d / sj_ei.EILinear)')
    if p is not None:
        for _, layer in layers:
            _init.broadcast_(_init.bernoulli_(layer, p))
        return net
    for _, layer in layers:
        layer.set_initialized(False)
    was_training = net.training
    net.train()
    try:
        with torch.no_grad():
            net(x)
    finally:
        functional.reset_net(net)
        net.train(was_training)
    missed = [name for name, layer in layers if not layer._initialized]
    if missed:
        raise RuntimeError(f'ei_init: the forward pass did not reach the E-I layers {missed}; '
                           'they are still uninitialized')
    return net
