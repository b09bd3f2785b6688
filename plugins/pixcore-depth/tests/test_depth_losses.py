"""The depth losses against numpy formulas, loops and closed forms; the Loss contract."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from pixcore.testing import check_loss, isolated_manager
from pixcore_depth import BerHuLoss, GradientMatchingLoss, L1Loss, SILogLoss, SSILoss
from pixcore_depth import _plugin as depth_plugin

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _batch(seed: int, size: tuple[int, int] = (9, 12)) -> Batch:
    g = torch.Generator().manual_seed(seed)
    prediction = 0.2 + 5 * torch.rand(2, 1, *size, generator=g)
    target = 0.5 + 5 * torch.rand(2, 1, *size, generator=g)
    valid = torch.rand(2, *size, generator=g) > 0.3
    target[~valid.unsqueeze(1)] = 0.0  # what data sets store on invalid pixels
    return prediction, target, valid


def _numpy(batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, t, v = batch
    return p[:, 0].double().numpy(), t[:, 0].double().numpy(), v.numpy()


# --------------------------------------------------------------------------------------
# silog
# --------------------------------------------------------------------------------------


def _silog_reference(batch: Batch, lam: float, scale: float = 1.0, root: bool = True) -> float:
    p, t, v = _numpy(batch)
    d = np.log(p[v]) - np.log(t[v])
    value = np.mean(d**2) - lam * np.mean(d) ** 2
    return float(scale * (np.sqrt(value) if root else value))


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.85, 1.0])
def test_silog_matches_numpy(lam: float) -> None:
    batch = _batch(0)
    out = SILogLoss(variance_focus=lam)(*batch)
    assert out.total.item() == pytest.approx(_silog_reference(batch, lam), rel=1e-5)


@pytest.mark.parametrize(("scale", "root"), [(10.0, True), (1.0, False), (10.0, False)])
def test_silog_scale_and_square_root(scale: float, root: bool) -> None:
    batch = _batch(8)
    out = SILogLoss(variance_focus=0.5, scale=scale, sqrt=root)(*batch)
    expected = _silog_reference(batch, 0.5, scale, root)
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    assert out.parts["silog"].item() == pytest.approx(expected, rel=1e-5)


def test_silog_with_lambda_0_is_the_rmse_of_log_depth() -> None:
    prediction, target, valid = _batch(1)
    d = (prediction.log() - target.clamp(min=1e-9).log())[:, 0][valid]
    assert SILogLoss(variance_focus=0.0)(prediction, target, valid).total.item() == pytest.approx(
        d.square().mean().sqrt().item(), rel=1e-5
    )


@pytest.mark.parametrize("scale", [1.0, 0.3, 2.5])
def test_silog_of_a_scaled_truth_is_zero_with_lambda_1(scale: float) -> None:
    _, target, valid = _batch(2)
    prediction = (scale * target.clamp(min=0.1)).requires_grad_(True)
    out = SILogLoss(variance_focus=1.0)(prediction, target, valid)
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


def test_a_valid_pixel_without_depth_is_skipped() -> None:
    prediction, target, valid = _batch(7)
    target[0, 0, 0, 0], valid[0, 0, 0] = 0.0, True
    target[1, 0, 0, 0], valid[1, 0, 0] = math.nan, True
    for loss in (SILogLoss(), L1Loss(), BerHuLoss(), SSILoss(), GradientMatchingLoss()):
        with_them = loss(prediction, target, valid).total
        valid[0, 0, 0] = valid[1, 0, 0] = False
        assert torch.isfinite(with_them)
        assert with_them.item() == loss(prediction, target, valid).total.item()
        valid[0, 0, 0] = valid[1, 0, 0] = True


# --------------------------------------------------------------------------------------
# l1 and berhu
# --------------------------------------------------------------------------------------


def test_l1_matches_numpy() -> None:
    batch = _batch(4)
    p, t, v = _numpy(batch)
    out = L1Loss()(*batch)
    assert out.total.item() == pytest.approx(float(np.mean(np.abs(p - t)[v])), rel=1e-6)


def _berhu_reference(batch: Batch, threshold: float) -> float:
    p, t, v = _numpy(batch)
    residuals = [p[i] - t[i] for i in zip(*np.nonzero(v), strict=True)]
    c = threshold * max(abs(r) for r in residuals)
    total = 0.0
    for r in residuals:
        total += abs(r) if abs(r) <= c else (r * r + c * c) / (2 * c)
    return total / len(residuals)


@pytest.mark.parametrize("threshold", [0.2, 0.5])
def test_berhu_matches_a_loop(threshold: float) -> None:
    batch = _batch(5)
    out = BerHuLoss(threshold=threshold)(*batch)
    assert out.total.item() == pytest.approx(_berhu_reference(batch, threshold), rel=1e-5)


def test_berhu_is_l1_below_c_and_the_quadratic_above() -> None:
    target = torch.full((1, 1, 1, 5), 2.0)
    residual = torch.tensor([0.5, -1.0, 2.0, -4.0, 10.0])  # c = 0.2 * 10 = 2
    prediction = (target + residual.view(1, 1, 1, 5)).requires_grad_(True)
    valid = torch.ones(1, 1, 5, dtype=torch.bool)
    per_pixel = [0.5, 1.0, 2.0, (16.0 + 4.0) / 4.0, (100.0 + 4.0) / 4.0]
    out = BerHuLoss()(prediction, target, valid)
    assert out.total.item() == pytest.approx(sum(per_pixel) / 5, rel=1e-6)
    assert out.parts["berhu_c"].item() == pytest.approx(2.0)
    # dB/dr: sign(r) on the L1 side, r / c on the quadratic side; c is a constant.
    out.total.backward()
    expected_grad = torch.tensor([1.0, -1.0, 1.0, -4.0 / 2.0, 10.0 / 2.0]) / 5
    assert prediction.grad is not None
    assert torch.allclose(prediction.grad.flatten(), expected_grad)
    prediction = prediction.detach()
    # With c at the largest residual, every pixel is on the L1 side.
    assert BerHuLoss(threshold=1.0)(prediction, target, valid).total.item() == pytest.approx(
        L1Loss()(prediction, target, valid).total.item(), rel=1e-6
    )


def test_berhu_of_the_truth_is_zero() -> None:
    _, target, valid = _batch(6)
    prediction = target.clamp(min=0.1).requires_grad_(True)
    out = BerHuLoss()(prediction, target, valid)
    assert out.total.item() == 0.0
    out.total.backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()


# --------------------------------------------------------------------------------------
# ssi and gradient matching: numpy references
# --------------------------------------------------------------------------------------


def _aligned_residuals(
    batch: Batch, space: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image lstsq of [f(p), 1] against f(t); residual maps (NaN off the mask) and mask."""
    p, t, v = _numpy(batch)
    f = (lambda a: a) if space == "depth" else (lambda a: 1.0 / a)
    residual = np.full(p.shape, np.nan)
    for b in range(p.shape[0]):
        if not v[b].any():
            continue
        x, z = f(p[b][v[b]]), f(t[b][v[b]])
        (s, c), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], axis=1), z, rcond=None)
        residual[b][v[b]] = s * x + c - z
    return residual, v


