"""The command line, end to end with the real plugins: demo, train, plugins, list."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixcore
from pixcore._cli import main
from pixcore.train import load_checkpoint, read_metadata

pytestmark = pytest.mark.slow

SMALL = [
    "data.train.params.height=40", "data.train.params.width=48",
    "data.val.params.height=40", "data.val.params.width=48",
    "data.val.params.length=8", "data.batch_size=4", "data.num_workers=0",
    "trainer.progress=false", "trainer.log_every=1",
]


def _args(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def test_demo_writes_metrics_log_checkpoint_and_picture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--steps", "3", "--samples", "2", *_args(SMALL)])
    printed = capsys.readouterr().out
    assert code == 0  # without --check a missed bar is reported, not fatal
    for task, metric in (("semseg", "miou"), ("depth", "abs_rel"), ("normals", "mean")):
        assert f"{task:<8} {metric:<8}" in printed, printed

    summary = json.loads((out / "metrics.json").read_text())
    assert {b["task"] for b in summary["bars"]} == {"semseg", "depth", "normals"}
    assert summary["model"]["depth"]["protocol"]["depth_errors"]
    assert 0.0 <= summary["baseline"]["semseg"]["miou"] <= 1.0

    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert {"semseg/loss", "depth/loss", "normals/loss"} <= set(rows[0])

    # The checkpoint rebuilds the model from its own config and predicts the same.
    path = out / "checkpoint.safetensors"
    config = pixcore.RunConfig.model_validate(read_metadata(path)["config"])
    model = pixcore.build_model_from_config(config.model)
    report = load_checkpoint(path, model)
    assert report.metadata["step"] == 3
    assert model(torch.zeros(1, 3, 40, 48, dtype=torch.uint8))["depth"].shape == (1, 1, 40, 48)

    picture = np.asarray(Image.open(out / "samples.png"))
    # 2 rows of 7 panels (input + truth/prediction for 3 tasks), each 2x upscaled.
    assert picture.shape[0] > 2 * 2 * 40 and picture.shape[1] > 7 * 2 * 48
    assert picture.std() > 20, "the picture is not blank"


def test_demo_check_fails_when_a_bar_is_missed(tmp_path: Path) -> None:
    # One step at lr 0 cannot beat the baselines: --check must turn that into exit code 1.
    code = main(["demo", "--out", str(tmp_path), "--steps", "1", "--check", "--samples", "1",
                 *_args([*SMALL, "trainer.lr=1e-12"])])
    assert code == 1


def test_train_from_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        """
model:
  backbone: timm/resnet18
  tasks:
    depth: {}
data:
  train: {name: synthetic, params: {length: 16, height: 32, width: 32}}
  val: {name: synthetic, params: {split: val, length: 4, height: 32, width: 32}}
  batch_size: 4
trainer: {steps: 2, progress: false}
"""
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"depth"} and metrics["depth"]["abs_rel"] > 0
    assert (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_train_reports_config_errors_with_their_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("model: {backbone: timm/resnet18, tasks: {depth: {}}}\ndata: {train: synthetic}\n")
    assert main(["train", str(config), "--set", "trainer.stepz=3"]) == 2
    error = capsys.readouterr().err
    assert "trainer.stepz" in error and "bad.yaml" in error


def test_plugins_lists_distributions_versions_and_registrations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    infos = {i["distribution"]: i for i in json.loads(capsys.readouterr().out)}
    assert infos["pixcore-depth"]["registered"]["tasks"] == ["depth"]
    assert infos["pixcore-timm"]["registered"]["backbones"] == ["timm/*"]
    assert infos["pixcore-seg"]["version"] == "0.1.0"
    assert all(i["status"] == "loaded" for i in infos.values())


def test_list_filters_by_family_and_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "backbones", "timm/resnet1*", "--limit", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("backbones (")
    assert out[1:4] == ["  timm/resnet101", "  timm/resnet101_clip", "  timm/resnet101_clip_gap"]
    assert "more" in out[4]
