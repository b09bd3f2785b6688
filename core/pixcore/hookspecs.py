"""Hook specifications: how a plugin adds components to pixcore.

A plugin is a module (or any object) with functions named after the hooks below and
decorated with :data:`pixcore.hookimpl`. It is found through an entry point of group
``pixcore`` in the plugin distribution's ``pyproject.toml``::

    [project.entry-points.pixcore]
    my_task = "my_pixcore_plugin.plugin"

or registered in-process with :func:`pixcore.register_plugin`. pixcore's own built-in
components register through the very same hooks.

Every hook here is a *registration* hook: it takes no arguments and yields
:class:`pixcore.Component` records (or :class:`pixcore.ComponentNamespace` records for
names resolved lazily). A hook never mutates global state; pixcore collects the records
of all plugins, remembers which distribution provided each one, and raises
:class:`pixcore.DuplicateComponentError` if two provide the same name.
"""

# Hook specifications are signatures only: pluggy never calls their (empty) bodies.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from pixcore.plugin._records import Component, ComponentNamespace

PROJECT_NAME = "pixcore"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Records = Iterable[Component | ComponentNamespace]


# --------------------------------------------------------------------------------------
# Models: backbones and heads
# --------------------------------------------------------------------------------------


@hookspec
def pixcore_backbones() -> Records:
    """Register backbones: image -> multi-scale features.

    A backbone factory returns a :class:`pixcore.Backbone` whose ``feature_info`` lists
    channels and stride per level. Yield one :class:`pixcore.Component` per name, or a
    :class:`pixcore.ComponentNamespace` when names are resolved lazily (``timm/*``).

    Example::

        import torch
        from torch import nn
        import pixcore

        class TinyBackbone(pixcore.Backbone):
            def __init__(self, width: int = 16) -> None:
                super().__init__()
                self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
                self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
                self.feature_info = [pixcore.FeatureLevel(width, 2),
                                     pixcore.FeatureLevel(2 * width, 4)]

            def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
                a = torch.relu(self.stem(x))
                return [a, torch.relu(self.down(a))]

        @pixcore.hookimpl
        def pixcore_backbones():
            yield pixcore.Component("tiny", TinyBackbone, description="Two conv layers")
    """


@hookspec
def pixcore_heads() -> Records:
    """Register heads: backbone features -> raw per-pixel output at input size.

    A head factory receives ``in_features`` (the backbone's ``feature_info``) and
    ``out_channels`` (from the task) when it declares parameters of those names, plus its
    own parameters validated from the config.

    Example::

        import torch
        import torch.nn.functional as F
        from torch import nn
        import pixcore

        class FinestLevelHead(pixcore.Head):
            def __init__(self, in_features: list[pixcore.FeatureLevel], out_channels: int) -> None:
                super().__init__()
                self.proj = nn.Conv2d(in_features[0].channels, out_channels, 1)

            def forward(self, features, size):
                return F.interpolate(self.proj(features[0]), size=size, mode="bilinear")

        @pixcore.hookimpl
        def pixcore_heads():
            yield pixcore.Component("finest", FinestLevelHead)
    """


# --------------------------------------------------------------------------------------
# Training objectives and scoring: losses and metrics
# --------------------------------------------------------------------------------------


@hookspec
def pixcore_losses() -> Records:
    """Register losses: ``(prediction, target, valid) -> pixcore.LossOutput``.

    Task facts (``num_classes``, ``ignore_index``...) reach the factory when it declares a
    parameter of that name.

    Example::

        import pixcore

        class MaskedL1(pixcore.Loss):
            def forward(self, prediction, target, valid):
                valid = valid.unsqueeze(1).expand_as(target)
                error = (prediction - target).abs()[valid]
                total = error.mean() if error.numel() else prediction.sum() * 0.0
                return pixcore.LossOutput(total, {"l1": total.detach()})

        @pixcore.hookimpl
        def pixcore_losses():
            yield pixcore.Component("masked_l1", MaskedL1, description="L1 over valid pixels")
    """


@hookspec
def pixcore_metrics() -> Records:
    """Register streaming metrics (:class:`pixcore.Metric`: update / compute / reset).

    Example::

        import torch
        import pixcore

        class PixelAccuracy(pixcore.Metric):
            protocol = "pixel-accuracy/pooled"

            def __init__(self, ignore_index: int = 255) -> None:
                super().__init__()
                self.ignore_index = ignore_index
                self.add_state("correct", torch.zeros((), dtype=torch.float64))
                self.add_state("total", torch.zeros((), dtype=torch.float64))

            def update(self, prediction, target, valid):
                keep = valid & (target != self.ignore_index)
                hit = (prediction.argmax(1) == target) & keep
                self.state["correct"] += hit.sum()
                self.state["total"] += keep.sum()

            def _compute(self, state):
                return {"pixel_acc": float(state["correct"] / state["total"].clamp(min=1))}

        @pixcore.hookimpl
        def pixcore_metrics():
            yield pixcore.Component("pixel_acc", PixelAccuracy)
    """


