"""The depth_errors metric against plain numpy formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pixcore
from pixcore.testing import check_metric, isolated_manager
from pixcore_depth import DepthErrors
from pixcore_depth import _plugin as depth_plugin

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _batches(seed: int, n: int = 3) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        target = 12 * torch.rand(2, 1, 10, 8, generator=g)  # some below 0.5, some above 10
        prediction = target * (0.6 + 0.8 * torch.rand(2, 1, 10, 8, generator=g)) + 0.05
        prediction[0, 0, 0, :3] = torch.tensor([0.01, 50.0, 1e-6])  # beyond the caps
        valid = torch.rand(2, 10, 8, generator=g) > 0.2
        target[~valid.unsqueeze(1)] = 0.0
        out.append((prediction, target, valid))
    return out


def _reference(batches: list[Batch], lo: float, hi: float | None) -> dict[str, float]:
    p = np.concatenate([b[0].numpy().ravel() for b in batches]).astype(np.float64)
    y = np.concatenate([b[1].numpy().ravel() for b in batches]).astype(np.float64)
    v = np.concatenate([b[2].numpy().ravel() for b in batches])
    upper = np.inf if hi is None else hi
    keep = v & (y >= lo) & (y <= upper)
    p, y = np.clip(p[keep], lo, upper), y[keep]
    ratio = np.maximum(p / y, y / p)
    return {
        "abs_rel": float(np.mean(np.abs(p - y) / y)),
        "sq_rel": float(np.mean((p - y) ** 2 / y)),
        "rmse": float(np.sqrt(np.mean((p - y) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(y)) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(y)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


@pytest.mark.parametrize(("lo", "hi"), [(1e-3, None), (0.5, 10.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy(lo: float, hi: float | None, seed: int) -> None:
    batches = _batches(seed)
    metric = DepthErrors(min_depth=lo, max_depth=hi)
    for batch in batches:
        metric.update(*batch)
    results, expected = metric.compute(), _reference(batches, lo, hi)
    assert set(results) == set(expected)
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_contract() -> None:
    results = check_metric(
        lambda: DepthErrors(max_depth=10.0), _batches(2), other_batches=_batches(3)
    )
    assert 0.0 < results["delta1"] <= results["delta2"] <= results["delta3"] <= 1.0
    assert DepthErrors.protocol.startswith("pixel-pooled")


def test_perfect_prediction_and_empty_state() -> None:
    target = torch.full((1, 1, 2, 2), 3.0)
    metric = DepthErrors()
    metric.update(target, target, torch.ones(1, 2, 2, dtype=torch.bool))
    results = metric.compute()
    assert results["abs_rel"] == 0.0 and results["rmse"] == 0.0 and results["delta1"] == 1.0
    assert all(math.isnan(v) for v in DepthErrors().compute().values())


def test_caps_come_from_the_task_context() -> None:
    manager = isolated_manager(depth_plugin)
    task = manager.registry("tasks").create("depth", {"max_depth": 10.0})
    metric = manager.registry("metrics").create("depth_errors", context=task.context())
    assert (metric.min_depth, metric.max_depth) == (1e-3, 10.0)
    with pytest.raises(pixcore.ConfigError, match="greater than min_depth"):
        manager.registry("metrics").create("depth_errors", {"min_depth": 2.0, "max_depth": 1.0})
