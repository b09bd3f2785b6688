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
fsync'ed, then renamed over the target: a process killed at any moment, or a full disk,
leaves either the previous or the new checkpoint, complete. Only the target name is ever
read; a temporary file left by a killed process is removed by the next save to the same
path. The file gets the permissions of any new file (``0o666`` less the umask).

A file that cannot be read is described by what it is (empty, truncated, a torch
checkpoint, not safetensors at all) rather than by the safetensors parser's error.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import random
import re
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from pixcore._errors import CheckpointError

__all__ = [
    "CheckpointError",
    "LoadReport",
    "RngState",
    "describe_damage",
    "load_checkpoint",
    "read_metadata",
    "read_rng_state",
    "save_checkpoint",
]

FORMAT_VERSION = 1

#: safetensors refuses a header larger than this (its MAX_HEADER_SIZE).
MAX_HEADER_BYTES = 100_000_000


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

    torch: Tensor
    cuda: list[Tensor]
    numpy: list[Any]
    python: list[Any]

    @classmethod
    def capture(cls) -> RngState:
        """The current process's generator states."""
        cuda: list[torch.Tensor] = []
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = list(torch.cuda.get_rng_state_all())
        # The legacy global generator is always MT19937, whose state is the legacy tuple.
        legacy = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
        kind, keys, *rest = legacy
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
    _write_atomically(path, tensors, header)
    return path


@functools.cache
def _umask() -> int:
    """The process's umask. Reading it means setting it, so it is read once and put back."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
    """Write a temporary file, give it the usual permissions, sync it, rename it to ``path``."""
    tmp = _temporary_name(path)
    try:
        save_file(tensors, str(tmp), metadata=header)
        # safetensors writes through a temporary file of its own, created 0600. Best effort:
        # some network file systems refuse chmod, and a checkpoint matters more than its mode.
        with contextlib.suppress(PermissionError, NotImplementedError):
            os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as handle:  # data must be on disk before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, SafetensorError) as error:
        code = _os_error_code(error)
        if code is None:
            raise  # a safetensors error that is not about the disk: a bug, not the user's
        reason = os.strerror(code) if code else str(error)
        raise _write_failed(path, code, reason, sum(t.nbytes for t in tensors.values())) from error
    finally:
        if tmp.exists():
            tmp.unlink()


def _os_error_code(error: BaseException) -> int | None:
    """The errno of an OSError, or of the I/O error a SafetensorError reports in its text."""
    if isinstance(error, OSError):
        return error.errno if error.errno is not None else 0
    match = re.search(r"os error (\d+)", str(error))
    return int(match.group(1)) if match else None


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size < 1e8 else f"{size / 1e6:,.0f} MB"


def _write_failed(path: Path, code: int, reason: str, size: int) -> CheckpointError:
    try:
        free = f"{_megabytes(shutil.disk_usage(path.parent).free)} are free on that disk and "
    except OSError:
        free = ""
    full = code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    fix = "Free disk space" if full else "Make the folder writable"
    needs = f"{free}the checkpoint needs about {_megabytes(size)}"
    return CheckpointError(
        f"cannot write the checkpoint {path}: {reason}. {needs[0].upper()}{needs[1:]}. The "
        f"previous checkpoint at that path, if any, is unchanged. {fix}, or write the run to "
        "another folder (--out)."
    )


def _first_bytes(path: Path, count: int = 8) -> bytes:
    with path.open("rb") as handle:
        return handle.read(count)


def _is_torch_file(head: bytes) -> bool:
    """torch.save's format: a zip archive (``PK``), or before torch 1.6 a pickle (``\\x80``)."""
    return head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _header_damage(path: Path, size: int, header_bytes: int) -> str | None:
    """What is wrong with a safetensors header that says it is ``header_bytes`` long."""
    if header_bytes > MAX_HEADER_BYTES:
        return (
            f"is not a safetensors file: its first 8 bytes, a safetensors file's header size, say "
            f"{header_bytes} bytes, more than safetensors allows ({MAX_HEADER_BYTES}); it holds "
            "other data, or is damaged"
        )
    if 8 + header_bytes > size:
        return f"is truncated: {size} bytes, but its header alone needs {8 + header_bytes}"
    with path.open("rb") as handle:
        handle.seek(8)
        header = handle.read(header_bytes)
    try:
        entries = json.loads(header)
        end = max((v["data_offsets"][1] for k, v in entries.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "is damaged: it does not start with the JSON header of a safetensors file"
    if 8 + header_bytes + end > size:
        return f"is truncated: {size} bytes of the {8 + header_bytes + end} its header describes"
    return None


def describe_damage(path: str | Path) -> str | None:
    """Why ``path`` is not a readable safetensors file, told from its bytes; None if it looks whole.

    The answer completes a sentence that starts with the path: "is empty (0 bytes)", "is
    truncated: ...", "is a torch checkpoint ...", "is not a safetensors file: ...".
    """
    path = Path(path)
    try:
        if path.is_dir():
            return "is a folder, not a file"
        size = path.stat().st_size
        head = _first_bytes(path)
        if size == 0:
            return "is empty (0 bytes): it was never written completely"
        if _is_torch_file(head):
            return "is a torch checkpoint (written by torch.save), not a safetensors file"
        if size < 8:
            return f"is truncated: {size} bytes, fewer than the 8 that start every safetensors file"
        return _header_damage(path, size, int.from_bytes(head, "little"))
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"


def _unreadable_checkpoint(path: Path, error: Exception) -> CheckpointError:
    inside = path / "checkpoint.safetensors"
    if path.is_dir() and inside.is_file():
        return CheckpointError(f"{path} is a folder, not a checkpoint file; did you mean {inside}?")
    if path.is_file() and _is_torch_file(_first_bytes(path)):
        return CheckpointError(
            f"{path} is a torch checkpoint (.pt), not a pixcore checkpoint (.safetensors). To start "
            f"training from its weights, use model.pretrained: {path} in the run config"
        )
    damage = describe_damage(path) or f"is not a readable safetensors file ({error})"
    return CheckpointError(
        f"{path} {damage}, so it is not a usable pixcore checkpoint. Give the "
        "checkpoint.safetensors that `pixcore train` wrote into its --out folder (it is written "
        "whole or not at all); if this file is a copy, copy it again"
    )


def _parse_metadata(path: Path, text: str) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except ValueError as error:
        raise CheckpointError(
            f"{path}: its pixcore metadata (the header entry 'pixcore') is not valid JSON "
            f"({error}); the file was changed after pixcore wrote it. Use another checkpoint of the run"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{path}: its pixcore metadata is a JSON {type(meta).__name__}, not an object of run "
            "information; the file was changed after pixcore wrote it. Use another checkpoint of the run"
        )
    return meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (config, step, ...) without loading tensors."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as error:
        raise _unreadable_checkpoint(path, error) from None
    if "pixcore" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a pixcore checkpoint")
    return _parse_metadata(path, header["pixcore"])


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
        scheduler_state = dict(meta["scheduler"])
        if hasattr(scheduler, "lr_lambdas"):  # LambdaLR expects the key, even if all None
            scheduler_state.setdefault("lr_lambdas", [None] * len(scheduler.lr_lambdas))
        scheduler.load_state_dict(scheduler_state)
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
