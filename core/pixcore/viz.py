"""Pictures: a labelled grid of per-sample panels (input | target | prediction per task)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["image_to_rgb", "make_grid", "save_grid"]


def image_to_rgb(image: np.ndarray) -> np.ndarray:
    """``[3, H, W]`` uint8 or float in [0, 1] -> ``[H, W, 3]`` uint8."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


def make_grid(
    rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], scale: int = 2, pad: int = 4
) -> Image.Image:
    """Arrange ``[H, W, 3]`` uint8 panels in rows under a header of column ``labels``."""
    if not rows:
        raise ValueError("make_grid needs at least one row of panels")
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
    """:func:`make_grid` and write it as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(rows, labels, scale=scale).save(path)
    return path
