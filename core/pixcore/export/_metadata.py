"""What an exported model carries about itself: the ``pixcore`` metadata (JSON).

A consumer needs no pixcore code to use an exported model: the input's format, each
output's name and meaning, class names and colours, depth units and the versions and
config that made it are in the ONNX model's ``metadata_props`` under the key ``pixcore``
(and in ``model.json`` beside a torch.export archive).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import torch

from pixcore._targets import ClassMask, ScalarField, UnitVectorField
from pixcore.export._graph import ExportOutput
from pixcore.model._compose import MultiTaskModel

__all__ = ["FORMAT", "FORMAT_VERSION", "METADATA_KEY", "build_metadata"]

FORMAT = "pixcore-export"
FORMAT_VERSION = 1
#: The key of the JSON in the ONNX model's ``metadata_props``.
METADATA_KEY = "pixcore"

_KINDS = ((ClassMask, "class_mask"), (ScalarField, "scalar_field"), (UnitVectorField, "unit_vector_field"))


def _kind(task: Any) -> str:
    target_kind = type(task).target_kind
    for base, name in _KINDS:
        if issubclass(target_kind, base):
            return name
    return str(getattr(target_kind, "kind", None) or getattr(target_kind, "__name__", "other"))


def _palette(task: Any, classes: int) -> list[list[int]] | None:
    """Each class's colour, read from the task's own picture of logits naming class k at x = k."""
    logits = torch.eye(classes).unsqueeze(1)  # [C, 1, C]: channel k peaks at column k
    try:
        picture = np.asarray(task.visualize(logits))
    except Exception:  # a task whose picture needs more than logits: no palette
        return None
    if picture.shape != (1, classes, 3):
        return None
    return [[int(c) for c in colour] for colour in picture[0]]


def _task_entry(name: str, task: Any, outputs: list[ExportOutput]) -> dict[str, Any]:
    context = task.context()
    entry: dict[str, Any] = {
        "task": getattr(task, "registry_name", None) or type(task).__name__,
        "kind": _kind(task),
        "channels": int(task.prediction_channels),
        "outputs": {o.role: o.name for o in outputs if o.task == name},
    }
    if entry["kind"] == "class_mask":
        classes = int(context.get("num_classes", task.out_channels))
        entry.update(num_classes=classes, ignore_index=context.get("ignore_index"),
                     class_names=context.get("class_names"), palette=_palette(task, classes))
    if "mode" in context and "min_depth" in context:  # depth
        entry.update(mode=context["mode"], units="m" if context["mode"] == "metric" else "relative",
                     min_depth=context["min_depth"], max_depth=context["max_depth"])
    return entry


def _versions(model: MultiTaskModel) -> dict[str, Any]:
    found: dict[str, str] = {}
    for distribution in ("pixcore", "pixcore-timm", "pixcore-seg", "pixcore-depth", "pixcore-normals", "timm"):
        try:
            found[distribution] = version(distribution)
        except PackageNotFoundError:
            continue
    found["torch"] = torch.__version__
    found["python"] = sys.version.split()[0]
    return found


def build_metadata(
    model: MultiTaskModel, outputs: list[ExportOutput], *, dynamic: bool, size: tuple[int, int] | None,
    opset: int | None, task_names: dict[str, str],
) -> dict[str, Any]:
    """The JSON-ready metadata of an export of ``model`` (see the module docstring)."""
    tasks = {}
    for name, task in model.tasks.items():
        entry = _task_entry(name, task, outputs)
        entry["task"] = task_names.get(name, entry["task"])
        tasks[name] = entry
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "input": {
            "name": "image", "dtype": "uint8", "layout": "NCHW", "channels": 3,
            "mean": [float(v) for v in model.mean.flatten()], "std": [float(v) for v in model.std.flatten()],
            "stride": int(model.backbone.stride), "dynamic": dynamic, "size": list(size) if size else None,
        },
        "outputs": [{"name": o.name, "task": o.task, "role": o.role} for o in outputs],
        "tasks": tasks,
        "opset": opset,
        "versions": _versions(model),
        "config": model.config.model_dump(mode="json"),
    }
