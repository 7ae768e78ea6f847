"""Batch samplers: length-grouped shuffled batches for training, exact shards for evaluation."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def step_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    """The seed of everything drawn for one batch (dropout, masks): new each epoch, the same after a resume."""
    return (seed * 1_000_003 + rank * 10_007 + epoch) * 1_000_033 + batch


class BatchIndices(list):
    """A batch's dataset indices, and the seed for what is drawn per batch (`step_seed` of its position),
    which a dataset's `__getitems__` can hand to the collator."""

    def __init__(self, indices: list[int], seed: int):
        super().__init__(indices)
        self.seed = seed


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length, the same on every rank for a given seed and epoch.

    Each epoch: shuffle all indices; cut them into megabatches of `megabatch_factor` global
    batches; sort each megabatch by length (so a batch pads little); cut it into global batches of
    `batch_size * world_size`; shuffle the order of all global batches (so lengths do not march
    in order through the epoch); give rank r the r-th slice of each global batch. Randomness
    survives in which rows meet and in batch order. `megabatch_factor=1` sorts nothing beyond a
    single batch; `group_by_length=False` gives plain shuffled batches.

    Every rank gets the same number of batches: indices are padded by wrapping around to a multiple
    of the world size, as DistributedSampler does for training. `start_batch` skips the batches of
    the current epoch that a resumed run already trained on.
    """

    def __init__(self, lengths: torch.Tensor, batch_size: int, seed: int, world_size: int = 1, rank: int = 0,
                 group_by_length: bool = True, megabatch_factor: int = 50):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.world_size, self.rank = world_size, rank
        self.group_by_length, self.megabatch_factor = group_by_length, megabatch_factor
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _global_batches(self) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        padding = -len(order) % self.world_size
        order = torch.cat([order, order[:padding]])
        global_size = self.batch_size * self.world_size
        if self.group_by_length:
            megabatches = order.split(global_size * self.megabatch_factor)
            order = torch.cat([m[self.lengths[m].argsort(descending=True, stable=True)] for m in megabatches])
        batches = list(order.split(global_size))
        shuffle = torch.randperm(len(batches), generator=generator)
        return [batches[i] for i in shuffle]

    def __iter__(self):
        for number, batch in enumerate(self._global_batches()[self.start_batch:], start=self.start_batch):
            share = len(batch) // self.world_size
            yield BatchIndices(batch[self.rank * share:(self.rank + 1) * share].tolist(),
                               step_seed(self.seed, self.rank, self.epoch, number))

    def __len__(self) -> int:
        padded = len(self.lengths) + (-len(self.lengths) % self.world_size)
        return -(-padded // (self.batch_size * self.world_size)) - self.start_batch


class EvalShardSampler(Sampler[list[int]]):
    """This rank's share of an evaluation set: every index on exactly one rank, none repeated.

    Indices are sorted by length (long first, so memory peaks early) and dealt out round-robin,
    so ranks get similar work and each batch pads little. Results carry their indices and are put
    back in file order after gathering.
    """

    def __init__(self, lengths: torch.Tensor, batch_size: int, world_size: int = 1, rank: int = 0,
                 seed: int | None = None):
        order = lengths.argsort(descending=True, stable=True)
        self.indices = order[rank::world_size]
        self.batch_size, self.rank, self.seed = batch_size, rank, seed

    def __iter__(self):
        """Index lists; with a `seed`, `BatchIndices` carrying the same seeds at every pass (masked-LM
        evaluations then score the same masks each time, so they compare)."""
        for number, batch in enumerate(self.indices.split(self.batch_size)):
            yield batch.tolist() if self.seed is None else BatchIndices(
                batch.tolist(), step_seed(self.seed, self.rank, 0, number))

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)
