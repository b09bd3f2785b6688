"""Non-finite losses, SIGTERM/SIGINT, and a process killed while it writes a checkpoint."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pixcore
import pytest
import torch
import train_toy
from pixcore import RunConfig
from pixcore.train import (
    EXIT_INTERRUPTED,
    Callback,
    CheckpointError,
    NonFiniteLossError,
    RunExistsError,
    Trainer,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    train,
)
from torch import Tensor
from torch.utils.data import DataLoader

TOY_SCRIPT = Path(train_toy.__file__).resolve()


def _subprocess_env() -> dict[str, str]:
    # No entry points (train_toy registers its plugin itself), one thread for a tiny model.
    return {**os.environ, "PIXCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}


def _wait_for(
    condition: Callable[[], bool], process: subprocess.Popen[Any], what: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the subprocess ended (status {process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


# -- non-finite losses ----------------------------------------------------------------------


def _poisoned_trainer(on_non_finite: str, out_dir: Path) -> Trainer:
    # Sample 5 has a NaN pixel in its image: batch 1 (samples 4-7) of every epoch is NaN all
    # the way through the forward pass, BatchNorm statistics included.
    manager = train_toy.toy_manager()
    torch.manual_seed(0)
    model = pixcore.build_model_from_config(train_toy.run_config()["model"], manager=manager)
    data = train_toy.Squares(16, poison=[5], nan_in="image")
    loader = DataLoader(data, batch_size=4, shuffle=False, drop_last=True)
    val = DataLoader(train_toy.Squares(8, seed=1, nan_in="image"), batch_size=4)
    config = pixcore.TrainerConfig(steps=8, progress=False, log_every=1, device="cpu",
                                   on_non_finite=on_non_finite)  # type: ignore[arg-type]
    return Trainer(model, config, loader, val, out_dir=out_dir, manager=manager)


def test_non_finite_loss_skip_leaves_the_model_unchanged_and_counts(tmp_path: Path) -> None:
    trainer = _poisoned_trainer("skip", tmp_path)
    updates: list[int] = []

    class Watch(Callback):
        def on_step_start(self, trainer: Trainer) -> None:
            self.before = [p.detach().clone() for p in trainer.model.parameters()]

        def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
            changed = any(not torch.equal(a, b) for a, b in zip(self.before, trainer.model.parameters(), strict=True))
            updates.append(int(changed))

    trainer.callbacks.append(Watch())
    result = trainer.fit()
    assert result.steps == 8 and result.skipped_steps == 2
    assert updates == [1, 0, 1, 1, 1, 0, 1, 1], "steps 2 and 6 (batch 1 of each epoch) are skipped"
    for name, tensor in trainer.model.state_dict().items():
        assert torch.isfinite(tensor.float()).all(), f"{name} was damaged by a skipped step"
    # AdamW counted 6 updates; the schedule counted all 8 steps.
    assert all(int(s["step"]) == 6 for s in trainer.optimizer.state.values())
    assert trainer.scheduler.last_epoch == 8
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["skipped"]) for r in rows] == [0, 1, 1, 1, 1, 2, 2, 2]
    assert read_metadata(tmp_path / "checkpoint.safetensors")["skipped_steps"] == 2
    assert result.metrics["brightness"]["mae"] < 1.0


def test_non_finite_loss_stop_names_step_and_task_and_writes_nothing(tmp_path: Path) -> None:
    trainer = _poisoned_trainer("stop", tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"step 2 \(task: brightness\).*on_non_finite=skip"):
        trainer.fit()
    assert not (tmp_path / "checkpoint.safetensors").exists()


# -- SIGINT in-process, SIGTERM in a subprocess ----------------------------------------------


class RaiseSignal(Callback):
    """Sends ``signum`` to this process after the given steps."""

    def __init__(self, signum: int, *steps: int) -> None:
        self.signum, self.steps = signum, steps

    def on_step_start(self, trainer: Trainer) -> None:
        if trainer.step in self.steps:
            signal.raise_signal(self.signum)


def test_sigint_finishes_the_step_writes_a_checkpoint_and_restores_handlers(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    before = signal.getsignal(signal.SIGINT)
    config = RunConfig.model_validate(train_toy.run_config(steps=20))
    try:
        _, result = train(config, tmp_path, train_toy.toy_manager(), callbacks=[RaiseSignal(signal.SIGINT, 3)])
    except KeyboardInterrupt:
        pytest.fail("SIGINT during fit must stop training cleanly, not raise KeyboardInterrupt")
    assert result.interrupted and result.stop_reason == "SIGINT"
    assert result.steps == 4, "the step during which the signal arrived is finished"
    assert read_metadata(tmp_path / "checkpoint.safetensors")["step"] == 4
    assert not (tmp_path / "metrics.json").exists()
    err = capfd.readouterr().err
    assert "SIGINT received: finishing the current step" in err
    assert "stopped by SIGINT after step 4 of 20" in err and "--resume" in err
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_sigint_stops_at_once(tmp_path: Path) -> None:
    config = RunConfig.model_validate(train_toy.run_config(steps=20))

    class Twice(Callback):
        def on_step_start(self, trainer: Trainer) -> None:
            if trainer.step == 2:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path, train_toy.toy_manager(), callbacks=[Twice()])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_sigterm_stops_the_cli_cleanly_with_a_resumable_checkpoint(tmp_path: Path) -> None:
    config = tmp_path / "run.json"
    config.write_text(RunConfig.model_validate(train_toy.run_config(steps=100_000)).model_dump_json())
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(TOY_SCRIPT), "pixcore", "train", str(config), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_subprocess_env(),
    )
    log = out / "log.csv"
    _wait_for(lambda: log.exists() and len(log.read_text().splitlines()) > 3, process, "three steps")
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the run did not stop within 60 s of SIGTERM")
    assert process.returncode == EXIT_INTERRUPTED, err
    assert "SIGTERM received: finishing the current step" in err
    step = read_metadata(out / "checkpoint.safetensors")["step"]
    assert 3 <= step < 100_000
    assert f"stopped by SIGTERM after step {step} of 100000" in err

    # The checkpoint resumes: two more steps, and the log goes on from where it stopped.
    resumed = RunConfig.model_validate(train_toy.run_config(steps=step + 2))
    trainer, result = train(resumed, out, train_toy.toy_manager(), resume=out / "checkpoint.safetensors")
    assert result.steps == step + 2 and not result.interrupted
    rows = list(csv.DictReader(log.open()))
    assert [int(r["step"]) for r in rows] == list(range(1, step + 3))


# -- SIGKILL while writing a checkpoint --------------------------------------------------------


@pytest.mark.slow
def test_a_process_killed_while_saving_leaves_a_complete_checkpoint(tmp_path: Path) -> None:
    # A real process, killed with SIGKILL half-way through writing its third checkpoint
    # (its writer stops there and says so: a kill at a known point, not a lucky one).
    path = tmp_path / "checkpoint.safetensors"
    process = subprocess.Popen(
        [sys.executable, str(TOY_SCRIPT), "save-loop", str(path), "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_subprocess_env(),
    )
    assert process.stdout is not None
    lines = []
    while not lines or lines[-1] != "3 half-written":
        line = process.stdout.readline()
        if not line:
            _, err = process.communicate()
            pytest.fail(f"the writer ended (status {process.returncode}) after {lines}:\n{err}")
        lines.append(line.strip())
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert lines == ["1", "2", "3 half-written"]

    # Under the real name: the last complete checkpoint, entire.
    model = torch.nn.Linear(1024, 2048)
    assert load_checkpoint(path, model).metadata["iteration"] == 2
    for tensor in model.state_dict().values():
        assert torch.equal(tensor, torch.full_like(tensor, 2.0))

    # The torn write is a hidden temporary file: nothing reads it (it would not load), and
    # the next save to this path removes it, since the process that wrote it is gone.
    (torn,) = tmp_path.glob(".checkpoint.safetensors.tmp-*")
    assert torn.name.endswith(f"-{process.pid}")
    with pytest.raises(CheckpointError):
        load_checkpoint(torn, torch.nn.Linear(1024, 2048))
    save_checkpoint(path, model, metadata={"iteration": 4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]


# -- a finite loss with non-finite gradients; non-finite state never reaches a checkpoint ------


class InfiniteGradientAt(Callback):
    """From step ``step`` on, one weight's gradient is multiplied by inf: the loss stays finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_start(self, trainer: Trainer) -> None:
        if trainer.step + 1 == self.step:
            weight = trainer.model.backbone.a[0].weight
            weight.register_hook(lambda grad: grad * float("inf"))


