"""The order of training batches as a function of (seed, epoch), and resuming inside an epoch.

Exact resumption needs the batches of an epoch to be reproducible without replaying the
training: :func:`seed_epoch` re-seeds everything that decides them (the sampler's
permutation, the workers' base seed, the augmentation's epoch) from ``(seed, epoch)``
alone, and :func:`epoch_batches` then leaves out the batches a resumed run has already
trained on, by index, without loading them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
)

from pixcore._interfaces import Augmentation, Dataset, Sample

__all__ = [
    "AugmentedDataset",
    "ShardSampler",
    "epoch_batches",
    "mix_seed",
    "rebuild_loader",
    "seed_epoch",
    "training_sampler",
]


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers: (0, 1) and (1, 0) give unrelated streams."""
    return int(np.random.SeedSequence(list(values)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class AugmentedDataset(torch.utils.data.Dataset[Sample]):
    """Applies an augmentation with a generator seeded by (seed, epoch, index).

    Seeding per sample, rather than per worker, makes the augmented stream identical
    whatever the number of data loader workers, and different in every epoch.
    """

    def __init__(self, dataset: Dataset, augmentation: Augmentation | None, seed: int) -> None:
        self.dataset = dataset
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[index]
        if self.augmentation is None:
            return sample
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        )
        return self.augmentation(sample, generator)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: disjoint shards covering every sample exactly once.

    For evaluation under DDP: unlike ``DistributedSampler`` it never repeats samples to
    even out the shards, so metrics summed across ranks count each sample once.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def seed_epoch(loader: DataLoader[Any], seed: int, epoch: int) -> None:
    """Make the next pass over ``loader`` a function of ``(seed, epoch)`` only.

    * a sampler with ``set_epoch`` (``DistributedSampler``) draws its permutation from it;
    * the loader's generator draws the workers' base seed and, shared with a
      ``RandomSampler``, the permutation: it is re-seeded;
    * an ``AugmentedDataset`` seeds each sample's augmentation with the epoch.

    The global torch generator is never used, so dropout in the training step and the
    data order do not disturb each other.
    """
    if isinstance(loader.dataset, AugmentedDataset):
        loader.dataset.epoch = epoch
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if loader.generator is None:  # otherwise DataLoader draws the base seed from the global RNG
        loader.generator = torch.Generator()
    loader.generator.manual_seed(mix_seed(seed, epoch))
    if isinstance(sampler, RandomSampler):
        if sampler.generator is None:
            sampler.generator = loader.generator
        elif sampler.generator is not loader.generator:
            sampler.generator.manual_seed(mix_seed(seed, epoch, 1))


class _SkipBatches(Sampler[list[int]]):
    """A batch sampler without its first ``skip`` batches (indices only: nothing is loaded)."""

    def __init__(self, batches: Iterable[list[int]], skip: int) -> None:
        self.batches, self.skip = batches, skip

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batches), self.skip, None)

    def __len__(self) -> int:
        assert isinstance(self.batches, Sized)
        return max(0, len(self.batches) - self.skip)


def rebuild_loader(
    loader: DataLoader[Any], *, sampler: Sampler[int] | None = None,
    batch_sampler: Sampler[list[int]] | None = None,
) -> DataLoader[Any]:
    """A loader like ``loader`` (same data, workers, collation, generator) with another sampler."""
    options: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "generator": loader.generator,
        "pin_memory_device": loader.pin_memory_device,
    }
    if loader.num_workers > 0:
        options.update(
            multiprocessing_context=loader.multiprocessing_context,
            prefetch_factor=loader.prefetch_factor,
            persistent_workers=loader.persistent_workers,
        )
    if hasattr(loader, "in_order"):
        options["in_order"] = loader.in_order
    if batch_sampler is not None:
        return DataLoader(loader.dataset, batch_sampler=batch_sampler, **options)
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last, **options
    )


def epoch_batches(loader: DataLoader[Any], seed: int, epoch: int, skip: int = 0) -> Iterable[Sample]:
    """The batches of ``epoch``, in the order fixed by ``(seed, epoch)``, minus the first ``skip``.

    Skipped batches of a map-style data set are never loaded: the indices are drawn as in
    an uninterrupted epoch and the first ``skip`` batches of them dropped. An iterable data
    set has no indices, so its first batches are read and discarded.
    """
    seed_epoch(loader, seed, epoch)
    if skip == 0:
        return loader
    if isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None:
        return itertools.islice(loader, skip, None)
    # The rebuilt loader shares the generator and the sampler: it draws the same base seed
    # and permutation, in the same order, as the original would have for this epoch.
    return rebuild_loader(loader, batch_sampler=_SkipBatches(loader.batch_sampler, skip))


def training_sampler(dataset: Sized, seed: int, rank: int, world_size: int) -> DistributedSampler[Any]:
    """The shuffling sampler of ``make_loaders``: rank ``rank``'s share of a (seed, epoch) permutation.

    Rank ``r`` takes every ``world_size``-th index of the permutation, so the ranks' batches
    ``i`` together hold the same samples as batch ``i`` of one process with a batch
    ``world_size`` times larger.
    """
    return DistributedSampler(
        dataset,  # type: ignore[arg-type]
        num_replicas=world_size, rank=rank, shuffle=True, seed=mix_seed(seed, 0x5A3), drop_last=True,
    )
