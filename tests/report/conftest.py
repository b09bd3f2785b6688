"""A tiny real run for the report tests: the demo's model and tasks (segmentation, depth,
normals, with the installed plugins) trained for two steps on small synthetic scenes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch
from pixcore._cli import _demo_config_path
from pixcore._config import load_config
from pixcore.train import train

#: The demo, small: 40 x 48 scenes, four validation samples, an evaluation at each step.
TINY = [
    "data.train.params.height=40", "data.train.params.width=48",
    "data.val.params.height=40", "data.val.params.width=48", "data.val.params.length=4",
    "data.batch_size=4", "data.num_workers=0", "data.augmentations=[]",
    "trainer.progress=false", "trainer.log_every=1", "trainer.eval_every=1", "trainer.steps=2",
    "trainer.device=cpu",
]


def tiny_run(folder: Path, overrides: Sequence[str] = ()) -> Path:
    """Train the tiny demo into ``folder`` (with extra ``overrides``) and return it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest on one thread, on a busy machine too
    try:
        train(load_config(_demo_config_path(), [*TINY, *overrides]), out_dir=folder)
    finally:
        torch.set_num_threads(threads)
    return folder


@pytest.fixture
def make_run() -> Callable[..., Path]:
    """``make_run(folder, overrides)``: :func:`tiny_run` (tests cannot import this conftest)."""
    return tiny_run


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished run with segmentation, depth and normals (no report written yet)."""
    yield tiny_run(tmp_path_factory.mktemp("multitask"))
