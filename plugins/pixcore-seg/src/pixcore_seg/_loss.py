"""Cross-entropy for segmentation over valid, labelled pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

import pixcore
from pixcore.targets import DEFAULT_IGNORE_INDEX
from pixcore_seg._common import as_class_ids, check_class_range

__all__ = ["CrossEntropyLoss", "CrossEntropyParams"]

#: The class id torch skips; every pixel that is not kept is given it.
_DROPPED = -100


class CrossEntropyParams(BaseModel):
    """Parameters of the ``cross_entropy`` loss."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int | None = Field(
        default=None, gt=0, description="Given by the task; checks class_weights' length."
    )
    ignore_index: int = Field(default=DEFAULT_IGNORE_INDEX, description="Given by the task.")
    class_weights: list[float] | None = Field(
        default=None, description="One non-negative weight per class (torch's `weight`)."
    )
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _weights(self) -> CrossEntropyParams:
        weights = self.class_weights
        if weights is not None:
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(
                    f"class_weights must be non-negative with a positive sum, got {weights}"
                )
            if self.num_classes is not None and len(weights) != self.num_classes:
                raise ValueError(
                    f"class_weights has {len(weights)} entries for {self.num_classes} classes; "
                    "give one weight per class"
                )
        return self


class CrossEntropyLoss(pixcore.Loss):
    r"""Softmax cross-entropy averaged over kept pixels.

    Kept pixels: ``valid & (target != ignore_index)``. With logits :math:`z_i`, target
    :math:`y_i`, class weights :math:`w` (all ones by default) and label smoothing
    :math:`\varepsilon` over :math:`C` classes, pixel :math:`i` costs

    .. math::
        \ell_i = w_{y_i}\bigl[-(1-\varepsilon)\log p_{i,y_i}\bigr]
               - \frac{\varepsilon}{C}\sum_c w_c \log p_{i,c},
        \qquad p_i = \operatorname{softmax}(z_i),

    and the loss is :math:`\sum_{i \in K} \ell_i / \sum_{i \in K} w_{y_i}`: exactly
    ``torch.nn.functional.cross_entropy(..., weight=w, ignore_index=..., label_smoothing=ε)``
    with ``reduction="mean"`` on the kept pixels (Szegedy et al. 2016 for label
    smoothing). With no kept pixel the loss is 0 and keeps its gradient path.

    Args:
        num_classes: Number of classes (from the task); checks ``class_weights``.
        ignore_index: Target value of unlabelled pixels (from the task).
        class_weights: Optional per-class weights, e.g. inverse frequencies.
        label_smoothing: :math:`\varepsilon` in ``[0, 1)``.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        params = CrossEntropyParams(
            num_classes=num_classes, ignore_index=ignore_index, class_weights=class_weights,
            label_smoothing=label_smoothing,
        )
        self.num_classes = params.num_classes
        self.ignore_index = params.ignore_index
        self.label_smoothing = params.label_smoothing
        weight = None if params.class_weights is None else torch.tensor(params.class_weights)
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        what = "cross_entropy"
        target = as_class_ids(target, valid, what)
        if prediction.ndim != 4 or (prediction.shape[0], *prediction.shape[2:]) != target.shape:
            raise ValueError(
                f"{what}: logits must be [B, C, H, W] matching the target {tuple(target.shape)}, "
                f"got {tuple(prediction.shape)}"
            )
        num_classes = prediction.shape[1]
        weight = self.class_weights
        if weight is not None and weight.numel() != num_classes:
            raise ValueError(
                f"{what}: class_weights has {weight.numel()} entries but the logits have "
                f"{num_classes} classes"
            )
        keep = valid.bool() & (target != self.ignore_index)
        check_class_range(target, keep, num_classes, self.ignore_index, what)
        # Every pixel that is not kept becomes an ignored pixel: zero loss, zero gradient.
        masked = torch.where(keep, target, torch.full_like(target, _DROPPED)).long()
        per_pixel = F.cross_entropy(
            prediction.float(), masked, weight=weight, ignore_index=_DROPPED,
            label_smoothing=self.label_smoothing, reduction="none",
        )
        if weight is None:
            denominator = keep.sum().to(per_pixel.dtype)
        else:
            denominator = (weight[torch.where(keep, target, 0)] * keep).sum()
        summed = per_pixel.sum()
        # No kept pixel (or only zero-weight ones): 0, with the gradient path kept.
        total = torch.where(denominator > 0, summed / denominator.clamp(min=1e-12), summed * 0.0)
        return pixcore.LossOutput(total, {"cross_entropy": total.detach()})
