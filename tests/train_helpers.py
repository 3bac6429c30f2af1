"""Shared by the tests/test_train_*.py files: a tiny synthetic config and the CLI as a subprocess."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: seconds of CPU per epoch on a 2-core machine: 32 samples of 32x32 frames, T=2, a 1/8-width VGG-8
TINY = dict(dataset='synthetic', num_samples=32, num_test_samples=16, size=32, model='vgg8', width=0.125,
            T=2, batch_size=8, epochs=3, lr=0.005, warmup_epochs=1, workers=0, device='cpu', threads=1)


def tiny_config(folder: Path, **changes) -> Path:
    """Write the tiny config (with ``changes``, ``out_dir`` = ``folder/run``) to ``folder/tiny.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / 'tiny.yaml'
    path.write_text(yaml.safe_dump({**TINY, 'out_dir': str(folder / 'run'), **changes}))
    return path


def cli(*args, module='train.classify', launcher=(), env=None, cwd=ROOT):
    """``python [launcher] -m module args``; returns the ``CompletedProcess`` (text output)."""
    env = {**os.environ, 'PYTHONPATH': str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *launcher, '-m', module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
