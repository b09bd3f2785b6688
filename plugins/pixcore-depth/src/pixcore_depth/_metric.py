"""The standard depth error metrics, with every protocol choice explicit and named."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

import pixcore
import torch
from pydantic import Field
from torch import Tensor

from pixcore_depth._common import Space, as_depth_map, masked_median, scale_and_shift, scale_only

__all__ = ["CROPS", "DepthErrors", "crop_box"]

Crop = Literal["eigen", "eigen_kitti", "garg"]
Aggregation = Literal["pooled", "per_image"]
Alignment = Literal["none", "median", "lsq_scale", "lsq_scale_shift"]

#: The evaluation crops as fractions of the ground-truth height and width:
#: ``(top, bottom, left, right)``; rows ``int(top * H) : int(bottom * H)`` and columns
#: ``int(left * W) : int(right * W)`` are evaluated.
#:
#: * ``eigen``: NYU Depth v2 (Eigen et al. 2014): rows 45:471 and columns 41:601 of the
#:   480x640 images, the area where the Kinect depth is projected (the crop of the BTS and
#:   AdaBins evaluation scripts). Exact fractions: 45/480, 471/480, 41/640, 601/640.
#: * ``eigen_kitti``: KITTI, Eigen split (Eigen et al. 2014), as in the BTS evaluation
#:   script's ``--eigen_crop`` for KITTI: 0.3324324, 0.91351351, 0.0359477, 0.96405229.
#: * ``garg``: KITTI, Eigen split (Garg et al. 2016), as in the Monodepth2 and BTS
#:   evaluation scripts: 0.40810811, 0.99189189, 0.03594771, 0.96405229 (rows 153:371,
#:   columns 44:1197 of a 375x1242 image).
CROPS: dict[str, tuple[float, float, float, float]] = {
    "eigen": (45 / 480, 471 / 480, 41 / 640, 601 / 640),
    "eigen_kitti": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
}

#: The NYU crop is defined in whole pixels of 480x640; integer arithmetic keeps it exact.
_EXACT = {"eigen": ((45, 480), (471, 480), (41, 640), (601, 640))}

_RESULTS = (
    "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3"
)
_POOLED_STATES = (
    "count", "abs_rel", "sq_rel", "sq_err", "sq_log_err", "log_err", "abs_log10",
    "delta1", "delta2", "delta3",
)
_PER_IMAGE_STATES = ("images", *_RESULTS)


def crop_box(crop: str, height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` pixel bounds of ``crop`` on a ``height x width`` map."""
    if crop in _EXACT:
        (t, tn), (b, bn), (l_, ln), (r, rn) = _EXACT[crop]
        return t * height // tn, b * height // bn, l_ * width // ln, r * width // rn
    top, bottom, left, right = CROPS[crop]
    return int(top * height), int(bottom * height), int(left * width), int(right * width)


def _number(x: float | None) -> str:
    return "inf" if x is None else f"{x:g}"


def _decimal(x: float) -> str:
    """``1.0``, ``0.85``: a number that always reads as a fraction."""
    text = f"{x:g}"
    return text if ("." in text or "e" in text) else text + ".0"


def _resolved_alignment(mode: str, alignment: Alignment | None) -> Alignment:
    """The alignment in use: the configured one, else the mode's default."""
    if alignment is not None:
        return alignment
    return "none" if mode == "metric" else "lsq_scale_shift"


def _protocol(metric: DepthErrors) -> str:
    """The protocol name: every option that changes a number, in order."""
    aligned = {
        "none": "not-aligned",
        "median": "median-aligned",
        "lsq_scale": "lsq-scale-aligned",
        "lsq_scale_shift": "lsq-scale-shift-aligned",
    }[metric.alignment]
    if metric.alignment_space == "disparity":
        aligned = aligned.replace("-aligned", "-disparity-aligned")
    crop = "no-crop" if metric.crop is None else f"{metric.crop.replace('_', '-')}-crop"
    return "/".join([
        metric.aggregation.replace("_", "-"),
        crop,
        f"cap-[{_number(metric.min_depth)},{_number(metric.max_depth)}]",
        aligned,
        f"silog-l{_decimal(metric.silog_lambda)}-x{_number(metric.silog_scale)}",
    ])


