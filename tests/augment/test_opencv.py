"""OpenCV's kernels read exactly the pixels of pixcore's rules, and fall back to torch.

The fast paths (``pixcore.augment._opencv``) must not change which input pixel a class
mask, depth map, normal or validity mask reads: every kind of a sample has to agree, and
kinds OpenCV cannot take (int64 masks, float16) still go through torch. These tests
compare against numpy gathers of the documented indices, and against the torch path on
the same data.
"""

from __future__ import annotations

import math

import numpy as np
import pixcore.augment as a
import pytest
import torch
import torch.nn.functional as F
from pixcore.augment import _opencv
from pixcore.augment._geometry import Warp, _opencv_reads_the_same
from pixcore.targets import Image
from torch import Tensor


def _torch_nearest_exact(size: int, out: int) -> np.ndarray:
    """The indices ``F.interpolate(mode="nearest-exact")`` reads (the documented rule)."""
    ramp = torch.arange(size, dtype=torch.float32).view(1, 1, 1, size)
    return F.interpolate(ramp, size=(1, out), mode="nearest-exact").view(-1).long().numpy()


def _values(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    return torch.randint(0, 120, shape, generator=g).to(dtype)


# Pairs (input length, output length): OpenCV's fixed point agrees with the rule for
# most, and rounds a tie the other way for some (2 -> 7, 5 -> 9 ... found by search).
_PAIRS = [(2, 7), (2, 15), (3, 11), (5, 9), (7, 16), (300, 512), (341, 512), (512, 384), (97, 96), (13, 13)]


def test_some_pairs_disagree_so_the_check_matters() -> None:
    disagree = [p for p in _PAIRS if not _opencv_reads_the_same(*p)]
    assert (2, 7) in disagree and (300, 512) not in disagree
    for size, out in _PAIRS:
        theirs = _opencv.nearest_exact_index(size, out)
        assert _opencv_reads_the_same(size, out) == bool(np.array_equal(theirs, _torch_nearest_exact(size, out)))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64, torch.bool])
@pytest.mark.parametrize(("size", "out"), _PAIRS)
@pytest.mark.parametrize("planes", [(), (2,)])
def test_window_resize_reads_the_rule_pixels(size: int, out: int, dtype: torch.dtype, planes: tuple[int, ...]) -> None:
    x = _values((*planes, size + 3, size + 1), dtype)
    window = (2, 1, size, size - 1 if size > 2 else size)
    top, left, h, w = window
    geometry = Warp.resize(tuple(x.shape[-2:]), window, (out, out + 1))  # type: ignore[arg-type]
    rows = _torch_nearest_exact(h, out) + top
    cols = _torch_nearest_exact(w, out + 1) + left
    expected = x.numpy()[..., rows, :][..., cols]
    got = geometry.nearest(x, 0)
    assert got.dtype == dtype and got.shape == (*planes, out, out + 1)
    assert np.array_equal(got.numpy(), expected)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.float32, torch.bool])
@pytest.mark.parametrize(("size", "out"), _PAIRS)
def test_mirrored_window_resize_reads_the_rule_pixels_mirrored(size: int, out: int, dtype: torch.dtype) -> None:
    """Every path (OpenCV, torch's kernel, the gather) mirrors: the columns reversed."""
    x = _values((3, size + 3, size + 1), dtype)
    window = (2, 1, size, size - 1 if size > 2 else size)
    top, left, h, w = window
    geometry = Warp.resize(tuple(x.shape[-2:]), window, (out, out + 1)).then_mirrored()  # type: ignore[arg-type]
    assert geometry.mirrored
    rows = _torch_nearest_exact(h, out) + top
    cols = _torch_nearest_exact(w, out + 1)[::-1] + left
    expected = x.numpy()[..., rows, :][..., cols]
    assert np.array_equal(geometry.nearest(x, 0).numpy(), expected)
    assert np.array_equal(geometry.nearest(x[0], 0).numpy(), expected[0])


