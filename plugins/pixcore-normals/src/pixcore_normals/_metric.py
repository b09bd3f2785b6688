"""Angular error statistics of surface normals, with a streamed median."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import pixcore
import torch
from torch import Tensor

from pixcore_normals._common import select

__all__ = ["AngularError", "BIN_WIDTH_DEG", "THRESHOLDS_DEG"]

#: Width of the histogram bins the median is read from, degrees.
BIN_WIDTH_DEG = 0.01
_BINS = round(180.0 / BIN_WIDTH_DEG)
#: Thresholds of the "within" percentages, degrees (Fouhey et al. 2013).
THRESHOLDS_DEG = (11.25, 22.5, 30.0)
_KEYS = ("pct_11.25", "pct_22.5", "pct_30")


def _order_statistic(cumulative: Tensor, rank: int) -> float:
    """Centre of the bin holding the ``rank``-th smallest angle (1-based)."""
    index = int(torch.searchsorted(cumulative, torch.tensor([rank], dtype=cumulative.dtype)))
    return (index + 0.5) * BIN_WIDTH_DEG


class AngularError(pixcore.Metric):
    r"""Angle between predicted and true normals, in degrees, over the whole evaluation.

    A pixel is kept where ``valid`` is True and the true normal is finite and longer
    than ``1e-6`` (data sets store zero vectors for "no normal"); both vectors are
    L2-normalised in float64 and

    .. math::
        \theta_i = \frac{180}{\pi}\arccos\bigl(\operatorname{clamp}(\hat{n}_i \cdot n_i,
        -1, 1)\bigr)

    is pooled over every kept pixel of every image of the evaluation (not averaged per
    image), with :math:`n` kept pixels in all:

    * ``mean`` :math:`= \frac{1}{n}\sum_i\theta_i`,
      ``rmse`` :math:`= \sqrt{\frac{1}{n}\sum_i\theta_i^2}` (exact sums);
    * ``median``: read from a histogram of :math:`\theta` with 18000 bins of
      0.01° over [0°, 180°] (a sum, so it streams and reduces across processes): the
      centre of the bin holding the middle angle (for even :math:`n`, the mean of the
      centres of the bins holding the two middle angles). **Precision bound**: every
      angle is within half a bin of its bin's centre, so the reported median is within
      0.005° of the exact median of the pooled angles;
    * ``pct_11.25``, ``pct_22.5``, ``pct_30``: the percentage (0 to 100) of kept pixels
      with :math:`\theta` strictly below 11.25°, 22.5° and 30° (exact counts).

    These are the statistics of Fouhey et al. (ICCV 2013), reported on NYU Depth v2 by
    Eigen & Fergus (ICCV 2015), Bae et al. (ICCV 2021) and others. A prediction of zero
    length at a kept pixel counts as 90°. With no kept pixel every result is NaN.

    ``protocol`` names this: pixel-pooled statistics, median from the 0.01° histogram.
    ``higher_is_better``: errors (``mean``, ``median``, ``rmse``) are better lower, the
    within-threshold percentages higher.
    """

    protocol: ClassVar[str] = "pixel-pooled/median-histogram-0.01deg"
    higher_is_better: ClassVar[Mapping[str, bool]] = {
        "mean": False,
        "median": False,
        "rmse": False,
        "pct_11.25": True,
        "pct_22.5": True,
        "pct_30": True,
    }

    def __init__(self) -> None:
        super().__init__()
        for name in ("count", "sum", "sum_sq", *_KEYS):
            self.add_state(name, torch.zeros((), dtype=torch.float64))
        self.add_state("histogram", torch.zeros(_BINS, dtype=torch.int64))

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        p, t = select(prediction.detach().double(), target.double(), valid, "angular_error")
        angles = torch.rad2deg(torch.arccos((p * t).sum(dim=1).clamp(-1.0, 1.0)))
        bins = (angles / BIN_WIDTH_DEG).floor().long().clamp(0, _BINS - 1)
        sums = {
            "count": torch.tensor(float(angles.numel()), dtype=torch.float64, device=angles.device),
            "sum": angles.sum(),
            "sum_sq": angles.square().sum(),
            "histogram": torch.bincount(bins, minlength=_BINS),
        }
        for key, threshold in zip(_KEYS, THRESHOLDS_DEG, strict=True):
            sums[key] = (angles < threshold).sum().double()
        for name, value in sums.items():
            self._state[name] = self._state[name].to(value.device) + value

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        n = float(state["count"])
        if n == 0:
            return {key: math.nan for key in ("mean", "median", "rmse", *_KEYS)}
        cumulative = state["histogram"].cpu().cumsum(0)
        count = int(cumulative[-1])
        if count % 2:
            median = _order_statistic(cumulative, (count + 1) // 2)
        else:
            lower = _order_statistic(cumulative, count // 2)
            median = 0.5 * (lower + _order_statistic(cumulative, count // 2 + 1))
        results = {
            "mean": float(state["sum"]) / n,
            "median": median,
            "rmse": math.sqrt(float(state["sum_sq"]) / n),
        }
        for key in _KEYS:
            results[key] = 100.0 * float(state[key]) / n
        return results
