"""The monocular depth task."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pixcore
import torch
import torch.nn.functional as F
from pixcore.targets import ScalarField
from pydantic import Field
from torch import Tensor

from pixcore_depth._colormap import turbo
from pixcore_depth._common import scale_and_shift, usable

__all__ = ["DepthMode", "DepthTask", "Parameterization", "RelativeDepthTask", "check_depth_range"]

#: Upper clamp of decoded depth when ``max_depth`` is None, metres (keeps ``exp`` finite).
DEPTH_CEILING = 1e4

#: How the head's raw channel is turned into depth.
Parameterization = Literal["log", "softplus"]
#: Metric depth (metres) or relative depth (up to a per-image scale and shift).
DepthMode = Literal["metric", "relative"]


def check_depth_range(min_depth: float, max_depth: float | None) -> None:
    """A cap above the floor: ``max_depth > min_depth`` (or no cap)."""
    if max_depth is not None and max_depth <= min_depth:
        raise ValueError(f"max_depth ({max_depth}) must be greater than min_depth ({min_depth})")



class DepthTask(pixcore.Task):
    """Depth per pixel, from one raw channel.

    * prediction: depth ``[B, 1, H, W]``, always in ``[min_depth, max_depth or 1e4]``;
      in metres (``mode="metric"``) or in arbitrary units, up to a per-image scale and
      shift (``mode="relative"``);
    * target: a :class:`~pixcore.targets.ScalarField` under ``target_key``; pixels where
      ``valid_key`` is False (or the depth is not a finite positive number) are skipped;
    * defaults: head ``fpn``, loss ``silog`` (``ssi`` in relative mode), metrics
      ``("depth_errors",)``;
    * ``context()`` offers ``min_depth``, ``max_depth`` and ``mode`` to losses and metrics.

    **Decoding** (``parameterization``). With ``"log"`` (the default) the head predicts
    log-depth and :meth:`decode` returns its exponential: depth is positive by
    construction; SILog, the default loss, is a function of ``log depth``, so its gradient
    w.r.t. the raw output is the plain log error (the same relative step for near and far
    pixels); and the heads' near-zero initial output decodes to 1 m, a sensible starting
    depth. The log-depth is clamped to ``[log min_depth, log max_depth]`` so that ``exp``
    can neither underflow to 0 nor overflow. With ``"softplus"``, depth is
    ``softplus(raw) + min_depth`` (near-linear in the raw output for large depths, which
    suits losses on depth itself such as ``l1`` and ``berhu``; an initial output of 0
    decodes to ``ln 2 + min_depth``), clamped above at ``max_depth``. Either clamp passes
    gradients straight through (the value is clamped, the gradient is that of the
    unclamped output), so an output that strays outside the range is still pulled back by
    the loss instead of receiving no gradient.

    **Modes.** ``DepthTask(mode="relative")`` returns a :class:`RelativeDepthTask`, the
    same task whose default loss is ``ssi``; the ``depth_errors`` metric reads the mode
    from :meth:`context` and then aligns each predicted map to its ground truth before
    scoring (least-squares scale and shift unless configured otherwise).

    Args:
        target_key: Sample key of the depth map (metres).
        valid_key: Sample key of the validity mask.
        min_depth: Smallest depth predicted and scored (positive).
        max_depth: Largest depth predicted and scored, above ``min_depth``; None: no cap.
        parameterization: How the raw channel becomes depth: ``'log'`` (exp of log-depth)
            or ``'softplus'`` (softplus(raw) + min_depth).
        mode: ``'metric'``: depth in metres (default loss silog); ``'relative'``: depth up
            to a per-image scale and shift (default loss ssi, metric aligned per image).
            None: the class's mode (``'metric'`` for :class:`DepthTask`).

    """

    target_kind = ScalarField
    default_head = "fpn"
    default_loss = "silog"
    default_metrics = ("depth_errors",)

    #: ``"metric"`` or ``"relative"``; fixed by the class.
    mode: ClassVar[DepthMode] = "metric"

    def __new__(cls, *args: Any, **kwargs: Any) -> DepthTask:
        # The default loss is a class attribute (pixcore reads ``type(task).default_loss``),
        # so relative depth is its own subclass, chosen here from the ``mode`` argument.
        mode = kwargs.get("mode", args[5] if len(args) > 5 else None)
        if cls is DepthTask and mode == "relative":
            cls = RelativeDepthTask
        return super().__new__(cls)

    def __init__(
        self,
        target_key: str = "depth",
        valid_key: str | None = "valid",
        min_depth: Annotated[float, Field(gt=0.0)] = 1e-3,
        max_depth: float | None = None,
        parameterization: Parameterization = "log",
        mode: DepthMode | None = None,
    ) -> None:
        self.check_params(min_depth, max_depth)
        if mode is not None and mode != self.mode:
            raise ValueError(
                f"{type(self).__name__} predicts {self.mode} depth, got mode={mode!r}; "
                f"create DepthTask(mode={mode!r}) instead"
            )
        super().__init__(target_key, valid_key)
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.parameterization: Parameterization = parameterization

    @staticmethod
    def check_params(min_depth: float, max_depth: float | None) -> None:
        """``max_depth`` above ``min_depth``."""
        check_depth_range(min_depth, max_depth)

    @property
    def out_channels(self) -> int:
        return 1

    def context(self) -> dict[str, Any]:
        return {"min_depth": self.min_depth, "max_depth": self.max_depth, "mode": self.mode}

    def decode(self, raw: Tensor) -> Tensor:
        """Raw output ``[B, 1, H, W]`` -> depth (see the class docstring)."""
        value = raw.float()
        upper = self.max_depth if self.max_depth is not None else DEPTH_CEILING
        # Straight-through clamps: the value is exactly the clamped one (``x - x.detach()``
        # is exactly 0), the gradient that of the unclamped expression.
        if self.parameterization == "log":
            log_depth = value.detach().clamp(math.log(self.min_depth), math.log(upper))
            depth = torch.exp(log_depth).clamp(self.min_depth, upper)  # exp's rounding too
            # d depth / d raw = depth, as for exp(raw).
            return depth * (1.0 + (value - value.detach()))
        soft = F.softplus(value) + self.min_depth
        return soft.detach().clamp(max=upper) + (soft - soft.detach())

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



class RelativeDepthTask(DepthTask):
    """Depth up to a per-image scale and shift (``DepthTask(mode="relative")``).

    The same decoding, targets and context as :class:`DepthTask`, with ``mode =
    "relative"``: the default loss is ``ssi`` (scale-and-shift-invariant, Ranftl et al.
    2020), the ``depth_errors`` metric aligns each prediction to its ground truth by
    least-squares scale and shift before scoring, and :meth:`visualize_pair` draws the
    prediction after the same alignment, so that its colours can be compared with the
    target's. The decoded range ``[min_depth, max_depth]`` only bounds the network's
    arbitrary units.
    """

    default_loss = "ssi"
    mode: ClassVar[DepthMode] = "relative"

    def visualize_pair(
        self, target: Tensor, prediction: Tensor, valid: Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Target and the prediction aligned to it (least-squares scale and shift), on the
        target's colour scale."""
        truth = target.detach().double().cpu().reshape(1, *target.shape[-2:])
        predicted = prediction.detach().double().cpu().reshape(1, *prediction.shape[-2:])
        mask = torch.ones_like(truth, dtype=torch.bool) if valid is None else (
            valid.detach().cpu().bool().reshape(truth.shape)
        )
        keep = usable(truth, mask) & predicted.isfinite()
        if bool(keep.any()):
            scale, shift = scale_and_shift(
                torch.where(keep, predicted, 1.0), torch.where(keep, truth, 1.0), keep
            )
            predicted = scale * predicted + shift
        return super().visualize_pair(target, predicted.float()[0], valid)


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
