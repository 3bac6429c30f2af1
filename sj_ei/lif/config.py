"""``LIFConfig``: the constants of one fused LIF population, which every kernel is specialized for and
every ``torch.ops.sj_ei`` operator takes as its last arguments (``LIFConfig.args()``, in the order of
``CONSTANTS``)."""
import dataclasses
import math
from functools import lru_cache
from typing import Optional

from spikingjelly.activation_based import surrogate as sj_surrogate

SURROGATES = {'sigmoid': 'Sigmoid', 'atan': 'ATan'}  # LIFConfig.surrogate -> spikingjelly surrogate class
_OTHER_NEURON = "or put another spikingjelly neuron after the E-I layer (sj_ei.EIBlock then uses the layer's I_int)"
# the constants as the operators' schemas spell them, in the order of LIFConfig's fields
CONSTANTS = ('float tau, float v_threshold, float? v_reset, bool decay_input, bool detach_reset, str surrogate, '
             'float surrogate_alpha')


@dataclasses.dataclass(frozen=True)
class LIFConfig:
    """The spikingjelly ``LIFNode`` arguments of one E population and its surrogate gradient
    (``'sigmoid'`` or ``'atan'``: spikingjelly's ``surrogate.Sigmoid`` / ``surrogate.ATan`` with
    ``surrogate_alpha``), what every backend (and every generated kernel) is specialized for.
    The defaults are the paper's E population (docs/method.md section 2)."""
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: Optional[float] = None
    decay_input: bool = False
    detach_reset: bool = True
    surrogate: str = 'sigmoid'
    surrogate_alpha: float = 4.0

    def __post_init__(self):
        if self.surrogate not in SURROGATES:
            raise ValueError(f"sj_ei's fused LIF supports the surrogates {', '.join(map(repr, SURROGATES))} "
                             f"(spikingjelly's surrogate.Sigmoid and surrogate.ATan), got {self.surrogate!r}; "
                             f"use one of them, {_OTHER_NEURON}")
        numbers = (self.tau, self.v_threshold, self.surrogate_alpha, self.v_reset or 0.0)
        if not all(math.isfinite(x) for x in numbers) or self.tau <= 0:
            raise ValueError(f'LIFConfig needs tau > 0 and finite v_threshold, v_reset, surrogate_alpha, got {self}')

    def args(self) -> tuple:
        """The constants as operator arguments (``CONSTANTS``)."""
        return (self.tau, self.v_threshold, self.v_reset, self.decay_input, self.detach_reset, self.surrogate,
                self.surrogate_alpha)

    @classmethod
    def of(cls, node) -> 'LIFConfig':
        """The settings of a spikingjelly ``LIFNode`` (or subclass, e.g. ``sj_ei.EILIFNode``);
        one clear error for a surrogate the fused LIF cannot run."""
        function = node.surrogate_function
        surrogate = next((key for key, name in SURROGATES.items()
                          if type(function) is getattr(sj_surrogate, name) and getattr(function, 'spiking', True)),
                         None)
        if surrogate is None:
            raise ValueError(f"{type(node).__name__}: sj_ei's fused LIF supports the surrogates surrogate.Sigmoid and "
                             f"surrogate.ATan with spiking=True, got {function!r}; use one of them, "
                             f"{_OTHER_NEURON}")
        return cls(float(node.tau), float(node.v_threshold), None if node.v_reset is None else float(node.v_reset),
                   bool(node.decay_input), bool(node.detach_reset), surrogate, float(function.alpha))


config_of_args = lru_cache(maxsize=None)(LIFConfig)  # LIFConfig(*args()) once per setting, in the operators
