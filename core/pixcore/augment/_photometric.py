"""Photometric transforms: they change :class:`~pixcore.targets.Image` values only.

Every other kind passes through untouched (the very same tensor), whatever its rules,
so a photometric transform never refuses a target kind. Images are ``uint8`` (values
0..255, results rounded and clipped) or float (taken to be in ``[0, 1]``; results
clipped to it), ``[..., C, H, W]``, in any memory layout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pixcore._interfaces import Sample
from pixcore._targets import Image
from pixcore.augment._base import Transform, check_number, check_range, uniform
from pixcore.augment._geometry import Size, to_uint8

__all__ = ["ColorJitter", "GaussianBlur", "GaussianNoise", "Normalize", "RandomGamma"]

# RGB -> YIQ. Y is the luma of ITU-R BT.601 (torchvision's grayscale weights); the rows of
# I and Q sum to zero, so grey stays grey under any change of I and Q.
_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
_YIQ_INV = torch.linalg.inv(_YIQ)


def _map_images(sample: Sample, fn: Callable[[Tensor], Tensor]) -> Sample:
    out = dict(sample)
    for key, value in sample.items():
        if isinstance(value, Image):
            out[key] = fn(value.as_subclass(Tensor)).as_subclass(type(value))
    return out


def _full_scale(x: Tensor) -> float:
    """The value of full intensity: 255 for uint8, 1 for float images."""
    if x.dtype.is_floating_point:
        return 1.0
    return float(torch.iinfo(x.dtype).max)


def _to_float(x: Tensor) -> Tensor:
    return x if x.dtype.is_floating_point else x.to(torch.float32)


def _finish(y: Tensor, dtype: torch.dtype, top: float, rounded: bool = False) -> Tensor:
    """Clip a float result (consumed) to ``[0, top]`` and cast back to ``dtype``.

    ``rounded`` says ``y`` already holds ``value + 0.5`` (so truncation rounds).
    """
    if dtype.is_floating_point:
        return y.clamp_(0.0, top).to(dtype)
    if dtype == torch.uint8:
        return to_uint8(y, offset=0.0 if rounded else 0.5)
    if not rounded:
        y = y.add_(0.5)
    return y.clamp_(0.0, top + 0.49).floor_().to(dtype)


def _as_batch(x: Tensor) -> Tensor:
    return x.reshape(-1, *x.shape[-3:]) if x.ndim > 3 else x[None]


def color_matrix(
    brightness: float, contrast: float, saturation: float, hue: float
) -> tuple[Tensor, Tensor]:
    """``(A, w)``: the colour matrix ``A`` (3x3, float64) and the luma weights ``w``.

    For an image ``x`` with per-channel means ``m``, jittering gives
    ``A x + (1 - contrast) * brightness * (w . m)`` (per pixel, before clipping):
    brightness scales, contrast blends with the mean grey of the brightened image,
    saturation blends with each pixel's grey, hue rotates the chroma plane of YIQ by
    ``2 pi hue``. All four keep grey grey, so they compose into one matrix.
    """
    angle = 2.0 * math.pi * hue
    chroma = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(angle), -math.sin(angle)], [0.0, math.sin(angle), math.cos(angle)]],
        dtype=torch.float64,
    )
    sat = torch.diag(torch.tensor([1.0, saturation, saturation], dtype=torch.float64))
    a = contrast * brightness * (_YIQ_INV @ chroma @ sat @ _YIQ)
    return a, _YIQ[0].clone()


class ColorJitter(Transform):
    """Random brightness, contrast, saturation and hue, applied as one colour transform.

    Args:
        brightness: ``b`` for a factor in ``[max(0, 1 - b), 1 + b]``, or a range.
        contrast: Same form; blends with the image's mean grey.
        saturation: Same form; blends each pixel with its grey (0: greyscale).
        hue: ``h`` for a shift in ``[-h, h]`` of a full turn (``h <= 0.5``), or a range;
            rotates the chroma (I, Q) plane of YIQ.
        p: Probability of jittering.

    The four factors are drawn once per call (the same for every image of the sample)
    and composed into a single 3x3 colour matrix plus an offset, applied in one pass with
    no clipping in between (unlike torchvision, which clips after each step and converts
    to HSV for hue). Images with other than three channels get brightness and contrast
    only. Touches images only.

    """

    photometric = True

    def __init__(
        self,
        brightness: float | tuple[float, float] = 0.2,
        contrast: float | tuple[float, float] = 0.2,
        saturation: float | tuple[float, float] = 0.2,
        hue: float | tuple[float, float] = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        name = type(self).__name__
        factor = functools.partial(check_range, low=0.0, high=100.0, symmetric_about=1.0)
        self.brightness = factor(name, "brightness", brightness)
        self.contrast = factor(name, "contrast", contrast)
        self.saturation = factor(name, "saturation", saturation)
        self.hue = check_range(name, "hue", hue, low=-0.5, high=0.5, symmetric_about=0.0)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        b = uniform(generator, *self.brightness)
        c = uniform(generator, *self.contrast)
        s = uniform(generator, *self.saturation)
        h = uniform(generator, *self.hue)
        matrix, luma = color_matrix(b, c, s, h)
        return _map_images(sample, lambda x: _jitter(x, matrix, luma, b, c))


def _jitter(x: Tensor, matrix: Tensor, luma: Tensor, brightness: float, contrast: float) -> Tensor:
    top = _full_scale(x)
    dtype = x.dtype
    batch = _as_batch(x)
    # float32, contiguous [N, C, H, W] whatever the input layout: the 1x1 convolution is
    # several times faster there than on channels-last memory.
    xf = torch.empty(batch.shape, dtype=batch.dtype if dtype.is_floating_point else torch.float32)
    xf.copy_(batch)
    channels = xf.shape[-3]
    means = xf.mean(dim=(-2, -1)).double()  # [N, C]
    if channels == 3:
        grey = means @ luma
        weight = matrix
    else:
        grey = means.mean(dim=-1)
        weight = torch.eye(channels, dtype=torch.float64) * (contrast * brightness)
    offset = (1.0 - contrast) * brightness * grey  # [N]
    rounded = not dtype.is_floating_point
    out = []
    for i in range(xf.shape[0]):
        bias = torch.full((channels,), float(offset[i]) + (0.5 if rounded else 0.0), dtype=xf.dtype)
        out.append(F.conv2d(xf[i : i + 1], weight.to(xf.dtype)[:, :, None, None], bias))
    y = torch.cat(out) if len(out) > 1 else out[0]
    y = _finish(y, dtype, top, rounded=rounded)
    return y.reshape(x.shape)


class RandomGamma(Transform):
    """Gamma curve ``x' = top * (x / top) ** g``, ``g`` drawn log-uniformly from ``gamma``."""

    photometric = True

    def __init__(self, gamma: tuple[float, float] = (0.8, 1.25), p: float = 1.0) -> None:
        super().__init__(p)
        self.gamma = check_range(type(self).__name__, "gamma", gamma, low=0.0, high=100.0, low_open=True)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        g = math.exp(uniform(generator, math.log(self.gamma[0]), math.log(self.gamma[1])))

        def gamma(x: Tensor) -> Tensor:
            top = _full_scale(x)
            y = _to_float(x).div(top).clamp_(0.0, 1.0).pow_(g).mul_(top)
            return _finish(y, x.dtype, top)

        return _map_images(sample, gamma)


