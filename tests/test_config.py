"""Run configs: YAML/JSON loading, both validation passes, overrides, file errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import pixcore
from pixcore._config import validate_config

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
    ("dotted", "value", "path"),
    [
        ("trainer.stpes", 5, "trainer.stpes"),
        ("model.tasks.t.wieght", 2.0, "model.tasks.t.wieght"),
        ("model.backbone.parmas", {}, "model.backbone.parmas"),
        ("data.augmentations", [{"name": "hflip", "p": 0.5}], "data.augmentations.0.p"),
        ("colour", "red", "colour"),
    ],
)
def test_unknown_keys_are_rejected_with_their_path(dotted: str, value: Any, path: str) -> None:
    message = config_error(with_value(dotted, value))
    assert f"  {path}: Extra inputs are not permitted" in message
    assert "remove it or check its spelling" in message
    assert "run.yaml" in message


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
        ("model.tasks.t.metrics", ["test_mae", {"name": "test_mae", "params": {"k": 1}}], "model.tasks.t.metrics.1.params.k"),
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


@pytest.mark.parametrize("override", ["trainer.steps", "=5", "trainer.steps.x=1", "trainer.steps.x.y=1"])
def test_malformed_overrides(tmp_path: Path, override: str) -> None:
    path = write(tmp_path, "run.yaml", RUN_YAML)
    with pytest.raises(pixcore.ConfigError, match="override"):
        pixcore.load_config(path, overrides=[override])


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
