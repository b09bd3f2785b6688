"""Tests of the file decoders, fields and the validating base of the file-based readers.

Fixtures are tiny files written to ``tmp_path``; every expected value is written in the
test or computed with plain numpy, never by the code under test.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from pixcore.data import (
    MAX_REPORTED_PROBLEMS,
    ClassMaskFile,
    DatasetError,
    DirectoryIndex,
    FileDataset,
    FileFormatError,
    ImageFile,
    Record,
    ScalarFile,
    ValidityFile,
    VectorFile,
    class_id_problem,
    file_size,
    illegal_class_ids,
    read_image,
    read_label,
    read_scalar,
    read_vectors,
)
from pixcore.data import _files as files_module
from pixcore.targets import ClassMask, Image, ScalarField, UnitVectorField, ValidityMask

H, W = 8, 12


def save_palette(path: Path, ids: np.ndarray) -> None:
    """A palette PNG whose colour for index i is never (i, i, i)."""
    img = PILImage.fromarray(ids.astype(np.uint8), mode="L")
    palette = []
    for i in range(256):
        palette += [(i * 7 + 50) % 256, (i * 13 + 1) % 256, 255 - i]
    img.putpalette(palette)
    img.save(path)


# --------------------------------------------------------------------------------------
# Decoders
# --------------------------------------------------------------------------------------


def test_read_label_gives_palette_indices_not_colours(tmp_path: Path) -> None:
    ids = (np.arange(H * W).reshape(H, W) % 21).astype(np.uint8)
    ids[0, 0] = 255
    save_palette(tmp_path / "a.png", ids)
    assert PILImage.open(tmp_path / "a.png").mode == "P"
    out = read_label(tmp_path / "a.png")
    assert out.shape == (H, W)
    np.testing.assert_array_equal(out, ids)


def test_read_label_16_bit_and_npy(tmp_path: Path) -> None:
    ids = (np.arange(H * W).reshape(H, W) * 300).astype(np.uint16)
    PILImage.fromarray(ids).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_label(tmp_path / "a.png"), ids)
    np.save(tmp_path / "b.npy", ids.astype(np.int32))
    np.testing.assert_array_equal(read_label(tmp_path / "b.npy"), ids)


def test_read_label_refuses_a_colour_image(tmp_path: Path) -> None:
    PILImage.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(FileFormatError, match="single-channel"):
        read_label(tmp_path / "rgb.png")


def test_read_image_converts_to_rgb(tmp_path: Path) -> None:
    grey = (np.arange(H * W).reshape(H, W) * 2).astype(np.uint8)
    PILImage.fromarray(grey).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_image_samples_are_views_of_the_decoded_memory(tmp_path: Path) -> None:
    """No transposing copy: ``[3, H, W]`` over ``[H, W, 3]`` memory, writable, Pillow's pixels."""
    ys, xs = np.mgrid[0:H, 0:W]
    rgb = np.stack([xs * 20, ys * 30, (xs + ys) * 10], axis=-1).astype(np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "a.jpg", quality=90)
    expected = np.asarray(PILImage.open(tmp_path / "a.jpg")).transpose(2, 0, 1)
    field = ImageFile()
    decoded = read_image(tmp_path / "a.jpg")
    assert decoded.flags.writeable and decoded.flags.c_contiguous  # shared as is, not copied again
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it is handed read-only memory
        image = field.convert(field.read(tmp_path / "a.jpg"))["image"]
        image[0, 0, 0] = 7  # the sample owns its pixels
    assert isinstance(image, Image) and image.shape == (3, H, W) and image.dtype == torch.uint8
    assert image.stride() == (1, 3 * W, 3)
    expected = expected.copy()
    expected[0, 0, 0] = 7
    np.testing.assert_array_equal(image.numpy(), expected)


