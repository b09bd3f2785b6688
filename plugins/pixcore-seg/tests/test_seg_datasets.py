"""Tests of the VOC, Cityscapes and ADE20K readers on tiny copies of their layouts.

The fixtures write a few 8x12 files in each official layout. Expected class ids are
written out in the tests (the Cityscapes pairs come from the official table in
cityscapesscripts/helpers/labels.py), never taken from the readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from pixcore.data import DatasetError
from pixcore.targets import ClassMask, Image
from pixcore.testing import isolated_manager
from pixcore_seg import _plugin as seg_plugin
from pixcore_seg._datasets import ADE20K, Cityscapes, VOCSegmentation

H, W = 8, 12


def save_rgb(path: Path, value: int = 0, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def save_ids(path: Path, ids: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = PILImage.fromarray(ids.astype(np.uint8), mode="L")
    if palette:  # VOC-style: colours unrelated to the indices
        img.putpalette([(i * 37 + c * 91) % 256 for i in range(256) for c in range(3)])
    img.save(path)


def problems_of(error: pytest.ExceptionInfo[DatasetError]) -> list[str]:
    return [line.strip() for line in str(error.value).splitlines() if line.startswith("  ")]


def test_the_readers_are_registered_and_creatable(tmp_path: Path) -> None:
    voc = write_voc(tmp_path / "VOCdevkit" / "VOC2012")
    registry = isolated_manager(seg_plugin).registry("datasets")
    assert {"voc", "cityscapes", "ade20k"} <= set(registry.list())
    ds = registry.create("voc", {"root": str(voc), "split": "train", "validate": "quick"})
    assert isinstance(ds, VOCSegmentation) and len(ds) == 2
    write_ade(tmp_path / "ade")
    assert len(registry.create("ade20k", {"root": str(tmp_path / "ade"), "split": "val"})) == 1


# --------------------------------------------------------------------------------------
# Pascal VOC 2012
# --------------------------------------------------------------------------------------

VOC_IDS = ("2007_000032", "2007_000039", "2007_000063")


def voc_label(i: int) -> np.ndarray:
    ids = (np.arange(H * W).reshape(H, W) + 3 * i) % 21
    ids[:, 0] = 255  # object border
    return ids


def write_voc(base: Path) -> Path:
    for i, name in enumerate(VOC_IDS):
        save_rgb(base / "JPEGImages" / f"{name}.jpg", 40 * i)
        save_ids(base / "SegmentationClass" / f"{name}.png", voc_label(i), palette=True)
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text(f"{VOC_IDS[0]}\n{VOC_IDS[1]}\n")
    (lists / "val.txt").write_text(f"{VOC_IDS[2]}\n")
    return base


def test_voc_samples_hold_palette_indices(tmp_path: Path) -> None:
    base = write_voc(tmp_path / "VOC2012")
    ds = VOCSegmentation(base, split="train")
    assert len(ds) == 2 and len(ds.class_names) == 21 and ds.class_names[15] == "person"
    assert ds.ignore_index == 255
    sample = ds[1]
    assert isinstance(sample["image"], Image) and sample["image"].shape == (3, H, W)
    assert sample["image"].dtype == torch.uint8
    assert isinstance(sample["semseg"], ClassMask) and sample["semseg"].dtype == torch.uint8
    np.testing.assert_array_equal(sample["semseg"].numpy(), voc_label(1))
    assert len(VOCSegmentation(base, split="val")) == 1


def test_voc_accepts_the_vocdevkit_parent(tmp_path: Path) -> None:
    write_voc(tmp_path / "VOCdevkit" / "VOC2012")
    assert len(VOCSegmentation(tmp_path / "VOCdevkit", split="val")) == 1
    assert len(VOCSegmentation(tmp_path, split="val")) == 1


def test_voc_missing_layout_and_split_list(tmp_path: Path) -> None:
    layout = r"no JPEGImages/ folder(.|\n)*SegmentationClass/<id>\.png"
    with pytest.raises(DatasetError, match=layout):
        VOCSegmentation(tmp_path)
    write_voc(tmp_path)
    with pytest.raises(DatasetError, match=r"test\.txt does not exist; lists in .*: train, val"):
        VOCSegmentation(tmp_path, split="test")


def test_voc_missing_label(tmp_path: Path) -> None:
    base = write_voc(tmp_path)
    (base / "SegmentationClass" / f"{VOC_IDS[1]}.png").unlink()
    with pytest.raises(DatasetError) as caught:
        VOCSegmentation(base)
    (problem,) = problems_of(caught)
    assert problem.startswith(f"SegmentationClass/{VOC_IDS[1]}.png: missing label")
    assert "ImageSets/Segmentation/train.txt" in problem


def test_voc_unreadable_image(tmp_path: Path) -> None:
    base = write_voc(tmp_path)
    (base / "JPEGImages" / f"{VOC_IDS[0]}.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError) as caught:
        VOCSegmentation(base)
    (problem,) = problems_of(caught)
    assert problem.startswith(f"JPEGImages/{VOC_IDS[0]}.jpg: cannot be read")


def test_voc_size_mismatch(tmp_path: Path) -> None:
    base = write_voc(tmp_path)
    save_ids(base / "SegmentationClass" / f"{VOC_IDS[0]}.png", np.zeros((H, W - 2)), palette=True)
    with pytest.raises(DatasetError) as caught:
        VOCSegmentation(base, validate="quick")
    (problem,) = problems_of(caught)
    assert problem.startswith(
        f"SegmentationClass/{VOC_IDS[0]}.png: is 8x10 (height x width) but its image "
        f"JPEGImages/{VOC_IDS[0]}.jpg is 8x12"
    )


def test_voc_out_of_range_label_and_rgb_label(tmp_path: Path) -> None:
    base = write_voc(tmp_path)
    ids = voc_label(0)
    ids[2, 2] = 37
    save_ids(base / "SegmentationClass" / f"{VOC_IDS[0]}.png", ids, palette=True)
    save_rgb(base / "SegmentationClass" / f"{VOC_IDS[1]}.png", 128)
    with pytest.raises(DatasetError) as caught:
        VOCSegmentation(base)
    first, second = problems_of(caught)[:2]
    assert first.startswith(
        f"SegmentationClass/{VOC_IDS[0]}.png: value 37 outside the 21 classes (0-20) and not "
        "the ignore index 255"
    )
    assert second.startswith(f"SegmentationClass/{VOC_IDS[1]}.png: has 3 channels (mode RGB)")


def test_voc_out_of_range_label_is_refused_on_read(tmp_path: Path) -> None:
    base = write_voc(tmp_path)
    ids = voc_label(1)
    ids[2, 2:5] = 37
    save_ids(base / "SegmentationClass" / f"{VOC_IDS[1]}.png", ids, palette=True)
    ds = VOCSegmentation(base, validate="off")
    np.testing.assert_array_equal(ds[0]["semseg"].numpy(), voc_label(0))
    with pytest.raises(DatasetError) as caught:
        ds[1]
    assert (
        f"SegmentationClass/{VOC_IDS[1]}.png: value 37 outside the 21 classes (0-20) and not "
        "the ignore index 255 (3 pixels); VOC labels are palette PNGs"
    ) in str(caught.value)


# --------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------

# (labelId, trainId) pairs from cityscapesscripts/helpers/labels.py.
CITYSCAPES_PAIRS = [
    (0, 255), (1, 255), (4, 255), (6, 255), (7, 0), (8, 1), (9, 255), (11, 2), (14, 255),
    (17, 5), (18, 255), (19, 6), (20, 7), (21, 8), (23, 10), (24, 11), (25, 12), (26, 13),
    (27, 14), (29, 255), (30, 255), (31, 16), (32, 17), (33, 18),
]
FRAMES = (("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313"))


def write_cityscapes(base: Path, split: str = "train") -> Path:
    label_ids = np.array([p[0] for p in CITYSCAPES_PAIRS] * 4).reshape(H, W)
    for city, stem in FRAMES:
        save_rgb(base / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 100)
        save_ids(base / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
    return base


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    ds = Cityscapes(write_cityscapes(tmp_path), split="train")
    assert len(ds) == 2 and len(ds.class_names) == 19
    assert ds.class_names[0] == "road" and ds.class_names[13] == "car"
    semseg = ds[0]["semseg"]
    assert isinstance(semseg, ClassMask) and semseg.dtype == torch.uint8
    expected = np.array([p[1] for p in CITYSCAPES_PAIRS] * 4).reshape(H, W)
    np.testing.assert_array_equal(semseg.numpy(), expected)


def test_cityscapes_train_id_files(tmp_path: Path) -> None:
    base = tmp_path
    for city, stem in FRAMES:
        save_rgb(base / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
        label = base / "gtFine" / "val" / city / f"{stem}_gtFine_labelTrainIds.png"
        save_ids(label, np.full((H, W), 13))
    ds = Cityscapes(base, split="val", label_type="labelTrainIds")
    assert ds[1]["semseg"].unique().tolist() == [13]


@pytest.mark.parametrize(
    "label_type, stored, expected",
    [
        ("labelIds", 40, "value 40 not a Cityscapes labelId (0-33) (2 pixels)"),
        ("labelTrainIds", 19, "value 19 outside the 19 train ids (0-18) and not the ignore "
         "index 255 (2 pixels)"),
    ],
)
def test_cityscapes_value_outside_the_table_is_refused_on_read(
    tmp_path: Path, label_type: str, stored: int, expected: str
) -> None:
    ids = np.full((H, W), 7 if label_type == "labelIds" else 0)
    ids[0, :2] = (0, 1)  # void labelIds: documented as ignored (255), not an error
    for i, (city, stem) in enumerate(FRAMES):
        save_rgb(tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png")
        if i == 1:
            ids[1, :2] = stored
        save_ids(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_{label_type}.png", ids)
    ds = Cityscapes(tmp_path, label_type=label_type, validate="quick")  # type: ignore[arg-type]
    assert int(ds[0]["semseg"][1, 0]) == 0
    with pytest.raises(DatasetError) as caught:
        ds[1]
    label = f"gtFine/train/{FRAMES[1][0]}/{FRAMES[1][1]}_gtFine_{label_type}.png"
    assert f"{label}: {expected}; " in str(caught.value)


def test_cityscapes_missing_folder_names_the_layout(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, split="train")
    message = r"leftImg8bit/val does not exist \(splits in .*: train\)"
    with pytest.raises(DatasetError, match=message):
        Cityscapes(tmp_path, split="val")


def test_cityscapes_problems(tmp_path: Path) -> None:
    base = write_cityscapes(tmp_path)
    city, stem = FRAMES[0]
    bad = np.full((H, W), 7)
    bad[0, 0] = 40
    save_ids(base / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", bad)
    city, stem = FRAMES[1]
    (base / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError) as caught:
        Cityscapes(base)
    first, second = problems_of(caught)[:2]
    assert first.startswith(
        f"gtFine/train/aachen/{FRAMES[0][1]}_gtFine_labelIds.png: value 40 not a Cityscapes labelId"
    )
    assert second.startswith(f"gtFine/train/bochum/{stem}_gtFine_labelIds.png: missing label")


def test_cityscapes_unreadable_and_size_mismatch(tmp_path: Path) -> None:
    base = write_cityscapes(tmp_path)
    city, stem = FRAMES[0]
    (base / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png").write_bytes(b"oops")
    city, stem = FRAMES[1]
    save_ids(base / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", np.zeros((H + 1, W)))
    with pytest.raises(DatasetError) as caught:
        Cityscapes(base)
    first, second = problems_of(caught)[:2]
    image = f"leftImg8bit/train/aachen/{FRAMES[0][1]}_leftImg8bit.png"
    assert first.startswith(f"{image}: cannot be read")
    assert second.startswith(f"gtFine/train/bochum/{stem}_gtFine_labelIds.png: is 9x12")


# --------------------------------------------------------------------------------------
# ADE20K
# --------------------------------------------------------------------------------------

ADE_STORED = np.array([0, 1, 2, 75, 149, 150] * 16).reshape(H, W)


def write_ade(root: Path) -> Path:
    base = root / "ADEChallengeData2016"
    for split, prefix, count in (("training", "ADE_train", 2), ("validation", "ADE_val", 1)):
        for i in range(1, count + 1):
            save_rgb(base / "images" / split / f"{prefix}_{i:08d}.jpg", 20 * i)
            save_ids(base / "annotations" / split / f"{prefix}_{i:08d}.png", ADE_STORED)
    return base


def test_ade20k_reduce_zero_label(tmp_path: Path) -> None:
    write_ade(tmp_path)
    ds = ADE20K(tmp_path, split="training", reduce_zero_label=True)  # parent folder accepted
    assert len(ds) == 2 and len(ds.class_names) == 150
    assert ds.class_names[0] == "wall" and ds.class_names[149] == "flag"
    expected = np.array([255, 0, 1, 74, 148, 149] * 16).reshape(H, W)
    np.testing.assert_array_equal(ds[0]["semseg"].numpy(), expected)


def test_ade20k_keeps_other_as_a_class(tmp_path: Path) -> None:
    base = write_ade(tmp_path)
    ds = ADE20K(base, split="val", reduce_zero_label=False)
    assert len(ds) == 1 and len(ds.class_names) == 151 and ds.class_names[:2] == ("other", "wall")
    np.testing.assert_array_equal(ds[0]["semseg"].numpy(), ADE_STORED)


def test_ade20k_problems(tmp_path: Path) -> None:
    base = write_ade(tmp_path)
    bad = ADE_STORED.copy()
    bad[0, 0] = 151
    save_ids(base / "annotations" / "training" / "ADE_train_00000001.png", bad)
    save_ids(base / "annotations" / "training" / "ADE_train_00000002.png", np.zeros((H, 3)))
    with pytest.raises(DatasetError) as caught:
        ADE20K(base)
    first, second = problems_of(caught)[:2]
    assert first.startswith(
        "annotations/training/ADE_train_00000001.png: value 151 outside the ADE20K ids"
    )
    assert second.startswith("annotations/training/ADE_train_00000002.png: is 8x3")
    layout = r"images/training does not exist(.|\n)*ADE_train_<n>\.png"
    with pytest.raises(DatasetError, match=layout):
        ADE20K(tmp_path / "elsewhere")


@pytest.mark.parametrize("reduce_zero_label", [True, False])
def test_ade20k_value_beyond_the_classes_is_refused_on_read(
    tmp_path: Path, reduce_zero_label: bool
) -> None:
    base = write_ade(tmp_path)
    bad = ADE_STORED.copy()
    bad[0, :3] = 200
    save_ids(base / "annotations" / "training" / "ADE_train_00000002.png", bad)
    ds = ADE20K(base, reduce_zero_label=reduce_zero_label, validate="off")
    assert int(ds[0]["semseg"][0, 0]) == (255 if reduce_zero_label else 0)  # stored 0 ("other")
    with pytest.raises(DatasetError) as caught:
        ds[1]
    assert (
        "annotations/training/ADE_train_00000002.png: value 200 outside the ADE20K ids"
    ) in str(caught.value)
    assert "(3 pixels)" in str(caught.value)


# --------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------

DATASETS_MD = Path(__file__).resolve().parents[3] / "docs" / "datasets.md"


@pytest.mark.skipif(not DATASETS_MD.is_file(), reason="docs/datasets.md is not in this checkout")
def test_docs_have_a_section_and_valid_configs_per_reader() -> None:
    import re

    import yaml

    text = DATASETS_MD.read_text(encoding="utf-8")
    names = {"voc", "cityscapes", "ade20k"}
    assert names <= set(re.findall(r"^## (\w+)$", text, flags=re.M))
    registry = isolated_manager(seg_plugin).registry("datasets")
    seen = set()
    for block in re.findall(r"^```yaml\n(.*?)^```$", text, flags=re.M | re.S):
        data = (yaml.safe_load(block) or {}).get("data", {})
        for entry in (data.get("train"), data.get("val")):
            if entry and entry["name"] in names:
                registry.validate(entry["name"], entry.get("params", {}))
                seen.add(entry["name"])
    assert seen == names
