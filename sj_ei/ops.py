"""The former name of ``sj_ei.energy`` (operation and energy counts), kept importable for existing code:
``import sj_ei.ops``, ``from sj_ei import ops`` and ``python -m sj_ei.ops`` are ``sj_ei.energy``."""
import sys

from . import energy

if __name__ == '__main__':
    energy.main()
else:
    sys.modules[__name__] = energy
