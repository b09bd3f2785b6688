"""Joint augmentations with one rule per target kind.

A geometric transform declares, per target kind, how it moves that kind's values; a
sample holding a kind the transform has no rule for is refused with an error instead of
being passed through untouched (a silent pass-through would leave, say, the normals of a
flipped image pointing the wrong way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pixcore._interfaces import Augmentation, Sample
from pixcore._targets import (
    ClassMask,
    Image,
    Intrinsics,
    ScalarField,
    TargetKind,
    UnitVectorField,
    ValidityMask,
)

__all__ = ["Compose", "HorizontalFlip", "KindRule"]

KindRule = Callable[[Tensor], Tensor]


def _flip_width(x: Tensor) -> Tensor:
    return x.flip(-1)


def _flip_normals(x: Tensor) -> Tensor:
    flipped = x.flip(-1).clone()
    flipped[..., 0, :, :] = -flipped[..., 0, :, :]  # mirrored surface: x component changes sign
    return flipped


def _rewrap(kind: type[TargetKind], value: Tensor) -> Tensor:
    return value.as_subclass(kind)


class HorizontalFlip(Augmentation):
    """Mirror left-right with probability ``p``.

    Rules: images, masks, scalar fields and validity masks are mirrored; unit vectors are
    mirrored and their x component negated; intrinsics get ``cx' = W - 1 - cx``.
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"HorizontalFlip p must be in [0, 1], got {p}")
        self.p = p
        self.rules: dict[type[TargetKind], KindRule] = {
            Image: _flip_width,
            ClassMask: _flip_width,
            ScalarField: _flip_width,
            ValidityMask: _flip_width,
            UnitVectorField: _flip_normals,
        }

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        _check_kinds(self, sample, set(self.rules) | {Intrinsics})
        if self.p < 1.0 and float(torch.rand((), generator=generator)) >= self.p:
            return dict(sample)
        width = _width(sample)
        out: Sample = {}
        for key, value in sample.items():
            kind = type(value)
            if kind is Intrinsics:
                k = value.as_subclass(Tensor).clone()
                k[..., 0, 2] = (width - 1) - k[..., 0, 2]
                out[key] = _rewrap(Intrinsics, k)
            else:
                out[key] = _rewrap(kind, self.rules[kind](value.as_subclass(Tensor)))
        return out


def _width(sample: Sample) -> int:
    for value in sample.values():
        if isinstance(value, TargetKind) and value.spatial:
            return int(value.shape[-1])
    raise ValueError("sample has no pixel-aligned target to take the width from")


def _check_kinds(transform: Augmentation, sample: Sample, known: set[type[TargetKind]]) -> None:
    for key, value in sample.items():
        if not isinstance(value, Tensor):
            continue
        if not isinstance(value, TargetKind):
            raise TypeError(
                f"{type(transform).__name__}: sample key {key!r} is a plain tensor; wrap it in "
                "a pixcore target kind (pixcore.targets.Image, ClassMask, ScalarField, ...) so "
                "the transform knows its rule"
            )
        if type(value) not in known:
            raise TypeError(
                f"{type(transform).__name__} has no rule for target kind {value.kind!r} "
                f"(key {key!r}); it would silently leave it untransformed. Add a rule to the "
                "transform's `rules` or drop the key before augmenting."
            )


class Compose(Augmentation):
    """Apply augmentations in order, sharing one generator."""

    def __init__(self, augmentations: Sequence[Augmentation]) -> None:
        self.augmentations = list(augmentations)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        for augmentation in self.augmentations:
            sample = augmentation(sample, generator)
        return sample
