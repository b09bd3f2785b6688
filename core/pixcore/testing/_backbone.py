"""A tiny convolutional backbone for fast tests of heads, tasks and whole models."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch import Tensor, nn

from pixcore._interfaces import Backbone, FeatureLevel
from pixcore.hookspecs import hookimpl
from pixcore.plugin._records import Component

__all__ = ["TINY_BACKBONE_NAME", "TinyBackbone", "TinyBackbonePlugin"]

#: Registry name under which :class:`TinyBackbonePlugin` registers :class:`TinyBackbone`.
TINY_BACKBONE_NAME = "testing/tiny"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True))


class TinyBackbone(Backbone):
    """Four levels at strides 4, 8, 16 and 32 from five strided 3x3 convolutions.

    Small enough to run a forward and backward pass in milliseconds on a CPU, with the
    same feature contract as a real CNN backbone (``feature_info`` strides 4 to 32), so
    heads and tasks can be tested without timm. It is not registered anywhere by
    default; :func:`pixcore.testing.isolated_manager` can register it as
    ``"testing/tiny"``.

    Args:
        widths: Channels of the four output levels, finest first.
        in_chans: Input channels.

    Example::

        from pixcore.testing import TinyBackbone, check_backbone

        backbone = TinyBackbone(widths=(8, 16, 24, 32))
        check_backbone(backbone)

    """

    def __init__(self, widths: Sequence[int] = (8, 16, 24, 32), in_chans: int = 3) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 4 or any(w < 1 for w in widths):
            raise ValueError(f"TinyBackbone needs four positive widths, got {widths!r}")
        self.stem = _block(in_chans, widths[0])  # stride 2
        self.levels = nn.ModuleList(
            _block(cin, cout) for cin, cout in zip((widths[0], *widths[:-1]), widths, strict=True)
        )
        self.feature_info = [FeatureLevel(w, 2 ** (i + 2)) for i, w in enumerate(widths)]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class TinyBackbonePlugin:
    """An in-process plugin that registers :class:`TinyBackbone` as ``"testing/tiny"``.

    Example::

        manager = pixcore.PluginManager(autoload=False)
        manager.register(TinyBackbonePlugin(), name="pixcore.testing")
        model = pixcore.build_model("testing/tiny", tasks=[...], manager=manager)
    """

    @hookimpl
    def pixcore_backbones(self) -> Iterator[Component]:
        yield Component(
            TINY_BACKBONE_NAME, TinyBackbone, description="Tiny 4-level conv backbone for tests"
        )
