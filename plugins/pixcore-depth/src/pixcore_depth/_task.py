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

__all__ = [
    "BinSpacing",
    "DepthMode",
    "DepthTask",
    "Parameterization",
    "RelativeDepthTask",
    "bin_centres",
    "bin_edges",
    "check_depth_range",
]

#: Upper clamp of decoded depth when ``max_depth`` is None, metres (keeps ``exp`` finite).
DEPTH_CEILING = 1e4

#: How the head's raw channel is turned into depth.
Parameterization = Literal["log", "softplus"]
#: Metric depth (metres) or relative depth (up to a per-image scale and shift).
DepthMode = Literal["metric", "relative"]
#: How depth bins are spaced over ``[min_depth, max_depth]`` (see :func:`bin_edges`).
BinSpacing = Literal["uniform", "log", "sid"]


def check_depth_range(min_depth: float, max_depth: float | None) -> None:
    """A cap above the floor: ``max_depth > min_depth`` (or no cap)."""
    if max_depth is not None and max_depth <= min_depth:
        raise ValueError(f"max_depth ({max_depth}) must be greater than min_depth ({min_depth})")


def bin_edges(min_depth: float, max_depth: float, bins: int, spacing: BinSpacing) -> Tensor:
    r"""The ``bins + 1`` edges :math:`e_0 = \alpha < e_1 < \dots < e_N = \beta` of ``bins``
    depth bins over :math:`[\alpha, \beta]` = ``[min_depth, max_depth]``, float64.

    * ``"uniform"``: :math:`e_i = \alpha + (\beta - \alpha)\, i / N`, equal widths;
    * ``"log"``: :math:`e_i = \exp(\log\alpha + \log(\beta/\alpha)\, i / N)`, equal widths
      in log depth (each edge a constant factor :math:`(\beta/\alpha)^{1/N}` beyond the
      previous one). This is SID as first written in DORN (Fu et al., CVPR 2018, eq. 1)
      *without* its shift;
    * ``"sid"``: DORN's spacing-increasing discretisation as DORN applies it: the range is
      shifted by :math:`\xi = 1 - \alpha` to :math:`[\alpha^*, \beta^*] = [1, \beta + \xi]`,
      log-spaced there, and shifted back:
      :math:`e_i = \exp(\log\alpha^* + \log(\beta^*/\alpha^*)\, i/N) - \xi
      = (\beta - \alpha + 1)^{i/N} - 1 + \alpha`. Near :math:`\alpha` the bins are about
      :math:`\ln(\beta - \alpha + 1)/N` metres wide whatever :math:`\alpha` is, and they
      widen geometrically with depth; ``"log"`` instead makes the first bin
      :math:`\alpha((\beta/\alpha)^{1/N} - 1)` wide, so that with a tiny ``min_depth``
      (the default 1e-3) most of its bins lie below 1 m.

    The end edges are exactly ``min_depth`` and ``max_depth``.
    """
    alpha, beta = float(min_depth), float(max_depth)
    fraction = torch.arange(bins + 1, dtype=torch.float64) / bins
    if spacing == "uniform":
        edges = alpha + (beta - alpha) * fraction
    elif spacing == "log":
        edges = torch.exp(math.log(alpha) + math.log(beta / alpha) * fraction)
    elif spacing == "sid":
        # (beta*)^(i/N) - 1 + alpha with beta* = beta - alpha + 1, in a cancellation-free form.
        edges = torch.expm1(math.log1p(beta - alpha) * fraction) + alpha
    else:
        raise ValueError(f"bin_spacing must be 'uniform', 'log' or 'sid', got {spacing!r}")
    edges[0], edges[-1] = alpha, beta
    return edges


def bin_centres(min_depth: float, max_depth: float, bins: int, spacing: BinSpacing) -> Tensor:
    r"""The ``bins`` centres :math:`c_i` of the bins of :func:`bin_edges`, float64.

    ``"uniform"`` and ``"sid"``: the midpoint :math:`c_i = (e_i + e_{i+1})/2` (for ``"sid"``
    DORN's decoding :math:`(t_i + t_{i+1})/2 - \xi` of its shifted thresholds, the same
    value); ``"log"``: the geometric mean :math:`c_i = \sqrt{e_i e_{i+1}}`, i.e. the
    midpoint in log depth. Every centre lies strictly inside ``(min_depth, max_depth)``.
    """
    edges = bin_edges(min_depth, max_depth, bins, spacing)
    if spacing == "log":
        return torch.sqrt(edges[:-1] * edges[1:])
    return 0.5 * (edges[:-1] + edges[1:])


