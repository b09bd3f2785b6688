"""Pixel selection shared by the normals losses, metric and task."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MIN_NORM", "select", "usable"]

#: A ground-truth vector shorter than this is "no normal" (data sets store zeros).
MIN_NORM = 1e-6


def usable(target: Tensor, valid: Tensor) -> Tensor:
    """``[B, H, W]``: valid pixels whose target is a finite vector of non-zero length."""
    finite = target.isfinite().all(dim=1)
    length = torch.where(finite.unsqueeze(1), target, torch.zeros_like(target)).norm(dim=1)
    return valid.bool() & finite & (length > MIN_NORM)


def select(prediction: Tensor, target: Tensor, valid: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Unit prediction and target vectors ``[N, 3]`` of the usable pixels.

    Pixels are selected *before* normalising, so that whatever invalid pixels hold
    (zeros, NaN) never reaches a value or a gradient. Both sides are L2-normalised
    (eps-safe), so the result does not depend on vector lengths.
    """
    if prediction.ndim != 4 or prediction.shape[1] != 3 or prediction.shape != target.shape:
        raise ValueError(
            f"{what}: prediction and target must both be [B, 3, H, W] normal maps, got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    if tuple(valid.shape) != (target.shape[0], *target.shape[2:]):
        raise ValueError(
            f"{what}: valid {tuple(valid.shape)} does not match the normal maps "
            f"{tuple(target.shape)}"
        )
    keep = usable(target, valid)
    p = prediction.permute(0, 2, 3, 1)[keep]
    t = target.permute(0, 2, 3, 1)[keep]
    p = torch.nn.functional.normalize(_at_least_float32(p), dim=1, eps=1e-12)
    t = torch.nn.functional.normalize(_at_least_float32(t), dim=1, eps=1e-12)
    return p, t


def _at_least_float32(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
