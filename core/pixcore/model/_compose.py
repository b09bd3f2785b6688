"""Model composition: a shared backbone plus one head per task, built from registry names."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixcore._config import ComponentConfig, ModelConfig, TaskConfig, validate_config
from pixcore._errors import ConfigError
from pixcore._interfaces import Backbone, Head, Loss, Metric, Task, TaskWeighting
from pixcore.model._pyramid import SimplePyramid, is_single_stride
from pixcore.model._weighting import FixedWeighting
from pixcore.plugin._manager import PluginManager, get_plugin_manager
from pixcore.plugin._params import _unwrap

__all__ = ["MultiTaskModel", "TaskBinding", "build_model", "build_model_from_config", "build_tasks"]


@dataclass
class TaskBinding:
    """What the trainer needs of one task besides its head: the task, its metrics, weight."""

    task: Task
    metric_configs: list[ComponentConfig]
    weight: float

    def new_metrics(self, manager: PluginManager | None = None) -> dict[str, Metric]:
        """Fresh metric instances for an evaluation, keyed by metric name."""
        registry = (manager or get_plugin_manager()).registry("metrics")
        return {
            m.name: registry.create(m.name, m.params, context=self.task.context())
            for m in self.metric_configs
        }


class MultiTaskModel(nn.Module):
    """``image [B, 3, H, W] -> {task_name: prediction}``.

    Accepts uint8 images (normalised inside, so a checkpoint carries its preprocessing)
    or float images when ``normalize`` is False. Any input size works: the image is
    padded to a multiple of the backbone stride and every prediction cropped back.

    ``weighting`` (a :class:`pixcore.TaskWeighting`) combines the task losses in
    :meth:`compute_loss`; it is a submodule, so learnable weights are trained and saved
    with the model. Default: the ``fixed`` weighting with each binding's ``weight``.

    ``neck`` (optional) turns the backbone's features into the input of the heads named in
    ``neck_heads``; :func:`build_model_from_config` adds ViTDet's simple pyramid
    (:class:`pixcore.model.SimplePyramid`) for heads that need multi-scale features when
    the backbone gives every level at one stride. It runs once per forward, whatever the
    number of heads reading it.
    """

    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(
        self,
        backbone: Backbone,
        heads: Mapping[str, Head],
        losses: Mapping[str, Loss],
        bindings: Mapping[str, TaskBinding],
        config: ModelConfig,
        weighting: TaskWeighting | None = None,
        neck: nn.Module | None = None,
        neck_heads: Collection[str] = (),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.neck_heads = frozenset(neck_heads) if neck is not None else frozenset()
        self.heads = nn.ModuleDict(dict(heads))
        self.losses = nn.ModuleDict(dict(losses))
        self.bindings = dict(bindings)
        if weighting is None:
            weighting = FixedWeighting({name: b.weight for name, b in self.bindings.items()})
        self.weighting = weighting
        self.config = config
        self.normalize = config.normalize
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def tasks(self) -> dict[str, Task]:
        return {name: binding.task for name, binding in self.bindings.items()}

    def preprocess(self, image: Tensor) -> Tensor:
        """uint8 ``[0, 255]`` (or float ``[0, 1]``) -> normalised float."""
        if not self.normalize:
            return image.float()
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        return (x - self.mean) / self.std

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        x = self.preprocess(image)
        height, width = x.shape[-2:]
        stride = self.backbone.stride
        pad_h, pad_w = (-height) % stride, (-width) % stride
        if torch.compiler.is_exporting():
            # Sizes are symbolic: always pad (by 0 where nothing is needed). Exported graphs
            # take sizes of at least the stride, so reflect padding is always possible. The
            # padded size is written as stride * ceil(size / stride), which the exporter's
            # shape algebra divides exactly at every level; `size + (-size) % stride` it cannot
            # simplify, and windowed backbones (Swin) then take minutes to trace.
            pad_h = stride * ((height + stride - 1) // stride) - height
            pad_w = stride * ((width + stride - 1) // stride) - width
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        elif pad_h or pad_w:
            # Reflect keeps image statistics at the border; the padding is cropped away below.
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        features = self.backbone(x)
        pyramid = self.neck(features) if self.neck is not None else features
        size = (x.shape[-2], x.shape[-1])
        return {
            name: self.bindings[name].task.decode(
                head(pyramid if name in self.neck_heads else features, size)[..., :height, :width]
            )
            for name, head in self.heads.items()
        }

    def compute_loss(
        self, predictions: Mapping[str, Tensor], batch: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The task losses combined by :attr:`weighting`, and every named part.

        Parts: each task's loss (``task/loss``) and its own parts (``task/part``), plus
        the weighting's (``weight/task``, ...). A task is *present* in a batch when its
        validity mask (with ``present/<target_key>`` ANDed in) has any True pixel; an
        absent task gets weight 0 for this step.
        """
        losses: dict[str, Tensor] = {}
        present: dict[str, Tensor] = {}
        parts: dict[str, Tensor] = {}
        for name, binding in self.bindings.items():
            target, valid = binding.task.target_and_valid(batch)
            out = self.losses[name](predictions[name], target, valid)
            parts[f"{name}/loss"] = out.total.detach()
            for part, value in out.parts.items():
                parts[f"{name}/{part}"] = value
            losses[name] = out.total
            present[name] = valid.any()  # stays on the device: no synchronisation
        combined = self.weighting(losses, present)
        parts.update({key: value.detach() for key, value in combined.parts.items()})
        return combined.total, parts


def _task_name(key: str, config: Any) -> str:
    return config.task or key


def _create_task(manager: PluginManager, key: str, config: TaskConfig, path: str) -> Task:
    where = f"{path}.tasks.{key}"
    task: Task = manager.registry("tasks").create(
        _task_name(key, config), config.params, path=f"{where}.params"
    )
    return task


