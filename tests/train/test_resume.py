"""Exact resumption: a run stopped at step k and resumed ends bitwise equal to an uninterrupted one."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import train_toy
from pixcore import RunConfig
from pixcore._cli import main
from pixcore.plugin._manager import reset_plugin_manager
from pixcore.train import (
    Callback,
    CheckpointError,
    Trainer,
    read_metadata,
    save_checkpoint,
    train,
)
from safetensors import safe_open
from torch import Tensor


class Killed(Exception):
    """Stands for the process dying: nothing after it runs, not even the final checkpoint."""


class KillAfter(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        if trainer.step == self.step:
            raise Killed


def _config(workers: int, **trainer: Any) -> RunConfig:
    # 24 samples in batches of 4: 6 steps per epoch, so step 10 is in the second epoch.
    # Dropout draws from the global RNG every step; hflip is seeded per sample.
    settings = {"steps": 10, "checkpoint_every": 2, "eval_every": 3, **trainer}
    return RunConfig.model_validate(train_toy.run_config(workers=workers, dropout=0.3, **settings))


def _tensors(path: Path) -> dict[str, Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


@pytest.mark.parametrize("workers", [0, 2])
def test_a_killed_run_resumes_to_bitwise_equal_weights(tmp_path: Path, workers: int) -> None:
    manager = train_toy.toy_manager()
    whole, whole_result = train(_config(workers), tmp_path / "whole", manager)

    # Killed after step 5, mid-epoch: the last checkpoint is from step 4; step 5 is lost.
    with pytest.raises(Killed):
        train(_config(workers), tmp_path / "cut", manager, callbacks=[KillAfter(5)])
    checkpoint = tmp_path / "cut" / "checkpoint.safetensors"
    meta = read_metadata(checkpoint)
    assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (4, 0, 4)

    resumed, result = train(_config(workers), tmp_path / "cut", manager, resume=checkpoint)
    assert result.steps == whole_result.steps == 10
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resuming"
    # The final checkpoints agree in everything: weights, optimiser moments, RNG states.
    expected, actual = _tensors(tmp_path / "whole" / "checkpoint.safetensors"), _tensors(checkpoint)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert result.metrics["brightness"]["mae"] == whole_result.metrics["brightness"]["mae"]

    # The log holds every step once: the rows of step 5 written before the kill were dropped.
    rows = list(csv.DictReader((tmp_path / "cut" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    whole_rows = list(csv.DictReader((tmp_path / "whole" / "log.csv").open()))
    assert [r["loss"] for r in rows] == [r["loss"] for r in whole_rows]
    lines = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "train"] == list(range(1, 11))
    assert [r["step"] for r in lines if r["kind"] == "eval"] == [3, 6, 9, 10]


def test_resume_at_an_epoch_boundary_and_of_a_finished_run(tmp_path: Path) -> None:
    manager = train_toy.toy_manager()
    whole, _ = train(_config(0, steps=8), tmp_path / "whole", manager)
    with pytest.raises(Killed):  # step 6 ends epoch 0 exactly
        train(_config(0, steps=8, checkpoint_every=6), tmp_path / "cut", manager, callbacks=[KillAfter(6)])
    checkpoint = tmp_path / "cut" / "checkpoint.safetensors"
    assert read_metadata(checkpoint)["batch_in_epoch"] == 6
    resumed, _ = train(_config(0, steps=8), tmp_path / "cut", manager, resume=checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                  resumed.model.state_dict().values(), strict=True))

    # Resuming a finished run trains nothing and reports its final metrics.
    again, result = train(_config(0, steps=8), tmp_path / "cut", manager, resume=checkpoint)
    assert result.steps == 8 and result.metrics["brightness"]["mae"] > 0
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                  again.model.state_dict().values(), strict=True))


def test_resume_refuses_checkpoints_it_cannot_continue_exactly(tmp_path: Path) -> None:
    manager = train_toy.toy_manager()
    trainer, _ = train(_config(0, steps=2), tmp_path, manager)
    written = tmp_path / "checkpoint.safetensors"
    other = tmp_path / "other.safetensors"

    save_checkpoint(other, trainer.model, trainer.optimizer, scheduler=trainer.scheduler,
                    metadata={**read_metadata(written), "world_size": 2})
    with pytest.raises(CheckpointError, match="2 process.*same number of processes"):
        train(_config(0, steps=4), None, manager, resume=other)

    with pytest.raises(CheckpointError, match="beyond trainer.steps=1"):
        train(_config(0, steps=1), None, manager, resume=written)

    save_checkpoint(other, trainer.model, trainer.optimizer, metadata={"step": 2, "epoch": 0})
    with pytest.raises(CheckpointError, match="position in the epoch"):
        train(_config(0, steps=4), None, manager, resume=other)


def test_scheduler_state_survives_a_round_trip(tmp_path: Path) -> None:
    # The cosine schedule depends on its step count: a resumed run must continue it.
    manager = train_toy.toy_manager()
    whole, _ = train(_config(0, steps=6, schedule="cosine", warmup_steps=2), tmp_path / "whole", manager)
    with pytest.raises(Killed):
        train(_config(0, steps=6, schedule="cosine", warmup_steps=2), tmp_path / "cut", manager,
              callbacks=[KillAfter(3)])
    resumed, _ = train(_config(0, steps=6, schedule="cosine", warmup_steps=2), tmp_path / "cut", manager,
                       resume=tmp_path / "cut" / "checkpoint.safetensors")
    assert resumed.scheduler.state_dict()["last_epoch"] == 6
    assert resumed.scheduler.get_last_lr() == whole.scheduler.get_last_lr()
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                  resumed.model.state_dict().values(), strict=True))


def test_evaluating_does_not_change_the_trained_weights(tmp_path: Path) -> None:
    # Evaluation must not draw from the training's random stream (dropout here), or how
    # often a run evaluates would change what it learns, and resumed runs with it.
    manager = train_toy.toy_manager()
    often, _ = train(_config(0, steps=6, eval_every=1), None, manager)
    rarely, _ = train(_config(0, steps=6, eval_every=None), None, manager)
    assert all(torch.equal(a, b) for a, b in zip(often.model.state_dict().values(),
                                                  rarely.model.state_dict().values(), strict=True))


@pytest.fixture
def toy_everywhere() -> Iterator[None]:
    """The toy plugin as the process-wide plugin manager (the command line uses that one)."""
    old = reset_plugin_manager(train_toy.toy_manager())
    try:
        yield
    finally:
        reset_plugin_manager(old)


def test_the_command_line_resumes_from_the_out_folder(
    tmp_path: Path, toy_everywhere: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.json"
    config.write_text(_config(0, steps=4).model_dump_json())
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--resume"]) == 2
    assert "--resume: there is no checkpoint at" in capsys.readouterr().err

    assert main(["train", str(config), "--out", str(out), "--set", "trainer.steps=2"]) == 0
    assert main(["train", str(config), "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed.count('"brightness"') == 2 and '"mae"' in printed  # the metrics, each time
    assert read_metadata(out / "checkpoint.safetensors")["step"] == 4
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
