"""Shared fixtures for pixcore's core tests.

The core tests must not depend on the plugin distributions (pixcore-seg, pixcore-depth,
...), so this file defines its own tiny components and registers them in-process into an
isolated :class:`pixcore.PluginManager` (``autoload=False``):

* backbone ``test_tiny``: strided convolutions, feature strides 4, 8, 16, 32;
* task ``test_height`` (a :class:`~pixcore.targets.ScalarField` regression task) with loss
  ``test_l1`` and metric ``test_mae``;
* task ``test_classes`` (a :class:`~pixcore.targets.ClassMask` task) whose ``context()``
  offers ``num_classes`` / ``ignore_index``, with loss ``test_ce`` and metric ``test_acc``.

Tests run with ``--import-mode=importlib``, so they cannot ``import conftest``: everything
here is reached through fixtures (``components`` gives the classes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
import torch.nn.functional as F
from pixcore.plugin._manager import BLOCK_ENV, DISABLE_AUTOLOAD_ENV, STRICT_ENV, reset_plugin_manager
from pixcore.targets import ClassMask, Image, ScalarField, ValidityMask
from torch import Tensor, nn

#: Name under which the test components are registered in the ``manager`` fixture.
TEST_PLUGIN_NAME = "pixcore-tests"


# --------------------------------------------------------------------------------------
# Tiny components
# --------------------------------------------------------------------------------------


class TinyTestBackbone(pixcore.Backbone):
    """Five strided 3x3 convolutions: features at strides 4, 8, 16 and 32."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        channels = [width, 2 * width, 4 * width, 8 * width]
        self.downs = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1)
            for cin, cout in zip(channels[:-1], channels[1:], strict=True)
        )
        self.feature_info = [
            pixcore.FeatureLevel(c, s) for c, s in zip(channels, (4, 8, 16, 32), strict=True)
        ]

    def forward(self, x: Tensor) -> list[Tensor]:
        features = [self.stem(x)]
        for down in self.downs:
            features.append(torch.relu(down(features[-1])))
        return features


