"""A run's training objects and where it stands (epoch, step), and the checkpoints of it: at every
epoch's end, every ``checkpoint_every`` steps, and when a signal stops the run; a resumed run, also
one stopped in the middle of an epoch, goes on exactly as if it had not stopped (``train.checkpoint``
holds the RNG states, ``train.data`` the position in the epoch's order).

The firing rates of an epoch resumed in its middle count its steps since the resume (its loss,
accuracy and the losses the collapse check pools count the whole epoch)."""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch.nn.parallel import DistributedDataParallel

import sj_ei
from sj_ei.config import build_model

from . import checkpoint, messages, schedule, signals
from .distributed import Distributed
from .loop import amp_dtype

#: an epoch's sums of one rank: samples, loss sum, top-1 hits, top-5 hits, seconds
NO_SUMS = (0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class Training:
    """The model (``net``: wrapped for DistributedDataParallel under torchrun), optimizer, scheduler and
    grad scaler of a run, its ``steps`` per epoch, and where it stands: ``step`` steps done of ``epoch``."""
    config: dict
    distributed: Distributed
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    steps: int
    net: Optional[torch.nn.Module] = None
    epoch: int = 0
    step: int = 0
    best_acc1: float = -math.inf  # the first epoch is the best so far
    best_epoch: Optional[int] = None
    sums: tuple = NO_SUMS  # of this rank's steps of the epoch so far
    resumed: tuple = NO_SUMS  # of those before this process's pass over the epoch (a resumed run's)
    losses: list = field(default_factory=list)  # this rank's batch losses of the epoch so far
    stop: Optional[signals.StopRequests] = None
    rng: Optional[dict] = None  # this rank's RNG states to restore once the resumed epoch's iterator exists

    @classmethod
    def build(cls, config: dict, distributed: Distributed, steps: int) -> tuple:
        """``(Training, warm-up note or None)`` of a new model (not yet initialized) for ``steps`` steps per epoch."""
        device = distributed.device
        model = build_model(config).to(device)
        sj_ei.set_backend(model, config['backend'])
        optimizer = torch.optim.SGD(model.parameters(), lr=config['lr'], momentum=config['momentum'],
                                    weight_decay=config['weight_decay'])
        scheduler, note = schedule.scheduler(optimizer, config, steps)
        scaler = torch.amp.GradScaler(device.type, enabled=config['amp'] and amp_dtype(device) == torch.float16)
        sj_ei.constrain(model, optimizer)
        return cls(config, distributed, model, optimizer, scheduler, scaler, steps), note

    @property
    def out_dir(self) -> Path:
        return Path(self.config['out_dir'])

    def restore(self, path, state: dict) -> None:
        """Continue from checkpoint ``state`` (read from ``path``): weights, optimizer, schedule, RNGs, position."""
        checkpoint.restore(path, state, self.distributed.rank, self.model, self.optimizer, self.scheduler, self.scaler)
        self.epoch, self.step = state['epoch'] + 1, state.get('step', 0)
        self.best_acc1, self.best_epoch = state['best_acc1'], state.get('best_epoch')
        if self.step:
            partial = state['partial'][self.distributed.rank]
            self.sums = self.resumed = tuple(partial['sums'])
            self.losses = list(partial['losses'])
            self.rng = state['rng'][self.distributed.rank]

    def wrap(self) -> None:
        """``net``: the model under DistributedDataParallel, which broadcasts rank 0's parameters and buffers
        (every rank starts from rank 0's E-I Init), or the model itself in one process."""
        self.net = DistributedDataParallel(self.model) if self.distributed.world > 1 else self.model
        self.distributed.check_identical(self.model)
        self.distributed.dump(self.model, 'init')

    def batches(self, loader):
        """The iterator over the rest of the epoch's batches (``train.data.set_epoch`` placed the loader).
        Making it draws the workers' seed from torch's RNG: a run resumed in the middle of the epoch gets
        its RNG states back after that draw, as they were at its step in the run that stopped."""
        batches = iter(loader)
        if self.rng is not None:
            checkpoint.set_rng_states(self.rng)
            self.rng = None
        return batches

    def snapshot(self, stopped: Optional[str] = None) -> dict:
        """The checkpoint of now (a collective: it gathers every rank's RNG states and, in the middle of an
        epoch, its sums and losses so far); ``stopped``: the line of a stop by a signal."""
        rng, partial = zip(*self.distributed.gather((checkpoint.rng_states(),
                                                     {'sums': list(self.sums), 'losses': self.losses})))
        state = dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                     scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), epoch=self.epoch - 1,
                     step=self.step, best_acc1=self.best_acc1, best_epoch=self.best_epoch, config=self.config,
                     rng=list(rng), stopped=stopped)
        if self.step:
            state['partial'] = list(partial)
        return state

    def save_latest(self, stopped: Optional[str] = None) -> None:
        """Write ``checkpoint_latest.pth`` of now (rank 0; every rank takes part)."""
        state = self.snapshot(stopped)
        if self.distributed.main:
            checkpoint.save(self.out_dir / 'checkpoint_latest.pth', **state)

    def after_step(self, sums: tuple) -> None:
        """After every training step (``sums``: this process's pass over the epoch so far): write the
        checkpoint every ``checkpoint_every`` steps, and stop (``signals.Stopped``) when a signal asked
        every rank to."""
        self.step += 1
        self.sums = tuple(a + b for a, b in zip(self.resumed, sums))
        signum = self.stop.agreed(self.distributed) if self.stop else 0
        if signum:
            self.halt(signum)
        every = self.config['checkpoint_every']
        if every and self.step % every == 0 and self.step < self.steps:
            self.save_latest()

    def halt(self, signum: int) -> None:
        """Write the checkpoint of now, wait for rank 0 to have written it, raise ``signals.Stopped``."""
        where = messages.position(self.epoch, self.step, self.steps)
        self.save_latest(stopped=f'stopped by {signals.name(signum)} at {where}')
        self.distributed.barrier()
        line = messages.stopped(signals.name(signum), where, self.out_dir, self.distributed.world)
        raise signals.Stopped(signum, line if self.distributed.main else None)

    def end_epoch(self, test_acc1: float) -> bool:
        """The epoch is trained and tested: whether it is the best so far; write its checkpoints (rank 0) and
        move on to the next epoch."""
        is_best = test_acc1 > self.best_acc1
        if is_best:
            self.best_acc1, self.best_epoch = test_acc1, self.epoch
        self.epoch, self.step, self.sums, self.resumed, self.losses = self.epoch + 1, 0, NO_SUMS, NO_SUMS, []
        state = self.snapshot()
        if self.distributed.main:
            checkpoint.save(self.out_dir / 'checkpoint_latest.pth', **state)
            if is_best:
                checkpoint.save(self.out_dir / 'checkpoint_max.pth', **state)
        return is_best
