"""Evaluate a checkpoint on the held-out data of a run config (``pixcore eval``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from pixcore._config import RunConfig
from pixcore._errors import ConfigError
from pixcore._interfaces import Sample
from pixcore.infer._loading import WeightsChoice, load_model
from pixcore.infer._predictor import Predictor
from pixcore.infer._window import Weighting
from pixcore.model._compose import MultiTaskModel
from pixcore.plugin._manager import PluginManager, get_plugin_manager

__all__ = ["evaluate_checkpoint", "format_metrics", "validation_loader"]


def validation_loader(config: RunConfig, manager: PluginManager | None = None) -> DataLoader[Sample]:
    """A loader over ``config.data.val`` (in order; batch size and workers from ``data``)."""
    if config.data.val is None:
        raise ConfigError(
            "the config has no held-out data (data.val) to evaluate on; add a `val:` entry under "
            "`data:`, e.g. `val: {name: synthetic, params: {split: val, length: 128}}`, or pass "
            "--set data.val.name=NAME --set data.val.params.split=val"
        )
    from pixcore.data import collate  # samples may lack some labels (present/<key>)

    manager = manager or get_plugin_manager()
    val = config.data.val
    dataset = manager.registry("datasets").create(val.name, val.params, path="data.val.params")
    return DataLoader(dataset, batch_size=config.data.val_batch_size or config.data.batch_size,
                      num_workers=config.data.num_workers, collate_fn=collate)


def _use_config_metrics(model: MultiTaskModel, config: RunConfig, manager: PluginManager) -> None:
    """Score with the metrics the config names for a task (so ``--set`` can change them)."""
    for key, task_config in config.model.tasks.items():
        binding = model.bindings.get(key)
        if binding is None or task_config.metrics is None:
            continue
        for i, metric in enumerate(task_config.metrics):
            manager.registry("metrics").validate(
                metric.name, metric.params, path=f"model.tasks.{key}.metrics.{i}.params",
                context=binding.task.context(),
            )
        binding.metric_configs = list(task_config.metrics)


def evaluate_checkpoint(
    config: RunConfig,
    checkpoint: str | Path,
    *,
    hflip: bool = False,
    scales: tuple[float, ...] = (1.0,),
    window: tuple[int, int] | None = None,
    overlap: float = 0.5,
    weighting: Weighting = "gaussian",
    weights: WeightsChoice = "auto",
    device: str | torch.device = "auto",
    manager: PluginManager | None = None,
) -> dict[str, dict[str, Any]]:
    """Score the model of ``checkpoint`` on ``config.data.val`` with its tasks' metrics.

    The model (architecture, task parameters, weights) comes from the checkpoint; the
    data and, where ``config`` lists them for a task, the metrics come from ``config``.
    The forward pass runs in ``config.trainer.precision``, as the run's own evaluation.
    TTA and sliding-window options are those of :class:`~pixcore.infer.Predictor`;
    ``weights`` those of :func:`~pixcore.infer.load_model`; ``device`` ``"auto"`` picks a
    GPU when there is one.

    Returns:
        ``{task: {metric key: value, "protocol": {metric name: protocol}}}`` as
        :func:`pixcore.train.evaluate` gives.

    """
    from pixcore.train import evaluate, select_device

    manager = manager or get_plugin_manager()
    where = select_device(device) if isinstance(device, str) else device
    loader = validation_loader(config, manager)
    model = load_model(checkpoint, weights=weights, device=where, manager=manager)
    _use_config_metrics(model, config, manager)
    predictor = Predictor(model, hflip=hflip, scales=scales, window=window, overlap=overlap,
                          weighting=weighting)
    return evaluate(predictor, loader, where, manager,  # type: ignore[arg-type]
                    precision=config.trainer.precision)


def _number(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_metrics(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table: one row per task and metric, then each task's protocols.

    Per-class entries (keys with a ``/``, such as ``iou/3``) are counted, not listed.
    """
    rows = [
        (task, key, _number(value))
        for task, values in results.items()
        for key, value in values.items()
        if key != "protocol" and "/" not in key and isinstance(value, (int, float))
    ]
    task_width = max([4, *(len(r[0]) for r in rows)])
    key_width = max([6, *(len(r[1]) for r in rows)])
    lines = [f"{'task':<{task_width}}  {'metric':<{key_width}}  {'value':>10}"]
    lines += [f"{task:<{task_width}}  {key:<{key_width}}  {value:>10}" for task, key, value in rows]
    lines.append("")
    for task, values in results.items():
        protocols = values.get("protocol") or {}
        described = ", ".join(f"{name}: {protocol or '(unnamed)'}" for name, protocol in protocols.items())
        per_class = sum(1 for key in values if "/" in key)
        extra = f" (+{per_class} per-class values in the JSON output)" if per_class else ""
        lines.append(f"{task} protocols: {described}{extra}")
    return "\n".join(lines)