class GaussianBlur(Transform):
    """Gaussian blur with ``sigma`` (pixels) drawn uniformly from a range.

    Args:
        sigma: ``(lo, hi)`` standard deviation in pixels, or one value.
        kernel_size: Odd kernel size; by default ``2 * ceil(3 sigma) + 1`` (at least 3).
        p: Probability of blurring.

    Separable, with the border replicated. Touches images only.

    """

    photometric = True

    def __init__(
        self, sigma: float | tuple[float, float] = (0.1, 2.0), kernel_size: int | None = None,
        p: float = 0.5,
    ) -> None:
        super().__init__(p)
        name = type(self).__name__
        self.sigma = check_range(name, "sigma", sigma, low=0.0, high=100.0, low_open=True)
        if kernel_size is not None and (
            isinstance(kernel_size, bool) or not isinstance(kernel_size, int)
            or kernel_size < 1 or kernel_size % 2 == 0
        ):
            raise ValueError(
                f"{name}: kernel_size={kernel_size!r} is out of range; allowed: an odd int >= 1, or None"
            )
        self.kernel_size = kernel_size

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        sigma = uniform(generator, *self.sigma)
        k = self.kernel_size or max(3, 2 * math.ceil(3.0 * sigma) + 1)
        offsets = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
        weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
        weights = weights / weights.sum()
        return _map_images(sample, lambda x: _blur(x, weights))