def _ssi_reference(batch: Batch, space: str, residual: str, trim: float) -> float:
    r, v = _aligned_residuals(batch, space)
    total, count = 0.0, 0
    for b in range(r.shape[0]):
        rho = np.abs(r[b][v[b]]) if residual == "mae" else r[b][v[b]] ** 2
        rho = np.sort(rho)
        kept = len(rho) - int(np.floor(trim * len(rho)))
        total += float(rho[:kept].sum())
        count += kept
    return total / count


def _gradient_reference(r: np.ndarray, v: np.ndarray, scales: int) -> float:
    total = 0.0
    for k in range(scales):
        step = 2**k
        rk, vk = r[:, ::step, ::step], v[:, ::step, ::step]
        acc = 0.0
        batch, height, width = rk.shape
        for b in range(batch):
            for i in range(height):
                for j in range(width):
                    if j + 1 < width and vk[b, i, j] and vk[b, i, j + 1]:
                        acc += abs(rk[b, i, j + 1] - rk[b, i, j])
                    if i + 1 < height and vk[b, i, j] and vk[b, i + 1, j]:
                        acc += abs(rk[b, i + 1, j] - rk[b, i, j])
        if vk.sum():
            total += acc / vk.sum()
    return total


@pytest.mark.parametrize("space", ["depth", "disparity"])
@pytest.mark.parametrize("residual", ["mae", "mse"])
@pytest.mark.parametrize("trim", [0.0, 0.25])
def test_ssi_matches_numpy(space: Any, residual: Any, trim: float) -> None:
    batch = _batch(10, size=(10, 13))
    out = SSILoss(space=space, residual=residual, trim=trim)(*batch)
    expected = _ssi_reference(batch, space, residual, trim)
    assert out.total.item() == pytest.approx(expected, rel=1e-4)


