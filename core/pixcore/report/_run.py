"""Reading a run folder: the logs, ``run.jsonl``, the latest evaluation snapshot, the config.

Only ``log.jsonl`` with at least one training row is required; everything else makes
sections of the report, and what is missing is noted in :attr:`RunData.notes`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixcore._errors import PixcoreError
from pixcore._runfiles import EVAL_DIR, RUN_FILE, Snapshot, read_snapshot, snapshot_paths

__all__ = ["RunData", "load_run"]

#: The file every run folder has from its first logged step on.
LOG_FILE = "log.jsonl"
CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass
class RunData:
    """Everything the report draws, read from one run folder."""

    folder: Path
    #: ``{"step", "lr", "loss", "<task>/loss", "weight/<task>", ...}`` per logged step.
    train_rows: list[dict[str, Any]]
    #: ``(step, {task: {metric key: value}})`` per evaluation, in order.
    evaluations: list[tuple[int, dict[str, dict[str, Any]]]]
    #: ``run.jsonl``'s ``(start, end)`` records, one pair per ``fit`` (end None: the process
    #: died or is still running). Empty for a run written before run.jsonl existed.
    segments: list[tuple[dict[str, Any], dict[str, Any] | None]] = field(default_factory=list)
    #: The latest evaluation snapshot (``eval/step_*.npz``), or None.
    snapshot: Snapshot | None = None
    #: The resolved run config, from ``run.jsonl`` or else the checkpoint.
    config: dict[str, Any] | None = None
    #: ``samples.png`` of ``pixcore demo``, drawn when there is no snapshot.
    samples_picture: Path | None = None
    #: What is missing or was skipped, in words, for the report's last section.
    notes: list[str] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        return int(self.train_rows[-1]["step"])


def load_run(folder: str | Path) -> RunData:
    """Read ``folder``; a folder that is not a run (no ``log.jsonl``, no logged step) is a PixcoreError."""
    folder = Path(folder)
    _check_folder(folder)
    records, skipped = _read_jsonl(folder / LOG_FILE)
    rows = [r for r in records if r.get("kind") == "train" and _is_step(r.get("step"))]
    if not rows:
        raise PixcoreError(
            f"{folder / LOG_FILE} holds no training rows yet: the run has not reached its first logged "
            "step (trainer.log_every). Run `pixcore report` again once it has."
        )
    evaluations = [(int(r["step"]), r["metrics"]) for r in records
                   if r.get("kind") == "eval" and _is_step(r.get("step")) and isinstance(r.get("metrics"), dict)]
    data = RunData(folder, rows, evaluations)
    if skipped:
        data.notes.append(f"{LOG_FILE}: {skipped} unreadable line(s) skipped (a run killed while writing leaves one).")
    _read_run_file(data)
    _read_latest_snapshot(data)
    if data.config is None:
        data.config = _checkpoint_config(data)
    picture = folder / "samples.png"
    data.samples_picture = picture if picture.is_file() else None
    return data


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise PixcoreError(f"run folder {folder} does not exist; pass the --out folder of `pixcore train` or "
                           "`pixcore demo`")
    if not folder.is_dir():
        raise PixcoreError(f"{folder} is a file, not a run folder; pass the --out folder of `pixcore train` or "
                           "`pixcore demo`")
    if not (folder / LOG_FILE).is_file():
        present = sorted(p.name for p in folder.iterdir())[:12]
        found = ", ".join(present) if present else "nothing"
        raise PixcoreError(
            f"{folder} is not a pixcore run folder: {LOG_FILE} is missing (it holds: {found}). A run folder is "
            "the --out folder of `pixcore train` or `pixcore demo`, with log.jsonl, log.csv, run.jsonl, eval/ "
            "and checkpoint.safetensors."
        )


def _is_step(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of ``path``, and how many lines were not one (a line cut by a kill)."""
    records: list[dict[str, Any]] = []
    skipped = 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PixcoreError(f"cannot read {path}: {error}") from None
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def _read_run_file(data: RunData) -> None:
    path = data.folder / RUN_FILE
    if not path.is_file():
        data.notes.append(f"{RUN_FILE} is missing (a run written by an older pixcore): no versions or device; "
                          "the timing comes from the log.")
        return
    records, skipped = _read_jsonl(path)
    if skipped:
        data.notes.append(f"{RUN_FILE}: {skipped} unreadable line(s) skipped.")
    for record in records:
        if record.get("kind") == "start":
            data.segments.append((record, None))
        elif record.get("kind") == "end" and data.segments and data.segments[-1][1] is None:
            data.segments[-1] = (data.segments[-1][0], record)
    for start, _ in reversed(data.segments):
        if isinstance(start.get("config"), dict):
            data.config = start["config"]
            break


def _read_latest_snapshot(data: RunData) -> None:
    found = snapshot_paths(data.folder)
    if not found:
        if data.evaluations:
            data.notes.append(f"{EVAL_DIR}/ holds no evaluation snapshot (a run written by an older pixcore): no "
                              "confusion matrix, error maps or sample grids.")
        else:
            data.notes.append("no evaluation yet: the report shows the training curves only.")
        return
    data.snapshot = read_snapshot(found[-1][1])


def _checkpoint_config(data: RunData) -> dict[str, Any] | None:
    path = data.folder / CHECKPOINT_FILE
    if not path.is_file():
        return None
    from pixcore.train._checkpoint import CheckpointError, read_metadata

    try:
        config = read_metadata(path).get("config")
    except CheckpointError as error:
        data.notes.append(f"the config could not be read from {CHECKPOINT_FILE}: {error}")
        return None
    return config if isinstance(config, dict) else None
