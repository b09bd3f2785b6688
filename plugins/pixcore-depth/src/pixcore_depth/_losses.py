"""Depth losses over valid pixels: SILog, L1, BerHu, scale-and-shift-invariant, gradient matching.

Every loss keeps only the pixels that are marked valid *and* hold a finite, positive true
depth, averages over the kept pixels of the whole batch, and returns an exact zero that
still has a gradient path when no pixel is kept. Predictions are the depth task's decoded
(positive) depths ``[B, 1, H, W]``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pixcore
import torch
from pydantic import Field
from torch import Tensor

from pixcore_depth._common import Space, align, dense, select

__all__ = ["BerHuLoss", "GradientMatchingLoss", "L1Loss", "SILogLoss", "SSILoss"]

#: Below this, ``sqrt`` is continued linearly so that its gradient stays finite at 0.
_SQRT_EPS = 1e-12

#: Scales of a gradient-matching term (MiDaS: 4).
Scales = Annotated[int, Field(ge=1, le=8)]


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= eps``, ``x / sqrt(eps)`` below: exact 0 at 0, finite gradient."""
    root = torch.sqrt(x.clamp(min=_SQRT_EPS))
    return torch.where(x >= _SQRT_EPS, root, x.clamp(min=0.0) / _SQRT_EPS**0.5)


# --------------------------------------------------------------------------------------
# SILog
# --------------------------------------------------------------------------------------


class SILogLoss(pixcore.Loss):
    r"""Scale-invariant logarithmic loss (Eigen, Puhrsch and Fergus, NeurIPS 2014).

    Over the kept pixels :math:`i = 1..n` of the whole batch (pooled), with
    :math:`d_i = \ln \hat{y}_i - \ln y_i`:

    .. math::
        D = \frac{1}{n}\sum_i d_i^2 - \lambda \Bigl(\frac{1}{n}\sum_i d_i\Bigr)^2, \qquad
        \mathcal{L} = \alpha \sqrt{D} \;\; (\texttt{sqrt=True}) \quad\text{or}\quad
        \alpha D \;\; (\texttt{sqrt=False})

    with :math:`\lambda` = ``variance_focus`` and :math:`\alpha` = ``scale``. Eigen et al.
    train with :math:`\alpha D`, :math:`\lambda = 0.5`; Lee et al. 2019 (BTS) and Bhat et
    al. 2021 (AdaBins) use :math:`10\sqrt{D}` with :math:`\lambda = 0.85` (AdaBins with
    the unbiased variance, a factor :math:`n/(n-1)` on its first part). The defaults,
    :math:`\sqrt{D}` with :math:`\lambda = 0.85` and :math:`\alpha = 1`, give the BTS
    loss divided by 10. :math:`\lambda = 0` is the RMSE of log depth; :math:`\lambda = 1`
    ignores a global scale error (a prediction :math:`c\,y` costs 0).

    Numerics: :math:`D` is computed as :math:`\operatorname{var}(d) + (1-\lambda)\,
    \bar{d}^2` (equal to the above) with a two-pass variance, so that a prediction off by
    a constant factor gives 0 up to the rounding of :math:`d` rather than the cancellation
    error of :math:`\overline{d^2} - \bar{d}^2`; it is non-negative for
    :math:`\lambda \le 1`, and the square root is continued linearly below 1e-12, so the
    loss is exactly 0 at 0 with a finite gradient.

    Args:
        variance_focus: :math:`\lambda` in ``[0, 1]``, the weight of the scale term: 0 gives
            the RMSE of log depth, 1 a fully scale-invariant loss; 0.85 as in BTS and
            AdaBins, 0.5 in Eigen et al. 2014.
        scale: :math:`\alpha > 0`, the factor on the result; BTS and AdaBins use 10.
        sqrt: Take the square root of the log variance (BTS, AdaBins); False gives the
            original loss of Eigen et al. 2014.

    """

    def __init__(
        self,
        variance_focus: Annotated[float, Field(ge=0.0, le=1.0)] = 0.85,
        scale: Annotated[float, Field(gt=0.0)] = 1.0,
        sqrt: bool = True,
    ) -> None:
        super().__init__()
        self.variance_focus = variance_focus
        self.scale = scale
        self.sqrt = sqrt

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        predicted, true = select(prediction, target, valid, "silog")
        d = torch.log(predicted.float()) - torch.log(true.float())
        n = max(d.numel(), 1)
        mean = d.sum() / n
        # mean(d^2) - lambda mean(d)^2 == var(d) + (1 - lambda) mean(d)^2; the two-pass
        # variance avoids the cancellation of the one-pass form when d is nearly constant.
        variance = (d - mean).square().sum() / n
        radicand = (variance + (1.0 - self.variance_focus) * mean.square()).clamp(min=0.0)
        total = self.scale * (_safe_sqrt(radicand) if self.sqrt else radicand)
        return pixcore.LossOutput(total, {"silog": total.detach()})


