"""Pixel selection shared by the depth losses, metric and task."""

from __future__ import annotations

from torch import Tensor

__all__ = ["as_depth_map", "usable", "select"]


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


def select(prediction: Tensor, target: Tensor, valid: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """The predicted and true depths of the usable pixels, as two flat tensors.

    Pixels are selected *before* any arithmetic, so that whatever invalid pixels hold
    (zeros, NaN) never reaches a value or a gradient.
    """
    prediction = as_depth_map(prediction, what, "prediction")
    target = as_depth_map(target, what, "target")
    if prediction.shape != target.shape or target.shape != valid.shape:
        raise ValueError(
            f"{what}: prediction {tuple(prediction.shape)}, target {tuple(target.shape)} and "
            f"valid {tuple(valid.shape)} must cover the same [B, H, W] pixels"
        )
    keep = usable(target, valid)
    return prediction[keep], target[keep]
