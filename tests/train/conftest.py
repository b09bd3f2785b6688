"""Makes ``train_toy`` (the toy plugin and run config of these tests) importable; one thread.

Tests run with ``--import-mode=importlib``, which puts no test folder on ``sys.path``;
subprocess tests run ``train_toy.py`` as a script, whose folder Python adds itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; on a busy machine two threads wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
