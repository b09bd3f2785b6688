"""pixcore-normals: surface normals for pixcore.

Registers the task ``normals``, the losses ``angular``, ``cosine`` and ``normals_l1``
and the metric ``angular_error`` through the entry point ``normals`` of group
``pixcore``.
"""

from pixcore_normals._losses import AngularLoss as AngularLoss
from pixcore_normals._losses import CosineLoss as CosineLoss
from pixcore_normals._losses import NormalsL1Loss as NormalsL1Loss
from pixcore_normals._metric import AngularError as AngularError
from pixcore_normals._task import NormalsTask as NormalsTask

__all__ = ["AngularError", "AngularLoss", "CosineLoss", "NormalsL1Loss", "NormalsTask"]
