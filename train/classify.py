"""Train and evaluate a spiking classifier with the paper's recipe (SPEC section 6).

    python -m train.classify -cfg configs/dvsgesture.yaml [-data-dir DIR] [-b 32] ...
    torchrun --nproc_per_node=N -m train.classify -cfg ...      (DistributedDataParallel)

SGD with momentum and weight decay, linear warm-up then cosine annealing per
iteration, cross-entropy on the time-averaged output, E-I Init on the first
training batch, Dale's law after every step, ``reset_net`` after every batch.
Writes TensorBoard logs, ``checkpoint_latest.pth`` and ``checkpoint_max.pth`` to ``out_dir``.
"""
import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from spikingjelly.activation_based import functional, neuron

import sj_ei
from sj_ei import convert, datasets

from . import checkpoint
from . import config as cfg

FLAGS = {'-data-dir': 'data_dir', '-out-dir': 'out_dir', '-device': 'device', '-b': 'batch_size',
         '-epochs': 'epochs', '-lr': 'lr', '-T': 'T', '-j': 'workers', '-backend': 'backend', '-seed': 'seed',
         '-width': 'width'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python -m train.classify', description=__doc__.split('\n\n')[0],
                                     epilog='Config keys (YAML and -set):\n' + cfg.valid_keys(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-cfg', required=True, metavar='YAML', help='experiment config (see configs/)')
    for flag, key in FLAGS.items():
        parser.add_argument(flag, dest=key, metavar=key.upper(), help=cfg.SCHEMA[key][2])
    parser.add_argument('-amp', action='store_true', help=cfg.SCHEMA['amp'][2])
    parser.add_argument('-resume', metavar='PATH', help='continue the run of this checkpoint')
    parser.add_argument('-pretrained', metavar='PATH',
                        help='evaluate a DeepEISNN model (model.safetensors, with its config.json beside it, or a '
                             '.pth training checkpoint of the same layout) on the test set, and exit')
    parser.add_argument('-set', action='append', default=[], metavar='KEY=VALUE', help='override any config key')
    return parser.parse_args(argv)


def make_config(args) -> dict:
    config = cfg.load(args.cfg)
    for key in FLAGS.values():
        if getattr(args, key) is not None:
            cfg.override(config, key, getattr(args, key), f'flag for {key}')
    if args.amp:
        config['amp'] = True
    for item in args.set:
        key, sep, value = item.partition('=')
        if not sep:
            raise cfg.ConfigError(f'-set expects KEY=VALUE, got {item!r}')
        cfg.override(config, key, value, f'-set {item}')
    return config


class Distributed:
    """Rank, world size and device of this process (one process unless started by torchrun)."""

    def __init__(self, device: str):
        self.world = int(os.environ.get('WORLD_SIZE', 1))
        self.rank = 0
        self.device = torch.device(device)
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise cfg.ConfigError(f"device {device!r}: no CUDA device is available here; use -device cpu")
        if self.world > 1:
            dist.init_process_group('nccl' if self.device.type == 'cuda' else 'gloo')
            self.rank = dist.get_rank()
            if self.device.type == 'cuda':
                self.device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
                torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float):
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return tuple(t.tolist())

    def check_identical(self, model) -> None:
        """Raise unless every rank holds exactly the same parameters."""
        if self.world == 1:
            return
        flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
        digest = torch.stack([flat.sum(), (flat * weights).sum()])
        digests = [torch.empty_like(digest) for _ in range(self.world)]
        dist.all_gather(digests, digest)
        if any(not torch.equal(d, digests[0]) for d in digests):
            raise RuntimeError('model parameters differ between ranks')


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


class FiringRates:
    """Mean spike rate of every E population (LIF node) over the batches seen since ``reset``."""

    def __init__(self, model):
        self.nodes = {name: m for name, m in model.named_modules() if isinstance(m, neuron.LIFNode)}
        self.sums = {}
        for name, node in self.nodes.items():
            node.register_forward_hook(lambda m, i, o, name=name: self._add(name, o))
        self.batches = 0

    def _add(self, name, spikes):
        if torch.is_grad_enabled():
            self.sums[name] = self.sums.get(name, 0) + spikes.detach().float().mean()

    def reset(self):
        self.sums, self.batches = {}, 0

    def rates(self) -> dict:
        return {name: (total / max(1, self.batches)).item() for name, total in self.sums.items()}


def accuracy(logits, labels, k):
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(1).float().sum().item()


def run_epoch(model, loader, device, amp, train, optimizer=None, scheduler=None, scaler=None, rates=None,
              progress=None):
    """One pass over ``loader``; returns (samples, loss sum, top-1 hits, top-5 hits, seconds)."""
    model.train(train)
    samples = loss_sum = top1 = top5 = 0.0
    start = time.time()
    amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    with torch.set_grad_enabled(train):
        for x, labels in loader:
            x, labels = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if x.dim() == 5:
                x = x.transpose(0, 1)  # [B, T, C, H, W] -> [T, B, C, H, W]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                logits = model(x).mean(0)
                loss = F.cross_entropy(logits.float(), labels)
            if train:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                rates.batches += 1
            functional.reset_net(model)
            n = labels.shape[0]
            samples += n
            loss_sum += loss.item() * n
            top1 += accuracy(logits, labels, 1)
            top5 += accuracy(logits, labels, 5)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f'{loss.item():.3f}', acc1=f'{100 * top1 / samples:.1f}')
    return samples, loss_sum, top1, top5, time.time() - start


