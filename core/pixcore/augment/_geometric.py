"""Geometric transforms: each draws its parameters once and moves every target alike."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch

from pixcore._interfaces import Augmentation, Sample
from pixcore._targets import TargetKind
from pixcore.augment._base import (
    Transform,
    apply_geometry,
    check_number,
    check_range,
    check_size,
    randint,
    uniform,
)
from pixcore.augment._builtin_rules import MIRRORING_WARP_RULES
from pixcore.augment._geometry import Crop, Flip, Rotate90, Size, Warp
from pixcore.augment._rules import rule_for

__all__ = [
    "CenterCrop",
    "HorizontalFlip",
    "PadIfNeeded",
    "RandomCrop",
    "RandomResizedCrop",
    "RandomRotate90",
    "RandomScale",
    "Resize",
    "Rotate",
    "VerticalFlip",
]

Interpolation = Literal["bilinear", "nearest"]


def _no_size(name: str) -> ValueError:
    return ValueError(f"{name}: the sample has no pixel-aligned value (Image, ClassMask, ...)")


def _check_interpolation(owner: str, interpolation: str) -> Interpolation:
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(
            f"{owner}: interpolation={interpolation!r} is out of range; allowed: 'bilinear', 'nearest'"
        )
    return interpolation  # type: ignore[return-value]


def _check_fill(owner: str, fill: float, mask_fill: int) -> tuple[float, int]:
    check_number(owner, "fill", fill)
    if isinstance(mask_fill, bool) or not isinstance(mask_fill, int):
        raise ValueError(f"{owner}: mask_fill={mask_fill!r} is out of range; allowed: an integer class id")
    return float(fill), int(mask_fill)


class HorizontalFlip(Transform):
    """Mirror left-right with probability ``p``.

    Rules: images, masks, scalar fields and validity masks are mirrored; unit vectors are
    mirrored and their x component negated; intrinsics get ``cx' = W - 1 - cx``.
    """

    ops = ("flip",)

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        if size is None:
            raise _no_size(type(self).__name__)
        return apply_geometry(Flip(size, axis="horizontal"), sample)


class VerticalFlip(Transform):
    """Mirror top-bottom with probability ``p``: unit vectors' y negated, ``cy' = H - 1 - cy``."""

    ops = ("flip",)

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        if size is None:
            raise _no_size(type(self).__name__)
        return apply_geometry(Flip(size, axis="vertical"), sample)


class RandomRotate90(Transform):
    """Rotate by ``k`` quarter turns counter-clockwise, ``k`` uniform in {0, 1, 2, 3}.

    Unit vectors' (x, y) become ``(y, -x)`` per quarter turn; intrinsics swap axes
    (``fx' = fy``, ``cx' = cy``, ``cy' = W - 1 - cx`` for one turn). Odd ``k`` swaps the
    height and width: use square images (or a crop afterwards) when batching.
    """

    ops = ("rotate90",)

    def __init__(self, p: float = 1.0) -> None:
        super().__init__(p)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        if size is None:
            raise _no_size(type(self).__name__)
        k = randint(generator, 0, 3)
        if k == 0:
            return dict(sample)
        return apply_geometry(Rotate90(size, k=k), sample)


class Rotate(Transform):
    """Rotate by an angle drawn uniformly from ``degrees`` about the image centre.

    Args:
        degrees: ``a`` for ``[-a, a]``, or a range ``(lo, hi)``; counter-clockwise as
            displayed (x right, y down), in degrees.
        fill: Image value of the corners that come from outside the input.
        mask_fill: Class id of those corners in class masks (the ignore index).
        interpolation: Image resampling, ``"bilinear"`` or ``"nearest"``. Every other
            kind uses nearest neighbour.
        p: Probability of rotating.

    Rules: unit vectors' (x, y) components rotate by the same angle (the camera rolls
    about its optical axis); depth is unchanged; filled corners are invalid; intrinsics
    become ``K' = P K Q^T`` (principal point rotated about the centre; with ``fx != fy``
    the result has small off-diagonal terms and is exact in the projective sense). The
    sample must carry a ValidityMask if it has depth or normals.

    """

    ops = ("warp",)

    def __init__(
        self,
        degrees: float | tuple[float, float] = 10.0,
        fill: float = 0.0,
        mask_fill: int = 255,
        interpolation: Interpolation = "bilinear",
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        name = type(self).__name__
        self.degrees = check_range(name, "degrees", degrees, low=-360.0, high=360.0, symmetric_about=0.0)
        self.fill, self.mask_fill = _check_fill(name, fill, mask_fill)
        self.interpolation: Interpolation = _check_interpolation(name, interpolation)

    def may_fill(self, size: Size | None) -> bool:
        return self.degrees != (0.0, 0.0)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        if size is None:
            raise _no_size(type(self).__name__)
        angle = uniform(generator, *self.degrees)
        geometry = Warp.rotation(
            size, angle, fill=self.fill, mask_fill=self.mask_fill, interpolation=self.interpolation
        )
        return apply_geometry(geometry, sample)


class _Zoom(Transform):
    """Shared parameters of the transforms that resize a window of the input."""

    ops = ("warp",)

    def _zoom_params(
        self, interpolation: Interpolation, antialias: bool, divide_depth_by_zoom: bool
    ) -> None:
        self.interpolation: Interpolation = _check_interpolation(type(self).__name__, interpolation)
        self.antialias = bool(antialias)
        self.divide_depth_by_zoom = bool(divide_depth_by_zoom)

    def _warp(self, size: Size, window: tuple[int, int, int, int], out: Size) -> Warp:
        return Warp.resize(
            size, window, out, interpolation=self.interpolation, antialias=self.antialias,
            zoom_depth=self.divide_depth_by_zoom,
        )

    def _drawn_warp(self, size: Size, generator: torch.Generator | None) -> Warp | None:
        """Draw the parameters: the warp to apply, or None to leave the sample as it is."""
        raise NotImplementedError

    def _skipped_warp(self, size: Size) -> Warp | None:
        """The warp when the coin says no (None: the sample as it is)."""
        return None

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        if size is None:
            raise _no_size(type(self).__name__)
        warp = self._drawn_warp(size, generator)
        return dict(sample) if warp is None else apply_geometry(warp, sample)

    def skip(self, sample: Sample, size: Size | None) -> Sample:
        if size is None:
            raise _no_size(type(self).__name__)
        warp = self._skipped_warp(size)
        return dict(sample) if warp is None else apply_geometry(warp, sample)

    def then(self, following: Augmentation) -> Transform | None:
        """A built-in zoom and then a horizontal flip: one warp that mirrors as it resizes."""
        if type(self) in (Resize, RandomScale, RandomResizedCrop) and type(following) is HorizontalFlip:
            return _ZoomThenMirror(self, following)
        return None


class _ZoomThenMirror(Transform):
    """A zoom followed by :class:`HorizontalFlip`, as :class:`Compose` runs them.

    The same draws in the same order as the two one after the other (zoom's coin, its
    parameters, the flip's coin) and the same values; each output is mirrored in place
    right after it is resized, while it is still in cache, instead of copied again.
    """

    ops = ("warp", "flip")

    def __init__(self, zoom: _Zoom, flip: HorizontalFlip) -> None:
        super().__init__(1.0)
        self.zoom, self.flip = zoom, flip

    def check(self, sample: Mapping[str, Any]) -> Size | None:
        size = self.zoom.check(sample)
        self.flip.check_kinds(sample)  # the zoom keeps every key's kind
        return size

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        if size is None:
            raise _no_size(type(self.zoom).__name__)
        if not all(
            rule_for("warp", type(v)) in MIRRORING_WARP_RULES for v in sample.values() if isinstance(v, TargetKind)
        ):  # another package's rule may not know mirrored warps: run the two one after the other
            return self.flip(self.zoom(sample, generator), generator)
        zoom = self.zoom._drawn_warp(size, generator) if self.zoom.coin(generator) else self.zoom._skipped_warp(size)
        if not self.flip.coin(generator):
            return dict(sample) if zoom is None else apply_geometry(zoom, sample)
        if zoom is None:
            return apply_geometry(Flip(size, axis="horizontal"), sample)
        return apply_geometry(zoom.then_mirrored(), sample)


class Resize(_Zoom):
    """Resize to ``size`` (``(height, width)`` or an int for a square).

    Images are resampled bilinearly (antialiased when shrinking) or by nearest
    neighbour; every other kind by nearest neighbour. Intrinsics scale with the pixel
    grid (pixel centres: ``fx' = fx W'/W``, ``cx' = (cx + 0.5) W'/W - 0.5``). Depth is
    unchanged (a resize is a change of focal length) unless ``divide_depth_by_zoom``:
    then z-depth is divided by the zoom ``s = sqrt((W'/W) (H'/H))`` (Eigen et al., 2014).
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        interpolation: Interpolation = "bilinear",
        antialias: bool = True,
        divide_depth_by_zoom: bool = False,
    ) -> None:
        super().__init__(1.0)
        self.size = check_size(type(self).__name__, "size", size)
        self._zoom_params(interpolation, antialias, divide_depth_by_zoom)

    def _drawn_warp(self, size: Size, generator: torch.Generator | None) -> Warp | None:
        return None if size == self.size else self._warp(size, (0, 0, *size), self.size)


