"""Exact resumption when the training data is streamed from shards.

A run killed mid-epoch and resumed ends bitwise equal to an uninterrupted one: in one
process with 2 data-loader workers, and in 2 gloo processes under torchrun. The position
in the stream is the trainer's ``batch_in_epoch``; each worker works out from it which of
its samples were trained on (see ``pixcore.data._shards``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import train_toy
from pixcore import RunConfig
from pixcore.data import write_shards
from pixcore.train import Callback, CheckpointError, Trainer, read_metadata, train
from safetensors import safe_open
from torch import Tensor

DDP_SCRIPT = Path(__file__).resolve().parent / "shards_ddp.py"


class Killed(Exception):
    """Stands for the process dying: nothing after it runs, not even the final checkpoint."""


class KillAfter(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        if trainer.step == self.step:
            raise Killed


@pytest.fixture(scope="module")
def squares_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy ``squares`` data set (24 samples) in shards of about 4 samples."""
    out = tmp_path_factory.mktemp("squares")
    write_shards(train_toy.Squares(length=24), str(out), shard_size=4 * 3000, source={"name": "squares"})
    return out


def _config(shards: Path, workers: int, **trainer: Any) -> RunConfig:
    # 24 samples, 2 streams of 12, batches of 4: 6 steps per epoch; step 10 is in epoch 1.
    # Dropout draws from the global RNG every step; hflip is seeded per sample.
    settings = {"steps": 10, "checkpoint_every": 3, "eval_every": 4, **trainer}
    config = train_toy.run_config(workers=workers, dropout=0.3, **settings)
    config["data"]["train"] = {"name": "shards", "params": {"url": str(shards), "shuffle_buffer": 5}}
    return RunConfig.model_validate(config)


def _tensors(path: Path) -> dict[str, Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def _assert_same_checkpoints(expected: Path, actual: Path) -> None:
    a, b = _tensors(expected), _tensors(actual)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resuming"


@pytest.mark.slow
def test_a_run_killed_mid_epoch_with_two_workers_resumes_bitwise(tmp_path: Path, squares_shards: Path) -> None:
    manager = train_toy.toy_manager()
    whole, whole_result = train(_config(squares_shards, 2), tmp_path / "whole", manager)

    # Killed after step 5: the checkpoint of step 3 is mid-epoch, after an odd number of
    # batches (worker 0 gave two, worker 1 one: worker 1's turn comes next).
    with pytest.raises(Killed):
        train(_config(squares_shards, 2), tmp_path / "cut", manager, callbacks=[KillAfter(5)])
    checkpoint = tmp_path / "cut" / "checkpoint.safetensors"
    meta = read_metadata(checkpoint)
    assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (3, 0, 3)
    assert meta["data_layout"]["num_workers"] == 2

    resumed, result = train(_config(squares_shards, 2), tmp_path / "cut", manager, resume=checkpoint)
    assert result.steps == whole_result.steps == 10 and resumed.epoch == whole.epoch == 1
    _assert_same_checkpoints(tmp_path / "whole" / "checkpoint.safetensors", checkpoint)
    assert result.metrics["brightness"]["mae"] == whole_result.metrics["brightness"]["mae"]


def test_resuming_with_another_number_of_workers_is_refused(tmp_path: Path, squares_shards: Path) -> None:
    manager = train_toy.toy_manager()
    train(_config(squares_shards, 0, steps=2), tmp_path, manager)
    with pytest.raises(CheckpointError, match="num_workers: 0 then, 2 now.*same shards"):
        train(_config(squares_shards, 2, steps=4), tmp_path, manager, resume=tmp_path / "checkpoint.safetensors")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_processes_resume_bitwise(tmp_path: Path, squares_shards: Path) -> None:
    # 2 processes: 2 streams of 12 samples, batches of 4 (3 per rank and epoch). Stopped
    # after 2 steps (mid-epoch) and resumed to 5 (epoch 1).
    config = tmp_path / "run.json"
    config.write_text(_config(squares_shards, 0, steps=5, eval_every=None).model_dump_json())
    env = {**os.environ, "PIXCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(DDP_SCRIPT), str(config), str(tmp_path / "whole"), str(tmp_path / "cut"), "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"
    meta = read_metadata(tmp_path / "cut" / "checkpoint.safetensors")
    assert (meta["step"], meta["world_size"], meta["epoch"], meta["batch_in_epoch"]) == (5, 2, 1, 2)
    _assert_same_checkpoints(tmp_path / "whole" / "checkpoint.safetensors", tmp_path / "cut" / "checkpoint.safetensors")


def test_a_streamed_sample_is_augmented_as_the_map_style_data_set_augments_it(squares_shards: Path) -> None:
    from pixcore.augment import HorizontalFlip
    from pixcore.data import ShardDataset
    from pixcore.train import AugmentedDataset
    from pixcore.train._data import AugmentedStream

    flip = HorizontalFlip()  # p=0.5 per sample: a wrongly seeded sample shows
    reference = AugmentedDataset(train_toy.Squares(length=24), flip, seed=11)
    stream = AugmentedStream(ShardDataset(str(squares_shards), shuffle_buffer=5), flip, seed=11)
    for epoch in (0, 3):
        reference.epoch = epoch
        stream.start_epoch(epoch)
        streamed = {int(sample["brightness"].sum() * 1000): sample for sample in stream}
        flipped = 0
        for index in range(24):
            expected = reference[index]
            actual = streamed[int(expected["brightness"].sum() * 1000)]
            assert torch.equal(actual["image"], expected["image"]), (epoch, index)
            flipped += not torch.equal(expected["image"], train_toy.Squares(length=24)[index]["image"])
        assert 0 < flipped < 24
