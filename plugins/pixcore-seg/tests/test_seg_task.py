"""The segmentation task: contract, parameters, validity, pictures, baseline."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pixcore
import pytest
import torch
from pixcore.testing import check_task, isolated_manager
from pixcore_seg import SegmentationTask, voc_palette
from pixcore_seg import _plugin as seg_plugin


def test_contract_with_defaults() -> None:
    check_task("segmentation", {"num_classes": 7}, manager=isolated_manager(seg_plugin))


def test_contract_with_linear_head_and_smoothing() -> None:
    check_task(
        "segmentation", {"num_classes": 3, "ignore_index": 0}, manager=isolated_manager(seg_plugin),
        head="linear", loss={"name": "cross_entropy", "params": {"label_smoothing": 0.1}},
        size=(37, 29), seed=1,
    )


def test_contract_with_the_lovasz_loss() -> None:
    check_task(
        "segmentation", {"num_classes": 4}, manager=isolated_manager(seg_plugin),
        head="linear", loss={"name": "lovasz", "params": {"per_image": True}},
        size=(21, 19), seed=2,
    )


def test_entry_point_is_declared() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pixcore")}
    assert eps.get("seg") == "pixcore_seg._plugin"


def test_parameters() -> None:
    registry = isolated_manager(seg_plugin).registry("tasks")
    with pytest.raises(pixcore.ConfigError, match="num_classes"):
        registry.create("segmentation", {})
    with pytest.raises(pixcore.ConfigError, match="num_classes"):
        registry.create("segmentation", {"num_classes": 0})
    with pytest.raises(pixcore.ConfigError, match="classes"):
        registry.create("segmentation", {"num_classes": 3, "classes": 3})
    task = registry.create("segmentation", {"num_classes": 4, "ignore_index": -1})
    assert task.out_channels == 4
    assert task.context() == {"num_classes": 4, "ignore_index": -1}
    assert task.default_loss == "cross_entropy" and task.default_metrics == ("miou",)


def test_depth_validity_is_not_used_by_default() -> None:
    task = SegmentationTask(num_classes=3)
    batch = {
        "semseg": torch.zeros(1, 2, 2, dtype=torch.long),
        "valid": torch.zeros(1, 2, 2, dtype=torch.bool),
    }
    _, valid = task.target_and_valid(batch)
    assert bool(valid.all())
    _, valid = SegmentationTask(num_classes=3, valid_key="valid").target_and_valid(batch)
    assert not bool(valid.any())


def test_decode_is_identity() -> None:
    raw = torch.randn(1, 3, 4, 4)
    assert torch.equal(SegmentationTask(num_classes=3).decode(raw), raw)


def test_voc_palette_known_colours() -> None:
    palette = voc_palette(256)
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[15].tolist() == [192, 128, 128]  # VOC "person"
    assert len({tuple(c) for c in voc_palette(1000)}) == 1000


def test_visualize_ids_logits_ignore_and_invalid() -> None:
    task = SegmentationTask(num_classes=300)
    ids = torch.tensor([[0, 1, 299], [255, 7, 2]])
    picture = task.visualize(ids)
    assert picture.dtype == np.uint8 and picture.shape == (2, 3, 3)
    assert picture[1, 0].tolist() == [0, 0, 0]  # ignore index: black
    assert (picture.reshape(-1, 3)[[0, 1, 2, 4, 5]].sum(1) > 0).all()  # classes never black
    assert len({tuple(c) for c in picture.reshape(-1, 3)}) == 6
    logits = torch.nn.functional.one_hot(ids.clamp(max=299), 300).permute(2, 0, 1).float()
    keep = ids != 255
    assert np.array_equal(task.visualize(logits)[keep.numpy()], picture[keep.numpy()])
    valid = torch.tensor([[True, False, True], [True, True, True]])
    assert task.visualize(ids, valid)[0, 1].tolist() == [0, 0, 0]
    assert np.array_equal(task.visualize(ids[None]), picture)  # [1, H, W] ids


def test_baseline_is_the_majority_over_valid_labelled_pixels() -> None:
    task = SegmentationTask(num_classes=3)
    target = torch.tensor([[[0, 0, 0, 0], [1, 1, 255, 255]]])
    valid = torch.tensor([[[False, False, False, True], [True, True, True, True]]])
    logits = task.baseline(iter([(target, valid)]))
    assert logits.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="no labelled valid pixel"):
        task.baseline(iter([(torch.full_like(target, 255), valid)]))
