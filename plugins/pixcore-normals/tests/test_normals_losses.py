"""The angular, cosine and normals_l1 losses: numpy references, closed forms, gradients,
the Loss contract and the registration."""

from __future__ import annotations

import math

import numpy as np
import pixcore
import pytest
import torch
import torch.nn.functional as F
from pixcore.testing import check_loss, isolated_manager
from pixcore_normals import AngularLoss, CosineLoss, NormalsL1Loss
from pixcore_normals import _plugin as normals_plugin

LOSSES = {"angular": AngularLoss, "cosine": CosineLoss, "normals_l1": NormalsL1Loss}


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prediction = F.normalize(torch.randn(2, 3, 7, 9, generator=g), dim=1)
    target = F.normalize(torch.randn(2, 3, 7, 9, generator=g), dim=1)
    valid = torch.rand(2, 7, 9, generator=g) > 0.3
    target = target * valid.unsqueeze(1)  # zeros on invalid pixels, as data sets store them
    return prediction, target, valid


def _unnormalised_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectors of random lengths; NaN targets and huge predictions on invalid pixels."""
    g = torch.Generator().manual_seed(seed)
    lengths = 0.2 + 3 * torch.rand(2, 1, 6, 5, generator=g)
    prediction = torch.randn(2, 3, 6, 5, generator=g) * lengths
    target = torch.randn(2, 3, 6, 5, generator=g) * (0.5 + torch.rand(2, 1, 6, 5, generator=g))
    valid = torch.rand(2, 6, 5, generator=g) > 0.35
    target = torch.where(valid.unsqueeze(1), target, torch.full_like(target, math.nan))
    prediction = torch.where(valid.unsqueeze(1), prediction, torch.full_like(prediction, 1e30))
    return prediction, target, valid


def _reference(kind: str, p: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> float:
    """The loss by a plain loop over pixels with the math module (float64)."""
    values = []
    pn, tn, vn = p.double().numpy(), t.double().numpy(), v.numpy()
    for b, y, x in zip(*np.nonzero(vn), strict=True):
        a, c = pn[b, :, y, x], tn[b, :, y, x]
        if not np.isfinite(c).all() or math.sqrt(sum(ci * ci for ci in c)) <= 1e-6:
            continue
        a = a / math.sqrt(sum(ai * ai for ai in a))
        c = c / math.sqrt(sum(ci * ci for ci in c))
        dot = max(-1.0, min(1.0, sum(ai * ci for ai, ci in zip(a, c, strict=True))))
        if kind == "angular":
            values.append(math.acos(dot))
        elif kind == "cosine":
            values.append(1.0 - dot)
        else:
            values.append(sum(abs(ai - ci) for ai, ci in zip(a, c, strict=True)))
    return sum(values) / len(values) if values else 0.0


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


def test_normals_l1_matches_numpy() -> None:
    p, t, v = _batch(6)
    pn = p.permute(0, 2, 3, 1).numpy()[v.numpy()].astype(np.float64)
    tn = t.permute(0, 2, 3, 1).numpy()[v.numpy()].astype(np.float64)
    pn /= np.linalg.norm(pn, axis=1, keepdims=True)
    tn /= np.linalg.norm(tn, axis=1, keepdims=True)
    expected = float(np.mean(np.abs(pn - tn).sum(axis=1)))
    assert NormalsL1Loss()(3.0 * p, t, v).total.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_a_per_pixel_loop_on_unnormalised_vectors(kind: str, seed: int) -> None:
    p, t, v = _unnormalised_batch(seed)
    v[0, 0, 0], t[0, :, 0, 0] = True, 0.0  # valid but no normal: skipped
    out = LOSSES[kind]()(p, t, v)
    expected = _reference(kind, p, t, v)
    assert out.total.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert out.parts[kind].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert torch.isfinite(out.total)


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_float64_inputs_give_float64_exact_values(kind: str) -> None:
    p, t, v = _unnormalised_batch(2)
    out = LOSSES[kind]()(p.double(), t.double(), v)
    assert out.total.dtype == torch.float64
    assert out.total.item() == pytest.approx(_reference(kind, p, t, v), rel=1e-12, abs=1e-14)


def test_closed_forms_at_known_angles() -> None:
    # One pixel per angle about the y axis: target (0, 0, -1), prediction rotated by a.
    angles = np.radians([0.0, 10.0, 45.0, 90.0, 135.0])
    p = torch.tensor(np.stack([np.sin(angles), np.zeros_like(angles), -np.cos(angles)]))
    p = p.view(1, 3, 1, -1)
    t = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).view(1, 3, 1, 1).expand_as(p)
    v = torch.ones(1, 1, len(angles), dtype=torch.bool)
    assert AngularLoss()(p, t, v).total.item() == pytest.approx(float(np.mean(angles)), rel=1e-12)
    assert CosineLoss()(p, t, v).total.item() == pytest.approx(
        float(np.mean(1.0 - np.cos(angles))), rel=1e-12
    )
    l1 = np.abs(np.sin(angles)) + np.abs(1.0 - np.cos(angles))  # |dx| + |dz|
    assert NormalsL1Loss()(p, t, v).total.item() == pytest.approx(float(np.mean(l1)), rel=1e-12)


def test_pixels_are_pooled_over_the_batch_not_averaged_per_image() -> None:
    # Image 0: one valid pixel at 90 degrees; image 1: three valid pixels, exact.
    t = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).repeat(2, 1, 1, 3)
    p = t.clone()
    p[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    v = torch.tensor([[[True, False, False]], [[True, True, True]]])
    assert AngularLoss()(p, t, v).total.item() == pytest.approx((math.pi / 2) / 4, rel=1e-6)
    assert CosineLoss()(p, t, v).total.item() == pytest.approx(1.0 / 4, rel=1e-6)
    assert NormalsL1Loss()(p, t, v).total.item() == pytest.approx(2.0 / 4, rel=1e-6)


@pytest.mark.parametrize("kind", sorted(LOSSES))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_identical_and_opposite_normals_have_finite_gradients(kind: str, sign: float) -> None:
    _, t, v = _batch(2)
    prediction = (sign * t).clone().requires_grad_(True)
    out = LOSSES[kind]()(prediction, t, v)
    if sign > 0:
        assert out.total.item() == pytest.approx(0.0, abs=1e-6)
    else:
        kept = t.permute(0, 2, 3, 1)[v].double()
        expected = {
            "angular": math.pi,
            "cosine": 2.0,
            "normals_l1": float((2.0 * F.normalize(kept, dim=1)).abs().sum(1).mean()),
        }[kind]
        assert out.total.item() == pytest.approx(expected, abs=2e-3 if kind == "angular" else 1e-5)
    out.total.backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()


def test_angular_gradient_stays_bounded_near_a_perfect_prediction() -> None:
    t = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1)
    valid = torch.ones(1, 1, 1, dtype=torch.bool)
    for angle in (1e-1, 1e-2, 1e-3, 1e-5):
        p = torch.tensor([np.sin(angle), 0.0, -np.cos(angle)], dtype=torch.float32).view(1, 3, 1, 1)
        p.requires_grad_(True)
        AngularLoss()(p, t, valid).total.backward()
        assert p.grad is not None and float(p.grad.norm()) < 2.0


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_gradients_match_finite_differences(kind: str) -> None:
    g = torch.Generator().manual_seed(7)
    p = torch.randn(1, 3, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 3, 2, 3, generator=g, dtype=torch.float64)
    v = torch.tensor([[[True, False, True], [True, True, False]]])
    loss = LOSSES[kind]()
    assert torch.autograd.gradcheck(lambda x: loss(x, t, v).total, (p,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_contract(kind: str) -> None:
    p, t, v = _batch(3)
    op, ot, _ = _batch(4)
    check_loss(LOSSES[kind](), p, t, v, other_prediction=op, other_target=ot)


def test_zero_length_truth_is_excluded_even_when_valid() -> None:
    p, t, v = _batch(5)
    v[0, 0, 0] = True
    t[0, :, 0, 0] = 0.0
    v2 = v.clone()
    v2[0, 0, 0] = False
    for loss in (AngularLoss(), CosineLoss(), NormalsL1Loss()):
        with_zero = loss(p, t, v).total.item()
        assert math.isfinite(with_zero)
        assert with_zero == pytest.approx(loss(p, t, v2).total.item())


def test_no_kept_pixel_gives_zero_with_a_gradient_path() -> None:
    p, t, _ = _batch(8)
    p.requires_grad_(True)
    for loss in (AngularLoss(), CosineLoss(), NormalsL1Loss()):
        out = loss(p, torch.zeros_like(t), torch.ones(2, 7, 9, dtype=torch.bool))
        assert out.total.item() == 0.0
        out.total.backward()
        assert p.grad is not None and not p.grad.any()


def test_shape_errors_are_clear() -> None:
    one_channel = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r"normals_l1: .*\[B, 3, H, W\]"):
        NormalsL1Loss()(one_channel, one_channel, torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"angular: valid \(1, 3, 3\) does not match"):
        maps = torch.zeros(1, 3, 2, 2)
        AngularLoss()(maps, maps, torch.ones(1, 3, 3, dtype=torch.bool))


def test_registered_with_parameter_models() -> None:
    registry = isolated_manager(normals_plugin).registry("losses")
    assert sorted(registry.list()) == ["angular", "cosine", "normals_l1"]
    for name, cls in LOSSES.items():
        assert type(registry.create(name)) is cls
        assert registry.get(name).description
        with pytest.raises(pixcore.ConfigError, match="weight"):
            registry.create(name, {"weight": 2.0})