def test_image_file_copies_only_arrays_torch_cannot_share() -> None:
    hwc = np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)
    mirrored = hwc[:, ::-1]  # negative strides: torch.from_numpy refuses them
    read_only = hwc.copy()
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out_mirrored = ImageFile().convert(mirrored)["image"]
        out_read_only = ImageFile().convert(read_only)["image"]
        shared = ImageFile().convert(hwc)["image"]
    np.testing.assert_array_equal(out_mirrored.numpy(), hwc[:, ::-1].transpose(2, 0, 1))
    np.testing.assert_array_equal(out_read_only.numpy(), hwc.transpose(2, 0, 1))
    hwc[0, 0, 0] = 99
    assert int(shared[0, 0, 0]) == 99 and int(out_read_only[0, 0, 0]) == 0


def test_read_scalar_formats(tmp_path: Path) -> None:
    raw = (np.arange(H * W).reshape(H, W) * 500).astype(np.uint16)
    PILImage.fromarray(raw).save(tmp_path / "d.png")
    np.testing.assert_array_equal(read_scalar(tmp_path / "d.png"), raw)
    f = np.linspace(0, 3, H * W, dtype=np.float32).reshape(H, W)
    PILImage.fromarray(f).save(tmp_path / "d.tiff")
    np.testing.assert_array_equal(read_scalar(tmp_path / "d.tiff"), f)
    np.save(tmp_path / "d.npy", f[None])  # [1, H, W] is accepted
    np.testing.assert_array_equal(read_scalar(tmp_path / "d.npy"), f)
    PILImage.fromarray(raw.astype(np.uint8)).save(tmp_path / "d8.png")
    with pytest.raises(FileFormatError, match="8-bit"):
        read_scalar(tmp_path / "d8.png")
    assert read_scalar(tmp_path / "d8.png", allow_8bit=True).dtype == np.uint8


def test_read_vectors_decodes_the_rgb_encoding(tmp_path: Path) -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[0, 0] = (255, 0, 51)
    PILImage.fromarray(rgb).save(tmp_path / "n.png")
    out = read_vectors(tmp_path / "n.png")
    assert out.shape == (H, W, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [1.0, -1.0, 51 / 255 * 2 - 1], atol=1e-6)
    chw = np.random.default_rng(0).normal(size=(3, H, W)).astype(np.float32)
    np.save(tmp_path / "n.npy", chw)
    np.testing.assert_array_equal(read_vectors(tmp_path / "n.npy"), chw.transpose(1, 2, 0))


