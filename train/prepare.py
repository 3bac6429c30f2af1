"""Before a run: check that this machine can run the config, choose the CPU threads, seed the RNGs."""
import os
import random

import numpy as np
import torch

import sj_ei
from sj_ei import config as cfg, datasets


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_threads(config: dict) -> tuple:
    """``(torch CPU threads, why)``: ``threads``, or when it is 0 (the default) ``OMP_NUM_THREADS`` if set
    (torchrun sets 1 when it starts several processes and it is unset), else the cores this process may
    run on (``os.sched_getaffinity``: what a batch scheduler or ``taskset`` granted), shared by the
    processes torchrun started on this machine."""
    if config['threads']:
        return config['threads'], 'set by -threads'
    if os.environ.get('OMP_NUM_THREADS', '').isdigit() and int(os.environ['OMP_NUM_THREADS']) > 0:
        return int(os.environ['OMP_NUM_THREADS']), 'from OMP_NUM_THREADS; -threads N to choose'
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    local = int(os.environ.get('LOCAL_WORLD_SIZE', 1))
    shared = f' shared by its {local} processes' if local > 1 else ''
    return max(1, cores // local), (f'the {cores} core(s) this process may run on{shared}; on a busy machine '
                                     '-threads N, N the idle cores')


def check_setup(config: dict) -> torch.device:
    """The torch device of ``config``, after checking that this machine can run ``config``; sets torch's CPU
    threads (``cpu_threads``)."""
    cfg.check_combination(config)
    torch.set_num_threads(cpu_threads(config)[0])
    device = torch.device(config['device'])
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise cfg.ConfigError(f"device {config['device']!r}: no CUDA device is available here; use -device cpu")
    if config['backend'] == 'cupy' and device.type != 'cuda':
        raise cfg.ConfigError("backend 'cupy' needs a CUDA device: run with -device cuda, or -backend torch")
    size = min(datasets.info(config['dataset'], size=config['size'])['size'])
    needed = sj_ei.models.min_size(config['model'])
    if size < needed:
        raise cfg.ConfigError(f"frames of {size}x{size} are too small for {config['model']}: its "
                              f"{needed.bit_length() - 1} 2x2 poolings need at least {needed}x{needed} (synthetic "
                              f"data: size: {needed}); or use model resnet18")
    return device
