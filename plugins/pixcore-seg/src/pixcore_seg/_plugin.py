"""Registration hooks of pixcore-seg (entry point ``seg`` of group ``pixcore``)."""

from __future__ import annotations

from collections.abc import Iterator

import pixcore

from pixcore_seg._datasets import pixcore_datasets as pixcore_datasets  # noqa: F401
from pixcore_seg._losses import (
    CrossEntropyDiceLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    LovaszSoftmaxLoss,
    OhemCrossEntropyLoss,
)
from pixcore_seg._metric import MeanIoU
from pixcore_seg._task import SegmentationTask


@pixcore.hookimpl
def pixcore_tasks() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "segmentation", SegmentationTask,
        description="Semantic segmentation: one logit per class and pixel",
    )


@pixcore.hookimpl
def pixcore_losses() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "cross_entropy", CrossEntropyLoss,
        description="Softmax cross-entropy with class weights and label smoothing",
    )
    yield pixcore.Component(
        "cross_entropy_dice", CrossEntropyDiceLoss,
        description="Cross-entropy plus a weighted soft Dice (small classes learnt early)",
    )
    yield pixcore.Component(
        "dice", DiceLoss,
        description="Soft Dice over softmax probabilities (Milletari et al. 2016)",
    )
    yield pixcore.Component(
        "focal", FocalLoss,
        description="Softmax focal loss (Lin et al. 2017)",
    )
    yield pixcore.Component(
        "lovasz", LovaszSoftmaxLoss,
        description="Lovasz-softmax surrogate of the Jaccard loss (Berman et al. 2018)",
    )
    yield pixcore.Component(
        "ohem_cross_entropy", OhemCrossEntropyLoss,
        description="Cross-entropy over the hardest pixels (online hard example mining)",
    )


@pixcore.hookimpl
def pixcore_metrics() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "miou", MeanIoU,
        description="IoU per class, mIoU, accuracies and FWIoU from a pooled confusion matrix",
    )