class DepthErrors(pixcore.Metric):
    r"""AbsRel, SqRel, RMSE, RMSE log, log10, SILog and the :math:`\delta` accuracies.

    The metrics of Eigen, Puhrsch and Fergus (NeurIPS 2014), with SILog as the KITTI
    depth benchmark reports it (Uhrig et al. 2017). Every choice that changes a number is
    a parameter and is spelled out in :attr:`protocol`, e.g.
    ``per-image/eigen-crop/cap-[0.001,10]/not-aligned/silog-l1.0-x100``.

    **Evaluated pixels** of each image: valid, inside the crop (if any), with a finite true
    depth :math:`y` *strictly* between ``min_depth`` and ``max_depth`` (as the BTS,
    AdaBins and Monodepth2 scripts select them).

    **Alignment** (per image, fitted on its evaluated pixels, before clamping):

    * ``none``: the prediction as is (metric depth);
    * ``median``: :math:`\hat{y} \leftarrow \hat{y}\,\operatorname{med}(y) /
      \operatorname{med}(\hat{y})`, the ratio of the medians (Zhou et al. 2017,
      Monodepth2; the median of an even count is the mean of the two middle values);
    * ``lsq_scale``: :math:`\hat{y} \leftarrow s\hat{y}`, :math:`s = \sum \hat{y}y /
      \sum \hat{y}^2`;
    * ``lsq_scale_shift``: :math:`\hat{y} \leftarrow s\hat{y} + t`, least squares in
      *depth* (an image whose predictions are all equal gets :math:`s = 0`,
      :math:`t = \bar{y}`).

    With ``alignment_space="disparity"`` the two least-squares fits are made on
    :math:`1/\hat{y}` against :math:`1/y` instead (the MiDaS evaluation); the aligned
    disparity is clamped below at ``1/max_depth`` and inverted back to depth.

    The (aligned) prediction is then clamped to ``[min_depth, max_depth]``. With
    :math:`d = \ln\hat{y} - \ln y` and :math:`n` evaluated pixels:

    * ``abs_rel`` :math:`= \frac{1}{n}\sum |\hat{y}-y| / y`
    * ``sq_rel`` :math:`= \frac{1}{n}\sum (\hat{y}-y)^2 / y`
    * ``rmse`` :math:`= \sqrt{\frac{1}{n}\sum (\hat{y}-y)^2}`
    * ``rmse_log`` :math:`= \sqrt{\frac{1}{n}\sum d^2}`
    * ``log10`` :math:`= \frac{1}{n}\sum |\log_{10}\hat{y}-\log_{10} y|`
    * ``silog`` :math:`= \alpha\sqrt{\frac{1}{n}\sum d^2 - \lambda(\frac{1}{n}\sum d)^2}`,
      :math:`\lambda` = ``silog_lambda`` (1), :math:`\alpha` = ``silog_scale`` (100): the
      KITTI benchmark's "SILog" (also the BTS and AdaBins scripts);
    * ``delta1..3``: the fraction (in [0, 1]) with :math:`\max(\hat{y}/y, y/\hat{y}) <
      1.25^k`, :math:`k = 1, 2, 3`.

    **Aggregation**: ``pooled`` computes each formula over all evaluated pixels of the
    whole evaluation; ``per_image`` computes it per image and averages over the images
    that have at least one evaluated pixel (what the BTS, AdaBins and Monodepth2 scripts
    report). Lower is better for every key but ``delta1..3``. The state is float64 sums
    (pooled: error sums and a pixel count; per image: sums of per-image results and an
    image count), so distributed sum-reduction is exact.

    Args:
        min_depth: Ground truth must exceed it; predictions are clamped up to it (metres,
            positive; given by the depth task).
        max_depth: Ground truth must be below it; predictions are clamped down to it
            (metres; 10 for NYU, 80 for KITTI; given by the depth task). None: no cap.
        mode: Given by the depth task; picks the default alignment.
        crop: Evaluation crop: ``'eigen'`` (NYU), ``'eigen_kitti'`` or ``'garg'`` (KITTI);
            None: the whole map.
        aggregation: ``'pooled'``: every metric over all pixels of the evaluation;
            ``'per_image'``: every metric per image, then the mean over images (BTS,
            AdaBins, Monodepth2).
        alignment: Per-image alignment of the prediction before scoring: ``'none'``,
            ``'median'``, ``'lsq_scale'``, ``'lsq_scale_shift'``. None: ``'none'`` in metric
            mode, ``'lsq_scale_shift'`` in relative mode.
        alignment_space: Where ``'lsq_scale'`` and ``'lsq_scale_shift'`` fit: ``'depth'``
            or ``'disparity'`` (inverse depth, as MiDaS evaluates).
        silog_lambda: :math:`\lambda` of the silog result, in ``[0, 1]`` (the KITTI
            benchmark uses 1).
        silog_scale: Factor on the silog result, positive (the KITTI benchmark: 100).

    """

    #: The protocol of the default configuration (set below the class).
    protocol: ClassVar[str]
    higher_is_better: ClassVar[Mapping[str, bool]] = {
        key: key.startswith("delta") for key in _RESULTS
    }

    def __init__(
        self,
        min_depth: Annotated[float, Field(gt=0.0)] = 1e-3,
        max_depth: float | None = None,
        mode: Literal["metric", "relative"] = "metric",
        crop: Crop | None = None,
        aggregation: Aggregation = "pooled",
        alignment: Alignment | None = None,
        alignment_space: Space = "depth",
        silog_lambda: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0,
        silog_scale: Annotated[float, Field(gt=0.0)] = 100.0,
    ) -> None:
        super().__init__()
        self.check_params(min_depth, max_depth, mode, alignment, alignment_space)
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.crop = crop
        self.aggregation = aggregation
        self.alignment: Alignment = _resolved_alignment(mode, alignment)
        self.alignment_space = alignment_space
        self.silog_lambda = silog_lambda
        self.silog_scale = silog_scale
        # The class attribute names the default configuration; an instance names its own.
        self.protocol = _protocol(self)  # type: ignore[misc]
        names = _POOLED_STATES if aggregation == "pooled" else _PER_IMAGE_STATES
        for name in names:
            self.add_state(name, torch.zeros((), dtype=torch.float64))

    @staticmethod
    def check_params(
        min_depth: float, max_depth: float | None, mode: str, alignment: Alignment | None,
        alignment_space: Space,
    ) -> None:
        """The caps, the mode and the alignment fit together."""
        if max_depth is not None and max_depth <= min_depth:
            raise ValueError(
                f"max_depth ({max_depth}) must be greater than min_depth ({min_depth})"
            )
        if mode == "relative" and alignment == "none":
            raise ValueError(
                "alignment 'none' scores the arbitrary scale of relative depth; with mode "
                "'relative' choose 'median', 'lsq_scale' or 'lsq_scale_shift' (the default)"
            )
        if alignment_space == "disparity":
            resolved = _resolved_alignment(mode, alignment)
            if resolved not in ("lsq_scale", "lsq_scale_shift"):
                raise ValueError(
                    f"alignment_space 'disparity' applies to least-squares alignment only; "
                    f"alignment is {resolved!r}: set alignment to 'lsq_scale' "
                    "or 'lsq_scale_shift', or alignment_space to 'depth'"
                )
            if max_depth is None:
                raise ValueError(
                    "alignment_space 'disparity' needs max_depth: aligned disparities below "
                    "1/max_depth are clamped to it (as MiDaS evaluates); set max_depth, e.g. 10"
                )

    # -- update -----------------------------------------------------------------------

    def _evaluated(self, true: Tensor, valid: Tensor) -> Tensor:
        upper = math.inf if self.max_depth is None else self.max_depth
        keep = valid.bool() & true.isfinite() & (true > self.min_depth) & (true < upper)
        if self.crop is not None:
            top, bottom, left, right = crop_box(self.crop, *true.shape[-2:])
            inside = torch.zeros_like(keep)
            inside[:, top:bottom, left:right] = True
            keep = keep & inside
        return keep

    def _align(self, p: Tensor, y: Tensor, keep: Tensor) -> Tensor:
        shape = (-1, 1, 1)
        if self.alignment == "none":
            return p
        if self.alignment == "median":
            return p * (masked_median(y, keep) / masked_median(p, keep)).view(shape)
        if self.alignment_space == "depth":
            if self.alignment == "lsq_scale":
                return scale_only(p, y, keep).view(shape) * p
            s, t = scale_and_shift(p, y, keep)
            return s.view(shape) * p + t.view(shape)
        x, z = p.reciprocal(), y.reciprocal()
        if self.alignment == "lsq_scale":
            disparity = scale_only(x, z, keep).view(shape) * x
        else:
            s, t = scale_and_shift(x, z, keep)
            disparity = s.view(shape) * x + t.view(shape)
        assert self.max_depth is not None  # checked by check_params
        return disparity.clamp(min=1.0 / self.max_depth).reciprocal()

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        what = "depth_errors"
        predicted = as_depth_map(prediction, what, "prediction").detach().double()
        true = as_depth_map(target, what, "target").detach().double()
        if predicted.shape != true.shape or true.shape != valid.shape:
            raise ValueError(
                f"{what}: prediction {tuple(prediction.shape)}, target {tuple(target.shape)} and "
                f"valid {tuple(valid.shape)} must cover the same [B, H, W] pixels"
            )
        keep = self._evaluated(true, valid)
        # Unevaluated pixels hold 1.0 from here on, so that no arithmetic on whatever they
        # held (0, NaN) can reach a sum; every sum below is also masked by `keep`.
        one = torch.ones((), dtype=torch.float64, device=true.device)
        y = torch.where(keep, true, one)
        p = torch.where(keep, predicted, one)
        upper = math.inf if self.max_depth is None else self.max_depth
        p = self._align(p, y, keep).clamp(self.min_depth, upper)

        d = p.log() - y.log()
        ratio = torch.maximum(p / y, y / p)
        per_pixel = {
            "abs_rel": (p - y).abs() / y,
            "sq_rel": (p - y).square() / y,
            "sq_err": (p - y).square(),
            "sq_log_err": d.square(),
            "log_err": d,
            "abs_log10": (p.log10() - y.log10()).abs(),
            "delta1": (ratio < 1.25).double(),
            "delta2": (ratio < 1.25**2).double(),
            "delta3": (ratio < 1.25**3).double(),
        }
        m = keep.reshape(keep.shape[0], -1)
        count = m.sum(1).double()
        sums = {
            name: torch.where(m, value.reshape(m.shape), 0.0).sum(1)
            for name, value in per_pixel.items()
        }
        if self.aggregation == "pooled":
            totals = {"count": count.sum(), **{name: s.sum() for name, s in sums.items()}}
        else:
            scored = count > 0
            per_image = self._results(count.clamp(min=1.0), sums)
            totals = {"images": scored.double().sum()}
            totals.update({k: torch.where(scored, v, 0.0).sum() for k, v in per_image.items()})
        for name, value in totals.items():
            self._state[name] = self._state[name].to(value.device) + value

    # -- compute ----------------------------------------------------------------------

    def _results(self, n: Tensor, sums: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The nine results from error sums over ``n`` pixels (elementwise)."""
        mean = {name: value / n for name, value in sums.items()}
        radicand = mean["sq_log_err"] - self.silog_lambda * mean["log_err"].square()
        return {
            "abs_rel": mean["abs_rel"],
            "sq_rel": mean["sq_rel"],
            "rmse": mean["sq_err"].sqrt(),
            "rmse_log": mean["sq_log_err"].sqrt(),
            "log10": mean["abs_log10"],
            "silog": self.silog_scale * radicand.clamp(min=0.0).sqrt(),
            "delta1": mean["delta1"],
            "delta2": mean["delta2"],
            "delta3": mean["delta3"],
        }

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        if self.aggregation == "pooled":
            n = state["count"].double()
            if float(n) == 0:
                return {key: math.nan for key in _RESULTS}
            results = self._results(n, {k: v.double() for k, v in state.items() if k != "count"})
            return {key: float(results[key]) for key in _RESULTS}
        images = float(state["images"])
        if images == 0:
            return {key: math.nan for key in _RESULTS}
        return {key: float(state[key]) / images for key in _RESULTS}


DepthErrors.protocol = DepthErrors().protocol
