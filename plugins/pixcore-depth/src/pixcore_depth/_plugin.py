"""Registration hooks of pixcore-depth (entry point ``depth`` of group ``pixcore``)."""

from __future__ import annotations

from collections.abc import Iterator

import pixcore
from pixcore_depth._losses import L1Loss, SILogLoss, SILogParams
from pixcore_depth._metric import DepthErrors, DepthErrorsParams
from pixcore_depth._task import DepthParams, DepthTask


@pixcore.hookimpl
def pixcore_tasks() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "depth", DepthTask, params=DepthParams,
        description="Metric depth in metres, decoded from log-depth",
    )


@pixcore.hookimpl
def pixcore_losses() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "silog", SILogLoss, params=SILogParams,
        description="Scale-invariant log loss (Eigen et al. 2014)",
    )
    yield pixcore.Component("l1", L1Loss, description="Mean absolute depth error over valid pixels")


@pixcore.hookimpl
def pixcore_metrics() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "depth_errors", DepthErrors, params=DepthErrorsParams,
        description="AbsRel, SqRel, RMSE, RMSE log, log10, delta<1.25^k (pixel-pooled)",
    )
