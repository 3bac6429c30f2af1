"""Train and evaluate a spiking classifier with the paper's recipe (Appendix F.6, Table 5).

    python -m train.classify -cfg configs/dvsgesture.yaml [-data-dir DIR] [-b 32] ...
    torchrun --nproc_per_node=N -m train.classify -cfg ...      (DistributedDataParallel)

SGD with momentum and weight decay, linear warm-up then cosine annealing per iteration
(``train.schedule``), cross-entropy on the time-averaged output (``train.loop``), E-I Init on the
first training batch, Dale's law after every step, ``reset_net`` after every batch.
After every epoch of 8 steps or more the run stops with one error when the network has collapsed
(``sj_ei.health``; ``-set collapse_check=false`` trains on); a run whose best test accuracy stays
near chance ends with a one-line note saying so (``train.messages``).
Writes TensorBoard logs, ``checkpoint_latest.pth`` (every epoch, every ``checkpoint_every`` steps)
and ``checkpoint_max.pth`` to ``out_dir``, which must not hold another run (``-resume`` continues a
run in its own folder, also from the middle of an epoch, exactly) and is locked while the run lives
(``train.run_folder``).  SIGTERM, SIGINT and SIGUSR1 stop it after the step in progress with its
checkpoint written (``train.signals``).
Debug aid: with ``TRAIN_DUMP_RANK_PARAMS=DIR`` every rank also writes its parameters after
E-I Init and at the end to ``DIR/rank{r}_init.pth`` / ``rank{r}_final.pth``.

This file is the outline of a run; ``train.state`` holds the training objects and checkpoints of it.
"""
import argparse
import os
import socket
import sys
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import sj_ei
import sj_ei.analyze
import sj_ei.energy
from sj_ei import config as cfg, convert, datasets, health
from sj_ei.config import build_model  # noqa: F401  (classify.build_model: the model of a config)
from sj_ei.errors import UserError

from . import checkpoint, run_folder, signals
from .data import first_batch, make_loader, set_epoch  # noqa: F401
from .distributed import Distributed
from .loop import amp_dtype, run_epoch  # noqa: F401
from .messages import (Summary, after_stop, collapse_message, command, header, near_chance,  # noqa: F401
                       peer_lost, resumed_at)
from .monitor import FiringRates, epoch_health, log_epoch, log_histograms, test_operations
from .prepare import check_setup, cpu_threads, seed_everything
from .pretrained import Evaluation, evaluate_pretrained, pretrained_model  # noqa: F401
from .schedule import warmup_cosine, warmup_steps  # noqa: F401
from .state import Training