def test_file_size_reads_headers(tmp_path: Path) -> None:
    PILImage.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.jpg")
    np.save(tmp_path / "a.npy", np.zeros((3, H, W), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((H, W), np.float32))
    assert file_size(tmp_path / "a.jpg") == (H, W)
    assert file_size(tmp_path / "a.npy") == (H, W)
    assert file_size(tmp_path / "b.npy") == (H, W)


def test_directory_index(tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(b"")
    index = DirectoryIndex()
    assert index.exists(tmp_path / "x.npy")
    assert not index.exists(tmp_path / "y.npy")
    assert not index.exists(tmp_path / "nowhere" / "x.npy")
    assert index.find(tmp_path, "x", (".png", ".npy")) == tmp_path / "x.npy"
    assert index.find(tmp_path, "x", (".png",)) is None


# --------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------


def test_class_mask_check_names_the_values_their_pixels_and_the_fix() -> None:
    field = ClassMaskFile(num_classes=21)
    ids = np.zeros((H, W), np.uint8)
    assert field.check(ids) == []
    out = field.convert(ids)["semseg"]
    assert isinstance(out, ClassMask) and out.dtype == torch.uint8 and out.shape == (H, W)
    ids[0, :3] = (255, 37, 40)
    ids[1, :4] = 37
    (message,) = field.check(ids)
    assert message.startswith(
        "values 37, 40 outside the 21 classes (0-20) and not the ignore index 255 "
        "(5 and 1 pixels); fix the mask"
    )
    with pytest.raises(FileFormatError) as caught:  # the same rule on every read
        field.convert(ids)
    assert str(caught.value) == message


def test_class_mask_lut_maps_and_refuses_unmapped_values() -> None:
    lut = np.array([255, 0, 1, -1])  # stored 3 is illegal
    field = ClassMaskFile(num_classes=2, lut=lut)
    ids = np.array([[0, 1, 2, 1]], np.uint8)
    assert field.check(ids) == []
    assert field.convert(ids)["semseg"].tolist() == [[255, 0, 1, 0]]
    bad = np.array([[3, 9, 9]], np.uint8)  # 3: marked illegal; 9: beyond the table
    assert field.check(bad)[0].startswith("values 3, 9 outside the 2 classes (0-1)")
    with pytest.raises(FileFormatError, match=r"values 3, 9 .*\(1 and 2 pixels\)"):
        field.convert(bad)  # not quietly the ignore index


@pytest.mark.parametrize(
    "dtype, values",
    [(np.uint8, [0, 2, 7]), (np.uint16, [0, 2, 60000]), (np.int32, [-1, 0, 2, 70000]),
     (np.int64, [0, 2, 2**40])],
)
def test_illegal_class_ids_counts_the_pixels_of_every_integer_type(
    dtype: type, values: list[int]
) -> None:
    stored = np.array(values * 3 + [values[-1]], dtype=dtype).reshape(1, -1)
    legal = {0, 1, 2, 255}
    expected = [(v, 4 if v == values[-1] else 3) for v in sorted(values) if v not in legal]
    assert illegal_class_ids(stored, num_classes=3, ignore_index=255) == expected
    assert class_id_problem(np.array([[0, 255]], dtype=dtype), 3, 255) is None


def _illegal_by_hand(
    stored: np.ndarray, num_classes: int, ignore_index: int, lut: np.ndarray | None
) -> list[tuple[int, int]]:
    """The rule written out value by value, as docs/datasets.md states it."""
    out = []
    values, counts = np.unique(stored, return_counts=True)
    for value, count in zip(map(int, values.tolist()), counts.tolist(), strict=True):
        if lut is None:
            legal = 0 <= value < num_classes or value == ignore_index
        else:  # a value beyond the table, or mapped to -1, is one the format does not define
            class_id = int(lut[value]) if 0 <= value < len(lut) else -1
            legal = class_id != -1 and (0 <= class_id < num_classes or class_id == ignore_index)
        if not legal:
            out.append((value, count))
    return out


_DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.bool_]


@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from(_DTYPES),
    num_classes=st.sampled_from([1, 2, 3, 21, 255, 256, 300]),
    ignore_index=st.sampled_from([255, -1, 0, 2, 20, 21, 1000]),
    use_lut=st.booleans(),
    data=st.data(),
)
def test_illegal_class_ids_agrees_with_the_rule_written_out(
    dtype: type, num_classes: int, ignore_index: int, use_lut: bool, data: st.DataObject
) -> None:
    """Whatever shortcut decides that a map is legal, it decides as counting would."""
    info = np.iinfo(dtype) if dtype is not np.bool_ else np.iinfo(np.uint8)
    near = [0, 1, 2, num_classes - 1, num_classes, num_classes + 1, ignore_index, 254, 255, 256, -1, -3, 70000]
    pool = sorted({v for v in near if info.min <= v <= info.max} if dtype is not np.bool_ else {0, 1})
    values = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=40))
    stored = np.array(values).astype(dtype).reshape(1, -1)
    lut = None
    if use_lut:
        entries = st.sampled_from([-1, 0, 1, num_classes - 1, num_classes, 255, ignore_index])
        lut = np.array(data.draw(st.lists(entries, min_size=1, max_size=260)), dtype=np.int64)
    expected = _illegal_by_hand(stored, num_classes, ignore_index, lut)
    assert illegal_class_ids(stored, num_classes, ignore_index, lut) == expected
    field = ClassMaskFile(num_classes=num_classes, ignore_index=ignore_index, lut=lut)
    if expected:
        with pytest.raises(FileFormatError):
            field.convert(stored)
    else:
        ids = field.convert(stored)["semseg"].numpy()
        by_hand = stored.astype(np.int64) if lut is None else lut[stored.astype(np.int64)]
        np.testing.assert_array_equal(ids, by_hand)