# --------------------------------------------------------------------------------------
# L1 and BerHu
# --------------------------------------------------------------------------------------


class L1Loss(pixcore.Loss):
    r"""Mean absolute depth error over the kept pixels of the batch.

    .. math:: \mathcal{L} = \frac{1}{n}\sum_i |\hat{y}_i - y_i|

    The plain :math:`L_1` regression loss, in metres.
    """

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        predicted, true = select(prediction, target, valid, "l1")
        error = (predicted.float() - true.float()).abs()
        total = error.sum() / max(error.numel(), 1)
        return pixcore.LossOutput(total, {"l1": total.detach()})


class BerHuLoss(pixcore.Loss):
    r"""Reverse Huber (BerHu) loss (Laina et al., "Deeper Depth Prediction with Fully
    Convolutional Residual Networks", 3DV 2016; after Owen 2007).

    With residuals :math:`r_i = \hat{y}_i - y_i` over the kept pixels of the batch and
    :math:`c = 0.2 \max_i |r_i|` (``threshold`` = 0.2):

    .. math::
        B(r) = \begin{cases} |r| & |r| \le c \\ \dfrac{r^2 + c^2}{2c} & |r| > c \end{cases},
        \qquad \mathcal{L} = \frac{1}{n}\sum_i B(r_i)

    :math:`L_1` for small residuals, :math:`L_2` for large ones, continuous at :math:`c`.
    :math:`c` is recomputed for every batch and treated as a constant (no gradient flows
    through the maximum); when every residual is 0, so is :math:`c` and the loss.

    Args:
        threshold: :math:`c` as a fraction in ``(0, 1]`` of the batch's largest absolute
            residual (0.2 in Laina et al. 2016).

    """

    def __init__(self, threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        predicted, true = select(prediction, target, valid, "berhu")
        residual = predicted.float() - true.float()
        magnitude = residual.abs()
        largest = magnitude.detach().amax() if magnitude.numel() else magnitude.new_zeros(())
        c = self.threshold * largest
        safe_c = torch.where(c > 0, c, torch.ones_like(c))
        quadratic = (residual.square() + c.square()) / (2.0 * safe_c)
        per_pixel = torch.where(magnitude <= c, magnitude, quadratic)
        total = per_pixel.sum() / max(per_pixel.numel(), 1)
        return pixcore.LossOutput(total, {"berhu": total.detach(), "berhu_c": c})


# --------------------------------------------------------------------------------------
# Scale-and-shift-invariant loss and gradient matching
# --------------------------------------------------------------------------------------


def gradient_matching(residual: Tensor, keep: Tensor, scales: int) -> Tensor:
    r"""Multi-scale gradient matching term of a residual map ``[B, H, W]``.

    :math:`\sum_{k=0}^{K-1} \frac{1}{M_k} \sum_{b,i,j} \bigl(m^x_{k} |R^k_{i,j+1} -
    R^k_{i,j}| + m^y_{k} |R^k_{i+1,j} - R^k_{i,j}|\bigr)`, where :math:`R^k` is the
    residual subsampled by :math:`2^k` (every :math:`2^k`-th row and column), a gradient
    counts only where both of its pixels are kept (:math:`m^x, m^y`), and :math:`M_k` is
    the number of kept pixels at scale :math:`k` (a scale with none adds 0).
    """
    total = residual.new_zeros(())
    for k in range(scales):
        step = 2**k
        r = residual[:, ::step, ::step]
        m = keep[:, ::step, ::step]
        both_x = m[:, :, 1:] & m[:, :, :-1]
        both_y = m[:, 1:, :] & m[:, :-1, :]
        grad_x = torch.where(both_x, (r[:, :, 1:] - r[:, :, :-1]).abs(), 0.0)
        grad_y = torch.where(both_y, (r[:, 1:, :] - r[:, :-1, :]).abs(), 0.0)
        count = m.sum().clamp(min=1)
        total = total + (grad_x.sum() + grad_y.sum()) / count
    return total


class SSILoss(pixcore.Loss):
    r"""Scale-and-shift-invariant loss (Ranftl et al., "Towards Robust Monocular Depth
    Estimation: Mixing Datasets for Zero-shot Cross-dataset Transfer", TPAMI 2020, MiDaS).

    Per image :math:`b`, with :math:`x = f(\hat{y})`, :math:`z = f(y)` and :math:`f` the
    identity (``space="depth"``) or the inverse (``"disparity"``, MiDaS), the scale and
    shift are fitted by least squares over the image's kept pixels:

    .. math::
        (s_b, t_b) = \arg\min_{s,t} \sum_{i \in b} (s x_i + t - z_i)^2, \qquad
        r_i = s_b x_i + t_b - z_i

    (an image whose kept :math:`x` are all equal gets :math:`s_b = 0`,
    :math:`t_b = \bar{z}`). The loss averages :math:`\rho(r) = |r|` (``"mae"``) or
    :math:`r^2` (``"mse"``) over the kept pixels of the batch; with ``trim`` :math:`> 0`
    the :math:`\lfloor \text{trim} \cdot n_b \rfloor` largest :math:`\rho` of each image
    are left out, and the mean is over the pixels that remain (MiDaS trims 20 %). The
    scale and shift are differentiable functions of the prediction (gradients flow through
    the fit, as in MiDaS). With ``gradient_weight`` :math:`\alpha > 0`, :math:`\alpha`
    times the gradient-matching term of :class:`GradientMatchingLoss` on the same
    residual :math:`r` is added (MiDaS: :math:`\alpha = 0.5`, 4 scales).

    Differences from MiDaS: its LSQ variant halves the mean squared residual, and its
    trimmed variant aligns by median and mean absolute deviation instead of least squares.
    A prediction :math:`a y + c` (``space="depth"``) costs 0 for any :math:`a, c`.

    Args:
        space: Where the per-image scale and shift are fitted and the residual is taken:
            ``'depth'``, or ``'disparity'`` (inverse depth, as MiDaS).
        residual: Penalty on the aligned residual: absolute (``'mae'``) or squared
            (``'mse'``).
        trim: Fraction in ``[0, 1)`` of the largest residuals left out per image (MiDaS:
            0.2).
        gradient_weight: Weight :math:`\alpha \ge 0` of a gradient-matching term on the
            aligned residual (MiDaS: 0.5); 0 leaves it out.
        gradient_scales: Scales of the gradient-matching term, 1 to 8 (MiDaS: 4).

    """

    def __init__(
        self,
        space: Space = "depth",
        residual: Literal["mae", "mse"] = "mae",
        trim: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
        gradient_weight: Annotated[float, Field(ge=0.0)] = 0.0,
        gradient_scales: Scales = 4,
    ) -> None:
        super().__init__()
        self.space: Space = space
        self.residual = residual
        self.trim = trim
        self.gradient_weight = gradient_weight
        self.gradient_scales = gradient_scales

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        p, y, keep = dense(prediction, target, valid, "ssi", torch.float32)
        aligned, true = align(p, y, keep, self.space)
        r = aligned - true
        rho = r.abs() if self.residual == "mae" else r.square()
        rho, m = rho.reshape(rho.shape[0], -1), keep.reshape(keep.shape[0], -1)
        if self.trim > 0.0:
            n = m.sum(1)
            dropped = torch.floor(self.trim * n.double()).long()
            kept_count = n - dropped
            ordered = torch.where(m, rho, torch.inf).sort(dim=1).values
            position = torch.arange(rho.shape[1], device=rho.device)
            m = position[None, :] < kept_count[:, None]
            rho = ordered
        data = torch.where(m, rho, 0.0).sum() / m.sum().clamp(min=1)
        parts = {"ssi": data.detach()}
        total = data
        if self.gradient_weight > 0.0:
            grad = gradient_matching(r, keep, self.gradient_scales)
            parts["gradient_matching"] = grad.detach()
            total = data + self.gradient_weight * grad
        return pixcore.LossOutput(total, parts)


class GradientMatchingLoss(pixcore.Loss):
    r"""Multi-scale gradient matching loss (Li and Snavely, "MegaDepth", CVPR 2018;
    Ranftl et al., MiDaS, TPAMI 2020).

    With a residual map :math:`R` per image,

    .. math::
        \mathcal{L} = \sum_{k=0}^{K-1} \frac{1}{M_k} \sum_{b,i,j}
        \bigl(m^x_k |R^k_{i,j+1} - R^k_{i,j}| + m^y_k |R^k_{i+1,j} - R^k_{i,j}|\bigr)

    where :math:`R^k` takes every :math:`2^k`-th row and column of :math:`R` (``scales``
    = :math:`K`), a horizontal (vertical) difference counts only where both of its pixels
    are kept (:math:`m^x_k`, :math:`m^y_k`), and :math:`M_k` is the number of kept pixels
    of the batch at scale :math:`k`, as in the MiDaS implementation. The residual is:

    * ``mode="metric"``: :math:`R = \ln \hat{y} - \ln y` (MegaDepth): it penalises
      relative depth discontinuities that the prediction lacks, whatever its global scale;
    * ``mode="relative"``: :math:`R = s_b f(\hat{y}) + t_b - f(y)` after the per-image
      least-squares scale and shift of :class:`SSILoss` (``space`` picks :math:`f`).

    It constrains only gradients, so it is meant to be added to a data term (as
    ``SSILoss(gradient_weight=...)`` does); on its own it cannot pin down the depth.

    Args:
        scales: Number of scales :math:`K`, 1 to 8 (MiDaS: 4).
        mode: Given by the depth task: ``'metric'`` matches gradients of the log-depth
            residual, ``'relative'`` those of the scale-and-shift-aligned residual.
        space: Relative mode only: where the per-image scale and shift are fitted,
            ``'depth'`` or ``'disparity'`` (inverse depth, as MiDaS).

    """

    def __init__(
        self, scales: Scales = 4, mode: Literal["metric", "relative"] = "metric",
        space: Space = "depth",
    ) -> None:
        super().__init__()
        self.scales = scales
        self.mode = mode
        self.space: Space = space

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        p, y, keep = dense(prediction, target, valid, "gradient_matching", torch.float32)
        if self.mode == "metric":
            residual = torch.log(p) - torch.log(y)
        else:
            aligned, true = align(p, y, keep, self.space)
            residual = aligned - true
        total = gradient_matching(residual, keep, self.scales)
        return pixcore.LossOutput(total, {"gradient_matching": total.detach()})

