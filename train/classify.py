"""Train and evaluate a spiking classifier with the paper's recipe (Appendix F.6, Table 5).

    python -m train.classify -cfg configs/dvsgesture.yaml [-data-dir DIR] [-b 32] ...
    torchrun --nproc_per_node=N -m train.classify -cfg ...      (DistributedDataParallel)

SGD with momentum and weight decay, linear warm-up then cosine annealing per
iteration, cross-entropy on the time-averaged output, E-I Init on the first
training batch, Dale's law after every step, ``reset_net`` after every batch.
A run no longer than its warm-up warms up over its first tenth instead (one line says so).
After every epoch of 8 steps or more the run stops with one error when the network has collapsed (an E
population silent, saturated or blind to the input, or the loss flat at ln(classes), for the whole epoch:
``sj_ei.health``), keeping its checkpoints; ``-set collapse_check=false`` trains on.
A run whose best test accuracy stays near chance ends with a one-line note saying so.
Writes TensorBoard logs, ``checkpoint_latest.pth`` and ``checkpoint_max.pth`` to ``out_dir``,
which must not hold another run (``-resume`` continues a run in its own folder) and is locked
while the run lives (``train.run_folder``).
Debug aid: with ``TRAIN_DUMP_RANK_PARAMS=DIR`` every rank also writes its parameters after
E-I Init and at the end to ``DIR/rank{r}_init.pth`` / ``rank{r}_final.pth``.
"""
import argparse
import math
import os
import random
import shlex
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from spikingjelly.activation_based import functional

import sj_ei
import sj_ei.analyze
import sj_ei.ops
from sj_ei import config as cfg, convert, datasets, health
from sj_ei.config import build_model
from sj_ei.cupy_backend import CupyUnavailableError

from . import checkpoint, run_folder
from .distributed import Distributed, ShardSampler
from .monitor import FiringRates, log_histograms

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


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def epoch_health(config: dict, rates: health.FiringRates, losses: list, distributed) -> tuple:
    """``(problem, rates, shares)`` of the epoch just trained: every E population's firing rate and
    input share averaged over the ranks, and ``problem``, the ``sj_ei.health.collapse`` sentence of
    those and the losses pooled over the ranks (so every rank decides alike), or None: no collapse,
    ``collapse_check`` off, or an epoch of fewer than ``health.FLAT_STEPS`` steps (too little to
    judge: a narrow population can fire nothing in two batches and still be alive)."""
    gathered = distributed.gather((rates.rates(), rates.input_shares(), losses))

    def mean(part: int) -> dict:
        return {name: sum(g[part][name] for g in gathered) / len(gathered) for name in gathered[0][part]}
    rate, share = mean(0), mean(1)
    pooled = [loss for *_, part in gathered for loss in part]
    if not config['collapse_check'] or len(pooled) < health.FLAT_STEPS:
        return None, rate, share
    return health.collapse(rate, pooled, datasets.info(config['dataset'])['num_classes'], share), rate, share


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


def accuracy(logits, labels, k):
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(1).float().sum().item()


def duration(seconds: float) -> str:
    """``'72 s'``, ``'12 min 5 s'``, ``'3 h 2 min'``."""
    s = round(seconds)
    return f'{s} s' if s < 120 else f'{s // 60} min {s % 60} s' if s < 7200 else f'{s // 3600} h {s % 3600 // 60} min'


def amp_dtype(device: torch.device) -> torch.dtype:
    """``-amp``'s autocast dtype: bfloat16, whose float32 exponent range needs no loss scaling and
    holds the E-I gradient ``dL/dI_EE = g_E dL/dI_int / I_sh~`` that float16 may not (a small
    ``I_sh~``; docs/benchmarks.md); float16, with the grad scaler, only on GPUs without bfloat16."""
    return torch.float16 if device.type == 'cuda' and not torch.cuda.is_bf16_supported() else torch.bfloat16


def run_epoch(model, loader, device, amp, train, optimizer=None, scheduler=None, scaler=None, losses=None,
              progress=None):
    """One pass over ``loader``; returns (samples, loss sum, top-1 hits, top-5 hits, seconds).
    Appends every batch's loss to ``losses`` (a list) when given."""
    model.train(train)
    samples = loss_sum = top1 = top5 = 0.0
    start = time.time()
    dtype = amp_dtype(device)
    with torch.set_grad_enabled(train):
        for x, labels in loader:
            x, labels = datasets.model_input(x.to(device, non_blocking=True)), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                logits = model(x).mean(0)
                loss = F.cross_entropy(logits.float(), labels)
            if train:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
            functional.reset_net(model)
            n = labels.shape[0]
            samples += n
            batch_loss = loss.item()  # one device sync per batch
            loss_sum += batch_loss * n
            if losses is not None:
                losses.append(batch_loss)
            top1 += accuracy(logits, labels, 1)
            top5 += accuracy(logits, labels, 5)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f'{batch_loss:.3f}', acc1=f'{100 * top1 / samples:.1f}')
    return samples, loss_sum, top1, top5, time.time() - start


