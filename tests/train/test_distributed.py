"""Distributed data parallel: data sharding, and torchrun with 2 CPU processes (gloo)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pixcore
import pytest
import torch
import train_toy
from pixcore import RunConfig
from pixcore._runfiles import read_snapshot
from pixcore.train import ShardSampler, read_metadata, train
from pixcore.train._data import seed_epoch, training_sampler
from safetensors import safe_open
from torch.utils.data import DataLoader

TOY_SCRIPT = Path(train_toy.__file__).resolve()


def _batches(world_size: int, rank: int, batch_size: int, epoch: int) -> list[list[int]]:
    data = list(range(20))
    loader = DataLoader(data, batch_size=batch_size, drop_last=True,  # type: ignore[arg-type]
                        sampler=training_sampler(data, seed=7, rank=rank, world_size=world_size))
    seed_epoch(loader, seed=7, epoch=epoch)
    return [batch.tolist() for batch in loader]


def test_ranks_together_see_the_batches_of_one_process_with_the_global_batch() -> None:
    for epoch in range(3):
        single = _batches(1, 0, 4, epoch)
        rank0, rank1 = _batches(2, 0, 2, epoch), _batches(2, 1, 2, epoch)
        assert len(single) == len(rank0) == len(rank1) == 5
        for whole, a, b in zip(single, rank0, rank1, strict=True):
            assert sorted(whole) == sorted(a + b)
            assert not set(a) & set(b)
    assert _batches(1, 0, 4, 0) != _batches(1, 0, 4, 1), "every epoch has its own order"
    assert _batches(1, 0, 4, 0) == _batches(1, 0, 4, 0), "and it is a function of (seed, epoch)"


def test_evaluation_shards_cover_every_sample_once() -> None:
    for world_size in (1, 2, 3, 7):
        shards = [list(ShardSampler(10, rank, world_size)) for rank in range(world_size)]
        assert sorted(i for shard in shards for i in shard) == list(range(10))
        assert [len(ShardSampler(10, r, world_size)) for r in range(world_size)] == [len(s) for s in shards]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_with_the_global_batch(tmp_path: Path) -> None:
    # 2 ranks x 2 samples against 1 process x 4 samples: the same samples in every step.
    # The loss is a mean over equally large shards, so DDP's average of the two ranks'
    # gradients equals the gradient of the 4-sample mean up to float rounding (the sums
    # are grouped differently); no BatchNorm (the linear head, a norm-free backbone) and no
    # dropout, which would differ per shard. The DDP run trains 3 steps, then resumes to 6.
    def config(batch_size: int) -> RunConfig:
        return RunConfig.model_validate(train_toy.run_config(
            steps=6, batch_size=batch_size, length=16, norm=False, head="linear", eval_every=3,
        ))

    config_file = tmp_path / "run.json"
    config_file.write_text(config(2).model_dump_json())
    out = tmp_path / "ddp"
    env = {**os.environ, "PIXCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # stay on the loopback interface
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(TOY_SCRIPT), "ddp-two-halves", str(config_file), str(out), "3",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"

    single, result = train(config(4), tmp_path / "single", train_toy.toy_manager())

    checkpoint = out / "checkpoint.safetensors"
    meta = read_metadata(checkpoint)
    assert (meta["step"], meta["world_size"]) == (6, 2)
    with safe_open(str(checkpoint), framework="pt") as handle:
        assert "rng.rank1.torch" in handle.keys(), "rank 1's random state is saved too"
        names = [k for k in handle.keys() if k.startswith("model.")]  # noqa: SIM118
        weights = {k[len("model."):]: handle.get_tensor(k) for k in names}
    expected = single.model.state_dict()
    assert weights.keys() == expected.keys()
    torch.manual_seed(0)  # as train() does before building the model
    initial = pixcore.build_model_from_config(config(4).model, manager=train_toy.toy_manager())
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-5, msg=name)
        assert not torch.equal(value, initial.state_dict()[name]) or value.ndim == 0, f"{name} did not train"

    # Logged losses are averaged over the ranks; metrics are summed over the shards.
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    for row, reference in zip(rows, result.history, strict=True):
        assert float(row["loss"]) == pytest.approx(reference["loss"], rel=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["brightness"]["count"] == result.metrics["brightness"]["count"]  # each sample once
    assert metrics["brightness"]["mae"] == pytest.approx(result.metrics["brightness"]["mae"], rel=1e-4)
    assert done.stdout.count('"brightness"') == 2, "only rank 0 prints the metrics (of 2 halves)"

    # What the report reads: written once (by rank 0), resumed by appending. The kept samples
    # are the first of rank 0's shard of the validation set.
    records = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("start", 0), ("end", 3), ("start", 3), ("end", 6)]
    assert records[0]["world_size"] == 2
    snapshots = sorted(p.name for p in (out / "eval").iterdir())
    assert snapshots == ["step_0000003.npz", "step_0000006.npz"]
    assert read_snapshot(out / "eval" / snapshots[-1]).meta["indices"] == [0, 2, 4]
