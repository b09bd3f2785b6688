"""Multi-scale features from a single-stride backbone: the resampling of ViTDet and DPT.

A plain transformer (ViT, DeiT, DINOv2, EVA...) gives every level at its patch stride
(14 or 16). Decoders built for pyramids (FPN, UPerNet, DeepLabv3+) want strides 4 to 32.
Two published answers, both resampling level ``i`` by a fixed factor:

- the *simple feature pyramid* of ViTDet (Li et al. 2022, "Exploring Plain Vision
  Transformer Backbones for Object Detection", section 3): x4 by two stride-2 transposed
  convolutions with a norm and GELU between them, x2 by one, x1 as is, x1/2 by 2x2 max
  pooling. ViTDet resamples the last block's map; BEiT's and mmsegmentation's ViT
  segmentation models apply the same four operations to four different blocks, as here;
- DPT's *reassemble* (Ranftl et al. 2021, "Vision Transformers for Dense Prediction",
  section 3): x4 and x2 by transposed convolutions with kernel = stride, x1/2 by a 3x3
  stride-2 convolution (:class:`pixcore.model.DPTHead` does this itself).

Factors: with four levels, 4, 2, 1 and 1/2 (strides 4, 8, 16 and 32 for a patch size of
16; 3.5, 7, 14 and 28 for 14, recorded rounded); fewer levels take the coarse end (three:
2, 1, 1/2); more levels spread from 4 to 1/2.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pixcore._interfaces import FeatureLevel

__all__ = ["SimplePyramid", "is_single_stride", "pyramid_factors"]


def is_single_stride(levels: Sequence[FeatureLevel]) -> bool:
    """Two or more levels, all at one stride: the output of a plain transformer."""
    return len(levels) > 1 and len({level.stride for level in levels}) == 1


def pyramid_factors(count: int) -> list[float]:
    """The resampling factor of each of ``count`` single-stride levels, finest first."""
    if count <= 4:
        return [4.0, 2.0, 1.0, 0.5][4 - count:]
    return [2.0 ** (2 - (3 * i) // (count - 1)) for i in range(count)]


def resampled_stride(stride: int, factor: float) -> int:
    """A level's stride after resampling, rounded (3.5 -> 4 for 14-pixel patches)."""
    return max(1, round(stride / factor))


class _Upsample(nn.Sequential):
    """ViTDet's x2 or x4: stride-2 transposed convs halving the channels, norm + GELU between."""

    def __init__(self, channels: int, factor: int) -> None:
        layers: list[nn.Module] = []
        for step in range(factor.bit_length() - 1):  # log2(factor) steps
            if step:
                layers += [nn.GroupNorm(1, channels), nn.GELU()]  # ViTDet's LayerNorm over channels
            layers.append(nn.ConvTranspose2d(channels, max(1, channels // 2), 2, stride=2))
            channels = max(1, channels // 2)
        super().__init__(*layers)


class SimplePyramid(nn.Module):
    """ViTDet's simple feature pyramid applied per level (module docstring).

    Channels: halved per x2 step, as in ViTDet (a 768-channel ViT-B level becomes 192
    channels at x4, 384 at x2, 768 at x1 and x1/2), so the finest map costs what a CNN's
    stride-4 level does. ``feature_info`` is the pyramid's contract.
    """

    def __init__(self, in_features: Sequence[FeatureLevel]) -> None:
        super().__init__()
        factors = pyramid_factors(len(in_features))
        self.resample = nn.ModuleList()
        self.feature_info: list[FeatureLevel] = []
        for level, factor in zip(in_features, factors, strict=True):
            if factor > 1:
                up = int(factor)
                self.resample.append(_Upsample(level.channels, up))
                channels = level.channels
                for _ in range(up.bit_length() - 1):
                    channels = max(1, channels // 2)
            elif factor < 1:
                down = int(round(1 / factor))
                self.resample.append(nn.MaxPool2d(down, stride=down, ceil_mode=True))
                channels = level.channels
            else:
                self.resample.append(nn.Identity())
                channels = level.channels
            self.feature_info.append(FeatureLevel(channels, resampled_stride(level.stride, factor)))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [resample(f) for resample, f in zip(self.resample, features, strict=True)]
