"""The component interfaces: Backbone, Head, Loss, Metric, Dataset, Augmentation, Task,
TaskWeighting.

Each is small on purpose. A plugin implements one by subclassing it and registering a
factory for it (see :mod:`pixcore.hookspecs`); pixcore composes them into a model with
:func:`pixcore.build_model`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pixcore._errors import PixcoreError
from pixcore._targets import TargetKind

__all__ = [
    "Augmentation",
    "Backbone",
    "Dataset",
    "FeatureLevel",
    "Head",
    "Loss",
    "LossOutput",
    "Metric",
    "Sample",
    "Task",
    "TaskWeighting",
    "feature_level_groups",
]

#: A sample: named, typed tensors (see :mod:`pixcore.targets`). Batches use the same keys.
Sample = dict[str, Tensor]


# --------------------------------------------------------------------------------------
# Backbone and head
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureLevel:
    """One level of a backbone's feature pyramid: ``channels`` maps at ``1/stride`` size."""

    channels: int
    stride: int


class Backbone(nn.Module, abc.ABC):
    """Image ``[B, 3, H, W]`` -> list of feature maps, finest first.

    ``feature_info`` is the contract: level ``i`` has ``feature_info[i].channels``
    channels and spatial size ``ceil(H / feature_info[i].stride)`` for inputs whose
    size is a multiple of :attr:`stride` (the model pads other sizes; see
    :class:`pixcore.MultiTaskModel`). Contract tests in :mod:`pixcore.testing` check it.
    """

    feature_info: list[FeatureLevel]

    #: Whether ``pixcore export --dynamic`` can give this backbone symbolic heights and
    #: widths. A backbone whose forward fixes sizes while tracing (shapes from Python
    #: arithmetic on the input size that the exporter specialises) sets False, with the
    #: reason in :attr:`fixed_export_reason`; it is then exported at one size.
    dynamic_export: bool = True
    fixed_export_reason: str = ""

    @property
    def stride(self) -> int:
        """The coarsest stride: input sizes are padded up to a multiple of it."""
        return max(level.stride for level in self.feature_info)

    @abc.abstractmethod
    def forward(self, x: Tensor) -> list[Tensor]:
        """Return one feature map per entry of ``feature_info``, in the same order."""

    def layer_groups(self) -> list[list[str]]:
        """The parameter names grouped into layers, shallow (stem) to deep.

        Layer-wise learning-rate decay (``trainer.layer_decay``) trains group ``i`` of
        ``K`` at ``layer_decay ** (K - i)`` times the heads' rate. Names are those of
        ``self.named_parameters()``; every trainable parameter must be in exactly one
        group, frozen ones may be left out, and groups without a trainable parameter are
        dropped. Default: by feature level (:func:`feature_level_groups`). Override it for
        finer groups, one per block (``timm/*`` backbones use timm's ``group_matcher``),
        and fall back on ``super().layer_groups()``.
        """
        return feature_level_groups(self)


def feature_level_groups(backbone: nn.Module) -> list[list[str]]:
    """Trainable parameter names grouped by the first (finest) feature level that uses them.

    Found with one forward pass of a small zero image in eval mode and one
    ``autograd.grad`` per level (structure only: values do not matter, nothing random is
    drawn, and the module's mode is restored). Parameters that no level depends on join
    the last level. Levels without a parameter are left out.
    """
    params = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
    if not params:
        return []
    levels = _first_levels(backbone, params)
    groups: dict[int, list[str]] = {}
    for name, _ in params:
        groups.setdefault(levels[name], []).append(name)
    return [groups[level] for level in sorted(groups)]


def _first_levels(backbone: nn.Module, params: list[tuple[str, nn.Parameter]]) -> dict[str, int]:
    """Parameter name -> index of the first feature map that depends on it."""
    what = type(backbone).__name__
    feature_info = getattr(backbone, "feature_info", None)
    if not feature_info:
        raise PixcoreError(
            f"trainer.layer_decay cannot group the parameters of {what}: it has no feature_info "
            "to group them by feature level. Give it a layer_groups() method (see "
            "pixcore.Backbone.layer_groups), or remove trainer.layer_decay."
        )
    stride = max(int(level.stride) for level in feature_info)
    size = max(32, 2 * stride)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.enable_grad():
            features = backbone(torch.zeros(1, 3, size, size, device=params[0][1].device))
            tensors = [p for _, p in params]
            levels = {name: len(features) - 1 for name, _ in params}
            for level in reversed(range(len(features))):
                grads = torch.autograd.grad(features[level].sum(), tensors, allow_unused=True,
                                            retain_graph=level > 0)
                for (name, _), grad in zip(params, grads, strict=True):
                    if grad is not None:
                        levels[name] = level
    except Exception as error:
        raise PixcoreError(
            f"trainer.layer_decay: grouping the parameters of {what} by feature level needs a "
            f"forward pass of a {size}x{size} image, which failed ({type(error).__name__}: "
            f"{error}). Give {what} a layer_groups() method, or remove trainer.layer_decay."
        ) from error
    finally:
        backbone.train(was_training)
    return levels