class MaskedL1(pixcore.Loss):
    """Mean absolute error over valid pixels."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        mask = valid.unsqueeze(1).expand_as(target)
        error = (prediction - target).abs()[mask]
        total = self.scale * (error.mean() if error.numel() else prediction.sum() * 0.0)
        return pixcore.LossOutput(total, {"l1": total.detach()})


class MeanAbsoluteError(pixcore.Metric):
    protocol = "test-mae/pooled"

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sum", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.float64))

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        mask = valid.unsqueeze(1).expand_as(target)
        self.state["sum"] += (prediction - target).abs()[mask].sum().double()
        self.state["count"] += mask.sum()

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        return {"mae": float(state["sum"] / state["count"].clamp(min=1))}


class HeightTask(pixcore.Task):
    """Regress a non-negative scalar per pixel (softplus-decoded)."""

    target_kind = ScalarField
    default_head = "fpn"
    default_loss = "test_l1"
    default_metrics = ("test_mae",)

    def __init__(self, target_key: str = "height", valid_key: str | None = "valid") -> None:
        super().__init__(target_key, valid_key)

    @property
    def out_channels(self) -> int:
        return 1

    def decode(self, raw: Tensor) -> Tensor:
        return F.softplus(raw)

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        v = value[0].float()
        v = (255 * (v - v.min()) / (v.max() - v.min() + 1e-6)).byte()
        return np.repeat(v.cpu().numpy()[..., None], 3, axis=-1)

    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        values = [t[v.unsqueeze(1)] for t, v in targets]
        return torch.cat(values).mean().reshape(1)


class CrossEntropy(pixcore.Loss):
    """Cross-entropy that learns ``ignore_index`` from the task context."""

    def __init__(self, ignore_index: int = 255, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        target = torch.where(valid, target.long(), torch.full_like(target.long(), self.ignore_index))
        total = F.cross_entropy(
            prediction, target, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing
        )
        return pixcore.LossOutput(total, {"ce": total.detach()})


class PixelAccuracy(pixcore.Metric):
    protocol = "test-acc/pooled"

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("hit", torch.zeros((), dtype=torch.float64))
        self.add_state("total", torch.zeros((), dtype=torch.float64))

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        keep = valid & (target != self.ignore_index)
        self.state["hit"] += ((prediction.argmax(1) == target) & keep).sum()
        self.state["total"] += keep.sum()

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        return {"acc": float(state["hit"] / state["total"].clamp(min=1))}


class ClassesTask(pixcore.Task):
    """Per-pixel classification; offers ``num_classes`` and ``ignore_index`` as context."""

    target_kind = ClassMask
    default_head = "fpn"
    default_loss = "test_ce"
    default_metrics = ("test_acc",)

    def __init__(
        self, num_classes: int = 3, ignore_index: int = 255, target_key: str = "classes",
        valid_key: str | None = None,
    ) -> None:
        super().__init__(target_key, valid_key)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    @property
    def out_channels(self) -> int:
        return self.num_classes

    def context(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index}

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        ids = value.argmax(0) if value.ndim == 3 else value
        return np.repeat((ids * 40).byte().cpu().numpy()[..., None], 3, axis=-1)

    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        counts = torch.zeros(self.num_classes)
        for target, valid in targets:
            keep = valid & (target != self.ignore_index)
            counts += torch.bincount(target[keep].long(), minlength=self.num_classes)[: self.num_classes]
        return F.one_hot(counts.argmax(), self.num_classes).float()


class _TestPlugin:
    """The test components, registered through the same hooks as any plugin."""

    @pixcore.hookimpl
    def pixcore_backbones(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("test_tiny", TinyTestBackbone, description="Strides 4-32")

    @pixcore.hookimpl
    def pixcore_tasks(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("test_height", HeightTask, description="Scalar regression")
        yield pixcore.Component("test_classes", ClassesTask, description="Classification")

    @pixcore.hookimpl
    def pixcore_losses(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("test_l1", MaskedL1)
        yield pixcore.Component("test_ce", CrossEntropy)

    @pixcore.hookimpl
    def pixcore_metrics(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("test_mae", MeanAbsoluteError)
        yield pixcore.Component("test_acc", PixelAccuracy)


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's PIXCORE_* plugin settings must not change test outcomes."""
    for name in (DISABLE_AUTOLOAD_ENV, STRICT_ENV, BLOCK_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def components() -> SimpleNamespace:
    """The test component classes (tests cannot import this conftest)."""
    return SimpleNamespace(
        TinyTestBackbone=TinyTestBackbone,
        HeightTask=HeightTask,
        ClassesTask=ClassesTask,
        MaskedL1=MaskedL1,
        MeanAbsoluteError=MeanAbsoluteError,
        CrossEntropy=CrossEntropy,
        PixelAccuracy=PixelAccuracy,
        plugin_class=_TestPlugin,
        plugin_name=TEST_PLUGIN_NAME,
    )


@pytest.fixture
def manager() -> pixcore.PluginManager:
    """An isolated manager: built-ins plus the test components, no entry points."""
    pm = pixcore.PluginManager(autoload=False)
    pm.register(_TestPlugin(), name=TEST_PLUGIN_NAME)
    return pm


@pytest.fixture
def reset_global_manager() -> Iterator[None]:
    """Forget the process-wide manager for one test (it is re-created lazily on first use)
    and restore the previous one afterwards."""
    old = reset_plugin_manager(None)
    try:
        yield
    finally:
        reset_plugin_manager(old)


@pytest.fixture
def global_manager(reset_global_manager: None) -> pixcore.PluginManager:
    """Install an isolated manager (no entry points) as the process-wide one for one test."""
    pm = pixcore.PluginManager(autoload=False)
    reset_plugin_manager(pm)
    return pm


@pytest.fixture
def make_batch() -> Callable[..., dict[str, Tensor]]:
    """``make_batch(batch, height, width)``: uint8 image plus targets for both test tasks."""

    def make(batch: int = 2, height: int = 61, width: int = 83, seed: int = 0) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        valid = torch.rand(batch, height, width, generator=g) > 0.2
        return {
            "image": torch.randint(0, 256, (batch, 3, height, width), generator=g, dtype=torch.uint8),
            "height": torch.rand(batch, 1, height, width, generator=g) * 3,
            "valid": valid,
            "classes": torch.randint(0, 3, (batch, height, width), generator=g),
        }

    return make


@pytest.fixture
def make_sample() -> Callable[..., dict[str, Tensor]]:
    """``make_sample(height, width)``: one typed sample (Image, ScalarField, ValidityMask, ClassMask)."""

    def make(height: int = 6, width: int = 8, seed: int = 0) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {
            "image": Image(torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)),
            "depth": ScalarField(torch.rand(1, height, width, generator=g) + 0.5),
            "valid": ValidityMask(torch.rand(height, width, generator=g) > 0.3),
            "semseg": ClassMask(torch.randint(0, 5, (height, width), generator=g)),
        }

    return make
