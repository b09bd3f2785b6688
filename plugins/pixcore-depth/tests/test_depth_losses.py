"""The silog and l1 losses: closed forms, numpy references, the Loss contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pixcore
from pixcore.testing import check_loss, isolated_manager
from pixcore_depth import L1Loss, SILogLoss
from pixcore_depth import _plugin as depth_plugin


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prediction = 0.2 + 5 * torch.rand(2, 1, 9, 12, generator=g)
    target = 0.5 + 5 * torch.rand(2, 1, 9, 12, generator=g)
    valid = torch.rand(2, 9, 12, generator=g) > 0.3
    target[~valid.unsqueeze(1)] = 0.0  # what data sets store on invalid pixels
    return prediction, target, valid


def _silog_reference(p: np.ndarray, t: np.ndarray, v: np.ndarray, lam: float) -> float:
    d = np.log(p[:, 0][v].astype(np.float64)) - np.log(t[:, 0][v].astype(np.float64))
    return float(np.sqrt(np.mean(d**2) - lam * np.mean(d) ** 2))


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.85, 1.0])
def test_silog_matches_numpy(lam: float) -> None:
    prediction, target, valid = _batch(0)
    out = SILogLoss(lambda_=lam)(prediction, target, valid)
    expected = _silog_reference(prediction.numpy(), target.numpy(), valid.numpy(), lam)
    assert out.total.item() == pytest.approx(expected, rel=1e-5)


def test_silog_with_lambda_0_is_the_rmse_of_log_depth() -> None:
    prediction, target, valid = _batch(1)
    d = (prediction.log() - target.clamp(min=1e-9).log())[:, 0][valid]
    assert SILogLoss(lambda_=0.0)(prediction, target, valid).total.item() == pytest.approx(
        d.square().mean().sqrt().item(), rel=1e-5
    )


@pytest.mark.parametrize("scale", [1.0, 0.3, 2.5])
def test_silog_of_a_scaled_truth_is_zero_with_lambda_1(scale: float) -> None:
    _, target, valid = _batch(2)
    prediction = (scale * target.clamp(min=0.1)).requires_grad_(True)
    out = SILogLoss(lambda_=1.0)(prediction, target, valid)
    assert out.total.item() == pytest.approx(0.0, abs=1e-6)
    out.total.backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()


def test_silog_of_the_truth_is_exactly_zero_with_finite_gradient() -> None:
    _, target, valid = _batch(3)
    prediction = target.clone().clamp(min=0.1).requires_grad_(True)
    out = SILogLoss()(prediction, target, valid)
    assert out.total.item() == 0.0
    out.total.backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()


def test_l1_matches_numpy() -> None:
    prediction, target, valid = _batch(4)
    expected = np.mean(np.abs(prediction.numpy() - target.numpy())[:, 0][valid.numpy()])
    out = L1Loss()(prediction, target, valid)
    assert out.total.item() == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("loss", [SILogLoss(), SILogLoss(lambda_=1.0), L1Loss()])
def test_contract(loss: pixcore.Loss) -> None:
    prediction, target, valid = _batch(5)
    other_prediction, other_target, _ = _batch(6)
    check_loss(loss, prediction, target, valid, other_prediction=other_prediction,
               other_target=other_target + 1.0)


def test_a_valid_pixel_without_depth_is_skipped() -> None:
    prediction, target, valid = _batch(7)
    target[0, 0, 0, 0], valid[0, 0, 0] = 0.0, True
    silog = SILogLoss()(prediction, target, valid).total
    valid[0, 0, 0] = False
    assert torch.isfinite(silog)
    assert silog.item() == SILogLoss()(prediction, target, valid).total.item()


def test_parameters() -> None:
    registry = isolated_manager(depth_plugin).registry("losses")
    with pytest.raises(pixcore.ConfigError, match="lambda_"):
        registry.create("silog", {"lambda_": 1.5})
    with pytest.raises(pixcore.ConfigError, match="lam"):
        registry.create("silog", {"lam": 0.5})
    assert registry.create("silog", {"lambda_": 0.5}).lambda_ == 0.5
    assert isinstance(registry.create("l1"), L1Loss)
