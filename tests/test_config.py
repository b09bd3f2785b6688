"""Run configs: YAML/JSON loading, both validation passes, overrides, file errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pixcore
import pytest
import torch
from pixcore._config import DEVICE_FORMS, validate_config
from pixcore.train import select_device

RUN: dict[str, Any] = {
    "model": {
        "backbone": {"name": "test_tiny", "params": {"width": 4}},
        "tasks": {"t": {"task": "test_height", "head": {"name": "fpn", "params": {"channels": 8}}}},
    },
    "data": {"train": {"name": "synthetic", "params": {"length": 4}}, "augmentations": ["hflip"]},
    "trainer": {"steps": 3, "lr": 0.01},
}

RUN_YAML = """
model:
  backbone: {name: test_tiny, params: {width: 4}}
  tasks:
    t:
      task: test_height
      head: {name: fpn, params: {channels: 8}}
data:
  train: {name: synthetic, params: {length: 4}}
  augmentations: [hflip]
trainer:
  steps: 3
  lr: 0.01
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(data: Any) -> str:
    with pytest.raises(pixcore.ConfigError) as info:
        validate_config(pixcore.RunConfig, data, source="run.yaml")
    return str(info.value)


def with_value(dotted: str, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(RUN))
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


# -- loading ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_load_yaml(tmp_path: Path, suffix: str) -> None:
    config = pixcore.load_config(write(tmp_path, f"run{suffix}", RUN_YAML))
    assert isinstance(config, pixcore.RunConfig)
    assert config.model.backbone.name == "test_tiny"
    assert config.model.backbone.params == {"width": 4}
    assert config.model.tasks["t"].head == pixcore.ComponentConfig(name="fpn", params={"channels": 8})
    assert config.data.augmentations == [pixcore.ComponentConfig(name="hflip")]  # string shorthand
    assert (config.trainer.steps, config.trainer.lr) == (3, 0.01)
    assert config.trainer.schedule == "cosine"  # defaults fill in


def test_load_json_equals_yaml(tmp_path: Path) -> None:
    from_json = pixcore.load_config(write(tmp_path, "run.json", json.dumps(RUN)))
    from_yaml = pixcore.load_config(write(tmp_path, "run.yaml", RUN_YAML))
    assert from_json == from_yaml


def test_shipped_demo_config_is_valid() -> None:
    demo = Path(pixcore.__file__).parent / "configs" / "demo.yaml"
    config = pixcore.load_config(demo)
    assert set(config.model.tasks) == {"semseg", "depth", "normals"}


def test_task_shorthands() -> None:
    listed = validate_config(pixcore.ModelConfig, {"backbone": "b", "tasks": ["depth", "normals"]})
    assert set(listed.tasks) == {"depth", "normals"}
    assert listed.tasks["depth"] == pixcore.TaskConfig()
    empty = validate_config(pixcore.ModelConfig, {"backbone": "b", "tasks": {"depth": None}})
    assert empty.tasks["depth"].weight == 1.0


# -- first pass: structure -------------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "value", "path", "hint"),
    [
        ("trainer.stpes", 5, "trainer.stpes", "did you mean 'steps'?"),
        ("model.tasks.t.wieght", 2.0, "model.tasks.t.wieght", "did you mean 'weight'?"),
        ("model.backbone.parmas", {}, "model.backbone.parmas", "did you mean 'params'?"),
        ("data.augmentations", [{"name": "hflip", "p": 0.5}], "data.augmentations.0.p",
         "remove it or check its spelling; the keys here are: name, params"),
        ("colour", "red", "colour", "remove it or check its spelling; the keys here are: data, model, trainer"),
    ],
)
def test_unknown_keys_are_rejected_with_their_path_and_a_suggestion(
    dotted: str, value: Any, path: str, hint: str
) -> None:
    message = config_error(with_value(dotted, value))
    assert f"  {path}: Extra inputs are not permitted (got " in message
    assert f") - {hint}" in message
    assert "run.yaml" in message


def test_unknown_key_in_an_optional_section_gets_a_suggestion() -> None:
    # model.pretrained is `PretrainedConfig | None`: the walk goes through the union.
    data = with_value("model.pretrained", {"path": "w.safetensors", "prefx": "backbone."})
    assert "model.pretrained.prefx: Extra inputs are not permitted" in config_error(data)
    assert "did you mean 'prefix'?" in config_error(data)


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("trainer.lr", math.inf),
        ("trainer.lr", math.nan),
        ("trainer.grad_clip", math.inf),
        ("trainer.ema_decay", math.nan),
        ("model.tasks.t.weight", math.inf),
        ("model.mean", [0.5, math.nan, 0.5]),
    ],
)
def test_no_setting_may_be_infinite_or_nan(dotted: str, value: Any) -> None:
    message = config_error(with_value(dotted, value))
    assert f"\n  {dotted}" in message and "finite number" in message


