"""Tests of the generic ``folder`` data set, on tiny folders written to ``tmp_path``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from PIL import Image as PILImage
from pixcore.data import DatasetError, FolderDataset
from pixcore.targets import ClassMask, Image, ScalarField, UnitVectorField, ValidityMask
from pixcore.testing import isolated_manager

H, W = 8, 12
STEMS = ("0001", "0002", "0003")


def label_of(i: int) -> np.ndarray:
    ids = (np.arange(H * W).reshape(H, W) + i) % 5
    ids[0, 0] = 255
    return ids.astype(np.uint8)


def depth_mm_of(i: int) -> np.ndarray:
    mm = (np.arange(H * W).reshape(H, W) * 100 + i).astype(np.uint16)
    mm[1, :] = 0  # no measurement
    return mm


def write_folder(root: Path) -> Path:
    for sub in ("images", "labels", "depth", "normals", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(STEMS):
        image = np.full((H, W, 3), 10 * i, np.uint8)
        PILImage.fromarray(image).save(root / "images" / f"{stem}.png")
        PILImage.fromarray(label_of(i)).save(root / "labels" / f"{stem}.png")
        PILImage.fromarray(depth_mm_of(i)).save(root / "depth" / f"{stem}.png")
        normals = np.zeros((H, W, 3), np.float32)
        normals[..., 2] = -2.0  # length 2: invalid
        normals[: H // 2, :, 2] = -1.0  # valid, facing the camera
        np.save(root / "normals" / f"{stem}.npy", normals)
        mask = np.zeros((H, W), np.uint8)
        mask[:, : W // 2] = 255
        PILImage.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return root


TARGETS: dict[str, Any] = {
    "semseg": {"pattern": "labels/*.png", "kind": "class_mask", "num_classes": 5},
    "depth": {"pattern": "depth/*.png", "kind": "scalar", "scale": 0.001, "valid_key": "valid"},
    "normals": {"pattern": "normals/*.npy", "kind": "unit_vector", "valid_key": "normals_valid"},
    "mask": {"pattern": "masks/*.png", "kind": "validity"},
}


def open_folder(root: Path, **overrides: Any) -> FolderDataset:
    params: dict[str, Any] = {"image": "images/*.png", "targets": TARGETS, **overrides}
    return FolderDataset(root, **params)


def problems_of(error: pytest.ExceptionInfo[DatasetError]) -> list[str]:
    return [line.strip() for line in str(error.value).splitlines() if line.startswith("  ")]


def test_samples_have_typed_values_read_from_the_files(tmp_path: Path) -> None:
    ds = open_folder(write_folder(tmp_path))
    assert len(ds) == 3
    assert ds.target_kinds == {
        "image": Image, "semseg": ClassMask, "depth": ScalarField, "valid": ValidityMask,
        "normals": UnitVectorField, "normals_valid": ValidityMask, "mask": ValidityMask,
    }
    assert ds.class_names == ("class_0", "class_1", "class_2", "class_3", "class_4")
    sample = ds[1]
    assert isinstance(sample["image"], Image) and sample["image"].dtype == torch.uint8
    assert sample["image"].shape == (3, H, W) and int(sample["image"].max()) == 10
    assert sample["semseg"].dtype == torch.uint8  # 5 classes and ignore index 255: a byte a pixel
    np.testing.assert_array_equal(sample["semseg"].numpy(), label_of(1))
    mm = depth_mm_of(1)
    assert sample["depth"].shape == (1, H, W) and sample["depth"].dtype == torch.float32
    np.testing.assert_allclose(sample["depth"][0].numpy(), mm / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(sample["valid"].numpy(), mm > 0)
    assert sample["normals"].shape == (3, H, W)
    np.testing.assert_array_equal(sample["normals_valid"].numpy()[: H // 2], True)
    np.testing.assert_array_equal(sample["normals_valid"].numpy()[H // 2 :], False)
    np.testing.assert_allclose(sample["normals"][:, 0, 0].numpy(), [0.0, 0.0, -1.0])
    np.testing.assert_array_equal(sample["mask"].numpy()[:, : W // 2], True)
    np.testing.assert_array_equal(sample["mask"].numpy()[:, W // 2 :], False)


def test_registry_creates_it_from_config_params(tmp_path: Path) -> None:
    write_folder(tmp_path)
    registry = isolated_manager().registry("datasets")
    assert {"folder", "synthetic"} <= set(registry.list())
    ds = registry.create(
        "folder",
        {"root": str(tmp_path), "image": "images/*.png", "validate": "quick",
         "targets": {"semseg": TARGETS["semseg"]}},
    )
    assert isinstance(ds, FolderDataset) and set(ds[0]) == {"image", "semseg"}
    with pytest.raises(pixcore.ConfigError, match="num_classes"):
        registry.create("folder", {"root": str(tmp_path), "targets": {"semseg": {
            "pattern": "labels/*.png", "kind": "class_mask"}}})
    with pytest.raises(pixcore.ConfigError, match="do not apply to kind 'scalar'"):
        registry.create("folder", {"root": str(tmp_path), "targets": {"depth": {
            "pattern": "depth/*.png", "kind": "scalar", "num_classes": 3}}})


def test_stems_match_through_subfolders_and_pattern_tails(tmp_path: Path) -> None:
    for sub in ("img/a", "img/b", "gt/a", "gt/b"):
        (tmp_path / sub).mkdir(parents=True)
    for sub, value in (("a", 1), ("b", 2)):
        image, label = np.full((H, W, 3), value, np.uint8), np.full((H, W), value, np.uint8)
        PILImage.fromarray(image).save(tmp_path / "img" / sub / "x.jpg")
        PILImage.fromarray(label).save(tmp_path / "gt" / sub / "x_mask.png")
    ds = FolderDataset(
        tmp_path, image="img/**/*.jpg",
        targets={"semseg": {"pattern": "gt/**/*_mask.png", "kind": "class_mask", "num_classes": 3}},
    )
    assert [r.name for r in ds.records] == ["a/x", "b/x"]
    assert [int(ds[i]["semseg"][0, 0]) for i in range(2)] == [1, 2]


def test_split_placeholder_and_split_folder(tmp_path: Path) -> None:
    write_folder(tmp_path / "val")
    ds = FolderDataset(tmp_path, image="images/*.png", split="val")
    assert len(ds) == 3
    ds = FolderDataset(tmp_path, image="{split}/images/*.png", split="val")
    assert len(ds) == 3
    with pytest.raises(DatasetError, match="split folder .*train does not exist"):
        FolderDataset(tmp_path, image="images/*.png", split="train")
    with pytest.raises(ValueError, match="no split is given"):
        FolderDataset(tmp_path, image="{split}/images/*.png")


def test_no_image_names_the_pattern_and_what_is_there(tmp_path: Path) -> None:
    write_folder(tmp_path)
    pattern = r"no file matches the image pattern 'images/\*\.jpg'.*0001\.png"
    with pytest.raises(DatasetError, match=pattern):
        FolderDataset(tmp_path, image="images/*.jpg")
    with pytest.raises(DatasetError, match="is not a folder"):
        FolderDataset(tmp_path / "nowhere")


# -- one test per kind of problem -----------------------------------------------------


def test_missing_target_file(tmp_path: Path) -> None:
    write_folder(tmp_path)
    (tmp_path / "labels" / "0002.png").unlink()
    with pytest.raises(DatasetError) as caught:
        open_folder(tmp_path)
    (problem,) = problems_of(caught)
    assert problem.startswith("labels/0002.png: missing")
    assert "images/0002.png" in problem and "'labels/*.png'" in problem


def test_unreadable_file(tmp_path: Path) -> None:
    write_folder(tmp_path)
    (tmp_path / "depth" / "0003.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "normals" / "0001.npy").write_bytes(b"nonsense")
    with pytest.raises(DatasetError) as caught:
        open_folder(tmp_path)
    problems = problems_of(caught)
    assert any(p.startswith("depth/0003.png: cannot be read") for p in problems)
    assert any(p.startswith("normals/0001.npy: cannot be read") for p in problems)


def test_size_mismatch(tmp_path: Path) -> None:
    write_folder(tmp_path)
    PILImage.fromarray(np.zeros((H, W + 4), np.uint16)).save(tmp_path / "depth" / "0001.png")
    with pytest.raises(DatasetError) as caught:
        open_folder(tmp_path, validate="quick")
    (problem,) = problems_of(caught)
    assert problem.startswith(
        "depth/0001.png: is 8x16 (height x width) but its image images/0001.png is 8x12"
    )


def test_out_of_range_label(tmp_path: Path) -> None:
    write_folder(tmp_path)
    ids = label_of(0)
    ids[3, 3] = 37
    PILImage.fromarray(ids).save(tmp_path / "labels" / "0001.png")
    with pytest.raises(DatasetError) as caught:
        open_folder(tmp_path)
    (problem,) = problems_of(caught)
    assert problem.startswith(
        "labels/0001.png: value 37 outside the 5 classes (0-4) and not the ignore index 255"
    )


@pytest.mark.parametrize("validate", ["quick", "off"])
def test_out_of_range_label_is_refused_on_read_whatever_validate_says(
    tmp_path: Path, validate: str
) -> None:
    write_folder(tmp_path)
    ids = label_of(1)
    ids[3, 3:5] = 37
    PILImage.fromarray(ids).save(tmp_path / "labels" / "0002.png")
    ds = open_folder(tmp_path, validate=validate)
    assert int(ds[0]["semseg"].max()) == 255
    with pytest.raises(DatasetError) as caught:
        ds[1]
    message = str(caught.value)
    assert "labels/0002.png: value 37 outside the 5 classes (0-4) and not the ignore index 255 " \
        "(2 pixels)" in message
    assert "set targets.semseg.num_classes and targets.semseg.ignore_index" in message


@pytest.mark.parametrize("bad", [np.nan, -0.25])
def test_nan_or_negative_depth(tmp_path: Path, bad: float) -> None:
    write_folder(tmp_path)
    for stem in STEMS:
        (tmp_path / "depth" / f"{stem}.png").unlink()
        depth = np.ones((H, W), np.float32)
        if stem == "0002":
            depth[2, 2] = bad
        np.save(tmp_path / "depth" / f"{stem}.npy", depth)
    depth = {"pattern": "depth/*.npy", "kind": "scalar", "valid_key": "valid"}
    targets = {**TARGETS, "depth": depth}
    with pytest.raises(DatasetError) as caught:
        open_folder(tmp_path, targets=targets)
    (problem,) = problems_of(caught)
    expected = "1 NaN/inf value" if np.isnan(bad) else "1 value below 0 (minimum -0.25)"
    assert problem.startswith(f"depth/0002.npy: {expected}")


def test_orphan_and_duplicate_files(tmp_path: Path) -> None:
    write_folder(tmp_path)
    PILImage.fromarray(label_of(0)).save(tmp_path / "labels" / "0009.png")
    PILImage.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "images" / "0001.jpg")
    with pytest.raises(DatasetError) as caught:
        open_folder(tmp_path, image="images/*")
    problems = problems_of(caught)
    duplicate = "images/0001.png: has the same stem as images/0001.jpg"
    assert any(p.startswith(duplicate) for p in problems)
    assert any(p.startswith("labels/0009.png: matches the 'semseg' pattern") for p in problems)


def test_optional_target_is_left_out_of_samples_without_a_file(tmp_path: Path) -> None:
    from pixcore.data import collate

    write_folder(tmp_path)
    (tmp_path / "depth" / "0002.png").unlink()
    targets = {**TARGETS, "depth": {**TARGETS["depth"], "required": False}}
    ds = open_folder(tmp_path, targets=targets)
    assert "depth" in ds.target_kinds
    assert {"depth", "valid"} <= set(ds[0]) and not {"depth", "valid"} & set(ds[1])
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["present/depth"].tolist() == [True, False, True]


DATASETS_MD = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"


def test_docs_have_a_section_per_reader_and_valid_core_configs() -> None:
    import re

    import yaml

    text = DATASETS_MD.read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\w+)$", text, flags=re.M))
    readers = {"voc", "cityscapes", "ade20k", "nyu_depth_v2", "kitti_depth", "folder", "synthetic"}
    assert readers <= sections
    registry = isolated_manager().registry("datasets")
    seen = set()
    for block in re.findall(r"^```yaml\n(.*?)^```$", text, flags=re.M | re.S):
        data = (yaml.safe_load(block) or {}).get("data", {})
        for entry in (data.get("train"), data.get("val")):
            if entry and entry["name"] in {"folder", "synthetic"}:
                registry.validate(entry["name"], entry.get("params", {}))
                seen.add(entry["name"])
    assert seen == {"folder", "synthetic"}