def test_a_legal_label_map_is_checked_without_counting_its_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every read checks the ids; a correct map must not pay for the per-value counts."""

    def counting(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("a legal label map was counted value by value")

    monkeypatch.setattr(files_module, "_value_counts", counting)
    voc = np.zeros((H, W), np.uint8)
    voc[1:4, 2:6] = 15
    voc[0] = 255  # VOC's borders
    assert ClassMaskFile(num_classes=21).convert(voc)["semseg"].numpy().tolist() == voc.tolist()
    lut = np.array([255, 0, 1, -1])
    mapped = ClassMaskFile(num_classes=2, lut=lut).convert(np.array([[0, 1, 2]], np.uint8))
    assert mapped["semseg"].tolist() == [[255, 0, 1]]
    with pytest.raises(AssertionError, match="counted"):  # an illegal map is counted, to say which
        ClassMaskFile(num_classes=21).convert(np.full((H, W), 30, np.uint8))


def test_class_id_problem_lists_a_few_values_and_counts_the_rest() -> None:
    stored = np.arange(20, 40, dtype=np.uint8).reshape(2, 10)
    message = class_id_problem(stored, num_classes=3, ignore_index=255)
    assert message is not None
    assert message.startswith("values 20, 21, 22, 23, 24, 25, 26, 27 and 12 more outside")
    assert "(1, 1, 1, 1, 1, 1, 1 and 1 pixels; 20 pixels in all)" in message


def test_scalar_file_scales_and_masks() -> None:
    field = ScalarFile(integer_scale=0.001, float_scale=1.0)
    raw = np.array([[0, 1500], [65535, 2]], np.uint16)
    out = field.convert(raw)
    assert isinstance(out["depth"], ScalarField) and out["depth"].shape == (1, 2, 2)
    np.testing.assert_allclose(out["depth"][0].numpy(), [[0.0, 1.5], [65.535, 0.002]], rtol=1e-6)
    assert isinstance(out["valid"], ValidityMask)
    assert out["valid"].tolist() == [[False, True], [True, True]]
    assert field.check(raw) == []


def test_scalar_file_refuses_nan_and_negative_values() -> None:
    field = ScalarFile()
    raw = np.array([[np.nan, -0.5, 1.0, np.inf]], np.float32)
    messages = field.check(raw)
    assert any("2 NaN/inf values" in m for m in messages)
    assert any("1 value below 0 (minimum -0.5)" in m for m in messages)
    out = field.convert(raw)
    assert out["valid"].tolist() == [[False, False, True, False]]
    assert out["depth"].tolist() == [[[0.0, 0.0, 1.0, 0.0]]]  # no NaN left in the target


def test_vector_file_normalises_and_marks_undefined_normals() -> None:
    v = np.zeros((1, 4, 3), np.float32)
    v[0, 0] = (0.0, 0.0, -1.1)  # near unit: valid, normalised
    v[0, 1] = (0.0, 0.0, 0.0)  # zero: invalid
    v[0, 2] = (-1.0, -1.0, -1.0)  # a black PNG pixel: invalid
    v[0, 3] = (0.6, 0.0, -0.8)
    out = VectorFile(flip=("y",)).convert(v)
    normals, valid = out["normals"], out["normals_valid"]
    assert isinstance(normals, UnitVectorField) and normals.shape == (3, 1, 4)
    assert valid.tolist() == [[True, False, False, True]]
    np.testing.assert_allclose(normals[:, 0, 0].numpy(), [0.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(normals[:, 0, 3].numpy(), [0.6, 0.0, -0.8], atol=1e-6)
    assert normals[:, 0, 1].abs().sum() == 0 and normals[:, 0, 2].abs().sum() == 0
    flipped = VectorFile(flip=("x", "z")).convert(v)["normals"]
    np.testing.assert_allclose(flipped[:, 0, 3].numpy(), [-0.6, 0.0, 0.8], atol=1e-6)


def test_validity_file(tmp_path: Path) -> None:
    mask = np.array([[0, 255, 1]], np.uint8)
    PILImage.fromarray(mask).save(tmp_path / "m.png")
    field = ValidityFile(key="valid")
    out = field.convert(field.read(tmp_path / "m.png"))["valid"]
    assert isinstance(out, ValidityMask) and out.tolist() == [[False, True, True]]


# --------------------------------------------------------------------------------------
# The validating base class
# --------------------------------------------------------------------------------------


class Pairs(FileDataset):
    """image/<i>.png + label/<i>.png, 3 classes."""

    name = "pairs"

    def __init__(self, root: Path, count: int, validate: str = "full") -> None:
        records = [
            Record(str(i), {"image": root / f"image/{i}.png", "semseg": root / f"label/{i}.png"})
            for i in range(count)
        ]
        super().__init__(
            records, {"image": ImageFile(), "semseg": ClassMaskFile(num_classes=3)},
            roots=[root], validate=validate,  # type: ignore[arg-type]
        )


def write_pairs(root: Path, count: int) -> None:
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir(parents=True)
    for i in range(count):
        PILImage.fromarray(np.full((H, W, 3), i, np.uint8)).save(root / "image" / f"{i}.png")
        PILImage.fromarray(np.full((H, W), i % 3, np.uint8)).save(root / "label" / f"{i}.png")


def test_a_good_data_set_reads_typed_samples(tmp_path: Path) -> None:
    write_pairs(tmp_path, 10)
    ds = Pairs(tmp_path, 10)
    assert len(ds) == 10
    assert ds.target_kinds == {"image": Image, "semseg": ClassMask}
    sample = ds[4]
    assert isinstance(sample["image"], Image) and sample["image"].shape == (3, H, W)
    assert sample["image"].dtype == torch.uint8 and int(sample["image"][0, 0, 0]) == 4
    assert sample["semseg"].tolist() == [[1] * W] * H


def test_every_problem_is_reported_at_once_in_record_order(tmp_path: Path) -> None:
    write_pairs(tmp_path, 12)  # 12 records: the checks run in the thread pool
    (tmp_path / "label" / "2.png").unlink()
    (tmp_path / "image" / "5.png").write_bytes(b"not an image")
    PILImage.fromarray(np.full((H, W + 1), 0, np.uint8)).save(tmp_path / "label" / "7.png")
    PILImage.fromarray(np.full((H, W), 9, np.uint8)).save(tmp_path / "label" / "9.png")
    with pytest.raises(DatasetError) as caught:
        Pairs(tmp_path, 12)
    message = str(caught.value)
    assert "4 problems" in message
    lines = [line.strip() for line in message.splitlines()]
    problems = [line for line in lines if line.startswith(("label/", "image/"))]
    files = [p.split(":")[0] for p in problems]
    assert files == ["label/2.png", "image/5.png", "label/7.png", "label/9.png"]
    assert "missing label" in problems[0]
    assert "cannot be read" in problems[1]
    assert "is 8x13 (height x width) but its image image/7.png is 8x12" in problems[2]
    assert "value 9 outside the 3 classes (0-2)" in problems[3]
    assert "validate" in message  # says how to open it anyway


def test_quick_checks_sizes_but_not_values_and_off_checks_nothing(tmp_path: Path) -> None:
    write_pairs(tmp_path, 3)
    PILImage.fromarray(np.full((H, W), 9, np.uint8)).save(tmp_path / "label" / "0.png")
    Pairs(tmp_path, 3, validate="quick")  # the value is not looked at
    PILImage.fromarray(np.full((H + 2, W), 0, np.uint8)).save(tmp_path / "label" / "1.png")
    with pytest.raises(DatasetError, match=r"label/1\.png: is 10x12"):
        Pairs(tmp_path, 3, validate="quick")
    ds = Pairs(tmp_path, 3, validate="off")
    with pytest.raises(DatasetError, match=r"label/1\.png: is 10x12"):
        ds[1]
    (tmp_path / "image" / "2.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"image/2\.png: cannot be read"):
        ds[2]


@pytest.mark.parametrize("validate", ["quick", "off"])
def test_an_illegal_class_id_is_refused_on_read_whatever_validate_says(
    tmp_path: Path, validate: str
) -> None:
    write_pairs(tmp_path, 3)
    ids = np.full((H, W), 1, np.uint8)
    ids[0, :2] = 9
    PILImage.fromarray(ids).save(tmp_path / "label" / "1.png")
    ds = Pairs(tmp_path, 3, validate=validate)
    assert ds[0]["semseg"].tolist() == [[0] * W] * H
    with pytest.raises(DatasetError) as caught:
        ds[1]
    message = str(caught.value)
    assert f"pairs data set at {tmp_path}: label/1.png: value 9 outside the 3 classes (0-2) " \
        "and not the ignore index 255 (2 pixels); fix the mask" in message
    assert "validate='full'" in message


def test_an_image_beyond_pillows_limit_names_its_size_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pairs(tmp_path, 2)
    PILImage.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "image" / "1.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses more than 200
    with pytest.raises(DatasetError) as caught:
        Pairs(tmp_path, 2)
    assert (
        "image/1.png: has 400 pixels, more than the limit of 200 pixels (a guard against "
        "decompression bombs); if the file is genuine, raise Pillow's limit before the data are "
        "read: PIL.Image.MAX_IMAGE_PIXELS = 200"
    ) in str(caught.value)


def test_the_report_is_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    count = MAX_REPORTED_PROBLEMS + 5  # every image and label is missing
    with pytest.raises(DatasetError) as caught:
        Pairs(tmp_path, count)
    message = str(caught.value)
    assert f"{2 * count} problems" in message
    assert f"... and {2 * count - MAX_REPORTED_PROBLEMS} more problems" in message
    listed = [line for line in message.splitlines() if line.startswith(("  image/", "  label/"))]
    assert len(listed) == MAX_REPORTED_PROBLEMS


def test_quick_reads_the_label_mode_from_the_header(tmp_path: Path) -> None:
    write_pairs(tmp_path, 2)
    PILImage.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "label" / "1.png")
    with pytest.raises(DatasetError, match=r"label/1\.png: has 3 channels \(mode RGB\)"):
        Pairs(tmp_path, 2, validate="quick")


def test_a_data_set_survives_pickling(tmp_path: Path) -> None:
    import pickle

    write_pairs(tmp_path, 3)
    ds = pickle.loads(pickle.dumps(Pairs(tmp_path, 3)))  # data loader workers (spawn)
    assert ds[2]["semseg"].tolist() == [[2] * W] * H


@pytest.mark.parametrize(
    ("num_classes", "ignore_index", "dtype"),
    [(21, 255, torch.uint8), (256, 255, torch.uint8), (300, 255, torch.int64), (21, -1, torch.int64)],
)
def test_class_ids_are_one_byte_when_every_id_fits(num_classes: int, ignore_index: int, dtype: torch.dtype) -> None:
    # Every sample of a data set gets the same dtype (batches need it), decided by the
    # classes and the ignore index, not by the values of one file.
    field = ClassMaskFile(num_classes=num_classes, ignore_index=ignore_index)
    ids = np.array([[0, 5], [20, 3]], np.uint16)
    out = field.convert(ids)["semseg"]
    assert out.dtype == dtype and out.tolist() == [[0, 5], [20, 3]]
    table = np.full(256, -1)  # -1: a stored value the format does not define
    table[[7, 8]] = (0, 17)
    mapped = ClassMaskFile(num_classes=num_classes, ignore_index=ignore_index, lut=table)
    out = mapped.convert(np.array([[7, 8], [8, 8]], np.uint8))["semseg"]
    assert out.dtype == dtype and out.tolist() == [[0, 17], [17, 17]]