def test_ssi_with_gradient_term_matches_numpy() -> None:
    batch = _batch(11, size=(12, 14))
    out = SSILoss(gradient_weight=0.5, gradient_scales=3)(*batch)
    r, v = _aligned_residuals(batch, "depth")
    data = _ssi_reference(batch, "depth", "mae", 0.0)
    grad = _gradient_reference(r, v, 3)
    assert out.parts["ssi"].item() == pytest.approx(data, rel=1e-4)
    assert out.parts["gradient_matching"].item() == pytest.approx(grad, rel=1e-4)
    assert out.total.item() == pytest.approx(data + 0.5 * grad, rel=1e-4)


@pytest.mark.parametrize("residual", ["mae", "mse"])
def test_ssi_of_an_affine_prediction_is_zero(residual: Any) -> None:
    _, target, valid = _batch(12)
    truth = torch.where(valid.unsqueeze(1), target, 1.0)
    prediction = (2 * truth + 1).requires_grad_(True)  # s = 1/2, t = -1/2 undo it
    out = SSILoss(residual=residual, gradient_weight=0.5)(prediction, target, valid)
    assert out.total.item() == pytest.approx(0.0, abs=1e-5)
    out.total.backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()
    # In disparity space, an affine map of 1/depth is undone instead.
    disparity = (truth / (2.0 + 3.0 * truth)).requires_grad_(True)  # 1/p = 2/y + 3
    assert SSILoss(space="disparity")(disparity, target, valid).total.item() == pytest.approx(
        0.0, abs=1e-5
    )


def test_ssi_ignores_a_scale_and_shift_of_the_prediction() -> None:
    batch = _batch(13)
    prediction, target, valid = batch
    loss = SSILoss()
    assert loss(3.0 * prediction + 0.7, target, valid).total.item() == pytest.approx(
        loss(*batch).total.item(), rel=1e-4
    )


def test_ssi_with_a_constant_prediction_fits_the_mean() -> None:
    _, target, valid = _batch(14)
    prediction = torch.full_like(target, 2.0)
    out = SSILoss()(prediction, target, valid)
    t, v = target[:, 0].double().numpy(), valid.numpy()
    expected = sum(np.abs(t[b][v[b]] - t[b][v[b]].mean()).sum() for b in range(2)) / v.sum()
    assert out.total.item() == pytest.approx(float(expected), rel=1e-5)


def test_ssi_aligns_each_image_on_its_own() -> None:
    # Two images whose predictions are affine maps of their targets with different
    # coefficients: one global scale and shift could not fit both, per-image fits do.
    _, target, valid = _batch(15)
    truth = torch.where(valid.unsqueeze(1), target, 1.0)
    prediction = torch.cat([2 * truth[:1] + 1, 0.5 * truth[1:] + 3])
    assert SSILoss()(prediction, target, valid).total.item() == pytest.approx(0.0, abs=1e-5)
    # An image with no valid pixel contributes nothing.
    valid[1] = False
    single = SSILoss()(_batch(16)[0], target, valid).total.item()
    first = SSILoss()(_batch(16)[0][:1], target[:1], valid[:1]).total.item()
    assert single == pytest.approx(first, rel=1e-6)


@pytest.mark.parametrize("scales", [1, 3])
def test_gradient_matching_metric_mode_matches_a_loop(scales: int) -> None:
    batch = _batch(20, size=(11, 14))
    p, t, v = _numpy(batch)
    residual = np.where(v, np.log(p) - np.log(np.where(v, t, 1.0)), np.nan)
    out = GradientMatchingLoss(scales=scales)(*batch)
    assert out.total.item() == pytest.approx(_gradient_reference(residual, v, scales), rel=1e-4)


@pytest.mark.parametrize("space", ["depth", "disparity"])
def test_gradient_matching_relative_mode_matches_a_loop(space: Any) -> None:
    batch = _batch(21, size=(11, 14))
    r, v = _aligned_residuals(batch, space)
    out = GradientMatchingLoss(scales=4, mode="relative", space=space)(*batch)
    assert out.total.item() == pytest.approx(_gradient_reference(r, v, 4), rel=1e-4)