@pytest.mark.parametrize("written", [".inf", ".nan", "-.inf"])
def test_yaml_infinities_are_refused_at_load_time(tmp_path: Path, written: str) -> None:
    path = write(tmp_path, "run.yaml", RUN_YAML)
    with pytest.raises(pixcore.ConfigError, match=r"trainer\.lr: Input should be a finite number"):
        pixcore.load_config(path, overrides=[f"trainer.lr={written}"])


@pytest.mark.parametrize(
    ("dotted", "value", "path"),
    [
        ("trainer.steps", "many", "trainer.steps"),
        ("trainer.steps", 0, "trainer.steps"),
        ("trainer.schedule", "linear", "trainer.schedule"),
        ("trainer.betas", "fast", "trainer.betas"),
        ("data.batch_size", -1, "data.batch_size"),
        ("model.tasks", {}, "model.tasks"),
        ("model.tasks.t.weight", -1.0, "model.tasks.t.weight"),
        ("model.backbone.params", [1, 2], "model.backbone.params"),
    ],
)
def test_wrong_types_and_values_name_their_path(dotted: str, value: Any, path: str) -> None:
    message = config_error(with_value(dotted, value))
    assert f"\n  {path}: " in message
    assert repr(value) in message  # says what it got


def test_missing_section_is_reported() -> None:
    data = dict(RUN)
    del data["data"]
    assert "  data: Field required" in config_error(data)


def test_first_pass_keeps_component_params_open() -> None:
    # Parameters belong to plugins: any keys pass the first pass.
    data = with_value("model.backbone.params", {"anything": [1, 2], "goes": None})
    config = validate_config(pixcore.RunConfig, data)
    assert config.model.backbone.params == {"anything": [1, 2], "goes": None}


# -- second pass: component parameters -------------------------------------------------


def test_plugin_params_validated_in_second_pass_with_path(
    tmp_path: Path, manager: pixcore.PluginManager
) -> None:
    text = RUN_YAML.replace("channels: 8", "channels: wide")
    config = pixcore.load_config(write(tmp_path, "run.yaml", text))  # first pass accepts it
    assert config.model.tasks["t"].head is not None
    with pytest.raises(pixcore.ConfigError) as info:
        pixcore.build_model_from_config(config.model, manager=manager)
    message = str(info.value)
    assert "model.tasks.t.head.params.channels" in message
    assert "'wide'" in message and "'fpn'" in message and "from pixcore" in message


@pytest.mark.parametrize(
    ("dotted", "value", "path"),
    [
        ("model.backbone.params", {"width": 4, "depth": 3}, "model.backbone.params.depth"),
        ("model.tasks.t.params", {"target_key": 3}, "model.tasks.t.params.target_key"),
        ("model.tasks.t.loss", {"name": "test_l1", "params": {"scale": "x"}}, "model.tasks.t.loss.params.scale"),
        (
            "model.tasks.t.metrics",
            ["test_mae", {"name": "test_mae", "params": {"k": 1}}],
            "model.tasks.t.metrics.1.params.k",
        ),
    ],
)
def test_second_pass_paths(manager: pixcore.PluginManager, dotted: str, value: Any, path: str) -> None:
    config = validate_config(pixcore.RunConfig, with_value(dotted, value))
    with pytest.raises(pixcore.ConfigError, match=path.replace(".", r"\.")):
        pixcore.build_model_from_config(config.model, manager=manager)


def test_valid_second_pass_builds(manager: pixcore.PluginManager) -> None:
    config = validate_config(pixcore.RunConfig, RUN)
    model = pixcore.build_model_from_config(config.model, manager=manager)
    assert model.heads["t"].lateral[0].out_channels == 8  # FPN width from the config


# -- overrides ---------------------------------------------------------------------------


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", RUN_YAML)
    config = pixcore.load_config(
        path,
        overrides=[
            "trainer.steps=5",
            "data.batch_size=8",
            "trainer.grad_clip=1.5",
            "model.tasks.t.head.params.channels=16",
            "model.tasks.u={task: test_height, weight: 0.5}",
        ],
    )
    assert config.trainer.steps == 5 and isinstance(config.trainer.steps, int)
    assert config.data.batch_size == 8
    assert config.trainer.grad_clip == 1.5
    assert config.model.tasks["t"].head is not None
    assert config.model.tasks["t"].head.params == {"channels": 16}
    assert config.model.tasks["u"].weight == 0.5
    assert pixcore.load_config(path).trainer.steps == 3  # the file is not changed


