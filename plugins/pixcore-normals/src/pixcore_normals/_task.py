"""The surface normal task."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pixcore
import torch
import torch.nn.functional as F
from pixcore.targets import UnitVectorField
from pixcore.viz import normals_to_rgb
from torch import Tensor

from pixcore_normals._common import usable

__all__ = ["NORMAL_PRIOR", "NormalsTask"]

#: Added to the raw output before normalising: the normal facing the camera (-z).
NORMAL_PRIOR = (0.0, 0.0, -1.0)


class NormalsTask(pixcore.Task):
    """Unit surface normals per pixel, camera frame (x right, y down, z forward).

    * prediction: unit vectors ``[B, 3, H, W]``;
    * target: a :class:`~pixcore.targets.UnitVectorField` under ``target_key``; pixels
      where ``valid_key`` is False, or whose normal is zero or not finite, are skipped;
    * defaults: head ``fpn``, loss ``angular`` (linear in the error, see
      :class:`~pixcore_normals.AngularLoss`), metrics ``("angular_error",)``.

    **Decoding** is an eps-safe L2 normalisation over the channel dimension of
    ``raw + (0, 0, -1)``. The offset moves the singular point of the normalisation (a
    zero vector, where its gradient ``1/|x|`` explodes) away from where heads start:
    their output layer is initialised near zero, so without it the first gradients would
    be amplified about a hundredfold into the shared backbone. With it, training starts
    from the normal facing the camera, the most common direction, with gradients of
    ordinary size; the map from raw output to normal is otherwise unchanged.

    Args:
        target_key: Sample key of the normal map.
        valid_key: Sample key of the validity mask.

    """

    target_kind = UnitVectorField
    default_head = "fpn"
    default_loss = "angular"
    default_metrics = ("angular_error",)

    def __init__(self, target_key: str = "normals", valid_key: str | None = "valid") -> None:
        super().__init__(target_key, valid_key)

    @property
    def out_channels(self) -> int:
        return 3

    def decode(self, raw: Tensor) -> Tensor:
        """Raw ``[B, 3, H, W]`` -> unit normals (see the class docstring)."""
        prior = torch.tensor(NORMAL_PRIOR, dtype=torch.float32, device=raw.device).view(1, 3, 1, 1)
        return F.normalize(raw.float() + prior, dim=1, eps=1e-6)

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        """Normals ``[3, H, W]`` -> RGB ``(n + 1) / 2`` (:func:`pixcore.viz.normals_to_rgb`).

        Pixels where ``valid`` is False, or whose normal is zero or not finite, are black.
        """
        if value.ndim != 3 or value.shape[0] != 3:
            raise ValueError(
                f"a normal map to visualise has shape [3, H, W], got {tuple(value.shape)}"
            )
        return normals_to_rgb(value, valid)

    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        """The normalised mean of the valid true normals, ``[3]``.

        Each normal is normalised first, so every pixel weighs the same; if the mean is
        (numerically) zero the camera-facing normal ``(0, 0, -1)`` is returned.
        """
        total = torch.zeros(3, dtype=torch.float64)
        count = 0
        for target, valid in targets:
            keep = usable(target, valid)
            vectors = target.permute(0, 2, 3, 1)[keep].double()
            total += F.normalize(vectors, dim=1).sum(0).cpu()
            count += int(keep.sum())
        if count == 0:
            raise ValueError(
                f"normals baseline: no valid pixel with a normal; check `target_key` "
                f"({self.target_key!r}) and `valid_key` ({self.valid_key!r})"
            )
        if float(total.norm()) < 1e-9 * count:
            return torch.tensor(NORMAL_PRIOR)
        return F.normalize(total, dim=0).float()
