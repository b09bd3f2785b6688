"""Task-agnostic heads shipped with the core: every task plugin can use them.

A head turns a backbone's feature pyramid (``in_features``: one
:class:`~pixcore.FeatureLevel` per level, finest first) into *raw* channels at the input
size; the task decodes them (logits, a positive depth, unit normals), so one decoder
serves any task. Registered names:

=================  =====================================================  ====================
name               design                                                 source
=================  =====================================================  ====================
``fpn``            FPN + per-level conv/upsampling stages, summed         Kirillov et al. 2019
``linear``         one 1x1 conv over every level (a linear probe)         Oquab et al. 2023
``deeplabv3plus``  ASPP on the coarsest level + skip from the finest      Chen et al. 2018
``upernet``        pyramid pooling on the coarsest level + FPN + fusion   Xiao et al. 2018
``dpt``            reassemble to 4 strides, residual fusion coarse to     Ranftl et al. 2021
                   fine
=================  =====================================================  ====================

Single-stride backbones (plain ViTs: every level at the patch stride): ``dpt`` resamples
the levels itself, as DPT's reassemble stage does, and ``linear`` reads them as they are
(DINOv2's linear probes); ``fpn``, ``deeplabv3plus`` and ``upernet`` get ViTDet's simple
feature pyramid (Li et al. 2022) from the model (:mod:`pixcore.model._pyramid`).

Every head works with any number of levels (one or more) and any strides: maps are
resized to the exact size of the map they meet, never by a fixed factor, so odd strides
and strides that are not powers of two work. A feature contract that cannot work (no
level, levels not finest first, non-positive sizes) is a :class:`~pixcore.ConfigError`
naming the head and the levels it got.

Initialisation (shared by all heads): convolutions Kaiming-normal (fan-out, ReLU gain;
He et al. 2015), norm layers weight 1 and bias 0, other biases 0; the output layer is
drawn with std 1e-3 and a zero bias, so a fresh head outputs almost exactly 0, the
neutral point every task decodes from (uniform class probabilities, the depth and the
normal the task maps 0 to), and the first steps' gradients into a shared backbone stay
balanced between tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from pixcore._errors import ConfigError
from pixcore._interfaces import FeatureLevel, Head
from pixcore.model._pyramid import is_single_stride, pyramid_factors

__all__ = [
    "DPTHead",
    "DeepLabV3PlusHead",
    "FPNHead",
    "LinearHead",
    "UPerNetHead",
    "default_atrous_rates",
    "init_weights",
]

#: Normalisation after each hidden convolution: BatchNorm, or GroupNorm (32 groups, fewer
#: for narrow layers: a power of two dividing the channels, at least two channels per
#: group), which does not depend on the batch and so also trains with batch size 1.
Norm = Literal["bn", "gn"]

# The constraints the heads' signatures share; each parameter is described in its head's
# docstring (pixcore reads both: see docs/plugins.md#parameter-validation).
#: A number of channels.
Channels = Annotated[int, Field(ge=1)]
#: A Dropout2d rate.
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
#: Positive sizes or rates, at least one.
Positives = Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1)]


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, ReLU), unit/zero norms, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _init_output(conv: nn.Conv2d) -> None:
    # A small output layer starts every task near its decoder's neutral point, which keeps
    # the first steps' losses (and their gradients into the shared backbone) balanced.
    nn.init.normal_(conv.weight, std=1e-3)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    groups = math.gcd(32, channels)
    if groups == channels and channels > 1:
        groups //= 2  # two channels per group: a 1x1 map of one image still normalises
    return nn.GroupNorm(groups, channels)


def _conv_norm_relu(
    cin: int, cout: int, norm: Norm | None, kernel: int = 3, dilation: int = 1
) -> nn.Sequential:
    """Conv + norm + ReLU; without a norm (``norm=None``) the conv has a bias instead."""
    padding = dilation * (kernel // 2)
    conv = nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=norm is None)
    layers: list[nn.Module] = [conv]
    if norm is not None:
        layers.append(_norm(norm, cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _dropout(rate: float) -> nn.Module:
    return nn.Dropout2d(rate) if rate > 0 else nn.Identity()


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (half-pixel centres) to ``size``; a no-op at that size already.

    While exporting (``torch.export``, ONNX) sizes are symbolic and the resize always runs:
    a bilinear resize to the same size with half-pixel centres is the identity.
    """
    if not torch.compiler.is_exporting() and tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.device.type == "cpu" and x.dim() == 4 and x.shape[1] >= 32 and not torch.compiler.is_exporting():
        # torch's CPU bilinear kernel is vectorised over channels in channels-last memory:
        # there the forward of a wide feature map is many times faster, and forward plus
        # backward a quarter faster, conversions included. Same values; NCHW out.
        x = x.contiguous(memory_format=torch.channels_last)
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False).contiguous()
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _describe(levels: object) -> str:
    if not isinstance(levels, Sequence) or isinstance(levels, str):
        return repr(levels)
    parts = [
        f"{level.channels} ch @ stride {level.stride}" if isinstance(level, FeatureLevel)
        else repr(level)
        for level in levels
    ]
    return "[" + ", ".join(parts) + "]"


