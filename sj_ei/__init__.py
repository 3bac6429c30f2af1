"""sj_ei: deep normalization-free spiking networks with excitatory-inhibitory
layers (DeepEISNN, ICLR 2026) for spikingjelly."""
import importlib

from .backends import BACKENDS, BackendError, set_backend
from .layers import EIConv2d, EILayer, EILinear, ei_init, ei_layers
from .neurons import IPopulation, e_population, EILIFNode
from .block import EIBlock
from .currents import EICurrents
from .init import EIInitError
from .constraint import constrain, clamp_
from .division import set_division
from . import health, models
from . import convert

__all__ = ['EIConv2d', 'EILinear', 'EILayer', 'EIInitError', 'IPopulation', 'e_population', 'EILIFNode', 'EIBlock',
           'EICurrents', 'ei_init', 'ei_layers', 'constrain', 'clamp_', 'set_division', 'set_backend', 'BACKENDS', 'BackendError', 'health', 'models',
           'convert', 'energy', 'ops']
__version__ = '0.1.0'


def __getattr__(name):
    """``sj_ei.energy`` (and its former name ``sj_ei.ops``) after a plain ``import sj_ei``, imported when first
    used (importing it here would make ``python -m sj_ei.energy`` warn that the module was imported before it ran)."""
    if name in ('energy', 'ops'):
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
