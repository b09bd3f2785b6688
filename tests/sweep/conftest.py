"""A tiny two-task run config for the sweep tests, and member processes on one thread.

Members are real ``pixcore train`` subprocesses with the installed plugins (timm's
``test_resnet`` backbone, segmentation and depth at 32x32), a few seconds each, most of it
Python starting and importing torch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: 40 steps: long enough that a test can stop a member between its checkpoints.
TINY_RUN = """\
model:
  backbone: timm/test_resnet
  tasks:
    semseg: {task: segmentation, params: {num_classes: 7}, head: {name: fpn, params: {channels: 8}}}
    depth: {head: {name: fpn, params: {channels: 8}}}
data:
  train: {name: synthetic, params: {length: 16, height: 32, width: 32}}
  val: {name: synthetic, params: {split: val, length: 4, height: 32, width: 32}}
  batch_size: 2
trainer: {steps: 40, progress: false, device: cpu, log_every: 1, checkpoint_every: 4, eval_every: null}
"""


@pytest.fixture(scope="session")
def tiny_run() -> str:
    """The text of the tiny run config (for module-scoped fixtures)."""
    return TINY_RUN


@pytest.fixture
def tiny_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny run config in a fresh folder; members inherit one thread each."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tmp_path / "run.yaml"
    path.write_text(TINY_RUN)
    return path