def make_loader(config, distributed, train: bool) -> DataLoader:
    """The training (shuffled, reseeded every epoch by ``set_epoch``) or test loader."""
    dataset = cfg.dataset(config, train)
    if distributed.world > 1 and train:
        sampler = DistributedSampler(dataset, shuffle=True, seed=config['seed'], drop_last=True)
    elif distributed.world > 1:
        sampler = ShardSampler(dataset, distributed.rank, distributed.world)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator()) if train else SequentialSampler(dataset)
    loader = DataLoader(dataset, sampler=sampler, drop_last=train, batch_size=config['batch_size'],
                        num_workers=config['workers'], pin_memory=distributed.device.type == 'cuda')
    if train and len(loader) == 0:
        raise cfg.ConfigError(f'batch_size {config["batch_size"]} is larger than the training set '
                              f'({len(sampler)} samples per process)')
    return loader


def set_epoch(loader, seed, epoch):
    """Shuffle each epoch from (seed, epoch) alone, so a resumed run sees the same order."""
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(seed * 1000 + epoch)


def test_operations(counter: sj_ei.ops.Counter, distributed) -> dict:
    """Per-test-sample operation counts and energy (``sj_ei.ops``) over all ranks."""
    counts = counter.report().totals()
    samples, *sums = distributed.sum(counter.samples, *(counter.samples * v for v in counts.values()))
    counts = dict(zip(counts, (total / samples for total in sums)))
    counts['inhibition_share'] = counts['inhibition_pJ'] / counts['energy_pJ'] if counts['energy_pJ'] else 0.0
    return counts


def check_setup(config: dict) -> torch.device:
    """The torch device of ``config``, after checking that this machine can run ``config``; sets torch's CPU
    threads (``threads``)."""
    cfg.check_combination(config)
    if config['threads']:
        torch.set_num_threads(config['threads'])
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


def first_batch(loader, seed: int, device) -> torch.Tensor:
    """The model input of the first training batch of epoch 0 (what E-I Init sees)."""
    set_epoch(loader, seed, 0)
    x, _ = next(iter(loader))
    return datasets.model_input(x).to(device)


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


def after_stop(out_dir, processes: int) -> str:
    """What to run after a run stopped early: resume it from its latest checkpoint, or start it afresh."""
    latest = Path(out_dir) / 'checkpoint_latest.pth'
    if latest.is_file():
        again = f', with {processes} processes again ({launcher(processes)})' if processes > 1 else ''
        return f'continue with -resume {latest}{again}'
    return (f'run the same command again to start afresh in {out_dir} (no epoch finished, so there is nothing '
            'to resume; what this run wrote there is replaced)')


