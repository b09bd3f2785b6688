"""The label-safety properties (pixcore.testing) on real photographs with real-ish targets.

The random samples of the property suite are noise: every pixel differs from its
neighbours. Photos add what noise lacks: smooth regions, real edges, masks made of large
connected regions with thin borders of the ignore index, and (Motorcycle, a Middlebury 2014
scene) real metric depth with holes and real camera intrinsics. The photos ship in
scikit-image's wheel (nothing is downloaded); each is subsampled by 8 and the strategy
draws a random window of it, so that the transforms' random sizes stay small.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pixcore.targets import ClassMask, Image, Intrinsics, ScalarField, ValidityMask
from pixcore.testing._augment_checks import builtin_transforms, check_augmentation_once
from skimage import data, filters
from torch import Tensor

PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle")
STRIDE = 8
#: Class ids given to the three intensity classes of a photo (VOC-like ids), 255 on borders.
CLASS_IDS = np.array([0, 8, 15])

# Motorcycle's calibration at the size scikit-image ships (its docstring): f, cx, cy, doffs, baseline (m).
MOTORCYCLE = (994.978, 311.193, 254.877, 31.086, 0.193001)


def _mask(rgb: np.ndarray) -> np.ndarray:
    """Three intensity classes (multi-Otsu of the smoothed photo), subsampled; region borders
    (one pixel, on the right/lower side) marked 255 as VOC marks object borders."""
    grey = filters.gaussian(rgb[..., :3].astype(np.float64).mean(axis=2), sigma=STRIDE / 2)
    labels = np.digitize(grey, filters.threshold_multiotsu(grey, classes=3))[::STRIDE, ::STRIDE]
    border = np.zeros(labels.shape, dtype=bool)
    border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    border[1:] |= labels[1:] != labels[:-1]
    return np.where(border, 255, CLASS_IDS[labels])


@functools.cache
def photo(name: str) -> dict[str, np.ndarray]:
    """The photo subsampled by STRIDE (every STRIDE-th pixel, so targets stay aligned) and its targets."""
    if name == "motorcycle":
        rgb, _, disparity = data.stereo_motorcycle()
    else:
        rgb, disparity = getattr(data, name)(), None
    mask = _mask(rgb)
    rgb = np.ascontiguousarray(rgb[::STRIDE, ::STRIDE, :3])
    out = {"image": rgb, "mask": mask, "valid": mask != 255}
    if disparity is not None:
        f, cx, cy, doffs, baseline = MOTORCYCLE
        d = disparity[::STRIDE, ::STRIDE].astype(np.float64)
        finite = np.isfinite(d)
        out["valid"] = finite
        out["depth"] = np.divide(f * baseline, d + doffs, out=np.zeros_like(d), where=finite)  # Z = f B / (d + doffs)
        # Pixel i of the subsampled image is pixel STRIDE * i of the original.
        out["intrinsics"] = np.array([[f / STRIDE, 0, cx / STRIDE], [0, f / STRIDE, cy / STRIDE], [0, 0, 1]])
    return out


def window(name: str, top: int, left: int, height: int, width: int) -> dict[str, Tensor]:
    """A typed sample of a window of the photo; the intrinsics moved with the window."""
    full = photo(name)
    rows, cols = slice(top, top + height), slice(left, left + width)
    sample: dict[str, Tensor] = {
        "image": Image(torch.from_numpy(full["image"][rows, cols].transpose(2, 0, 1).copy())),
        "mask": ClassMask(torch.from_numpy(full["mask"][rows, cols].astype(np.int64))),
        "valid": ValidityMask(torch.from_numpy(full["valid"][rows, cols].copy())),
    }
    if "depth" in full:
        sample["depth"] = ScalarField(torch.from_numpy(full["depth"][rows, cols][None].astype(np.float32)))
        k = full["intrinsics"].copy()
        k[0, 2] -= left
        k[1, 2] -= top
        sample["intrinsics"] = Intrinsics(torch.from_numpy(k.astype(np.float32)))
    return sample


@st.composite
def photo_windows(draw: st.DrawFn, name: str) -> tuple[dict[str, Tensor], int]:
    """``(sample, seed)``: a random window (4 to 32 pixels a side) of the photo ``name``."""
    h, w = photo(name)["mask"].shape
    height, width = draw(st.integers(4, min(32, h))), draw(st.integers(4, min(32, w)))
    top, left = draw(st.integers(0, h - height)), draw(st.integers(0, w - width))
    return window(name, top, left, height, width), draw(st.integers(0, 2**31 - 1))


def test_the_photos_and_their_targets_are_real() -> None:
    """What the strategy draws from: real content, not noise (so the properties see something new)."""
    for name in PHOTOS:
        full = photo(name)
        mask = full["mask"]
        assert set(np.unique(mask)) == {0, 8, 15, 255}, name
        assert 0.6 < (mask != 255).mean() < 0.97, name  # regions with thin borders
    depth, valid = photo("motorcycle")["depth"], photo("motorcycle")["valid"]
    assert 0.85 < valid.mean() < 1.0 and 2.0 < depth[valid].min() and depth[valid].max() < 5.5


@pytest.mark.parametrize("name", PHOTOS)
def test_label_safety_on_a_real_photo(name: str) -> None:
    """Every property of check_augmentation_once, every built-in transform, windows of a photo."""

    @given(case=photo_windows(name), transform=builtin_transforms())
    def run(case: tuple[dict[str, Tensor], int], transform: object) -> None:
        sample, seed = case
        check_augmentation_once(transform, sample, seed)  # type: ignore[arg-type]

    run()
