"""OpenCV's resampling kernels, for the cases where torch has no fast one.

torch resamples a uint8 image at an arbitrary affine position only through
``grid_sample`` on float32 (a rotation of a 512x512 RGB image: about 5 ms on one CPU
thread, against 0.7 ms for ``cv2.warpAffine``, which works in fixed point), and its
nearest-neighbour resize of float32 planes is slower than ``cv2.resize``. OpenCV
(``opencv-python-headless``, the backend of albumentations and Ultralytics) serves those
cases; every function here returns None for what it does not take, and the caller then
uses torch.

What is used where, and why it keeps every label-safety property:

* :func:`warp_linear` (rotations and other similarity warps of images): bilinear with
  the border replicated, exactly the reading ``grid_sample(padding_mode="border")`` gave;
  the caller then fills the pixels whose nearest input pixel is outside, as before.
* :func:`resize_linear` (resized crops of images, when no axis shrinks with antialiasing):
  the same half-pixel-centre bilinear as ``F.interpolate(align_corners=False)``; uint8
  results may differ from torch's by one level (both round fixed-point weights).
* :func:`resize_nearest` (resized crops of class masks, depth, normals, validity): the
  caller uses it only for an ``(input, output)`` length pair whose source indices
  (:func:`nearest_exact_index`, found by resizing an index ramp) are exactly pixcore's
  (OpenCV works in 16.16 fixed point, which can round a tie the other way). Every kind of
  a sample therefore still reads the very same pixels.

Nearest-neighbour *warps* stay in torch: ``cv2.warpAffine``'s nearest picks depend on the
data type (a uint8 plane and an int16 index ramp warped by the same matrix read different
pixels), so they could not be shown to agree across kinds.

OpenCV runs its kernels in the calling thread (``cv2.setNumThreads(0)`` at first use, as
albumentations advises for data loading): see :func:`_threads_set`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NearestMap",
    "nearest_exact_index",
    "nearest_map",
    "remap_nearest",
    "resize_linear",
    "resize_nearest",
    "warp_linear",
]

Size = tuple[int, int]
Window = tuple[int, int, int, int]

# The data types OpenCV's resize, remap and warp take, with torch's names (bool goes as uint8).
_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.float32, torch.float64)
_LINEAR_DTYPES = (torch.uint8, torch.float32)
_MAX_SIDE = 32767  # OpenCV's coordinate tables are 16-bit


@functools.cache
def _threads_set() -> None:
    """Run OpenCV's kernels in the calling thread, without its thread pool (once, at first use).

    The images are small and loader workers run one torch thread each; and a pool that
    exists when a DataLoader forks its workers hangs them (a worker inherits the pool's
    state but not its threads). Forked workers inherit this setting.
    """
    cv2.setNumThreads(0)


Kernel = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def _takes(x: Tensor) -> bool:
    """Whether OpenCV can read ``x`` (``[..., H, W]``): its dtype, device and size."""
    return (
        x.dtype in _DTYPES and x.ndim >= 2 and x.device.type == "cpu" and not x.requires_grad
        and 0 < x.numel() and max(x.shape[-2:]) <= _MAX_SIDE
    )


def _run(x: Tensor, window: Window | None, size: Size, kernel: Kernel) -> Tensor | None:
    """Apply ``kernel(src, dst)`` to the ``window`` of ``x``; the result keeps ``x``'s layout.

    An image decoded to HWC memory (``[C, H, W]`` with channel stride 1, 2-4 channels) goes
    to OpenCV as one HWC array and comes back the same way; anything else plane by plane.
    None when OpenCV cannot take ``x``.
    """
    if not _takes(x):
        return None
    _threads_set()
    top, left, h, w = window if window is not None else (0, 0, *x.shape[-2:])
    oh, ow = size
    if x.ndim == 2 and x.stride(1) == 1:  # one plane (class masks, validity): no copies
        return torch.from_numpy(kernel(x.numpy()[top : top + h, left : left + w], None))
    if x.ndim == 3 and x.stride(0) == 1 and 1 < x.shape[0] <= 4:
        hwc = x.permute(1, 2, 0).numpy()[top : top + h, left : left + w]
        return torch.from_numpy(kernel(hwc, None)).view(oh, ow, -1).permute(2, 0, 1)
    planes = x.contiguous().view(-1, *x.shape[-2:]).numpy()
    result = torch.empty((planes.shape[0], oh, ow), dtype=x.dtype)
    for plane, target in zip(planes, result.numpy(), strict=True):
        kernel(plane[top : top + h, left : left + w], target)  # dst has OpenCV's size and type
    return result.view(*x.shape[:-2], oh, ow)


def _mirrored(kernel: Kernel) -> Kernel:
    """``kernel``, then its output mirrored left-right in place (``cv2.flip`` allows
    ``dst is src``): while the output is still in cache, and with no second array."""

    def mirrored(a: np.ndarray, dst: np.ndarray | None) -> np.ndarray:
        out = kernel(a, dst)
        return cv2.flip(out, 1, dst=out)

    return mirrored


def resize_linear(x: Tensor, window: Window, size: Size, mirror: bool = False) -> Tensor | None:
    """Bilinear resize of the ``window`` of image ``x`` to ``size``, then mirrored
    left-right if ``mirror``; None if OpenCV cannot.

    Not for shrinking with antialiasing (OpenCV's bilinear does not low-pass; the caller
    keeps torch's antialiased kernel for that).
    """
    if x.dtype not in _LINEAR_DTYPES:
        return None
    oh, ow = size

    def kernel(a: np.ndarray, dst: np.ndarray | None) -> np.ndarray:
        return cv2.resize(a, (ow, oh), dst, interpolation=cv2.INTER_LINEAR)

    return _run(x, window, size, _mirrored(kernel) if mirror else kernel)


def _run_nearest(x: Tensor, window: Window | None, size: Size, kernel: Kernel) -> Tensor | None:
    """:func:`_run` for kernels that copy whole elements, which any element size allows.

    bool goes as uint8; an int64 plane (class masks) as two int32 channels, its halves,
    which a nearest-neighbour kernel moves together.
    """
    if x.dtype == torch.bool:
        out = _run(x.view(torch.uint8), window, size, kernel)
        return None if out is None else out.view(torch.bool)
    if x.dtype != torch.int64 or x.ndim != 2 or x.stride(1) != 1 or not 0 < x.numel() or max(x.shape) > _MAX_SIDE:
        return _run(x, window, size, kernel)
    _threads_set()
    top, left, h, w = window if window is not None else (0, 0, *x.shape)
    halves = x.numpy()[top : top + h, left : left + w].view(np.int32).reshape(h, w, 2)
    return torch.from_numpy(np.ascontiguousarray(kernel(halves, None)).view(np.int64).reshape(size))


def resize_nearest(x: Tensor, window: Window, size: Size, mirror: bool = False) -> Tensor | None:
    """Nearest-neighbour resize of the ``window`` of ``x``: output index ``i`` reads input
    index :func:`nearest_exact_index` ``[i]`` along each axis; then mirrored left-right if
    ``mirror``. None if OpenCV cannot."""
    oh, ow = size

    def kernel(a: np.ndarray, dst: np.ndarray | None) -> np.ndarray:
        return cv2.resize(a, (ow, oh), dst, interpolation=cv2.INTER_NEAREST_EXACT)

    return _run_nearest(x, window, size, _mirrored(kernel) if mirror else kernel)


def nearest_exact_index(length: int, out: int) -> np.ndarray:
    """The input indices :func:`resize_nearest` reads along an axis of ``length`` resized to
    ``out`` (int64; empty when OpenCV cannot resize that long an axis)."""
    if length > _MAX_SIDE or out > _MAX_SIDE:
        return np.empty(0, dtype=np.int64)
    ramp = np.arange(length, dtype=np.float32)[None, :]
    return cv2.resize(ramp, (out, 1), interpolation=cv2.INTER_NEAREST_EXACT)[0].astype(np.int64)


@dataclass(frozen=True)
class NearestMap:
    """Where every output pixel of a warp reads, by pixcore's nearest-neighbour rule.

    Attributes:
        xy: int16 ``[H', W', 2]``, the input ``(column, row)`` of every output pixel, in the
            layout ``cv2.remap`` reads without interpolating.
        outside: uint8 ``[H', W']``, 1 where that input pixel lies outside the input.

    """

    xy: np.ndarray
    outside: np.ndarray


def nearest_map(column: Tensor, row: Tensor, in_size: Size) -> NearestMap | None:
    """The map of a warp whose output pixels read input pixel ``(column, row)``.

    ``column`` and ``row`` are float32 ``[H', W']`` whole numbers, which OpenCV's
    conversion to its integer map keeps exactly: ``cv2.remap`` then reads exactly those
    pixels and fills exactly the pixels outside. None for sizes past OpenCV's 16-bit
    coordinates.
    """
    h, w = in_size
    if max(h, w, *column.shape) > _MAX_SIDE:
        return None
    _threads_set()
    xy, _ = cv2.convertMaps(column.numpy(), row.numpy(), cv2.CV_16SC2, nninterpolation=True)
    inside = cv2.inRange(xy, (0, 0), (w - 1, h - 1))  # 255 where both coordinates are in range
    return NearestMap(xy, (inside == 0).view(np.uint8))


def remap_nearest(x: Tensor, where: NearestMap, fill: float) -> Tensor | None:
    """``x`` (``[..., H, W]``) read at ``where``, ``fill`` outside; None if OpenCV cannot."""
    if x.dtype == torch.int64:  # as two int32 halves: fill them in after, whatever its value
        out = _run_nearest(x, None, where.outside.shape, lambda a, dst: cv2.remap(
            a, where.xy, None, cv2.INTER_NEAREST, dst, borderMode=cv2.BORDER_CONSTANT))
        if out is not None:
            np.copyto(out.numpy(), int(fill), where=where.outside.view(bool))
        return out
    value = float(fill)
    return _run_nearest(x, None, where.outside.shape, lambda a, dst: cv2.remap(
        a, where.xy, None, cv2.INTER_NEAREST, dst, borderMode=cv2.BORDER_CONSTANT, borderValue=value))


def warp_linear(x: Tensor, matrix: tuple[float, ...], where: NearestMap, fill: float) -> Tensor | None:
    """Bilinear warp of image ``x``: output pixel ``(x', y')`` reads the input at
    ``(a x' + b y' + c, d x' + e y' + f)``, neighbours outside clamped to the border, and
    the pixels ``where`` marks outside set to ``fill``."""
    if x.dtype not in _LINEAR_DTYPES:
        return None
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    oh, ow = where.outside.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP

    def kernel(a: np.ndarray, dst: np.ndarray | None) -> np.ndarray:
        out = cv2.warpAffine(a, m, (ow, oh), dst, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        # Masked copy of a constant: an order of magnitude faster than numpy's masked set.
        return cv2.copyTo(_constant(out.shape, out.dtype.str, fill), where.outside, out)

    return _run(x, None, (oh, ow), kernel)


@functools.lru_cache(maxsize=8)
def _constant(shape: tuple[int, ...], dtype: str, value: float) -> np.ndarray:
    out = np.full(shape, value, dtype=np.dtype(dtype))
    out.flags.writeable = False
    return out
