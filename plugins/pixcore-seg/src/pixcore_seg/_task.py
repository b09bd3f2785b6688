"""The semantic segmentation task."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np
import pixcore
import torch
from pixcore.targets import DEFAULT_IGNORE_INDEX, ClassMask
from pydantic import Field
from torch import Tensor

from pixcore_seg._palette import colorize

__all__ = ["SegmentationTask"]


class SegmentationTask(pixcore.Task):
    """Per-pixel classification into ``num_classes`` classes.

    * prediction: raw logits ``[B, num_classes, H, W]`` (``decode`` is the identity);
    * target: a :class:`~pixcore.targets.ClassMask` under ``target_key``; pixels equal to
      ``ignore_index`` are not scored;
    * validity: none by default (``valid_key=None``): the validity mask of a sample says
      where *depth and normals* are defined, while a class is defined everywhere it is
      labelled (a window has a class but no depth);
    * defaults: head ``fpn``, loss ``cross_entropy``, metrics ``("miou",)``; the losses
      ``dice``, ``focal``, ``lovasz`` and ``ohem_cross_entropy`` take the same inputs;
    * ``context()`` offers ``num_classes`` (which checks the length of per-class lists
      such as ``class_weights`` and ``alpha``, and sizes the confusion matrix of ``miou``)
      and ``ignore_index`` to heads, losses and metrics that declare them.

    Args:
        num_classes: Number of classes; the head outputs one logit per class.
        ignore_index: Target value of unlabelled pixels (never scored).
        target_key: Sample key of the class mask.
        valid_key: Optional boolean sample key of pixels to score. None (the default):
            every labelled pixel counts. A class is defined where depth is not (windows),
            so the depth validity mask is not used unless asked for.

    """

    target_kind = ClassMask
    default_head = "fpn"
    default_loss = "cross_entropy"
    default_metrics = ("miou",)

    def __init__(
        self,
        num_classes: Annotated[int, Field(gt=0)],
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        target_key: str = "semseg",
        valid_key: str | None = None,
    ) -> None:
        super().__init__(target_key, valid_key)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    @property
    def out_channels(self) -> int:
        return self.num_classes

    def context(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index}

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        """Class map -> VOC-style colours; ignored and invalid pixels black.

        ``value`` is logits ``[C, H, W]`` (float: the argmax is shown) or class ids
        ``[H, W]`` / ``[1, H, W]`` (integer). Class ``c`` has VOC colour ``c + 1``.
        """
        value = value.detach()
        if value.is_floating_point():
            if value.ndim != 3:
                raise ValueError(
                    "segmentation logits to visualise have shape [C, H, W], got "
                    f"{tuple(value.shape)}"
                )
            ids = value.argmax(0)
        else:
            ids = value[0] if value.ndim == 3 and value.shape[0] == 1 else value
            if ids.ndim != 2:
                raise ValueError(
                    "segmentation class ids to visualise have shape [H, W], got "
                    f"{tuple(value.shape)}"
                )
        keep = ids != self.ignore_index
        if valid is not None:
            keep = keep & valid.detach().to(keep.device).bool()
        return colorize(ids.cpu().numpy(), self.num_classes, keep.cpu().numpy())

    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        """One-hot logits ``[num_classes]`` of the most frequent class over scored pixels."""
        counts = torch.zeros(self.num_classes, dtype=torch.int64)
        for target, valid in targets:
            target = target.reshape(valid.shape)
            keep = valid.bool() & (target != self.ignore_index)
            keep &= (target >= 0) & (target < self.num_classes)
            counts += torch.bincount(target[keep].cpu(), minlength=self.num_classes)
        if int(counts.sum()) == 0:
            raise ValueError(
                "segmentation baseline: no labelled valid pixel in the targets; check "
                "`ignore_index` and `target_key`"
            )
        logits = torch.zeros(self.num_classes)
        logits[int(counts.argmax())] = 1.0
        return logits
