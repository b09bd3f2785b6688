"""Checkpoints: one safetensors file, written atomically, loaded without unpickling.

Layout of ``*.safetensors``:

* ``model.<name>``: the model's state dict (the weights a user wants);
* ``optim.<param id>.<key>``: optimiser state tensors (AdamW moments, step counts);
* ``rng.torch`` (and ``rng.cuda.<i>``): random generator states;
* header metadata ``pixcore``: JSON with the run config, step, optimiser param groups,
  scheduler state and the Python/numpy RNG states.

Nothing is pickled, so loading a checkpoint from an untrusted source cannot run code.
Writes go to a temporary file in the same folder, are fsync'ed, then renamed over the
target: a process killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from pixcore._errors import PixcoreError

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "read_metadata", "save_checkpoint"]

FORMAT_VERSION = 1


class CheckpointError(PixcoreError):
    """A checkpoint file is missing, damaged, or does not fit the model."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: keys it could not match, and the run metadata."""

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on every platform (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    scheduler: Any | None = None,
    metadata: dict[str, Any] | None = None,
    rng: bool = True,
) -> Path:
    """Write ``model`` (and optionally optimiser, scheduler, RNG states) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
    }
    meta: dict[str, Any] = {"format": FORMAT_VERSION, **(metadata or {})}
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, entries in state["state"].items():
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{pid}.{key}"] = value.detach().to("cpu").contiguous()
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        meta["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
    if scheduler is not None:
        meta["scheduler"] = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    if rng:
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        np_state = np.random.get_state()
        meta["rng"] = {
            "python": random.getstate(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
    header = {"pixcore": json.dumps(meta, default=_json_default)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=header)
        with open(tmp, "rb+") as handle:  # data must be on disk before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (config, step, ...) without loading tensors."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as error:
        raise CheckpointError(
            f"{path} is not a readable pixcore checkpoint (safetensors): {error}"
        ) from None
    if "pixcore" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a pixcore checkpoint")
    return json.loads(header["pixcore"])  # type: ignore[no-any-return]


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    scheduler: Any | None = None,
    strict: bool = True,
    restore_rng: bool = False,
    map_location: str | torch.device = "cpu",
) -> LoadReport:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    With ``strict`` a key mismatch raises :class:`CheckpointError` listing the keys;
    without it the mismatch is returned in the :class:`LoadReport`.
    """
    path = Path(path)
    meta = read_metadata(path)
    report = LoadReport(metadata=meta)
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "rng": {}}
    with safe_open(str(path), framework="pt", device=str(map_location)) as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            prefix, _, rest = key.partition(".")
            groups.setdefault(prefix, {})[rest] = handle.get_tensor(key)
    if model is not None:
        result = model.load_state_dict(groups["model"], strict=False)
        report.missing_keys, report.unexpected_keys = list(result.missing_keys), list(result.unexpected_keys)
        if strict and (report.missing_keys or report.unexpected_keys):
            raise CheckpointError(
                f"checkpoint {path} does not fit the model: missing keys "
                f"{report.missing_keys[:10]}, unexpected keys {report.unexpected_keys[:10]}. "
                "Build the model from the checkpoint's own config, or load with strict=False."
            )
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"checkpoint {path} holds no optimiser state")
        state: dict[int, dict[str, Any]] = {}
        for key, value in groups["optim"].items():
            pid, _, name = key.partition(".")
            state.setdefault(int(pid), {})[name] = value
        for pid, scalars in meta["optimizer"]["scalars"].items():
            state.setdefault(int(pid), {}).update(scalars)
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    if restore_rng:
        if "torch" in groups["rng"]:
            torch.set_rng_state(groups["rng"]["torch"].to("cpu"))
        if "rng" in meta:
            python_state = meta["rng"]["python"]
            random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
            kind, keys, *rest = meta["rng"]["numpy"]
            np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    return report
