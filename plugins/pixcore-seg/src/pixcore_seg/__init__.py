"""pixcore-seg: semantic segmentation for pixcore.

Registers, through the entry point ``seg`` of group ``pixcore``, the task
``segmentation``; the losses ``cross_entropy``, ``cross_entropy_dice``, ``dice``,
``focal``, ``lovasz`` and ``ohem_cross_entropy``; the metric ``miou``; and the data sets
``voc``, ``cityscapes`` and ``ade20k``.
"""

from pixcore_seg._datasets import ADE20K as ADE20K
from pixcore_seg._datasets import Cityscapes as Cityscapes
from pixcore_seg._datasets import VOCSegmentation as VOCSegmentation
from pixcore_seg._losses import CrossEntropyDiceLoss as CrossEntropyDiceLoss
from pixcore_seg._losses import CrossEntropyLoss as CrossEntropyLoss
from pixcore_seg._losses import DiceLoss as DiceLoss
from pixcore_seg._losses import FocalLoss as FocalLoss
from pixcore_seg._losses import LovaszSoftmaxLoss as LovaszSoftmaxLoss
from pixcore_seg._losses import OhemCrossEntropyLoss as OhemCrossEntropyLoss
from pixcore_seg._metric import MeanIoU as MeanIoU
from pixcore_seg._palette import colorize as colorize
from pixcore_seg._palette import voc_palette as voc_palette
from pixcore_seg._task import SegmentationTask as SegmentationTask

__all__ = [
    "ADE20K",
    "Cityscapes",
    "CrossEntropyDiceLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "MeanIoU",
    "OhemCrossEntropyLoss",
    "SegmentationTask",
    "VOCSegmentation",
    "colorize",
    "voc_palette",
]
