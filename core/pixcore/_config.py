"""Configuration: one pydantic model per section, loaded from YAML or JSON.

Validation runs in two passes. The first checks the structure here (unknown keys are
rejected everywhere). Component parameters cannot be part of a closed schema, because
plugins define them: the first pass keeps them as a plain mapping, and the second pass
(when the component is built) validates them against the component's own parameter
model from the registry. Both passes report the dotted config path of a bad value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pixcore._errors import ConfigError

__all__ = [
    "ComponentConfig",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TaskConfig",
    "TrainerConfig",
    "load_config",
    "validate_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ComponentConfig(_Strict):
    """A registry name and its parameters. A plain string is short for ``{name: ...}``."""

    name: str = Field(description="Registry name, e.g. 'fpn' or 'timm/resnet18'.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters, validated by the component itself."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TaskConfig(_Strict):
    """One task of a multi-task model. Missing components use the task's defaults."""

    task: str | None = Field(
        default=None, description="Task registry name; defaults to the task's key in `tasks`."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The task's own parameters.")
    head: ComponentConfig | None = Field(default=None, description="Head; default: the task's.")
    loss: ComponentConfig | None = Field(default=None, description="Loss; default: the task's.")
    metrics: list[ComponentConfig] | None = Field(
        default=None, description="Metrics; default: the task's."
    )
    weight: float = Field(default=1.0, ge=0.0, description="Weight of this task's loss.")


class ModelConfig(_Strict):
    """A backbone shared by several task heads."""

    backbone: ComponentConfig
    tasks: dict[str, TaskConfig] = Field(min_length=1)
    normalize: bool = Field(
        default=True, description="Convert uint8 images to float and normalise with mean/std."
    )
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @model_validator(mode="before")
    @classmethod
    def _task_shorthand(cls, value: Any) -> Any:
        # `tasks: {depth: {}}` and `tasks: [depth, normals]` are both accepted.
        if isinstance(value, dict) and isinstance(value.get("tasks"), list):
            value = {**value, "tasks": {name: {} for name in value["tasks"]}}
        if isinstance(value, dict) and isinstance(value.get("tasks"), dict):
            value = {
                **value,
                "tasks": {k: ({} if v is None else v) for k, v in value["tasks"].items()},
            }
        return value


class DataConfig(_Strict):
    """Where samples come from and how they are augmented."""

    train: ComponentConfig = Field(description="Training data set.")
    val: ComponentConfig | None = Field(default=None, description="Held-out data set.")
    augmentations: list[ComponentConfig] = Field(
        default_factory=list, description="Applied in order to training samples."
    )
    batch_size: int = Field(default=16, ge=1)
    num_workers: int = Field(default=0, ge=0)


class TrainerConfig(_Strict):
    """The trainer's settings (see docs/training.md)."""

    steps: int = Field(default=1000, ge=1, description="Optimiser steps.")
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    grad_clip: float | None = Field(default=None, gt=0)
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'.")
    seed: int = 0
    eval_every: int | None = Field(default=None, ge=1, description="Steps; None: only at the end.")
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int | None = Field(
        default=None, ge=1,
        description="Write the checkpoint every this many steps (None: only at the end). "
        "A run resumes from the last one exactly.",
    )
    progress: bool = True
    on_non_finite: Literal["stop", "skip"] = Field(
        default="stop",
        description="A NaN/inf loss: 'stop' raises, naming the step and task, and writes no "
        "checkpoint; 'skip' leaves the model unchanged for that step and counts it.",
    )
    sync_batchnorm: bool = Field(
        default=False,
        description="With several processes (torchrun), normalise BatchNorm over the global "
        "batch (SyncBatchNorm; CUDA only). No effect in a single process.",
    )
    tensorboard: bool = Field(
        default=False,
        description="Also log to <out>/tensorboard (needs the tensorboard package; without it "
        "a warning is shown and training goes on).",
    )
    early_stopping_metric: str | None = Field(
        default=None,
        description="Stop when this evaluation result, 'task/key' (e.g. 'depth/abs_rel'), has "
        "not improved for early_stopping_patience evaluations; needs eval_every.",
    )
    early_stopping_mode: Literal["min", "max"] = Field(
        default="min", description="'min': lower is better; 'max': higher is better."
    )
    early_stopping_patience: int = Field(
        default=3, ge=1, description="Evaluations without improvement before early stopping."
    )


class RunConfig(_Strict):
    """A whole run: ``pixcore train run.yaml``."""

    model: ModelConfig
    data: DataConfig
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)


def _format(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration{f' in {source}' if source else ''}:"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<root>"
        got = "" if item["type"] == "missing" else f" (got {item['input']!r})"
        hint = ""
        if item["type"] == "extra_forbidden":
            hint = " - remove it or check its spelling"
        lines.append(f"  {path}: {item['msg']}{got}{hint}")
    return "\n".join(lines)


def validate_config(model: type[BaseModel], data: Any, source: str = "") -> Any:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` with config paths."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format(error, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a :class:`RunConfig` from a ``.yaml``/``.yml``/``.json`` file.

    ``overrides`` are ``dotted.key=value`` strings (value parsed as YAML), applied before
    validation, e.g. ``["trainer.steps=200", "data.batch_size=8"]``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    data = _parse(text, path)
    for override in overrides or []:
        _apply_override(data, override)
    return validate_config(RunConfig, data, source=str(path))


def _parse(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") from None
    if path.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from None
    raise ConfigError(f"{path}: unknown config format {path.suffix!r}; use .yaml, .yml or .json")


def _apply_override(data: Any, override: str) -> None:
    import yaml

    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form dotted.key=value")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a mapping")
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        raise ConfigError(f"override {override!r}: {'.'.join(parts[:-1]) or '<root>'} is not a mapping")
    node[parts[-1]] = yaml.safe_load(raw)
