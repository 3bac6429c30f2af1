"""The paper's trainer: ``python -m train.classify -cfg configs/X.yaml``."""
