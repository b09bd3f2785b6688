"""The depth task: contract, decoding, parameters, pictures, baseline."""

from __future__ import annotations

import importlib.metadata
import math
import pickle

import numpy as np
import pixcore
import pytest
import torch
from pixcore.testing import check_task, isolated_manager
from pixcore_depth import DepthTask, RelativeDepthTask, turbo
from pixcore_depth import _plugin as depth_plugin


def test_contract_with_defaults() -> None:
    check_task("depth", manager=isolated_manager(depth_plugin))


def test_contract_with_l1_and_caps() -> None:
    check_task(
        "depth", {"min_depth": 0.1, "max_depth": 20.0}, manager=isolated_manager(depth_plugin),
        loss="l1", head={"name": "fpn", "params": {"channels": 16}}, size=(33, 47), seed=3,
    )


@pytest.mark.parametrize("spacing", ["uniform", "log", "sid"])
def test_contract_with_bins(spacing: str) -> None:
    # Bins decode 16 raw channels to 1 depth channel: the contract checks both.
    check_task(
        "depth", {"bins": 16, "bin_spacing": spacing, "max_depth": 10.0},
        manager=isolated_manager(depth_plugin),
    )


def test_entry_point_is_declared() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pixcore")}
    assert eps.get("depth") == "pixcore_depth._plugin"


def test_parameters() -> None:
    registry = isolated_manager(depth_plugin).registry("tasks")
    with pytest.raises(pixcore.ConfigError, match="greater than min_depth"):
        registry.create("depth", {"min_depth": 5.0, "max_depth": 1.0})
    with pytest.raises(pixcore.ConfigError, match="min_depth"):
        registry.create("depth", {"min_depth": 0.0})
    task = registry.create("depth", {"target_key": "z", "valid_key": None})
    assert (task.target_key, task.valid_key, task.out_channels) == ("z", None, 1)
    assert task.context() == {"min_depth": 1e-3, "max_depth": None, "mode": "metric"}
    assert (task.default_loss, task.default_metrics) == ("silog", ("depth_errors",))
    assert task.parameterization == "log"
    with pytest.raises(pixcore.ConfigError, match="parameterization"):
        registry.create("depth", {"parameterization": "linear"})
    with pytest.raises(pixcore.ConfigError, match="mode"):
        registry.create("depth", {"mode": "absolute"})


def test_relative_mode_is_a_task_with_ssi_as_its_default_loss() -> None:
    registry = isolated_manager(depth_plugin).registry("tasks")
    task = registry.create("depth", {"mode": "relative", "max_depth": 10.0})
    assert isinstance(task, RelativeDepthTask) and isinstance(task, DepthTask)
    assert (type(task).default_loss, type(task).default_metrics) == ("ssi", ("depth_errors",))
    assert task.context() == {"min_depth": 1e-3, "max_depth": 10.0, "mode": "relative"}
    assert type(DepthTask(mode="metric")) is DepthTask
    assert RelativeDepthTask().mode == "relative"
    with pytest.raises(ValueError, match="DepthTask"):
        RelativeDepthTask(mode="metric")
    again = pickle.loads(pickle.dumps(task))
    assert type(again) is RelativeDepthTask and again.context() == task.context()


def test_contract_in_relative_mode_with_softplus() -> None:
    check_task(
        "depth", {"mode": "relative", "parameterization": "softplus", "max_depth": 20.0},
        manager=isolated_manager(depth_plugin), size=(29, 37), seed=4,
    )


def test_softplus_decode_is_shifted_softplus_clamped_with_straight_through_gradient() -> None:
    task = DepthTask(min_depth=0.1, max_depth=10.0, parameterization="softplus")
    raw = torch.tensor([0.0, 2.0, -50.0, 50.0]).view(1, 1, 2, 2).requires_grad_(True)
    depth = task.decode(raw)
    expected = [math.log(2.0) + 0.1, math.log1p(math.exp(2.0)) + 0.1, 0.1, 10.0]
    assert depth.flatten().tolist() == pytest.approx(expected, rel=1e-6)
    assert depth.max().item() <= 10.0 and depth.min().item() >= 0.1
    depth.sum().backward()
    sigmoid = [1 / (1 + math.exp(-x)) for x in (0.0, 2.0, -50.0, 50.0)]
    assert raw.grad is not None
    assert raw.grad.flatten().tolist() == pytest.approx(sigmoid, rel=1e-6)  # also beyond the cap
    unbounded = DepthTask(parameterization="softplus").decode(torch.tensor([[[[1e6]]]]))
    assert unbounded.item() == 1e4


