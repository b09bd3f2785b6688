"""Colours for class maps: the Pascal VOC palette, extended to any number of classes."""

from __future__ import annotations

import numpy as np

__all__ = ["colorize", "voc_palette"]


def voc_palette(num_colors: int) -> np.ndarray:
    """The first ``num_colors`` colours of the Pascal VOC palette, ``[num_colors, 3]`` uint8.

    Colour ``i`` spreads the bits of ``i`` over the three channels, most significant bit
    first (bit 0 -> red, bit 1 -> green, bit 2 -> blue, repeated for the next 3 bits one
    position lower), which is how the VOC development kit builds its colour map. The
    colours are distinct for every ``i < 2**24``; colour 0 is black.
    """
    if num_colors < 0:
        raise ValueError(f"num_colors must be non-negative, got {num_colors}")
    ids = np.arange(num_colors, dtype=np.int64)
    palette = np.zeros((num_colors, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def colorize(ids: np.ndarray, num_classes: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Class ids ``[H, W]`` -> RGB ``[H, W, 3]`` uint8.

    Class ``c`` gets VOC colour ``c + 1``, so that black is never a class colour: pixels
    outside ``[0, num_classes)`` (the ignore index) and pixels where ``keep`` is False
    are black.
    """
    palette = voc_palette(num_classes + 1)[1:]
    ids = np.asarray(ids)
    inside = (ids >= 0) & (ids < num_classes)
    if keep is not None:
        inside &= np.asarray(keep, dtype=bool)
    picture = np.zeros((*ids.shape, 3), dtype=np.uint8)
    picture[inside] = palette[ids[inside]]
    return picture
