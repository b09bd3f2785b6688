"""pixcore-normals: surface normals for pixcore.

Registers the task ``normals``, the losses ``angular`` and ``cosine`` and the metric
``angular_error`` through the entry point ``normals`` of group ``pixcore``.
"""

from pixcore_normals._losses import AngularLoss as AngularLoss
from pixcore_normals._losses import CosineLoss as CosineLoss
from pixcore_normals._metric import AngularError as AngularError
from pixcore_normals._task import NormalsTask as NormalsTask

__all__ = ["AngularError", "AngularLoss", "CosineLoss", "NormalsTask"]
