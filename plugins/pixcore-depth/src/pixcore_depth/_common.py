"""Pixel selection and per-image alignment shared by the depth losses, metric and task."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "Space",
    "align",
    "as_depth_map",
    "dense",
    "masked_median",
    "scale_and_shift",
    "scale_only",
    "select",
    "to_space",
    "usable",
]

#: Where a least-squares alignment is fitted: on depth itself or on its inverse.
Space = Literal["depth", "disparity"]


def as_depth_map(value: Tensor, what: str, name: str) -> Tensor:
    """A depth batch as ``[B, H, W]`` (``[B, 1, H, W]`` and ``[B, H, W]`` are accepted)."""
    if value.ndim == 4 and value.shape[1] == 1:
        return value[:, 0]
    if value.ndim == 3:
        return value
    raise ValueError(
        f"{what}: the {name} must be depth maps [B, 1, H, W], got {tuple(value.shape)}"
    )


def usable(target: Tensor, valid: Tensor) -> Tensor:
    """Pixels that are marked valid and hold a finite, positive depth."""
    return valid.bool() & target.isfinite() & (target > 0)


def _maps(
    prediction: Tensor, target: Tensor, valid: Tensor, what: str
) -> tuple[Tensor, Tensor, Tensor]:
    prediction = as_depth_map(prediction, what, "prediction")
    target = as_depth_map(target, what, "target")
    if prediction.shape != target.shape or target.shape != valid.shape:
        raise ValueError(
            f"{what}: prediction {tuple(prediction.shape)}, target {tuple(target.shape)} and "
            f"valid {tuple(valid.shape)} must cover the same [B, H, W] pixels"
        )
    return prediction, target, valid


def select(prediction: Tensor, target: Tensor, valid: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """The predicted and true depths of the usable pixels, as two flat tensors.

    Pixels are selected *before* any arithmetic, so that whatever invalid pixels hold
    (zeros, NaN) never reaches a value or a gradient.
    """
    prediction, target, valid = _maps(prediction, target, valid, what)
    keep = usable(target, valid)
    return prediction[keep], target[keep]


def dense(
    prediction: Tensor, target: Tensor, valid: Tensor, what: str, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """``(prediction, target, keep)`` as ``[B, H, W]`` maps for per-image computations.

    ``keep`` marks the usable pixels; elsewhere both maps hold 1.0, so that any
    arithmetic on them (a logarithm, an inverse) stays finite and the gradient reaching
    an unusable pixel of the prediction is exactly zero.
    """
    prediction, target, valid = _maps(prediction, target, valid, what)
    keep = usable(target, valid)
    one = torch.ones((), dtype=dtype, device=prediction.device)
    p = torch.where(keep, prediction.to(dtype), one)
    y = torch.where(keep, target.to(dtype), one)
    return p, y, keep


def to_space(depth: Tensor, space: Space) -> Tensor:
    """Depth itself, or its inverse (disparity up to a constant) for ``"disparity"``."""
    return depth if space == "depth" else depth.reciprocal()


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def scale_and_shift(x: Tensor, z: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per-image least squares :math:`\min_{s,t} \sum_{i \in keep} (s x_i + t - z_i)^2`.

    ``x``, ``z`` and ``keep`` are ``[B, ...]``; returns ``s`` and ``t`` of shape ``[B]``.
    Solved in centred form, :math:`s = \sum (x - \bar{x})(z - \bar{z}) / \sum (x -
    \bar{x})^2`, :math:`t = \bar{z} - s \bar{x}`, which is the normal-equation solution
    without its cancellation. An image whose kept ``x`` are constant (to rounding) has no
    unique solution: it gets :math:`s = 0, t = \bar{z}`, the best constant; an image with
    no kept pixel gets ``s = t = 0``. Differentiable in ``x`` (and ``z``).
    """
    x, z, m = _flat(x), _flat(z), _flat(keep).to(x.dtype)
    n = m.sum(1)
    safe_n = n.clamp(min=1.0)
    x_mean = (m * x).sum(1) / safe_n
    z_mean = (m * z).sum(1) / safe_n
    xc = m * (x - x_mean[:, None])
    zc = m * (z - z_mean[:, None])
    var = xc.square().sum(1)
    cov = (xc * zc).sum(1)
    # Constant x up to rounding: the spread is below a few ulps of the largest |x|.
    ulp = torch.finfo(x.dtype).eps * 8.0
    largest = (m * x.abs()).amax(1)
    degenerate = var <= n * (ulp * largest).square()
    s = torch.where(degenerate, torch.zeros_like(var), cov / torch.where(degenerate, 1.0, var))
    t = z_mean - s * x_mean
    return s, t


def scale_only(x: Tensor, z: Tensor, keep: Tensor) -> Tensor:
    r"""Per-image least squares :math:`\min_s \sum_{i \in keep} (s x_i - z_i)^2`, ``[B]``.

    :math:`s = \sum x z / \sum x^2`; 0 for an image with no kept pixel.
    """
    x, z, m = _flat(x), _flat(z), _flat(keep).to(x.dtype)
    xx = (m * x.square()).sum(1)
    xz = (m * x * z).sum(1)
    empty = xx <= 0
    return torch.where(empty, torch.zeros_like(xx), xz / torch.where(empty, 1.0, xx))


def masked_median(values: Tensor, keep: Tensor) -> Tensor:
    """Per-image median of the kept ``values``, ``[B]``, as :func:`numpy.median` gives it.

    An even count gives the mean of the two middle values; an image with no kept value
    gives NaN.
    """
    v = _flat(values)
    m = _flat(keep)
    n = m.sum(1)
    ordered = torch.where(m, v, torch.full_like(v, torch.inf)).sort(dim=1).values
    low = ((n - 1).clamp(min=0) // 2).unsqueeze(1)
    high = (n // 2).clamp(max=v.shape[1] - 1).unsqueeze(1)
    median = 0.5 * (ordered.gather(1, low) + ordered.gather(1, high)).squeeze(1)
    return torch.where(n > 0, median, torch.full_like(median, torch.nan))


def align(
    prediction: Tensor, target: Tensor, keep: Tensor, space: Space
) -> tuple[Tensor, Tensor]:
    """Per image, the prediction aligned by least-squares scale and shift in ``space``.

    Returns ``(aligned, true)``: ``s * f(prediction) + t`` and ``f(target)``, with ``f``
    the identity (``"depth"``) or the inverse (``"disparity"``), both ``[B, H, W]``.
    """
    x, z = to_space(prediction, space), to_space(target, space)
    s, t = scale_and_shift(x, z, keep)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return s.view(shape) * x + t.view(shape), z
