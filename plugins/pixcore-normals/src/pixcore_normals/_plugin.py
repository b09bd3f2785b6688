"""Registration hooks of pixcore-normals (entry point ``normals`` of group ``pixcore``)."""

from __future__ import annotations

from collections.abc import Iterator

import pixcore

from pixcore_normals._losses import AngularLoss, CosineLoss, NormalsL1Loss
from pixcore_normals._metric import AngularError
from pixcore_normals._task import NormalsTask


@pixcore.hookimpl
def pixcore_tasks() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "normals", NormalsTask,
        description="Unit surface normals in the camera frame",
    )


@pixcore.hookimpl
def pixcore_losses() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "angular", AngularLoss,
        description="Mean angle between normals, radians (Do et al. 2020, Bae et al. 2021)",
    )
    yield pixcore.Component(
        "cosine", CosineLoss,
        description="Mean 1 - cos between normals (Eigen & Fergus 2015)",
    )
    yield pixcore.Component(
        "normals_l1", NormalsL1Loss,
        description="Mean L1 distance between unit normals (Bae et al. 2021)",
    )


@pixcore.hookimpl
def pixcore_metrics() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "angular_error", AngularError,
        description="Mean, median, RMSE of the angular error; % within 11.25/22.5/30 deg",
    )
