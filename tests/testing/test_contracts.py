"""pixcore.testing: the contract checks pass good components and catch broken ones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import pixcore
import pytest
import torch
import torch.nn.functional as F
from pixcore.targets import ClassMask, Image, ScalarField
from pixcore.testing import (
    TINY_BACKBONE_NAME,
    ContractError,
    TinyBackbone,
    check_backbone,
    check_head,
    check_loss,
    check_metric,
    check_task,
    isolated_manager,
    make_batch,
    padded_size,
    random_batch,
    replace_invalid,
)
from torch import Tensor, nn

# --------------------------------------------------------------------------------------
# A small, correct plugin: a scalar "height" task with a masked L1 loss and a metric.
# --------------------------------------------------------------------------------------


class MaskedL1(pixcore.Loss):
    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        keep = valid.unsqueeze(1)
        error = (prediction[keep] - target[keep]).abs()
        total = error.sum() / max(error.numel(), 1)
        return pixcore.LossOutput(total, {"l1": total.detach()})


class MeanAbsError(pixcore.Metric):
    protocol: ClassVar[str] = "pixel-pooled"

    def __init__(self) -> None:
        super().__init__()
        self.add_state("error", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.float64))

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        keep = valid.unsqueeze(1)
        self.state["error"] += (prediction[keep] - target[keep]).abs().double().sum()
        self.state["count"] += keep.sum()

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        n = float(state["count"])
        return {"mae": float(state["error"]) / n if n else float("nan")}


class Height(pixcore.Task):
    target_kind = ScalarField
    default_head = "fpn"
    default_loss = "masked_l1"
    default_metrics = ("mae",)

    def __init__(self, target_key: str = "height", valid_key: str | None = "valid") -> None:
        super().__init__(target_key, valid_key)

    @property
    def out_channels(self) -> int:
        return 1

    def decode(self, raw: Tensor) -> Tensor:
        return F.softplus(raw)

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        v = value.reshape(value.shape[-2:]).float()
        v = (255 * (v - v.min()) / (v.max() - v.min() + 1e-6)).byte()
        return np.repeat(v.cpu().numpy()[..., None], 3, axis=-1)

    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        values = [t[v.unsqueeze(1)] for t, v in targets]
        return torch.cat(values).mean().reshape(1)


class HeightPlugin:
    """Registers the components above; subclasses swap in broken ones."""

    task: Any = Height
    loss: Any = MaskedL1
    metric: Any = MeanAbsError

    @pixcore.hookimpl
    def pixcore_tasks(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("height", self.task)

    @pixcore.hookimpl
    def pixcore_losses(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("masked_l1", self.loss)

    @pixcore.hookimpl
    def pixcore_metrics(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("mae", self.metric)


def _plugin(**overrides: Any) -> HeightPlugin:
    return type("Broken", (HeightPlugin,), overrides)()


#: Smaller than check_task's defaults (still not multiples of 32), to keep the suite fast.
FAST: dict[str, Any] = {"size": (29, 37), "head": {"name": "fpn", "params": {"channels": 16}}}


# --------------------------------------------------------------------------------------
# Backbones and heads
# --------------------------------------------------------------------------------------


def test_tiny_backbone_passes_and_is_not_registered_by_default() -> None:
    backbone = TinyBackbone()
    assert [f.stride for f in backbone.feature_info] == [4, 8, 16, 32]
    check_backbone(backbone)
    assert TINY_BACKBONE_NAME not in isolated_manager().registry("backbones")
    assert TINY_BACKBONE_NAME in isolated_manager(tiny_backbone=True).registry("backbones")


class LyingBackbone(TinyBackbone):
    def __init__(self, lie: str) -> None:
        super().__init__()
        info = list(self.feature_info)
        if lie == "channels":
            info[1] = pixcore.FeatureLevel(99, 8)
        elif lie == "stride":
            info[3] = pixcore.FeatureLevel(32, 16)
        elif lie == "order":
            info = info[::-1]
        self.feature_info = info
        self.lie = lie

    def forward(self, x: Tensor) -> list[Tensor]:
        features = super().forward(x)
        if self.lie == "count":
            return features[:3]
        if self.lie == "detached":
            return [f.detach() for f in features]
        return features


@pytest.mark.parametrize(("lie", "message"), [
    ("channels", "level 1"),
    ("stride", "level 3"),
    ("order", "finest first"),
    ("count", "3 maps for 4"),
    ("detached", "no gradient"),
])
def test_check_backbone_catches(lie: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_backbone(LyingBackbone(lie))


class ShortHead(pixcore.Head):
    def __init__(self, in_features: list[pixcore.FeatureLevel], out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_features[0].channels, out_channels, 1)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        # Upsamples by the stride of the finest level, forgetting the requested size.
        return F.interpolate(self.proj(features[0]), scale_factor=4.0, mode="nearest")[..., :-1]


def test_check_head() -> None:
    manager = isolated_manager()
    head = check_head("fpn", params={"channels": 16}, manager=manager, out_channels=5)
    assert isinstance(head, pixcore.Head)
    check_head("linear", manager=manager)
    with pytest.raises(ContractError, match="expected"):
        check_head(ShortHead(TinyBackbone().feature_info, 3))


def test_padded_size() -> None:
    assert padded_size((61, 83), 32) == (64, 96)
    assert padded_size((64, 64), 32) == (64, 64)


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------


def _scalar_batch(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    prediction = torch.rand(2, 1, 6, 7, generator=g) + 0.5
    target = torch.rand(2, 1, 6, 7, generator=g) + 0.5
    valid = torch.rand(2, 6, 7, generator=g) > 0.3
    return prediction, target * valid.unsqueeze(1), valid


class MeanOverAll(pixcore.Loss):
    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        return pixcore.LossOutput((prediction - target).abs().mean())


class WhereMasked(pixcore.Loss):
    """Masks after computing: NaN targets on invalid pixels poison its gradient."""

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        keep = valid.unsqueeze(1)
        error = torch.where(keep, (prediction - target).square(), torch.zeros_like(prediction))
        return pixcore.LossOutput(error.sum() / keep.sum().clamp(min=1))


class EmptyIsNaN(pixcore.Loss):
    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        keep = valid.unsqueeze(1)
        return pixcore.LossOutput((prediction[keep] - target[keep]).abs().mean())


class EmptyHasNoGradPath(pixcore.Loss):
    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        keep = valid.unsqueeze(1)
        if not bool(keep.any()):
            return pixcore.LossOutput(torch.zeros(()))
        return pixcore.LossOutput((prediction[keep] - target[keep]).abs().mean())


def test_check_loss_passes_a_masked_loss() -> None:
    prediction, target, valid = _scalar_batch()
    other_prediction, other_target, _ = _scalar_batch(1)
    out = check_loss(MaskedL1(), prediction, target, valid,
                     other_prediction=other_prediction, other_target=other_target)
    assert out.total.ndim == 0


@pytest.mark.parametrize(("loss", "message"), [
    (MeanOverAll(), "invalid pixels receive a non-zero gradient"),
    (WhereMasked(), "non-finite"),
    (EmptyIsNaN(), "non-finite"),
    (EmptyHasNoGradPath(), "no gradient path"),
])
def test_check_loss_catches(loss: pixcore.Loss, message: str) -> None:
    prediction, target, valid = _scalar_batch()
    with pytest.raises(ContractError, match=message):
        check_loss(loss, prediction, target, valid)


def test_check_loss_needs_invalid_pixels() -> None:
    prediction, target, valid = _scalar_batch()
    with pytest.raises(ContractError, match="needs some invalid pixels"):
        check_loss(MaskedL1(), prediction, target, torch.ones_like(valid))


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


class RunningMean(MeanAbsError):
    """Keeps the mean itself as state: summing it across processes is wrong."""

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        keep = valid.unsqueeze(1)
        errors = (prediction[keep] - target[keep]).abs().double()
        count = self.state["count"] + errors.numel()
        self.state["error"] = (self.state["error"] * self.state["count"] + errors.sum()) / count
        self.state["count"] = count

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        return {"mae": float(state["error"])}


class NoReset(MeanAbsError):
    def reset(self) -> None:
        pass


class IgnoresValid(MeanAbsError):
    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        super().update(prediction, target, torch.ones_like(valid))


class ConsumingCompute(MeanAbsError):
    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        results = super()._compute(state)
        state["count"].mul_(2)  # type: ignore[index]
        return results


class NoProtocol(MeanAbsError):
    protocol: ClassVar[str] = ""


class HiddenState(MeanAbsError):
    """Keeps a running total outside add_state, which reset() does not clear."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0.0

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        super().update(prediction, target, valid)
        self.seen += 1.0

    def _compute(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        return {**super()._compute(state), "batches": self.seen}


class MutatesInput(MeanAbsError):
    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        super().update(prediction, target, valid)
        prediction.clamp_(max=1.0)


def _metric_batches(seed: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for size in (5, 9):  # different sizes: averaging per batch differs from pooling
        prediction = torch.rand(2, 1, size, 4, generator=g) * 2
        target = torch.rand(2, 1, size, 4, generator=g)
        valid = torch.rand(2, size, 4, generator=g) > 0.3
        batches.append((prediction, target, valid))
    return batches


def test_check_metric_passes_a_pooled_metric() -> None:
    results = check_metric(MeanAbsError, _metric_batches(0), other_batches=_metric_batches(1))
    assert set(results) == {"mae"}


@pytest.mark.parametrize(("metric", "message"), [
    (RunningMean, "distributed reduction"),
    (IgnoresValid, "invalid pixels"),
    (ConsumingCompute, "second compute"),
    (NoProtocol, "protocol"),
    (HiddenState, "distributed reduction"),
    (NoReset, "reset"),
    (MutatesInput, "modified its inputs"),
])
def test_check_metric_catches(metric: type[pixcore.Metric], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_metric(metric, _metric_batches(0), other_batches=_metric_batches(1))


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------


def test_check_task_passes_a_correct_task_and_leaves_the_manager_as_it_was() -> None:
    manager = isolated_manager(HeightPlugin())
    check_task("height", manager=manager)
    assert TINY_BACKBONE_NAME not in manager.registry("backbones")
    check_task("height", manager=manager, head="linear", size=(17, 23), batch_size=1, seed=4)
    check_task("height", manager=isolated_manager(HeightPlugin(), tiny_backbone=True), **FAST)


class NoTask:
    pass


class WrongPicture(Height):
    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        return super().visualize(value, valid).astype(np.float32)


class WrongBaseline(Height):
    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        return super().baseline(targets).reshape(())


class UnregisteredLoss(Height):
    default_loss = "no_such_loss"


class DetachedDecode(Height):
    def decode(self, raw: Tensor) -> Tensor:
        return F.softplus(raw).detach()


class UsesValidEverywhere(Height):
    def target_and_valid(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        target, valid = super().target_and_valid(batch)
        return target, valid[:, None]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"task": NoTask}, "is not a pixcore.Task"),
    ({"task": WrongPicture}, r"\[H, W, 3\] uint8"),
    ({"task": WrongBaseline}, r"baseline must be a \[1\] tensor"),
    ({"task": UnregisteredLoss}, "default loss 'no_such_loss' is not registered"),
    ({"task": DetachedDecode}, "no gradient"),
    ({"task": UsesValidEverywhere}, r"boolean \[B, H, W\] mask"),
    ({"loss": MeanOverAll}, "must be exactly 0|non-zero gradient"),
    ({"loss": EmptyIsNaN}, "must be exactly 0, got nan|with no valid pixel: LossOutput.total has 1 non-finite"),
    ({"loss": WhereMasked}, "non-finite"),
    ({"metric": RunningMean}, "distributed reduction"),
    ({"metric": IgnoresValid}, "invalid pixels"),
])
def test_check_task_catches(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_task("height", manager=isolated_manager(_plugin(**overrides)), **FAST)


def test_check_task_does_not_touch_the_global_random_state() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_task("height", manager=isolated_manager(HeightPlugin()), size=(9, 11))
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------------------
# Managers and random batches
# --------------------------------------------------------------------------------------


def test_isolated_manager_sees_only_what_it_is_given() -> None:
    bare = isolated_manager(builtins=False)
    assert bare.registry("heads").list() == []
    manager = isolated_manager(HeightPlugin(), "pixcore.testing._backbone")
    assert manager.registry("tasks").list() == ["height"]
    assert "fpn" in manager.registry("heads")
    assert not manager.registry("backbones").list("timm/*")  # entry points are not loaded


def test_random_batch_follows_the_target_kind() -> None:
    g = torch.Generator().manual_seed(0)

    class Classes(Height):
        target_kind = ClassMask

        def context(self) -> dict[str, Any]:
            return {"num_classes": 4, "ignore_index": 9}

    data = random_batch(Classes("semseg", None), size=(8, 10), generator=g, invalid_fraction=0.3)
    assert data.batch["image"].dtype == torch.uint8 and data.batch["image"].shape == (2, 3, 8, 10)
    assert data.target.shape == (2, 8, 10)
    assert bool((data.target[~data.valid] == 9).all()) and bool((data.target[data.valid] < 4).all())
    assert "valid" in data.batch
    depth = make_batch(Height("depth"), size=(8, 10), invalid_fraction=1.0)
    assert depth["depth"].shape == (2, 1, 8, 10) and not bool(depth["valid"].any())
    assert float(depth["depth"].abs().sum()) == 0.0

    class Images(Height):
        target_kind = Image

    with pytest.raises(TypeError, match="make_batch"):
        random_batch(Images("x"))


def test_replace_invalid() -> None:
    value = torch.zeros(1, 2, 2, 2)
    valid = torch.tensor([[[True, False], [False, True]]])
    out = replace_invalid(value, 7.0, valid)
    assert out[0, :, 0, 1].tolist() == [7.0, 7.0] and out[0, :, 0, 0].tolist() == [0.0, 0.0]
    zeros = torch.zeros(1, 2, 2, dtype=torch.long)
    ids = replace_invalid(zeros, torch.ones_like(zeros), valid)
    assert ids.tolist() == [[[0, 1], [1, 0]]]