def test_gradient_matching_counts_a_difference_only_between_two_valid_pixels() -> None:
    target = torch.ones(1, 1, 1, 4)
    prediction = torch.tensor([1.0, 1.0, 100.0, 1.0]).view(1, 1, 1, 4)
    valid = torch.tensor([[[True, True, False, True]]])
    # The jump at the invalid third pixel must not count: the log residual is flat.
    assert GradientMatchingLoss(scales=1)(prediction, target, valid).total.item() == 0.0
    valid[0, 0, 2] = True
    expected = 2 * math.log(100.0) / 4  # two differences of ln 100 over 4 valid pixels
    out = GradientMatchingLoss(scales=1)(prediction, target, valid)
    assert out.total.item() == pytest.approx(expected, rel=1e-6)


def test_gradient_matching_is_zero_for_a_scaled_truth_in_metric_mode() -> None:
    _, target, valid = _batch(22)
    prediction = 3.0 * torch.where(valid.unsqueeze(1), target, 1.0)
    out = GradientMatchingLoss()(prediction, target, valid)
    assert out.total.item() == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------------------
# the contract and the registry
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [
        SILogLoss(),
        SILogLoss(variance_focus=1.0, scale=10.0),
        SILogLoss(sqrt=False),
        L1Loss(),
        BerHuLoss(),
        SSILoss(),
        SSILoss(space="disparity", residual="mse", trim=0.2, gradient_weight=0.5),
        GradientMatchingLoss(),
        GradientMatchingLoss(mode="relative", space="disparity", scales=2),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_contract(loss: pixcore.Loss) -> None:
    prediction, target, valid = _batch(5, size=(16, 20))
    other_prediction, other_target, _ = _batch(6, size=(16, 20))
    check_loss(loss, prediction, target, valid, other_prediction=other_prediction,
               other_target=other_target + 1.0)


@pytest.mark.parametrize(
    "loss", [SILogLoss(), L1Loss(), BerHuLoss(), SSILoss(trim=0.2, gradient_weight=1.0),
             GradientMatchingLoss(mode="relative")],
    ids=lambda loss: type(loss).__name__,
)
def test_nothing_valid_gives_zero_with_a_gradient_path(loss: pixcore.Loss) -> None:
    prediction, target, valid = _batch(30)
    prediction.requires_grad_(True)
    out = loss(prediction, target, torch.zeros_like(valid))
    assert out.total.item() == 0.0 and out.total.requires_grad
    out.total.backward()
    assert prediction.grad is not None and (prediction.grad == 0).all()


def test_parameters() -> None:
    registry = isolated_manager(depth_plugin).registry("losses")
    with pytest.raises(pixcore.ConfigError, match="variance_focus"):
        registry.create("silog", {"variance_focus": 1.5})
    with pytest.raises(pixcore.ConfigError, match="lambda_"):
        registry.create("silog", {"lambda_": 0.5})
    silog = registry.create("silog", {"variance_focus": 0.5, "scale": 10, "sqrt": False})
    assert (silog.variance_focus, silog.scale, silog.sqrt) == (0.5, 10.0, False)
    assert isinstance(registry.create("l1"), L1Loss)
    with pytest.raises(pixcore.ConfigError, match="threshold"):
        registry.create("berhu", {"threshold": 0.0})
    with pytest.raises(pixcore.ConfigError, match="space"):
        registry.create("ssi", {"space": "inverse"})
    with pytest.raises(pixcore.ConfigError, match="trim"):
        registry.create("ssi", {"trim": 1.0})
    ssi = registry.create("ssi", {"trim": 0.2, "gradient_weight": 0.5})
    assert (ssi.trim, ssi.gradient_weight, ssi.space) == (0.2, 0.5, "depth")
    gm = registry.create("gradient_matching", {"scales": 2}, context={"mode": "relative"})
    assert (gm.scales, gm.mode) == (2, "relative")
    with pytest.raises(pixcore.ConfigError, match="scales"):
        registry.create("gradient_matching", {"scales": 0})


def test_relative_task_gives_its_mode_to_gradient_matching() -> None:
    manager = isolated_manager(depth_plugin)
    task = manager.registry("tasks").create("depth", {"mode": "relative"})
    loss = manager.registry("losses").create("gradient_matching", context=task.context())
    assert loss.mode == "relative"