def make_loader(config, distributed, train: bool) -> DataLoader:
    """The training (shuffled, reseeded every epoch by ``set_epoch``) or test loader."""
    options = {}
    if config['dataset'] == 'synthetic':
        options = {k: config[k] for k in ('num_samples', 'num_test_samples', 'size', 'seed')}
    dataset = datasets.build(config['dataset'], config['data_dir'], config['T'], train, **options)
    if distributed.world > 1:
        sampler = DistributedSampler(dataset, shuffle=train, seed=config['seed'], drop_last=train)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator()) if train else SequentialSampler(dataset)
    loader = DataLoader(dataset, sampler=sampler, drop_last=train, batch_size=config['batch_size'],
                        num_workers=config['workers'], pin_memory=distributed.device.type == 'cuda')
    if len(loader) == 0:
        raise cfg.ConfigError(f'batch_size {config["batch_size"]} is larger than the training set '
                              f'({len(dataset)} samples per process)')
    return loader


def set_epoch(loader, seed, epoch):
    """Shuffle each epoch from (seed, epoch) alone, so a resumed run sees the same order."""
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(seed * 1000 + epoch)


def log_histograms(writer, model, loader, device, epoch):
    """Histograms of the E-I parameters and of each E-I layer's output current on one test batch."""
    for name, layer in sj_ei.ei_layers(model):
        for pname, p in layer.named_parameters(recurse=False):
            writer.add_histogram(f'param/{name}.{pname}', p.detach().float().cpu(), epoch)
    currents, hooks = {}, []
    for name, layer in sj_ei.ei_layers(model):
        hooks.append(layer.register_forward_hook(lambda m, i, o, name=name: currents.__setitem__(name, o.detach())))
    x, _ = next(iter(loader))
    with torch.no_grad():
        model.eval()
        model((x.transpose(0, 1) if x.dim() == 5 else x).to(device))
    functional.reset_net(model)
    for h in hooks:
        h.remove()
    for name, current in currents.items():
        writer.add_histogram(f'I_int/{name}', current.float().cpu(), epoch)