def _check_levels(head: str, levels: object) -> list[FeatureLevel]:
    """The feature contract a head can build on, or a :class:`ConfigError` saying why not."""
    if not isinstance(levels, Sequence) or isinstance(levels, str) or len(levels) == 0:
        problem = "it has no feature level"
    elif not all(isinstance(level, FeatureLevel) for level in levels):
        problem = "every level must be a pixcore.FeatureLevel(channels, stride)"
    elif any(level.channels < 1 or level.stride < 1 for level in levels):
        problem = "channels and strides must be positive"
    elif any(a.stride > b.stride for a, b in zip(levels[:-1], levels[1:], strict=True)):
        problem = "levels must be listed finest first (strides non-decreasing)"
    else:
        return list(levels)
    raise ConfigError(
        f"head {head!r} cannot use the backbone's feature levels {_describe(levels)}: "
        f"{problem}. A backbone's feature_info must list one or more "
        "pixcore.FeatureLevel(channels, stride), finest first; "
        "pixcore.testing.check_backbone(backbone) tells what is wrong with a backbone."
    )


class _PyramidHead(Head):
    """Keeps the checked feature contract and checks the feature list at run time."""

    #: Registry name, for error messages.
    name: ClassVar[str]

    def __init__(self, in_features: Sequence[FeatureLevel]) -> None:
        super().__init__()
        self.in_features = _check_levels(self.name, in_features)

    def _check(self, features: Sequence[Tensor]) -> None:
        if len(features) != len(self.in_features):
            raise ValueError(
                f"head {self.name!r} was built for {len(self.in_features)} feature level(s) "
                f"{_describe(self.in_features)} but got {len(features)} feature map(s); the "
                "backbone returned a different number of maps than its feature_info lists"
            )


# --------------------------------------------------------------------------------------
# FPN
# --------------------------------------------------------------------------------------


