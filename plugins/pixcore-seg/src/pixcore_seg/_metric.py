"""Intersection over union and pixel accuracies from a streamed confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

import pixcore
import torch
from pixcore.targets import DEFAULT_IGNORE_INDEX
from pydantic import Field
from torch import Tensor

from pixcore_seg._common import argmax_classes, as_class_ids, check_class_range

__all__ = ["AverageOver", "MeanIoU"]

#: Which classes the class means (``miou``, ``mean_acc``) average over.
AverageOver = Literal["nonzero_union", "present_in_target", "all_classes"]

#: The protocol name recorded with the results of each policy.
PROTOCOLS: dict[str, str] = {
    "nonzero_union": "confusion-pooled/nanmean-nonzero-union",
    "present_in_target": "confusion-pooled/mean-present-in-target",
    "all_classes": "confusion-pooled/mean-all-classes-absent-as-0",
}


class MeanIoU(pixcore.Metric):
    r"""Intersection over union per class, its class means, and pixel accuracies.

    The state is one confusion matrix :math:`N \in \mathbb{N}^{C \times C}` (int64) for
    the whole evaluation: :math:`N_{gp}` counts the scored pixels of true class :math:`g`
    predicted as :math:`p`. Scored pixels are valid and not ``ignore_index``. Each update
    adds ``bincount(g * C + p)`` over the batch, so memory is :math:`O(C^2)` plus
    :math:`O(BHW)` for the batch, never :math:`O(BHW \cdot C)`. The prediction is the argmax
    of logits ``[B, C, H, W]``, or class ids ``[B, H, W]`` / ``[B, 1, H, W]``.

    With :math:`TP_c = N_{cc}`, :math:`G_c = \sum_p N_{cp}` (ground-truth pixels),
    :math:`P_c = \sum_g N_{gc}` (predicted pixels) and :math:`U_c = G_c + P_c - TP_c`
    (union), the results are

    * ``iou/<c>`` :math:`= TP_c / U_c`, NaN when :math:`U_c = 0` (class :math:`c` in
      neither the ground truth nor the predictions of the whole evaluation);
    * ``miou``: the mean of :math:`TP_c / U_c` over the classes chosen by
      ``average_over``:

      - ``"nonzero_union"`` (default): classes with :math:`U_c > 0`; the others are NaN
        and left out (the ``nanmean`` of mmsegmentation, Keras ``MeanIoU``,
        torchmetrics' ``MulticlassJaccardIndex(average="macro")``);
      - ``"present_in_target"``: classes with :math:`G_c > 0`; a class that is only
        predicted is left out although its IoU is 0 (detectron2's ``SemSegEvaluator``);
      - ``"all_classes"``: all :math:`C` classes, :math:`U_c = 0` counting as 0 (the
        mean of torchmetrics' ``average=None`` results);

    * ``miou_all_classes``: the ``"all_classes"`` mean, whatever the policy;
    * ``pixel_acc`` :math:`= \sum_c TP_c / \sum_c G_c`;
    * ``mean_acc``: the mean of the class accuracies (recalls) :math:`TP_c / G_c` over the
      classes with :math:`G_c > 0`, or over all classes (:math:`G_c = 0` counting as 0)
      with ``"all_classes"``;
    * ``fwiou`` (frequency-weighted IoU) :math:`= \sum_c G_c\,\mathrm{IoU}_c / \sum_c G_c`
      (torchmetrics' ``average="weighted"``).

    Every mean is NaN when no pixel was scored. Pooling the counts over the whole
    evaluation, not averaging per image, is the protocol of Pascal VOC (Everingham et al.
    2010), Cityscapes and ADE20K; :attr:`protocol` names it together with the absent-class
    policy, e.g. ``confusion-pooled/nanmean-nonzero-union``. The per-class keys have no
    entry in :attr:`higher_is_better`, so multi-task summaries use the class means only.

    Args:
        num_classes: Number of classes (given by the task).
        ignore_index: Target value of unlabelled pixels, never scored (given by the task).
        average_over: Absent-class policy of the class means: ``"nonzero_union"``,
            ``"present_in_target"`` or ``"all_classes"`` (see above).

    """

    protocol: ClassVar[str] = PROTOCOLS["nonzero_union"]
    higher_is_better: ClassVar[Mapping[str, bool]] = {
        "miou": True,
        "miou_all_classes": True,
        "pixel_acc": True,
        "mean_acc": True,
        "fwiou": True,
    }

    def __init__(
        self,
        num_classes: Annotated[int, Field(gt=0)],
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        average_over: AverageOver = "nonzero_union",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.average_over = average_over
        # The protocol depends on the policy: this instance attribute shadows the default.
        self.protocol = PROTOCOLS[self.average_over]  # type: ignore[misc]
        c = self.num_classes
        # Pair ids g * C + p, plus one bin for pixels that are not scored, fit in int32
        # below 46340 classes; int32 halves the memory traffic of the update.
        self._pair_dtype = torch.int32 if c * c + 1 < 2**31 else torch.int64
        self.add_state("confusion", torch.zeros(c, c, dtype=torch.int64))

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        what = "miou"
        c = self.num_classes
        target = as_class_ids(target, valid, what)
        if prediction.is_floating_point():
            if prediction.ndim != 4 or prediction.shape[1] != c:
                raise ValueError(
                    f"{what}: logits must be [B, {c}, H, W], got {tuple(prediction.shape)}"
                )
            predicted = argmax_classes(prediction, self._pair_dtype)
            checked = True  # argmax ids are in [0, C) by construction
        else:
            predicted = prediction[:, 0] if prediction.ndim == 4 else prediction
            checked = False
        if predicted.shape != target.shape:
            raise ValueError(
                f"{what}: prediction {tuple(prediction.shape)} does not match the target "
                f"{tuple(target.shape)}"
            )
        if predicted.device != target.device:
            predicted = predicted.to(target.device)
        keep = valid.to(target.device, torch.bool) & (target != self.ignore_index)
        # One pass each for the range checks of scored pixels; the messages come from the
        # slower check_class_range, which only runs when something is out of range.
        low, high = torch.where(keep, target, torch.zeros_like(target)).aminmax()
        if int(low) < 0 or int(high) >= c:
            check_class_range(target, keep, c, self.ignore_index, what)
        if not checked:
            low, high = torch.where(keep, predicted, torch.zeros_like(predicted)).aminmax()
            if int(low) < 0 or int(high) >= c:
                raise ValueError(
                    f"{what}: predicted class ids of scored pixels must lie in [0, {c}), got "
                    f"[{int(low)}, {int(high)}]"
                )
        # Pixels that are not scored go to an extra bin (c * c) that is dropped: one
        # where() instead of two boolean selections.
        pairs = target.to(self._pair_dtype) * c
        pairs += predicted.to(self._pair_dtype)
        pairs.masked_fill_(~keep, c * c)
        counts = torch.bincount(pairs.reshape(-1), minlength=c * c + 1)[: c * c]
        confusion = self._state["confusion"]
        if confusion.device != counts.device:
            confusion = confusion.to(counts.device)
        self._state["confusion"] = confusion + counts.reshape(c, c)

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        confusion = state["confusion"].double().cpu()
        tp = confusion.diagonal()
        gt = confusion.sum(1)
        predicted = confusion.sum(0)
        union = gt + predicted - tp
        nan = float("nan")
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, nan))
        accuracy = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, nan))
        results = {f"iou/{c}": float(iou[c]) for c in range(self.num_classes)}
        total = float(gt.sum())
        if total == 0:
            results.update(
                miou=nan, miou_all_classes=nan, pixel_acc=nan, mean_acc=nan, fwiou=nan
            )
            return results
        all_iou = float(torch.nan_to_num(iou, nan=0.0).mean())
        if self.average_over == "nonzero_union":
            miou = float(iou[union > 0].mean())
        elif self.average_over == "present_in_target":
            miou = float(iou[gt > 0].mean())
        else:
            miou = all_iou
        if self.average_over == "all_classes":
            mean_acc = float(torch.nan_to_num(accuracy, nan=0.0).mean())
        else:
            mean_acc = float(accuracy[gt > 0].mean())
        labelled = gt > 0  # the IoU of such a class is defined (its union is >= G_c > 0)
        results.update(
            miou=miou,
            miou_all_classes=all_iou,
            pixel_acc=float(tp.sum()) / total,
            mean_acc=mean_acc,
            fwiou=float((gt[labelled] * iou[labelled]).sum()) / total,
        )
        return results
