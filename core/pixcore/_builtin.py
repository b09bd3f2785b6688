"""pixcore's built-in components, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Iterator

from pixcore._records import Component
from pixcore.hookspecs import hookimpl


@hookimpl
def pixcore_heads() -> Iterator[Component]:
    from pixcore._heads import FPNHead, LinearHead

    yield Component("fpn", FPNHead, description="Feature-pyramid decoder (Panoptic FPN branch)")
    yield Component("linear", LinearHead, description="Linear probe: 1x1 conv on all levels")


@hookimpl
def pixcore_datasets() -> Iterator[Component]:
    from pixcore.data import SyntheticScenes

    yield Component(
        "synthetic",
        SyntheticScenes,
        description="Procedural rooms with exact semseg, depth, normals (no download)",
    )


@hookimpl
def pixcore_augmentations() -> Iterator[Component]:
    from pixcore._augment import HorizontalFlip

    yield Component("hflip", HorizontalFlip, description="Mirror left-right (normals' x negated)")
