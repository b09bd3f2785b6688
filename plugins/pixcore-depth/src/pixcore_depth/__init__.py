"""pixcore-depth: monocular depth, metric or relative, for pixcore.

Registers the task ``depth``, the losses ``silog``, ``l1``, ``berhu``, ``ssi`` and
``gradient_matching``, the metric ``depth_errors`` and the data sets ``nyu_depth_v2``,
``kitti_depth`` and ``middlebury`` through the entry point ``depth`` of group ``pixcore``.
"""

from pixcore_depth._colormap import turbo as turbo
from pixcore_depth._datasets import KITTIDepth as KITTIDepth
from pixcore_depth._datasets import NYUDepthV2 as NYUDepthV2
from pixcore_depth._losses import BerHuLoss as BerHuLoss
from pixcore_depth._losses import GradientMatchingLoss as GradientMatchingLoss
from pixcore_depth._losses import L1Loss as L1Loss
from pixcore_depth._losses import SILogLoss as SILogLoss
from pixcore_depth._losses import SSILoss as SSILoss
from pixcore_depth._metric import CROPS as CROPS
from pixcore_depth._metric import DepthErrors as DepthErrors
from pixcore_depth._middlebury import MiddleburyCalibration as MiddleburyCalibration
from pixcore_depth._middlebury import MiddleburyStereo as MiddleburyStereo
from pixcore_depth._task import DepthTask as DepthTask
from pixcore_depth._task import RelativeDepthTask as RelativeDepthTask

__all__ = [
    "CROPS",
    "BerHuLoss",
    "DepthErrors",
    "DepthTask",
    "GradientMatchingLoss",
    "KITTIDepth",
    "L1Loss",
    "MiddleburyCalibration",
    "MiddleburyStereo",
    "NYUDepthV2",
    "RelativeDepthTask",
    "SILogLoss",
    "SSILoss",
    "turbo",
]