def train(config: dict, resume=None):
    distributed = Distributed(config['device'])
    device = distributed.device
    seed_everything(config['seed'])
    if config['backend'] == 'cupy' and device.type != 'cuda':
        raise cfg.ConfigError("backend 'cupy' needs a CUDA device: run with -device cuda, or -backend torch")
    out_dir = Path(config['out_dir'])
    train_loader, test_loader = make_loader(config, distributed, True), make_loader(config, distributed, False)
    meta = datasets.info(config['dataset'])
    model = sj_ei.models.build(config['model'], meta['num_classes'], meta['in_channels'], norm=config['norm'],
                               T=config['T'], ei_ratio=config['ei_ratio'], width=config['width']).to(device)
    functional.set_backend(model, config['backend'])
    optimizer = torch.optim.SGD(model.parameters(), lr=config['lr'], momentum=config['momentum'],
                                weight_decay=config['weight_decay'])
    steps = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config['warmup_epochs'] * steps, config['epochs'] * steps))
    scaler = torch.amp.GradScaler(device.type, enabled=config['amp'] and device.type == 'cuda')
    sj_ei.constrain(model, optimizer)
    start_epoch, best_acc1 = 0, 0.0
    if resume:
        state = checkpoint.load(resume, config)
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        scaler.load_state_dict(state['scaler'])
        start_epoch, best_acc1 = state['epoch'] + 1, state['best_acc1']
        checkpoint.set_rng_states(state['rng'])
    elif config['norm'] == 'ei':
        set_epoch(train_loader, config['seed'], 0)
        x, _ = next(iter(train_loader))
        sj_ei.ei_init(model, (x.transpose(0, 1) if x.dim() == 5 else x).to(device))
    rates = FiringRates(model)
    net = DistributedDataParallel(model) if distributed.world > 1 else model
    distributed.check_identical(model)
    writer = None
    if distributed.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(out_dir))
        print(f'{config["model"]} ({config["norm"]}) on {config["dataset"]}: {len(train_loader.dataset)} train / '
              f'{len(test_loader.dataset)} test samples, T={config["T"]}, {distributed.world} process(es), '
              f'device {device}, out_dir {out_dir}' + (f', resumed at epoch {start_epoch}' if resume else ''))
        if distributed.world > 1:
            print(f'E-I Init: parameters identical on all {distributed.world} ranks')
    for epoch in range(start_epoch, config['epochs']):
        set_epoch(train_loader, config['seed'], epoch)
        rates.reset()
        progress = tqdm(total=steps, desc=f'epoch {epoch}', leave=False, disable=not distributed.main)
        train_stats = distributed.sum(*run_epoch(net, train_loader, device, config['amp'], True, optimizer,
                                                 scheduler, scaler, rates, progress)[:4])
        progress.close()
        test_samples, test_loss, test_top1, test_top5, test_time = run_epoch(net, test_loader, device,
                                                                            config['amp'], False)
        test_stats = distributed.sum(test_samples, test_loss, test_top1, test_top5)
        distributed.check_identical(model)
        train_time = progress.format_dict['elapsed']
        if not distributed.main:
            continue
        n, loss, top1, top5 = train_stats
        tn, tloss, ttop1, ttop5 = test_stats
        acc1, test_acc1 = 100 * top1 / n, 100 * ttop1 / tn
        is_best = test_acc1 > best_acc1
        best_acc1 = max(best_acc1, test_acc1)
        scalars = {'train/loss': loss / n, 'train/acc1': acc1, 'train/acc5': 100 * top5 / n,
                   'test/loss': tloss / tn, 'test/acc1': test_acc1, 'test/acc5': 100 * ttop5 / tn,
                   'lr': optimizer.param_groups[0]['lr'], 'train/speed': n / train_time,
                   'test/speed': tn / test_time}
        for key, value in scalars.items():
            writer.add_scalar(key, value, epoch)
        for name, rate in rates.rates().items():
            writer.add_scalar(f'firing_rate/{name}', rate, epoch)
        if config['histograms']:
            log_histograms(writer, model, test_loader, device, epoch)
        writer.flush()
        state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                     scaler=scaler.state_dict(), epoch=epoch, best_acc1=best_acc1, config=config)
        checkpoint.save(out_dir / 'checkpoint_latest.pth', **state)
        if is_best:
            checkpoint.save(out_dir / 'checkpoint_max.pth', **state)
        print(f'epoch {epoch}: train loss {loss / n:.4f} acc@1 {acc1:.2f} | test loss {tloss / tn:.4f} '
              f'acc@1 {test_acc1:.2f} acc@5 {100 * ttop5 / tn:.2f} | best acc@1 {best_acc1:.2f} | '
              f'train {n / train_time:.1f} samples/s, test {tn / test_time:.1f} samples/s', flush=True)
    if writer:
        writer.close()
    if distributed.world > 1:
        dist.destroy_process_group()
    return best_acc1


def evaluate_pretrained(config: dict, path) -> float:
    """Test-set top-1 (%) of a DeepEISNN checkpoint read into the sj_ei model of ``config``."""
    distributed = Distributed(config['device'])
    meta = datasets.info(config['dataset'])
    name = config['model']
    arch = {'arch': name.rstrip('0123456789'), 'num_layers': int(name[len(name.rstrip('0123456789')):]),
            'num_classes': meta['num_classes'], 'in_channels': meta['in_channels'], 'ei_ratio': config['ei_ratio']}
    beside = Path(path).with_name('config.json')
    model = convert.from_deepeisnn(path, beside if beside.is_file() else arch, T=config['T']).to(distributed.device)
    test_loader = make_loader(config, distributed, False)
    samples, loss, top1, top5, seconds = run_epoch(model, test_loader, distributed.device, config['amp'], False)
    print(f'{path}: test loss {loss / samples:.4f} acc@1 {100 * top1 / samples:.2f} acc@5 {100 * top5 / samples:.2f} '
          f'({samples:.0f} samples, {samples / seconds:.1f} samples/s)')
    return 100 * top1 / samples


USER_ERRORS = (cfg.ConfigError, checkpoint.CheckpointError, datasets.DatasetNotFoundError, sj_ei.EIInitError,
               convert.ConversionError)


def main(argv=None):
    args = parse_args(argv)
    config = None
    try:
        config = make_config(args)
        if args.pretrained:
            evaluate_pretrained(config, args.pretrained)
        else:
            train(config, args.resume)
    except USER_ERRORS as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        resume = f'; continue with -resume {Path(config["out_dir"]) / "checkpoint_latest.pth"}' if config else ''
        print(f'interrupted{resume}', file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    main()