class DepthTask(pixcore.Task):
    """Depth per pixel, regressed from one raw channel or combined from ``bins`` bin logits.

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

    **Depth as classification over bins** (``bins=N``). The head outputs N channels, one
    logit per depth bin of ``[min_depth, max_depth]`` (``max_depth`` is then required),
    with centres ``c_i`` spaced by ``bin_spacing`` (see :func:`bin_edges` and
    :func:`bin_centres`). :meth:`decode` takes the softmax over the channels and returns
    the probability-weighted mean of the centres, ``sum_i p_i c_i``, as ``[B, 1, H, W]``
    (the "hybrid regression" of AdaBins, Bhat et al., CVPR 2021), so that every depth loss
    and metric works unchanged on it and the gradient reaches every logit. It lies in
    ``[c_0, c_{N-1}]``, inside ``[min_depth, max_depth]``. The heads' near-zero initial
    output gives uniform probabilities, hence the mean of the centres: ``(min_depth +
    max_depth) / 2`` for uniform bins. DINOv2 (Oquab et al. 2023, section 7, linear depth
    heads) uses 256 uniform bins this way; its released heads put the centres at
    ``linspace(min_depth, max_depth, 256)`` (end points included) and normalise the
    logits with ``relu(x) + 0.1`` divided by its sum rather than a softmax.
    ``parameterization`` applies to regression only. Bins are refused in relative mode,
    where depth has no fixed range to divide.

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
        bins: None: regress depth from one raw channel. N >= 2: depth as classification
            over N bins of ``[min_depth, max_depth]`` (``max_depth`` required, metric mode
            only): the head outputs N logits and depth is the softmax-weighted mean of the
            bin centres (AdaBins, Bhat et al. 2021; DINOv2 uses 256).
        bin_spacing: Bin edges over ``[min_depth, max_depth]``: ``'uniform'`` (equal widths,
            centres the midpoints), ``'log'`` (equal widths in log depth, centres the
            geometric means) or ``'sid'`` (DORN's spacing-increasing discretisation, Fu et
            al. 2018: log spacing of the range shifted to start at 1, centres the
            midpoints). Used only with ``bins``.

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
        bins: Annotated[int, Field(ge=2)] | None = None,
        bin_spacing: BinSpacing = "uniform",
    ) -> None:
        if mode is not None and mode != self.mode:
            raise ValueError(
                f"{type(self).__name__} predicts {self.mode} depth, got mode={mode!r}; "
                f"create DepthTask(mode={mode!r}) instead"
            )
        self.check_params(min_depth, max_depth, bins, bin_spacing, parameterization, self.mode)
        super().__init__(target_key, valid_key)
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.parameterization: Parameterization = parameterization
        self.bins = bins
        self.bin_spacing: BinSpacing = bin_spacing
        #: The bin centres ``[bins]`` (float64), or None when regressing.
        self.bin_centres: Tensor | None = None
        if bins is not None and max_depth is not None:
            self.bin_centres = bin_centres(min_depth, max_depth, bins, bin_spacing)

    @staticmethod
    def check_params(
        min_depth: float,
        max_depth: float | None,
        bins: int | None = None,
        bin_spacing: BinSpacing = "uniform",
        parameterization: Parameterization = "log",
        mode: DepthMode | None = None,
    ) -> None:
        """``max_depth`` above ``min_depth``; ``bins`` only with ``max_depth``, in metric mode,
        without ``parameterization='softplus'``."""
        check_depth_range(min_depth, max_depth)
        if bins is None:
            return
        if mode == "relative":
            raise ValueError(
                f"bins={bins} cannot be used with mode='relative': relative depth is known only "
                "up to a per-image scale and shift, so there is no fixed depth range to divide "
                "into bins; use bins with mode='metric', or leave bins unset (regression) for "
                "relative depth"
            )
        if max_depth is None:
            raise ValueError(
                f"bins={bins} needs max_depth: the bins divide [min_depth, max_depth], which has "
                "no upper end without it; set max_depth (e.g. 10.0 for NYU Depth v2, 80.0 for "
                "KITTI), or leave bins unset to regress depth"
            )
        if parameterization != "log":
            raise ValueError(
                f"parameterization={parameterization!r} applies to regression only: with "
                f"bins={bins} depth is the softmax-weighted mean of the bin centres "
                f"(bin_spacing={bin_spacing!r}); remove parameterization, or leave bins unset"
            )

    @property
    def out_channels(self) -> int:
        """1 (regression) or ``bins`` (one logit per bin)."""
        return 1 if self.bins is None else self.bins

    @property
    def prediction_channels(self) -> int:
        """1: the decoded depth, with or without bins."""
        return 1

    def context(self) -> dict[str, Any]:
        return {"min_depth": self.min_depth, "max_depth": self.max_depth, "mode": self.mode}

    def decode(self, raw: Tensor) -> Tensor:
        """Raw output ``[B, out_channels, H, W]`` -> depth ``[B, 1, H, W]`` (see the class
        docstring)."""
        if self.bin_centres is not None:
            return self._decode_bins(raw, self.bin_centres)
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

    def _decode_bins(self, raw: Tensor, centres: Tensor) -> Tensor:
        """Bin logits ``[B, N, H, W]`` -> softmax-weighted mean of the centres ``[B, 1, H, W]``."""
        if raw.ndim != 4 or raw.shape[1] != centres.numel():
            raise ValueError(
                f"depth with bins={centres.numel()} decodes bin logits [B, {centres.numel()}, H, "
                f"W], got {tuple(raw.shape)}"
            )
        probabilities = torch.softmax(raw.float(), dim=1)
        # Elementwise product and sum (not einsum/matmul), so that autocast cannot round the
        # centres to half precision (in bfloat16, a centre near 10 m is off by up to 3 cm).
        weights = centres.to(device=raw.device, dtype=torch.float32).view(1, -1, 1, 1)
        depth = (probabilities * weights).sum(dim=1, keepdim=True)
        # A convex combination of the centres, inside (min_depth, max_depth) but for rounding.
        upper = self.max_depth if self.max_depth is not None else DEPTH_CEILING
        return depth.clamp(self.min_depth, upper)

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
