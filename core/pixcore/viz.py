"""Pictures of samples, targets and predictions.

Colour helpers, one per target kind, each returning an ``[H, W, 3]`` uint8 RGB array:

* :func:`colorize_mask`: class ids through :func:`class_palette` (the Pascal VOC
  palette); ignored and invalid pixels in :data:`VOID_COLOR`;
* :func:`colorize_depth`: depth through a colour map (:func:`turbo` by default, near is
  blue, far is red) over a value range that a target and a prediction can share
  (:func:`depth_range`); invalid pixels in :data:`INVALID_COLOR` (black);
* :func:`normals_to_rgb`: unit normals as ``(n + 1) / 2``; invalid pixels black;
* :func:`image_to_rgb`: an input image.

:func:`make_grid` and :func:`save_grid` lay the panels out side by side under column
labels (the pictures of ``pixcore demo``). Every helper takes numpy arrays or torch
tensors (on any device) and never modifies its inputs.

Example::

    import pixcore.viz as viz

    value_range = viz.depth_range(target, valid)            # shared by both panels
    row = [
        viz.image_to_rgb(image),
        viz.colorize_depth(target, valid, value_range),
        viz.colorize_depth(prediction, valid, value_range),
    ]
    viz.save_grid("depth.png", [row], ["input", "truth", "prediction"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from pixcore._colormaps import TURBO_ANCHORS, TURBO_POSITIONS

__all__ = [
    "COLORMAPS",
    "INVALID_COLOR",
    "VOID_COLOR",
    "class_palette",
    "colorize_depth",
    "colorize_mask",
    "depth_range",
    "gray",
    "image_to_rgb",
    "make_grid",
    "normals_to_rgb",
    "save_grid",
    "turbo",
]

#: Colour of pixels without a value in depth and normal pictures: black, which no colour
#: map of :data:`COLORMAPS` and no unit normal (see :func:`normals_to_rgb`) produces.
INVALID_COLOR: tuple[int, int, int] = (0, 0, 0)
#: Colour of ignored and invalid pixels in class-mask pictures: the colour of the
#: "void" label (255) in the Pascal VOC ground-truth images, which no class among the
#: first 255 of :func:`class_palette` has. Class 0 is black in the VOC palette, so black
#: cannot mark missing labels there.
VOID_COLOR: tuple[int, int, int] = (224, 224, 192)

#: Ground-truth normals shorter than this are "no normal" (data sets store zeros).
_MIN_NORM = 1e-6
#: Bit-interleaving of :func:`class_palette` spreads 24 bits of the class id.
_MAX_CLASSES = 1 << 24

Color = tuple[int, int, int]


# --------------------------------------------------------------------------------------
# Class masks
# --------------------------------------------------------------------------------------


def class_palette(num_classes: int) -> np.ndarray:
    """The Pascal VOC colour palette extended to ``num_classes`` colours, ``[N, 3]`` uint8.

    Colour ``i`` spreads the bits of ``i`` over the three channels, most significant
    bit first: bit ``3k`` of ``i`` sets bit ``7 - k`` of red, bit ``3k + 1`` that of
    green and bit ``3k + 2`` that of blue. This is how the VOC development kit builds its
    colour map (Everingham et al., IJCV 2010), so colour ``i`` is the colour of label
    ``i`` in the VOC ground-truth images: 0 (background) black, 1 (aeroplane)
    ``(128, 0, 0)``, 15 (person) ``(192, 128, 128)``. The map from ids to colours is a
    bijection on ``[0, 2**24)``, so the colours are distinct for any class count up to
    ``2**24`` (150 for ADE20K, 1000, ...).

    Raises:
        ValueError: ``num_classes`` is negative or above ``2**24``.

    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise TypeError(f"class_palette: num_classes must be an int, got {num_classes!r}")
    if not 0 <= num_classes <= _MAX_CLASSES:
        raise ValueError(
            f"class_palette: num_classes must be in [0, 2**24] (distinct 24-bit colours), "
            f"got {num_classes}"
        )
    ids = np.arange(num_classes, dtype=np.int64)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def colorize_mask(
    ids: Any,
    num_classes: int,
    ignore_index: int | None = 255,
    valid: Any = None,
    *,
    palette: np.ndarray | None = None,
    invalid_color: Color | None = None,
) -> np.ndarray:
    """Class ids ``[H, W]`` (or ``[1, H, W]``) -> RGB ``[H, W, 3]`` uint8.

    Class ``c`` gets ``palette[c]`` (by default :func:`class_palette`, so VOC label
    images look exactly as in the VOC development kit). Pixels equal to
    ``ignore_index``, pixels outside ``[0, num_classes)`` and pixels where ``valid`` is
    False get ``invalid_color``.

    Args:
        ids: Integer class ids. For logits ``[C, H, W]`` pass ``logits.argmax(0)``.
        num_classes: Number of classes.
        ignore_index: Label that marks unlabelled pixels; ``None`` for none.
        valid: Optional boolean ``[H, W]`` mask, True where the pixel has a label.
        palette: ``[K, 3]`` uint8 colours with ``K >= num_classes``.
        invalid_color: Colour of ignored and invalid pixels. By default the first of
            :data:`VOID_COLOR`, white and black that no class uses: :data:`VOID_COLOR`
            with the VOC palette and up to 255 classes, white for more.

    Raises:
        ValueError: ids that are not an integer map, a ``valid`` mask of another shape,
            a palette with too few colours, or an ``invalid_color`` that a class uses.

    """
    labels = _spatial(_as_array(ids), "colorize_mask: ids", "[H, W] class ids")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(
            f"colorize_mask: ids must be integer class ids, got dtype {labels.dtype}; "
            "for logits [C, H, W] pass logits.argmax(0)"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise TypeError(f"colorize_mask: num_classes must be an int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"colorize_mask: num_classes must be at least 1, got {num_classes}")
    if palette is None:
        colours = class_palette(num_classes)
    else:
        colours = np.asarray(palette)
        if colours.ndim != 2 or colours.shape[1] != 3 or colours.shape[0] < num_classes:
            raise ValueError(
                f"colorize_mask: palette must be [K, 3] with K >= num_classes = {num_classes}, "
                f"got shape {colours.shape}"
            )
        colours = np.clip(colours[:num_classes], 0, 255).astype(np.uint8)
    if invalid_color is None:
        fill = _free_color(colours)
    else:
        fill = _check_color(invalid_color, "colorize_mask: invalid_color")
        taken = np.flatnonzero(_pack(colours) == _pack(np.array([fill])))
        if taken.size:
            raise ValueError(
                f"colorize_mask: invalid_color {fill} is the colour of class {int(taken[0])}; "
                "pick a colour that no class uses, or leave invalid_color=None"
            )
    labels = labels.astype(np.int64)
    keep = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        keep &= labels != ignore_index
    if valid is not None:
        keep &= _valid_mask(valid, labels.shape, "colorize_mask")
    picture = np.empty((*labels.shape, 3), dtype=np.uint8)
    picture[...] = fill
    picture[keep] = colours[labels[keep]]
    return picture


# --------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------

_TURBO_ANCHORS, _TURBO_POSITIONS = TURBO_ANCHORS, TURBO_POSITIONS


def turbo(values: Any) -> np.ndarray:
    """Values in ``[0, 1]`` (clipped; NaN as 0) -> Turbo colours, uint8 ``[..., 3]``.

    Google's Turbo (Mikhailov 2019): dark violet-blue at 0, then blue, cyan, green,
    yellow, orange and dark red at 1. Its hue falls monotonically from about 284 to
    about 1 degree, so the order of values reads off the rainbow. No colour is black
    (the darkest is ``(48, 18, 59)``), which stays free for :data:`INVALID_COLOR`.
    """
    t = _unit_interval(values)
    rgb = np.stack([np.interp(t, _TURBO_POSITIONS, _TURBO_ANCHORS[:, c]) for c in range(3)], -1)
    return _to_uint8(rgb * 255.0)


def gray(values: Any) -> np.ndarray:
    """Values in ``[0, 1]`` (clipped; NaN as 0) -> grey levels 40 to 255, uint8 ``[..., 3]``.

    Linear from dark grey at 0 to white at 1; never black, which stays free for
    :data:`INVALID_COLOR`.
    """
    level = _to_uint8(40.0 + 215.0 * _unit_interval(values))
    return np.repeat(level[..., None], 3, axis=-1)


#: Colour maps :func:`colorize_depth` knows by name: values in ``[0, 1]`` -> uint8 RGB.
COLORMAPS: dict[str, Callable[[Any], np.ndarray]] = {"turbo": turbo, "gray": gray}


def depth_range(
    depth: Any, valid: Any = None, percentiles: tuple[float, float] = (2.0, 98.0)
) -> tuple[float, float]:
    """The value range :func:`colorize_depth` uses by default: two percentiles of the
    kept pixels (valid, finite, positive), 2nd and 98th by default, so that a few
    outliers do not flatten the picture. ``(0.0, 1.0)`` when no pixel is kept.

    Compute it once from a target and pass it to :func:`colorize_depth` for both the
    target and the prediction, so that a colour means the same depth in both pictures.
    """
    values, keep = _depth_and_keep(depth, valid, "depth_range")
    low_q, high_q = percentiles
    if not 0.0 <= low_q <= high_q <= 100.0:
        raise ValueError(
            f"depth_range: percentiles must satisfy 0 <= low <= high <= 100, got {percentiles}"
        )
    if not keep.any():
        return 0.0, 1.0
    low, high = np.percentile(values[keep], [low_q, high_q])
    return float(low), float(high)


def colorize_depth(
    depth: Any,
    valid: Any = None,
    value_range: tuple[float, float] | None = None,
    colormap: str | Callable[[Any], np.ndarray] = "turbo",
) -> np.ndarray:
    """Depth ``[H, W]`` (or ``[1, H, W]``) -> RGB ``[H, W, 3]`` uint8.

    A pixel is drawn when it is valid and its depth is finite and positive (data sets
    store 0 for "no measurement"); every other pixel is :data:`INVALID_COLOR` (black).
    Depth ``d`` maps to ``t = clip((d - low) / (high - low), 0, 1)`` and then through the
    colour map, so near is the start of the map (blue for ``turbo``) and far its end
    (red); with ``high == low`` every drawn pixel gets ``t = 0.5``.

    Args:
        depth: Depth map (metres or any positive unit).
        valid: Optional boolean ``[H, W]`` mask.
        value_range: ``(low, high)``; by default :func:`depth_range` of this map. Pass
            the target's range when drawing its prediction, so colours compare.
        colormap: A name in :data:`COLORMAPS` (``"turbo"``, ``"gray"``) or a callable
            mapping values in ``[0, 1]`` to uint8 RGB ``[..., 3]``.

    """
    values, keep = _depth_and_keep(depth, valid, "colorize_depth")
    if isinstance(colormap, str):
        try:
            colour_map = COLORMAPS[colormap]
        except KeyError:
            raise ValueError(
                f"colorize_depth: unknown colormap {colormap!r}; available: "
                f"{', '.join(sorted(COLORMAPS))} (or pass a callable)"
            ) from None
    elif callable(colormap):
        colour_map = colormap
    else:
        raise TypeError(f"colorize_depth: colormap must be a name or a callable, got {colormap!r}")
    if value_range is None:
        low, high = depth_range(values, keep)
    else:
        try:
            low, high = (float(v) for v in value_range)
        except (TypeError, ValueError):
            raise ValueError(
                f"colorize_depth: value_range must be (low, high), got {value_range!r}"
            ) from None
        if not (np.isfinite(low) and np.isfinite(high) and low <= high):
            raise ValueError(
                f"colorize_depth: value_range must be finite with low <= high, got {value_range!r}"
            )
    picture = np.zeros((*values.shape, 3), dtype=np.uint8)
    picture[...] = INVALID_COLOR
    if not keep.any():
        return picture
    if high > low:
        scaled = np.clip((values[keep].astype(np.float64) - low) / (high - low), 0.0, 1.0)
    else:
        scaled = np.full(int(keep.sum()), 0.5)
    colours = np.asarray(colour_map(scaled))
    if colours.shape != (scaled.size, 3):
        raise ValueError(
            f"colorize_depth: the colour map returned shape {colours.shape} for "
            f"{scaled.size} values; it must return [..., 3] RGB"
        )
    picture[keep] = np.clip(colours, 0, 255).astype(np.uint8)
    return picture


# --------------------------------------------------------------------------------------
# Normals and images
# --------------------------------------------------------------------------------------


def normals_to_rgb(normals: Any, valid: Any = None) -> np.ndarray:
    """Normals ``[3, H, W]`` -> RGB ``[H, W, 3]`` uint8: ``(n + 1) / 2``.

    Each vector is L2-normalised, then channel ``k`` is ``round((n_k + 1) * 127.5)``
    (half up): x to red, y to green, z to blue. In pixcore's camera frame (x right,
    y down, z forward) a surface facing the camera, ``(0, 0, -1)``, is ``(128, 128, 0)``,
    a floor seen from above, ``(0, -1, 0)``, is ``(128, 0, 128)``, a wall facing right,
    ``(1, 0, 0)``, is ``(255, 128, 128)``.

    Pixels where ``valid`` is False, or whose vector is not finite or shorter than
    ``1e-6`` (data sets store zeros for "no normal"), are :data:`INVALID_COLOR` (black),
    which no unit vector maps to (its channels would all be 0, so its components all -1).
    """
    array = _as_array(normals)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(
            f"normals_to_rgb: normals must be [3, H, W] (channels first), got shape {array.shape}"
        )
    vectors = np.moveaxis(array.astype(np.float64), 0, -1)
    finite = np.asarray(np.isfinite(vectors).all(axis=-1))
    vectors = np.where(finite[..., None], vectors, 0.0)
    length = np.linalg.norm(vectors, axis=-1)
    keep = finite & (length > _MIN_NORM)
    if valid is not None:
        keep &= _valid_mask(valid, keep.shape, "normals_to_rgb")
    unit = vectors / np.where(keep, length, 1.0)[..., None]
    picture = _to_uint8((unit + 1.0) * 127.5)
    picture[~keep] = INVALID_COLOR
    return picture


def image_to_rgb(image: Any) -> np.ndarray:
    """An image -> ``[H, W, 3]`` uint8.

    Takes ``[3, H, W]`` or ``[1, H, W]`` (channels first, as in samples), ``[H, W, 3]``
    or ``[H, W]``; uint8, or float in ``[0, 1]`` (clipped, rounded half up).
    """
    array = _as_array(image)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.moveaxis(array, 0, -1)  # channels first, as in samples
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(
            f"image_to_rgb: expected an image [3, H, W] or [H, W, 3], got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        array = _to_uint8(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


# --------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------


def make_grid(
    rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], scale: int = 2, pad: int = 4
) -> Image.Image:
    """Arrange ``[H, W, 3]`` uint8 panels in rows under a header of column ``labels``.

    Every panel is shown at the size of the first one, times ``scale`` (nearest
    neighbour, so class boundaries stay sharp), with ``pad`` white pixels between cells.
    """
    if not rows or not rows[0]:
        raise ValueError("make_grid needs at least one row with at least one panel")
    if scale < 1 or pad < 0:
        raise ValueError(f"make_grid: scale must be >= 1 and pad >= 0, got {scale} and {pad}")
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            if not (isinstance(panel, np.ndarray) and panel.dtype == np.uint8
                    and panel.ndim == 3 and panel.shape[-1] == 3):
                shape = getattr(panel, "shape", None)
                dtype = getattr(panel, "dtype", type(panel).__name__)
                raise ValueError(
                    f"make_grid: panel {c} of row {r} is {dtype} {shape}; panels are "
                    "[H, W, 3] uint8 numpy arrays (see image_to_rgb, colorize_mask, "
                    "colorize_depth, normals_to_rgb)"
                )
    height, width = rows[0][0].shape[:2]
    cell_h, cell_w = height * scale, width * scale
    header = 16
    columns = max(len(r) for r in rows)
    canvas = Image.new(
        "RGB",
        (columns * (cell_w + pad) + pad, header + len(rows) * (cell_h + pad) + pad),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(labels):
        draw.text((pad + c * (cell_w + pad) + 2, 2), label, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            tile = Image.fromarray(panel).resize((cell_w, cell_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (pad + c * (cell_w + pad), header + pad + r * (cell_h + pad)))
    return canvas


def save_grid(
    path: str | Path, rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], scale: int = 2
) -> Path:
    """:func:`make_grid` and write it as PNG (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(rows, labels, scale=scale).save(path)
    return path


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _as_array(value: Any) -> np.ndarray:
    """A numpy view of an array or tensor (tensors are detached and moved to the CPU)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16
            value = value.float()
        return np.asarray(value.numpy())
    return np.asarray(value)


def _spatial(array: np.ndarray, what: str, expected: str) -> np.ndarray:
    """``[H, W]`` from ``[H, W]`` or ``[1, H, W]``."""
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{what} must be {expected} (or [1, H, W]), got shape {array.shape}")
    return array


def _valid_mask(valid: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    mask = _as_array(valid)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.shape != shape:
        raise ValueError(f"{what}: valid has shape {mask.shape}, the map has {shape}")
    return mask.astype(bool)


def _depth_and_keep(depth: Any, valid: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    values = _spatial(_as_array(depth), f"{what}: depth", "[H, W] depth")
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise ValueError(f"{what}: depth must be a real-valued map, got dtype {values.dtype}")
    values = values.astype(np.float64)
    keep = np.isfinite(values) & (values > 0)
    if valid is not None:
        keep &= _valid_mask(valid, values.shape, what)
    return values, keep


def _unit_interval(values: Any) -> np.ndarray:
    t = np.asarray(values, dtype=np.float64)
    return np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round half up and clip to ``[0, 255]``."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def _pack(colours: np.ndarray) -> np.ndarray:
    c = colours.astype(np.int64)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def _check_color(colour: Any, what: str) -> Color:
    try:
        r, g, b = (int(v) for v in colour)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an (r, g, b) triple of ints, got {colour!r}") from None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"{what} channels must be in [0, 255], got {colour!r}")
    return r, g, b


def _free_color(colours: np.ndarray) -> Color:
    """The first of VOID_COLOR, white and black that no class colour equals."""
    used = set(_pack(colours).tolist())
    for candidate in (VOID_COLOR, (255, 255, 255), (0, 0, 0)):
        if _pack(np.array([candidate]))[0] not in used:
            return candidate
    raise ValueError(
        "colorize_mask: the palette uses the void colour, white and black; pass "
        "invalid_color=(r, g, b) with a colour that no class uses"
    )
