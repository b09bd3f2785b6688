"""`pixcore report`: the sections of a real run, absent tasks left out, bad folders, self-containment."""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pixcore import PixcoreError
from pixcore._cli import main
from pixcore.report import build_report

pytestmark = pytest.mark.slow  # each module trains a tiny real model (a few seconds)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def _images(page: str) -> list[tuple[bytes, str]]:
    return [(base64.b64decode(data), alt) for data, alt in IMAGE.findall(page)]


@pytest.fixture(scope="module")
def report(multitask_run: Path) -> str:
    return build_report(multitask_run).read_text(encoding="utf-8")


def test_a_segmentation_depth_normals_run_has_every_section(multitask_run: Path, report: str) -> None:
    assert _sections(report) == ["summary", "training", "metrics", "task-semseg", "task-depth", "task-normals",
                                 "samples", "run"]
    images = _images(report)
    assert all(data.startswith(PNG_SIGNATURE) for data, _ in images)
    pictures = sorted((multitask_run / "report").glob("*.png"))
    names = [re.sub(r"^\d+_", "", p.stem) for p in pictures]
    assert names == ["loss", "lr", "metrics_semseg", "metrics_depth", "metrics_normals", "iou_semseg",
                     "confusion_semseg", "depth_maps_depth", "depth_error_depth", "normals_maps_normals",
                     "normals_hist_normals", "samples"]
    assert [data for data, _ in images] == [p.read_bytes() for p in pictures]  # each PNG embedded, in order
    for text in ("the resolved run config", "Versions", "Device", "Timing", "timm/resnet18", "pixcore-seg"):
        assert text in report, text


def test_the_iou_table_agrees_with_the_segmentation_metric(multitask_run: Path, report: str) -> None:
    # The report's IoU comes from the confusion matrix the trainer stored; the seg plugin's
    # miou metric computes it on its own: both must give the same numbers.
    records = [json.loads(line) for line in (multitask_run / "log.jsonl").read_text().splitlines()]
    metrics = [r for r in records if r["kind"] == "eval"][-1]["metrics"]["semseg"]
    names = ["floor", "wall", "ceiling", "sphere", "box", "cylinder", "window"]
    for c, name in enumerate(names):
        row = re.search(rf"<tr><td>{name}</td><td class=\"number\">(\d+)</td><td[^>]*>([^<]+)</td></tr>", report)
        assert row, name
        expected = metrics[f"iou/{c}"]
        shown = row.group(2)
        assert (shown == "n/a") if np.isnan(expected) else float(shown) == pytest.approx(expected, abs=5e-5)


def test_the_page_is_self_contained(report: str) -> None:
    assert not re.search(r"https?://", report)
    assert "<script" not in report.lower()
    assert "<link" not in report.lower() and "@import" not in report
    sources = re.findall(r'src="([^"]*)"', report)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


def test_tasks_the_run_does_not_have_are_left_out(tmp_path: Path, make_run: Callable[..., Path]) -> None:
    run = make_run(tmp_path, ["model.tasks={depth: {head: {name: fpn, params: {channels: 16}}}}"])
    page = build_report(run).read_text(encoding="utf-8")
    assert _sections(page) == ["summary", "training", "metrics", "task-depth", "samples", "run"]
    names = sorted(re.sub(r"^\d+_", "", p.stem) for p in (run / "report").glob("*.png"))
    assert names == ["depth_error_depth", "depth_maps_depth", "loss", "lr", "metrics_depth", "samples"]
    assert "<caption>semseg</caption>" not in page and "<caption>normals</caption>" not in page  # summary
    assert not [alt for _, alt in _images(page) if "normals" in alt or "segment" in alt or "class" in alt]


