"""The training and test loaders: every epoch's order from (seed, epoch) alone, shared among the ranks
under torchrun, and startable at any step of an epoch, so that a resumed run sees the same batches."""
import itertools

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from sj_ei import config as cfg, datasets

from .distributed import ShardSampler
from .signals import ignore_in_workers


class Resumable(Sampler):
    """``sampler``'s order from position ``start`` on (a run resumed in the middle of an epoch)."""

    def __init__(self, sampler: Sampler):
        self.sampler, self.start = sampler, 0

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.start, None)

    def __len__(self):
        return len(self.sampler) - self.start


def make_loader(config, distributed, train: bool) -> DataLoader:
    """The training (shuffled, reseeded every epoch by ``set_epoch``) or test loader."""
    dataset = cfg.dataset(config, train)
    if distributed.world > 1 and train:
        sampler = DistributedSampler(dataset, shuffle=True, seed=config['seed'], drop_last=True)
    elif distributed.world > 1:
        sampler = ShardSampler(dataset, distributed.rank, distributed.world)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator()) if train else SequentialSampler(dataset)
    loader = DataLoader(dataset, sampler=Resumable(sampler) if train else sampler, drop_last=train,
                        batch_size=config['batch_size'], num_workers=config['workers'],
                        pin_memory=distributed.device.type == 'cuda', worker_init_fn=ignore_in_workers)
    if train and len(loader) == 0:
        raise cfg.ConfigError(f'batch_size {config["batch_size"]} is larger than the training set '
                              f'({len(sampler)} samples per process)')
    return loader


def set_epoch(loader, seed, epoch, step: int = 0):
    """Shuffle each epoch from (seed, epoch) alone, so a resumed run sees the same order, and begin at
    its step ``step`` (a run resumed in the middle of the epoch)."""
    sampler = loader.sampler.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(seed * 1000 + epoch)
    loader.sampler.start = step * loader.batch_size


def first_batch(loader, seed: int, device) -> torch.Tensor:
    """The model input of the first training batch of epoch 0 (what E-I Init sees)."""
    set_epoch(loader, seed, 0)
    x, _ = next(iter(loader))
    return datasets.model_input(x).to(device)
