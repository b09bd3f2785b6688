"""The normals task: contract, decoding, parameters, pictures, baseline."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pixcore
import pytest
import torch
from pixcore.testing import check_task, isolated_manager
from pixcore_normals import NormalsTask
from pixcore_normals import _plugin as normals_plugin


def test_contract_with_defaults() -> None:
    check_task("normals", manager=isolated_manager(normals_plugin))


def test_contract_with_cosine_loss() -> None:
    check_task(
        "normals", manager=isolated_manager(normals_plugin), loss="cosine", size=(29, 35), seed=2
    )


def test_entry_point_is_declared() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pixcore")}
    assert eps.get("normals") == "pixcore_normals._plugin"


def test_parameters() -> None:
    registry = isolated_manager(normals_plugin).registry("tasks")
    with pytest.raises(pixcore.ConfigError, match="eps"):
        registry.create("normals", {"eps": 1.0})
    task = registry.create("normals", {"valid_key": None})
    assert (task.target_key, task.valid_key, task.out_channels) == ("normals", None, 3)
    assert (task.default_loss, task.default_metrics) == ("angular", ("angular_error",))


def test_decode_gives_unit_vectors_and_faces_the_camera_at_zero() -> None:
    task = NormalsTask()
    raw = torch.randn(2, 3, 5, 6)
    raw[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])  # the one singular input: still finite
    normals = task.decode(raw)
    assert torch.isfinite(normals).all()
    norms = normals.norm(dim=1)
    norms[0, 0, 0] = 1.0
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert task.decode(torch.zeros(1, 3, 1, 1)).flatten().tolist() == [0.0, 0.0, -1.0]


def test_visualize() -> None:
    task = NormalsTask()
    vectors = [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 0.0]]
    normals = torch.tensor(vectors).T.reshape(3, 2, 2)
    picture = task.visualize(normals)
    assert picture.dtype == np.uint8 and picture.shape == (2, 2, 3)
    assert picture[0, 0].tolist() == [255, 128, 128]
    assert picture[0, 1].tolist() == [128, 0, 128]
    assert picture[1, 0].tolist() == [128, 128, 0]
    assert picture[1, 1].tolist() == [0, 0, 0]  # no normal: black
    valid = torch.tensor([[True, False], [True, True]])
    assert task.visualize(normals, valid)[0, 1].tolist() == [0, 0, 0]


def test_baseline_is_the_normalised_mean_of_valid_normals() -> None:
    task = NormalsTask()
    vectors = [[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    target = torch.tensor(vectors).T.reshape(1, 3, 1, 3)
    valid = torch.tensor([[[True, True, False]]])
    expected = torch.tensor([1.0, 0.0, -1.0]) / 2**0.5
    assert torch.allclose(task.baseline(iter([(target, valid)])), expected)
    with pytest.raises(ValueError, match="no valid pixel"):
        task.baseline(iter([(target, torch.zeros_like(valid))]))
