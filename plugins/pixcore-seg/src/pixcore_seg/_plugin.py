"""Registration hooks of pixcore-seg (entry point ``seg`` of group ``pixcore``)."""

from __future__ import annotations

from collections.abc import Iterator

import pixcore
from pixcore_seg._loss import CrossEntropyLoss, CrossEntropyParams
from pixcore_seg._metric import MeanIoU, MeanIoUParams
from pixcore_seg._task import SegmentationParams, SegmentationTask


@pixcore.hookimpl
def pixcore_tasks() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "segmentation", SegmentationTask, params=SegmentationParams,
        description="Semantic segmentation: one logit per class and pixel",
    )


@pixcore.hookimpl
def pixcore_losses() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "cross_entropy", CrossEntropyLoss, params=CrossEntropyParams,
        description="Softmax cross-entropy over valid, labelled pixels",
    )


@pixcore.hookimpl
def pixcore_metrics() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "miou", MeanIoU, params=MeanIoUParams,
        description="Per-class IoU, mIoU and pixel accuracy from a pooled confusion matrix",
    )