@pytest.mark.parametrize("layout", ["hwc", "chw"])
@pytest.mark.parametrize(
    ("window", "out"),
    [((3, 2, 20, 30), (41, 57)), ((0, 0, 30, 40), (30, 40)), ((1, 1, 25, 33), (20, 20))],  # OpenCV, view, torch
)
def test_mirrored_bilinear_resize_is_the_resize_mirrored(
    layout: str, window: tuple[int, int, int, int], out: tuple[int, int]
) -> None:
    hwc = _values((30, 40, 3), torch.uint8)
    x = hwc.permute(2, 0, 1) if layout == "hwc" else hwc.permute(2, 0, 1).contiguous()
    plain = Warp.resize((30, 40), window, out)
    mirrored = plain.then_mirrored()
    assert torch.equal(mirrored.bilinear(x, 0.0), plain.bilinear(x, 0.0).flip(-1))


def test_a_mirrored_warp_maps_pixels_as_a_flip_after_the_resize() -> None:
    """``then_mirrored``'s matrix against the composition of the two pixel maps."""
    resize = Warp.resize((30, 40), (3, 2, 20, 30), (41, 57))
    flip = a.Flip((41, 57), axis="horizontal")
    torch.testing.assert_close(resize.then_mirrored().pixel_map(), flip.pixel_map() @ resize.pixel_map())
    torch.testing.assert_close(resize.then_mirrored().camera_map(), flip.camera_map() @ resize.camera_map())
    with pytest.raises(ValueError, match="axis-aligned"):
        Warp.rotation((30, 40), 10.0).then_mirrored()


def _warp_reference(x: np.ndarray, geometry: Warp, fill: float) -> np.ndarray:
    """Nearest pixel ``floor(p + 0.5)`` of every output pixel, float32 as the rule computes it."""
    h, w = geometry.in_size
    oh, ow = geometry.size
    a_, b, c, d, e, f = geometry.matrix
    xs, ys = np.arange(ow, dtype=np.float64), np.arange(oh, dtype=np.float64)
    sx = (xs * a_).astype(np.float32)[None, :] + (ys * b + (c + 0.5)).astype(np.float32)[:, None]
    sy = (xs * d).astype(np.float32)[None, :] + (ys * e + (f + 0.5)).astype(np.float32)[:, None]
    u, v = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    outside = (u < 0) | (u >= w) | (v < 0) | (v >= h)
    picked = x[..., np.clip(v, 0, h - 1), np.clip(u, 0, w - 1)]
    return np.where(outside, np.asarray(fill).astype(x.dtype), picked)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64, torch.bool])
@pytest.mark.parametrize(("size", "degrees"), [((31, 40), 17.0), ((4, 5), 90.0), ((6, 6), 180.0), ((64, 48), -33.3)])
@pytest.mark.parametrize("planes", [(), (3,)])
def test_rotation_nearest_reads_the_rule_pixels(
    size: tuple[int, int], degrees: float, dtype: torch.dtype, planes: tuple[int, ...]
) -> None:
    # (4, 5) by 90 degrees puts source positions exactly half-way between pixels: ties.
    x = _values((*planes, *size), dtype, seed=1)
    geometry = Warp.rotation(size, degrees)
    fill = True if dtype == torch.bool else 7
    got = geometry.nearest(x, fill)
    assert got.dtype == dtype
    assert np.array_equal(got.numpy(), _warp_reference(x.numpy(), geometry, fill))


def test_opencv_and_torch_paths_agree_on_the_same_values() -> None:
    # uint8 and int64 go through OpenCV, float16 (which it does not take) through torch:
    # same picks, same fill.
    x = _values((50, 70), torch.uint8, seed=3)
    for degrees in (5.0, 29.9, 45.0, 123.4):
        geometry = Warp.rotation((50, 70), degrees)
        fast = geometry.nearest(x, 255)
        assert _opencv.remap_nearest(x.half(), geometry._opencv_map(), 255) is None  # type: ignore[arg-type]
        slow = geometry.nearest(x.half(), 255)
        assert torch.equal(fast.half(), slow)
        assert torch.equal(geometry.nearest(x.long(), 255), fast.long())
        outside = geometry.outside()
        assert outside is not None and torch.equal(outside, fast == 255)


