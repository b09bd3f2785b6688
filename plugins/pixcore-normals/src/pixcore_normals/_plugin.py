"""Registration hooks of pixcore-normals (entry point ``normals`` of group ``pixcore``)."""

from __future__ import annotations

from collections.abc import Iterator

import pixcore
from pixcore_normals._losses import AngularLoss, CosineLoss
from pixcore_normals._metric import AngularError
from pixcore_normals._task import NormalsParams, NormalsTask


@pixcore.hookimpl
def pixcore_tasks() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "normals", NormalsTask, params=NormalsParams,
        description="Unit surface normals in the camera frame",
    )


@pixcore.hookimpl
def pixcore_losses() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "angular", AngularLoss, description="Mean angle between normals (radians)"
    )
    yield pixcore.Component("cosine", CosineLoss, description="Mean 1 - cos between normals")


@pixcore.hookimpl
def pixcore_metrics() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "angular_error", AngularError,
        description="Mean, median, RMSE of the angular error; % within 11.25/22.5/30 deg",
    )
