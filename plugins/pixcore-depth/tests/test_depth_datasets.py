"""Tests of the NYU Depth V2 (folder layout) and KITTI depth readers on tiny copies.

Expected depths are written in the tests from the formats' definitions (NYU 16-bit PNG:
millimetres; KITTI: value / 256 metres, 0 = invalid), never taken from the readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from pixcore.data import DatasetError
from pixcore.targets import (
    ClassMask,
    Image,
    Intrinsics,
    ScalarField,
    UnitVectorField,
    ValidityMask,
)
from pixcore.testing import isolated_manager
from pixcore_depth import _plugin as depth_plugin
from pixcore_depth._datasets import KITTIDepth, NYUDepthV2

H, W = 8, 12


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, array)
    else:
        PILImage.fromarray(array).save(path)


def problems_of(error: pytest.ExceptionInfo[DatasetError]) -> list[str]:
    return [line.strip() for line in str(error.value).splitlines() if line.startswith("  ")]


# --------------------------------------------------------------------------------------
# NYU Depth V2
# --------------------------------------------------------------------------------------


def nyu_mm(i: int) -> np.ndarray:
    mm = (np.arange(H * W).reshape(H, W) * 40 + 500 + i).astype(np.uint16)
    mm[0, :4] = 0  # holes of the Kinect
    return mm


NYU_LABELS = np.array([0, 1, 2, 13, 40, 255] * 16).reshape(H, W).astype(np.uint8)


def write_nyu(root: Path, split: str = "train", count: int = 3) -> Path:
    base = root / split
    for i in range(count):
        name = f"{i:05d}"
        save(base / "rgb" / f"{name}.png", np.full((H, W, 3), 30 * i, np.uint8))
        save(base / "depth" / f"{name}.png", nyu_mm(i))
        save(base / "labels40" / f"{name}.png", NYU_LABELS)
        normals = np.zeros((H, W, 3), np.uint8)  # black: no normal
        normals[:4] = (128, 128, 0)  # (~0, ~0, -1): facing the camera
        save(base / "normals" / f"{name}.png", normals)
    return root


def test_nyu_reads_depth_in_metres_and_its_validity(tmp_path: Path) -> None:
    ds = NYUDepthV2(write_nyu(tmp_path), split="train")
    assert len(ds) == 3
    assert ds.target_kinds == {"image": Image, "depth": ScalarField, "valid": ValidityMask}
    sample = ds[2]
    assert isinstance(sample["image"], Image) and sample["image"].dtype == torch.uint8
    assert sample["image"].shape == (3, H, W) and int(sample["image"][0, 0, 0]) == 60
    assert isinstance(sample["depth"], ScalarField) and sample["depth"].dtype == torch.float32
    np.testing.assert_allclose(sample["depth"][0].numpy(), nyu_mm(2) / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(sample["valid"].numpy(), nyu_mm(2) > 0)


def test_nyu_labels_normals_and_intrinsics(tmp_path: Path) -> None:
    ds = NYUDepthV2(
        write_nyu(tmp_path), labels=40, normals=True, intrinsics=(500.0, 501.0, 5.5, 3.5)
    )
    assert len(ds.class_names) == 40
    assert ds.class_names[0] == "wall" and ds.class_names[39] == "otherprop"
    assert set(ds.target_kinds) == {
        "image", "depth", "valid", "semseg", "normals", "normals_valid", "intrinsics"
    }
    sample = ds[0]
    assert isinstance(sample["semseg"], ClassMask) and sample["semseg"].dtype == torch.uint8
    expected = np.array([255, 0, 1, 12, 39, 255] * 16).reshape(H, W)  # 0 -> 255, c -> c - 1
    np.testing.assert_array_equal(sample["semseg"].numpy(), expected)
    assert isinstance(sample["normals"], UnitVectorField) and sample["normals"].shape == (3, H, W)
    valid = sample["normals_valid"].numpy()
    assert valid[:4].all() and not valid[4:].any()
    np.testing.assert_allclose(sample["normals"][:, 0, 0].numpy(), [0.0, 0.0, -1.0], atol=0.01)
    assert float(sample["normals"][:, 0, 0].norm()) == pytest.approx(1.0, abs=1e-6)
    assert isinstance(sample["intrinsics"], Intrinsics)
    assert sample["intrinsics"].tolist() == [[500.0, 0.0, 5.5], [0.0, 501.0, 3.5], [0.0, 0.0, 1.0]]


def test_nyu_thirteen_classes_and_float_depth(tmp_path: Path) -> None:
    base = tmp_path / "test"
    save(base / "rgb" / "a.jpg", np.zeros((H, W, 3), np.uint8))
    depth = np.full((H, W), 2.5, np.float32)
    depth[1, 1] = 0.0
    save(base / "depth" / "a.npy", depth)
    save(base / "labels13" / "a.png", np.array([0, 13, 7] * 32).reshape(H, W).astype(np.uint8))
    ds = NYUDepthV2(tmp_path, split="test", labels="13")
    assert ds.class_names[12] == "window"
    sample = ds[0]
    np.testing.assert_array_equal(sample["depth"][0].numpy(), depth)
    assert not bool(sample["valid"][1, 1]) and bool(sample["valid"][0, 0])
    assert sample["semseg"].flatten()[:3].tolist() == [255, 12, 6]
    ds = NYUDepthV2(tmp_path, split="test", depth_scale=2.0)
    assert float(ds[0]["depth"][0, 0, 0]) == 5.0


def test_nyu_standard_intrinsics_need_full_frames(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        NYUDepthV2(write_nyu(tmp_path, count=1), intrinsics="nyu", validate="quick")
    (problem,) = problems_of(caught)
    assert problem.startswith(
        "rgb/00000.png: is 8x12 but intrinsics: nyu describes the full 480x640"
    )


def test_nyu_missing_folder_names_the_layout(tmp_path: Path) -> None:
    write_nyu(tmp_path)
    message = r"test/rgb does not exist; folders in .*: train(.|\n)*labels40/"
    with pytest.raises(DatasetError, match=message):
        NYUDepthV2(tmp_path, split="test")
    with pytest.raises(DatasetError, match="labels13 does not exist .set labels: none"):
        NYUDepthV2(tmp_path, labels=13)


def test_nyu_missing_and_unreadable_files(tmp_path: Path) -> None:
    root = write_nyu(tmp_path)
    (root / "train" / "depth" / "00001.png").unlink()
    (root / "train" / "labels40" / "00002.png").write_bytes(b"broken")
    with pytest.raises(DatasetError) as caught:
        NYUDepthV2(root, labels=40)
    first, second = problems_of(caught)[:2]
    assert first.startswith("depth/00001.png: missing depth map of rgb/00001.png")
    assert "depth/00001.png|npy|tiff|tif" in first
    assert second.startswith("labels40/00002.png: cannot be read")


def test_nyu_size_mismatch_and_out_of_range_label(tmp_path: Path) -> None:
    root = write_nyu(tmp_path)
    save(root / "train" / "depth" / "00000.png", np.ones((H - 1, W), np.uint16))
    bad = NYU_LABELS.copy()
    bad[5, 5] = 41
    save(root / "train" / "labels40" / "00001.png", bad)
    with pytest.raises(DatasetError) as caught:
        NYUDepthV2(root, labels=40)
    first, second = problems_of(caught)[:2]
    assert first.startswith(
        "depth/00000.png: is 7x12 (height x width) but its image rgb/00000.png is 8x12"
    )
    assert second.startswith("labels40/00001.png: value 41 outside the NYU-40 ids")


@pytest.mark.parametrize("labels, stored", [(40, 41), (13, 14), (13, 40)])
def test_nyu_label_outside_the_label_set_is_refused_on_read(
    tmp_path: Path, labels: int, stored: int
) -> None:
    root = write_nyu(tmp_path, count=2)
    if labels == 13:
        for i in range(2):
            save(root / "train" / "labels13" / f"{i:05d}.png", np.minimum(NYU_LABELS, 13))
    bad = np.minimum(NYU_LABELS, labels)
    bad[4, :2] = stored
    save(root / "train" / f"labels{labels}" / "00001.png", bad)
    ds = NYUDepthV2(root, labels=labels, validate="quick")
    assert int(ds[0]["semseg"][0, 0]) == 255  # stored 0 (unlabelled): ignored by definition
    with pytest.raises(DatasetError) as caught:
        ds[1]
    assert (
        f"labels{labels}/00001.png: value {stored} outside the NYU-{labels} ids (0 = unlabelled, "
        f"1-{labels} = classes, 255 = ignore) (2 pixels)"
    ) in str(caught.value)


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_nyu_nan_or_negative_depth(tmp_path: Path, bad: float) -> None:
    root = write_nyu(tmp_path, count=2)
    (root / "train" / "depth" / "00001.png").unlink()
    depth = np.ones((H, W), np.float32)
    depth[3, 4] = bad
    save(root / "train" / "depth" / "00001.npy", depth)
    with pytest.raises(DatasetError) as caught:
        NYUDepthV2(root)
    (problem,) = problems_of(caught)
    expected = "1 NaN/inf value" if np.isnan(bad) else "1 value below 0 (minimum -1)"
    assert problem.startswith(f"depth/00001.npy: {expected}")


# --------------------------------------------------------------------------------------
# KITTI depth
# --------------------------------------------------------------------------------------

DRIVE = "2011_09_26_drive_0001_sync"
FRAMES = ("0000000005", "0000000006")


def kitti_raw(i: int) -> np.ndarray:
    raw = np.zeros((H, W), np.uint16)  # sparse: mostly no measurement
    raw[::2, ::3] = 256 * (10 + i)  # 10 + i metres
    raw[1, 1] = 1  # 1 / 256 m
    return raw


def write_kitti(
    root: Path, cameras: tuple[str, ...] = ("image_02", "image_03")
) -> tuple[Path, Path]:
    annotated, raw = root / "data_depth_annotated", root / "raw"
    for camera in cameras:
        for i, frame in enumerate(FRAMES):
            gt = annotated / "train" / DRIVE / "proj_depth/groundtruth" / camera / f"{frame}.png"
            save(gt, kitti_raw(i))
            image = raw / "2011_09_26" / DRIVE / camera / "data" / f"{frame}.png"
            save(image, np.full((H, W, 3), 7, np.uint8))
    return annotated, raw


def test_kitti_depth_is_value_over_256(tmp_path: Path) -> None:
    annotated, raw = write_kitti(tmp_path)
    ds = KITTIDepth(annotated, raw, split="train")
    assert len(ds) == 4
    assert ds.target_kinds == {"image": Image, "depth": ScalarField, "valid": ValidityMask}
    sample = ds[1]
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.uint8
    depth = sample["depth"][0].numpy()
    assert depth[0, 0] == 11.0 and depth[1, 1] == pytest.approx(1 / 256) and depth[0, 1] == 0.0
    np.testing.assert_array_equal(sample["valid"].numpy(), kitti_raw(1) > 0)
    assert len(KITTIDepth(tmp_path, raw, cameras=["image_03"])) == 2  # parent root accepted


def test_kitti_registered_and_split_file(tmp_path: Path) -> None:
    annotated, raw = write_kitti(tmp_path)
    split_file = tmp_path / "eigen_test.txt"
    split_file.write_text(
        f"2011_09_26/{DRIVE}/image_02/data/{FRAMES[1]}.png {DRIVE}/proj_depth/groundtruth/"
        f"image_02/{FRAMES[1]}.png 721.5377\n"
        f"{DRIVE}/proj_depth/groundtruth/image_03/{FRAMES[0]}.png\n\n"
    )
    registry = isolated_manager(depth_plugin).registry("datasets")
    assert {"nyu_depth_v2", "kitti_depth"} <= set(registry.list())
    ds = registry.create(
        "kitti_depth",
        {"root": str(annotated), "raw_root": str(raw), "split_file": str(split_file)},
    )
    names = [r.name for r in ds.records]
    assert names == [f"{DRIVE}/image_02/{FRAMES[1]}", f"{DRIVE}/image_03/{FRAMES[0]}"]
    split_file.write_text("not a frame\n")
    with pytest.raises(DatasetError, match="line 1: not a frame"):
        KITTIDepth(annotated, raw, split_file=split_file)


def test_kitti_missing_rgb_and_missing_split(tmp_path: Path) -> None:
    annotated, raw = write_kitti(tmp_path, cameras=("image_02",))
    (raw / "2011_09_26" / DRIVE / "image_02" / "data" / f"{FRAMES[0]}.png").unlink()
    with pytest.raises(DatasetError) as caught:
        KITTIDepth(annotated, raw)
    (problem,) = problems_of(caught)
    image = f"2011_09_26/{DRIVE}/image_02/data/{FRAMES[0]}.png"
    assert problem.startswith(f"{image}: missing RGB frame")
    with pytest.raises(DatasetError, match=r"val does not exist \(folders in .*: train\)"):
        KITTIDepth(annotated, raw, split="val")


def test_kitti_unreadable_size_mismatch_and_8_bit_ground_truth(tmp_path: Path) -> None:
    annotated, raw = write_kitti(tmp_path, cameras=("image_02",))
    gt = annotated / "train" / DRIVE / "proj_depth" / "groundtruth" / "image_02"
    (gt / f"{FRAMES[0]}.png").write_bytes(b"")
    save(gt / f"{FRAMES[1]}.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DatasetError) as caught:
        KITTIDepth(annotated, raw)
    first, second = problems_of(caught)
    folder = f"train/{DRIVE}/proj_depth/groundtruth/image_02"
    assert first.startswith(f"{folder}/{FRAMES[0]}.png: cannot be read")
    assert second.startswith(f"{folder}/{FRAMES[1]}.png: is an 8-bit image")
    save(gt / f"{FRAMES[0]}.png", np.zeros((H, W + 1), np.uint16))
    save(gt / f"{FRAMES[1]}.png", kitti_raw(0))
    with pytest.raises(DatasetError) as caught:
        KITTIDepth(annotated, raw)
    (problem,) = problems_of(caught)
    assert "is 8x13 (height x width) but its image 2011_09_26/" in problem


# --------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------

DATASETS_MD = Path(__file__).resolve().parents[3] / "docs" / "datasets.md"


@pytest.mark.skipif(not DATASETS_MD.is_file(), reason="docs/datasets.md is not in this checkout")
def test_docs_have_a_section_and_valid_configs_per_reader() -> None:
    import re

    import yaml

    text = DATASETS_MD.read_text(encoding="utf-8")
    names = {"nyu_depth_v2", "kitti_depth", "middlebury"}
    assert names <= set(re.findall(r"^## (\w+)$", text, flags=re.M))
    registry = isolated_manager(depth_plugin).registry("datasets")
    seen = set()
    for block in re.findall(r"^```yaml\n(.*?)^```$", text, flags=re.M | re.S):
        data = (yaml.safe_load(block) or {}).get("data", {})
        for entry in (data.get("train"), data.get("val")):
            if entry and entry["name"] in names:
                registry.validate(entry["name"], entry.get("params", {}))
                seen.add(entry["name"])
    assert seen == names
