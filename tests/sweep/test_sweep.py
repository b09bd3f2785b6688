"""Sweeps end to end: members are real ``pixcore train`` processes, started, stopped, resumed and compared."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pixcore._cli import main
from pixcore.train import read_metadata
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

GRID = ["--set", "trainer.lr=0.01,0.001", "--seeds", "2"]
CHOSEN = {"semseg/miou": True, "depth/abs_rel": False}  # the directions the metrics' documentation states


@pytest.fixture(scope="module")
def finished(tiny_run: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, sweep folder) of a 2 settings x 2 seeds sweep run to its end, two members at a time."""
    folder = tmp_path_factory.mktemp("finished")
    config, out = folder / "run.yaml", folder / "sweep"
    config.write_text(tiny_run)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        code = main(["sweep", str(config), *GRID, "--jobs", "2", "--out", str(out), "--baseline", "trainer.lr=0.001",
                     "--metric", *CHOSEN])
    assert code == 0
    return config, out


def _member_results(out: Path, lr: str) -> list[dict[str, float]]:
    found = []
    for seed in (0, 1):
        results = json.loads((out / f"trainer.lr={lr}__seed={seed}" / "metrics.json").read_text())
        found.append({f"{t}/{k}": v for t, values in results.items() for k, v in values.items()
                      if isinstance(v, float)})
    return found


def test_a_sweep_trains_every_member_and_compares_them(finished: tuple[Path, Path]) -> None:
    _, out = finished
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    means: dict[str, dict[str, float]] = {}
    for lr in ("0.01", "0.001"):
        members = _member_results(out, lr)
        assert set(members[0]) >= set(CHOSEN)
        for metric in members[0]:
            values = np.array([m[metric] for m in members])
            row = next(r for r in rows if r["trainer.lr"] == lr and r["metric"] == metric)
            assert int(row["n"]) == 2
            assert float(row["mean"]) == pytest.approx(values.mean(), rel=1e-12, abs=1e-15)
            assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-15)
            assert (float(row["min"]), float(row["max"])) == (values.min(), values.max())
        means[lr] = {metric: float(np.mean([m[metric] for m in members])) for metric in CHOSEN}
    # delta-m of lr=0.01 against the baseline lr=0.001: one key per task, so the mean of the two changes.
    changes = [(means["0.01"][m] - means["0.001"][m]) / abs(means["0.001"][m]) * 100 * (1 if up else -1)
               for m, up in CHOSEN.items()]
    delta = next(r for r in rows if r["trainer.lr"] == "0.01" and r["metric"] == "delta_m")
    assert float(delta["mean"]) == pytest.approx(np.mean(changes), rel=1e-9, abs=1e-12)
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "depth-abs_rel__vs__trainer.lr.png", "semseg-miou__vs__trainer.lr.png"]
    assert "| 0.001 (baseline) | 2 | 0 |" in (out / "comparison.md").read_text()


def test_the_same_command_skips_finished_members_and_compare_runs_alone(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, out = finished
    logs = {p: p.read_text() for p in out.glob("*/output.log")}
    assert main(["sweep", str(config), *GRID, "--out", str(out), "--member", "3", "--no-plots"]) == 0
    assert main(["sweep", "--compare", str(out), "--metric", "depth/abs_rel", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "4 member(s)" not in printed and "1 member(s) in" in printed and "1 finished before" in printed
    assert "| depth/abs_rel | lower |" in printed
    assert {p: p.read_text() for p in out.glob("*/output.log")} == logs  # nothing ran again


def _log_steps(folder: Path) -> list[int]:
    with (folder / "log.csv").open() as file:
        return [int(row["step"]) for row in csv.DictReader(file)]


def _wait_for(condition: object, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 180
    while not condition():  # type: ignore[operator]
        if process.poll() is not None:
            pytest.fail(f"the sweep ended (status {process.returncode}) before {what}:\n{process.communicate()}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def test_a_stopped_sweep_resumes_its_interrupted_member_exactly(
    finished: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, whole = finished
    out = tmp_path / "sweep"
    args = ["sweep", str(config), "--set", "trainer.lr=0.01", "--seeds", "2", "--out", str(out)]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    process = subprocess.Popen([sys.executable, "-m", "pixcore", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    first, second = out / "trainer.lr=0.01__seed=0", out / "trainer.lr=0.01__seed=1"

    def second_is_training() -> bool:
        return (first / "metrics.json").exists() and (second / "checkpoint.safetensors").exists() and \
            (second / "log.csv").exists() and len(_log_steps(second)) >= 5

    _wait_for(second_is_training, process, "the first member finished and the second wrote a checkpoint")
    os.kill(process.pid, signal.SIGTERM)  # the sweep only: it passes the stop on to its member
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the sweep did not stop within 120 s of SIGTERM")
    assert process.returncode == 75, err
    assert "stopped by SIGTERM: 1 member(s) interrupted after their checkpoint, 0 not started" in err
    assert not (second / "metrics.json").exists()
    assert read_metadata(second / "checkpoint.safetensors")["step"] < 40

    done = (first / "metrics.json").stat().st_mtime_ns, (first / "output.log").read_text()
    assert main(args) == 0
    assert ((first / "metrics.json").stat().st_mtime_ns, (first / "output.log").read_text()) == done
    attempts = [line for line in (second / "output.log").read_text().splitlines() if line.startswith("# pixcore")]
    assert len(attempts) == 2 and "--resume" not in attempts[0] and attempts[1].endswith("--resume")
    assert _log_steps(second) == list(range(1, 41))
    # Bitwise what the uninterrupted sweep got for the same members.
    for member in (first, second):
        same = whole / member.name
        assert json.loads((member / "metrics.json").read_text()) == json.loads((same / "metrics.json").read_text())
        ours, theirs = load_file(member / "checkpoint.safetensors"), load_file(same / "checkpoint.safetensors")
        assert ours.keys() == theirs.keys()
        assert all(ours[key].equal(theirs[key]) for key in ours)


def test_a_failed_member_is_reported_with_its_log_and_the_others_finish(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    # Head parameters are validated when a member builds its model: this one fails there.
    code = main(["sweep", str(tiny_config), "--set", "trainer.steps=2", "--set",
                 "model.tasks.depth.head.params.channels=8,-1", "--jobs", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    failed = out / "trainer.steps=2__model.tasks.depth.head.params.channels=-1__seed=0"
    assert f"trainer.steps=2__model.tasks.depth.head.params.channels=-1__seed=0 (exit status 2): " \
           f"{failed / 'output.log'}" in err
    assert "pixcore: error: " in (failed / "output.log").read_text()
    assert (out / "trainer.steps=2__model.tasks.depth.head.params.channels=8__seed=0" / "metrics.json").exists()
    assert not (out / "comparison.csv").exists()
