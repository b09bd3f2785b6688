"""Hypothesis profiles for the augmentation property suite, and shared fixtures.

``HYPOTHESIS_PROFILE=ci`` (the default) runs 25 examples per property, ``dev`` 200 and
``thorough`` 2000::

    HYPOTHESIS_PROFILE=thorough python -m pytest tests/augment
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from pixcore.targets import TargetKind
from pixcore.testing._augment_checks import load_hypothesis_profile, random_sample

load_hypothesis_profile()


@pytest.fixture
def full_sample() -> Callable[..., dict[str, torch.Tensor]]:
    """``full_sample(height, width, seed)``: image, mask, depth, normals, valid, intrinsics."""

    def make(height: int = 6, width: int = 8, seed: int = 0, **kwargs: object) -> dict[str, torch.Tensor]:
        return random_sample(height, width, torch.Generator().manual_seed(seed), **kwargs)  # type: ignore[arg-type]

    return make


class EdgeMap(TargetKind):
    """A third-party kind: a binary edge map ``[1, H, W]``."""

    kind = "edge_map"


@pytest.fixture
def edge_kind() -> type[TargetKind]:
    return EdgeMap


@pytest.fixture
def edge_rules() -> Iterator[type[TargetKind]]:
    """Register nearest-neighbour rules for :class:`EdgeMap` for one test."""
    from pixcore import augment as a

    rules = {
        "flip": lambda x, g: x.flip(g.dim),
        "rotate90": lambda x, g: torch.rot90(x, g.k, (-2, -1)),
        "crop": lambda x, g: g.crop(x, 0.0),
        "warp": lambda x, g: g.nearest(x, 0.0),
    }
    for op, rule in rules.items():
        a.register_rule(op, EdgeMap, rule)
    try:
        yield EdgeMap
    finally:
        for op in rules:
            a.unregister_rule(op, EdgeMap)

