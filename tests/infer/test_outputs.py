"""predict_images: files per target kind, their encodings, and refusals before any write."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from pixcore import PixcoreError
from pixcore.infer import find_images, predict_images, read_image_tensor
from pixcore.targets import ClassMask, ScalarField, TargetKind, UnitVectorField
from torch import Tensor, nn


class Flow(TargetKind):
    kind = "test_flow"


class FakeTask:
    target_kind: ClassVar[type[TargetKind]]

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        return np.full((*value.shape[-2:], 3), 128, dtype=np.uint8)


def _task(kind: type[TargetKind]) -> Any:
    return type(f"Task_{kind.kind}", (FakeTask,), {"target_kind": kind})()


class Binding:
    def __init__(self, kind: type[TargetKind]) -> None:
        self.task = _task(kind)


class KnownModel(nn.Module):
    """Predictions that are fixed functions of the image, so the files can be checked."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.classes = classes
        self.bindings = {"seg": Binding(ClassMask), "depth": Binding(ScalarField),
                         "normals": Binding(UnitVectorField), "flow": Binding(Flow)}

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        x = image.float()
        b, _, h, w = x.shape
        bins = (x[:, 0] / 64).floor()
        logits = torch.stack([(bins == c).float() * (c + 1) for c in range(self.classes)], 1)
        depth = x[:, 1:2] * 0.4 + 0.0004  # up to 102 m: beyond 65.535 m saturates the PNG
        normals = torch.nn.functional.normalize(x - 127.5 + 0.1, dim=1)
        return {"seg": logits, "depth": depth, "normals": normals, "flow": x[:, :2] / 7}


def _write_images(folder: Path, names: tuple[str, ...] = ("b.png", "a.jpg")) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, name in enumerate(names):
        array = np.random.default_rng(i).integers(0, 256, (10, 13, 3), dtype=np.uint8)
        if name.endswith(".jpg"):
            Image.fromarray(array).save(folder / name, quality=100)
            array = np.asarray(Image.open(folder / name).convert("RGB"))  # what JPEG keeps
        else:
            Image.fromarray(array).save(folder / name)
        arrays[Path(name).stem] = array
    (folder / "notes.txt").write_text("not an image")
    return arrays


