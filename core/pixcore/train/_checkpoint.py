"""Checkpoints: one safetensors file, written atomically, loaded without unpickling.

Layout of ``*.safetensors``:

* ``model.<name>``: the model's state dict (the weights a user wants);
* ``optim.<param id>.<key>``: optimiser state tensors (AdamW moments, step counts);
* ``ema.<name>``: the moving average of the weights, when the run keeps one (the
  ``state_dict`` of ``torch.optim.swa_utils.AveragedModel``: ``ema.n_averaged`` and
  ``ema.module.<name of the model's weight>``);
* ``rng.torch`` (and ``rng.cuda.<i>``): random generator states of the writing process
  (rank 0); ``rng.rank<r>.torch`` (and ``rng.rank<r>.cuda.<i>``) those of rank ``r`` of a
  distributed run;
* header metadata ``pixcore``: JSON with the run config, step, optimiser param groups,
  scheduler state, the fp16 gradient scaler's state (``grad_scaler``) and the
  Python/numpy RNG states (``rng``, with ``rng.ranks`` for ranks 1 and up).

Nothing is pickled, so loading a checkpoint from an untrusted source cannot run code.
Writes go to a temporary file in the same folder (``.<name>.tmp-<host>-<pid>``), are
fsync'ed, then renamed over the target: a process killed at any moment leaves either
the previous or the new checkpoint, complete. Only the target name is ever read; a
temporary file left by a killed process is removed by the next save to the same path.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from pixcore._errors import PixcoreError

__all__ = [
    "CheckpointError",
    "LoadReport",
    "RngState",
    "load_checkpoint",
    "read_metadata",
    "read_rng_state",
    "save_checkpoint",
]

FORMAT_VERSION = 1


class CheckpointError(PixcoreError):
    """A checkpoint file is missing, damaged, or does not fit the model."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: keys it could not match, and the run metadata."""

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RngState:
    """The random generators of one process: torch (CPU and CUDA), numpy and Python.

    Data augmentation does not depend on them (it is seeded per sample); what does is
    everything random in the main process: dropout, stochastic depth, random crops drawn
    in a training step. Restoring them makes a resumed run draw the same numbers.
    """

    torch: torch.Tensor
    cuda: list[torch.Tensor]
    numpy: list[Any]
    python: list[Any]

    @classmethod
    def capture(cls) -> RngState:
        """The current process's generator states."""
        cuda: list[torch.Tensor] = []
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = list(torch.cuda.get_rng_state_all())
        kind, keys, *rest = np.random.get_state()
        version, internal, gauss = random.getstate()
        return cls(torch.get_rng_state(), cuda, [kind, keys.tolist(), *rest], [version, list(internal), gauss])

    def restore(self) -> None:
        """Make the current process's generators continue from this state."""
        torch.set_rng_state(self.torch.to("cpu"))
        if self.cuda and torch.cuda.is_available():
            if len(self.cuda) != torch.cuda.device_count():
                raise CheckpointError(
                    f"the checkpoint holds the random state of {len(self.cuda)} CUDA devices but "
                    f"{torch.cuda.device_count()} are visible; make the same devices visible "
                    "(CUDA_VISIBLE_DEVICES) to resume exactly"
                )
            torch.cuda.set_rng_state_all([s.to("cpu") for s in self.cuda])
        kind, keys, *rest = self.numpy
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        version, internal, gauss = self.python
        random.setstate((version, tuple(internal), gauss))


