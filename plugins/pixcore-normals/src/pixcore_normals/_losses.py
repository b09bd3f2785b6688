"""Normal losses: angular error and cosine distance, over valid pixels."""

from __future__ import annotations

import torch
from torch import Tensor

import pixcore
from pixcore_normals._common import select

__all__ = ["AngularLoss", "CosineLoss"]

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
    r"""Mean cosine distance: :math:`\frac{1}{n}\sum_i (1 - \hat{n}_i \cdot n_i)`.

    Same kept pixels and normalisation as :class:`AngularLoss`; smooth everywhere, but
    its gradient vanishes as the error goes to 0. With no kept pixel the loss is 0.
    """

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        p, t = select(prediction, target, valid, "cosine")
        distance = 1.0 - (p * t).sum(dim=1)
        total = distance.sum() / max(distance.numel(), 1)
        return pixcore.LossOutput(total, {"cosine": total.detach()})
