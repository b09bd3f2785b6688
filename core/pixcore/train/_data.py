"""The order of training batches as a function of (seed, epoch), and resuming inside an epoch.

Exact resumption needs the batches of an epoch to be reproducible without replaying the
training: :func:`seed_epoch` re-seeds everything that decides them (the sampler's
permutation, the workers' base seed, the augmentation's epoch) from ``(seed, epoch)``
alone, and :func:`epoch_batches` then leaves out the batches a resumed run has already
trained on, by index, without loading them.

A *stream* (an iterable data set with ``start_epoch``, such as the ``shards`` data set)
has no indices: it is told the epoch and the number of batches to leave out, and each
loader worker works out which of its own samples those were and starts after them, also
without loading them (see :class:`pixcore.data.ShardDataset`).
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
    "AugmentedStream",
    "ShardSampler",
    "epoch_batches",
    "mix_seed",
    "is_stream",
    "rebuild_loader",
    "sample_generator",
    "seed_epoch",
    "stream_layout",
    "stream_loader",
    "training_sampler",
]


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers: (0, 1) and (1, 0) give unrelated streams."""
    return int(np.random.SeedSequence(list(values)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator that augments sample ``index`` in ``epoch``: a function of the three only."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0]))


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
        return self.augmentation(sample, sample_generator(self.seed, self.epoch, index))


def is_stream(dataset: object) -> bool:
    """An iterable data set that can start any epoch at any batch (``start_epoch``)."""
    return isinstance(dataset, IterableDataset) and callable(getattr(dataset, "start_epoch", None))


class AugmentedStream(IterableDataset[Sample]):
    """A stream's samples, each augmented with a generator seeded by (seed, epoch, index).

    ``index`` is the sample's index in the source data set, so a sample is augmented as
    :class:`AugmentedDataset` augments it, whichever process and worker streams it. The
    position and layout calls go to the stream.
    """

    def __init__(self, stream: Any, augmentation: Augmentation | None, seed: int) -> None:
        self.stream = stream
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        self.target_kinds = getattr(stream, "target_kinds", {})
        self.class_names = getattr(stream, "class_names", ())
        self.ignore_index = getattr(stream, "ignore_index", 255)

    @property
    def world_size(self) -> int:
        return int(self.stream.world_size)

    def __len__(self) -> int:
        return len(self.stream)

    def configure(self, **options: Any) -> None:
        self.stream.configure(**options)

    def start_epoch(self, epoch: int, skip_batches: int = 0, **options: Any) -> None:
        self.epoch = epoch
        self.stream.start_epoch(epoch, skip_batches, **options)

    def layout(self) -> dict[str, Any]:
        return dict(self.stream.layout())

    def __iter__(self) -> Iterator[Sample]:
        for index, sample in self.stream.indexed():
            if self.augmentation is None:
                yield sample
            else:
                yield self.augmentation(sample, sample_generator(self.seed, self.epoch, index))


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
    * an ``AugmentedDataset`` seeds each sample's augmentation with the epoch;
    * a stream (``start_epoch``) plans the epoch from ``(seed, epoch)``.

    The global torch generator is never used, so dropout in the training step and the
    data order do not disturb each other.
    """
    if isinstance(loader.dataset, AugmentedDataset):
        loader.dataset.epoch = epoch
    if is_stream(loader.dataset):
        _start_stream(loader, seed, epoch, 0)
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


def _start_stream(loader: DataLoader[Any], seed: int, epoch: int, skip: int) -> None:
    loader.dataset.start_epoch(  # type: ignore[attr-defined]
        epoch, skip, seed=seed, num_workers=loader.num_workers, batch_size=loader.batch_size,
        drop_last=loader.drop_last,
    )


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
    an uninterrupted epoch and the first ``skip`` batches of them dropped. A stream
    (``start_epoch``) is told to start after them, and does so without loading them.
    Another iterable data set has no indices, so its first batches are read and discarded.
    """
    seed_epoch(loader, seed, epoch)
    if is_stream(loader.dataset):
        _start_stream(loader, seed, epoch, skip)
        return loader
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


def stream_layout(loader: DataLoader[Any]) -> dict[str, Any] | None:
    """What the order of a stream's batches depends on besides (seed, epoch); None for other loaders."""
    layout = getattr(loader.dataset, "layout", None)
    if not is_stream(loader.dataset) or not callable(layout):
        return None
    return {**layout(), "batch_size": loader.batch_size, "num_workers": loader.num_workers}


def stream_loader(
    stream: Any, augmentation: Augmentation | None, *, seed: int, rank: int, world_size: int, batch_size: int,
    num_workers: int, pin_memory: bool, collate_fn: Any,
) -> DataLoader[Sample]:
    """The training loader of a stream: every rank and worker its own span, full batches only.

    ``drop_last`` makes the stream cut every span to the same number of whole batches,
    so that every rank trains on as many batches per epoch as the others.
    """
    stream.configure(seed=seed, rank=rank, world_size=world_size, num_workers=num_workers,
                     batch_size=batch_size, drop_last=True)
    return DataLoader(
        AugmentedStream(stream, augmentation, seed),
        batch_size=batch_size,
        drop_last=True,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,  # workers are re-forked each epoch and see the new epoch
    )
