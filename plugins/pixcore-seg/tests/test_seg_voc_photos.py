"""The VOC reader on real photographs: scikit-image's photos written as a Pascal VOC 2012 folder.

The tiny fixtures of test_seg_datasets.py hold flat 8x12 images; here the files are real
JPEG photos of VOC-like sizes and palette PNG labels of connected regions with borders of
the ignore index, as the official files are. Expected values come from decoding the
written files with Pillow here, never from the reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from pixcore.testing import isolated_manager
from pixcore_seg import _plugin as seg_plugin

skimage_data = pytest.importorskip("skimage.data")
skimage_filters = pytest.importorskip("skimage.filters")

#: Photo -> (VOC id, the VOC class its brightest region gets: person, cat, dining table).
PHOTOS = {"astronaut": ("2008_000001", 15), "chelsea": ("2008_000002", 8), "coffee": ("2008_000003", 11)}


def voc_label(rgb: np.ndarray, class_id: int) -> np.ndarray:
    """Background 0 and one class by Otsu's threshold of the photo; one-pixel borders are 255."""
    grey = skimage_filters.gaussian(rgb.astype(np.float64).mean(axis=2), sigma=3)
    inside = grey > skimage_filters.threshold_otsu(grey)
    border = np.zeros(inside.shape, dtype=bool)
    border[:, 1:] |= inside[:, 1:] != inside[:, :-1]
    border[1:] |= inside[1:] != inside[:-1]
    return np.where(border, 255, np.where(inside, class_id, 0)).astype(np.uint8)


def write_voc_photos(base: Path) -> dict[str, tuple[Path, np.ndarray, int]]:
    """JPEGImages/<id>.jpg (quality 90) and palette SegmentationClass/<id>.png; train: 2, val: 1."""
    written = {}
    for name, (voc_id, class_id) in PHOTOS.items():
        rgb = getattr(skimage_data, name)()
        jpeg = base / "JPEGImages" / f"{voc_id}.jpg"
        jpeg.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(rgb).save(jpeg, quality=90)
        label = PILImage.fromarray(voc_label(rgb, class_id), mode="L").convert("P")
        label.putpalette([(i * 53 + c * 101) % 256 for i in range(256) for c in range(3)])  # colours != ids
        (base / "SegmentationClass").mkdir(exist_ok=True)
        label.save(base / "SegmentationClass" / f"{voc_id}.png")
        written[voc_id] = (jpeg, voc_label(rgb, class_id), class_id)
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2008_000001\n2008_000002\n")
    (lists / "val.txt").write_text("2008_000003\n")
    return written


def test_voc_reads_real_photos_and_their_palette_labels(tmp_path: Path) -> None:
    written = write_voc_photos(tmp_path / "VOCdevkit" / "VOC2012")
    registry = isolated_manager(seg_plugin).registry("datasets")
    train = registry.create("voc", {"root": str(tmp_path), "split": "train"})  # full validation
    val = registry.create("voc", {"root": str(tmp_path), "split": "val"})
    assert len(train) == 2 and len(val) == 1
    for ds, index, voc_id in ((train, 0, "2008_000001"), (train, 1, "2008_000002"), (val, 0, "2008_000003")):
        jpeg, label, class_id = written[voc_id]
        sample = ds[index]
        decoded = np.asarray(PILImage.open(jpeg).convert("RGB"))
        assert sample["image"].shape == (3, *decoded.shape[:2])
        np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), decoded)
        np.testing.assert_array_equal(sample["semseg"].numpy(), label)  # palette indices, not colours
        assert set(np.unique(sample["semseg"].numpy())) == {0, class_id, 255}
    assert train.class_names[15] == "person" and train.class_names[8] == "cat"