class RandomScale(_Zoom):
    """Resize the whole input by a factor drawn uniformly from ``scale``.

    The output is ``round(H s) x round(W s)`` (at least 1x1); the exact per-axis factors
    are the ratios of the integer sizes. Follow it with :class:`RandomCrop` (which pads
    if needed) to get a fixed size. Rules as in :class:`Resize`.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.5, 2.0),
        interpolation: Interpolation = "bilinear",
        antialias: bool = True,
        divide_depth_by_zoom: bool = False,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        self.scale = check_range(type(self).__name__, "scale", scale, low=0.0, high=100.0, low_open=True)
        self._zoom_params(interpolation, antialias, divide_depth_by_zoom)

    def _drawn_warp(self, size: Size, generator: torch.Generator | None) -> Warp | None:
        s = uniform(generator, *self.scale)
        h, w = size
        out = (max(1, round(h * s)), max(1, round(w * s)))
        return None if out == size else self._warp(size, (0, 0, h, w), out)


class RandomResizedCrop(_Zoom):
    """Crop a random window and resize it to ``size`` (torchvision's sampling).

    The window covers a fraction of the input area drawn uniformly from ``scale`` with an
    aspect ratio (width / height) drawn log-uniformly from ``ratio``; after 10 failed
    draws, the largest centred window within ``ratio``. The window always lies inside the
    input, so nothing is filled. When the coin (``p``) says no, the whole input is
    resized to ``size``. Rules as in :class:`Resize`; the zoom for
    ``divide_depth_by_zoom`` is ``sqrt((W'/w) (H'/h))`` for a ``h x w`` window.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: Interpolation = "bilinear",
        antialias: bool = True,
        divide_depth_by_zoom: bool = False,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        name = type(self).__name__
        self.size = check_size(name, "size", size)
        self.scale = check_range(name, "scale", scale, low=0.0, high=1.0, low_open=True)
        self.ratio = check_range(name, "ratio", ratio, low=0.0, high=math.inf, low_open=True)
        self._zoom_params(interpolation, antialias, divide_depth_by_zoom)

    def window(self, size: Size, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        """Draw ``(top, left, height, width)`` for an input of ``size``."""
        height, width = size
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * uniform(generator, *self.scale)
            aspect = math.exp(uniform(generator, log_lo, log_hi))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = randint(generator, 0, height - h)
                left = randint(generator, 0, width - w)
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, max(1, min(height, round(width / self.ratio[0])))
        elif in_ratio > self.ratio[1]:
            h, w = height, max(1, min(width, round(height * self.ratio[1])))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def _drawn_warp(self, size: Size, generator: torch.Generator | None) -> Warp | None:
        return self._warp(size, self.window(size, generator), self.size)

    def _skipped_warp(self, size: Size) -> Warp | None:
        """Without the crop, the whole input is resized to ``size``."""
        return self._warp(size, (0, 0, *size), self.size)


class _Window(Transform):
    """Shared parameters of the integer-window transforms (crop, pad)."""

    ops = ("crop",)

    def _crop(self, size: Size, top: int, left: int, out: Size) -> Crop:
        return Crop(
            size, top=top, left=left, height=out[0], width=out[1],
            fill=self.fill, mask_fill=self.mask_fill,
        )

    fill: float
    mask_fill: int


class RandomCrop(_Window):
    """Crop a ``size`` window at a random position.

    If the input is smaller than ``size`` along an axis, it is padded (with
    ``pad_if_needed``; else an error): the input lands at a random position inside the
    output and the rest is filled (``fill`` for images, ``mask_fill`` for class masks,
    zero and invalid for depth and normals). Intrinsics shift: ``cx' = cx - left``.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        pad_if_needed: bool = True,
        fill: float = 0.0,
        mask_fill: int = 255,
    ) -> None:
        super().__init__(1.0)
        name = type(self).__name__
        self.size = check_size(name, "size", size)
        self.pad_if_needed = bool(pad_if_needed)
        self.fill, self.mask_fill = _check_fill(name, fill, mask_fill)

    def may_fill(self, size: Size | None) -> bool:
        return size is not None and (size[0] < self.size[0] or size[1] < self.size[1])

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        name = type(self).__name__
        if size is None:
            raise _no_size(name)
        (h, w), (oh, ow) = size, self.size
        if (h < oh or w < ow) and not self.pad_if_needed:
            raise ValueError(
                f"{name}: the input ({h}x{w}) is smaller than size={self.size}; set "
                "pad_if_needed=True or put a resize before the crop"
            )
        top = randint(generator, min(0, h - oh), max(0, h - oh))
        left = randint(generator, min(0, w - ow), max(0, w - ow))
        if (top, left, oh, ow) == (0, 0, h, w):
            return dict(sample)
        return apply_geometry(self._crop(size, top, left, self.size), sample)


class CenterCrop(_Window):
    """Crop (or pad) a centred ``size`` window; deterministic. Fills as :class:`RandomCrop`."""

    def __init__(self, size: int | tuple[int, int], fill: float = 0.0, mask_fill: int = 255) -> None:
        super().__init__(1.0)
        name = type(self).__name__
        self.size = check_size(name, "size", size)
        self.fill, self.mask_fill = _check_fill(name, fill, mask_fill)

    def may_fill(self, size: Size | None) -> bool:
        return size is not None and (size[0] < self.size[0] or size[1] < self.size[1])

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        if size is None:
            raise _no_size(type(self).__name__)
        (h, w), (oh, ow) = size, self.size
        if (h, w) == (oh, ow):
            return dict(sample)
        return apply_geometry(self._crop(size, (h - oh) // 2, (w - ow) // 2, self.size), sample)


class PadIfNeeded(_Window):
    """Pad to at least ``min_height x min_width``; larger inputs pass unchanged.

    ``position`` places the input: ``"center"`` (extra pixel at the bottom/right) or
    ``"top_left"``. Filled pixels: ``fill`` for images, ``mask_fill`` for class masks,
    zero and invalid for depth and normals. Intrinsics shift with the input.
    """

    def __init__(
        self,
        min_height: int,
        min_width: int,
        position: Literal["center", "top_left"] = "center",
        fill: float = 0.0,
        mask_fill: int = 255,
    ) -> None:
        super().__init__(1.0)
        name = type(self).__name__
        self.min_height, self.min_width = check_size(name, "(min_height, min_width)", (min_height, min_width))
        if position not in ("center", "top_left"):
            raise ValueError(f"{name}: position={position!r} is out of range; allowed: 'center', 'top_left'")
        self.position = position
        self.fill, self.mask_fill = _check_fill(name, fill, mask_fill)

    def may_fill(self, size: Size | None) -> bool:
        return size is not None and (size[0] < self.min_height or size[1] < self.min_width)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        if size is None:
            raise _no_size(type(self).__name__)
        h, w = size
        oh, ow = max(h, self.min_height), max(w, self.min_width)
        if (oh, ow) == (h, w):
            return dict(sample)
        if self.position == "center":
            top, left = -((oh - h) // 2), -((ow - w) // 2)
        else:
            top, left = 0, 0
        return apply_geometry(self._crop(size, top, left, (oh, ow)), sample)