def _blur(x: Tensor, weights: Tensor) -> Tensor:
    k = weights.numel()
    top = _full_scale(x)
    batch = _to_float(_as_batch(x))
    c = batch.shape[-3]
    w = weights.to(batch.dtype)
    r = k // 2
    y = F.pad(batch, (r, r, 0, 0), mode="replicate")
    y = F.conv2d(y, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="replicate")
    y = F.conv2d(y, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return _finish(y, x.dtype, top).reshape(x.shape)


class GaussianNoise(Transform):
    """Add Gaussian noise with ``std`` drawn uniformly from a range, as a fraction of full scale.

    Args:
        std: ``(lo, hi)`` standard deviation relative to full intensity (255 for uint8,
            1 for float images), or one value.
        per_channel: Independent noise per channel (else the same for all channels).
        p: Probability of adding noise.

    The noise is drawn from the call's generator. Touches images only.

    """

    photometric = True

    def __init__(
        self, std: float | tuple[float, float] = (0.01, 0.05), per_channel: bool = True,
        p: float = 0.5,
    ) -> None:
        super().__init__(p)
        self.std = check_range(type(self).__name__, "std", std, low=0.0, high=10.0)
        self.per_channel = bool(per_channel)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        std = uniform(generator, *self.std)

        def noise(x: Tensor) -> Tensor:
            top = _full_scale(x)
            shape = list(x.shape)
            if not self.per_channel:
                shape[-3] = 1
            n = torch.randn(shape, generator=generator, dtype=torch.float32)
            y = _to_float(x) + n.mul_(std * top).to(x.dtype if x.dtype.is_floating_point else torch.float32)
            return _finish(y, x.dtype, top)

        return _map_images(sample, noise)


class Normalize(Transform):
    """``(x / max_pixel_value - mean) / std`` per channel: a float32 image for the model.

    Integer images are divided by ``max_pixel_value`` first; float images are taken to
    be in ``[0, 1]`` already. The result is contiguous ``[..., C, H, W]`` float32.
    pixcore models normalise uint8 input themselves (``model.normalize``), so this is for
    pipelines that feed floats. Touches images only; put it last.
    """

    photometric = True

    def __init__(
        self,
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
        max_pixel_value: float = 255.0,
    ) -> None:
        super().__init__(1.0)
        name = type(self).__name__
        if len(mean) != len(std) or not mean:
            raise ValueError(
                f"{name}: mean={mean!r} and std={std!r} are out of range; allowed: one value per "
                "channel each"
            )
        for value in mean:
            check_number(name, "mean", value)
        for value in std:
            check_number(name, "std", value, low=0.0, low_open=True)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.max_pixel_value = check_number(name, "max_pixel_value", max_pixel_value, low=0.0, low_open=True)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        return _map_images(sample, self._normalize)

    def _normalize(self, x: Tensor) -> Tensor:
        c = x.shape[-3]
        if c != len(self.mean):
            raise ValueError(
                f"{type(self).__name__}: the image has {c} channels but mean/std have "
                f"{len(self.mean)} values; give one per channel"
            )
        divisor = 1.0 if x.dtype.is_floating_point else self.max_pixel_value
        scale = torch.tensor([1.0 / (divisor * s) for s in self.std], dtype=torch.float32)
        shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std, strict=True)], dtype=torch.float32)
        scale, shift = scale[:, None, None], shift[:, None, None]
        out = torch.empty(x.shape, dtype=torch.float32)
        out.copy_(x)  # to float32, contiguous [..., C, H, W] whatever the input layout
        return out.mul_(scale).add_(shift)  # (several times faster than one addcmul)
