"""The angular_error metric against numpy (np.median within the histogram resolution)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixcore.testing import check_metric
from pixcore_normals import AngularError
from pixcore_normals._metric import BIN_WIDTH_DEG

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


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


def _angles(batches: list[Batch]) -> np.ndarray:
    angles = []
    for p, t, v in batches:
        pn = p.permute(0, 2, 3, 1).numpy().astype(np.float64)
        tn = t.permute(0, 2, 3, 1).numpy().astype(np.float64)
        norms = np.linalg.norm(tn, axis=-1)
        keep = v.numpy() & (norms > 1e-6)
        a, b = pn[keep], tn[keep]
        cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        angles.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.concatenate(angles)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy(seed: int) -> None:
    batches = _batches(seed)
    metric = AngularError()
    for batch in batches:
        metric.update(*batch)
    results, angles = metric.compute(), _angles(batches)
    assert results["mean"] == pytest.approx(float(np.mean(angles)), rel=1e-9)
    assert results["rmse"] == pytest.approx(float(np.sqrt(np.mean(angles**2))), rel=1e-9)
    for key, threshold in (("pct_11.25", 11.25), ("pct_22.5", 22.5), ("pct_30", 30.0)):
        assert results[key] == pytest.approx(100.0 * float(np.mean(angles < threshold)), abs=1e-9)
    assert abs(results["median"] - float(np.median(angles))) <= BIN_WIDTH_DEG / 2 + 1e-9


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


def test_contract() -> None:
    results = check_metric(AngularError, _batches(3), other_batches=_batches(4))
    assert 0.0 <= results["pct_11.25"] <= results["pct_22.5"] <= results["pct_30"] <= 100.0
    assert "0.01deg" in AngularError.protocol


def test_empty_state_is_nan() -> None:
    assert all(math.isnan(v) for v in AngularError().compute().values())
