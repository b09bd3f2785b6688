"""Gradient accumulation: the same step as a larger batch, exact resume, DDP's no_sync."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pixcore
import pytest
import torch
import train_toy
from pixcore import RunConfig
from pixcore.train import Callback, Trainer, make_loaders, read_metadata, train
from safetensors import safe_open
from torch import Tensor

TOY_SCRIPT = Path(train_toy.__file__).resolve()


class Killed(Exception):
    pass


class KillAfter(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        if trainer.step == self.step:
            raise Killed


def _config(**settings: Any) -> RunConfig:
    return RunConfig.model_validate(train_toy.run_config(**settings))


def test_two_micro_batches_make_the_step_of_a_double_batch() -> None:
    # No BatchNorm (statistics depend on the batch) and no dropout: the mean of two
    # micro-batch means of equal size is the mean of the whole batch, up to rounding.
    common: dict[str, Any] = {"steps": 4, "length": 16, "norm": False, "head": "linear"}
    manager = train_toy.toy_manager()
    big, big_result = train(_config(batch_size=4, **common), None, manager)
    small, small_result = train(_config(batch_size=2, accumulate_grad_batches=2, **common), None, manager)
    for (name, a), b in zip(big.model.state_dict().items(), small.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-6, msg=name)
    # The logged loss is the mean over the micro-batches: the loss of the whole batch.
    assert [r["step"] for r in small_result.history] == [1, 2, 3, 4]
    for row, reference in zip(small_result.history, big_result.history, strict=True):
        assert row["loss"] == pytest.approx(reference["loss"], rel=1e-5)
        assert row["brightness/loss"] == pytest.approx(reference["brightness/loss"], rel=1e-5)
    assert small.batch_in_epoch == big.batch_in_epoch * 2  # 8 of 8 batches of 2, 4 of 4 of 4


def test_accumulation_resumes_to_bitwise_equal_weights(tmp_path: Path) -> None:
    # 24 samples in batches of 4, 2 per step: 3 steps per epoch. Killed after step 3 (an epoch
    # boundary is crossed on resume), last checkpoint at step 2: batch 4 of epoch 0.
    settings: dict[str, Any] = {"steps": 5, "accumulate_grad_batches": 2, "checkpoint_every": 2,
                                "dropout": 0.3, "eval_every": 2}
    manager = train_toy.toy_manager()
    whole, _ = train(_config(**settings), tmp_path / "whole", manager)
    with pytest.raises(Killed):
        train(_config(**settings), tmp_path / "cut", manager, callbacks=[KillAfter(3)])
    checkpoint = tmp_path / "cut" / "checkpoint.safetensors"
    meta = read_metadata(checkpoint)
    assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (2, 0, 4)
    resumed, _ = train(_config(**settings), tmp_path / "cut", manager, resume=checkpoint)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resuming"
    assert (resumed.epoch, resumed.batch_in_epoch) == (whole.epoch, whole.batch_in_epoch) == (1, 4)


class _RecordingDDP:
    """Stands for DistributedDataParallel: counts the micro-batches run without a sync."""

    def __init__(self) -> None:
        self.no_sync_calls = 0

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        self.no_sync_calls += 1
        yield


def test_all_micro_batches_but_the_last_skip_the_gradient_sync() -> None:
    manager = train_toy.toy_manager()
    config = _config(steps=2, accumulate_grad_batches=3, length=24)
    torch.manual_seed(0)
    model = pixcore.build_model_from_config(config.model, manager=manager)
    loader, _ = make_loaders(config, manager)
    trainer = Trainer(model, config.trainer, loader, manager=manager)
    recorder = _RecordingDDP()
    trainer._ddp = recorder
    trainer.fit()
    assert recorder.no_sync_calls == 2 * (3 - 1)
    assert trainer.batch_in_epoch == 6


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_torchrun_accumulation_matches_one_process_with_the_global_batch(tmp_path: Path) -> None:
    # 2 ranks x 1 sample x 2 micro-batches against 1 process x 4 samples: the same 4 samples
    # make every step (resuming under DDP is tested in test_distributed.py).
    common: dict[str, Any] = {"steps": 4, "length": 16, "norm": False, "head": "linear"}
    config_file = tmp_path / "run.json"
    config_file.write_text(_config(batch_size=1, accumulate_grad_batches=2, **common).model_dump_json())
    out = tmp_path / "ddp"
    env = {**os.environ, "PIXCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(TOY_SCRIPT), "pixcore", "train", str(config_file), "--out", str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"

    single, _ = train(_config(batch_size=4, **common), None, train_toy.toy_manager())
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as handle:
        names = [k for k in handle.keys() if k.startswith("model.")]  # noqa: SIM118
        weights = {k[len("model."):]: handle.get_tensor(k) for k in names}
    expected = single.model.state_dict()
    assert weights.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-5, msg=name)
