"""The standard depth error metrics, pooled over every evaluated pixel."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

import pixcore
from pixcore_depth._common import as_depth_map

__all__ = ["DepthErrors", "DepthErrorsParams"]

_SUMS = (
    "count", "abs_rel", "sq_rel", "sq_err", "sq_log_err", "abs_log10", "delta1", "delta2", "delta3"
)


class DepthErrorsParams(BaseModel):
    """Parameters of the ``depth_errors`` metric (given by the depth task by default)."""

    model_config = ConfigDict(extra="forbid")

    min_depth: float = Field(default=1e-3, gt=0.0, description="Lower cap, metres.")
    max_depth: float | None = Field(default=None, description="Upper cap, metres; None: no cap.")

    @model_validator(mode="after")
    def _range(self) -> DepthErrorsParams:
        if self.max_depth is not None and self.max_depth <= self.min_depth:
            raise ValueError(
                f"max_depth ({self.max_depth}) must be greater than min_depth ({self.min_depth})"
            )
        return self


class DepthErrors(pixcore.Metric):
    r"""AbsRel, SqRel, RMSE, RMSE log, log10 and the :math:`\delta` accuracies (Eigen et al. 2014).

    Evaluated pixels: valid, with a finite true depth :math:`y` inside
    ``[min_depth, max_depth]``; the prediction :math:`\hat{y}` is clamped to the same
    range (the usual protocol of Eigen et al. and its successors). Over all evaluated
    pixels :math:`i = 1..n` of the whole evaluation (pooled, not averaged per image):

    * ``abs_rel`` :math:`= \frac{1}{n}\sum |\hat{y}-y| / y`
    * ``sq_rel`` :math:`= \frac{1}{n}\sum (\hat{y}-y)^2 / y`
    * ``rmse`` :math:`= \sqrt{\frac{1}{n}\sum (\hat{y}-y)^2}`
    * ``rmse_log`` :math:`= \sqrt{\frac{1}{n}\sum (\ln\hat{y}-\ln y)^2}`
    * ``log10`` :math:`= \frac{1}{n}\sum |\log_{10}\hat{y}-\log_{10} y|`
    * ``delta1..3``: the fraction (in [0, 1]) of pixels with
      :math:`\max(\hat{y}/y, y/\hat{y}) < 1.25^k`, :math:`k = 1, 2, 3`.

    The state is float64 sums (and a count), so distributed sum-reduction is exact.
    Benchmarks that average per image first (NYUv2, KITTI Eigen split) give slightly
    different numbers; :attr:`protocol` says which one this is.
    """

    protocol: ClassVar[str] = "pixel-pooled/gt-in-[min,max]/pred-clamped"

    def __init__(self, min_depth: float = 1e-3, max_depth: float | None = None) -> None:
        super().__init__()
        params = DepthErrorsParams(min_depth=min_depth, max_depth=max_depth)
        self.min_depth = params.min_depth
        self.max_depth = params.max_depth
        for name in _SUMS:
            self.add_state(name, torch.zeros((), dtype=torch.float64))

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        what = "depth_errors"
        predicted = as_depth_map(prediction, what, "prediction").detach().double()
        true = as_depth_map(target, what, "target").double()
        if predicted.shape != true.shape or true.shape != valid.shape:
            raise ValueError(
                f"{what}: prediction {tuple(prediction.shape)}, target {tuple(target.shape)} and "
                f"valid {tuple(valid.shape)} must cover the same pixels"
            )
        upper = math.inf if self.max_depth is None else self.max_depth
        keep = valid.bool() & true.isfinite() & (true >= self.min_depth) & (true <= upper)
        y = true[keep]
        p = predicted[keep].clamp(self.min_depth, upper)
        ratio = torch.maximum(p / y, y / p)
        sums = {
            "count": torch.tensor(float(y.numel()), dtype=torch.float64, device=y.device),
            "abs_rel": ((p - y).abs() / y).sum(),
            "sq_rel": ((p - y).square() / y).sum(),
            "sq_err": (p - y).square().sum(),
            "sq_log_err": (p.log() - y.log()).square().sum(),
            "abs_log10": (p.log10() - y.log10()).abs().sum(),
            "delta1": (ratio < 1.25).sum().double(),
            "delta2": (ratio < 1.25**2).sum().double(),
            "delta3": (ratio < 1.25**3).sum().double(),
        }
        for name, value in sums.items():
            self._state[name] = self._state[name].to(value.device) + value

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        n = float(state["count"])
        if n == 0:
            return {key: math.nan for key in (
                "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")}
        mean = {name: float(state[name]) / n for name in _SUMS[1:]}
        return {
            "abs_rel": mean["abs_rel"],
            "sq_rel": mean["sq_rel"],
            "rmse": math.sqrt(mean["sq_err"]),
            "rmse_log": math.sqrt(mean["sq_log_err"]),
            "log10": mean["abs_log10"],
            "delta1": mean["delta1"],
            "delta2": mean["delta2"],
            "delta3": mean["delta3"],
        }
