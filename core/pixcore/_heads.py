"""Task-agnostic heads shipped with the core: every task plugin can use them.

A head produces *raw* channels; the task decodes them (a positive depth, unit
normals), so one decoder serves any task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixcore._interfaces import FeatureLevel, Head

__all__ = ["FPNHead", "LinearHead", "init_weights"]


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


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FPNHead(Head):
    """Feature-pyramid decoder (Kirillov et al. 2019, "Panoptic FPN" semantic branch).

    Lateral 1x1 projections, a top-down pathway, a 3x3 block per level, all levels
    upsampled to the finest and summed, then a 1x1 output layer; the result is upsampled
    bilinearly to the input size.

    Args:
        in_features: The backbone's feature contract (given by pixcore).
        out_channels: Raw output channels (given by the task).
        channels: Width of the pyramid.
        dropout: Dropout before the output layer.
    """

    def __init__(
        self,
        in_features: list[FeatureLevel],
        out_channels: int,
        channels: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(f.channels, channels, 1) for f in in_features)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in in_features)
        self.fuse = _conv_bn_relu(channels, channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.output = nn.Conv2d(channels, out_channels, 1)
        init_weights(self)
        _init_output(self.output)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        laterals = [proj(f) for proj, f in zip(self.lateral, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse informs fine
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        finest = laterals[0].shape[-2:]
        fused = self.smooth[0](laterals[0])
        for block, lateral in zip(self.smooth[1:], laterals[1:], strict=True):
            fused = fused + F.interpolate(block(lateral), size=finest, mode="bilinear", align_corners=False)
        out = self.output(self.dropout(self.fuse(fused)))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class LinearHead(Head):
    """A linear probe: every level upsampled to the finest, concatenated, one 1x1 conv.

    Pair it with a frozen pretrained backbone to measure "pretrained features + linear
    model" on small data sets.
    """

    def __init__(self, in_features: list[FeatureLevel], out_channels: int) -> None:
        super().__init__()
        self.output = nn.Conv2d(sum(f.channels for f in in_features), out_channels, 1)
        _init_output(self.output)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        finest = features[0].shape[-2:]
        stacked = [features[0]] + [
            F.interpolate(f, size=finest, mode="bilinear", align_corners=False) for f in features[1:]
        ]
        return F.interpolate(self.output(torch.cat(stacked, dim=1)), size=size, mode="bilinear", align_corners=False)

