"""One process or many: rank, device, samplers and the collectives the trainer needs.

Under ``torchrun`` (``WORLD_SIZE > 1``) every process joins a process group (``nccl``
for CUDA devices, ``gloo`` on the CPU); otherwise all of this is a no-op for one process.
"""
import os

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

#: debug aid: a folder where every rank writes its parameters after E-I Init and at the
#: end (``rank{r}_init.pth``, ``rank{r}_final.pth``), so that a test can compare ranks
DUMP_ENV = 'TRAIN_DUMP_RANK_PARAMS'


class Distributed:
    """Rank, world size and device of this process (one process unless started by torchrun)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get('WORLD_SIZE', 1))
        self.rank = 0
        self.device = device
        if self.world > 1:
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
            self.rank = dist.get_rank()
            if device.type == 'cuda':
                self.device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
                torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        """Whether this process logs and saves (rank 0)."""
        return self.rank == 0

    def sum(self, *values: float) -> tuple:
        """``values`` summed over all ranks."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return tuple(t.tolist())

    def max(self, value: int) -> int:
        """The largest ``value`` (an integer) over all ranks."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def barrier(self) -> None:
        """Wait for every rank (e.g. for rank 0 to have written a checkpoint before the run exits)."""
        self.max(0)

    def gather(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        if self.world == 1:
            return [obj]
        objects = [None] * self.world
        dist.all_gather_object(objects, obj)
        return objects

    def check_identical(self, model: torch.nn.Module) -> None:
        """Raise unless every rank holds exactly the same parameters and buffers."""
        if self.world == 1:
            return
        flat = torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
        digest = torch.stack([flat.sum(), (flat * weights).sum(), flat.square().sum()])
        digests = [torch.empty_like(digest) for _ in range(self.world)]
        dist.all_gather(digests, digest)
        if any(not torch.equal(d, digests[0]) for d in digests):
            raise RuntimeError('model parameters differ between ranks')

    def dump(self, model: torch.nn.Module, stage: str) -> None:
        """Write this rank's ``model.state_dict()`` to ``$TRAIN_DUMP_RANK_PARAMS/rank{r}_{stage}.pth``."""
        folder = os.environ.get(DUMP_ENV)
        if folder:
            os.makedirs(folder, exist_ok=True)
            torch.save({k: v.cpu() for k, v in model.state_dict().items()},
                       os.path.join(folder, f'rank{self.rank}_{stage}.pth'))

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()


class ShardSampler(Sampler):
    """Evaluation sampler: rank ``r`` of ``world`` takes samples ``r, r + world, ...`` in order.

    Unlike ``DistributedSampler`` it pads nothing, so metrics summed over ranks count
    every test sample exactly once.
    """

    def __init__(self, dataset, rank: int, world: int):
        self.indices = range(rank, len(dataset), world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)
