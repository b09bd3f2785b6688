"""What a backbone supports, found by running it: ``pixcore list backbones --check NAME``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pixcore._interfaces import Backbone, FeatureLevel
from pixcore.model._pyramid import SimplePyramid, is_single_stride
from pixcore.plugin._manager import PluginManager, get_plugin_manager
from pixcore.plugin._params import _unwrap

__all__ = ["DEFAULT_CHECK_SIZES", "SupportReport", "check_support"]

#: From tiny to large, square and not, most not divisible by 32.
DEFAULT_CHECK_SIZES: tuple[tuple[int, int], ...] = ((32, 32), (97, 130), (224, 224), (480, 640), (1024, 768))


@dataclass
class SupportReport:
    """The outcome of :func:`check_support`: one entry per input size and per head."""

    name: str
    feature_info: list[FeatureLevel]
    #: Facts the backbone states about itself (``size_policy``, ``native_size``...).
    facts: dict[str, str] = field(default_factory=dict)
    #: ``(height, width)`` -> None if it worked, else the error.
    sizes: dict[tuple[int, int], str | None] = field(default_factory=dict)
    seconds: dict[tuple[int, int], float] = field(default_factory=dict)
    #: head name -> None if it worked, else the error.
    heads: dict[str, str | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v is None for v in self.sizes.values()) and all(v is None for v in self.heads.values())

    def format(self) -> str:
        levels = ", ".join(f"{f.channels} ch @ stride {f.stride}" for f in self.feature_info)
        lines = [f"{self.name}: {len(self.feature_info)} levels [{levels}]"]
        lines += [f"  {key}: {value}" for key, value in self.facts.items()]
        lines.append("  input sizes (forward, batch 1, random weights):")
        for (height, width), error in self.sizes.items():
            seconds = self.seconds.get((height, width), 0.0)
            status = f"ok ({seconds:.2f} s)" if error is None else f"FAILS: {error}"
            lines.append(f"    {height}x{width}: {status}")
        lines.append("  heads (forward and backward at the smallest size that worked):")
        for head, error in self.heads.items():
            lines.append(f"    {head}: {'ok' if error is None else 'FAILS: ' + error}")
        return "\n".join(lines)


def check_support(
    name: str,
    *,
    params: dict[str, object] | None = None,
    sizes: Sequence[tuple[int, int]] = DEFAULT_CHECK_SIZES,
    manager: PluginManager | None = None,
) -> SupportReport:
    """Build backbone ``name`` and try it at each size and under every registered head.

    Sizes are padded to the backbone's stride as :class:`pixcore.MultiTaskModel` pads
    them. A head that needs a pyramid gets ViTDet's simple pyramid on a single-stride
    backbone, as in a model. Errors are recorded, not raised (building the backbone
    itself may raise: that is the answer then).
    """
    manager = manager or get_plugin_manager()
    backbone: Backbone = manager.registry("backbones").create(name, params or {})
    backbone.eval()
    report = SupportReport(name, list(backbone.feature_info), facts=_facts(backbone))
    smallest: tuple[int, int] | None = None
    for size in sizes:
        start = time.perf_counter()
        report.sizes[size] = _try_size(backbone, size)
        report.seconds[size] = time.perf_counter() - start
        if report.sizes[size] is None and smallest is None:
            smallest = size
    for head in manager.registry("heads").list():
        report.heads[head] = _try_head(manager, backbone, head, smallest) if smallest else "no input size worked"
    return report


def _facts(backbone: Backbone) -> dict[str, str]:
    facts = {"stride (inputs are padded to a multiple)": str(backbone.stride)}
    for attribute in ("size_policy", "native_size", "protocol"):
        value = getattr(backbone, attribute, None)
        if value:
            facts[attribute] = "x".join(map(str, value)) if isinstance(value, tuple) else str(value)
    if is_single_stride(backbone.feature_info):
        facts["single stride"] = "fpn, upernet and deeplabv3plus read ViTDet's simple pyramid; dpt reassembles"
    return facts


def _padded(backbone: Backbone, size: tuple[int, int]) -> torch.Tensor:
    stride = backbone.stride
    height, width = (-(-size[0] // stride) * stride, -(-size[1] // stride) * stride)
    return torch.randn(1, 3, height, width)


def _try_size(backbone: Backbone, size: tuple[int, int]) -> str | None:
    x = _padded(backbone, size)
    try:
        with torch.no_grad():
            features = backbone(x)
    except Exception as error:  # the report says what failed
        return _short(error)
    for level, feature in zip(backbone.feature_info, features, strict=False):
        expected = (-(-x.shape[-2] // level.stride), -(-x.shape[-1] // level.stride))
        if feature.shape[1] != level.channels:
            return f"a level has {feature.shape[1]} channels, feature_info says {level.channels}"
        if abs(feature.shape[-2] - expected[0]) > 1 or abs(feature.shape[-1] - expected[1]) > 1:
            return f"a level is {tuple(feature.shape[-2:])}, stride {level.stride} says {expected}"
    return None


def _try_head(manager: PluginManager, backbone: Backbone, head: str, size: tuple[int, int]) -> str | None:
    try:
        in_features = backbone.feature_info
        neck = None
        factory = _unwrap(manager.registry("heads").get(head).factory)
        if is_single_stride(in_features) and not getattr(factory, "accepts_single_stride", False):
            neck = SimplePyramid(in_features)
            in_features = neck.feature_info
        module = manager.registry("heads").create(
            head, {}, context={"in_features": in_features, "out_channels": 3}
        )
        x = _padded(backbone, size)
        with torch.no_grad():
            features = backbone(x)
        features = [f.detach().requires_grad_() for f in features]
        inputs = neck(features) if neck is not None else features
        module.train()
        out = module(inputs, (x.shape[-2], x.shape[-1]))
        if tuple(out.shape) != (1, 3, x.shape[-2], x.shape[-1]):
            return f"output {tuple(out.shape)}, expected {(1, 3, x.shape[-2], x.shape[-1])}"
        F.mse_loss(out, torch.zeros_like(out)).backward()
    except Exception as error:  # the report says what failed
        return _short(error)
    return None


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:240]}"