def build_tasks(
    config: ModelConfig | Mapping[str, Any], *, manager: PluginManager | None = None,
    path: str = "model",
) -> dict[str, Task]:
    """The tasks of a model config (output name -> task), without building the model.

    Created exactly as :func:`build_model_from_config` creates them, so that what the
    tasks read (``target_key``, ``valid_key``) can be checked against the data sets
    before any weight is allocated.
    """
    model = config
    if not isinstance(model, ModelConfig):
        model = validate_config(ModelConfig, model, source=path)
    manager = manager or get_plugin_manager()
    return {key: _create_task(manager, key, task, path) for key, task in model.tasks.items()}


def build_model_from_config(
    config: ModelConfig | Mapping[str, Any], *, manager: PluginManager | None = None,
    path: str = "model",
) -> MultiTaskModel:
    """Build a :class:`MultiTaskModel` from a :class:`ModelConfig` (or a plain mapping).

    Component parameters are validated against each component's own model (the second
    validation pass); errors name the config path, e.g. ``model.tasks.depth.head.params``.
    """
    if not isinstance(config, ModelConfig):
        config = validate_config(ModelConfig, config, source=path)
    manager = manager or get_plugin_manager()
    backbone = manager.registry("backbones").create(
        config.backbone.name, config.backbone.params, path=f"{path}.backbone.params"
    )
    if not isinstance(backbone, Backbone):
        raise ConfigError(
            f"{path}.backbone: {config.backbone.name!r} created a {type(backbone).__name__}, "
            "not a pixcore.Backbone"
        )
    heads: dict[str, Head] = {}
    losses: dict[str, Loss] = {}
    bindings: dict[str, TaskBinding] = {}
    neck: SimplePyramid | None = None
    neck_heads: list[str] = []
    for key, task_config in config.tasks.items():
        where = f"{path}.tasks.{key}"
        task = _create_task(manager, key, task_config, path)
        context = task.context()
        head_config = task_config.head or ComponentConfig(name=type(task).default_head)
        in_features = backbone.feature_info
        if is_single_stride(in_features) and not _accepts_single_stride(manager, head_config.name):
            # A plain transformer's levels share one stride; pyramid decoders get ViTDet's pyramid.
            neck = neck or SimplePyramid(in_features)
            in_features = neck.feature_info
            neck_heads.append(key)
        heads[key] = manager.registry("heads").create(
            head_config.name,
            head_config.params,
            path=f"{where}.head.params",
            context={**context, "in_features": in_features, "out_channels": task.out_channels},
        )
        loss_config = task_config.loss or ComponentConfig(name=type(task).default_loss)
        losses[key] = manager.registry("losses").create(
            loss_config.name, loss_config.params, path=f"{where}.loss.params", context=context
        )
        metric_configs = task_config.metrics
        if metric_configs is None:
            metric_configs = [ComponentConfig(name=n) for n in type(task).default_metrics]
        for i, metric in enumerate(metric_configs):  # validate now, create per evaluation
            manager.registry("metrics").validate(
                metric.name, metric.params, path=f"{where}.metrics.{i}.params", context=context
            )
        bindings[key] = TaskBinding(task=task, metric_configs=metric_configs, weight=task_config.weight)
    weighting = manager.registry("weightings").create(
        config.weighting.name,
        config.weighting.params,
        path=f"{path}.weighting.params",
        context={"tasks": list(bindings), "weights": {k: b.weight for k, b in bindings.items()}},
    )
    if not isinstance(weighting, TaskWeighting):
        raise ConfigError(
            f"{path}.weighting: {config.weighting.name!r} created a {type(weighting).__name__}, "
            "not a pixcore.TaskWeighting"
        )
    return MultiTaskModel(backbone, heads, losses, bindings, config, weighting, neck, neck_heads)


def _accepts_single_stride(manager: PluginManager, head_name: str) -> bool:
    """Whether a head takes single-stride levels as they are (:attr:`pixcore.Head.accepts_single_stride`)."""
    try:
        factory = _unwrap(manager.registry("heads").get(head_name).factory)
    except Exception:  # an unknown head: create() below names it and what exists
        return True
    return bool(getattr(factory, "accepts_single_stride", False))


def build_model(
    backbone: str | Mapping[str, Any],
    tasks: Mapping[str, str | Mapping[str, Any] | None] | list[str],
    *,
    manager: PluginManager | None = None,
    **model_options: Any,
) -> MultiTaskModel:
    """Compose a multi-task model from registry names in one call.

    Args:
        backbone: A backbone name (``"timm/resnet18"``) or ``{"name": ..., "params": {...}}``.
        tasks: Task names, or a mapping of output name to per-task options: the task's
            registry name under ``task`` (default: the key), its ``params``, and optional
            ``head``, ``loss``, ``metrics``, ``weight``. A string value is the task name.
        manager: The plugin manager to resolve names with (default: the process-wide one).
        model_options: Further :class:`ModelConfig` fields (``weighting``, ``normalize``,
            ``mean``, ``std``).

    Example::

        model = pixcore.build_model(
            "timm/resnet18",
            tasks={"semseg": {"task": "segmentation", "params": {"num_classes": 7}},
                   "depth": {}, "normals": {"head": "fpn"}},
        )
        predictions = model(images)   # {"semseg": ..., "depth": ..., "normals": ...}

    """
    task_configs: dict[str, Any] | list[str]
    if isinstance(tasks, Mapping):
        task_configs = {k: ({"task": v} if isinstance(v, str) else v) for k, v in tasks.items()}
    else:
        task_configs = list(tasks)
    config = {"backbone": backbone, "tasks": task_configs, **model_options}
    return build_model_from_config(config, manager=manager, path="build_model")
