"""Random batches for a task, derived from the task's target kind."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pixcore._interfaces import Sample, Task
from pixcore._targets import DEFAULT_IGNORE_INDEX, ClassMask, ScalarField, UnitVectorField

__all__ = ["RandomBatch", "make_batch", "random_batch", "replace_invalid"]


@dataclass
class RandomBatch:
    """A random batch and the parts the contract checks need.

    Attributes:
        batch: The batch as a model sees it: ``"image"`` (uint8), the task's target key
            and a validity key (the task's ``valid_key``, or ``"valid"``).
        target: The task's target, ``[B, H, W]`` (class masks) or ``[B, C, H, W]``.
        valid: Boolean ``[B, H, W]``, False on the invalid pixels. For class masks the
            same pixels also hold the ignore index.

    """

    batch: Sample
    target: Tensor
    valid: Tensor


def _num_classes(task: Task) -> int:
    return int(task.context().get("num_classes", task.out_channels))


def random_batch(
    task: Task,
    *,
    batch_size: int = 2,
    size: tuple[int, int] = (61, 83),
    invalid_fraction: float = 0.25,
    generator: torch.Generator | None = None,
) -> RandomBatch:
    """A random batch for ``task``, with about ``invalid_fraction`` invalid pixels.

    Targets follow the task's ``target_kind`` the way real data sets store them:

    * :class:`~pixcore.targets.ClassMask`: uniform class ids in ``[0, num_classes)``
      (``num_classes`` from ``task.context()``, else ``out_channels``), the ignore index
      on invalid pixels;
    * :class:`~pixcore.targets.ScalarField`: uniform in ``[0.5, 10)``, zero on invalid
      pixels (as depth sensors store "no return");
    * :class:`~pixcore.targets.UnitVectorField`: random unit vectors facing the camera
      (negative z), zero on invalid pixels.

    Other kinds raise ``TypeError``: pass your own batch factory to
    :func:`pixcore.testing.check_task` (``make_batch=...``).
    """
    if not 0.0 <= invalid_fraction <= 1.0:
        raise ValueError(f"invalid_fraction must be in [0, 1], got {invalid_fraction}")
    height, width = size
    shape = (batch_size, height, width)
    g = generator
    image = torch.randint(0, 256, (batch_size, 3, height, width), dtype=torch.uint8, generator=g)
    valid = torch.rand(shape, generator=g) >= invalid_fraction
    kind = task.target_kind
    target: Tensor
    if issubclass(kind, ClassMask):
        ignore = int(task.context().get("ignore_index", DEFAULT_IGNORE_INDEX))
        target = torch.randint(0, _num_classes(task), shape, generator=g)
        target = torch.where(valid, target, torch.full_like(target, ignore))
    elif issubclass(kind, ScalarField):
        target = 0.5 + 9.5 * torch.rand(batch_size, 1, height, width, generator=g)
        target = target * valid.unsqueeze(1)
    elif issubclass(kind, UnitVectorField):
        target = torch.randn(batch_size, 3, height, width, generator=g)
        target[:, 2] = -target[:, 2].abs() - 0.1
        target = target / target.norm(dim=1, keepdim=True)
        target = target * valid.unsqueeze(1)
    else:
        raise TypeError(
            f"pixcore.testing cannot invent targets of kind {kind.__name__} for task "
            f"{type(task).__name__}; pass make_batch=<callable(task, generator) -> RandomBatch> "
            "to check_task"
        )
    valid_key = task.valid_key or "valid"
    batch: Sample = {"image": image, task.target_key: target, valid_key: valid}
    return RandomBatch(batch=batch, target=target, valid=valid)


def make_batch(
    task: Task,
    *,
    batch_size: int = 2,
    size: tuple[int, int] = (61, 83),
    invalid_fraction: float = 0.25,
    generator: torch.Generator | None = None,
) -> Sample:
    """A random batch dict for ``task`` (see :func:`random_batch` for the targets).

    Example::

        task = pixcore.registry("tasks").create("depth")
        batch = make_batch(task, size=(32, 48))
        target, valid = task.target_and_valid(batch)
    """
    return random_batch(
        task, batch_size=batch_size, size=size, invalid_fraction=invalid_fraction,
        generator=generator,
    ).batch


def replace_invalid(value: Tensor, other: Tensor | float, valid: Tensor) -> Tensor:
    """``value`` with its invalid pixels taken from ``other`` (a tensor or a constant).

    ``valid`` is ``[B, H, W]``; ``value`` is ``[B, H, W]`` or ``[B, C, H, W]``. Used to
    check that invalid pixels have no influence on a loss or a metric.
    """
    mask = valid if value.ndim == valid.ndim else valid.unsqueeze(1)
    if not isinstance(other, Tensor):
        other = torch.full_like(value, other)
    return torch.where(mask, value, other.to(value.dtype))
