"""Batching samples of which not every one carries every label."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

__all__ = ["PRESENT_PREFIX", "collate"]

#: ``present/<key>`` (bool ``[B]``) marks which samples of a batch carried ``key``.
PRESENT_PREFIX = "present/"


def _zeros_like(value: Any, key: str) -> Any:
    if isinstance(value, Tensor):
        return torch.zeros_like(value)
    if isinstance(value, np.ndarray):
        return np.zeros_like(value)
    if isinstance(value, (bool, int, float, complex, np.number, np.bool_)):
        return type(value)(0)
    if isinstance(value, str):
        return ""
    raise TypeError(
        f"collate: some samples lack key {key!r} and its values are {type(value).__name__}, "
        "which cannot be filled in; give every sample that key, or make it a tensor, "
        "array, number or string."
    )


def collate(samples: Sequence[Mapping[str, Any]]) -> Any:
    """Batch samples like :func:`torch.utils.data.default_collate`, allowing missing labels.

    When every sample has the same keys the result is exactly ``default_collate``'s
    (typed targets become plain tensors, as there). When some samples lack a key that
    others have, each missing value is filled with zeros of the shape and dtype of the
    first sample that has it, and a bool tensor ``present/<key>`` ``[B]`` says which
    samples really carry it; such keys only get a ``present/`` entry.
    :meth:`pixcore.Task.target_and_valid` ANDs ``present/<target_key>`` into the validity
    mask, so the filled samples add nothing to that task's loss or metrics.

    A batch in which *no* sample has a key does not contain it at all. Samples that are
    not mappings are passed to ``default_collate`` unchanged.

    Example::

        from torch.utils.data import ConcatDataset, DataLoader
        from pixcore.data import collate

        loader = DataLoader(ConcatDataset([with_depth, segmentation_only]),
                            batch_size=8, shuffle=True, collate_fn=collate)
        batch = next(iter(loader))   # batch["present/depth"]: which samples have depth
    """
    samples = list(samples)
    if not samples or not all(isinstance(s, Mapping) for s in samples):
        return default_collate(samples)
    keys: dict[str, None] = {}
    for sample in samples:
        keys.update(dict.fromkeys(sample))
    missing = [k for k in keys if any(k not in s for s in samples)]
    if not missing:
        return default_collate(samples)
    for key in missing:
        marker = PRESENT_PREFIX + key
        if marker in keys:
            raise KeyError(
                f"collate: samples carry {marker!r} and some lack {key!r}; pixcore adds "
                f"{marker!r} itself, so rename the sample key {marker!r}."
            )
    fills = {k: _zeros_like(next(s[k] for s in samples if k in s), k) for k in missing}
    complete = [{k: (s[k] if k in s else fills[k]) for k in keys} for s in samples]
    batch = default_collate(complete)
    for key in missing:
        batch[PRESENT_PREFIX + key] = torch.tensor([key in s for s in samples], dtype=torch.bool)
    return batch
