"""The files a run keeps for its report, by name and layout; numpy only (no torch).

``pixcore.train._record`` writes them during training, ``pixcore.report`` reads them, so
that drawing a report does not import torch:

* ``<run>/run.jsonl``: ``{"kind": "start", ...}`` and ``{"kind": "end", ...}`` per ``fit``;
* ``<run>/eval/step_<step, 7 digits>.npz``: one evaluation snapshot (see
  :class:`pixcore.train._record.EvaluationSnapshot` for its arrays), its ``meta`` a JSON string.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixcore._errors import PixcoreError

__all__ = ["EVAL_DIR", "RUN_FILE", "SNAPSHOT_FORMAT", "Snapshot", "read_snapshot", "snapshot_path", "snapshot_paths"]

#: The folder of the evaluation snapshots, inside the run folder.
EVAL_DIR = "eval"
#: The run's record of starts and ends, inside the run folder.
RUN_FILE = "run.jsonl"
#: Version of the snapshot layout, stored in every file.
SNAPSHOT_FORMAT = 1

_STEP_FILE = re.compile(r"^step_(\d+)\.npz$")


def snapshot_path(out_dir: Path, step: int) -> Path:
    """``<out_dir>/eval/step_<step, 7 digits>.npz``."""
    return out_dir / EVAL_DIR / f"step_{step:07d}.npz"


def snapshot_paths(out_dir: str | Path) -> list[tuple[int, Path]]:
    """The snapshots of a run folder as ``(step, path)``, by step."""
    folder = Path(out_dir) / EVAL_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(found)


@dataclass(frozen=True)
class Snapshot:
    """One evaluation's snapshot as read back: ``meta`` (step, tasks...) and its arrays."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return dict(self.meta.get("tasks", {}))

    def get(self, task: str, key: str) -> np.ndarray | None:
        """The array ``<task>/<key>``, or None."""
        return self.arrays.get(f"{task}/{key}")


def read_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot written by :meth:`EvaluationSnapshot.save`; a damaged file is a PixcoreError."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays.pop("meta")))
        int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        raise PixcoreError(
            f"{path} is not a readable evaluation snapshot ({type(error).__name__}: {error}); a process killed "
            "while writing it, or a copy cut short. Delete it: the report then draws the evaluation before it."
        ) from None
    return Snapshot(path, meta, arrays)
