"""The angular_error metric against numpy (np.median within the histogram resolution)."""

from __future__ import annotations

import math

import numpy as np
import pixcore
import pytest
import torch
import torch.nn.functional as F
from pixcore.testing import check_metric, isolated_manager
from pixcore_normals import AngularError
from pixcore_normals import _plugin as normals_plugin
from pixcore_normals._metric import BIN_WIDTH_DEG

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
KEYS = {"mean", "median", "rmse", "pct_11.25", "pct_22.5", "pct_30"}


def _batches(seed: int, n: int = 3) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        target = F.normalize(torch.randn(2, 3, 9, 8, generator=g), dim=1)
        noise = 0.4 * torch.randn(2, 3, 9, 8, generator=g)
        prediction = F.normalize(target + noise, dim=1)
        valid = torch.rand(2, 9, 8, generator=g) > 0.25
        target = target * valid.unsqueeze(1)
        target[0, :, 0, 0], valid[0, 0, 0] = 0.0, True  # valid but no normal: skipped
        out.append((prediction, target, valid))
    return out


def _messy_batches(seed: int, n: int = 3) -> list[Batch]:
    """Unnormalised vectors over the whole sphere; NaN and zero targets where invalid."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        shape = (1 + i % 2, 3, 6 + i, 7)
        lengths = 0.3 + 2 * torch.rand(shape[0], 1, *shape[2:], generator=g)
        target = torch.randn(*shape, generator=g) * lengths
        prediction = torch.randn(*shape, generator=g) * 5.0
        valid = torch.rand(shape[0], *shape[2:], generator=g) > 0.3
        coin = torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.5
        nan_or_zero = torch.where(coin, math.nan, 0.0)
        target = torch.where(valid.unsqueeze(1), target, nan_or_zero.expand_as(target))
        out.append((prediction, target, valid))
    return out


def _angles(batches: list[Batch]) -> np.ndarray:
    angles = []
    for p, t, v in batches:
        pn = p.permute(0, 2, 3, 1).numpy().astype(np.float64)
        tn = t.permute(0, 2, 3, 1).numpy().astype(np.float64)
        norms = np.linalg.norm(np.nan_to_num(tn), axis=-1)
        keep = v.numpy() & (norms > 1e-6) & np.isfinite(tn).all(axis=-1)
        a, b = pn[keep], tn[keep]
        cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        angles.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.concatenate(angles)


def _check_against_numpy(results: dict[str, float], angles: np.ndarray) -> None:
    assert set(results) == KEYS
    assert results["mean"] == pytest.approx(float(np.mean(angles)), rel=1e-9)
    assert results["rmse"] == pytest.approx(float(np.sqrt(np.mean(angles**2))), rel=1e-9)
    for key, threshold in (("pct_11.25", 11.25), ("pct_22.5", 22.5), ("pct_30", 30.0)):
        assert results[key] == pytest.approx(100.0 * float(np.mean(angles < threshold)), abs=1e-9)
    assert abs(results["median"] - float(np.median(angles))) <= BIN_WIDTH_DEG / 2 + 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy(seed: int) -> None:
    batches = _batches(seed)
    metric = AngularError()
    for batch in batches:
        metric.update(*batch)
    _check_against_numpy(metric.compute(), _angles(batches))


@pytest.mark.parametrize("seed", [3, 4])
def test_matches_numpy_on_unnormalised_vectors_with_nan_where_invalid(seed: int) -> None:
    batches = _messy_batches(seed)
    metric = AngularError()
    for batch in batches:
        metric.update(*batch)
    angles = _angles(batches)
    assert angles.size > 50 and angles.max() > 90.0  # the whole range of angles is covered
    _check_against_numpy(metric.compute(), angles)


@pytest.mark.parametrize("degrees", [[1.0, 50.0], [3.0, 40.0, 170.0], [0.0], [179.999, 180.0]])
def test_median_of_few_far_apart_angles(degrees: list[float]) -> None:
    radians = torch.tensor(np.radians(degrees), dtype=torch.float64)
    target = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).view(1, 3, 1, 1)
    target = target.repeat(1, 1, 1, len(degrees))
    prediction = torch.stack([radians.sin(), torch.zeros_like(radians), radians.cos()])
    prediction = prediction.view(1, 3, 1, -1)
    metric = AngularError()
    metric.update(prediction, target, torch.ones(1, 1, len(degrees), dtype=torch.bool))
    assert abs(metric.compute()["median"] - float(np.median(degrees))) <= BIN_WIDTH_DEG / 2 + 1e-6


def test_median_precision_bound_is_half_a_bin() -> None:
    # Angles just below the upper edge of their bins: the worst case of the bound.
    degrees = np.array([5.0099, 12.3499, 20.0199, 33.3399, 61.0099])
    radians = torch.tensor(np.radians(degrees), dtype=torch.float64)
    prediction = torch.stack([radians.sin(), torch.zeros_like(radians), radians.cos()])
    prediction = prediction.view(1, 3, 1, -1)
    target = torch.zeros_like(prediction)
    target[:, 2] = 1.0
    metric = AngularError()
    metric.update(prediction, target, torch.ones(1, 1, len(degrees), dtype=torch.bool))
    median = metric.compute()["median"]
    assert median == pytest.approx(20.015, abs=1e-9)  # centre of the bin [20.01, 20.02)
    assert abs(median - float(np.median(degrees))) <= BIN_WIDTH_DEG / 2


def test_updates_stream_like_one_big_batch() -> None:
    batches = _batches(5, n=4)
    streamed, whole = AngularError(), AngularError()
    for batch in batches:
        streamed.update(*batch)
    whole.update(*(torch.cat(parts) for parts in zip(*batches, strict=True)))
    a, b = streamed.compute(), whole.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12)


def test_a_batch_without_kept_pixels_changes_nothing() -> None:
    batches = _batches(6)
    metric = AngularError()
    for batch in batches:
        metric.update(*batch)
    before = metric.compute()
    p, t, v = batches[0]
    metric.update(p, t, torch.zeros_like(v))
    metric.update(p, torch.zeros_like(t), v)
    assert metric.compute() == before


def test_contract() -> None:
    results = check_metric(AngularError, _batches(3), other_batches=_batches(4))
    assert 0.0 <= results["pct_11.25"] <= results["pct_22.5"] <= results["pct_30"] <= 100.0
    assert "0.01deg" in AngularError.protocol


def test_contract_with_nan_on_invalid_pixels() -> None:
    check_metric(AngularError, _messy_batches(7), other_batches=_messy_batches(8))


def test_every_result_declares_its_direction() -> None:
    results = check_metric(AngularError, _batches(9))
    assert set(AngularError.higher_is_better) == set(results) == KEYS
    assert {k for k, higher in AngularError.higher_is_better.items() if higher} == {
        "pct_11.25", "pct_22.5", "pct_30",
    }
    assert AngularError.protocol == "pixel-pooled/median-histogram-0.01deg"


def test_empty_state_is_nan() -> None:
    results = AngularError().compute()
    assert set(results) == KEYS and all(math.isnan(v) for v in results.values())


def test_registered_with_a_parameter_model() -> None:
    registry = isolated_manager(normals_plugin).registry("metrics")
    assert type(registry.create("angular_error")) is AngularError
    with pytest.raises(pixcore.ConfigError, match="thresholds"):
        registry.create("angular_error", {"thresholds": [5.0]})