def _finite(path: Path) -> bool:
    model = pixcore.build_model_from_config(train_toy.run_config()["model"], manager=train_toy.toy_manager())
    load_checkpoint(path, model)
    return all(bool(torch.isfinite(t.float()).all()) for t in model.state_dict().values())


def test_non_finite_gradients_stop_before_the_step_and_the_last_checkpoint_stays_good(tmp_path: Path) -> None:
    config = RunConfig.model_validate(train_toy.run_config(steps=8, checkpoint_every=1))
    with pytest.raises(NonFiniteLossError, match=r"gradients are not finite at step 3 .*backbone\.a\.0\.weight"):
        train(config, tmp_path, train_toy.toy_manager(), callbacks=[InfiniteGradientAt(3)])
    path = tmp_path / "checkpoint.safetensors"
    assert read_metadata(path)["step"] == 2, "the step-2 checkpoint is the last one, and kept"
    assert _finite(path)


def test_non_finite_gradients_are_skipped_and_the_weights_stay_finite(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = RunConfig.model_validate(train_toy.run_config(steps=6, on_non_finite="skip"))
    trainer, result = train(config, tmp_path, train_toy.toy_manager(), callbacks=[InfiniteGradientAt(3)])
    assert result.skipped_steps == 4, "steps 3 to 6 have infinite gradients"
    assert "4 of 6 steps were skipped" in capfd.readouterr().err, "normal-looking metrics must not hide it"
    assert all(bool(torch.isfinite(t.float()).all()) for t in trainer.model.state_dict().values())
    assert _finite(tmp_path / "checkpoint.safetensors")


def test_a_checkpoint_is_never_written_from_non_finite_state(tmp_path: Path) -> None:
    # The loss and gradients are finite, but a BatchNorm statistic turns NaN (from a NaN
    # written into it at step 3): the step-3 checkpoint is refused, the step-2 one kept.
    class PoisonStatistics(Callback):
        def on_step_start(self, trainer: Trainer) -> None:
            if trainer.step + 1 == 3:
                trainer.model.backbone.a[1].running_var.fill_(float("nan"))

    config = RunConfig.model_validate(train_toy.run_config(steps=8, checkpoint_every=1))
    with pytest.raises(NonFiniteLossError, match=r"not writing the checkpoint of step 3: "
                                                 r"model\.backbone\.a\.1\.running_var holds NaN"):
        train(config, tmp_path, train_toy.toy_manager(), callbacks=[PoisonStatistics()])
    assert read_metadata(tmp_path / "checkpoint.safetensors")["step"] == 2
    assert _finite(tmp_path / "checkpoint.safetensors")


# -- a new run never replaces another run silently -------------------------------------------


def test_a_new_run_refuses_a_folder_that_holds_a_run_unless_told(tmp_path: Path) -> None:
    manager = train_toy.toy_manager()
    train(RunConfig.model_validate(train_toy.run_config(steps=6)), tmp_path, manager)
    before = (tmp_path / "checkpoint.safetensors").read_bytes(), (tmp_path / "log.csv").read_text()
    with pytest.raises(RunExistsError, match=r"already holds a run \(checkpoint.safetensors, log.csv, "
                                              r"log.jsonl, metrics.json; checkpoint at step 6 of 6\).*"
                                              r"--resume.*another --out.*--overwrite"):
        train(RunConfig.model_validate(train_toy.run_config(steps=2)), tmp_path, manager)
    assert ((tmp_path / "checkpoint.safetensors").read_bytes(), (tmp_path / "log.csv").read_text()) == before

    train(RunConfig.model_validate(train_toy.run_config(steps=2)), tmp_path, manager, overwrite=True)
    assert read_metadata(tmp_path / "checkpoint.safetensors")["step"] == 2
    assert [int(r["step"]) for r in csv.DictReader((tmp_path / "log.csv").open())] == [1, 2]


def test_the_cli_refuses_to_start_over_a_run_with_a_message(tmp_path: Path) -> None:
    config = tmp_path / "run.json"
    config.write_text(RunConfig.model_validate(train_toy.run_config(steps=3)).model_dump_json())
    out = tmp_path / "run"
    command = [sys.executable, str(TOY_SCRIPT), "pixcore", "train", str(config), "--out", str(out)]
    assert subprocess.run(command, capture_output=True, env=_subprocess_env()).returncode == 0
    again = subprocess.run(command, capture_output=True, text=True, env=_subprocess_env())
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert f"pixcore: error: {out} already holds a run" in again.stderr
    replaced = subprocess.run([*command, "--overwrite"], capture_output=True, text=True, env=_subprocess_env())
    assert replaced.returncode == 0, replaced.stderr