def test_override_values_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", RUN_YAML)
    with pytest.raises(pixcore.ConfigError, match=r"trainer\.steps"):
        pixcore.load_config(path, overrides=["trainer.steps=lots"])
    with pytest.raises(pixcore.ConfigError, match=r"trainer\.stepz"):
        pixcore.load_config(path, overrides=["trainer.stepz=5"])


def test_override_that_is_not_yaml_says_how_to_quote_it(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", RUN_YAML)
    with pytest.raises(pixcore.ConfigError) as info:
        pixcore.load_config(path, overrides=["trainer.lr=[1"])
    message = str(info.value)
    assert "override 'trainer.lr=[1'" in message and "'[1' is not valid YAML" in message
    assert "expected ',' or ']'" in message  # PyYAML's own words for the problem
    assert "--set 'trainer.lr=\"[1\"'" in message
    # The quoting it suggests works: the text arrives as it is.
    with pytest.raises(pixcore.ConfigError) as info:
        pixcore.load_config(path, overrides=["trainer.early_stopping_metric=[x"])
    suggested = str(info.value).rsplit("--set ", 1)[1].strip("'")
    config = pixcore.load_config(path, overrides=[suggested])
    assert config.trainer.early_stopping_metric == "[x"


@pytest.mark.parametrize("override", ["trainer.steps", "=5", "trainer.steps.x=1", "trainer.steps.x.y=1"])
def test_malformed_overrides(tmp_path: Path, override: str) -> None:
    path = write(tmp_path, "run.yaml", RUN_YAML)
    with pytest.raises(pixcore.ConfigError, match="override"):
        pixcore.load_config(path, overrides=[override])


# -- defaults and devices ------------------------------------------------------------------


def test_long_runs_checkpoint_and_evaluate_by_default() -> None:
    trainer = pixcore.TrainerConfig()
    assert (trainer.checkpoint_every, trainer.eval_every) == (500, 1000)
    none = pixcore.TrainerConfig(checkpoint_every=None, eval_every=None)  # only at the end
    assert (none.checkpoint_every, none.eval_every) == (None, None)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_forms_are_accepted(device: str) -> None:
    assert validate_config(pixcore.RunConfig, with_value("trainer.device", device)).trainer.device == device


@pytest.mark.parametrize("device", ["gpu0", "gpu", "cuda:", "cuda:x", "CUDA", "cuda 0", "cpu:0", ""])
def test_a_malformed_device_is_a_config_error_listing_the_forms(device: str) -> None:
    message = config_error(with_value("trainer.device", device))
    assert f"  trainer.device: device {device!r} is not a device name; use 'auto', 'cpu', 'cuda', " in message
    assert "'cuda:N'" in message and "'mps'" in message


def test_select_device_refuses_what_the_config_refuses() -> None:
    with pytest.raises(pixcore.DeviceError) as info:
        select_device("gpu0")
    assert str(info.value) == f"device 'gpu0' is not a device name; use {DEVICE_FORMS}"


def test_select_device_refuses_devices_this_machine_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(pixcore.DeviceError, match="'cuda' was asked for but CUDA is not available.*'cpu'"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    visible = r"'cuda:2'.*2 CUDA device\(s\) are visible \(cuda:0 to cuda:1\)"
    with pytest.raises(pixcore.DeviceError, match=visible):
        select_device("cuda:2")
    assert select_device("cuda:1") == torch.device("cuda", 1)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(pixcore.DeviceError, match="Apple MPS is not available"):
        select_device("mps")
    assert select_device("cpu") == torch.device("cpu")


# -- file errors -------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(pixcore.ConfigError, match="nope.yaml"):
        pixcore.load_config(missing)


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(pixcore.ConfigError, match=str(tmp_path.name)):
        pixcore.load_config(tmp_path)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "model: {backbone: [unclosed\n")
    with pytest.raises(pixcore.ConfigError) as info:
        pixcore.load_config(path)
    assert "broken.yaml" in str(info.value) and "invalid YAML" in str(info.value)


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", '{\n  "model": {,}\n}')
    with pytest.raises(pixcore.ConfigError, match=r"broken\.json:2:\d+: invalid JSON"):
        pixcore.load_config(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "run.toml", "x = 1")
    with pytest.raises(pixcore.ConfigError, match=r"run\.toml.*\.yaml, \.yml or \.json"):
        pixcore.load_config(path)


def test_validation_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "partial.yaml", "trainer: {steps: 2}\n")
    with pytest.raises(pixcore.ConfigError) as info:
        pixcore.load_config(path)
    message = str(info.value)
    assert "partial.yaml" in message
    assert "  model: Field required" in message and "  data: Field required" in message


def test_empty_file_reports_missing_sections(tmp_path: Path) -> None:
    with pytest.raises(pixcore.ConfigError, match="model: Field required"):
        pixcore.load_config(write(tmp_path, "empty.yaml", ""))
