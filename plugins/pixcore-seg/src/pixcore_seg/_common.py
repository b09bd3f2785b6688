"""Shape handling shared by the segmentation loss and metric."""

from __future__ import annotations

from torch import Tensor

__all__ = ["as_class_ids", "check_class_range"]


def as_class_ids(target: Tensor, valid: Tensor, what: str) -> Tensor:
    """A class-mask batch as ``[B, H, W]`` integers (``[B, 1, H, W]`` is accepted)."""
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if target.is_floating_point() or tuple(target.shape) != tuple(valid.shape):
        raise ValueError(
            f"{what}: the target must be integer class ids of shape {tuple(valid.shape)} "
            f"(the valid mask's), got {target.dtype} {tuple(target.shape)}"
        )
    return target


def check_class_range(
    target: Tensor, keep: Tensor, num_classes: int, ignore_index: int, what: str
) -> None:
    """Raise a clear error if a scored pixel's class id is outside ``[0, num_classes)``."""
    bad = keep & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise ValueError(
            f"{what}: class id {value} is outside [0, {num_classes}); set the task's "
            f"`num_classes` to cover it, or mark unlabelled pixels with the ignore index "
            f"({ignore_index})"
        )
