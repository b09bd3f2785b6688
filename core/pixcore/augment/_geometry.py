"""Geometries: the sampled parameters of one geometric operation, plus resampling helpers.

Conventions
-----------
*Pixel centres*: pixel ``(row v, column u)`` has its centre at the continuous image
coordinate ``(x, y) = (u, v)`` and covers ``[u - 0.5, u + 0.5) x [v - 0.5, v + 0.5)``; an
image of width ``W`` spans ``x`` in ``[-0.5, W - 0.5]``. The intrinsics of every pixcore
data set follow the same convention (principal point of a centred camera at
``((W - 1) / 2, (H - 1) / 2)``).

*Pixel map* ``P`` (:meth:`Geometry.pixel_map`, 3x3): an input point ``(x, y, 1)`` lands
on output point ``P @ (x, y, 1)``. *Camera map* ``Q`` (:meth:`Geometry.camera_map`, 3x3
orthogonal): a camera-frame vector ``X`` (x right, y down, z forward) becomes ``Q @ X`` in
the camera frame of the output image. Then intrinsics become ``K' = P K Q^T`` (exact for
every operation: a point that projected to ``p`` projects to ``P p``), unit vectors
(normals) become ``Q n`` and z-depth is unchanged (``Q`` never moves the z axis), except
for an explicit zoom convention (:attr:`Warp.depth_factor`).

*Rotations* are counter-clockwise as displayed (x right, y down), like
``torchvision.transforms.v2.functional.rotate`` and ``torch.rot90(x, 1, (-2, -1))``: a
rotation by ``a`` maps positions and in-plane vector components by
``M(a) = [[cos a, sin a], [-sin a, cos a]]``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pixcore.augment import _opencv

__all__ = [
    "Crop",
    "Flip",
    "Geometry",
    "Rotate90",
    "Size",
    "Warp",
    "probe_geometries",
]

Size = tuple[int, int]
_IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _matrix(rows: Any) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


@dataclass(frozen=True, eq=False)
class Geometry:
    """Base of the operations' parameter records (one per call of a transform).

    Attributes:
        in_size: ``(H, W)`` of the input.
        fill: Value written into filled image pixels (image units: 0..255 for uint8).
        mask_fill: Class id written into filled class-mask pixels (the ignore index).

    """

    op: ClassVar[str] = ""
    in_size: Size
    fill: float = field(default=0.0, kw_only=True)
    mask_fill: int = field(default=255, kw_only=True)

    @property
    def out_size(self) -> Size:
        """``(H, W)`` of the output."""
        raise NotImplementedError

    @property
    def depth_factor(self) -> float:
        """What z-depth values are multiplied by (1 unless a zoom convention says otherwise)."""
        return 1.0

    @property
    def fills(self) -> bool:
        """Whether some output pixels lie outside the input (they get fill values)."""
        return False

    def pixel_map(self) -> Tensor:
        """3x3 float64 ``P``: input pixel coordinates (homogeneous) to output ones."""
        raise NotImplementedError

    def camera_map(self) -> Tensor:
        """3x3 float64 orthogonal ``Q``: input camera-frame vectors to output ones."""
        return _matrix(_IDENTITY)


# --------------------------------------------------------------------------------------
# Exact integer operations
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Flip(Geometry):
    """Mirror one axis: ``"horizontal"`` (left-right, x' = W - 1 - x) or ``"vertical"``."""

    op: ClassVar[str] = "flip"
    axis: Literal["horizontal", "vertical"] = "horizontal"

    @property
    def out_size(self) -> Size:
        return self.in_size

    @property
    def dim(self) -> int:
        """The tensor dimension that is reversed (-1 for horizontal, -2 for vertical)."""
        return -1 if self.axis == "horizontal" else -2

    def pixel_map(self) -> Tensor:
        h, w = self.in_size
        if self.axis == "horizontal":
            return _matrix(((-1.0, 0.0, w - 1.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
        return _matrix(((1.0, 0.0, 0.0), (0.0, -1.0, h - 1.0), (0.0, 0.0, 1.0)))

    def camera_map(self) -> Tensor:
        sign = (-1.0, 1.0) if self.axis == "horizontal" else (1.0, -1.0)
        return torch.diag(torch.tensor((*sign, 1.0), dtype=torch.float64))


@dataclass(frozen=True, eq=False)
class Rotate90(Geometry):
    """``k`` quarter turns counter-clockwise as displayed (``torch.rot90(x, k, (-2, -1))``)."""

    op: ClassVar[str] = "rotate90"
    k: int = 1

    @property
    def out_size(self) -> Size:
        h, w = self.in_size
        return (w, h) if self.k % 2 else (h, w)

    def pixel_map(self) -> Tensor:
        h, w = self.in_size
        k = self.k % 4
        if k == 0:
            return _matrix(_IDENTITY)
        if k == 1:  # x' = y, y' = W - 1 - x
            return _matrix(((0.0, 1.0, 0.0), (-1.0, 0.0, w - 1.0), (0.0, 0.0, 1.0)))
        if k == 2:
            return _matrix(((-1.0, 0.0, w - 1.0), (0.0, -1.0, h - 1.0), (0.0, 0.0, 1.0)))
        return _matrix(((0.0, -1.0, h - 1.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))

    def camera_map(self) -> Tensor:
        q = self.pixel_map()
        q[:2, 2] = 0.0
        return q


@dataclass(frozen=True, eq=False)
class Crop(Geometry):
    """An integer window ``[top, top + height) x [left, left + width)`` of the input.

    The window may extend past the input (negative ``top``/``left`` or beyond the far
    edge): those output pixels are filled (``fill``, ``mask_fill``, zero, invalid).
    """

    op: ClassVar[str] = "crop"
    top: int = 0
    left: int = 0
    height: int = 1
    width: int = 1

    @property
    def out_size(self) -> Size:
        return (self.height, self.width)

    @property
    def fills(self) -> bool:
        h, w = self.in_size
        return not (
            self.top >= 0 and self.left >= 0
            and self.top + self.height <= h and self.left + self.width <= w
        )

    def pixel_map(self) -> Tensor:
        return _matrix(((1.0, 0.0, -float(self.left)), (0.0, 1.0, -float(self.top)), (0.0, 0.0, 1.0)))

    def crop(self, x: Tensor, fill: float | bool) -> Tensor:
        """The window of ``x`` (``[..., H, W]``); a view when the window is inside."""
        t, left, h, w = self.top, self.left, self.height, self.width
        if not self.fills:
            return x[..., t : t + h, left : left + w]
        height, width = x.shape[-2:]
        out = x.new_full((*x.shape[:-2], h, w), fill)
        y0, y1 = max(t, 0), min(t + h, height)
        x0, x1 = max(left, 0), min(left + w, width)
        if y1 > y0 and x1 > x0:
            out[..., y0 - t : y1 - t, x0 - left : x1 - left] = x[..., y0:y1, x0:x1]
        return out


# --------------------------------------------------------------------------------------
# Affine resampling
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Warp(Geometry):
    """Affine resampling: every output pixel reads the input at an affine position.

    ``matrix = (a, b, c, d, e, f)`` maps output pixel centres to input coordinates:
    ``x = a x' + b y' + c``, ``y = d x' + e y' + f``. The linear part must be
    axis-aligned (``b == d == 0``: resize, scale, resized crop) or a similarity (a
    rotation times a scale): only those have a camera-frame equivalent.

    Images are resampled bilinearly (``interpolation="bilinear"``, with ``antialias``
    when shrinking an axis-aligned window) or by nearest neighbour; every other built-in
    kind by nearest neighbour: output pixel ``(u', v')`` takes input pixel
    ``(floor(x + 0.5), floor(y + 0.5))``. Output pixels whose nearest input pixel lies
    outside the input are filled, for every kind alike (so the validity mask, the class
    mask and the image agree on what was filled).

    Attributes:
        size: ``(H', W')`` of the output.
        window: ``(top, left, height, width)`` when the warp is a plain resize of that
            in-bounds input window to ``size``, mirrored left-right when ``matrix[0] < 0``
            (enables fast paths), else None.
        interpolation: How images are resampled.
        antialias: Low-pass images when shrinking (axis-aligned warps only).
        zoom_depth: Divide z-depth by the zoom factor (Eigen et al., 2014); see
            :attr:`depth_factor`.

    """

    op: ClassVar[str] = "warp"
    size: Size = (1, 1)
    matrix: tuple[float, float, float, float, float, float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    window: tuple[int, int, int, int] | None = None
    interpolation: Literal["bilinear", "nearest"] = "bilinear"
    antialias: bool = True
    zoom_depth: bool = False
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        a, b, _, d, e, _ = self.matrix
        if not (b == 0.0 and d == 0.0) and not (
            math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-12)
            and math.isclose(b, -d, rel_tol=1e-9, abs_tol=1e-12)
        ):
            raise ValueError(
                f"Warp matrix {self.matrix} is neither axis-aligned nor a similarity; "
                "such a warp has no camera-frame equivalent for normals and intrinsics"
            )
        if abs(a * e - b * d) < 1e-12:
            raise ValueError(f"Warp matrix {self.matrix} is singular")

    # -- constructors -----------------------------------------------------------------

    @classmethod
    def resize(
        cls, in_size: Size, window: tuple[int, int, int, int], size: Size, **kwargs: Any
    ) -> Warp:
        """Resize the in-bounds integer ``window = (top, left, height, width)`` to ``size``."""
        top, left, h, w = window
        sy, sx = h / size[0], w / size[1]
        matrix = (sx, 0.0, 0.5 * sx - 0.5 + left, 0.0, sy, 0.5 * sy - 0.5 + top)
        return cls(in_size, size=size, matrix=matrix, window=window, **kwargs)

    @classmethod
    def rotation(cls, in_size: Size, degrees: float, **kwargs: Any) -> Warp:
        """Rotate by ``degrees`` counter-clockwise (as displayed) about the image centre."""
        h, w = in_size
        a = math.radians(degrees)
        cos, sin = math.cos(a), math.sin(a)
        # Output to input: p = M(a)^T (p' - o) + o, M(a) = [[cos, sin], [-sin, cos]].
        ox, oy = (w - 1) / 2.0, (h - 1) / 2.0
        matrix = (cos, -sin, ox - cos * ox + sin * oy, sin, cos, oy - sin * ox - cos * oy)
        return cls(in_size, size=in_size, matrix=matrix, **kwargs)

    def then_mirrored(self) -> Warp:
        """One warp doing this axis-aligned warp and then a left-right mirror of its output.

        Output column ``x'`` reads what column ``W' - 1 - x'`` read. Applying the two
        at once lets a window warp mirror each output while it is still in cache.
        """
        if not self.axis_aligned:
            raise ValueError(f"then_mirrored needs an axis-aligned warp, not {self.matrix}")
        a, b, c, d, e, f = self.matrix
        matrix = (-a, b, a * (self.size[1] - 1) + c, d, e, f)
        return replace(self, matrix=matrix, _cache={})

    # -- geometry ---------------------------------------------------------------------

    @property
    def out_size(self) -> Size:
        return self.size

    @property
    def mirrored(self) -> bool:
        """Window warps: whether the resized window is mirrored left-right."""
        return self.matrix[0] < 0.0

    @property
    def axis_aligned(self) -> bool:
        """True when the warp only scales and shifts the axes."""
        return self.matrix[1] == 0.0 and self.matrix[3] == 0.0

    @property
    def zoom(self) -> float:
        """Linear magnification ``s = sqrt(|det|)`` of the pixel map (output px per input px)."""
        a, b, _, d, e, _ = self.matrix
        return 1.0 / math.sqrt(abs(a * e - b * d))

    @property
    def depth_factor(self) -> float:
        """``1 / zoom`` with ``zoom_depth`` (Eigen et al.'s convention), else 1.

        With ``zoom_depth`` the back-projected scene is the original one scaled by
        ``1 / zoom`` about the camera: the image is unchanged by such a scaling, so both
        readings are exact; normals are unchanged either way.
        """
        return 1.0 / self.zoom if self.zoom_depth else 1.0

    @property
    def fills(self) -> bool:
        if self.window is not None:
            return False
        if self.axis_aligned:
            _, _, row_out, col_out = self._axis_index()
            return row_out is not None or col_out is not None
        return self.outside() is not None

    def pixel_map(self) -> Tensor:
        a, b, c, d, e, f = self.matrix
        inverse = _matrix(((a, b, c), (d, e, f), (0.0, 0.0, 1.0)))
        return torch.linalg.inv(inverse)

    def camera_map(self) -> Tensor:
        if self.axis_aligned:
            a, e = self.matrix[0], self.matrix[4]
            signs = (math.copysign(1.0, a), math.copysign(1.0, e), 1.0)
            return torch.diag(torch.tensor(signs, dtype=torch.float64))
        p = self.pixel_map()[:2, :2]
        rotation = p / math.sqrt(abs(float(torch.linalg.det(p))))
        q = _matrix(_IDENTITY)
        q[:2, :2] = rotation
        return q

    # -- resampling -------------------------------------------------------------------
    #
    # Every nearest-neighbour kind reads the same index map, computed once per call, so
    # that class masks, depth, normals and validity masks always agree on which input
    # pixel (or fill) an output pixel holds.

    def _axis_index(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Axis-aligned warps: ``(rows, cols, row_outside, col_outside)``, clamped indices."""
        cached = self._cache.get("axis")
        if cached is None:
            h, w = self.in_size
            oh, ow = self.size
            a, _, c, _, e, f = self.matrix
            # Small vectors: numpy is much cheaper per operation than torch here.
            cols = np.floor(np.arange(ow, dtype=np.float64) * a + (c + 0.5)).astype(np.int64)
            rows = np.floor(np.arange(oh, dtype=np.float64) * e + (f + 0.5)).astype(np.int64)
            col_out = (cols < 0) | (cols >= w)
            row_out = (rows < 0) | (rows >= h)
            cached = (
                torch.from_numpy(np.clip(rows, 0, h - 1)),
                torch.from_numpy(np.clip(cols, 0, w - 1)),
                torch.from_numpy(row_out[:, None]) if row_out.any() else None,
                torch.from_numpy(col_out) if col_out.any() else None,
            )
            self._cache["axis"] = cached
        return cached  # type: ignore[no-any-return]

    def _source(self) -> tuple[Tensor, Tensor]:
        """General warps: the nearest input pixel of every output pixel, float32 ``[H', W']``.

        ``floor(x + 0.5)`` and ``floor(y + 0.5)`` of the input position, whole numbers
        held in float32 (the form OpenCV's maps take).
        """
        cached = self._cache.get("source")
        if cached is None:
            oh, ow = self.size
            a, b, c, d, e, f = self.matrix
            xs = torch.arange(ow, dtype=torch.float64)
            ys = torch.arange(oh, dtype=torch.float64)
            sx = torch.add((xs * a).float()[None, :], (ys * b + (c + 0.5)).float()[:, None]).floor_()
            sy = torch.add((xs * d).float()[None, :], (ys * e + (f + 0.5)).float()[:, None]).floor_()
            cached = (sx, sy)
            self._cache["source"] = cached
        return cached  # type: ignore[no-any-return]

    def _opencv_map(self) -> _opencv.NearestMap | None:
        """General warps: the nearest-neighbour map in OpenCV's form (None where it cannot)."""
        if "opencv" not in self._cache:
            self._cache["opencv"] = _opencv.nearest_map(*self._source(), self.in_size)
        return self._cache["opencv"]  # type: ignore[no-any-return]

    def _flat_index(self) -> tuple[Tensor, Tensor | None]:
        """General warps: ``(flat, outside)``, the clamped flat input index ``[H' * W']``."""
        cached = self._cache.get("flat")
        if cached is None:
            h, w = self.in_size
            sx, sy = self._source()
            # int32 arithmetic: half the memory traffic of int64.
            u = sx.to(torch.int32)
            v = sy.to(torch.int32)
            uc, vc = u.clamp(0, w - 1), v.clamp(0, h - 1)
            inside = torch.eq(uc, u).logical_and_(torch.eq(vc, v))
            outside = None if bool(inside.all()) else inside.logical_not_()
            flat = vc.mul_(w).add_(uc).view(-1).long()
            cached = (flat, outside)
            self._cache["flat"] = cached
        return cached  # type: ignore[no-any-return]

    def outside(self) -> Tensor | None:
        """Boolean ``[H', W']``: True where the output is filled; None if nothing is."""
        if self.window is not None:
            return None
        if self.axis_aligned:
            _, _, row_out, col_out = self._axis_index()
            if row_out is None and col_out is None:
                return None
            out = torch.zeros(self.size, dtype=torch.bool)
            if row_out is not None:
                out |= row_out
            if col_out is not None:
                out |= col_out
            return out
        where = self._opencv_map()
        if where is not None:
            return torch.from_numpy(where.outside).view(torch.bool) if where.outside.any() else None
        return self._flat_index()[1]

    def _window_index(self) -> tuple[Tensor, Tensor]:
        """Window warps: ``(rows, cols)``, the input pixels ``F.interpolate`` picks.

        ``mode="nearest-exact"`` picks ``floor((i + 0.5) * in / out)``; asking
        ``F.interpolate`` itself (on index ramps) guarantees that the kinds resampled by
        it and the kinds gathered by index read the very same pixels.
        """
        cached = self._cache.get("window")
        if cached is None:
            top, left, h, w = self.window  # type: ignore[misc]
            oh, ow = self.size
            cols = _nearest_exact(w, ow) + left
            cached = (_nearest_exact(h, oh) + top, cols.flip(0) if self.mirrored else cols)
            self._cache["window"] = cached
        return cached  # type: ignore[no-any-return]

    def nearest(self, x: Tensor, fill: float | bool) -> Tensor:
        """Nearest-neighbour resampling of ``x`` (``[..., H, W]``, any dtype)."""
        h, w = self.in_size
        oh, ow = self.size
        if self.window is not None:
            return self._nearest_window(x)
        is_bool = x.dtype == torch.bool
        source = x.view(torch.uint8) if is_bool else x
        if self.axis_aligned:
            rows, cols, row_out, col_out = self._axis_index()
            out = _gather_rows_cols(source, rows, cols)
            if row_out is not None:
                out.masked_fill_(row_out, fill)
            if col_out is not None:
                out.masked_fill_(col_out, fill)
        else:
            where = self._opencv_map()
            fast = None if where is None else _opencv.remap_nearest(x, where, fill)
            if fast is not None:
                return fast
            flat, outside = self._flat_index()
            lead = x.shape[:-2]
            planes = source.reshape(-1, h * w)
            out = torch.stack([plane.index_select(0, flat) for plane in planes]).view(*lead, oh, ow)
            if outside is not None:
                out.masked_fill_(outside, fill)
        return out.view(torch.bool) if is_bool else out

    def _nearest_window(self, x: Tensor) -> Tensor:
        top, left, wh, ww = self.window  # type: ignore[misc]
        oh, ow = self.size
        mirror = self.mirrored
        if (wh, ww) == self.size:  # scale 1: an exact crop
            crop = x[..., top : top + oh, left : left + ow]
            return crop.flip(-1) if mirror else crop
        if _opencv_reads_the_same(wh, oh) and _opencv_reads_the_same(ww, ow):
            out = _opencv.resize_nearest(x, (top, left, wh, ww), self.size, mirror)
            if out is not None:
                return out
        if x.dtype == torch.float32:  # torch's nearest kernel: several times faster
            crop = x[..., top : top + wh, left : left + ww]
            batch = crop[None] if x.ndim == 3 else crop.reshape(1, -1, wh, ww)
            out = F.interpolate(batch, size=self.size, mode="nearest-exact")
            out = out[0] if x.ndim == 3 else out.reshape(*x.shape[:-2], oh, ow)
            return out.flip(-1) if mirror else out
        rows, cols = self._window_index()  # mirrored columns when mirror
        if wh < oh:  # enlarging: gather the columns of the window's rows, then rows
            window_rows = x[..., top : top + wh, :]
            return _gather_rows_cols(window_rows, rows - top, cols, columns_first=True)
        return _gather_rows_cols(x, rows, cols)

    def bilinear(self, x: Tensor, fill: float) -> Tensor:
        """Bilinear resampling of an image ``[..., C, H, W]`` (uint8 or float).

        Interpolation reads clamped neighbours (the border is replicated), and output
        pixels whose nearest input pixel is outside get ``fill``: the image is filled
        exactly where the nearest-neighbour kinds are.
        """
        if self.window is not None:
            return self._resize_window(x)
        return self._grid_sample(x, fill)

    def _resize_window(self, x: Tensor) -> Tensor:
        top, left, h, w = self.window  # type: ignore[misc]
        oh, ow = self.size
        mirror = self.mirrored
        if (h, w) == (oh, ow):
            crop = x[..., top : top + h, left : left + w]
            return crop.flip(-1) if mirror else crop
        antialias = self.antialias and (h > oh or w > ow)
        if not antialias:  # OpenCV's bilinear does not low-pass: only when nothing shrinks
            out = _opencv.resize_linear(x, (top, left, h, w), self.size, mirror)
            if out is not None:
                return out
        crop = x[..., top : top + h, left : left + w]
        lead = x.shape[:-3]
        batch = crop.reshape(-1, *crop.shape[-3:]) if lead else crop[None]
        dtype = batch.dtype
        if dtype == torch.uint8 and batch.shape[-3] in (3, 4):
            # torch's uint8 bilinear kernel is several times faster on channels-last
            # memory (the layout torchvision.io and PIL decode to) than on [C, H, W].
            batch = batch.contiguous(memory_format=torch.channels_last)
        elif dtype != torch.uint8 and not dtype.is_floating_point:
            batch = batch.float()
        out = _resize_bilinear(batch, (oh, ow), antialias)
        out = _restore_dtype(out, dtype)
        out = out.reshape(*lead, *out.shape[-3:]) if lead else out[0]
        return out.flip(-1) if mirror else out

    def _grid(self, dtype: torch.dtype) -> Tensor:
        key = f"grid-{dtype}"
        grid = self._cache.get(key)
        if grid is None:
            h, w = self.in_size
            oh, ow = self.size
            a, b, c, d, e, f = self.matrix
            # grid_sample (align_corners=False) reads input x at (2 x + 1) / W - 1.
            kx, ky = 2.0 / w, 2.0 / h
            xs = torch.arange(ow, dtype=torch.float64)
            ys = torch.arange(oh, dtype=torch.float64)
            grid = torch.empty(1, oh, ow, 2, dtype=dtype)
            for channel, (p, q, r, k) in enumerate(((a, b, c, kx), (d, e, f, ky))):
                along_x = (xs * (p * k)).to(dtype)[None, :]
                along_y = (ys * (q * k) + ((r + 0.5) * k - 1.0)).to(dtype)[:, None]
                torch.add(along_x, along_y, out=grid[0, ..., channel])
            self._cache[key] = grid
        return grid  # type: ignore[no-any-return]

    def _grid_sample(self, x: Tensor, fill: float) -> Tensor:
        where = self._opencv_map()
        out = None if where is None else _opencv.warp_linear(x, self.matrix, where, fill)
        if out is not None:  # several times faster than grid_sample on float32
            return out
        lead = x.shape[:-3]
        batch = x.reshape(-1, *x.shape[-3:])
        dtype = batch.dtype
        if dtype.is_floating_point:
            work = batch.contiguous()
        else:  # float32, contiguous [N, C, H, W] whatever the input layout
            work = torch.empty(batch.shape, dtype=torch.float32)
            work.copy_(batch)
        grid = self._grid(work.dtype).expand(work.shape[0], -1, -1, -1)
        out = F.grid_sample(work, grid, mode="bilinear", padding_mode="border", align_corners=False)
        outside = self.outside()
        if outside is not None:
            out.masked_fill_(outside, fill)
        out = _restore_dtype(out, dtype)
        return out.reshape(*lead, *out.shape[-3:])


@functools.lru_cache(maxsize=1024)
def _nearest_exact(size: int, out: int) -> Tensor:
    """The input indices ``F.interpolate(mode="nearest-exact")`` reads along one axis.

    The ramp is float32 because the kernel computes its scale in the data's precision:
    the indices then match float32 data exactly (other dtypes are gathered with them).
    """
    ramp = torch.arange(size, dtype=torch.float32).view(1, 1, 1, size)
    return F.interpolate(ramp, size=(1, out), mode="nearest-exact").view(-1).long()


@functools.lru_cache(maxsize=4096)
def _opencv_reads_the_same(size: int, out: int) -> bool:
    """Whether OpenCV's nearest resize of an axis picks exactly :func:`_nearest_exact`'s pixels."""
    return bool(np.array_equal(_opencv.nearest_exact_index(size, out), _nearest_exact(size, out).numpy()))


def _resize_bilinear(batch: Tensor, size: Size, antialias: bool) -> Tensor:
    """``F.interpolate(..., mode="bilinear")`` of ``[N, C, h, w]``, working around a torch bug.

    torch's antialiased bilinear kernel for float tensors returns wrong values when the
    input or output width is 1 (uint8 is fine): resize the transposed image instead, or,
    when both axes are that thin, without antialiasing.
    """
    w, ow = batch.shape[-1], size[1]
    if antialias and batch.dtype.is_floating_point and (w == 1 or ow == 1):
        h, oh = batch.shape[-2], size[0]
        if h > 1 and oh > 1:
            out = F.interpolate(
                batch.transpose(-1, -2), size=(ow, oh), mode="bilinear", align_corners=False,
                antialias=True,
            )
            return out.transpose(-1, -2)
        antialias = False
    return F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def _gather_rows_cols(x: Tensor, rows: Tensor, cols: Tensor, *, columns_first: bool = False) -> Tensor:
    """``x[..., rows, :][..., cols]`` for any dtype, one plane at a time (fastest in torch).

    Gathering along the last dimension is the expensive part; ``columns_first`` does it
    on the input rows before repeating them (cheaper when rows repeat, i.e. enlarging).
    """
    if x.dtype == torch.bool:
        as_bytes = x.view(torch.uint8)
        return _gather_rows_cols(as_bytes, rows, cols, columns_first=columns_first).view(torch.bool)
    if columns_first:
        return _gather_cols(x, cols).index_select(-2, rows)
    return _gather_cols(x.index_select(-2, rows), cols)


def _gather_cols(x: Tensor, cols: Tensor) -> Tensor:
    index = cols.expand(x.shape[-2], cols.numel())
    if x.ndim == 2:
        return torch.gather(x, -1, index)
    planes = x.reshape(-1, *x.shape[-2:])
    out = torch.empty(planes.shape[0], x.shape[-2], cols.numel(), dtype=x.dtype)
    for plane, target in zip(planes, out, strict=True):
        torch.gather(plane, -1, index, out=target)
    return out.view(*x.shape[:-1], cols.numel())


def _restore_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast a float result back to an integer image dtype (rounded, clamped)."""
    if x.dtype == dtype:
        return x
    if dtype.is_floating_point:
        return x.to(dtype)
    info = torch.iinfo(dtype)
    if dtype == torch.uint8:
        return to_uint8(x)
    return x.clamp(info.min, info.max).round_().to(dtype)


def to_uint8(x: Tensor, *, offset: float = 0.5) -> Tensor:
    """Round (``x + offset``, truncated) and clip a float tensor to uint8, keeping its layout.

    ``x`` is consumed (modified in place). ``offset=0.0`` when ``x`` already holds
    ``value + 0.5``. numpy's cast is several times faster than torch's float -> uint8
    cast on one thread.
    """
    x = x.detach()
    if offset:
        x.add_(offset)
    x.clamp_(0.0, 255.49)
    if x.device.type != "cpu":
        return x.to(torch.uint8)
    return torch.from_numpy(x.numpy().astype(np.uint8))


def probe_geometries(op: str, size: Size) -> list[Geometry]:
    """A few geometries of ``op`` on an input of ``size``, used to probe new rules."""
    h, w = size
    if op == "flip":
        return [Flip(size, axis="horizontal"), Flip(size, axis="vertical")]
    if op == "rotate90":
        return [Rotate90(size, k=1), Rotate90(size, k=3)]
    if op == "crop":
        return [Crop(size, top=-2, left=1, height=h, width=w + 3)]
    if op == "warp":
        return [
            Warp.rotation(size, 17.0),
            Warp.resize(size, (1, 2, h - 2, w - 3), (2 * h, w + 5)),
        ]
    raise ValueError(f"unknown operation {op!r}")
