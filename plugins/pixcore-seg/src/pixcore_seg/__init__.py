"""pixcore-seg: semantic segmentation for pixcore.

Registers the task ``segmentation``, the loss ``cross_entropy`` and the metric ``miou``
through the entry point ``seg`` of group ``pixcore``.
"""

from pixcore_seg._loss import CrossEntropyLoss as CrossEntropyLoss
from pixcore_seg._metric import MeanIoU as MeanIoU
from pixcore_seg._palette import colorize as colorize
from pixcore_seg._palette import voc_palette as voc_palette
from pixcore_seg._task import SegmentationTask as SegmentationTask

__all__ = ["CrossEntropyLoss", "MeanIoU", "SegmentationTask", "colorize", "voc_palette"]
