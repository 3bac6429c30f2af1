"""The paper's trainer: ``python -m train.classify -cfg configs/X.yaml``."""
import sj_ei  # noqa: F401  (first, so that sj_ei._compat adapts spikingjelly before the trainer imports it)
