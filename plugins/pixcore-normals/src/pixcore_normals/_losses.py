"""Normal losses: angle, cosine distance and L1 distance, over valid pixels.

Every loss keeps the pixels that are valid and whose true normal is finite and of
non-zero length, L2-normalises both vectors there (see :func:`pixcore_normals._common.select`),
and averages over the kept pixels of the whole batch; with none kept it is 0, with a
gradient path.
"""

from __future__ import annotations

import pixcore
import torch
from torch import Tensor

from pixcore_normals._common import select

__all__ = ["AngularLoss", "CosineLoss", "NormalsL1Loss"]


def _safe_norm(x: Tensor) -> Tensor:
    """L2 norm over the last dimension with a zero (not NaN) gradient at the zero vector."""
    squared = x.square().sum(dim=-1)
    return torch.where(squared > 0, squared.clamp(min=1e-30).sqrt(), torch.zeros_like(squared))


class AngularLoss(pixcore.Loss):
    r"""Mean angle between predicted and true normals, in radians.

    Over the kept pixels :math:`i = 1..n` (valid, with a finite non-zero true normal),
    both vectors L2-normalised:

    .. math::
        \mathcal{L} = \frac{1}{n}\sum_i \theta_i, \qquad
        \theta_i = \arccos(\hat{n}_i \cdot n_i)
                 = \operatorname{atan2}\bigl(\lVert \hat{n}_i \times n_i \rVert,\
                   \hat{n}_i \cdot n_i\bigr).

    The loss is linear in the angle, so small errors keep a gradient of constant size,
    which is why it is the normals task's default: :math:`1-\cos\theta \approx \theta^2/2`
    (the cosine loss) fades out near the optimum and leaves the median error higher
    (Do et al., ECCV 2020; Bae et al., ICCV 2021 train with the angular loss for this
    reason).

    Numerics: :math:`\arccos` has an infinite slope at :math:`\pm 1`, and clamping its
    argument would make identical normals cost :math:`\arccos(1-\epsilon) > 0`. The
    ``atan2`` form is exact there instead: identical normals cost exactly 0 with a
    finite (zero) gradient, opposite ones exactly :math:`\pi`, and the gradient is
    bounded everywhere (the norm of the cross product uses a zero-safe square root).
    With no kept pixel the loss is 0.
    """

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        p, t = select(prediction, target, valid, "angular")
        sine = _safe_norm(torch.linalg.cross(p, t, dim=1))
        cosine = (p * t).sum(dim=1)
        angles = torch.atan2(sine, cosine)
        total = angles.sum() / max(angles.numel(), 1)
        return pixcore.LossOutput(total, {"angular": total.detach()})


class CosineLoss(pixcore.Loss):
    r"""Mean cosine distance between predicted and true normals.

    Same kept pixels and normalisation as :class:`AngularLoss`:

    .. math::
        \mathcal{L} = \frac{1}{n}\sum_i \bigl(1 - \hat{n}_i \cdot n_i\bigr)
                    = \frac{1}{n}\sum_i (1 - \cos\theta_i) \in [0, 2].

    Up to the constant 1, this is the dot-product loss of Eigen & Fergus (ICCV 2015).
    Smooth everywhere, but its gradient vanishes as the error goes to 0
    (:math:`1 - \cos\theta \approx \theta^2 / 2`). With no kept pixel the loss is 0.
    """

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        p, t = select(prediction, target, valid, "cosine")
        distance = 1.0 - (p * t).sum(dim=1)
        total = distance.sum() / max(distance.numel(), 1)
        return pixcore.LossOutput(total, {"cosine": total.detach()})


class NormalsL1Loss(pixcore.Loss):
    r"""Mean L1 distance between the L2-normalised predicted and true normals.

    Same kept pixels and normalisation as :class:`AngularLoss`; the three components'
    absolute differences are summed per pixel and averaged over pixels:

    .. math::
        \mathcal{L} = \frac{1}{n}\sum_i \lVert \hat{n}_i - n_i \rVert_1
                    = \frac{1}{n}\sum_i \sum_{k \in \{x, y, z\}} |\hat{n}_{ik} - n_{ik}|
                    \in [0, 2\sqrt{3}].

    This is the "L1" loss of Bae et al. (ICCV 2021, *Estimating and exploiting the
    aleatoric uncertainty in surface normal estimation*), where it is compared with the
    angular loss. Its gradient does not vanish near the optimum (like the angular loss,
    unlike the cosine loss), but it is not rotation invariant: for a given angle, with
    :math:`\lVert \hat{n}_i - n_i \rVert_2 = 2\sin(\theta_i / 2)`, the L1 distance is
    up to :math:`\sqrt{3}` times larger when the difference points along a diagonal
    :math:`(\pm 1, \pm 1, \pm 1)` than along an axis. The gradient is finite everywhere
    (the subgradient of :math:`|x|` at 0 is 0). With no kept pixel the loss is 0.
    """

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        p, t = select(prediction, target, valid, "normals_l1")
        distance = (p - t).abs().sum(dim=1)
        total = distance.sum() / max(distance.numel(), 1)
        return pixcore.LossOutput(total, {"normals_l1": total.detach()})
