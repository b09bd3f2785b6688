"""``pixcore shard``: a config's data or a data set by name into shards, then training from them.

The synthetic multi-task config and a tiny Pascal VOC copy (``conftest.py``) are written
with the command line and trained for two steps from the shards, on CPU.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pixcore._cli import main
from pixcore.data import ShardDataset

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_multitask.yaml"


def _sets(*items: str) -> list[str]:
    return [word for item in items for word in ("--set", item)]


@pytest.fixture(autouse=True)
def _plugins_and_one_thread() -> Iterator[None]:
    for name in ("pixcore_seg", "pixcore_depth", "pixcore_normals", "pixcore_timm"):
        pytest.importorskip(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair to a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_shard_a_config_then_train_from_its_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shards"
    small = _sets("data.train.params.length=6", "data.train.params.height=32", "data.train.params.width=32",
                  "data.val.params.length=2", "data.val.params.height=32", "data.val.params.width=32")
    assert main(["shard", str(CONFIG), "--out", str(out), "--shard-size", "40kB", *small]) == 0
    assert main(["shard", str(CONFIG), "--out", str(out), "--split", "val", *small]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}/train-000000.tar" in printed and "data.val: {name: shards" in printed
    index = json.loads((out / "index.json").read_text())
    assert index["splits"]["train"]["source"]["name"] == "synthetic"
    assert index["splits"]["train"]["source"]["params"]["length"] == 6
    assert index["splits"]["train"]["source"]["entry"] == "data.train"
    assert len(index["splits"]["train"]["shards"]) > 1 and index["splits"]["val"]["samples"] == 2

    run = tmp_path / "run"
    shards = _sets(f"data.train={{name: shards, params: {{url: {out}, split: train, shuffle_buffer: 3}}}}",
                   f"data.val={{name: shards, params: {{url: {out}, split: val, shuffle_buffer: 0}}}}",
                   "data.augmentations=[hflip]", "trainer.steps=2", "trainer.warmup_steps=0", "trainer.device=cpu",
                   "trainer.progress=false", "data.batch_size=2", "data.num_workers=0")
    assert main(["train", str(CONFIG), "--out", str(run), *shards]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"semseg", "depth", "normals"}


@pytest.mark.slow
def test_shard_a_data_set_by_name_then_train_from_its_shards(
    tmp_path: Path, voc_root: Path, small_run: Any
) -> None:
    out = tmp_path / "voc"
    for split in ("train", "val"):  # the reader's own `split` parameter follows --split
        assert main(["shard", "voc", "--out", str(out), "--split", split, *_sets(f"root={voc_root}")]) == 0
    assert len(ShardDataset(str(out), split="train")) == 4 and len(ShardDataset(str(out), split="val")) == 1
    entry = json.loads((out / "index.json").read_text())["splits"]["train"]
    assert entry["keys"]["image"]["kind"] == "image" and entry["class_names"][0] == "background"
    config = tmp_path / "voc.json"
    config.write_text(json.dumps(small_run("voc", {"name": "shards", "params": {"url": str(out)}},
                                           {"name": "shards", "params": {"url": str(out), "split": "val"}})))
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    assert "miou" in json.loads((tmp_path / "run" / "metrics.json").read_text())["semseg"]


def test_shard_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shard", "no_such_set", "--out", str(tmp_path / "x")]) == 2
    assert "no_such_set" in capsys.readouterr().err
    assert main(["shard", "synthetic", "--out", str(tmp_path / "x"), "--shard-size", "big"]) == 2
    assert "shard size 'big' is not a size" in capsys.readouterr().err
    assert main(["shard", str(CONFIG), "--out", str(tmp_path / "x"), "--split", "test"]) == 2
    assert "use --split train or val" in capsys.readouterr().err
    assert main(["shard", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
