"""Colours for class maps, drawn with :mod:`pixcore.viz`."""

from __future__ import annotations

import numpy as np
from pixcore.viz import class_palette, colorize_mask

__all__ = ["colorize", "voc_palette"]


def voc_palette(num_colors: int) -> np.ndarray:
    """The first ``num_colors`` colours of the Pascal VOC palette, ``[num_colors, 3]`` uint8.

    The same colours as :func:`pixcore.viz.class_palette`: colour 0 is black, 1 is
    ``(128, 0, 0)``, 15 is ``(192, 128, 128)``; distinct for every ``i < 2**24``.
    """
    if num_colors < 0:
        raise ValueError(f"num_colors must be non-negative, got {num_colors}")
    return class_palette(num_colors)


def colorize(ids: np.ndarray, num_classes: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Class ids ``[H, W]`` -> RGB ``[H, W, 3]`` uint8.

    Class ``c`` gets VOC colour ``c + 1``, so that black is never a class colour: pixels
    outside ``[0, num_classes)`` (the ignore index) and pixels where ``keep`` is False
    are black. Drawn by :func:`pixcore.viz.colorize_mask` with that shifted palette.
    """
    return colorize_mask(
        ids, num_classes, ignore_index=None, valid=keep,
        palette=class_palette(num_classes + 1)[1:], invalid_color=(0, 0, 0),
    )