def test_find_images_takes_files_and_folders(tmp_path: Path) -> None:
    _write_images(tmp_path / "in")
    extra = tmp_path / "x.PNG"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(extra, format="png")
    found = find_images([tmp_path / "in", extra])
    assert found == [tmp_path / "in" / "a.jpg", tmp_path / "in" / "b.png", extra]
    with pytest.raises(PixcoreError, match="does not exist"):
        find_images([tmp_path / "nope.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PixcoreError, match="holds no image"):
        find_images([tmp_path / "empty"])


def test_read_image_tensor_names_an_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(PixcoreError, match="broken.png"):
        read_image_tensor(bad)
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((3, 4), 9, np.uint8)).save(grey)
    image = read_image_tensor(grey)
    assert image.dtype == torch.uint8 and image.shape == (3, 3, 4) and int(image.max()) == 9


def test_outputs_per_target_kind(tmp_path: Path) -> None:
    arrays = _write_images(tmp_path / "in")
    model = KnownModel()
    out = tmp_path / "out"
    written = predict_images(model, [tmp_path / "in"], out)
    assert all(p.exists() for p in written)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}_{suffix}" for stem in ("a", "b") for suffix in (
            "seg.png", "seg_color.png", "depth.png", "depth.npy", "normals.npy", "normals_rgb.png",
            "flow.npy", "grid.png")
    )
    for stem, array in arrays.items():
        red, green = array[..., 0].astype(np.int64), array[..., 1].astype(np.float64)

        ids = np.asarray(Image.open(out / f"{stem}_seg.png"))
        assert ids.dtype == np.uint8 and ids.shape == (10, 13)
        np.testing.assert_array_equal(ids, red // 64)  # argmax: the only non-zero logit

        depth = np.load(out / f"{stem}_depth.npy")
        assert depth.dtype == np.float32 and depth.shape == (10, 13)
        np.testing.assert_allclose(depth, green * 0.4 + 0.0004, rtol=1e-6)
        millimetres = np.asarray(Image.open(out / f"{stem}_depth.png"))
        assert millimetres.dtype == np.uint16
        expected_mm = np.minimum(np.round((green * 0.4 + 0.0004) * 1000), 65535)
        np.testing.assert_array_equal(millimetres, expected_mm)
        near = depth < 65.5
        assert np.abs(millimetres[near] / 1000.0 - depth[near]).max() <= 0.0005 + 1e-6
        assert (millimetres[~near] == 65535).all() and (~near).any()

        normals = np.load(out / f"{stem}_normals.npy")
        assert normals.dtype == np.float32 and normals.shape == (10, 13, 3)
        raw = array.astype(np.float64) - 127.5 + 0.1
        np.testing.assert_allclose(normals, raw / np.linalg.norm(raw, axis=-1, keepdims=True), atol=1e-6)
        assert np.asarray(Image.open(out / f"{stem}_normals_rgb.png")).shape == (10, 13, 3)

        flow = np.load(out / f"{stem}_flow.npy")
        assert flow.dtype == np.float32 and flow.shape == (10, 13, 2)
        np.testing.assert_allclose(flow, array[..., :2] / 7.0, rtol=1e-6)

        grid = np.asarray(Image.open(out / f"{stem}_grid.png"))
        assert grid.shape[1] >= 5 * 13 and grid.shape[0] >= 10  # input + 4 tasks side by side


def test_class_ids_beyond_255_are_written_as_16_bit(tmp_path: Path) -> None:
    _write_images(tmp_path / "in", ("c.png",))
    model = KnownModel(classes=300)
    model.forward = lambda image: {  # type: ignore[method-assign]
        **KnownModel.forward(model, image), "seg": torch.nn.functional.one_hot(
            torch.full(image.shape[-2:], 299), 300).permute(2, 0, 1)[None].float()}
    predict_images(model, [tmp_path / "in" / "c.png"], tmp_path / "out")
    ids = np.asarray(Image.open(tmp_path / "out" / "c_seg.png"))
    assert ids.dtype == np.uint16 and (ids == 299).all()


def test_nothing_is_overwritten_without_being_asked(tmp_path: Path) -> None:
    _write_images(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_depth.npy").write_bytes(b"mine")
    with pytest.raises(PixcoreError, match="overwrite") as error:
        predict_images(KnownModel(), [tmp_path / "in"], out)
    assert "a_depth.npy" in str(error.value)
    assert sorted(p.name for p in out.iterdir()) == ["a_depth.npy"]  # nothing written
    assert (out / "a_depth.npy").read_bytes() == b"mine"
    predict_images(KnownModel(), [tmp_path / "in"], out, overwrite=True)
    assert np.load(out / "a_depth.npy").shape == (10, 13)


def test_problems_are_found_before_anything_is_written(tmp_path: Path) -> None:
    _write_images(tmp_path / "in")
    bad = tmp_path / "in" / "zzz.png"
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "out"
    with pytest.raises(PixcoreError, match="zzz.png"):
        predict_images(KnownModel(), [tmp_path / "in"], out)
    assert not out.exists()
    bad.unlink()
    other = tmp_path / "other"
    _write_images(other, ("a.png",))
    with pytest.raises(PixcoreError, match="same name"):
        predict_images(KnownModel(), [tmp_path / "in", other / "a.png"], out)
    assert not out.exists()


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("names", [("a.png", "a_grid.png"), ("b.jpg", "b_seg.png")])
def test_an_input_named_like_an_output_is_never_overwritten(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    folder = tmp_path / "in"
    _write_images(folder, names)
    before = _listing(folder)
    for out in (folder, tmp_path / "in" / ".." / "in"):  # the same folder, spelt otherwise
        with pytest.raises(PixcoreError) as caught:
            predict_images(KnownModel(), [folder], out, overwrite=True)
        message = str(caught.value)
        assert f"input image {folder / names[1]} would be overwritten" in message
        assert f"an output of {folder / names[0]}" in message
        assert f"--out {tmp_path.resolve() / 'in_predictions'}" in message
        assert _listing(folder) == before  # nothing written, nothing replaced


def test_outputs_of_two_images_or_tasks_never_share_a_file(tmp_path: Path) -> None:
    _write_images(tmp_path / "in", ("a.png", "a_seg.png"))
    model = KnownModel()
    model.bindings = {"seg": Binding(ClassMask), "seg_color": Binding(ScalarField)}
    with pytest.raises(PixcoreError, match=r"outputs of .*a\.png would both be .*a_seg_color\.png: "
                       r"the task names 'seg' and 'seg_color' run together"):
        predict_images(model, [tmp_path / "in" / "a.png"], tmp_path / "out")
    message = (r"a_seg_color\.npy would be written twice, for .*a\.png \(task 'seg_color'\) and "
               r"for .*a_seg\.png \(task 'color'\)")
    model.bindings = {"seg_color": Binding(Flow), "color": Binding(Flow)}
    with pytest.raises(PixcoreError, match=message):
        predict_images(model, [tmp_path / "in"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_truncated_jpeg_is_found_before_anything_is_written(tmp_path: Path) -> None:
    _write_images(tmp_path / "in", ("a.png", "b.png"))
    whole = tmp_path / "whole.jpg"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (48, 64, 3), np.uint8)).save(whole)
    data = whole.read_bytes()
    (tmp_path / "in" / "c.jpg").write_bytes(data[: len(data) // 2])  # sorted last
    out = tmp_path / "out"
    with pytest.raises(PixcoreError) as caught:
        predict_images(KnownModel(), [tmp_path / "in"], out)
    message = str(caught.value)
    assert f"image {tmp_path / 'in' / 'c.jpg'} cannot be read (image file is truncated" in message
    assert "Nothing was written" in message
    assert not out.exists()


def write_blank_png(path: Path, width: int, height: int) -> None:
    """A genuine 1-bit PNG, all black: a few KB even at 20000x20000, written in ~0.2 s."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        check = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + check

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed pixels
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
                     + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_with_the_way_on(tmp_path: Path) -> None:
    _write_images(tmp_path / "in", ("a.png",))
    huge = tmp_path / "in" / "huge.png"
    write_blank_png(huge, 20000, 20000)
    assert huge.stat().st_size < 100_000
    out = tmp_path / "out"
    with pytest.raises(PixcoreError) as caught:
        predict_images(KnownModel(), [tmp_path / "in"], out)
    message = str(caught.value)
    limit = 2 * Image.MAX_IMAGE_PIXELS  # type: ignore[operator]
    assert f"image {huge} has 400,000,000 pixels, more than the limit of {limit:,}" in message
    assert "--max-pixels 400000000" in message and "--window" in message
    assert not out.exists()


def test_max_pixels_lowers_or_raises_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_blank_png(tmp_path / "small.png", 13, 10)
    write_blank_png(tmp_path / "large.png", 20, 20)
    with pytest.raises(PixcoreError, match=r"small\.png is 10x13 \(height x width, 130 pixels\), "
                       r"more than the limit of 120 pixels(.|\n)*--max-pixels 130"):
        predict_images(KnownModel(), [tmp_path / "small.png"], tmp_path / "out", max_pixels=120)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses more than 200
    refused = r"large\.png has 400 pixels, more than the limit of 200 pixels"
    with pytest.raises(PixcoreError, match=refused):  # Pillow's limit, by default
        predict_images(KnownModel(), [tmp_path / "large.png"], tmp_path / "out")
    written = predict_images(KnownModel(), [tmp_path / "large.png"], tmp_path / "out",
                             max_pixels=400)
    assert all(p.exists() for p in written)
    assert np.load(tmp_path / "out" / "large_depth.npy").shape == (20, 20)
    assert Image.MAX_IMAGE_PIXELS == 100  # Pillow's limit is back
