"""The angular and cosine losses: closed forms, numpy references, the Loss contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pixcore
from pixcore.testing import check_loss
from pixcore_normals import AngularLoss, CosineLoss


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prediction = F.normalize(torch.randn(2, 3, 7, 9, generator=g), dim=1)
    target = F.normalize(torch.randn(2, 3, 7, 9, generator=g), dim=1)
    valid = torch.rand(2, 7, 9, generator=g) > 0.3
    target = target * valid.unsqueeze(1)  # zeros on invalid pixels, as data sets store them
    return prediction, target, valid


def _cosines(p: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    pn = p.permute(0, 2, 3, 1).numpy()[v.numpy()].astype(np.float64)
    tn = t.permute(0, 2, 3, 1).numpy()[v.numpy()].astype(np.float64)
    pn /= np.linalg.norm(pn, axis=1, keepdims=True)
    tn /= np.linalg.norm(tn, axis=1, keepdims=True)
    return np.clip(np.einsum("ij,ij->i", pn, tn), -1.0, 1.0)


def test_angular_matches_numpy() -> None:
    p, t, v = _batch(0)
    expected = float(np.mean(np.arccos(_cosines(p, t, v))))
    assert AngularLoss()(2.0 * p, t, v).total.item() == pytest.approx(expected, rel=1e-5)


def test_cosine_matches_numpy() -> None:
    p, t, v = _batch(1)
    expected = float(np.mean(1.0 - _cosines(p, t, v)))
    assert CosineLoss()(p, t, v).total.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss", [AngularLoss(), CosineLoss()])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_identical_and_opposite_normals_have_finite_gradients(
    loss: pixcore.Loss, sign: float
) -> None:
    _, t, v = _batch(2)
    prediction = (sign * t).clone().requires_grad_(True)
    out = loss(prediction, t, v)
    if sign > 0:
        assert out.total.item() == pytest.approx(0.0, abs=1e-6)
    else:
        expected = np.pi if isinstance(loss, AngularLoss) else 2.0
        assert out.total.item() == pytest.approx(expected, abs=2e-3)
    out.total.backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()


def test_angular_gradient_stays_bounded_near_a_perfect_prediction() -> None:
    t = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1)
    valid = torch.ones(1, 1, 1, dtype=torch.bool)
    for angle in (1e-1, 1e-2, 1e-3):
        p = torch.tensor([np.sin(angle), 0.0, -np.cos(angle)], dtype=torch.float32).view(1, 3, 1, 1)
        p.requires_grad_(True)
        AngularLoss()(p, t, valid).total.backward()
        assert p.grad is not None and float(p.grad.norm()) < 2.0


@pytest.mark.parametrize("loss", [AngularLoss(), CosineLoss()])
def test_contract(loss: pixcore.Loss) -> None:
    p, t, v = _batch(3)
    op, ot, _ = _batch(4)
    check_loss(loss, p, t, v, other_prediction=op, other_target=ot)


def test_zero_length_truth_is_excluded_even_when_valid() -> None:
    p, t, v = _batch(5)
    reference = AngularLoss()(p, t, v).total
    v[0, 0, 0] = True
    t[0, :, 0, 0] = 0.0
    v2 = v.clone()
    v2[0, 0, 0] = False
    with_zero = AngularLoss()(p, t, v).total.item()
    assert with_zero == pytest.approx(AngularLoss()(p, t, v2).total.item())
    assert torch.isfinite(reference)


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        one_channel = torch.zeros(1, 1, 2, 2)
        AngularLoss()(one_channel, one_channel, torch.ones(1, 2, 2, dtype=torch.bool))
