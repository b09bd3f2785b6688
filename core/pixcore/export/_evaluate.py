"""``pixcore eval --model model.onnx CONFIG``: score an exported model as a checkpoint is scored.

The data and metrics come from the config (as for a checkpoint), the tasks from the
model's own metadata; ONNX Runtime runs the model (:class:`~pixcore.export._runtime.OnnxPredictor`,
with the same TTA and window options), and pixcore's metrics score its outputs. The
difference against the checkpoint's scores is what the export (or INT8 quantisation) costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixcore._config import ModelConfig, RunConfig, validate_config
from pixcore._errors import ConfigError
from pixcore.export._runtime import OnnxPredictor, read_metadata
from pixcore.model._compose import TaskBinding, build_tasks
from pixcore.plugin._manager import PluginManager, get_plugin_manager

__all__ = ["evaluate_exported"]


def _bindings(metadata: Mapping[str, Any], config: RunConfig, manager: PluginManager) -> dict[str, TaskBinding]:
    """The exported model's tasks, scored with the config's metrics where it names them."""
    model_config = validate_config(ModelConfig, metadata["config"], source="the exported model's metadata")
    tasks = build_tasks(model_config, manager=manager)
    bindings: dict[str, TaskBinding] = {}
    for key, task in tasks.items():
        named = config.model.tasks.get(key)
        metrics = (named.metrics if named is not None else None) or model_config.tasks[key].metrics
        if metrics is None:
            from pixcore._config import ComponentConfig

            metrics = [ComponentConfig(name=name) for name in type(task).default_metrics]
        bindings[key] = TaskBinding(task=task, metric_configs=list(metrics), weight=1.0)
    return bindings


def _as_prediction(value: np.ndarray, kind: str, classes: int) -> torch.Tensor:
    """One image's output as the metrics take it: ``[1, C, H, W]`` float (class ids one-hot)."""
    if kind == "class_mask":
        ids = torch.from_numpy(value).long()
        return torch.nn.functional.one_hot(ids, classes).permute(2, 0, 1)[None].float()
    return torch.from_numpy(np.ascontiguousarray(value))[None].float()


def evaluate_exported(
    config: RunConfig, model: str | Path, *, manager: PluginManager | None = None, **options: Any
) -> dict[str, dict[str, Any]]:
    """Score exported ``model`` on ``config.data.val``; ``options`` as :class:`OnnxPredictor`'s.

    Returns ``{task: {metric key: value, "protocol": {...}}}`` as ``pixcore eval`` prints.
    """
    from pixcore.infer._evaluate import validation_loader
    from pixcore.train._trainer import _collect

    manager = manager or get_plugin_manager()
    metadata = read_metadata(model).raw
    predictor = OnnxPredictor(model, **options)
    bindings = _bindings(metadata, config, manager)
    metrics = {name: binding.new_metrics(manager) for name, binding in bindings.items()}
    for metric_set in metrics.values():
        for metric in metric_set.values():
            metric.reset()
    for batch in validation_loader(config, manager):
        for i in range(batch["image"].shape[0]):
            outputs = predictor(batch["image"][i].numpy())
            sample = {key: value[i : i + 1] for key, value in batch.items() if isinstance(value, torch.Tensor)}
            for name, binding in bindings.items():
                entry = metadata["tasks"][name]
                prediction = _as_prediction(outputs[name], entry["kind"], int(entry.get("num_classes") or 0))
                target, valid = binding.task.target_and_valid(sample)
                for metric in metrics[name].values():
                    metric.update(prediction, target, valid)
    if not bindings:
        raise ConfigError(f"{model}: the exported model has no task to score")
    return _collect(metrics)
