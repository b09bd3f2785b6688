"""Depth losses: scale-invariant log (SILog) and L1, over valid pixels."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import pixcore
from pixcore_depth._common import select

__all__ = ["L1Loss", "SILogLoss", "SILogParams"]

#: Below this, ``sqrt`` is continued linearly so that its gradient stays finite at 0.
_SQRT_EPS = 1e-12


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= eps``, ``x / sqrt(eps)`` below: exact 0 at 0, finite gradient."""
    root = torch.sqrt(x.clamp(min=_SQRT_EPS))
    return torch.where(x >= _SQRT_EPS, root, x.clamp(min=0.0) / _SQRT_EPS**0.5)


class SILogParams(BaseModel):
    """Parameters of the ``silog`` loss."""

    model_config = ConfigDict(extra="forbid")

    lambda_: float = Field(
        default=0.85, ge=0.0, le=1.0,
        description="Weight of the scale term: 0 is an RMSE of log depth, 1 fully scale-invariant.",
    )


class SILogLoss(pixcore.Loss):
    r"""Scale-invariant logarithmic loss (Eigen, Puhrsch and Fergus, NeurIPS 2014).

    Over the kept pixels :math:`i = 1..n` (valid, with a finite positive target), with
    :math:`d_i = \log \hat{y}_i - \log y_i`:

    .. math::
        \mathcal{L} = \sqrt{\frac{1}{n}\sum_i d_i^2 - \lambda \Bigl(\frac{1}{n}\sum_i d_i\Bigr)^2}

    pooled over every kept pixel of the batch. :math:`\lambda = 0` gives the RMSE of log
    depth; :math:`\lambda = 1` ignores a global scale error (a prediction :math:`c\,y`
    costs 0); the default 0.85 follows Lee et al. 2019 (BTS), which also multiply by 10
    (use the task weight for that).

    Numerics: the radicand is computed as :math:`\operatorname{var}(d) + (1-\lambda)\,
    \bar{d}^2` (equal to the above), with a two-pass variance, so that a prediction off
    by a constant factor gives 0 up to rounding of :math:`d` rather than the cancellation
    error of :math:`\overline{d^2} - \bar{d}^2`; it is non-negative for
    :math:`\lambda \le 1`, and the square root is continued linearly below 1e-12, so the
    loss is exactly 0 at 0 with a finite gradient. With no kept pixel the loss is 0.

    Args:
        lambda_: :math:`\lambda` in ``[0, 1]``.
    """

    def __init__(self, lambda_: float = 0.85) -> None:
        super().__init__()
        self.lambda_ = SILogParams(lambda_=lambda_).lambda_

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        predicted, true = select(prediction, target, valid, "silog")
        d = torch.log(predicted.float()) - torch.log(true.float())
        n = max(d.numel(), 1)
        mean = d.sum() / n
        # mean(d^2) - lambda mean(d)^2 == var(d) + (1 - lambda) mean(d)^2; the two-pass
        # variance avoids the cancellation of the one-pass form when d is nearly constant.
        variance = (d - mean).square().sum() / n
        radicand = (variance + (1.0 - self.lambda_) * mean.square()).clamp(min=0.0)
        total = _safe_sqrt(radicand)
        return pixcore.LossOutput(total, {"silog": total.detach()})


class L1Loss(pixcore.Loss):
    r"""Mean absolute depth error over kept pixels: :math:`\frac{1}{n}\sum_i |\hat{y}_i - y_i|`.

    Kept pixels are valid with a finite positive target; with none the loss is 0.
    """

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        predicted, true = select(prediction, target, valid, "l1")
        error = (predicted.float() - true.float()).abs()
        total = error.sum() / max(error.numel(), 1)
        return pixcore.LossOutput(total, {"l1": total.detach()})
