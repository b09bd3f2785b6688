"""Configuration: one pydantic model per section, loaded from YAML or JSON.

Validation runs in two passes. The first checks the structure here (unknown keys are
rejected everywhere). Component parameters cannot be part of a closed schema, because
plugins define them: the first pass keeps them as a plain mapping, and the second pass
(when the component is built) validates them against the component's own parameter
model from the registry. Both passes report the dotted config path of a bad value.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pixcore._errors import ConfigError, DeviceError

__all__ = [
    "ComponentConfig",
    "DataConfig",
    "ModelConfig",
    "PretrainedConfig",
    "RunConfig",
    "TaskConfig",
    "TrainerConfig",
    "check_device",
    "load_config",
    "validate_config",
]


class _Strict(BaseModel):
    # allow_inf_nan=False: no setting is meaningful at inf or nan (`lr: .inf` is a typo).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: The device names pixcore accepts, as shown in error messages.
DEVICE_FORMS = "'auto', 'cpu', 'cuda', 'cuda:N' (N: a GPU index, e.g. 'cuda:1') or 'mps'"
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str) -> str:
    """Return ``name`` if it is a device name pixcore accepts; raise :class:`DeviceError` if not."""
    if not isinstance(name, str) or not _DEVICE_PATTERN.fullmatch(name):
        raise DeviceError(f"device {name!r} is not a device name; use {DEVICE_FORMS}")
    return name


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


class PretrainedConfig(_Strict):
    """Weights loaded from a local file into the model or its backbone (see docs/training.md)."""

    path: str = Field(
        description="A .safetensors file (a pixcore checkpoint too) or a torch checkpoint, which "
        "is read with torch.load(weights_only=True): a file that needs unpickling is refused."
    )
    part: Literal["model", "backbone"] = Field(
        default="model", description="Load into the whole model or only into model.backbone."
    )
    strict: bool = Field(
        default=False,
        description="Raise if any key is missing, unexpected or of another shape; otherwise those "
        "are skipped and listed in the printed report.",
    )
    prefix: str | None = Field(
        default=None,
        description="Keep only the file's keys that start with this prefix and strip it, e.g. "
        "'backbone.' or 'encoder.'. Default: none ('backbone.' for a pixcore checkpoint loaded "
        "into the backbone). A 'module.' prefix on every key (DDP) is always stripped.",
    )
    remap: dict[str, str] = Field(
        default_factory=dict,
        description="Key prefixes to rename after `prefix`, {old: new}, longest match first; "
        "e.g. {'': 'model.'} prefixes every key.",
    )
    on_scratch: Literal["refuse", "skip"] = Field(
        default="refuse",
        description="With trainer.recipe 'scratch', which trains from the default initialisation: "
        "'refuse' (the run stops, as the two settings contradict each other) or 'skip' (these weights "
        "are not loaded), so that one config serves every recipe, e.g. a sweep over trainer.recipe.",
    )


class ModelConfig(_Strict):
    """A backbone shared by several task heads."""

    backbone: ComponentConfig
    tasks: dict[str, TaskConfig] = Field(min_length=1)
    weighting: ComponentConfig = Field(
        default_factory=lambda: ComponentConfig(name="fixed"),
        description="How task losses combine: 'fixed' (each task's `weight`), 'uncertainty', "
        "'dwa', or a plugin's weighting.",
    )
    normalize: bool = Field(
        default=True, description="Convert uint8 images to float and normalise with mean/std."
    )
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    pretrained: PretrainedConfig | None = Field(
        default=None,
        description="Weights loaded from a local file after the model is built (by "
        "pixcore.train.train); a string is short for {path: ...}.",
    )

    @model_validator(mode="before")
    @classmethod
    def _pretrained_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("pretrained"), str):
            value = {**value, "pretrained": {"path": value["pretrained"]}}
        return value

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
    batch_size: int = Field(default=16, ge=1, description="Training samples per step and process.")
    val_batch_size: int | None = Field(
        default=None, ge=1,
        description="Evaluation batch size (None: batch_size). Use 1 for data sets whose images "
        "differ in size (VOC, ADE20K, KITTI), which cannot be stacked into one batch.",
    )
    num_workers: int = Field(default=0, ge=0)


#: What each ``trainer.recipe`` sets; a setting given explicitly in the config wins.
RECIPES: dict[str, dict[str, Any]] = {
    "linear_probe": {"freeze_backbone": True},
    "finetune": {"backbone_lr_mult": 0.1},
    "scratch": {},
}


class TrainerConfig(_Strict):
    """The trainer's settings (see docs/training.md)."""

    recipe: Literal["linear_probe", "finetune", "scratch"] | None = Field(
        default=None,
        description="A classic training recipe as one setting: 'linear_probe' (frozen pretrained "
        "backbone: freeze_backbone=true), 'finetune' (all weights from pretrained ones: "
        "backbone_lr_mult=0.1), 'scratch' (default initialisation). linear_probe and finetune "
        "need model.pretrained (or a backbone's own pretrained file); settings given explicitly "
        "override the recipe's.",
    )
    steps: int = Field(default=1000, ge=1, description="Optimiser steps.")
    lr: float = Field(default=1e-3, gt=0, description="Peak learning rate (after warm-up).")
    weight_decay: float = Field(
        default=1e-4, ge=0,
        description="Weight decay of weights with two or more dimensions; never of biases, "
        "normalisation scales or multi-task weighting parameters.",
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw",
        description="'adamw' (decoupled weight decay) or 'sgd' (with momentum; its weight decay "
        "is the L2 term of torch.optim.SGD, as in the DeepLab and mmseg recipes).",
    )
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW's betas.")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum.")
    nesterov: bool = Field(default=False, description="SGD with Nesterov momentum (needs momentum > 0).")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up from lr/warmup_steps to lr.")
    schedule: Literal["constant", "cosine", "poly"] = Field(
        default="cosine",
        description="After warm-up: 'constant', 'cosine' (to zero at `steps`) or 'poly' "
        "(lr * (1 - progress) ** poly_power, as in DeepLab and mmseg).",
    )
    poly_power: float = Field(default=0.9, gt=0, description="Exponent of the 'poly' schedule.")
    backbone_lr_mult: float = Field(
        default=1.0, gt=0,
        description="The backbone's learning rate is lr times this (fine-tuning: 0.1). To not "
        "train the backbone at all, use freeze_backbone.",
    )
    freeze_backbone: bool = Field(
        default=False,
        description="Train without the backbone: its parameters get no gradient and it stays in "
        "eval mode, so BatchNorm statistics do not move (linear probing).",
    )
    layer_decay: float | None = Field(
        default=None, gt=0, le=1,
        description="Layer-wise learning-rate decay: the backbone's deepest layer group trains at "
        "layer_decay times the heads' rate, the one before at layer_decay**2, and so on. "
        "Groups: timm's group_matcher for timm backbones, else the backbone's feature levels.",
    )
    grad_clip: float | None = Field(
        default=None, gt=0, description="Clip the global gradient norm to this (None: no clipping)."
    )
    accumulate_grad_batches: int = Field(
        default=1, ge=1,
        description="Micro-batches per optimiser step: gradients of this many batches are summed "
        "(each loss divided by it), so a step sees batch_size times this many samples.",
    )
    ema_decay: float | None = Field(
        default=None, ge=0, lt=1,
        description="Keep an exponential moving average of the weights with this decay per step "
        "(e.g. 0.999); None: no EMA. Stored in the checkpoint under 'ema.'.",
    )
    ema_eval: bool = Field(
        default=True, description="Evaluate with the EMA weights (when ema_decay is set)."
    )
    precision: Literal["32", "bf16", "fp16"] = Field(
        default="32",
        description="'32': float32; 'bf16' or 'fp16': mixed precision with torch.autocast (the "
        "parameters and the loss stay float32; fp16 adds a gradient scaler).",
    )
    channels_last: bool = Field(
        default=False,
        description="Model and input images in channels-last memory format (faster convolutions "
        "with mixed precision on recent GPUs).",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the training forward pass (the uncompiled model is saved and "
        "evaluated). Needs a working compiler toolchain for the 'inductor' backend.",
    )
    compile_backend: str = Field(
        default="inductor",
        description="torch.compile backend; 'aot_eager' or 'eager' help to find what fails.",
    )
    cudnn_benchmark: bool | None = Field(
        default=None,
        description="Let cuDNN pick the fastest convolution algorithms for the input sizes "
        "(torch.backends.cudnn.benchmark). None: on for CUDA. Turn it off for varying input sizes.",
    )
    device: str = Field(
        default="auto",
        description="'auto' (CUDA, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' (GPU N, e.g. "
        "'cuda:1') or 'mps'.",
    )
    seed: int = Field(
        default=0,
        description="Drives the initialisation, the data order, augmentation and data-loader workers.",
    )
    eval_every: int | None = Field(
        default=1000, ge=1,
        description="Evaluate on data.val every this many steps, and at the last step (None: only "
        "at the last step).",
    )
    log_every: int = Field(default=10, ge=1, description="Steps between log rows (and at the last step).")
    checkpoint_every: int | None = Field(
        default=500, ge=1,
        description="Write the checkpoint every this many steps, and when the run ends (None: only "
        "when it ends). A run resumes from the last one exactly.",
    )
    progress: bool = Field(default=True, description="Show a progress bar (rank 0).")
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

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device(value)

    @model_validator(mode="before")
    @classmethod
    def _expand_recipe(cls, value: Any) -> Any:
        # The recipe's settings first, so that settings written in the config override them.
        if isinstance(value, dict):
            if isinstance(value.get("precision"), int):  # `precision: 32` in YAML
                value = {**value, "precision": str(value["precision"])}
            recipe = value.get("recipe")
            if isinstance(recipe, str) and recipe in RECIPES:
                value = {**RECIPES[recipe], **value}
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainerConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError(
                "nesterov needs optimizer 'sgd' with momentum > 0 "
                f"(got optimizer={self.optimizer!r}, momentum={self.momentum})"
            )
        return self


class RunConfig(_Strict):
    """A whole run: ``pixcore train run.yaml``."""

    model: ModelConfig
    data: DataConfig
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union annotation (``X | None``), else the annotation itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [member for arg in typing.get_args(annotation) for member in _members(arg)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _inner(annotation: Any, part: int | str) -> list[Any]:
    """The annotations one step of an error location (a key or an index) inside ``annotation``."""
    found = []
    for member in _members(annotation):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if _is_model(member) and isinstance(part, str) and part in member.model_fields:
            found.append(member.model_fields[part].annotation)
        elif origin is dict and len(args) == 2:
            found.append(args[1])
        elif origin in (list, tuple) and args and isinstance(part, int):
            found.append(args[0])
    return found


def _allowed_keys(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys of the config section at ``loc`` under ``model`` (empty if it cannot be told)."""
    annotations: list[Any] = [model]
    for part in loc:
        annotations = [inner for annotation in annotations for inner in _inner(annotation, part)]
    members = [m for annotation in annotations for m in _members(annotation) if _is_model(m)]
    return sorted({name for member in members for name in member.model_fields})


def _unknown_key_hint(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    allowed = _allowed_keys(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=3, cutoff=0.6)
    if close:
        return " - did you mean " + " or ".join(repr(name) for name in close) + "?"
    known = f"; the keys here are: {', '.join(allowed)}" if allowed else ""
    return f" - remove it or check its spelling{known}"


_M = TypeVar("_M", bound=BaseModel)


def _format(error: ValidationError, source: str, model: type[BaseModel]) -> str:
    lines = [f"invalid configuration{f' in {source}' if source else ''}:"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<root>"
        got = "" if item["type"] == "missing" else f" (got {item['input']!r})"
        hint = ""
        if item["type"] == "extra_forbidden":
            hint = _unknown_key_hint(model, item["loc"])
        message = item["msg"].removeprefix("Value error, ")  # our validators' own messages
        lines.append(f"  {path}: {message}{got}{hint}")
    return "\n".join(lines)


def validate_config(model: type[_M], data: Any, source: str = "") -> _M:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` with config paths."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format(error, source, model)) from None


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
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        quoted = shlex.quote(f"{key.strip()}={json.dumps(raw)}")
        raise ConfigError(
            f"override {override!r}: its value {raw!r} is not valid YAML ({_yaml_problem(error)}). "
            f"Complete it (e.g. close a [list] or {{mapping}}), or quote it to set the text as it "
            f"is: --set {quoted}"
        ) from None


def _yaml_problem(error: Exception) -> str:
    """What PyYAML says is wrong, without its position marks (an override is one line)."""
    parts = [getattr(error, "context", None), getattr(error, "problem", None)]
    return ", ".join(str(part) for part in parts if part) or str(error)