class FPNHead(_PyramidHead):
    """Feature-pyramid decoder: the semantic branch of Panoptic FPN (Kirillov et al. 2019).

    Pyramid (Lin et al. 2017, FPN): a lateral 1x1 conv per level to ``channels`` and a
    top-down pathway that adds each coarser map, upsampled nearest-neighbour, to the next
    finer one. Semantic branch: level ``i`` (0 = finest) goes through ``max(1, i)``
    stages of 3x3 conv + norm + ReLU, each followed by a bilinear upsampling to the next
    finer level's size, until it reaches the finest level (a stride-32 map of a stride 4
    to 32 pyramid: convs at 1/32, 1/16 and 1/8, upsampled to 1/16, 1/8 and 1/4). The
    levels are summed; a 1x1 output layer; bilinear upsampling to the input size.

    The paper uses GroupNorm, a 256-channel pyramid and a 128-channel branch; here one
    width, ``channels``, serves both, and ``norm`` picks BatchNorm (default) or GroupNorm.

    Args:
        in_features: The backbone's feature contract (given by pixcore).
        out_channels: Raw output channels (given by the task).
        channels: Width of the pyramid and of the semantic branch.
        norm: Norm after hidden convs: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm).
        dropout: Dropout2d rate before the output layer, in ``[0, 1)``.

    """

    name = "fpn"

    def __init__(
        self,
        in_features: list[FeatureLevel],
        out_channels: Channels,
        channels: Channels = 128,
        norm: Norm = "bn",
        dropout: Dropout = 0.0,
    ) -> None:
        super().__init__(in_features)
        width = channels
        self.lateral = nn.ModuleList(nn.Conv2d(f.channels, width, 1) for f in self.in_features)
        self.branches = nn.ModuleList(
            nn.ModuleList(_conv_norm_relu(width, width, norm) for _ in range(max(1, i)))
            for i in range(len(self.in_features))
        )
        self.dropout = _dropout(dropout)
        self.output = nn.Conv2d(width, out_channels, 1)
        init_weights(self)
        _init_output(self.output)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        self._check(features)
        laterals = [proj(f) for proj, f in zip(self.lateral, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse informs fine
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        sizes = [lateral.shape[-2:] for lateral in laterals]
        fused: Tensor | None = None
        for i, (branch, x) in enumerate(zip(self.branches, laterals, strict=True)):
            # Each branch is an nn.ModuleList of stages (built in __init__).
            for k, stage in enumerate(cast(nn.ModuleList, branch)):  # a conv at level i - k, then up one level
                x = _resize(stage(x), sizes[max(i - k - 1, 0)])
            fused = x if fused is None else fused + x
        assert fused is not None  # at least one level (checked at build time)
        return _resize(self.output(self.dropout(fused)), size)


# --------------------------------------------------------------------------------------
# Linear probe
# --------------------------------------------------------------------------------------


class LinearHead(_PyramidHead):
    """A linear probe: every level upsampled to the finest, concatenated, one 1x1 conv.

    Pair it with a frozen pretrained backbone to measure "pretrained features + linear
    model" on small data sets. A 1x1 conv commutes with bilinear resizing, so each level's
    slice of the weights is applied at that level's own resolution and the (few) output
    channels are upsampled instead of the (many) feature channels: the same function as
    concatenating first, for a fraction of the time and memory.

    DINOv2's linear heads (Oquab et al. 2023, section 7; its ``BNHead``): BatchNorm over
    the concatenated features, then the 1x1 conv (``batch_norm: true``). BatchNorm is per
    channel, so normalising each level before the split conv is the same function. With
    ``probe: lin.1`` or ``lin.4`` on a ``timm/`` ViT this is the "lin. 1" / "lin. 4" protocol.
    Levels that share one stride (a plain ViT) are read as they are.

    Args:
        in_features: The backbone's feature contract (given by pixcore).
        out_channels: Raw output channels (given by the task).
        batch_norm: BatchNorm over the features before the linear layer (DINOv2's head).

    """

    name = "linear"
    accepts_single_stride = True

    def __init__(self, in_features: list[FeatureLevel], out_channels: Channels, batch_norm: bool = False) -> None:
        super().__init__(in_features)
        self.splits = [f.channels for f in self.in_features]
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(c) if batch_norm else nn.Identity() for c in self.splits
        )
        self.output = nn.Conv2d(sum(self.splits), out_channels, 1)
        _init_output(self.output)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        self._check(features)
        features = [norm(f) for norm, f in zip(self.norms, features, strict=True)]
        finest = features[0].shape[-2:]
        weights = torch.split(self.output.weight, self.splits, dim=1)
        out = F.conv2d(features[0], weights[0], self.output.bias)
        for f, w in zip(features[1:], weights[1:], strict=True):
            out = out + _resize(F.conv2d(f, w), finest)
        return _resize(out, size)


# --------------------------------------------------------------------------------------
# DeepLabv3+
# --------------------------------------------------------------------------------------

#: DeepLabv3's rates for output stride 16 (Chen et al. 2017).
_REFERENCE_RATES = (6, 12, 18)
_REFERENCE_STRIDE = 16


def default_atrous_rates(stride: int) -> tuple[int, ...]:
    """DeepLab's rates (6, 12, 18) at output stride 16, rescaled to ``stride``.

    A rate ``r`` at stride ``s`` spaces a 3x3 conv's taps ``r * s`` input pixels apart;
    keeping that product gives (12, 24, 36) at stride 8 (the paper's own doubling),
    (3, 6, 9) at stride 32 (timm ResNets, ConvNeXts) and (7, 14, 21) at stride 14
    (rounded, at least 1).
    """
    return tuple(max(1, round(r * _REFERENCE_STRIDE / stride)) for r in _REFERENCE_RATES)


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017, DeepLabv3), concatenated and projected.

    Branches: a 1x1 conv, a 3x3 conv per rate, and image pooling (global average, 1x1
    conv, ReLU, broadcast back). The pooling branch has no norm layer: it sees one value
    per channel and image, and BatchNorm over that is undefined for a batch of one.
    """

    def __init__(
        self, cin: int, channels: int, rates: Sequence[int], norm: Norm, dropout: float
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_norm_relu(cin, channels, norm, kernel=1)]
            + [_conv_norm_relu(cin, channels, norm, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), _conv_norm_relu(cin, channels, None, kernel=1)
        )
        self.project = nn.Sequential(
            _conv_norm_relu((len(rates) + 2) * channels, channels, norm, kernel=1),
            _dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3PlusHead(_PyramidHead):
    """DeepLabv3+ decoder (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution").

    ASPP on the coarsest level; its output upsampled bilinearly to the finest level and
    concatenated with a 1x1 projection (``low_level_channels``, 48 in the paper) of the
    finest level's features; two 3x3 conv + norm + ReLU blocks; a 1x1 output layer;
    bilinear upsampling to the input size. The paper's low-level features are at stride
    4: here they are the finest level the backbone gives (stride 4 for CNNs). With a
    single level, the low-level branch reads the same map as ASPP.

    Atrous rates count pixels of the coarsest level. The paper's (6, 12, 18) are for
    output stride 16 (the backbone's last stage dilated); pixcore's backbones keep their
    native stride, 32 for a timm ResNet, so by default the rates are rescaled to keep the
    same reach in the image, 96 to 288 input pixels: (3, 6, 9) at stride 32 (see
    :func:`default_atrous_rates`). A rate as large as the map reduces its branch to the
    centre tap.

    Args:
        in_features: The backbone's feature contract (given by pixcore).
        out_channels: Raw output channels (given by the task).
        channels: Width of ASPP and of the decoder.
        atrous_rates: Dilation rates of the ASPP 3x3 branches, in pixels of the coarsest
            level. None: (6, 12, 18) at stride 16, rescaled to the coarsest stride ((3, 6,
            9) at 32; :func:`default_atrous_rates`).
        low_level_channels: Width of the projection of the finest level's features.
        aspp_dropout: Dropout2d rate after the ASPP projection, in ``[0, 1)``.
        norm: Norm after hidden convs: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm).
        dropout: Dropout2d rate before the output layer, in ``[0, 1)``.

    """

    name = "deeplabv3plus"

    def __init__(
        self,
        in_features: list[FeatureLevel],
        out_channels: Channels,
        channels: Channels = 256,
        atrous_rates: Positives | None = None,
        low_level_channels: Channels = 48,
        aspp_dropout: Dropout = 0.1,
        norm: Norm = "bn",
        dropout: Dropout = 0.0,
    ) -> None:
        super().__init__(in_features)
        coarsest, finest = self.in_features[-1], self.in_features[0]
        self.atrous_rates = tuple(atrous_rates or default_atrous_rates(coarsest.stride))
        self.aspp = _ASPP(coarsest.channels, channels, self.atrous_rates, norm, aspp_dropout)
        self.low_level = _conv_norm_relu(finest.channels, low_level_channels, norm, kernel=1)
        self.decoder = nn.Sequential(
            _conv_norm_relu(channels + low_level_channels, channels, norm),
            _conv_norm_relu(channels, channels, norm),
        )
        self.dropout = _dropout(dropout)
        self.output = nn.Conv2d(channels, out_channels, 1)
        init_weights(self)
        _init_output(self.output)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        self._check(features)
        low = self.low_level(features[0])
        context = _resize(self.aspp(features[-1]), low.shape[-2:])
        out = self.decoder(torch.cat([context, low], dim=1))
        return _resize(self.output(self.dropout(out)), size)


# --------------------------------------------------------------------------------------
# UPerNet
# --------------------------------------------------------------------------------------


def _pooling_matrix(length: int, cells: int, like: Tensor) -> Tensor:
    """``[cells, length]`` weights of adaptive average pooling along one axis.

    Cell ``i`` averages positions ``floor(i * L / cells)`` to ``ceil((i + 1) * L / cells) - 1``,
    as ``nn.AdaptiveAvgPool2d`` does. Written with ``arange`` on the (symbolic) length so
    that an exported graph pools correctly at every size: exporters otherwise bake the
    pooling windows of the example's size into the graph.
    """
    position = torch.arange(length, device=like.device)
    index = torch.arange(cells, device=like.device)
    start = torch.div(index * length, cells, rounding_mode="floor")
    end = torch.div((index + 1) * length + cells - 1, cells, rounding_mode="floor")
    inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])
    weights = inside.to(like.dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def _adaptive_avg_pool(x: Tensor, cells: int) -> Tensor:
    """``nn.functional.adaptive_avg_pool2d(x, cells)`` as two matrix products (exportable)."""
    rows = _pooling_matrix(x.shape[-2], cells, x)
    columns = _pooling_matrix(x.shape[-1], cells, x)
    return torch.einsum("ih,bchw,jw->bcij", rows, x, columns)


class _AdaptivePool(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` whose exported graph holds for every input size."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_exporting() and self.output_size != 1:
            return _adaptive_avg_pool(x, int(self.output_size))  # type: ignore[arg-type]
        return super().forward(x)


class _PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module (Zhao et al. 2017) with its 3x3 bottleneck.

    Each scale ``s``: adaptive average pool to ``s x s``, 1x1 conv + norm + ReLU, bilinear
    upsampling back; the input and every scale are concatenated and fused by a 3x3 block.
    A 1x1 pool has no norm layer (BatchNorm over one value per channel and image is
    undefined for a batch of one); its conv has a bias instead.
    """

    def __init__(self, cin: int, channels: int, scales: Sequence[int], norm: Norm) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(
                _AdaptivePool(s),
                _conv_norm_relu(cin, channels, norm if s > 1 else None, kernel=1),
            )
            for s in scales
        )
        self.bottleneck = _conv_norm_relu(cin + len(scales) * channels, channels, norm)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        outs = [x]
        for stage in self.stages:
            pooled = stage(x)
            if stage[0].output_size == 1:  # type: ignore[index]
                outs.append(pooled.expand(-1, -1, *size))
            else:
                outs.append(_resize(pooled, size))
        return self.bottleneck(torch.cat(outs, dim=1))


