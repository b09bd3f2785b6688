"""The monocular depth task."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

import pixcore
from pixcore.targets import ScalarField
from pixcore_depth._colormap import turbo
from pixcore_depth._common import usable

__all__ = ["DepthParams", "DepthTask"]

#: Upper clamp of decoded depth when ``max_depth`` is None, metres (keeps ``exp`` finite).
DEPTH_CEILING = 1e4


class DepthParams(BaseModel):
    """Parameters of the ``depth`` task."""

    model_config = ConfigDict(extra="forbid")

    target_key: str = Field(default="depth", description="Sample key of the depth map (metres).")
    valid_key: str | None = Field(default="valid", description="Sample key of the validity mask.")
    min_depth: float = Field(
        default=1e-3, gt=0.0, description="Smallest depth predicted and scored."
    )
    max_depth: float | None = Field(
        default=None, description="Largest depth predicted and scored; None: no cap."
    )

    @model_validator(mode="after")
    def _range(self) -> DepthParams:
        if self.max_depth is not None and self.max_depth <= self.min_depth:
            raise ValueError(
                f"max_depth ({self.max_depth}) must be greater than min_depth ({self.min_depth})"
            )
        return self


class DepthTask(pixcore.Task):
    """Metric depth per pixel, from one raw channel.

    * prediction: depth in metres ``[B, 1, H, W]``, always in
      ``[min_depth, max_depth or 1e4]``;
    * target: a :class:`~pixcore.targets.ScalarField` under ``target_key``; pixels where
      ``valid_key`` is False (or the depth is not a finite positive number) are skipped;
    * defaults: head ``fpn``, loss ``silog``, metrics ``("depth_errors",)``;
    * ``context()`` offers ``min_depth`` and ``max_depth`` to losses and metrics.

    **Decoding.** The head predicts log-depth and :meth:`decode` returns its exponential:
    depth is positive by construction; SILog, the default loss, is a function of
    ``log depth``, so its gradient w.r.t. the raw output is the plain log error
    (no vanishing gradient as with softplus near 0, and the same relative step for near
    and far pixels); and the heads' near-zero initial output decodes to 1 m, a sensible
    starting depth. For safety the log-depth is clamped to
    ``[log min_depth, log max_depth]`` so that ``exp`` can neither underflow to 0 nor
    overflow; the clamp passes gradients straight through (the value is clamped, the
    gradient is that of the unclamped log-depth), so an output that strays outside the
    range is still pulled back by the loss instead of receiving no gradient.
    """

    target_kind = ScalarField
    default_head = "fpn"
    default_loss = "silog"
    default_metrics = ("depth_errors",)

    def __init__(
        self,
        target_key: str = "depth",
        valid_key: str | None = "valid",
        min_depth: float = 1e-3,
        max_depth: float | None = None,
    ) -> None:
        params = DepthParams(
            target_key=target_key, valid_key=valid_key, min_depth=min_depth, max_depth=max_depth
        )
        super().__init__(params.target_key, params.valid_key)
        self.min_depth = params.min_depth
        self.max_depth = params.max_depth

    @property
    def out_channels(self) -> int:
        return 1

    def context(self) -> dict[str, Any]:
        return {"min_depth": self.min_depth, "max_depth": self.max_depth}

    def decode(self, raw: Tensor) -> Tensor:
        """Raw log-depth ``[B, 1, H, W]`` -> depth in metres (see the class docstring)."""
        log_depth = raw.float()
        upper = self.max_depth if self.max_depth is not None else DEPTH_CEILING
        clamped = log_depth.clamp(math.log(self.min_depth), math.log(upper))
        # Straight-through clamp: the value of `clamped`, the gradient of `log_depth`.
        return torch.exp(log_depth + (clamped - log_depth).detach())

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        """Depth ``[1, H, W]`` (or ``[H, W]``) -> turbo colours; invalid pixels black.

        The colour range is the 2nd to 98th percentile of the valid pixels (near: dark
        blue, far: red), so that a few outliers do not flatten the picture.
        """
        depth, keep = self._depth_and_keep(value, valid)
        return _colour(depth, keep, _percentile_range(depth, keep))

    def visualize_pair(
        self, target: Tensor, prediction: Tensor, valid: Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Target and prediction on the target's colour scale, so colours mean the same depth."""
        truth, keep = self._depth_and_keep(target, valid)
        predicted, predicted_keep = self._depth_and_keep(prediction, valid)
        value_range = _percentile_range(truth, keep)
        return _colour(truth, keep, value_range), _colour(predicted, predicted_keep, value_range)

    @staticmethod
    def _depth_and_keep(value: Tensor, valid: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        depth = value.detach().float().cpu()
        if depth.ndim == 3 and depth.shape[0] == 1:
            depth = depth[0]
        if depth.ndim != 2:
            raise ValueError(
                f"a depth map to visualise has shape [1, H, W], got {tuple(value.shape)}"
            )
        if valid is None:
            mask = torch.ones_like(depth, dtype=torch.bool)
        else:
            mask = valid.detach().cpu().bool()
        return depth.numpy(), usable(depth, mask).numpy()

    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        """The mean depth over valid pixels, ``[1]`` (a constant prediction)."""
        total, count = 0.0, 0
        for target, valid in targets:
            depth = target.reshape(valid.shape).double()
            keep = usable(depth, valid)
            total += float(depth[keep].sum())
            count += int(keep.sum())
        if count == 0:
            raise ValueError(
                f"depth baseline: no valid pixel with a positive depth; check `target_key` "
                f"({self.target_key!r}) and `valid_key` ({self.valid_key!r})"
            )
        return torch.tensor([total / count], dtype=torch.float32)


def _percentile_range(depth: np.ndarray, keep: np.ndarray) -> tuple[float, float]:
    if not keep.any():
        return 0.0, 1.0
    low, high = np.percentile(depth[keep], [2.0, 98.0])
    return float(low), float(high)


def _colour(depth: np.ndarray, keep: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    picture = np.zeros((*depth.shape, 3), dtype=np.uint8)
    if not keep.any():
        return picture
    low, high = value_range
    if high > low:
        scaled = np.clip((depth[keep] - low) / (high - low), 0.0, 1.0)
    else:
        scaled = np.full(int(keep.sum()), 0.5)
    picture[keep] = turbo(scaled)
    return picture
