"""Seeding of data-loader workers: one stream per (seed, epoch, worker), none shared."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from pixcore.train._data import seed_epoch
from torch.utils.data import DataLoader, Dataset, get_worker_info


class _Seeds(Dataset[dict[str, Any]]):
    """Each sample reports which worker loaded it and what that worker's generators draw."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = get_worker_info()
        return {
            "worker": -1 if info is None else info.id,
            "torch": torch.initial_seed(),
            "numpy": int(np.random.randint(0, 2**31 - 1)),
            "python": random.getrandbits(31),
        }


def _epoch(seed: int, epoch: int) -> dict[int, tuple[int, int, int]]:
    """Worker id -> (torch seed, first numpy draw, first python draw) of one epoch."""
    loader = DataLoader(_Seeds(), batch_size=1, num_workers=2, collate_fn=lambda batch: batch[0])
    seed_epoch(loader, seed, epoch)
    found: dict[int, tuple[int, int, int]] = {}
    for sample in loader:
        found.setdefault(sample["worker"], (sample["torch"], sample["numpy"], sample["python"]))
    return found


def test_worker_seeds_differ_per_worker_and_per_epoch_and_repeat_per_seed() -> None:
    first, second = _epoch(seed=5, epoch=0), _epoch(seed=5, epoch=1)
    assert sorted(first) == sorted(second) == [0, 1]
    streams = [first[0], first[1], second[0], second[1]]
    for kind in range(3):  # torch, numpy and python generators alike
        values = [s[kind] for s in streams]
        assert len(set(values)) == 4, f"generator {kind}: two workers or epochs share a stream: {values}"
    assert _epoch(seed=5, epoch=1) == second, "an epoch's worker seeds are a function of (seed, epoch)"
    other = _epoch(seed=6, epoch=1)
    assert other[0][0] != second[0][0], "another seed gives other worker streams"
