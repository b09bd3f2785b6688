"""Contract checks for backbones and heads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from pixcore._interfaces import Backbone, FeatureLevel, Head
from pixcore.plugin._manager import PluginManager, get_plugin_manager
from pixcore.testing._backbone import TinyBackbone
from pixcore.testing._contract import ContractError, require, require_finite

__all__ = ["check_backbone", "check_head", "padded_size"]

#: Input sizes the checks use by default: one divisible by 32 and two that are not.
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (61, 83), (33, 47))


def padded_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``size`` rounded up to a multiple of ``stride``, as :class:`pixcore.MultiTaskModel` pads."""
    return (-(-size[0] // stride) * stride, -(-size[1] // stride) * stride)


def _check_feature_info(info: Any, what: str) -> list[FeatureLevel]:
    require(
        isinstance(info, list) and len(info) > 0,
        f"{what}.feature_info must be a non-empty list of pixcore.FeatureLevel, got {info!r}",
    )
    for i, level in enumerate(info):
        require(
            isinstance(level, FeatureLevel),
            f"{what}.feature_info[{i}] is {level!r}, not a pixcore.FeatureLevel",
        )
        require(
            level.channels > 0 and level.stride > 0,
            f"{what}.feature_info[{i}] = {level}: channels and stride must be positive",
        )
    strides = [level.stride for level in info]
    require(
        strides == sorted(strides),
        f"{what}.feature_info must list levels finest first; strides are {strides}",
    )
    return list(info)


def _check_grads(module: torch.nn.Module, what: str) -> None:
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    for name, parameter in trainable:
        if parameter.grad is not None:
            require_finite(parameter.grad, f"{what}: gradient of {name}")
    if trainable:
        require(
            any(p.grad is not None and bool(p.grad.abs().sum() > 0) for _, p in trainable),
            f"{what}: backward gave no gradient to any of its {len(trainable)} trainable "
            "parameters; is the output detached from them?",
        )


def check_backbone(
    backbone: Backbone,
    *,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    batch_size: int = 2,
    in_channels: int = 3,
    backward: bool = True,
) -> None:
    """Check that ``backbone`` honours its ``feature_info`` contract.

    For each input size (sizes not divisible by the backbone's stride are padded up the
    way :class:`pixcore.MultiTaskModel` pads them) the backbone must return one finite
    map per level, finest first, with ``feature_info[i].channels`` channels and spatial
    size ``padded_size / feature_info[i].stride``. With ``backward``, a backward pass
    must give finite gradients, and some non-zero ones, to its trainable parameters.

    Raises:
        ContractError: naming the rule that was broken.

    Example::

        from pixcore.testing import check_backbone
        check_backbone(pixcore.registry("backbones").create("timm/resnet18"))

    """
    what = type(backbone).__name__
    require(isinstance(backbone, Backbone), f"{what} is not a pixcore.Backbone")
    info = _check_feature_info(getattr(backbone, "feature_info", None), what)
    stride = backbone.stride
    require(
        stride == max(level.stride for level in info), f"{what}.stride is not its coarsest stride"
    )
    for i, size in enumerate(sizes):
        height, width = padded_size(size, stride)
        x = torch.randn(batch_size, in_channels, height, width)
        grad_enabled = backward and i == 0
        with torch.set_grad_enabled(grad_enabled):
            features = backbone(x)
        require(
            isinstance(features, (list, tuple)) and len(features) == len(info),
            f"{what} returned {type(features).__name__} of "
            f"{len(features) if isinstance(features, (list, tuple)) else '?'} maps for "
            f"{len(info)} feature_info levels",
        )
        for level, (spec, feature) in enumerate(zip(info, features, strict=True)):
            expected = (batch_size, spec.channels, height // spec.stride, width // spec.stride)
            require(
                isinstance(feature, Tensor) and tuple(feature.shape) == expected,
                f"{what}: level {level} for input {size} (padded to {(height, width)}) has "
                f"shape {tuple(getattr(feature, 'shape', ()))}, feature_info says {expected}",
            )
            require_finite(feature, f"{what}: level {level} for input {size}")
        if grad_enabled and any(p.requires_grad for p in backbone.parameters()):
            require(
                any(f.requires_grad for f in features),
                f"{what}: no gradient reaches any feature map; is the output detached?",
            )
            backbone.zero_grad(set_to_none=True)
            sum(f.float().mean() for f in features).backward()  # type: ignore[union-attr]
            _check_grads(backbone, what)
            backbone.zero_grad(set_to_none=True)


def check_head(
    head: str | Head,
    *,
    params: Mapping[str, Any] | None = None,
    manager: PluginManager | None = None,
    in_features: list[FeatureLevel] | None = None,
    out_channels: int = 3,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    batch_size: int = 2,
) -> Head:
    """Check a head: features of any padded size -> ``[B, out_channels, H, W]``, with gradients.

    ``head`` is a registry name (created with ``params`` and the context arguments
    ``in_features`` and ``out_channels``, as :func:`pixcore.build_model` does) or a
    :class:`pixcore.Head` instance built for ``in_features``. The features are random maps
    shaped by ``in_features`` (default: :class:`TinyBackbone`'s, strides 4 to 32). The
    output must be finite at exactly the padded input size, and a backward pass must
    reach both the features and the head's parameters. Returns the head.

    Example::

        from pixcore.testing import check_head, isolated_manager
        check_head("fpn", params={"channels": 32}, manager=isolated_manager())
    """
    in_features = list(in_features) if in_features is not None else TinyBackbone().feature_info
    if isinstance(head, str):
        registry = (manager or get_plugin_manager()).registry("heads")
        head = registry.create(
            head, params, context={"in_features": in_features, "out_channels": out_channels}
        )
    what = type(head).__name__
    if not isinstance(head, Head):  # as require(), but narrows the type
        raise ContractError(f"{what} is not a pixcore.Head")
    stride = max(level.stride for level in in_features)
    for i, size in enumerate(sizes):
        padded = padded_size(size, stride)
        features = [
            torch.randn(batch_size, f.channels, padded[0] // f.stride, padded[1] // f.stride,
                        requires_grad=True)
            for f in in_features
        ]
        out = head(features, padded)
        expected = (batch_size, out_channels, *padded)
        require(
            isinstance(out, Tensor) and tuple(out.shape) == expected,
            f"{what}: output for padded size {padded} has shape "
            f"{tuple(getattr(out, 'shape', ()))}, expected {expected}",
        )
        require_finite(out, f"{what}: output for padded size {padded}")
        if i == 0:
            require(out.requires_grad, f"{what}: its output has no gradient; is it detached?")
            head.zero_grad(set_to_none=True)
            # A random projection so that a normalising layer cannot make the gradient zero.
            weights = torch.randn_like(out)
            (out * weights).mean().backward()
            _check_grads(head, what)
            reached = [level for level, f in enumerate(features) if f.grad is not None]
            if not reached:
                raise ContractError(f"{what}: no gradient reaches any feature level")
            for level in reached:
                grad = features[level].grad
                assert grad is not None
                require_finite(grad, f"{what}: gradient of feature level {level}")
            head.zero_grad(set_to_none=True)
    return head
