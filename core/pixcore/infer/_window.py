"""Sliding-window inference: predict overlapping windows and stitch them with weights.

An image larger than the window is covered by windows ``stride = round(window * (1 -
overlap))`` apart along each axis, the last one flush with the far border (as in
MMSegmentation's ``slide_inference``), so every pixel is covered and no window leaves
the image. An image smaller than the window along an axis is padded up to the window
(reflected, or replicated where the image is too small to reflect) and the outputs
cropped back, so that the model always sees inputs of the window's size.

Each window's outputs are multiplied by a weight map and summed; the sum is divided by
the summed weights, so the stitched value of a pixel is the weighted mean of the values
that the windows covering it predicted:

* ``"uniform"``: every pixel of a window weighs 1 (a plain mean of the overlapping
  predictions);
* ``"gaussian"``: ``w(y, x) = exp(-(y - cy)^2 / (2 sy^2) - (x - cx)^2 / (2 sx^2))`` with
  the centre ``(cy, cx) = ((h - 1) / 2, (w - 1) / 2)`` and ``s = window / 8``, peak 1
  (the importance weighting of nnU-Net, Isensee et al., Nature Methods 2021): a window's
  border, where the model sees the least context, counts least. Every weight is
  positive, so a pixel covered by a single window's corner still gets that window's
  value.

Averaging is linear, so the callable passed to :func:`sliding_window` must return values
that may be averaged (probabilities rather than logits, vectors to be renormalised
afterwards); :class:`pixcore.infer.Predictor` takes care of that per target kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pixcore._errors import PixcoreError

__all__ = [
    "Weighting",
    "check_window",
    "sliding_window",
    "window_positions",
    "window_weight_sum",
    "window_weights",
]

Weighting = Literal["uniform", "gaussian"]
WEIGHTINGS: tuple[str, ...] = ("uniform", "gaussian")
#: Standard deviation of the Gaussian weights, as a fraction of the window size.
GAUSSIAN_SIGMA = 1.0 / 8.0


def check_window(window: tuple[int, int], overlap: float, weighting: str = "uniform") -> tuple[int, int]:
    """Validate sliding-window settings; return ``window`` as a pair of ints."""
    pair = tuple(window)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise PixcoreError(
            f"window={window!r} is not a window size; give (height, width) as two positive "
            "integers, e.g. --window 512 512"
        )
    if not isinstance(overlap, (int, float)) or not 0.0 <= float(overlap) < 1.0:
        raise PixcoreError(
            f"overlap={overlap!r} is out of range; it is the fraction of a window shared with "
            "its neighbour, 0 <= overlap < 1 (e.g. 0.5)"
        )
    if weighting not in WEIGHTINGS:
        raise PixcoreError(
            f"window weighting {weighting!r} is unknown; choose one of {', '.join(WEIGHTINGS)}"
        )
    return int(pair[0]), int(pair[1])


def _starts(length: int, window: int, overlap: float) -> list[int]:
    if length <= window:
        return [0]
    stride = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, length - window, stride))
    if not starts or starts[-1] != length - window:
        starts.append(length - window)
    return starts


def window_positions(
    size: tuple[int, int], window: tuple[int, int], overlap: float = 0.5
) -> list[tuple[int, int]]:
    """Top-left corners ``(top, left)`` of the windows over an image of ``size``.

    ``size`` is the (padded) image size, at least the window along each axis; rows of
    windows top to bottom, each left to right.
    """
    window = check_window(window, overlap)
    tops = _starts(size[0], window[0], overlap)
    lefts = _starts(size[1], window[1], overlap)
    return [(top, left) for top in tops for left in lefts]


def window_weights(
    window: tuple[int, int], weighting: Weighting = "gaussian", *, device: torch.device | str | None = None
) -> Tensor:
    """The weight map ``[h, w]`` (float32) of one window; see the module docstring."""
    h, w = check_window(window, 0.0, weighting)
    if weighting == "uniform":
        return torch.ones(h, w, device=device)

    def axis(n: int) -> Tensor:
        centre, sigma = (n - 1) / 2.0, GAUSSIAN_SIGMA * n
        position = torch.arange(n, dtype=torch.float64)
        return torch.exp(-((position - centre) ** 2) / (2.0 * sigma * sigma))

    weights = axis(h)[:, None] * axis(w)[None, :]
    return (weights / weights.max()).to(torch.float32).to(device)


def _padded_size(size: tuple[int, int], window: tuple[int, int]) -> tuple[int, int]:
    return max(size[0], window[0]), max(size[1], window[1])


def window_weight_sum(
    size: tuple[int, int], window: tuple[int, int], overlap: float = 0.5,
    weighting: Weighting = "gaussian",
) -> Tensor:
    """The summed window weights per pixel ``[H, W]`` of an image of ``size``.

    Stitching divides by it; every entry is positive (every pixel is covered).
    """
    padded = _padded_size(size, check_window(window, overlap, weighting))
    weights = window_weights(window, weighting)
    total = torch.zeros(padded)
    for top, left in window_positions(padded, window, overlap):
        total[top : top + window[0], left : left + window[1]] += weights
    return total[: size[0], : size[1]]


def _pad_to(image: Tensor, size: tuple[int, int]) -> Tensor:
    height, width = image.shape[-2:]
    pad_h, pad_w = size[0] - height, size[1] - width
    if pad_h == 0 and pad_w == 0:
        return image
    # Reflection keeps image statistics at the border (as the model's own padding does);
    # it needs the padding to be smaller than the image, otherwise the border is repeated.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    padded = F.pad(image.float(), (0, pad_w, 0, pad_h), mode=mode)
    return padded.round().to(image.dtype) if not image.is_floating_point() else padded.to(image.dtype)


def sliding_window(
    predict: Callable[[Tensor], Mapping[str, Tensor]],
    image: Tensor,
    window: tuple[int, int],
    overlap: float = 0.5,
    weighting: Weighting = "gaussian",
) -> dict[str, Tensor]:
    """Run ``predict`` on overlapping windows of ``image`` and stitch the outputs.

    Args:
        predict: ``[B, 3, h, w] -> {name: [B, C, h, w]}`` for a window of size ``(h, w)``;
            its values are averaged where windows overlap (see the module docstring).
        image: ``[B, 3, H, W]``, any size; padded up to the window where it is smaller.
        window: ``(h, w)`` of a window.
        overlap: Fraction of a window shared with its neighbour, in ``[0, 1)``.
        weighting: ``"uniform"`` or ``"gaussian"`` weights within a window.

    Returns:
        ``{name: [B, C, H, W]}`` float32: per pixel, the weighted mean of the windows'
        values.

    """
    window = check_window(window, overlap, weighting)
    height, width = int(image.shape[-2]), int(image.shape[-1])
    padded_size = _padded_size((height, width), window)
    padded = _pad_to(image, padded_size)
    weights = window_weights(window, weighting, device=image.device)
    sums: dict[str, Tensor] = {}
    total = torch.zeros(padded_size, device=image.device)
    for top, left in window_positions(padded_size, window, overlap):
        rows, cols = slice(top, top + window[0]), slice(left, left + window[1])
        outputs = predict(padded[..., rows, cols])
        for name, value in outputs.items():
            if tuple(value.shape[-2:]) != window:
                raise PixcoreError(
                    f"sliding window: output {name!r} of a {window[0]}x{window[1]} window has size "
                    f"{tuple(value.shape[-2:])}; the model must predict at input resolution"
                )
            if name not in sums:
                sums[name] = torch.zeros(
                    (*value.shape[:-2], *padded_size), dtype=torch.float32, device=value.device
                )
            sums[name][..., rows, cols] += value.float() * weights
        total[rows, cols] += weights
    return {name: (value / total)[..., :height, :width] for name, value in sums.items()}