FLAGS = {'-data-dir': 'data_dir', '-out-dir': 'out_dir', '-device': 'device', '-b': 'batch_size',
         '-epochs': 'epochs', '-lr': 'lr', '-T': 'T', '-j': 'workers', '-backend': 'backend', '-seed': 'seed',
         '-width': 'width', '-init-from': 'init_from', '-threads': 'threads'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python -m train.classify', description=__doc__.split('\n\n')[0],
                                     epilog='Config keys (YAML and -set):\n' + cfg.valid_keys(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-cfg', required=True, metavar='YAML', help='experiment config (see configs/)')
    for flag, key in FLAGS.items():
        parser.add_argument(flag, dest=key, metavar=key.upper(), help=cfg.SCHEMA[key][2])
    parser.add_argument('-amp', action='store_true', help=cfg.SCHEMA['amp'][2])
    parser.add_argument('-resume', metavar='PATH',
                        help="continue the run of this checkpoint (a run's checkpoint_latest.pth), in its folder")
    parser.add_argument('-pretrained', metavar='PATH',
                        help="evaluate on the test set (loss, top-1, top-5) and exit: this trainer's checkpoint_max.pth "
                             "/ checkpoint_latest.pth (the model is built from -cfg and flags, which must give the "
                             "checkpoint's dataset, model, norm, width, ei_ratio and E-I switches: use the config it "
                             'was trained with; T, -b, -device and -data-dir may differ), or a DeepEISNN model '
                             '(model.safetensors with its config.json beside it, or a .pth training checkpoint)')
    parser.add_argument('-set', action='append', default=[], metavar='KEY=VALUE', help='override any config key')
    return parser.parse_args(argv)


def make_config(args) -> dict:
    config = cfg.load(args.cfg)
    for flag, key in FLAGS.items():
        if getattr(args, key) is not None:
            cfg.override(config, key, getattr(args, key), f'flag {flag}')
    if args.amp:
        config['amp'] = True
    return cfg.apply_sets(config, args.set)


def train(config: dict, resume=None) -> Summary:
    """Train with ``config`` (from ``sj_ei.config``) in the new run folder ``config['out_dir']``,
    or continue the run of checkpoint ``resume`` in the checkpoint's folder; the folder is locked
    while the run lives, and a run that stops early says how to go on."""
    started = time.time()
    device = check_setup(config)
    if resume:
        config = {**config, 'out_dir': str(Path(resume).parent)}
    distributed = Distributed(device)
    lock = open_run_folder(config['out_dir'], distributed, new=not resume)
    try:
        return run(config, resume, distributed, started)
    except checkpoint.WriteError as e:
        raise checkpoint.WriteError(f'{e}; then {after_stop(config["out_dir"], distributed.world)}') from e
    finally:
        if lock:
            lock.release()


def open_run_folder(out_dir, distributed: Distributed, new: bool):
    """Rank 0 locks and readies the run's folder (``run_folder.claim``) and tells the other ranks whether
    it could: the lock (rank 0) or None; a ``RunFolderError`` on rank 0 and exit status 2 on the others."""
    lock = refused = None
    if distributed.main:
        try:
            lock, notes = run_folder.claim(out_dir, new)
            for note in notes:
                print(note, flush=True)
        except run_folder.RunFolderError as e:
            refused = str(e)
    refused = distributed.gather(refused)[0]
    if refused and distributed.main:
        raise run_folder.RunFolderError(refused)
    if refused:
        sys.exit(2)  # rank 0 says why
    return lock


def read_checkpoint(path, config: dict, distributed: Distributed) -> dict:
    """``checkpoint.load`` on every rank (on several machines each reads the file itself); when a rank
    cannot, the error on rank 0 names it, and the others exit with status 2."""
    state = problem = None
    try:
        state = checkpoint.load(path, config, distributed.world)
    except checkpoint.CheckpointError as e:
        if distributed.world == 1:
            raise
        problem = e
    failed = [(rank, p) for rank, p in enumerate(distributed.gather(
        problem and (socket.gethostname(), str(problem)))) if p]
    if failed and distributed.main:
        if problem:
            raise problem
        rank, (host, text) = failed[0]
        raise checkpoint.CheckpointError(
            f'rank {rank} (on {host}) cannot resume: {text}. On several machines the run folder '
            f'({Path(path).parent}, rank 0\'s out_dir, where the checkpoints are written) must be on a '
            'filesystem that every machine reads at the same path')
    if failed:
        sys.exit(2)  # rank 0 says why
    return state


def run(config: dict, resume, distributed: Distributed, started: float) -> Summary:
    """The body of ``train``, in the run's locked folder: the outline of a run."""
    state = read_checkpoint(resume, config, distributed) if resume else None
    seed_everything(config['seed'])
    train_loader, test_loader = make_loader(config, distributed, True), make_loader(config, distributed, False)
    training, warmup_note = Training.build(config, distributed, len(train_loader))
    initialize(training, state, resume, train_loader)
    rates = FiringRates(training.model)
    with signals.StopRequests() as training.stop:
        writer = open_log(training, state, warmup_note, len(train_loader.dataset), len(test_loader.dataset))
        while training.epoch < config['epochs']:
            shares, test_acc1 = train_and_test(training, rates, train_loader, test_loader, writer)
            signum = training.epoch < config['epochs'] and training.stop.agreed(distributed)
            if signum:
                training.halt(signum)
    return finish(training, writer, test_loader, shares, test_acc1, started)


def initialize(training: Training, state, resume, train_loader) -> None:
    """Start the model: from the checkpoint to resume, the weights of ``init_from``, E-I Init on the first
    training batch (``norm: ei``) or as built; then on every rank alike."""
    config = training.config
    if state:
        training.restore(resume, state)
    elif config['init_from']:
        convert.load_pretrained(training.model, config['init_from'])
    elif config['norm'] == 'ei':
        sj_ei.ei_init(training.model, first_batch(train_loader, config['seed'], training.distributed.device))
    training.wrap()


def open_log(training: Training, state, warmup_note, train_samples: int, test_samples: int):
    """Rank 0: the run's TensorBoard writer, after the header lines; None on the other ranks."""
    config, distributed = training.config, training.distributed
    if not distributed.main:
        return None
    training.out_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(training.out_dir))
    begin = (f', resumed at {resumed_at(training.epoch, training.step, training.steps)}' if state else
             f', from the weights of {config["init_from"]}' if config['init_from'] else '')
    print(header(config, train_samples, test_samples, distributed.world, distributed.device,
                 cpu_threads(config)[1], begin), flush=True)
    if distributed.world > 1:
        start = ('resumed' if state else 'loaded' if config['init_from'] else
                 'E-I Init' if config['norm'] == 'ei' else 'initialization')
        print(f'{start}: parameters identical on all {distributed.world} ranks', flush=True)
    if warmup_note:
        print(warmup_note, flush=True)
    return writer


def train_and_test(training: Training, rates: FiringRates, train_loader, test_loader, writer) -> tuple:
    """One epoch (the rest of it, for a run resumed in its middle): train, test, judge its health, log
    it, write its checkpoints; ``(input shares of its E populations, test top-1)``."""
    config, distributed, device = training.config, training.distributed, training.distributed.device
    set_epoch(train_loader, config['seed'], training.epoch, training.step)
    rates.reset()
    # a bar only on a terminal: in a log file its updates would be thousands of lines
    progress = tqdm(total=training.steps, initial=training.step, desc=f'epoch {training.epoch}', leave=False,
                    disable=not (distributed.main and sys.stderr.isatty()))
    try:
        run_epoch(training.net, training.batches(train_loader), device, config['amp'], True, training.optimizer,
                  training.scheduler, training.scaler, training.losses, progress, training.after_step)
    finally:
        progress.close()
    with sj_ei.energy.Counter(training.model, baseline=config['norm'] != 'ei') as counter:
        *test_stats, test_time = run_epoch(training.net, test_loader, device, config['amp'], False)
    operations = test_operations(counter, distributed)
    n, loss, top1, top5 = distributed.sum(*training.sums[:4])
    tn, tloss, ttop1, ttop5 = distributed.sum(*test_stats)
    distributed.check_identical(training.model)
    problem, epoch_rates, shares = epoch_health(config, rates, training.losses, distributed)
    epoch, test_acc1, train_time = training.epoch, 100 * ttop1 / tn, training.sums[4]
    if writer:
        scalars = {'train/loss': loss / n, 'train/acc1': 100 * top1 / n, 'train/acc5': 100 * top5 / n,
                   'test/loss': tloss / tn, 'test/acc1': test_acc1, 'test/acc5': 100 * ttop5 / tn,
                   'lr': training.optimizer.param_groups[0]['lr'], 'train/speed': n / train_time,
                   'test/speed': tn / test_time}
        log_epoch(writer, epoch, scalars, epoch_rates, shares, operations)
        if config['histograms']:
            x, _ = next(iter(test_loader))
            log_histograms(writer, training.model, datasets.model_input(x).to(device), epoch)
        writer.flush()
    training.end_epoch(test_acc1)
    if distributed.main:
        print(f'epoch {epoch}: train loss {loss / n:.4f} acc@1 {100 * top1 / n:.2f} | test loss {tloss / tn:.4f} '
              f'acc@1 {test_acc1:.2f} acc@5 {100 * ttop5 / tn:.2f} | best acc@1 {training.best_acc1:.2f} | '
              f'train {n / train_time:.1f} samples/s, test {tn / test_time:.1f} samples/s', flush=True)
    if problem:
        collapsed(training, writer, problem, epoch, epoch_rates)
    return shares, test_acc1


def collapsed(training: Training, writer, problem: str, epoch: int, rates: dict) -> None:
    """End a collapsed run: ``health.CollapseError`` on rank 0 (its checkpoints are kept), exit status 2 on
    the others."""
    if not training.distributed.main:
        raise SystemExit(2)  # rank 0 says why
    writer.close()
    raise health.CollapseError(collapse_message(problem, epoch, rates, training.config, training.out_dir,
                                                training.best_epoch))


def finish(training: Training, writer, test_loader, shares: dict, last_acc1: float, started: float) -> Summary:
    """The end of a run: figures of the last model (on the first test batch), the near-chance note, the summary."""
    config, distributed = training.config, training.distributed
    distributed.dump(training.model, 'final')
    if writer and config['figures']:
        x, _ = next(iter(test_loader))
        sj_ei.analyze.log_figures(writer, training.model, [datasets.model_input(x).to(distributed.device)],
                                  config['epochs'] - 1)
    if writer:
        writer.close()
    distributed.close()
    summary = Summary(training.best_acc1, training.best_epoch, last_acc1, time.time() - started, training.out_dir)
    if distributed.main:
        note = near_chance(training.best_acc1, datasets.info(config['dataset'])['num_classes'],
                           config['epochs'] * training.steps, shares)
        if note:
            print(note, flush=True)
        print(summary.line(), flush=True)
    return summary


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    world, rank = int(os.environ.get('WORLD_SIZE', 1)), int(os.environ.get('RANK', 0))
    folder = lambda: Path(args.resume).parent if args.resume else make_config(args)['out_dir']  # noqa: E731
    try:
        config = make_config(args)
        if args.pretrained:
            evaluate_pretrained(config, args.pretrained)
        else:
            train(config, args.resume)
    except UserError as e:
        exact = f': {command(argv, e.processes)}' if isinstance(e, checkpoint.ProcessCountError) else ''
        print(f'error: {e}{exact}', file=sys.stderr)
        sys.exit(2)
    except signals.Stopped as e:
        if e.line:  # rank 0's
            print(e.line, file=sys.stderr, flush=True)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:  # before the training loop, which stops cleanly instead
        if rank == 0:
            print(f'interrupted; {after_stop(folder(), world)}', file=sys.stderr, flush=True)
        sys.exit(130)
    except RuntimeError as e:  # under torchrun: a collective of this rank failed because another rank ended
        if not peer_lost(e):
            raise
        print(f'error: rank {rank} stopped: another process of this run ended (connection closed); '
              f'{after_stop(folder(), world)}', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
