"""Lazy E-I Init inside DistributedDataParallel (2 gloo processes): the ranks see different
shards, yet start from the same parameters, initialized from the statistics of all shards."""
import math

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from spikingjelly.activation_based import layer

import sj_ei

from train_helpers import free_port


def tiny_net():
    return nn.Sequential(sj_ei.EIConv2d(2, 8, 3, padding=1, step_mode='m'), sj_ei.e_population(step_mode='m'),
                         layer.Flatten(step_mode='m'), sj_ei.EILinear(8 * 6 * 6, 4, readout=True, step_mode='m'))


def shard(rank):
    """Rank ``rank``'s events ``[T=2, B=3, 2, 6, 6]``: a bar moving right, denser on rank 1."""
    g = torch.Generator().manual_seed(rank)
    x = torch.zeros(2, 3, 2, 6, 6)
    for t in range(2):
        x[t, :, 0, :, 1 + 2 * t: 3 + 2 * t] = 1
    return torch.bernoulli((0.25 + 0.5 * rank) * x + 0.05, generator=g)


def _rank(rank, world, port, folder):
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # each rank would draw different weights
        net = DistributedDataParallel(tiny_net())
        net(shard(rank)).sum().backward()  # E-I Init happens in this first training forward
        torch.save(net.module.state_dict(), f'{folder}/rank{rank}.pth')
        dist.barrier()  # both ranks done with gloo before either tears it down
    finally:
        dist.destroy_process_group()


def test_lazy_init_under_ddp_gives_every_rank_the_same_parameters(tmp_path):
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert bool(rank0['0.initialized']) and bool(rank0['3.initialized'])
    both = torch.cat([shard(0), shard(1)], dim=1).flatten(0, 1).double().flatten(1)  # all 12 samples
    e_x, e_x2, var_x = both.mean().item(), both.square().mean().item(), both.var(dim=0).mean().item()
    gain_i = math.sqrt(e_x2 + var_x) / (math.sqrt(2 * 9) * e_x)
    torch.testing.assert_close(rank0['0.gain_i'], torch.full((2,), gain_i))