def run(config: dict, resume, distributed: Distributed, started: float) -> Summary:
    """The body of ``train``, in the run's locked folder."""
    state = checkpoint.load(resume, config, distributed.world) if resume else None
    out_dir = Path(config['out_dir'])
    device = distributed.device
    seed_everything(config['seed'])
    train_loader, test_loader = make_loader(config, distributed, True), make_loader(config, distributed, False)
    model = build_model(config).to(device)
    sj_ei.set_backend(model, config['backend'])
    optimizer = torch.optim.SGD(model.parameters(), lr=config['lr'], momentum=config['momentum'],
                                weight_decay=config['weight_decay'])
    steps = len(train_loader)
    warmup, warmup_note = warmup_steps(config, steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, config['epochs'] * steps))
    scaler = torch.amp.GradScaler(device.type, enabled=config['amp'] and amp_dtype(device) == torch.float16)
    sj_ei.constrain(model, optimizer)
    start_epoch, best_acc1, best_epoch, test_acc1 = 0, -math.inf, None, None  # the first epoch is the best so far
    if state:
        checkpoint.restore(resume, state, distributed.rank, model, optimizer, scheduler, scaler)
        start_epoch, best_acc1, best_epoch = state['epoch'] + 1, state['best_acc1'], state.get('best_epoch')
    elif config['init_from']:
        convert.load_pretrained(model, config['init_from'])
    elif config['norm'] == 'ei':
        sj_ei.ei_init(model, first_batch(train_loader, config['seed'], device))
    rates = FiringRates(model)
    # DDP broadcasts rank 0's parameters and buffers: every rank starts from rank 0's E-I Init
    net = DistributedDataParallel(model) if distributed.world > 1 else model
    distributed.check_identical(model)
    distributed.dump(model, 'init')
    writer = None
    if distributed.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(out_dir))
        begin = (f', resumed at epoch {start_epoch}' if state else
                 f', from the weights of {config["init_from"]}' if config['init_from'] else '')
        print(f'{config["model"]} ({config["norm"]}) on {config["dataset"]}: {len(train_loader.dataset)} train / '
              f'{len(test_loader.dataset)} test samples, T={config["T"]}, {distributed.world} process(es), '
              f'device {device} ({torch.get_num_threads()} CPU thread(s)), out_dir {out_dir}{begin}', flush=True)
        if distributed.world > 1:
            start = ('resumed' if state else 'loaded' if config['init_from'] else
                     'E-I Init' if config['norm'] == 'ei' else 'initialization')
            print(f'{start}: parameters identical on all {distributed.world} ranks', flush=True)
        if warmup_note:
            print(warmup_note, flush=True)
    shares = {}  # of the last epoch trained, for the closing note
    try:
        for epoch in range(start_epoch, config['epochs']):
            set_epoch(train_loader, config['seed'], epoch)
            rates.reset()
            losses = []
            # a bar only on a terminal: in a log file its updates would be thousands of lines
            progress = tqdm(total=steps, desc=f'epoch {epoch}', leave=False,
                            disable=not (distributed.main and sys.stderr.isatty()))
            *train_stats, train_time = run_epoch(net, train_loader, device, config['amp'], True, optimizer,
                                                 scheduler, scaler, losses, progress)
            progress.close()
            with sj_ei.ops.Counter(model, baseline=config['norm'] != 'ei') as counter:
                *test_stats, test_time = run_epoch(net, test_loader, device, config['amp'], False)
            operations = test_operations(counter, distributed)
            n, loss, top1, top5 = distributed.sum(*train_stats)
            tn, tloss, ttop1, ttop5 = distributed.sum(*test_stats)
            distributed.check_identical(model)
            rng = distributed.gather(checkpoint.rng_states())
            problem, epoch_rates, shares = epoch_health(config, rates, losses, distributed)
            if not distributed.main:
                if problem:
                    raise SystemExit(2)  # rank 0 says why
                continue
            acc1, test_acc1 = 100 * top1 / n, 100 * ttop1 / tn
            is_best = test_acc1 > best_acc1
            if is_best:
                best_acc1, best_epoch = test_acc1, epoch
            scalars = {'train/loss': loss / n, 'train/acc1': acc1, 'train/acc5': 100 * top5 / n,
                       'test/loss': tloss / tn, 'test/acc1': test_acc1, 'test/acc5': 100 * ttop5 / tn,
                       'lr': optimizer.param_groups[0]['lr'], 'train/speed': n / train_time,
                       'test/speed': tn / test_time}
            for key, value in scalars.items():
                writer.add_scalar(key, value, epoch)
            for name, rate in epoch_rates.items():
                writer.add_scalar(f'firing_rate/{name}', rate, epoch)
            for name, share in shares.items():
                writer.add_scalar(f'input_share/{name}', share, epoch)
            for key, value in operations.items():  # ops/ac, ops/mac, ops/div, ..., ops/energy_pJ per test sample
                writer.add_scalar(f'ops/{key}', value, epoch)
            if config['histograms']:
                x, _ = next(iter(test_loader))
                log_histograms(writer, model, datasets.model_input(x).to(device), epoch)
            writer.flush()
            snapshot = dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), epoch=epoch,
                            best_acc1=best_acc1, best_epoch=best_epoch, config=config, rng=rng)
            checkpoint.save(out_dir / 'checkpoint_latest.pth', **snapshot)
            if is_best:
                checkpoint.save(out_dir / 'checkpoint_max.pth', **snapshot)
            print(f'epoch {epoch}: train loss {loss / n:.4f} acc@1 {acc1:.2f} | test loss {tloss / tn:.4f} '
                  f'acc@1 {test_acc1:.2f} acc@5 {100 * ttop5 / tn:.2f} | best acc@1 {best_acc1:.2f} | '
                  f'train {n / train_time:.1f} samples/s, test {tn / test_time:.1f} samples/s', flush=True)
            if problem:
                writer.close()
                raise health.CollapseError(collapse_message(problem, epoch, epoch_rates, config, out_dir, best_epoch))
    except KeyboardInterrupt:
        if distributed.main:
            print(f'interrupted; {after_stop(out_dir, distributed.world)}', file=sys.stderr, flush=True)
        raise
    distributed.dump(model, 'final')
    if writer and config['figures']:  # of the last model, on the first test batch
        x, _ = next(iter(test_loader))
        sj_ei.analyze.log_figures(writer, model, [datasets.model_input(x).to(device)], config['epochs'] - 1)
    if writer:
        writer.close()
    distributed.close()
    summary = Summary(best_acc1, best_epoch, test_acc1, time.time() - started, out_dir)
    if distributed.main:
        note = near_chance(best_acc1, datasets.info(config['dataset'])['num_classes'], config['epochs'] * steps,
                           shares)
        if note:
            print(note, flush=True)
        print(summary.line(), flush=True)
    return summary