def test_relative_pictures_align_the_prediction_to_the_target() -> None:
    task = DepthTask(mode="relative")
    target = torch.linspace(1.0, 5.0, 64).reshape(1, 8, 8)
    valid = torch.ones(8, 8, dtype=torch.bool)
    truth, prediction = task.visualize_pair(target, 0.5 * target + 3.0, valid)
    assert np.array_equal(truth, prediction)
    _, metric_prediction = DepthTask().visualize_pair(target, 0.5 * target + 3.0, valid)
    assert not np.array_equal(truth, metric_prediction)


def test_decode_is_exp_of_clamped_log_depth_with_straight_through_gradient() -> None:
    task = DepthTask(min_depth=0.1, max_depth=10.0)
    raw = torch.tensor([0.0, math.log(2.0), -50.0, 50.0]).view(1, 1, 2, 2).requires_grad_(True)
    depth = task.decode(raw)
    assert torch.allclose(depth.flatten(), torch.tensor([1.0, 2.0, 0.1, 10.0]))
    assert depth.max().item() <= 10.0 and depth.min().item() >= 0.1  # exactly in range
    depth.sum().backward()
    assert raw.grad is not None and (raw.grad.flatten() > 0).all()  # also beyond the clamp
    unbounded = DepthTask().decode(torch.tensor([-1e4, 1e4]).view(1, 1, 1, 2))
    assert torch.isfinite(unbounded).all() and (unbounded > 0).all()


def test_visualize() -> None:
    task = DepthTask()
    depth = torch.linspace(0.5, 8.0, 100).view(1, 10, 10)
    valid = torch.ones(10, 10, dtype=torch.bool)
    valid[0, 0] = False
    picture = task.visualize(depth, valid)
    assert picture.dtype == np.uint8 and picture.shape == (10, 10, 3)
    assert picture[0, 0].tolist() == [0, 0, 0]
    assert (picture.reshape(-1, 3)[1:].sum(1) > 0).all()
    assert np.array_equal(picture[0, 1], turbo(np.array([0.0]))[0])  # nearest: start of the map
    assert np.array_equal(picture[9, 9], turbo(np.array([1.0]))[0])  # farthest: its end
    # the range is the 2nd-98th percentile of valid pixels: one outlier does not flatten it
    depth_outlier = depth.clone()
    depth_outlier[0, 9, 9] = 1e4
    assert np.array_equal(task.visualize(depth_outlier, valid)[:9], picture[:9])
    assert not task.visualize(torch.zeros(1, 10, 10)).any()  # no depth anywhere: all black
    assert task.visualize(torch.full((4, 5), 2.0)).shape == (4, 5, 3)


def test_baseline_is_the_mean_over_valid_pixels() -> None:
    task = DepthTask()
    target = torch.tensor([[[[1.0, 2.0], [3.0, 100.0]]]])
    valid = torch.tensor([[[True, True], [True, False]]])
    assert task.baseline(iter([(target, valid)])).tolist() == pytest.approx([2.0])
    with pytest.raises(ValueError, match="no valid pixel"):
        task.baseline(iter([(target, torch.zeros_like(valid))]))


def test_visualize_pair_shares_the_targets_colour_scale() -> None:
    from pixcore_depth import DepthTask

    task = DepthTask()
    target = torch.linspace(1.0, 5.0, 64).reshape(1, 8, 8)
    valid = torch.ones(8, 8, dtype=torch.bool)
    truth, same = task.visualize_pair(target, target.clone(), valid)
    assert np.array_equal(truth, same)
    # A prediction twice as far must look farther (redder) on the shared scale, while drawn
    # on its own scale it would look exactly like the truth.
    _, farther = task.visualize_pair(target, 2 * target, valid)
    assert np.array_equal(task.visualize(2 * target, valid), truth)
    assert not np.array_equal(farther, truth)
    # Turbo's hue falls from violet-blue (near) to red (far): farther means a lower mean hue.
    assert _mean_hue(farther, valid) < _mean_hue(truth, valid)


def _mean_hue(rgb: np.ndarray, keep: torch.Tensor) -> float:
    import colorsys

    pixels = rgb[keep.numpy()].astype(float) / 255.0
    return float(np.mean([colorsys.rgb_to_hsv(*p)[0] for p in pixels]))
