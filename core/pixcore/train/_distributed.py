"""Devices and distributed data parallel (DDP) set-up from torchrun's environment.

``torchrun --nproc_per_node N ...`` starts N processes and gives each ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. When those are
present (and the world has more than one process), :func:`init_distributed` joins the
process group (NCCL on CUDA, gloo on CPU) and gives each process its own device
(``cuda:LOCAL_RANK``). Without them everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pixcore._errors import PixcoreError

__all__ = [
    "DistributedInfo",
    "all_reduce_mean",
    "any_across_ranks",
    "barrier",
    "current_distributed",
    "gather_objects",
    "init_distributed",
    "select_device",
]


@dataclass(frozen=True)
class DistributedInfo:
    """The current process's place in the job: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True when gradients are averaged across more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs and checkpoints; the others wait for it."""
        return self.rank == 0


def select_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU; otherwise ``name`` as given.

    Raises :class:`~pixcore.DeviceError` for a name that is not a device (``"gpu0"``; the
    forms are those of ``trainer.device``) and for a device this machine does not have.
    """
    from pixcore._config import check_device
    from pixcore._errors import DeviceError

    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if check_device(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
        raise DeviceError(
            f"device {name!r} was asked for but CUDA is not available here (PyTorch "
            f"{torch.__version__} with {build}; no GPU is visible to it); use 'auto' or 'cpu'"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise DeviceError(
            f"device {name!r} was asked for but {count} CUDA device(s) are visible (cuda:0 to "
            f"cuda:{count - 1}); choose one of those, 'cuda', or check CUDA_VISIBLE_DEVICES"
        )
    if device.type == "mps" and not mps:
        raise DeviceError(
            f"device {name!r} was asked for but Apple MPS is not available here; use 'auto' or 'cpu'"
        )
    return device


def _launched_world_size() -> int:
    """The world size torchrun announced, or 1 when this process was not started by it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 1
    try:
        return int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise PixcoreError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; start the run with torchrun, "
            "which sets RANK, LOCAL_RANK and WORLD_SIZE"
        ) from None


def current_distributed() -> DistributedInfo:
    """The process group this process belongs to (rank 0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistributedInfo(dist.get_rank(), local_rank, dist.get_world_size())
    return DistributedInfo()


def _distributed_device(name: str, local_rank: int) -> torch.device:
    # Each process owns one accelerator: cuda:LOCAL_RANK. An explicit index is respected.
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if name == "auto":
        return torch.device("cpu")
    device = select_device(name)
    if device.type not in ("cuda", "cpu"):
        raise PixcoreError(
            f"trainer.device={name!r} cannot be used with several processes: distributed training "
            "runs on CUDA (NCCL) or on CPU (gloo). Set trainer.device to 'auto', 'cuda' or 'cpu'."
        )
    return device


def init_distributed(device: str = "auto") -> tuple[DistributedInfo, torch.device]:
    """Join the process group that torchrun describes, if any, and pick this process's device.

    Safe to call more than once: an initialised group is reused (a script may create its
    own before building the trainer). Returns the rank information and the device.
    """
    if dist.is_available() and dist.is_initialized():
        info = current_distributed()
        if info.world_size == 1:
            return info, select_device(device)
        return info, _distributed_device(device, info.local_rank)
    world_size = _launched_world_size()
    if world_size <= 1:
        return DistributedInfo(), select_device(device)
    if not dist.is_available():
        raise PixcoreError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    target = _distributed_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)  # NCCL uses the current device of each process
    backend = "nccl" if target.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    return DistributedInfo(rank, local_rank, world_size), target


def barrier(info: DistributedInfo, device: torch.device) -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if not info.enabled:
        return
    if dist.get_backend() == "nccl" and device.type == "cuda":
        dist.barrier(device_ids=[device.index if device.index is not None else torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor, info: DistributedInfo) -> torch.Tensor:
    """The mean of ``values`` over all processes (``values`` itself in a single process)."""
    if not info.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / info.world_size


def any_across_ranks(flags: torch.Tensor, info: DistributedInfo) -> list[bool]:
    """Element-wise "true on any process" of a small boolean vector (one collective, one sync)."""
    if info.enabled:
        flags = flags.to(torch.int32)  # NCCL and gloo reduce integers, not booleans
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [bool(v) for v in flags.tolist()]


def gather_objects(value: Any, info: DistributedInfo) -> list[Any]:
    """``value`` from every process, in rank order (``[value]`` in a single process)."""
    if not info.enabled:
        return [value]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, value)
    return gathered
