"""pixcore-depth: monocular metric depth for pixcore.

Registers the task ``depth``, the losses ``silog`` and ``l1`` and the metric
``depth_errors`` through the entry point ``depth`` of group ``pixcore``.
"""

from pixcore_depth._colormap import turbo as turbo
from pixcore_depth._losses import L1Loss as L1Loss
from pixcore_depth._losses import SILogLoss as SILogLoss
from pixcore_depth._metric import DepthErrors as DepthErrors
from pixcore_depth._task import DepthTask as DepthTask

__all__ = ["DepthErrors", "DepthTask", "L1Loss", "SILogLoss", "turbo"]
