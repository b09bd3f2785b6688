"""Optimisers, parameter groups and learning-rate schedules.

Every trainable parameter gets a learning-rate scale and a weight decay:

* weight decay applies to weights with two or more dimensions only: biases and
  normalisation scales (one dimension) and the parameters of a multi-task weighting
  (``model.weighting``) are never decayed, as decaying them only fights what they do;
* the backbone's parameters train at ``backbone_lr_mult`` times the rate of the rest;
* with ``layer_decay`` the backbone is split into layer groups ``0 .. K-1`` (stem first),
  the heads being layer ``K``; layer ``i`` trains at ``layer_decay ** (K - i)`` times the
  heads' rate (layer-wise learning-rate decay, BEiT, Bao et al. 2022; ELECTRA, Clark et
  al. 2020). The groups of a timm backbone come from timm's own ``group_matcher`` (as
  ``timm.optim.param_groups_layer_decay`` uses them); any other backbone is grouped by
  feature level: a parameter belongs to the first (finest) feature map that depends on it.

Parameters with the same (scale, decay) share one optimiser group, ordered by scale, then
decayed before not decayed; each group records its ``lr_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from pixcore._config import TrainerConfig
from pixcore._errors import PixcoreError

__all__ = ["backbone_layers", "build_optimizer", "build_scheduler", "lr_factor", "parameter_groups"]


# -- layer groups of a backbone -----------------------------------------------------------


def backbone_layers(backbone: nn.Module) -> tuple[dict[str, int], int]:
    """Layer index (0 = stem) of every trainable backbone parameter, and the number of layers.

    Names are those of ``backbone.named_parameters()``. A backbone that holds a timm
    model as ``backbone.model`` and names it in ``backbone.model_name`` (as ``timm/*``
    backbones do) is grouped with timm's ``group_matcher(coarse=False)``: one layer per
    block. Any other backbone is grouped by the feature level at which a parameter first
    matters (see :func:`_feature_level_layers`).
    """
    layers = _timm_layers(backbone)
    if layers is None:
        layers = _feature_level_layers(backbone)
    # Renumber to 0 .. K-1 in depth order.
    order = {old: new for new, old in enumerate(sorted(set(layers.values())))}
    return {name: order[layer] for name, layer in layers.items()}, len(order)


def _trainable(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    return ((n, p) for n, p in module.named_parameters() if p.requires_grad)


def _timm_layers(backbone: nn.Module) -> dict[str, int] | None:
    inner, model_name = getattr(backbone, "model", None), getattr(backbone, "model_name", None)
    if not isinstance(inner, nn.Module) or not isinstance(model_name, str):
        return None
    try:
        import timm
        from timm.models import group_parameters
    except ImportError:
        return None
    try:
        # The full classifier, on the meta device (no memory, no initialisation): only its
        # parameter names and group_matcher are needed.
        with torch.device("meta"):
            full = timm.create_model(model_name, pretrained=False)
        if not hasattr(full, "group_matcher"):
            return None
        by_name: dict[str, int] = group_parameters(full, full.group_matcher(coarse=False), reverse=True)
    except Exception:  # an unknown name, a model that cannot be built on meta: fall back
        return None
    child = next((n for n, m in backbone.named_children() if m is inner), None)
    if child is None:
        return None
    prefix = child + "."
    own = [name for name, _ in _trainable(inner)]
    for translate in _timm_name_translations(full):
        mapped = {name: translate(name) for name in own}
        if all(original in by_name for original in mapped.values()):
            return {prefix + name: by_name[original] for name, original in mapped.items()}
    return None


def _timm_name_translations(full: nn.Module) -> list[Callable[[str], str]]:
    """Ways timm's feature extractors rename the parameters of the model they wrap.

    ``FeatureListNet`` flattens first-level ``nn.Sequential`` children (``stem.0`` becomes
    ``stem_0``); ``FeatureGetterNet`` keeps the model under ``model.``; models with their
    own feature class keep the names.
    """
    flattened: dict[str, str] = {}
    for name, child in full.named_children():
        if isinstance(child, nn.Sequential):
            for sub, _ in child.named_children():
                flattened[f"{name}_{sub}"] = f"{name}.{sub}"

    def unflatten(name: str) -> str:
        head, dot, rest = name.partition(".")
        return flattened.get(head, head) + dot + rest

    def unwrap(name: str) -> str:
        return name[len("model."):] if name.startswith("model.") else name

    def same(name: str) -> str:
        return name

    return [same, unflatten, unwrap]


def _feature_level_layers(backbone: nn.Module) -> dict[str, int]:
    """A parameter's layer is the first feature level (finest first) whose map depends on it.

    Found with one forward pass of a small zero image in eval mode and one
    ``autograd.grad`` per level (structure only: values do not matter, and nothing random
    is drawn). Parameters that no level depends on join the last level.
    """
    feature_info = getattr(backbone, "feature_info", None)
    params = list(_trainable(backbone))
    if not params:
        return {}
    if not feature_info:
        raise PixcoreError(
            f"trainer.layer_decay cannot group the parameters of {type(backbone).__name__}: it is not "
            "a timm backbone and has no feature_info. Remove trainer.layer_decay."
        )
    stride = max(int(level.stride) for level in feature_info)
    device = params[0][1].device
    size = max(32, 2 * stride)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.enable_grad():
            features = backbone(torch.zeros(1, 3, size, size, device=device))
            tensors = [p for _, p in params]
            levels = {name: len(features) - 1 for name, _ in params}
            for level in reversed(range(len(features))):
                grads = torch.autograd.grad(features[level].sum(), tensors, allow_unused=True,
                                            retain_graph=level > 0)
                for (name, _), grad in zip(params, grads, strict=True):
                    if grad is not None:
                        levels[name] = level
    except Exception as error:
        raise PixcoreError(
            f"trainer.layer_decay: grouping the parameters of {type(backbone).__name__} by feature "
            f"level needs a forward pass of a {size}x{size} image, which failed ({type(error).__name__}: "
            f"{error}). Remove trainer.layer_decay for this backbone."
        ) from error
    finally:
        backbone.train(was_training)
    return levels


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

