"""Mean intersection-over-union from a streamed confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import pixcore
from pixcore.targets import DEFAULT_IGNORE_INDEX
from pixcore_seg._common import as_class_ids, check_class_range

__all__ = ["MeanIoU", "MeanIoUParams"]


class MeanIoUParams(BaseModel):
    """Parameters of the ``miou`` metric (both are given by the segmentation task)."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(gt=0)
    ignore_index: int = DEFAULT_IGNORE_INDEX


class MeanIoU(pixcore.Metric):
    r"""Intersection over union per class, their mean, and pixel accuracies.

    The state is one confusion matrix :math:`N \in \mathbb{N}^{C \times C}` for the whole
    evaluation (:math:`N_{gp}` counts pixels of true class :math:`g` predicted as
    :math:`p`), accumulated with ``torch.bincount`` (memory :math:`O(C^2)`) over pixels
    that are valid and not ``ignore_index``. The prediction is the argmax of logits
    ``[B, C, H, W]``, or class ids ``[B, H, W]``. With :math:`TP_c = N_{cc}`,
    :math:`G_c = \sum_p N_{cp}` (ground truth), :math:`P_c = \sum_g N_{gc}` (predicted):

    * ``iou/<c>`` :math:`= TP_c / (G_c + P_c - TP_c)`; NaN when the union is zero, i.e.
      class :math:`c` is absent from both ground truth and prediction over the *whole*
      evaluation;
    * ``miou``: the mean of ``iou/<c>`` over classes with a non-zero union (the
      absent-class policy named in :attr:`protocol`: such classes are left out);
    * ``miou_all_classes``: the mean over all :math:`C` classes, zero-union classes
      counted as 0;
    * ``pixel_acc`` :math:`= \sum_c TP_c / \sum_c G_c`;
    * ``mean_acc``: the mean of :math:`TP_c / G_c` over classes present in the ground
      truth.

    Pooling over the whole evaluation (rather than averaging per image) is the protocol
    of Pascal VOC, Cityscapes and ADE20K (Everingham et al. 2010).
    """

    protocol: ClassVar[str] = "confusion-pooled/nanmean-nonzero-union"

    def __init__(self, num_classes: int, ignore_index: int = DEFAULT_IGNORE_INDEX) -> None:
        super().__init__()
        params = MeanIoUParams(num_classes=num_classes, ignore_index=ignore_index)
        self.num_classes = params.num_classes
        self.ignore_index = params.ignore_index
        confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.add_state("confusion", confusion)

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        what = "miou"
        target = as_class_ids(target, valid, what)
        if prediction.is_floating_point():
            if prediction.ndim != 4 or prediction.shape[1] != self.num_classes:
                raise ValueError(
                    f"{what}: logits must be [B, {self.num_classes}, H, W], got "
                    f"{tuple(prediction.shape)}"
                )
            predicted = prediction.argmax(1)
        else:
            predicted = prediction[:, 0] if prediction.ndim == 4 else prediction
        if predicted.shape != target.shape:
            raise ValueError(
                f"{what}: prediction {tuple(prediction.shape)} does not match the target "
                f"{tuple(target.shape)}"
            )
        keep = valid.bool() & (target != self.ignore_index)
        check_class_range(target, keep, self.num_classes, self.ignore_index, what)
        c = self.num_classes
        predicted = predicted[keep].long()
        if bool(((predicted < 0) | (predicted >= c)).any()):
            raise ValueError(
                f"{what}: predicted class ids must lie in [0, {c}), got "
                f"[{int(predicted.min())}, {int(predicted.max())}]"
            )
        pairs = target[keep].long() * c + predicted
        counts = torch.bincount(pairs, minlength=c * c).reshape(c, c)
        confusion = self._state["confusion"]
        if confusion.device != counts.device:
            confusion = confusion.to(counts.device)
        self._state["confusion"] = confusion + counts

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        confusion = state["confusion"].double().cpu()
        tp = confusion.diagonal()
        gt = confusion.sum(1)
        predicted = confusion.sum(0)
        union = gt + predicted - tp
        present = union > 0
        iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        results = {f"iou/{c}": float(iou[c]) for c in range(self.num_classes)}
        nan = float("nan")
        results["miou"] = float(iou[present].mean()) if bool(present.any()) else nan
        results["miou_all_classes"] = float(torch.nan_to_num(iou, nan=0.0).mean())
        total = gt.sum()
        results["pixel_acc"] = float(tp.sum() / total) if total > 0 else nan
        labelled = gt > 0
        if bool(labelled.any()):
            results["mean_acc"] = float((tp[labelled] / gt[labelled]).mean())
        else:
            results["mean_acc"] = nan
        return results
