"""What the trainer tells its user: the header, the closing summary and notes, why a run stopped
and how to go on (resume, rerun, launcher), in one place."""
import os
import shlex
from pathlib import Path
from typing import NamedTuple

import torch

from sj_ei import health


def duration(seconds: float) -> str:
    """``'72 s'``, ``'12 min 5 s'``, ``'3 h 2 min'``."""
    s = round(seconds)
    return f'{s} s' if s < 120 else f'{s // 60} min {s % 60} s' if s < 7200 else f'{s // 3600} h {s % 3600 // 60} min'


def launcher(processes: int) -> str:
    """What starts ``processes`` processes of a run: ``python``, or ``torchrun --nproc_per_node=N``."""
    return f'torchrun --nproc_per_node={processes}' if processes > 1 else 'python'


def command(argv, processes: int) -> str:
    """The command line that runs ``python -m train.classify argv`` in ``processes`` processes."""
    return f'{launcher(processes)} -m train.classify {shlex.join(argv)}'


def after_stop(out_dir, processes: int) -> str:
    """What to run after a run stopped early: resume it from its latest checkpoint, or start it afresh."""
    latest = Path(out_dir) / 'checkpoint_latest.pth'
    if latest.is_file():
        again = f', with {processes} processes again ({launcher(processes)})' if processes > 1 else ''
        return f'continue with -resume {latest}{again}'
    return (f'run the same command again to start afresh in {out_dir} (no epoch finished, so there is nothing '
            'to resume; what this run wrote there is replaced)')


def position(epoch: int, step: int, steps: int) -> str:
    """Where a run stands: ``'epoch 3, step 17 of 50'``, or ``'the end of epoch 2'`` (``step`` 0)."""
    return f'epoch {epoch}, step {step} of {steps}' if step else f'the end of epoch {epoch - 1}'


def resumed_at(epoch: int, step: int, steps: int) -> str:
    """Where a resumed run begins: ``'epoch 3'``, or ``'epoch 3, step 17 of 50'`` in the middle of an epoch."""
    return f'epoch {epoch}' + (f', step {step} of {steps}' if step else '')


def stopped(signal_name: str, where: str, out_dir, processes: int) -> str:
    """The one line of a run stopped by a signal: ``stopped by SIGTERM at epoch E, step S of N; continue ...``."""
    return f'stopped by {signal_name} at {where}; {after_stop(out_dir, processes)}'


def header(config: dict, train_samples: int, test_samples: int, processes: int, device, threads: str,
           begin: str) -> str:
    """The first line of a run: model, data, processes, device and CPU threads, folder, how it begins."""
    return (f'{config["model"]} ({config["norm"]}) on {config["dataset"]}: {train_samples} train / {test_samples} '
            f'test samples, T={config["T"]}, {processes} process(es), device {device} '
            f'({torch.get_num_threads()} CPU thread(s): {threads}), out_dir {config["out_dir"]}{begin}')


def collapse_message(problem: str, epoch: int, rates: dict, config: dict, out_dir: Path, best_epoch) -> str:
    """The one error line of a collapsed run: what, when, the rates, what to try, the checkpoints."""
    return (f'training collapsed at epoch {epoch}: {problem}; firing rates {health.format_rates(rates)}. '
            f"Try a lower learning rate (-lr, now {config['lr']:g}), a wider network (-width, now "
            f"{config['width']:g}) or a longer warm-up (-set warmup_epochs=N, now {config['warmup_epochs']}); "
            f'-set collapse_check=false trains on regardless. The checkpoints are kept in {out_dir} '
            f'(checkpoint_max.pth: epoch {best_epoch}, checkpoint_latest.pth: epoch {epoch})')


def near_chance(best_acc1: float, num_classes: int, steps: int, shares: dict):
    """A one-line note when the best test top-1 stayed below 1.5x chance (else None), naming the E
    population with the lowest input share of the last epoch (``shares``) when it is below
    ``sj_ei.health.NEARLY_BLIND``."""
    chance = 100 / num_classes
    if best_acc1 >= 1.5 * chance:
        return None
    note = (f'note: the best test acc@1 ({best_acc1:.2f}) is near chance ({chance:.2f}) after {steps} training steps: '
            'the network has not learned yet. ')
    name, share = min(shares.items(), key=lambda item: item[1], default=(None, 1.0))
    if share < health.NEARLY_BLIND:
        return note + (f"E population '{name}' fires nearly alike for every input (input share {share:.2g}, "
                       '0.35-0.75 at E-I Init): if it stays there more epochs will not help; try a lower learning rate '
                       '(-lr), a wider network (-width) or another seed (docs/collapse.md)')
    return note + ("At the paper's learning rate a narrow E-I network needs a few hundred steps to leave chance "
                   '(docs/collapse.md): train longer (-epochs) before judging it')


def peer_lost(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing under torchrun because another process of the run ended
    (killed): then that process says why, and this one needs no traceback."""
    return int(os.environ.get('WORLD_SIZE', 1)) > 1 and any(
        text in str(error) for text in ('Connection closed by peer', 'Connection reset by peer', 'Broken pipe'))


class Summary(NamedTuple):
    """What a training run ends with."""
    best_acc1: float   #: best test top-1 (%)
    best_epoch: int    #: the epoch of ``best_acc1`` (0-based, as in the log)
    last_acc1: float   #: test top-1 (%) of the last epoch
    seconds: float     #: wall time of this process's training
    out_dir: Path      #: the run's folder: TensorBoard events, checkpoint_max.pth, checkpoint_latest.pth

    def line(self) -> str:
        return (f'done: best test acc@1 {self.best_acc1:.2f} at epoch {self.best_epoch}, last {self.last_acc1:.2f}, '
                f'in {duration(self.seconds)}; checkpoints in {self.out_dir} (checkpoint_max.pth: best, '
                'checkpoint_latest.pth: last)')