class Head(nn.Module, abc.ABC):
    """Backbone features -> raw per-pixel output ``[B, out_channels, H, W]`` at input size.

    A head factory receives two context arguments from pixcore, ``in_features``
    (the backbone's ``feature_info``) and ``out_channels`` (asked for by the task),
    plus its own validated parameters.

    When every level of the backbone shares one stride (a plain ViT), pixcore gives a
    head ViTDet's simple feature pyramid (strides 4 to 32 for 16-pixel patches; see
    :class:`pixcore.model.SimplePyramid`) instead, unless the head class sets
    :attr:`accepts_single_stride`.
    """

    #: True: the head takes levels that share one stride as they are (DPT resamples them
    #: itself, a linear probe reads them directly); False: it gets a simple pyramid.
    accepts_single_stride: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Return ``[B, out_channels, *size]``; ``size`` is the (padded) input size."""


# --------------------------------------------------------------------------------------
# Loss and metric
# --------------------------------------------------------------------------------------


@dataclass
class LossOutput:
    """A scalar to minimise plus its named parts (for logging; detached by the trainer)."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


class Loss(nn.Module, abc.ABC):
    """``(prediction, target, valid) -> LossOutput``.

    ``prediction`` is the task's decoded output (logits for segmentation, positive depth,
    unit normals); ``valid`` is a boolean ``[B, H, W]`` mask, True where the target is
    defined. A loss averages over valid pixels only and returns zero (with a gradient
    path) when there are none.
    """

    @abc.abstractmethod
    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> LossOutput: ...


class Metric(abc.ABC):
    """A streaming metric: ``update`` per batch, ``compute`` at the end, ``reset`` between.

    State lives in tensors declared with :meth:`add_state` and is *summed* across
    processes in :meth:`compute` when ``torch.distributed`` is initialised, so a metric
    only has to express itself as sums (confusion matrices, error sums, counts).
    """

    #: Name of the exact protocol a result follows, recorded with every result.
    protocol: ClassVar[str] = ""
    #: Direction of each result key: True where higher is better (``miou``), False where
    #: lower is (``abs_rel``). Multi-task summaries such as delta-m read it; keys left
    #: out are not summarised.
    higher_is_better: ClassVar[Mapping[str, bool]] = {}

    def __init__(self) -> None:
        self._defaults: dict[str, Tensor] = {}
        self._state: dict[str, Tensor] = {}

    def add_state(self, name: str, default: Tensor) -> None:
        """Declare a summable state tensor, reset to ``default``."""
        self._defaults[name] = default.clone()
        self._state[name] = default.clone()

    @property
    def state(self) -> dict[str, Tensor]:
        return self._state

    def reset(self) -> None:
        for name, default in self._defaults.items():
            self._state[name] = default.clone().to(self._state[name].device)

    @abc.abstractmethod
    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        """Accumulate one batch (same arguments as :class:`Loss`)."""

    @abc.abstractmethod
    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        """Turn (already reduced) state into named results."""

    def compute(self) -> dict[str, float]:
        """Reduce the state across processes (if distributed) and return the results."""
        state = self._state
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # NCCL reduces CUDA tensors only; a rank that saw no batch still holds CPU state.
            device = torch.device("cpu")
            if dist.get_backend() == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            state = {k: v.to(device, copy=True) for k, v in state.items()}
            for value in state.values():
                dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return self._compute(state)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


class Dataset(torch.utils.data.Dataset[Sample], abc.ABC):
    """A map-style data set of samples: ``dict`` of typed tensors (see :mod:`pixcore.targets`).

    ``target_kinds`` declares the keys a sample carries and their kinds; ``class_names``
    (for class masks) names the classes in id order.
    """

    target_kinds: ClassVar[dict[str, type[TargetKind]]] = {}
    class_names: tuple[str, ...] = ()
    ignore_index: int = 255

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Sample: ...


class Augmentation(abc.ABC):
    """A joint transform over a whole sample, applied with the same parameters to every key.

    Rules per target kind (a flip negates a normal's x, masks use nearest neighbour, filled
    areas become invalid) live in the augmentation, not in the data set. ``generator``
    makes a random augmentation reproducible.
    """

    @abc.abstractmethod
    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample: ...


# --------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------


