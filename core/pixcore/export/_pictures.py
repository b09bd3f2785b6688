"""Pictures of exported models' predictions, in numpy alone (no torch).

The same pictures as the tasks draw in the checkpoint path (``Task.visualize``), so that
``pixcore predict --model`` and ``pixcore predict --checkpoint`` write the same files:

* class ids: class ``c`` in ``palette[c]`` (the task's colours, stored in the export
  metadata; by default pixcore-seg's: the Pascal VOC colour ``c + 1``, so that no class is
  black); ids outside ``[0, num_classes)`` and the ignore index black;
* scalar fields (depth): Google's Turbo colour map over the 2nd to 98th percentile of
  the finite, positive values (near blue, far red); other pixels black;
* unit vectors (normals): ``(n + 1) / 2`` of the normalised vector, rounded half up;
  zero-length or non-finite vectors black;
* :func:`make_grid`: the input and each picture side by side under their labels.

Copied from :mod:`pixcore.viz` and the task plugins (which import torch) rather than
imported, so that this module needs only numpy and Pillow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from pixcore._colormaps import TURBO_ANCHORS, TURBO_POSITIONS

__all__ = [
    "class_palette",
    "class_picture",
    "default_palette",
    "image_picture",
    "make_grid",
    "scalar_picture",
    "turbo",
    "vector_picture",
]

#: Colour of pixels without a value (black), as in :data:`pixcore.viz.INVALID_COLOR`.
INVALID_COLOR: tuple[int, int, int] = (0, 0, 0)
#: Vectors shorter than this are "no vector" (as in :func:`pixcore.viz.normals_to_rgb`).
_MIN_NORM = 1e-6

# Google's Turbo colour map, the table pixcore.viz.turbo uses.
_TURBO_ANCHORS, _TURBO_POSITIONS = TURBO_ANCHORS, TURBO_POSITIONS


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round half up and clip to ``[0, 255]``."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def class_palette(num_classes: int) -> np.ndarray:
    """The Pascal VOC colour palette extended to ``num_classes`` colours, ``[N, 3]`` uint8.

    Bit ``3k`` of ``i`` sets bit ``7 - k`` of red, bit ``3k + 1`` that of green and bit
    ``3k + 2`` that of blue (:func:`pixcore.viz.class_palette`).
    """
    ids = np.arange(num_classes, dtype=np.int64)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def default_palette(num_classes: int) -> np.ndarray:
    """pixcore-seg's class colours: class ``c`` in VOC colour ``c + 1`` (none black)."""
    return class_palette(num_classes + 1)[1:]


def class_picture(
    ids: np.ndarray, num_classes: int, palette: np.ndarray | None = None, ignore_index: int | None = None
) -> np.ndarray:
    """Class ids ``[H, W]`` -> RGB ``[H, W, 3]`` uint8: class ``c`` in ``palette[c]``.

    ``palette`` is ``[K, 3]`` with ``K >= num_classes`` (None: :func:`default_palette`).
    Ids outside ``[0, num_classes)`` and ``ignore_index`` are black.
    """
    colours = default_palette(num_classes) if palette is None else np.asarray(palette)
    if colours.ndim != 2 or colours.shape[1] != 3 or colours.shape[0] < num_classes:
        raise ValueError(f"a palette is [K, 3] with K >= {num_classes} colours, got shape {colours.shape}")
    colours = np.clip(colours[:num_classes], 0, 255).astype(np.uint8)
    labels = np.asarray(ids).astype(np.int64)
    keep = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        keep &= labels != ignore_index
    picture = np.zeros((*labels.shape, 3), dtype=np.uint8)
    picture[...] = INVALID_COLOR
    picture[keep] = colours[labels[keep]]
    return picture


def turbo(values: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` (clipped; NaN as 0) -> Turbo colours, uint8 ``[..., 3]``."""
    t = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, 1.0)
    rgb = np.stack([np.interp(t, _TURBO_POSITIONS, _TURBO_ANCHORS[:, c]) for c in range(3)], -1)
    return _to_uint8(rgb * 255.0)


def scalar_picture(value: np.ndarray) -> np.ndarray:
    """A scalar field ``[H, W]`` (or ``[1, H, W]``) -> Turbo colours ``[H, W, 3]`` uint8.

    Drawn as the depth task draws depth: the finite, positive pixels, mapped through the
    2nd to 98th percentile of their values (so that a few outliers do not flatten the
    picture) onto Turbo; every other pixel is black. With a constant field every drawn
    pixel takes the middle colour.
    """
    field = np.asarray(value, dtype=np.float32)
    if field.ndim == 3 and field.shape[0] == 1:
        field = field[0]
    if field.ndim != 2:
        raise ValueError(f"a scalar field to draw is [H, W] or [1, H, W], got shape {field.shape}")
    keep = np.isfinite(field) & (field > 0)
    picture = np.zeros((*field.shape, 3), dtype=np.uint8)
    if not keep.any():
        return picture
    low, high = (float(v) for v in np.percentile(field[keep], [2.0, 98.0]))
    if high > low:
        scaled = np.clip((field[keep] - low) / (high - low), 0.0, 1.0)
    else:
        scaled = np.full(int(keep.sum()), 0.5)
    picture[keep] = turbo(scaled)
    return picture


def vector_picture(value: np.ndarray) -> np.ndarray:
    """Unit vectors ``[3, H, W]`` -> RGB ``[H, W, 3]`` uint8: ``(n + 1) / 2`` of the normalised vector.

    x goes to red, y to green, z to blue; a vector that is not finite or shorter than
    ``1e-6`` is black.
    """
    array = np.asarray(value)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"unit vectors to draw are [3, H, W] (channels first), got shape {array.shape}")
    vectors = np.moveaxis(array.astype(np.float64), 0, -1)
    finite = np.asarray(np.isfinite(vectors).all(axis=-1))
    vectors = np.where(finite[..., None], vectors, 0.0)
    length = np.linalg.norm(vectors, axis=-1)
    keep = np.asarray(finite & (length > _MIN_NORM))
    unit = vectors / np.where(keep, length, 1.0)[..., None]
    picture = _to_uint8((unit + 1.0) * 127.5)
    picture[~keep] = INVALID_COLOR
    return picture


def image_picture(image: np.ndarray) -> np.ndarray:
    """An input image, uint8 ``[3, H, W]`` or ``[H, W, 3]`` -> contiguous ``[H, W, 3]``."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"an image to draw is uint8 [3, H, W] or [H, W, 3], got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def make_grid(panels: Sequence[np.ndarray], labels: Sequence[str], pad: int = 4) -> Image.Image:
    """``[H, W, 3]`` uint8 panels side by side under their labels, with ``pad`` white pixels
    between them: the picture :func:`pixcore.viz.make_grid` draws for one row at scale 1."""
    if not panels:
        raise ValueError("make_grid needs at least one panel")
    height, width = panels[0].shape[:2]
    header = 16
    canvas = Image.new("RGB", (len(panels) * (width + pad) + pad, header + height + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for column, label in enumerate(labels):
        draw.text((pad + column * (width + pad) + 2, 2), label, fill=(0, 0, 0))
    for column, panel in enumerate(panels):
        tile = Image.fromarray(np.ascontiguousarray(panel))
        if tile.size != (width, height):
            tile = tile.resize((width, height), Image.Resampling.NEAREST)
        canvas.paste(tile, (pad + column * (width + pad), header + pad))
    return canvas
