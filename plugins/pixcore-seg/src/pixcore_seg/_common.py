"""Shape handling and class-id helpers shared by the segmentation losses and metric."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["argmax_classes", "as_class_ids", "check_class_range", "prepare_logits"]


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


def prepare_logits(
    prediction: Tensor, target: Tensor, valid: Tensor, ignore_index: int, what: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Check a loss's inputs; return ``(logits, safe_target, keep)``.

    * ``logits``: the prediction as floating ``[B, C, H, W]`` (half precision is promoted
      to float32, so that softmax and sums are taken in single precision at least);
    * ``keep``: boolean ``[B, H, W]``, ``valid & (target != ignore_index)``;
    * ``safe_target``: ``int64 [B, H, W]``, the target where kept and 0 elsewhere, so that
      it can index the class dimension everywhere (the values outside ``keep`` carry no
      meaning and must be masked by the caller).

    Raises ``ValueError`` on shape mismatches and on kept class ids outside ``[0, C)``.
    """
    target = as_class_ids(target, valid, what)
    if (
        prediction.ndim != 4
        or not prediction.is_floating_point()
        or (prediction.shape[0], *prediction.shape[2:]) != tuple(target.shape)
    ):
        raise ValueError(
            f"{what}: the prediction must be floating logits [B, C, H, W] matching the target "
            f"{tuple(target.shape)}, got {prediction.dtype} {tuple(prediction.shape)}"
        )
    keep = valid.bool() & (target != ignore_index)
    check_class_range(target, keep, prediction.shape[1], ignore_index, what)
    safe_target = torch.where(keep, target, torch.zeros_like(target)).long()
    if prediction.dtype in (torch.float16, torch.bfloat16):
        prediction = prediction.float()
    return prediction, safe_target, keep


def argmax_classes(logits: Tensor, dtype: torch.dtype = torch.int64) -> Tensor:
    """``logits.argmax(1)`` of ``[B, C, H, W]`` logits as ``[B, H, W]`` of ``dtype``.

    Equal to :func:`torch.argmax` (the first maximum wins; a NaN counts as the maximum).
    On the CPU, an argmax over the non-contiguous class dimension reads memory with a
    stride of ``H * W`` elements; a running maximum over the ``C`` contiguous class planes
    gives the same ids two to three times faster. Other devices use :func:`torch.argmax`.
    """
    if logits.device.type != "cpu" or logits.shape[1] == 1:
        return logits.argmax(1).to(dtype)
    best = logits[:, 0].clone()
    ids = torch.zeros(best.shape, dtype=dtype, device=logits.device)
    better = torch.empty(best.shape, dtype=torch.bool, device=logits.device)
    for c in range(1, logits.shape[1]):
        plane = logits[:, c]
        torch.gt(plane, best, out=better)  # strict: ties keep the first maximum
        ids.masked_fill_(better, c)
        torch.maximum(best, plane, out=best)  # NaN propagates into `best`
    if bool(best.isnan().any()):
        # NaN never compares greater, so the planes after the first NaN were skipped; torch's
        # argmax returns the NaN's index. Rare (a diverged model): take the slow, exact path.
        return logits.argmax(1).to(dtype)
    return ids
