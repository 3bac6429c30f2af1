"""The learning-rate schedule: linear warm-up, then cosine annealing to 0, per iteration
(paper Appendix F.6); a run no longer than its warm-up warms up over its first tenth instead."""
import math

import torch


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Learning-rate factor per iteration: linear warm-up to 1, then cosine to 0."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def warmup_steps(config: dict, steps: int) -> tuple:
    """``(warm-up iterations, note)`` for ``steps`` iterations per epoch: ``warmup_epochs`` of them,
    or, when the run is no longer than that (the learning rate would never reach its peak nor
    the cosine begin), the first tenth of the run, with a one-line ``note`` saying so (else None)."""
    if config['epochs'] > config['warmup_epochs']:
        return config['warmup_epochs'] * steps, None
    total = config['epochs'] * steps
    scaled = max(1, round(total / 10))
    return scaled, (f"warm-up: warmup_epochs {config['warmup_epochs']} >= epochs {config['epochs']}, so the learning "
                    f'rate would never reach its peak; warming up over the first tenth of the run instead ({scaled} '
                    f'of {total} steps). Set -set warmup_epochs=N with N < epochs to choose')


def scheduler(optimizer, config: dict, steps: int) -> tuple:
    """``(LambdaLR stepped once per iteration, note of warmup_steps)`` for ``steps`` iterations per epoch."""
    warmup, note = warmup_steps(config, steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, config['epochs'] * steps)), note