class UPerNetHead(_PyramidHead):
    """UPerNet decoder (Xiao et al. 2018, "Unified Perceptual Parsing"), as mmsegmentation's.

    The pyramid pooling module on the coarsest level gives that level's pyramid map; the
    other levels get a lateral 1x1 conv + norm + ReLU; a top-down pathway adds each
    coarser map (upsampled bilinearly) to the next finer one; every level but the coarsest
    gets a 3x3 block; all levels are upsampled to the finest, concatenated and fused by a
    3x3 block; a 1x1 output layer; bilinear upsampling to the input size.

    Args:
        in_features: The backbone's feature contract (given by pixcore).
        out_channels: Raw output channels (given by the task).
        channels: Width of the pyramid and of every block.
        pool_scales: Output sizes of the pyramid pooling module's average pools.
        norm: Norm after hidden convs: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm).
        dropout: Dropout2d rate before the output layer, in ``[0, 1)``.

    """

    name = "upernet"

    def __init__(
        self,
        in_features: list[FeatureLevel],
        out_channels: Channels,
        channels: Channels = 256,
        pool_scales: Positives = (1, 2, 3, 6),
        norm: Norm = "bn",
        dropout: Dropout = 0.0,
    ) -> None:
        super().__init__(in_features)
        width, finer = channels, self.in_features[:-1]
        self.ppm = _PyramidPooling(self.in_features[-1].channels, width, pool_scales, norm)
        self.lateral = nn.ModuleList(
            _conv_norm_relu(f.channels, width, norm, kernel=1) for f in finer
        )
        self.smooth = nn.ModuleList(_conv_norm_relu(width, width, norm) for _ in finer)
        self.fuse = _conv_norm_relu(len(self.in_features) * width, width, norm)
        self.dropout = _dropout(dropout)
        self.output = nn.Conv2d(width, out_channels, 1)
        init_weights(self)
        _init_output(self.output)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        self._check(features)
        laterals = [proj(f) for proj, f in zip(self.lateral, features[:-1], strict=True)]
        laterals.append(self.ppm(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [block(x) for block, x in zip(self.smooth, laterals[:-1], strict=True)]
        outs.append(laterals[-1])
        finest = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([_resize(o, finest) for o in outs], dim=1))
        return _resize(self.output(self.dropout(fused)), size)


# --------------------------------------------------------------------------------------
# DPT
# --------------------------------------------------------------------------------------


class _ResidualConvUnit(nn.Module):
    """RefineNet/DPT's pre-activation residual unit: ``x + (norm(conv3x3(relu(.))))^2 (x)``."""

    def __init__(self, channels: int, norm: Norm) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),  # not in place: x is the residual
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _FusionBlock(nn.Module):
    """DPT's fusion block: ``project(RCU2(coarser + RCU1(x)))``; only RCU2 on the coarsest.

    DPT upsamples before the 1x1 projection; the two commute (both are linear, and
    bilinear weights sum to one), so here the projection runs first, at the lower
    resolution, and the next block resizes its input to its own level's exact size.
    """

    def __init__(self, channels: int, norm: Norm, coarsest: bool) -> None:
        super().__init__()
        self.skip = None if coarsest else _ResidualConvUnit(channels, norm)
        self.refine = _ResidualConvUnit(channels, norm)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, coarser: Tensor | None) -> Tensor:
        if coarser is not None and self.skip is not None:
            x = _resize(coarser, x.shape[-2:]) + self.skip(x)
        return self.project(self.refine(x))