def _temporary_name(path: Path) -> Path:
    # Host and pid make the name unique per writer and tell which writer is gone.
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of ``path`` left by writers on this host that no longer run."""
    prefix = f".{path.name}.tmp-{socket.gethostname()}-"
    for candidate in path.parent.glob(f".{path.name}.tmp-*"):
        if not candidate.name.startswith(prefix):
            continue  # another host's writer: its process cannot be checked from here
        pid_text = candidate.name[len(prefix):]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            candidate.unlink(missing_ok=True)
        except PermissionError:
            continue  # alive, owned by someone else


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
    rng: bool | Sequence[RngState] = True,
    ema: nn.Module | None = None,
) -> Path:
    """Write ``model`` (and optionally optimiser, scheduler, RNG states) to ``path``.

    ``rng``: True stores this process's generator states; a sequence stores one state per
    rank of a distributed run (index = rank); False stores none. ``ema``: a module whose
    state dict (the weights' moving average) is stored under ``ema.``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
    }
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().to("cpu").contiguous() for k, v in ema.state_dict().items()})
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
        state = scheduler.state_dict()
        if "lr_lambdas" in state:  # functions cannot be stored; the code rebuilds them
            state["lr_lambdas"] = [None] * len(state["lr_lambdas"])
        meta["scheduler"] = state
    states = ([RngState.capture()] if rng else []) if isinstance(rng, bool) else list(rng)
    for rank, rng_state in enumerate(states):
        prefix = "rng." if rank == 0 else f"rng.rank{rank}."
        tensors[f"{prefix}torch"] = rng_state.torch.to("cpu").contiguous()
        for i, cuda_state in enumerate(rng_state.cuda):
            tensors[f"{prefix}cuda.{i}"] = cuda_state.to("cpu").contiguous()
    if states:
        meta["rng"] = {"python": states[0].python, "numpy": states[0].numpy}
        if len(states) > 1:
            meta["rng"]["ranks"] = [{"python": s.python, "numpy": s.numpy} for s in states[1:]]
    header = {"pixcore": json.dumps(meta, default=_json_default)}
    _remove_stale_temporaries(path)
    tmp = _temporary_name(path)
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
    rank: int = 0,
    map_location: str | torch.device = "cpu",
    ema: nn.Module | None = None,
    use_ema: bool = False,
) -> LoadReport:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    With ``strict`` a key mismatch raises :class:`CheckpointError` listing the keys;
    without it the mismatch is returned in the :class:`LoadReport`. ``restore_rng``
    restores the random generator states stored for ``rank``. ``ema`` receives the stored
    moving average (the module given to :func:`save_checkpoint`); ``use_ema`` loads the
    moving average of the weights into ``model`` instead of the trained weights (for
    evaluation and inference of a run with ``trainer.ema_decay``).
    """
    path = Path(path)
    meta = read_metadata(path)
    report = LoadReport(metadata=meta)
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "rng": {}, "ema": {}}
    with safe_open(str(path), framework="pt", device=str(map_location)) as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            prefix, _, rest = key.partition(".")
            groups.setdefault(prefix, {})[rest] = handle.get_tensor(key)
    if (ema is not None or use_ema) and not groups["ema"]:
        raise CheckpointError(
            f"checkpoint {path} holds no moving average of the weights (it was written by a run "
            "without trainer.ema_decay); load its trained weights instead (use_ema=False)"
        )
    if ema is not None:
        result = ema.load_state_dict(groups["ema"], strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"the moving average in {path} does not fit the model: missing keys "
                f"{list(result.missing_keys)[:10]}, unexpected keys {list(result.unexpected_keys)[:10]}"
            )
    if model is not None:
        weights = groups["model"]
        if use_ema:
            weights = {k[len("module."):]: v for k, v in groups["ema"].items() if k.startswith("module.")}
        result = model.load_state_dict(weights, strict=False)
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
        state = dict(meta["scheduler"])
        if hasattr(scheduler, "lr_lambdas"):  # LambdaLR expects the key, even if all None
            state.setdefault("lr_lambdas", [None] * len(scheduler.lr_lambdas))
        scheduler.load_state_dict(state)
    if restore_rng:
        _rng_state(path, meta, groups["rng"], rank).restore()
    return report


def _rng_state(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor], rank: int) -> RngState:
    prefix = "" if rank == 0 else f"rank{rank}."
    ranks = meta.get("rng", {}).get("ranks", [])
    if f"{prefix}torch" not in tensors or "rng" not in meta or (rank > 0 and rank > len(ranks)):
        raise CheckpointError(
            f"checkpoint {path} holds no random generator state for rank {rank}; it was written "
            "without RNG state or by a run with fewer processes. Resume with the same number of "
            "processes, or load only the weights."
        )
    cuda = sorted((k for k in tensors if k.startswith(f"{prefix}cuda.")),
                  key=lambda k: int(k.rsplit(".", 1)[1]))
    host = meta["rng"] if rank == 0 else ranks[rank - 1]
    return RngState(tensors[f"{prefix}torch"], [tensors[k] for k in cuda], host["numpy"], host["python"])


def read_rng_state(path: str | Path, rank: int = 0) -> RngState:
    """The random generator states stored for ``rank`` (see :class:`RngState`)."""
    path = Path(path)
    meta = read_metadata(path)
    with safe_open(str(path), framework="pt") as handle:
        names = [k for k in handle.keys() if k.startswith("rng.")]  # noqa: SIM118
        tensors = {k[len("rng."):]: handle.get_tensor(k) for k in names}
    return _rng_state(path, meta, tensors, rank)