class Evaluation(NamedTuple):
    """Test-set metrics of a model."""
    loss: float
    acc1: float  #: top-1 (%)
    acc5: float  #: top-5 (%)
    samples: int


def pretrained_model(config: dict, path) -> torch.nn.Module:
    """The model held by checkpoint ``path``: this trainer's (built from the config saved in it, which must
    agree with ``config`` on the model), a plain sj_ei state dict (the model of ``config``), or the
    DeepEISNN authors' layout (with the config inside it or the config.json beside it, else the
    architecture of ``config``)."""
    state, saved = convert.read_checkpoint(path)
    if convert.is_sj_ei(state):
        if saved is not None and 'norm' in saved:  # this trainer's checkpoint
            differ = checkpoint.differences(saved, config, checkpoint.SAME_MODEL)
            if differ:
                raise checkpoint.CheckpointError(
                    f'{path} holds another model than the config ({"; ".join(text for _, text in differ)}); '
                    'evaluate it with the config it was trained with')
        return convert.load_pretrained(build_model(config), path)
    name = config['model']
    meta = datasets.info(config['dataset'])
    arch = {'arch': name.rstrip('0123456789'), 'num_layers': int(name[len(name.rstrip('0123456789')):]),
            'num_classes': meta['num_classes'], 'in_channels': meta['in_channels'], 'ei_ratio': config['ei_ratio']}
    return convert.from_deepeisnn(path, saved or arch, T=config['T'])


def evaluate_pretrained(config: dict, path) -> Evaluation:
    """Test-set loss, top-1 and top-5 of the model in checkpoint ``path`` (see ``pretrained_model``)."""
    distributed = Distributed(check_setup(config))
    model = pretrained_model(config, path).to(distributed.device)
    test_loader = make_loader(config, distributed, False)
    samples, loss, top1, top5, seconds = run_epoch(model, test_loader, distributed.device, config['amp'], False)
    result = Evaluation(loss / samples, 100 * top1 / samples, 100 * top5 / samples, int(samples))
    print(f'{path}: test loss {result.loss:.4f} acc@1 {result.acc1:.2f} acc@5 {result.acc5:.2f} '
          f'({samples:.0f} samples, {samples / seconds:.1f} samples/s)')
    distributed.close()
    return result


USER_ERRORS = (cfg.ConfigError, checkpoint.CheckpointError, run_folder.RunFolderError, datasets.DatasetNotFoundError,
               datasets.DatasetDamagedError, sj_ei.EIInitError, convert.ConversionError, CupyUnavailableError,
               health.CollapseError)


def launcher(processes: int) -> str:
    """What starts ``processes`` processes of a run: ``python``, or ``torchrun --nproc_per_node=N``."""
    return f'torchrun --nproc_per_node={processes}' if processes > 1 else 'python'


def command(argv, processes: int) -> str:
    """The command line that runs ``python -m train.classify argv`` in ``processes`` processes."""
    return f'{launcher(processes)} -m train.classify {shlex.join(argv)}'


def peer_lost(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing under torchrun because another process of the run ended
    (interrupted, killed): then that process says why, and this one needs no traceback."""
    return int(os.environ.get('WORLD_SIZE', 1)) > 1 and any(
        text in str(error) for text in ('Connection closed by peer', 'Connection reset by peer', 'Broken pipe'))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        config = make_config(args)
        if args.pretrained:
            evaluate_pretrained(config, args.pretrained)
        else:
            train(config, args.resume)
    except USER_ERRORS as e:
        exact = f': {command(argv, e.processes)}' if isinstance(e, checkpoint.ProcessCountError) else ''
        print(f'error: {e}{exact}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)  # train() said how to continue
    except RuntimeError as e:  # under torchrun: a collective of this rank failed because another rank ended
        if not peer_lost(e):
            raise
        folder = Path(args.resume).parent if args.resume else config['out_dir']
        print(f'error: rank {os.environ.get("RANK")} stopped: another process of this run ended (connection closed); '
              f'{after_stop(folder, int(os.environ["WORLD_SIZE"]))}', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
