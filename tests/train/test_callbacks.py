"""Callbacks: when each event fires, the built-in loggers, early stopping, TensorBoard, docs."""

from __future__ import annotations

import csv
import importlib.util
import inspect
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import train_toy
from pixcore import PixcoreError, RunConfig
from pixcore.train import (
    Callback,
    Trainer,
    TrainResult,
    read_metadata,
    train,
)
from pixcore.train import _callbacks as callbacks_module
from torch import Tensor

ROOT = Path(__file__).resolve().parents[2]
EVENTS = sorted(name for name, _ in inspect.getmembers(Callback, inspect.isfunction) if name.startswith("on_"))


class Recorder(Callback):
    """Records ``(event, trainer.step)`` for every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.events.append(("fit_start", trainer.step))

    def on_step_start(self, trainer: Trainer) -> None:
        self.events.append(("step_start", trainer.step))

    def on_log(self, trainer: Trainer, row: Mapping[str, float]) -> None:
        assert row["step"] == trainer.step
        self.events.append(("log", trainer.step))

    def on_evaluate_end(self, trainer: Trainer, metrics: Mapping[str, Mapping[str, Any]]) -> None:
        assert metrics["brightness"]["mae"] > 0
        self.events.append(("evaluate_end", trainer.step))

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        assert loss.ndim == 0 and not loss.requires_grad
        self.events.append(("step_end", trainer.step))

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        assert path.exists()
        self.events.append(("checkpoint", trainer.step))

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        self.events.append(("fit_end", result.steps))


def _config(**trainer: Any) -> RunConfig:
    return RunConfig.model_validate(train_toy.run_config(**trainer))


def test_events_fire_in_the_documented_order(tmp_path: Path) -> None:
    recorder = Recorder()
    config = _config(steps=4, log_every=2, eval_every=2, checkpoint_every=3)
    train(config, tmp_path, train_toy.toy_manager(), callbacks=[recorder])
    assert recorder.events == [
        ("fit_start", 0),
        ("step_start", 0), ("step_end", 1),
        ("step_start", 1), ("log", 2), ("evaluate_end", 2), ("step_end", 2),
        # Checkpointing (a built-in, so called before user callbacks) saves in on_step_end.
        ("step_start", 2), ("checkpoint", 3), ("step_end", 3),
        ("step_start", 3), ("log", 4), ("evaluate_end", 4), ("step_end", 4),
        ("checkpoint", 4),  # the final checkpoint, written in Checkpointing.on_fit_end
        ("fit_end", 4),
    ]
    assert sorted(f"on_{name}" for name in {event for event, _ in recorder.events}) == EVENTS


def test_csv_and_jsonl_logs(tmp_path: Path) -> None:
    _, result = train(_config(steps=6, log_every=2, eval_every=3), tmp_path, train_toy.toy_manager())
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert list(rows[0]) == ["step", "epoch", "lr", "loss", "skipped", "seconds", "brightness/loss"]
    assert [float(r["loss"]) for r in rows] == [r["loss"] for r in result.history]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [
        ("train", 2), ("eval", 3), ("train", 4), ("train", 6), ("eval", 6)
    ]
    assert records[0]["brightness/mse"] == pytest.approx(records[0]["brightness/loss"])
    assert records[-1]["metrics"] == json.loads((tmp_path / "metrics.json").read_text())


def test_early_stopping_stops_and_keeps_its_state_in_the_checkpoint(tmp_path: Path) -> None:
    # The pixel count of the held-out set never changes: only the first evaluation is the best.
    config = _config(steps=50, eval_every=1, early_stopping_metric="brightness/count",
                     early_stopping_patience=2)
    _, result = train(config, tmp_path, train_toy.toy_manager())
    assert result.steps == 3 and not result.interrupted
    assert result.stop_reason is not None and "early stopping: brightness/count" in result.stop_reason
    meta = read_metadata(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 3
    assert meta["callbacks"]["EarlyStopping"]["best_step"] == 1
    assert meta["callbacks"]["EarlyStopping"]["bad_evaluations"] == 2

    # With "min" the falling error keeps improving: the run goes to the end.
    _, result = train(_config(steps=4, eval_every=1, early_stopping_metric="brightness/mae"), None,
                      train_toy.toy_manager())
    assert result.steps == 4 and result.stop_reason is None


def test_early_stopping_explains_misconfiguration() -> None:
    manager = train_toy.toy_manager()
    with pytest.raises(PixcoreError, match="needs evaluations during training: set trainer.eval_every"):
        train(_config(steps=2, eval_every=None, early_stopping_metric="brightness/mae"), None, manager)
    with pytest.raises(PixcoreError, match=r"does not report; the evaluation reports: brightness/count, "
                                           r"brightness/mae\. Set trainer.early_stopping_metric"):
        train(_config(steps=2, eval_every=1, early_stopping_metric="brightness/miou"), None, manager)
    with pytest.raises(PixcoreError, match="'task/metric'"):
        callbacks_module.EarlyStopping("mae")


class CountSteps(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        self.steps += 1


def test_an_early_stopping_typo_is_found_before_the_first_step_with_a_suggestion() -> None:
    counter = CountSteps()
    config = _config(steps=50, eval_every=40, early_stopping_metric="brightness/MAE")
    with pytest.raises(PixcoreError, match=r"monitors 'brightness/MAE', .*did you mean 'brightness/mae'\?"):
        train(config, None, train_toy.toy_manager(), callbacks=[counter])
    assert counter.steps == 0, "the mistake must cost no training step"


def test_early_stopping_refuses_a_mode_against_the_metric_direction() -> None:
    # The toy metric declares mae lower-is-better; "max" would stop on every improvement.
    config = _config(steps=5, eval_every=1, early_stopping_metric="brightness/mae", early_stopping_mode="max")
    with pytest.raises(PixcoreError, match=r"lower is better, but its mode is 'max'.*early_stopping_mode=min"):
        train(config, None, train_toy.toy_manager())


def test_tensorboard_logs_when_available_and_is_skipped_otherwise(tmp_path: Path) -> None:
    config = _config(steps=2, tensorboard=True)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.warns(UserWarning, match="pip install tensorboard"):
            _, result = train(config, tmp_path, train_toy.toy_manager())
        assert result.steps == 2 and not (tmp_path / "tensorboard").exists()
    else:
        train(config, tmp_path, train_toy.toy_manager())
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_every_event_is_documented_where_it_fires() -> None:
    module_doc = callbacks_module.__doc__ or ""
    guide = (ROOT / "docs" / "training.md").read_text()
    for event in EVENTS:
        assert f">> {event}(" in module_doc, f"{event} is missing from the loop in pixcore.train._callbacks"
        assert f">> {event}(" in guide, f"{event} is missing from the loop in docs/training.md"
        method = getattr(Callback, event)
        assert (method.__doc__ or "").strip(), f"Callback.{event} has no docstring"
        assert inspect.signature(method).parameters["trainer"].annotation == "Trainer"
    # The guide's loop is the module's loop.
    block = re.search(r"```text\n(    fit\(resume=None\):.*?)```", guide, flags=re.S)
    assert block is not None, "docs/training.md has no ```text block with the loop"
    assert block.group(1).strip() in module_doc


def test_training_md_python_blocks_compile() -> None:
    guide = (ROOT / "docs" / "training.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", guide, flags=re.M | re.S)
    assert blocks
    for i, code in enumerate(blocks):
        compile(code, f"docs/training.md (python block {i + 1})", "exec")


def test_training_md_settings_are_valid_trainer_configs() -> None:
    import yaml
    from pixcore import ModelConfig, TrainerConfig

    guide = (ROOT / "docs" / "training.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```$", guide, flags=re.M | re.S)]
    trainers = [b["trainer"] for b in blocks if isinstance(b, dict) and "trainer" in b]
    assert len(trainers) >= 2, "the settings list and the recipe example"
    for settings in trainers:
        TrainerConfig.model_validate(settings)  # unknown or misspelt keys are rejected
    models = [b["model"] for b in blocks if isinstance(b, dict) and "backbone" in (b.get("model") or {})]
    assert models
    for model in models:
        ModelConfig.model_validate(model)
