"""Optimisers, parameter groups and learning-rate schedules.

Every trainable parameter gets a learning-rate scale and a weight decay:

* weight decay applies to weights with two or more dimensions only: biases and
  normalisation scales (one dimension) and the parameters of a multi-task weighting
  (``model.weighting``) are never decayed, as decaying them only fights what they do;
* the backbone's parameters train at ``backbone_lr_mult`` times the rate of the rest;
* with ``layer_decay`` the backbone is split into layer groups ``0 .. K-1`` (stem first),
  the heads being layer ``K``; layer ``i`` trains at ``layer_decay ** (K - i)`` times the
  heads' rate (layer-wise learning-rate decay, BEiT, Bao et al. 2022; ELECTRA, Clark et
  al. 2020). The groups are the backbone's own :meth:`pixcore.Backbone.layer_groups`
  (``timm/*`` backbones: timm's ``group_matcher``, as
  ``timm.optim.param_groups_layer_decay`` uses it); by default, and for a backbone
  module that is not a :class:`pixcore.Backbone`, a parameter belongs to the first
  (finest) feature map that depends on it.

Parameters with the same (scale, decay) share one optimiser group, ordered by scale, then
decayed before not decayed; each group records its ``lr_scale``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pixcore._config import TrainerConfig
from pixcore._errors import PixcoreError
from pixcore._interfaces import feature_level_groups

__all__ = ["backbone_layers", "build_optimizer", "build_scheduler", "lr_factor", "parameter_groups"]


# -- layer groups of a backbone -----------------------------------------------------------


def backbone_layers(backbone: nn.Module) -> tuple[dict[str, int], int]:
    """Layer index (0 = stem) of every trainable backbone parameter, and the number of layers.

    Names are those of ``backbone.named_parameters()``. The layers are the backbone's
    ``layer_groups()`` (see :meth:`pixcore.Backbone.layer_groups`), less the groups
    without a trainable parameter; a module without that method is grouped by feature
    level (:func:`pixcore._interfaces.feature_level_groups`).
    """
    groups = _layer_groups(backbone)
    trainable = [name for name, _ in _trainable(backbone)]
    _check_layer_groups(backbone, groups, trainable)
    wanted = set(trainable)
    kept = [[name for name in group if name in wanted] for group in groups]
    kept = [group for group in kept if group]
    return {name: layer for layer, group in enumerate(kept) for name in group}, len(kept)


def _trainable(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    return ((n, p) for n, p in module.named_parameters() if p.requires_grad)


def _layer_groups(backbone: nn.Module) -> list[list[str]]:
    method = getattr(backbone, "layer_groups", None)
    if not callable(method):
        return feature_level_groups(backbone)
    groups = method()
    if not isinstance(groups, (list, tuple)) or not all(_is_group(group) for group in groups):
        shown = repr(groups)
        raise PixcoreError(
            f"trainer.layer_decay: {type(backbone).__name__}.layer_groups() must return a list of "
            "lists of parameter names, shallow to deep (e.g. [['stem.weight'], ['block1.weight', "
            f"'block1.bias']]), got {shown[:80] + ('...' if len(shown) > 80 else '')}"
        )
    return [list(group) for group in groups]


def _is_group(group: object) -> bool:
    return isinstance(group, (list, tuple)) and all(isinstance(name, str) for name in group)


def _check_layer_groups(backbone: nn.Module, groups: list[list[str]], trainable: list[str]) -> None:
    """Every trainable parameter in exactly one group; no name that is not a parameter."""
    listed = [name for group in groups for name in group]
    in_a_group = set(listed)
    known = {name for name, _ in backbone.named_parameters()}
    problems = []
    unknown = sorted(in_a_group - known)
    if unknown:
        problems.append(f"it names what is not a parameter: {_some(unknown)}")
    twice = sorted(name for name, count in Counter(listed).items() if count > 1)
    if twice:
        problems.append(f"{_some(twice)} are in several groups")
    missing = [name for name in trainable if name not in in_a_group]
    if missing:
        problems.append(f"{_some(missing)} are in no group")
    if problems:
        what = f"{type(backbone).__name__}.layer_groups()"
        raise PixcoreError(
            f"trainer.layer_decay: {what} must put every trainable parameter (by its "
            f"named_parameters() name) in exactly one group, but {'; '.join(problems)}. Fix "
            f"{what}, or remove trainer.layer_decay."
        )


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


# -- parameter groups ---------------------------------------------------------------------


def parameter_groups(model: nn.Module, config: TrainerConfig) -> list[dict[str, Any]]:
    """The optimiser groups of ``model``'s trainable parameters (see the module docstring).

    Each group holds ``params``, ``lr`` (``config.lr`` times ``lr_scale``),
    ``weight_decay`` and ``lr_scale``. A model without a ``backbone`` attribute is trained
    as one part.
    """
    backbone = getattr(model, "backbone", None)
    backbone_names: dict[int, str] = {}
    scales: dict[str, float] = {}
    if isinstance(backbone, nn.Module):
        backbone_names = {id(p): n for n, p in backbone.named_parameters()}
        if config.layer_decay is not None and any(True for _ in _trainable(backbone)):
            layers, count = backbone_layers(backbone)
            scales = {name: config.layer_decay ** (count - layer) for name, layer in layers.items()}
    weighting = getattr(model, "weighting", None)
    never_decay = {id(p) for p in weighting.parameters()} if isinstance(weighting, nn.Module) else set()

    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for _, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        scale = 1.0
        if id(param) in backbone_names:
            scale = config.backbone_lr_mult * scales.get(backbone_names[id(param)], 1.0)
        decay = param.ndim >= 2 and id(param) not in never_decay
        groups.setdefault((scale, decay), []).append(param)
    return [
        {"params": params, "lr": config.lr * scale, "weight_decay": config.weight_decay if decay else 0.0,
         "lr_scale": scale}
        for (scale, decay), params in sorted(groups.items(), key=lambda item: (item[0][0], not item[0][1]))
    ]


def build_optimizer(model: nn.Module, config: TrainerConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over :func:`parameter_groups`.

    AdamW decays weights decoupled from the gradient (Loshchilov and Hutter 2019); SGD
    (momentum, optionally Nesterov) adds the L2 term to the gradient, as the published
    DeepLab and mmseg recipes do, so that their weight decay values carry over.
    """
    groups = parameter_groups(model, config)
    if not groups:
        raise PixcoreError(
            "the model has no trainable parameters (all have requires_grad=False); check "
            "trainer.freeze_backbone and the backbone's own freeze setting"
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


# -- schedules ----------------------------------------------------------------------------


def lr_factor(step: int, config: TrainerConfig) -> float:
    """The learning rate of step ``step`` (0-based) as a fraction of its peak value.

    Linear warm-up over ``warmup_steps`` (``(step + 1) / warmup_steps``), then, with
    ``progress`` going from 0 at the end of warm-up to 1 at ``steps``: ``constant`` 1;
    ``cosine`` ``(1 + cos(pi progress)) / 2`` (Loshchilov and Hutter 2017); ``poly``
    ``(1 - progress) ** poly_power`` (Chen et al. 2017, DeepLab; mmseg's PolyLR with
    ``min_lr`` 0).
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    if config.schedule == "poly":
        return float((1.0 - progress) ** config.poly_power)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainerConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up, then constant, cosine or poly decay (:func:`lr_factor`), for every group alike."""

    def factor(step: int) -> float:
        return lr_factor(step, config)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

