"""delta-m (Maninis et al. 2019; Vandenhende et al. 2021) against numbers worked out by hand."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import ClassVar

import pixcore
import pytest
import torch

DIRECTIONS = {"semseg": {"miou": True, "pixel_acc": True}, "depth": {"abs_rel": False, "delta1": True}}


def test_the_two_task_example() -> None:
    # mIoU 0.5 vs 0.4: +25 %; AbsRel 0.12 vs 0.10 (lower is better): -20 %; mean: +2.5 %.
    results = {"semseg": {"miou": 0.5, "protocol": {"miou": "x"}}, "depth": {"abs_rel": 0.12}}
    baselines = {"semseg": {"miou": 0.4}, "depth": {"abs_rel": 0.10}}
    summary = pixcore.delta_m(results, baselines, directions=DIRECTIONS)
    assert summary["delta_m"] == pytest.approx(2.5)
    assert summary["per_task"] == pytest.approx({"semseg": 25.0, "depth": -20.0})
    assert summary["skipped"] == {}
    assert "Maninis" in summary["protocol"] and "lower is better" in summary["protocol"]


def test_each_task_counts_once_however_many_keys_it_has() -> None:
    # depth: AbsRel 0.12 vs 0.10 -> -20 %, delta1 0.9 vs 0.8 -> +12.5 %; mean -3.75 %.
    # semseg: +25 %. delta-m = (25 - 3.75) / 2 = 10.625 (not the mean of the three keys).
    results = {"semseg": {"miou": 0.5}, "depth": {"abs_rel": 0.12, "delta1": 0.9}}
    baselines = {"semseg": {"miou": 0.4}, "depth": {"abs_rel": 0.10, "delta1": 0.8}}
    summary = pixcore.delta_m(results, baselines, directions=DIRECTIONS)
    assert summary["per_key"]["depth"] == pytest.approx({"abs_rel": -20.0, "delta1": 12.5})
    assert summary["per_task"]["depth"] == pytest.approx(-3.75)
    assert summary["delta_m"] == pytest.approx(10.625)


def test_a_better_lower_is_better_metric_counts_positive() -> None:
    summary = pixcore.delta_m({"depth": {"abs_rel": 0.08}}, {"depth": {"abs_rel": 0.10}}, directions=DIRECTIONS)
    assert summary["delta_m"] == pytest.approx(20.0)


def test_keys_without_a_direction_are_skipped_and_listed() -> None:
    results = {"semseg": {"miou": 0.5, "mystery": 3.0}, "depth": {"abs_rel": 0.12, "rmse": 1.0}}
    baselines = {"semseg": {"miou": 0.4, "mystery": 1.0}, "depth": {"abs_rel": 0.10, "rmse": 2.0}}
    summary = pixcore.delta_m(results, baselines, directions=DIRECTIONS)
    assert summary["delta_m"] == pytest.approx(2.5)
    assert set(summary["skipped"]) == {"semseg/mystery", "depth/rmse"}
    assert "direction" in summary["skipped"]["depth/rmse"]


def test_keys_select_exactly_what_is_summarised() -> None:
    results = {"semseg": {"miou": 0.5, "pixel_acc": 0.9}, "depth": {"abs_rel": 0.12}}
    baselines = {"semseg": {"miou": 0.4, "pixel_acc": 0.6}, "depth": {"abs_rel": 0.10}}
    summary = pixcore.delta_m(results, baselines, directions=DIRECTIONS, keys={"semseg": ["pixel_acc"]})
    assert summary["per_task"] == pytest.approx({"semseg": 50.0})  # (0.9 - 0.6) / 0.6
    assert summary["delta_m"] == pytest.approx(50.0)
    with pytest.raises(KeyError, match="semseg/miou.*direction"):
        pixcore.delta_m(results, baselines, directions={"semseg": {}}, keys={"semseg": ["miou"]})


def test_a_zero_baseline_is_an_error_naming_task_and_key() -> None:
    with pytest.raises(ValueError, match=r"baseline of depth/abs_rel is 0"):
        pixcore.delta_m({"depth": {"abs_rel": 0.1}}, {"depth": {"abs_rel": 0.0}}, directions=DIRECTIONS)


def test_missing_baselines_and_bad_values_are_errors() -> None:
    with pytest.raises(KeyError, match="'depth' has no baseline"):
        pixcore.delta_m({"depth": {"abs_rel": 0.1}}, {"semseg": {"miou": 0.4}}, directions=DIRECTIONS)
    with pytest.raises(ValueError, match="finite"):
        pixcore.delta_m({"depth": {"abs_rel": float("nan")}}, {"depth": {"abs_rel": 0.1}}, directions=DIRECTIONS)
    with pytest.raises(ValueError, match="no metric key"):
        pixcore.delta_m({"depth": {"rmse": 1.0}}, {"depth": {"rmse": 2.0}}, directions=DIRECTIONS)


# -- directions from the metric classes -------------------------------------------------


class HigherIoU(pixcore.Metric):
    higher_is_better: ClassVar[Mapping[str, bool]] = {"miou": True}

    def update(self, prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None: ...

    def _compute(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        return {"miou": 0.0}


class LowerAbsRel(HigherIoU):
    higher_is_better: ClassVar[Mapping[str, bool]] = {"abs_rel": False}


class ConfusedAbsRel(HigherIoU):
    higher_is_better: ClassVar[Mapping[str, bool]] = {"abs_rel": True}


class _DirectionPlugin:
    def __init__(self, *metrics: tuple[str, type]) -> None:
        self.metrics = metrics

    @pixcore.hookimpl
    def pixcore_metrics(self) -> Iterator[pixcore.Component]:
        for name, cls in self.metrics:
            yield pixcore.Component(name, cls)


def test_default_directions_come_from_the_registered_metric_classes() -> None:
    manager = pixcore.PluginManager(autoload=False)
    manager.register(_DirectionPlugin(("iou", HigherIoU), ("absrel", LowerAbsRel)), name="directions")
    results = {"semseg": {"miou": 0.5}, "depth": {"abs_rel": 0.12}}
    baselines = {"semseg": {"miou": 0.4}, "depth": {"abs_rel": 0.10}}
    assert pixcore.delta_m(results, baselines, manager=manager)["delta_m"] == pytest.approx(2.5)

    # Two classes that disagree on a key: it has no direction, and is skipped.
    manager.register(_DirectionPlugin(("confused", ConfusedAbsRel)), name="confused")
    summary = pixcore.delta_m(results, baselines, manager=manager)
    assert summary["delta_m"] == pytest.approx(25.0)
    assert "disagree" in summary["skipped"]["depth/abs_rel"]


def test_metric_directions_reads_a_models_metrics(
    manager: pixcore.PluginManager, components: SimpleNamespace
) -> None:
    class DirectedMAE(components.MeanAbsoluteError):  # type: ignore[name-defined, misc]
        higher_is_better: ClassVar[Mapping[str, bool]] = {"mae": False}

    manager.register(_DirectionPlugin(("directed_mae", DirectedMAE)), name="directed")
    model = pixcore.build_model(
        "test_tiny",
        {"h": {"task": "test_height", "metrics": ["directed_mae"]}, "c": {"task": "test_classes"}},
        manager=manager,
    )
    directions = pixcore.metric_directions(model, manager)
    assert directions == {"h": {"mae": False}, "c": {}}  # test_acc declares no direction
    results = {"h": {"mae": 0.3}, "c": {"acc": 0.9}}
    baselines = {"h": {"mae": 0.6}, "c": {"acc": 0.5}}
    summary = pixcore.delta_m(results, baselines, directions=directions)
    assert summary["delta_m"] == pytest.approx(50.0)  # (0.6 - 0.3) / 0.6, lower is better
    assert set(summary["skipped"]) == {"c/acc", "c"}  # c is left with no key
