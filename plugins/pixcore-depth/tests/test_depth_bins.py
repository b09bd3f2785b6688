"""Depth as classification over bins: centres, decoding, parameters, end to end."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from pixcore.plugin._params import params_model
from pixcore.testing import TINY_BACKBONE_NAME, isolated_manager, random_batch
from pixcore_depth import DepthTask, RelativeDepthTask
from pixcore_depth import _plugin as depth_plugin
from pixcore_depth._task import bin_centres, bin_edges

SPACINGS = ("uniform", "log", "sid")


# --------------------------------------------------------------------------------------
# Bin edges and centres
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spacing", "low", "high", "edges", "centres"),
    [
        # [1, 9] in four equal bins.
        ("uniform", 1.0, 9.0, [1, 3, 5, 7, 9], [2, 4, 6, 8]),
        # [1, 16]: each edge twice the previous one; centres the geometric means.
        ("log", 1.0, 16.0, [1, 2, 4, 8, 16], [2**0.5, 8**0.5, 32**0.5, 128**0.5]),
        # alpha = 1: DORN's shift xi = 1 - alpha is 0, so the edges are log's, but the
        # centres are the arithmetic midpoints (DORN's (t_i + t_{i+1}) / 2 - xi).
        ("sid", 1.0, 16.0, [1, 2, 4, 8, 16], [1.5, 3, 6, 12]),
        # alpha = 0.25, beta = 15.25: xi = 0.75, [alpha*, beta*] = [1, 16], edges 2^i - 0.75.
        ("sid", 0.25, 15.25, [0.25, 1.25, 3.25, 7.25, 15.25], [0.75, 2.25, 5.25, 11.25]),
    ],
)
def test_edges_and_centres_of_hand_computed_cases(
    spacing: Any, low: float, high: float, edges: list[float], centres: list[float]
) -> None:
    assert bin_edges(low, high, 4, spacing).tolist() == pytest.approx(edges, rel=1e-12)
    assert bin_centres(low, high, 4, spacing).tolist() == pytest.approx(centres, rel=1e-12)
    task = DepthTask(min_depth=low, max_depth=high, bins=4, bin_spacing=spacing)
    assert task.bin_centres is not None
    assert task.bin_centres.tolist() == pytest.approx(centres, rel=1e-12)


def _expected_centres(low: float, high: float, n: int, spacing: str) -> np.ndarray:
    """The centres written out from the formulas, independently of the implementation."""
    i = np.arange(n + 1, dtype=np.float64)
    if spacing == "uniform":
        e = low + (high - low) * i / n
        return (e[:-1] + e[1:]) / 2
    if spacing == "log":
        e = np.exp(np.log(low) + np.log(high / low) * i / n)
        return np.sqrt(e[:-1] * e[1:])
    # DORN (Fu et al. 2018): SID on [alpha + xi, beta + xi] with xi = 1 - alpha, shifted back.
    xi = 1.0 - low
    a, b = low + xi, high + xi
    t = np.exp(np.log(a) + np.log(b / a) * i / n)
    return (t[:-1] + t[1:]) / 2 - xi


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize(("low", "high", "n"), [(1e-3, 10.0, 7), (0.5, 80.0, 256), (2.0, 3.0, 2)])
def test_centres_follow_the_formulas(spacing: Any, low: float, high: float, n: int) -> None:
    centres = bin_centres(low, high, n, spacing).numpy()
    np.testing.assert_allclose(centres, _expected_centres(low, high, n, spacing), rtol=1e-9)
    edges = bin_edges(low, high, n, spacing).numpy()
    assert (edges[0], edges[-1]) == (low, high)  # exactly the range
    assert (np.diff(edges) > 0).all() and (np.diff(centres) > 0).all()
    assert (centres > edges[:-1]).all() and (centres < edges[1:]).all()


def test_log_and_sid_spend_their_bins_differently() -> None:
    # Over [1 mm, 10 m], log spacing puts 3 of its 4 decades (192 of 256 bins) below 1 m;
    # DORN's shifted SID reaches 1 m after log(1.999) / log(10.999) of its bins (74).
    log = bin_edges(1e-3, 10.0, 256, "log")
    sid = bin_edges(1e-3, 10.0, 256, "sid")
    assert int((log[1:] <= 1.0 + 1e-9).sum()) == 192
    assert int((sid[1:] <= 1.0).sum()) == math.floor(256 * math.log(1.999) / math.log(10.999))
    # Both widen with depth; uniform does not.
    for spacing in ("log", "sid"):
        assert (bin_edges(1e-3, 10.0, 256, spacing).diff().diff() > 0).all()
    widths = bin_edges(1e-3, 10.0, 256, "uniform").diff()
    assert torch.allclose(widths, torch.full_like(widths, (10.0 - 1e-3) / 256))


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", SPACINGS)
def test_one_hot_logits_decode_to_their_centre(spacing: Any) -> None:
    task = DepthTask(min_depth=0.1, max_depth=10.0, bins=6, bin_spacing=spacing)
    assert task.bin_centres is not None
    raw = torch.zeros(1, 6, 2, 3)
    for k in range(6):  # bin k at pixel k
        raw[0, k, k // 3, k % 3] = 60.0
    depth = task.decode(raw)
    assert depth.shape == (1, 1, 2, 3) and depth.dtype == torch.float32
    expected = task.bin_centres.float().view(1, 1, 2, 3)
    assert torch.allclose(depth, expected, rtol=1e-6)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_uniform_logits_decode_to_the_mean_centre_inside_the_range(spacing: Any) -> None:
    task = DepthTask(max_depth=10.0, bins=256, bin_spacing=spacing)  # min_depth = 1e-3
    assert task.bin_centres is not None
    mean = float(task.bin_centres.mean())
    for constant in (0.0, -3.0, 17.0):
        depth = task.decode(torch.full((2, 256, 3, 4), constant))
        assert torch.allclose(depth, torch.full((2, 1, 3, 4), mean), rtol=1e-6)
    assert 1e-3 < mean < 10.0
    if spacing == "uniform":
        assert mean == pytest.approx((1e-3 + 10.0) / 2, rel=1e-12)


def test_decode_respects_the_range_and_passes_gradients_to_every_logit() -> None:
    task = DepthTask(min_depth=0.5, max_depth=8.0, bins=16)
    generator = torch.Generator().manual_seed(0)
    raw = (1e4 * torch.randn(3, 16, 5, 7, generator=generator)).requires_grad_(True)
    depth = task.decode(raw)
    assert depth.shape == (3, 1, 5, 7)
    assert depth.min().item() >= 0.5 and depth.max().item() <= 8.0
    soft = (0.5 * torch.randn(3, 16, 5, 7, generator=generator)).requires_grad_(True)
    out = task.decode(soft)
    out.sum().backward()
    assert soft.grad is not None and torch.isfinite(soft.grad).all()
    assert (soft.grad != 0).all()
    # d depth / d logit_i = p_i (c_i - depth): positive for centres beyond the depth.
    assert task.bin_centres is not None
    p = torch.softmax(soft.detach(), dim=1)
    centres = task.bin_centres.float().view(1, -1, 1, 1)
    assert torch.allclose(soft.grad, p * (centres - out.detach()), atol=1e-6)


def test_decode_keeps_float32_centres_under_autocast() -> None:
    task = DepthTask(min_depth=0.1, max_depth=80.0, bins=64)
    assert task.bin_centres is not None
    raw = torch.full((1, 64, 1, 64), -30.0)
    raw[0, torch.arange(64), 0, torch.arange(64)] = 30.0  # pixel k: bin k
    with torch.autocast("cpu", dtype=torch.bfloat16):
        depth = task.decode(raw.bfloat16())
    assert depth.dtype == torch.float32
    assert torch.allclose(depth.flatten(), task.bin_centres.float(), rtol=1e-6)


def test_decode_refuses_a_wrong_number_of_channels() -> None:
    task = DepthTask(max_depth=10.0, bins=8)
    with pytest.raises(ValueError, match=r"bins=8 decodes bin logits \[B, 8, H, W\]"):
        task.decode(torch.zeros(1, 1, 4, 4))


def test_out_channels_and_the_regression_path() -> None:
    regression = DepthTask(max_depth=10.0)
    binned = DepthTask(max_depth=10.0, bins=32, bin_spacing="log")
    assert (regression.out_channels, regression.bins, regression.bin_centres) == (1, None, None)
    assert (binned.out_channels, binned.bins, binned.bin_spacing) == (32, 32, "log")
    assert binned.context() == regression.context()
    raw = torch.tensor([0.0, math.log(2.0), -50.0, 50.0]).view(1, 1, 2, 2)
    assert regression.decode(raw).flatten().tolist() == pytest.approx([1.0, 2.0, 1e-3, 10.0])
    again = pickle.loads(pickle.dumps(binned))
    assert again.bin_centres is not None and binned.bin_centres is not None
    assert torch.equal(again.bin_centres, binned.bin_centres) and again.out_channels == 32


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


def test_parameter_errors_name_the_parameter() -> None:
    registry = pixcore.get_plugin_manager().registry("tasks")
    with pytest.raises(pixcore.ConfigError, match=r"bins=16 needs max_depth.*set max_depth"):
        registry.create("depth", {"bins": 16})
    with pytest.raises(pixcore.ConfigError, match=r"bins: Input should be greater than or equal to 2"):
        registry.create("depth", {"bins": 1, "max_depth": 10.0})
    with pytest.raises(pixcore.ConfigError, match=r"bin_spacing: Input should be 'uniform', 'log' or 'sid'"):
        registry.create("depth", {"bins": 8, "max_depth": 10.0, "bin_spacing": "linear"})
    with pytest.raises(pixcore.ConfigError, match=r"bins=8 cannot be used with mode='relative'"):
        registry.create("depth", {"bins": 8, "max_depth": 10.0, "mode": "relative"})
    with pytest.raises(pixcore.ConfigError, match=r"parameterization='softplus' applies to regression"):
        registry.create("depth", {"bins": 8, "max_depth": 10.0, "parameterization": "softplus"})
    # The same rules when the class is created directly.
    with pytest.raises(ValueError, match="needs max_depth"):
        DepthTask(bins=4)
    with pytest.raises(ValueError, match="mode='relative'"):
        RelativeDepthTask(bins=4, max_depth=10.0)
    with pytest.raises(ValueError, match="mode='relative'"):
        DepthTask(mode="relative", bins=4, max_depth=10.0)
    # Without bins, bin_spacing is accepted and unused.
    assert registry.create("depth", {"bin_spacing": "sid"}).out_channels == 1


def test_parameters_are_described() -> None:
    component = pixcore.get_plugin_manager().registry("tasks").get("depth")
    fields = params_model(component).model_fields
    assert "AdaBins" in (fields["bins"].description or "")
    assert "DORN" in (fields["bin_spacing"].description or "")
    assert fields["bins"].default is None and fields["bin_spacing"].default == "uniform"


# --------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spacing", "loss"), [("uniform", "silog"), ("log", "l1"), ("sid", "berhu")])
def test_model_with_bins_trains_scores_and_draws(spacing: str, loss: str) -> None:
    manager = isolated_manager(depth_plugin, tiny_backbone=True)
    params = {"bins": 16, "min_depth": 0.1, "max_depth": 10.0, "bin_spacing": spacing}
    torch.manual_seed(0)
    model = pixcore.build_model(
        TINY_BACKBONE_NAME, tasks={"depth": {"params": params, "loss": loss}}, manager=manager
    )
    task = model.tasks["depth"]
    output_layer = model.heads["depth"].output
    assert isinstance(task, DepthTask) and isinstance(output_layer, torch.nn.Conv2d)
    assert task.out_channels == 16 and output_layer.out_channels == 16
    data = random_batch(task, size=(37, 45), generator=torch.Generator().manual_seed(1))
    prediction = model(data.batch["image"])["depth"]
    assert prediction.shape == (2, 1, 37, 45)
    assert prediction.min().item() >= 0.1 and prediction.max().item() <= 10.0
    # A fresh head is near zero: near-uniform probabilities, about the mean centre.
    assert task.bin_centres is not None
    assert torch.allclose(prediction, torch.full_like(prediction, float(task.bin_centres.mean())), rtol=5e-2)
    total, parts = model.compute_loss({"depth": prediction}, data.batch)
    assert torch.isfinite(total) and f"depth/{loss}" in parts
    total.backward()
    grad = output_layer.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad.abs().sum(dim=(1, 2, 3)) > 0).all()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.backbone.parameters())
    # Metrics, pictures and the baseline work on the decoded depth.
    target, valid = task.target_and_valid(data.batch)
    metric = model.bindings["depth"].new_metrics(manager)["depth_errors"]
    metric.update(prediction.detach(), target, valid)
    assert math.isfinite(metric.compute()["abs_rel"])
    picture = task.visualize(prediction[0].detach(), valid[0])
    assert picture.shape == (37, 45, 3) and picture.dtype == np.uint8
    truth, predicted = task.visualize_pair(target[0], prediction[0].detach(), valid[0])
    assert truth.shape == predicted.shape == (37, 45, 3)
    baseline = task.baseline(iter([(target, valid)]))
    assert baseline.shape == (1,)  # a decoded depth, whatever the number of bins
    constant = baseline.view(1, -1, 1, 1).expand(2, -1, 37, 45)
    assert torch.isfinite(model.losses["depth"](constant, target, valid).total)


def test_timm_model_with_bins() -> None:
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = pixcore.build_model("timm/resnet18", tasks={"depth": {"params": {"bins": 16, "max_depth": 10.0}}})
    task = model.tasks["depth"]
    data = random_batch(task, size=(45, 61), generator=torch.Generator().manual_seed(2))
    prediction = model(data.batch["image"])["depth"]
    assert prediction.shape == (2, 1, 45, 61)
    assert prediction.min().item() >= 1e-3 and prediction.max().item() <= 10.0
    total, _ = model.compute_loss({"depth": prediction}, data.batch)  # the default loss, silog
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