def _hand_made_run(folder: Path, tasks: dict[str, dict[str, float]], evaluate: bool = True) -> Path:
    """A run folder written by hand, as a plugin task with unknown kind would leave it."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in (1, 2, 3):
        row = {"kind": "train", "step": step, "epoch": 0, "lr": 0.01, "loss": 2.0 / step, "skipped": 0,
               "seconds": 0.5 * step, **{f"{t}/loss": 1.0 / step for t in tasks}}
        lines.append(json.dumps(row))
        if evaluate:
            metrics = {t: {k: v * step for k, v in values.items()} | {"protocol": {"x": "y"}}
                       for t, values in tasks.items()}
            lines.append(json.dumps({"kind": "eval", "step": step, "metrics": metrics}))
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_a_third_party_task_gets_its_metric_curves(tmp_path: Path) -> None:
    run = _hand_made_run(tmp_path / "run", {"edges": {"f1": 0.2, "boundary_iou": 0.1}})
    page = build_report(run).read_text(encoding="utf-8")
    assert _sections(page) == ["summary", "training", "metrics", "run"]
    assert sorted(re.sub(r"^\d+_", "", p.stem) for p in (run / "report").glob("*.png")) == [
        "loss", "lr", "metrics_edges"]
    assert "<caption>edges</caption><tbody><tr><th>f1</th>" in page  # the summary of the last evaluation
    assert "run.jsonl is missing" in page  # what is missing is said, not hidden


def test_a_run_without_evaluation_gets_its_curves(tmp_path: Path) -> None:
    run = _hand_made_run(tmp_path / "run", {"depth": {}}, evaluate=False)
    page = build_report(run).read_text(encoding="utf-8")
    assert "No evaluation yet" in page
    assert sorted(re.sub(r"^\d+_", "", p.stem) for p in (run / "report").glob("*.png")) == ["loss", "lr"]


def test_the_report_can_go_elsewhere(tmp_path: Path) -> None:
    run = _hand_made_run(tmp_path / "run", {"depth": {"abs_rel": 0.3}})
    out = build_report(run, tmp_path / "pages" / "run.html")
    assert out == tmp_path / "pages" / "run.html" and out.is_file()
    assert not (run / "report.html").exists() and (run / "report").is_dir()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", r"run folder .*missing does not exist"),
        ("file", r"is a file, not a run folder"),
        ("empty", r"empty is not a pixcore run folder: log.jsonl is missing \(it holds: notes.txt\)"),
        ("no rows", r"log.jsonl holds no training rows yet"),
        ("damaged snapshot", r"step_0000003.npz is not a readable evaluation snapshot"),
    ],
)
def test_a_bad_run_folder_is_a_clear_error(tmp_path: Path, setup: str, message: str) -> None:
    folder = tmp_path / setup.replace(" ", "_") if setup != "empty" else tmp_path / "empty"
    if setup == "file":
        folder.write_text("not a folder")
    elif setup == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("")
    elif setup == "no rows":
        folder.mkdir()
        (folder / "log.jsonl").write_text(json.dumps({"kind": "eval", "step": 1, "metrics": {}}) + "\n")
    elif setup == "damaged snapshot":
        _hand_made_run(folder, {"depth": {"abs_rel": 0.3}})
        (folder / "eval").mkdir()
        (folder / "eval" / "step_0000003.npz").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(PixcoreError, match=message):
        build_report(folder)


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _hand_made_run(tmp_path / "run", {"depth": {"abs_rel": 0.3}})
    assert main(["report", str(run)]) == 0
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("pixcore: error: run folder") and "Traceback" not in error


def test_a_run_written_before_run_jsonl_and_snapshots(multitask_run: Path, tmp_path: Path) -> None:
    # An older run: logs and checkpoint only. Curves and metrics, the config from the checkpoint,
    # and a note of what is missing.
    old = tmp_path / "old"
    shutil.copytree(multitask_run, old, ignore=shutil.ignore_patterns("report*", "run.jsonl", "eval"))
    page = build_report(old).read_text(encoding="utf-8")
    assert _sections(page) == ["summary", "training", "metrics", "run"]
    assert "timm/resnet18" in page  # the config, read from checkpoint.safetensors
    assert "run.jsonl is missing" in page and "holds no evaluation snapshot" in page
