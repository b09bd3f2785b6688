"""Registration hooks of pixcore-depth (entry point ``depth`` of group ``pixcore``)."""

from __future__ import annotations

from collections.abc import Iterator

import pixcore

from pixcore_depth._datasets import pixcore_datasets as pixcore_datasets  # noqa: F401
from pixcore_depth._losses import BerHuLoss, GradientMatchingLoss, L1Loss, SILogLoss, SSILoss
from pixcore_depth._metric import DepthErrors
from pixcore_depth._task import DepthTask


@pixcore.hookimpl
def pixcore_tasks() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "depth", DepthTask,
        description="Metric (metres) or relative depth, decoded from log-depth or softplus",
    )


@pixcore.hookimpl
def pixcore_losses() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "silog", SILogLoss,
        description="Scale-invariant log loss (Eigen et al. 2014)",
    )
    yield pixcore.Component(
        "l1", L1Loss, description="Mean absolute depth error over valid pixels"
    )
    yield pixcore.Component(
        "berhu", BerHuLoss,
        description="Reverse Huber loss, c = 0.2 max |residual| (Laina et al. 2016)",
    )
    yield pixcore.Component(
        "ssi", SSILoss,
        description="Scale-and-shift-invariant loss, per-image least squares (MiDaS, 2020)",
    )
    yield pixcore.Component(
        "gradient_matching", GradientMatchingLoss,
        description="Multi-scale gradient matching (Li and Snavely 2018; MiDaS)",
    )


@pixcore.hookimpl
def pixcore_metrics() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "depth_errors", DepthErrors,
        description="AbsRel, SqRel, RMSE, RMSE log, log10, SILog, delta<1.25^k; crops, caps, "
        "alignment, pooled or per image",
    )