def test_rotated_image_is_bilinear_with_the_border_replicated_and_filled_outside() -> None:
    # A linear ramp: bilinear interpolation reproduces it exactly (up to OpenCV's 1/32 px
    # coordinate steps); the clamped border keeps its edge values; filled pixels are
    # exactly those whose nearest input pixel is outside.
    h, w = 40, 56
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = np.stack([xx + 2 * yy, 3 * xx, yy]).astype(np.float32)
    geometry = Warp.rotation((h, w), 23.0)
    out = geometry.bilinear(torch.from_numpy(ramp), -1.0).numpy()
    a_, b, c, d, e, f = geometry.matrix
    oy, ox = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = np.clip(a_ * ox + b * oy + c, 0, w - 1)
    sy = np.clip(d * ox + e * oy + f, 0, h - 1)
    expected = np.stack([sx + 2 * sy, 3 * sx, sy])
    outside = _warp_reference(np.zeros((h, w), np.uint8), geometry, 1).astype(bool)
    assert outside.any() and not outside.all()
    assert np.all(out[:, outside] == -1.0)
    assert np.abs(out[:, ~outside] - expected[:, ~outside]).max() < 3 * (3 / 32)


def test_uint8_rotation_in_either_memory_layout_is_identical() -> None:
    hwc = _values((45, 60, 3), torch.uint8, seed=4)
    decoded = hwc.permute(2, 0, 1)  # what image decoders return: a view of HWC memory
    geometry = Warp.rotation((45, 60), -12.0)
    one = geometry.bilinear(decoded, 9.0)
    other = geometry.bilinear(decoded.contiguous(), 9.0)
    assert torch.equal(one, other)
    assert one.stride(0) == 1  # the result stays in the layout it came in


def test_resize_shrinking_with_antialias_stays_with_torch() -> None:
    # OpenCV's bilinear does not low-pass; torch's antialiased kernel keeps doing shrinks.
    x = _values((3, 64, 64), torch.float32, seed=5)
    geometry = Warp.resize((64, 64), (0, 0, 64, 64), (16, 16), antialias=True)
    expected = F.interpolate(x[None], size=(16, 16), mode="bilinear", antialias=True, align_corners=False)[0]
    assert torch.allclose(geometry.bilinear(x, 0.0), expected, atol=1e-6)


def test_enlarging_resize_matches_torch_bilinear() -> None:
    x = _values((3, 20, 30), torch.float32, seed=6)
    geometry = Warp.resize((20, 30), (2, 3, 15, 21), (37, 50))
    expected = F.interpolate(x[None, :, 2:17, 3:24], size=(37, 50), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(geometry.bilinear(x, 0.0), expected, atol=2e-3)


def test_dtypes_opencv_cannot_take_fall_back_to_torch() -> None:
    x = _values((3, 30, 30), torch.float16, seed=7)
    assert _opencv.resize_linear(x, (0, 0, 20, 20), (40, 40)) is None
    out = a.RandomResizedCrop(40)({"image": Image(x)}, torch.Generator().manual_seed(0))["image"]
    assert out.dtype == torch.float16 and out.shape == (3, 40, 40)
    big = torch.zeros(1, 40000, 2, dtype=torch.uint8)
    assert _opencv.resize_nearest(big, (0, 0, 40000, 2), (10, 2)) is None
    assert math.isfinite(float(out.float().mean()))


class _Rotated(torch.utils.data.Dataset[int]):
    """Rotates an image in the loader worker and reports OpenCV's thread count there."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        sample = {"image": Image(_values((3, 40, 50), torch.uint8, seed=index))}
        a.Rotate(20.0)(sample, torch.Generator().manual_seed(index))
        import cv2

        return int(cv2.getNumThreads())


def test_forked_loader_workers_run_opencv_with_one_thread() -> None:
    # The parent has used OpenCV before the workers fork. With OpenCV's thread pool alive
    # in the parent (cv2.setNumThreads(2) there), the workers hung in their first call.
    a.Rotate(20.0)({"image": Image(_values((3, 40, 50), torch.uint8))}, torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(_Rotated(), batch_size=None, num_workers=2, timeout=60,
                                         multiprocessing_context="fork")
    assert list(loader) == [1, 1, 1, 1]