class Task(abc.ABC):
    """Binds a target to how it is predicted, trained, scored and shown.

    A task instance knows which sample key it reads (``target_key``) and which boolean
    key marks valid pixels (``valid_key``; None means every pixel with a real target is
    valid), how many raw channels its head must produce, how raw head output becomes a
    prediction (:meth:`decode`), and the names of its default head, loss and metrics in
    the registries. :meth:`context` supplies task facts (``num_classes``,
    ``ignore_index``...) to the factories of heads, losses and metrics that ask for them
    by parameter name.
    """

    #: The target kind this task predicts.
    target_kind: ClassVar[type[TargetKind]]
    #: Registry names of the defaults.
    default_head: ClassVar[str] = "fpn"
    default_loss: ClassVar[str]
    default_metrics: ClassVar[tuple[str, ...]]

    def __init__(self, target_key: str, valid_key: str | None = "valid") -> None:
        self.target_key = target_key
        self.valid_key = valid_key

    @property
    @abc.abstractmethod
    def out_channels(self) -> int:
        """Raw channels the head must produce."""

    @property
    def prediction_channels(self) -> int:
        """Channels of a decoded prediction; :attr:`out_channels` unless ``decode`` changes them.

        Depth as classification over bins, for example, decodes N bin logits to 1 depth.
        """
        return self.out_channels

    def decode(self, raw: Tensor) -> Tensor:
        """Raw head output -> prediction (identity by default)."""
        return raw

    def context(self) -> dict[str, Any]:
        """Facts offered to component factories that declare a parameter of that name."""
        return {}

    def target_and_valid(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Pick this task's target and boolean validity ``[B, H, W]`` from a batch.

        A batch collated by :func:`pixcore.data.collate` from samples of which only some
        carry the target holds ``present/<target_key>`` (bool ``[B]``); it is ANDed into
        the validity, so a sample without the label adds nothing to losses or metrics.
        """
        if self.target_key not in batch:
            raise KeyError(
                f"task target key {self.target_key!r} is not in the batch; keys are "
                f"{sorted(batch)}. Set `target_key` in the task's options (or, when data "
                "sets label different tasks, mix them within every batch: a batch in which "
                "no sample has the label does not carry the key)."
            )
        target = batch[self.target_key]
        if self.valid_key is not None and self.valid_key in batch:
            valid = batch[self.valid_key].bool()
        else:
            valid = torch.ones(
                target.shape[0], *target.shape[-2:], dtype=torch.bool, device=target.device
            )
        present = batch.get(f"present/{self.target_key}")
        if present is not None:
            # Samples collated without this label (see pixcore.data.collate) score nothing.
            per_sample = present.to(device=valid.device, dtype=torch.bool)
            valid = valid & per_sample.view(-1, *([1] * (valid.ndim - 1)))
        return target, valid

    @abc.abstractmethod
    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        """One prediction or target (no batch dim) -> ``[H, W, 3]`` uint8 RGB picture."""

    def visualize_pair(
        self, target: Tensor, prediction: Tensor, valid: Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pictures of a target and a prediction for side-by-side viewing.

        Override when the two must share a scale (a depth colour map): by default each is
        drawn with :meth:`visualize` on its own.
        """
        return self.visualize(target, valid), self.visualize(prediction, valid)

    @abc.abstractmethod
    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        """The trivial constant prediction fitted on ``(target, valid)`` batches.

        Used to report how much better than trivial a model is (the majority class,
        the mean depth, the mean normal). Returns a prediction for one pixel,
        ``[out_channels]``, already decoded.
        """



# --------------------------------------------------------------------------------------
# Multi-task loss weighting
# --------------------------------------------------------------------------------------


class TaskWeighting(nn.Module, abc.ABC):
    """Task losses -> the one scalar to minimise: ``(losses, present) -> LossOutput``.

    ``losses`` maps every task of the model, in the model's order, to its scalar loss.
    ``present`` says per task whether the batch holds any valid pixel for it (a bool or
    a 0-d bool tensor; None: every task is present). A weighting gives an absent task
    weight 0 for that step and keeps it out of its statistics, so a batch without a label
    neither trains nor skews that task. ``parts`` carry detached values worth logging
    (``weight/<task>``, ...).

    A weighting is a submodule of :class:`pixcore.MultiTaskModel`: learnable weights
    (``nn.Parameter``) are trained by the model's optimiser and saved in checkpoints, and
    running state must live in buffers, so that a resumed run continues exactly.
    Statistics change in training mode only (``module.training``). Factories receive the
    context facts ``tasks`` (the task names, in order) and ``weights`` (each task's
    configured ``weight``) when they declare parameters of those names.
    """

    @abc.abstractmethod
    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool | Tensor] | None = None
    ) -> LossOutput:
        """Combine the task losses; ``total`` is what the optimiser minimises."""

    @staticmethod
    def presence(
        losses: Mapping[str, Tensor], present: Mapping[str, bool | Tensor] | None
    ) -> Tensor:
        """``present`` as one bool tensor ``[T]`` in the order of ``losses``, on their device.

        Tensor values stay on the device (no synchronisation); a task that ``present``
        does not name counts as present.
        """
        device = next(iter(losses.values())).device
        flags = [
            torch.as_tensor(True if present is None else present.get(name, True), device=device)
            .to(torch.bool).reshape(())
            for name in losses
        ]
        return torch.stack(flags)