# --------------------------------------------------------------------------------------
# Data: data sets and augmentations
# --------------------------------------------------------------------------------------


@hookspec
def pixcore_datasets() -> Records:
    """Register data sets (:class:`pixcore.Dataset`): samples as dicts of typed tensors.

    Example::

        import torch
        import pixcore
        from pixcore.targets import Image, ScalarField, ValidityMask

        class ConstantDepth(pixcore.Dataset):
            target_kinds = {"image": Image, "depth": ScalarField, "valid": ValidityMask}

            def __init__(self, length: int = 8, split: str = "train") -> None:
                self.length = length

            def __len__(self) -> int:
                return self.length

            def __getitem__(self, index: int) -> pixcore.Sample:
                return {"image": Image(torch.zeros(3, 32, 32, dtype=torch.uint8)),
                        "depth": ScalarField(torch.ones(1, 32, 32)),
                        "valid": ValidityMask(torch.ones(32, 32, dtype=torch.bool))}

        @pixcore.hookimpl
        def pixcore_datasets():
            yield pixcore.Component("constant_depth", ConstantDepth)
    """


@hookspec
def pixcore_augmentations() -> Records:
    """Register augmentations (:class:`pixcore.Augmentation`): joint transforms of a sample.

    An augmentation must keep every target's meaning: it applies the same geometry to all
    pixel-aligned keys, following each target kind's rules.

    Example::

        import pixcore

        class Identity(pixcore.Augmentation):
            def __call__(self, sample, generator=None):
                return dict(sample)

        @pixcore.hookimpl
        def pixcore_augmentations():
            yield pixcore.Component("identity", Identity)
    """


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------


@hookspec
def pixcore_tasks() -> Records:
    """Register tasks (:class:`pixcore.Task`): a target bound to head, loss, metrics, pictures.

    Example::

        import numpy as np
        import torch
        import torch.nn.functional as F
        import pixcore
        from pixcore.targets import ScalarField

        class Height(pixcore.Task):
            target_kind = ScalarField
            default_head = "fpn"
            default_loss = "masked_l1"          # registered by the loss example above
            default_metrics = ()

            def __init__(self, target_key: str = "height", valid_key: str | None = "valid") -> None:
                super().__init__(target_key, valid_key)

            @property
            def out_channels(self) -> int:
                return 1

            def decode(self, raw):
                return F.softplus(raw)

            def visualize(self, value, valid=None):
                v = value[0].float()
                v = (255 * (v - v.min()) / (v.max() - v.min() + 1e-6)).byte()
                return np.repeat(v.cpu().numpy()[..., None], 3, axis=-1)

            def baseline(self, targets):
                values = [t[v.unsqueeze(1)] for t, v in targets]
                return torch.cat(values).mean().reshape(1)

        @pixcore.hookimpl
        def pixcore_tasks():
            yield pixcore.Component("height", Height, description="Height above the floor")
    """


# --------------------------------------------------------------------------------------
# Multi-task loss weighting
# --------------------------------------------------------------------------------------


@hookspec
def pixcore_weightings() -> Records:
    """Register multi-task loss weightings: task losses -> the one loss to minimise.

    The factory returns a :class:`pixcore.TaskWeighting` (an ``nn.Module``):
    ``forward(losses, present) -> pixcore.LossOutput``, where ``losses`` maps each task
    name to its scalar loss and ``present`` each task name to a bool (tensor), False when
    the batch holds no valid pixel of that task; an absent task must get weight 0 and
    stay out of any statistics. The weighting is a submodule of the model: learnable
    weights are trained and checkpointed with it, and running state belongs in buffers so
    that a resumed run continues exactly. Context: ``tasks`` (the task names, in order)
    and ``weights`` (each task's configured ``weight``). Users pick one with
    ``model.weighting`` in the config (default ``fixed``).

    Example::

        import torch
        import pixcore

        class EqualWeighting(pixcore.TaskWeighting):
            # Every present task weighs 1 / (number of tasks); an absent one weighs 0.

            def __init__(self, tasks: list[str]) -> None:
                super().__init__()
                self.tasks = list(tasks)

            def forward(self, losses, present=None):
                flags = self.presence(losses, present)      # bool [T], in losses' order
                stacked = torch.stack([loss.reshape(()) for loss in losses.values()])
                weights = flags.to(stacked.dtype) / len(self.tasks)
                parts = {f"weight/{name}": w for name, w in zip(losses, weights)}
                return pixcore.LossOutput((weights * stacked).sum(), parts)

        @pixcore.hookimpl
        def pixcore_weightings():
            yield pixcore.Component("equal", EqualWeighting, description="Weights 1/T")
    """