def _resample(channels: int, factor: float) -> list[nn.Module]:
    """DPT's reassemble resampling by ``factor`` (4, 2, 1 or 1/2) at a fixed width."""
    if factor > 1:
        return [nn.ConvTranspose2d(channels, channels, int(factor), stride=int(factor))]
    if factor < 1:
        return [nn.Conv2d(channels, channels, 3, stride=round(1 / factor), padding=1)]
    return []


class DPTHead(_PyramidHead):
    """DPT's convolutional decoder (Ranftl et al. 2021, "Vision Transformers for Dense Prediction").

    Reassemble: every level is projected to ``channels`` by a 1x1 conv. Levels that share
    one stride (a plain ViT's blocks) are then resampled as in DPT, by factors 4, 2, 1 and
    1/2 (strides 4, 8, 16, 32 for 16-pixel patches): transposed convs with kernel = stride
    up, a 3x3 stride-2 conv down. DPT projects to per-level widths first (96 to 768 for
    ViT-B) and to ``channels`` after resampling; here one width serves both. A pyramid
    backbone's levels (CNNs, Swin) are at their strides already and are only projected.
    DPT's "project" readout of the class token is ``class_token: true`` on the backbone
    (the token concatenated to every patch token, then this projection).
    Fusion: RefineNet-style blocks (Lin et al. 2017) from the coarsest level to the
    finest, each adding the coarser result, upsampled bilinearly to this level's exact
    size, to its level through residual conv units.
    Output head (DPT's depth head): 3x3 conv + norm + ReLU to ``channels / 2``, bilinear
    2x upsampling (at most to the input size), 3x3 conv + norm + ReLU to
    ``head_channels``, a 1x1 output layer, and bilinear upsampling to the input size.

    DPT's last fusion block upsamples to stride 2 and its head's second conv runs at full
    resolution; here the head runs one octave coarser (its convs at the finest stride and
    half of it: 4 and 2 for CNNs), which costs a quarter as much at the largest sizes.

    Args:
        in_features: The backbone's feature contract (given by pixcore).
        out_channels: Raw output channels (given by the task).
        channels: Width of the reassembled levels and the fusion blocks.
        head_channels: Width of the output head's last hidden layer.
        norm: Norm after hidden convs: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm).
        dropout: Dropout2d rate before the output layer, in ``[0, 1)``.

    """

    name = "dpt"
    accepts_single_stride = True

    def __init__(
        self,
        in_features: list[FeatureLevel],
        out_channels: Channels,
        channels: Annotated[int, Field(ge=2)] = 256,
        head_channels: Channels = 32,
        norm: Norm = "bn",
        dropout: Dropout = 0.0,
    ) -> None:
        super().__init__(in_features)
        width, count = channels, len(self.in_features)
        factors = pyramid_factors(count) if is_single_stride(self.in_features) else [1.0] * count
        self.reassemble = nn.ModuleList(
            nn.Sequential(nn.Conv2d(f.channels, width, 1, bias=False), *_resample(width, factor))
            for f, factor in zip(self.in_features, factors, strict=True)
        )
        # fusion[i] serves level i; the coarsest (last) has no coarser input.
        self.fusion = nn.ModuleList(
            _FusionBlock(width, norm, coarsest=i == count - 1) for i in range(count)
        )
        self.head_in = _conv_norm_relu(width, width // 2, norm)
        self.head_out = _conv_norm_relu(width // 2, head_channels, norm)
        self.dropout = _dropout(dropout)
        self.output = nn.Conv2d(head_channels, out_channels, 1)
        init_weights(self)
        _init_output(self.output)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        self._check(features)
        fused: Tensor | None = None
        for i in range(len(features) - 1, -1, -1):  # coarse to fine
            fused = self.fusion[i](self.reassemble[i](features[i]), fused)
        assert fused is not None  # at least one level (checked at build time)
        x = self.head_in(fused)
        height, width = x.shape[-2:]
        x = self.head_out(_resize(x, (torch.sym_min(2 * height, size[0]), torch.sym_min(2 * width, size[1]))))
        return _resize(self.output(self.dropout(x)), size)
