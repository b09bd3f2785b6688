"""Tests of the Middlebury stereo reader: PFM and calib.txt parsing, depth from disparity, errors,
and a real Middlebury 2014 scene (scikit-image's quarter-size Motorcycle) in the official layout.

PFM files are written here byte by byte from the format's definition (header, sign of the
scale = byte order, rows bottom to top); expected depths are computed here in float64 from
``Z = f * B / (d + doffs)``, never taken from the reader.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from pixcore.data import DatasetError, FileFormatError
from pixcore.targets import Image, Intrinsics, ScalarField, ValidityMask
from pixcore.testing import isolated_manager
from pixcore_depth import _plugin as depth_plugin
from pixcore_depth._middlebury import MiddleburyStereo, read_calibration, read_disparity

H, W = 6, 9
F, CX, CY, DOFFS, BASELINE_MM = 1000.0, 4.5, 2.5, 20.0, 150.0


def write_pfm(path: Path, array: np.ndarray, *, little_endian: bool = True, scale: str = "1.0") -> Path:
    """A PFM file as its definition says: 'Pf'/'PF', 'W H', the scale (negative: little-endian)."""
    magic = b"PF" if array.ndim == 3 else b"Pf"
    height, width = array.shape[:2]
    sign = "-" if little_endian else ""
    rows = np.ascontiguousarray(array[::-1], dtype="<f4" if little_endian else ">f4")  # bottom row first
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(magic + f"\n{width} {height}\n{sign}{scale}\n".encode() + rows.tobytes())
    return path


def calib_text(f: float = F, cx: float = CX, cy: float = CY, doffs: float = DOFFS,
               baseline: float = BASELINE_MM, width: int = W, height: int = H) -> str:
    """A calib.txt in the official format (all keys of the 2014 scenes)."""
    return (
        f"cam0=[{f} 0 {cx}; 0 {f} {cy}; 0 0 1]\n"
        f"cam1=[{f} 0 {cx + doffs}; 0 {f} {cy}; 0 0 1]\n"
        f"doffs={doffs}\nbaseline={baseline}\nwidth={width}\nheight={height}\n"
        "ndisp=64\nisint=0\nvmin=3\nvmax=60\ndyavg=0.1\ndymax=0.3\n"
    )


def disparity(i: int = 0) -> np.ndarray:
    d = (np.arange(H * W, dtype=np.float32).reshape(H, W) * 0.5 + 10 + i).astype(np.float32)
    d[0, :3] = np.inf  # unknown (the official marker)
    d[1, 0] = 0.0  # zero disparity: infinitely far, no depth
    d[1, 1] = np.nan  # not the official marker, still unknown
    return d


def write_scene(root: Path, name: str, i: int = 0, calib: str | None = None,
                disp: np.ndarray | None = None, disparity_file: str = "disp0.pfm") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.full((H, W, 3), 20 * i, np.uint8)).save(folder / "im0.png")
    PILImage.fromarray(np.full((H, W, 3), 20 * i + 1, np.uint8)).save(folder / "im1.png")
    write_pfm(folder / disparity_file, disparity(i) if disp is None else disp)
    (folder / "calib.txt").write_text(calib_text() if calib is None else calib)
    return folder


def expected_depth(d: np.ndarray, f: float = F, baseline_mm: float = BASELINE_MM, doffs: float = DOFFS) -> np.ndarray:
    d64 = d.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = f * (baseline_mm / 1000.0) / (d64 + doffs)
    ok = np.isfinite(d64) & (d64 > 0) & (d64 + doffs > 0)
    return np.where(ok, z, 0.0)


def problems_of(error: pytest.ExceptionInfo[DatasetError]) -> list[str]:
    return [line.strip() for line in str(error.value).splitlines() if line.startswith("  ")]


# --------------------------------------------------------------------------------------
# PFM and calib.txt
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("scale", ["1.0", "1", "0.5"])
def test_pfm_byte_order_and_row_order(tmp_path: Path, little_endian: bool, scale: str) -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.25  # every value distinct
    values[2, 3] = np.inf
    read = read_disparity(write_pfm(tmp_path / "d.pfm", values, little_endian=little_endian, scale=scale))
    assert read.dtype == np.float32 and read.shape == (3, 4)
    np.testing.assert_array_equal(read, values)  # top row first, whatever the byte order
    assert read[0, 0] == 0.25 and np.isposinf(read[2, 3])


def test_pfm_with_three_channels_or_another_format_is_refused(tmp_path: Path) -> None:
    colour = write_pfm(tmp_path / "c.pfm", np.zeros((2, 3, 3), np.float32))
    with pytest.raises(FileFormatError, match=r"3-channel PFM \(header PF\); a disparity map has one channel"):
        read_disparity(colour)
    png = tmp_path / "d.pfm"
    PILImage.fromarray(np.zeros((2, 3), np.uint16)).save(png, format="PNG")
    with pytest.raises(FileFormatError, match="not a single-channel PFM file"):
        read_disparity(png)


def test_calibration_of_the_official_format(tmp_path: Path) -> None:
    path = tmp_path / "calib.txt"
    path.write_text(
        "cam0=[3979.911 0 1244.772; 0 3979.911 1019.507; 0 0 1]\r\n"
        "cam1=[3979.911 0 1369.115; 0 3979.911 1019.507; 0 0 1]\r\n"
        "doffs=124.343\r\nbaseline=193.001\r\nwidth=2964\r\nheight=2000\r\nndisp=270\r\nisint=0\r\n"
    )
    c = read_calibration(path)
    assert c.matrix == ((3979.911, 0.0, 1244.772), (0.0, 3979.911, 1019.507), (0.0, 0.0, 1.0))
    assert (c.focal, c.doffs, c.baseline_mm, c.width, c.height) == (3979.911, 124.343, 193.001, 2964, 2000)


CAM0 = "cam0=[1000.0 0 4.5; 0 1000.0 2.5; 0 0 1]"


@pytest.mark.parametrize(("old", "new", "message"), [
    ("baseline=150.0\n", "", "has no `baseline=` line"),
    ("doffs=20.0\n", "", "has no `doffs=` line"),
    (CAM0 + "\n", "", "has no `cam0=` line"),
    (CAM0, "cam0=[1000 0 4.5; 0 1000]", "`cam0=[1000 0 4.5; 0 1000]`: not a 3x3 matrix"),
    (CAM0, "cam0=[0 0 4.5; 0 1000 2.5; 0 0 1]", "`cam0=[0 0 4.5; 0 1000 2.5; 0 0 1]`: not a pinhole camera"),
    ("baseline=150.0", "baseline=15o", "`baseline=15o`: '15o' is not a number"),
    ("baseline=150.0", "baseline=-150", "`baseline=-150`: baseline must be positive"),
    ("height=6", "height=6.5", "`height=6.5`: height is a whole number of pixels"),
])
def test_malformed_calibration_names_the_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = calib_text(baseline=150.0)
    assert text.count(old) == 1
    path = tmp_path / "calib.txt"
    path.write_text(text.replace(old, new))
    with pytest.raises(FileFormatError, match=re.escape(message)):
        read_calibration(path)


# --------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------


def test_depth_is_f_b_over_d_plus_doffs_with_intrinsics_per_scene(tmp_path: Path) -> None:
    write_scene(tmp_path, "Adirondack-perfect", 0)
    write_scene(tmp_path, "Piano-perfect", 1, calib=calib_text(f=800.0, cx=4.0, cy=3.0, doffs=5.5, baseline=170.0))
    registry = isolated_manager(depth_plugin).registry("datasets")
    assert "middlebury" in registry.list()
    ds = registry.create("middlebury", {"root": str(tmp_path)})
    assert isinstance(ds, MiddleburyStereo) and [r.name for r in ds.records] == ["Adirondack-perfect", "Piano-perfect"]
    assert ds.target_kinds == {"image": Image, "depth": ScalarField, "valid": ValidityMask, "intrinsics": Intrinsics}
    first, second = ds[0], ds[1]
    assert first["image"].shape == (3, H, W) and int(first["image"][0, 0, 0]) == 0
    assert int(second["image"][0, 0, 0]) == 20
    assert first["depth"].dtype == torch.float32 and first["depth"].shape == (1, H, W)
    np.testing.assert_allclose(first["depth"][0].numpy(), expected_depth(disparity(0)), rtol=1e-6)
    np.testing.assert_allclose(
        second["depth"][0].numpy(), expected_depth(disparity(1), 800.0, 170.0, 5.5), rtol=1e-6
    )
    valid = first["valid"].numpy()
    assert not valid[0, :3].any() and not valid[1, 0] and not valid[1, 1] and valid[2:].all()
    assert valid.sum() == H * W - 5
    assert first["intrinsics"].tolist() == [[F, 0.0, CX], [0.0, F, CY], [0.0, 0.0, 1.0]]
    assert second["intrinsics"].tolist() == [[800.0, 0.0, 4.0], [0.0, 800.0, 3.0], [0.0, 0.0, 1.0]]


def test_split_folder_scene_list_and_disparity_file(tmp_path: Path) -> None:
    for i, name in enumerate(("Adirondack", "ArtL", "Jadeplant")):
        write_scene(tmp_path / "trainingQ", name, i, disparity_file="disp0GT.pfm")
    (tmp_path / "trainingQ" / "notes").mkdir()  # not a scene folder: skipped
    ds = MiddleburyStereo(tmp_path, split="trainingQ", scenes=("Jadeplant", "Adirondack"), disparity_file="disp0GT.pfm")
    assert [r.name for r in ds.records] == ["Jadeplant", "Adirondack"]
    assert int(ds[0]["image"][0, 0, 0]) == 40
    assert len(MiddleburyStereo(tmp_path, split="trainingQ", disparity_file="disp0GT.pfm")) == 3
    with pytest.raises(DatasetError, match=r"Jadeplant/disp0.pfm: missing left disparity of scene Jadeplant.*"
                                           r"the folder has disp0GT.pfm: set disparity_file: disp0GT.pfm"):
        MiddleburyStereo(tmp_path, split="trainingQ", scenes=["Jadeplant"])
    with pytest.raises(DatasetError, match=r"no scene folder .* trainingQ hold scene folders: set split"):
        MiddleburyStereo(tmp_path)
    with pytest.raises(DatasetError, match=r"folder .*trainingH does not exist; folders in .*: trainingQ"):
        MiddleburyStereo(tmp_path, split="trainingH")
    with pytest.raises(DatasetError, match=r"scenes names Jadplant, not a folder .* \(did you mean 'Jadeplant'\?\)"):
        MiddleburyStereo(tmp_path, split="trainingQ", scenes=["Jadplant"])


def test_missing_files_name_the_scene_folder_and_the_file(tmp_path: Path) -> None:
    for i, name in enumerate(("Bicycle1", "Cable", "Couch")):
        write_scene(tmp_path, name, i)
    (tmp_path / "Bicycle1" / "im0.png").unlink()
    (tmp_path / "Cable" / "disp0.pfm").unlink()
    (tmp_path / "Couch" / "calib.txt").unlink()
    with pytest.raises(DatasetError) as caught:
        MiddleburyStereo(tmp_path, validate="quick")
    problems = problems_of(caught)
    assert problems[0].startswith("Couch/calib.txt: missing calibration of scene Couch")
    assert "Bicycle1/im0.png: missing left view of scene Bicycle1: expected Bicycle1/im0.png; restore the file" \
        in problems
    assert any(p.startswith("Cable/disp0.pfm: missing left disparity of scene Cable: expected Cable/disp0.pfm")
               for p in problems)
    assert len(problems) == 3


def test_malformed_calibration_is_reported_with_scene_file_and_key(tmp_path: Path) -> None:
    write_scene(tmp_path, "Mask", calib=calib_text().replace("doffs=20.0", "doffs=twenty"))
    with pytest.raises(DatasetError) as caught:
        MiddleburyStereo(tmp_path)
    (problem,) = problems_of(caught)
    assert problem.startswith("Mask/calib.txt: `doffs=twenty`: 'twenty' is not a number")
    ds = MiddleburyStereo(tmp_path, validate="off")  # reported when the sample is read
    with pytest.raises(DatasetError, match=r"Mask/calib.txt: `doffs=twenty`"):
        ds[0]


def test_values_and_sizes_that_full_validation_refuses(tmp_path: Path) -> None:
    negative = disparity()
    negative[3, 3] = -2.0
    write_scene(tmp_path, "Pipes", disp=negative)
    write_scene(tmp_path, "Recycle", calib=calib_text(doffs=-30.0))  # d + doffs <= 0 where d <= 30
    write_scene(tmp_path, "Shelves", calib=calib_text(width=W * 4, height=H * 4))  # full-size calibration
    with pytest.raises(DatasetError) as caught:
        MiddleburyStereo(tmp_path)
    pipes, recycle, shelves = problems_of(caught)
    assert pipes.startswith("Pipes/disp0.pfm: 1 negative disparities (minimum -2)")
    behind = int(((disparity() > 0) & (disparity() <= 30.0)).sum())
    assert recycle.startswith(f"Recycle/disp0.pfm: {behind} disparities with d + doffs <= 0 (doffs=-30)")
    assert shelves.startswith(
        f"Shelves/calib.txt: says width={W * 4} height={H * 4} but Shelves/im0.png is {W}x{H} (width x height)"
    )
    ds = MiddleburyStereo(tmp_path, validate="off")  # read anyway: those pixels are invalid, never negative depth
    for i in range(2):
        sample = ds[i]
        assert not bool(sample["valid"][3, 3]) if i == 0 else int(sample["valid"].sum()) == H * W - 5 - behind
        assert float(sample["depth"].min()) >= 0.0
    np.testing.assert_allclose(ds[1]["depth"][0].numpy(), expected_depth(disparity(), doffs=-30.0), rtol=1e-6)


def test_a_disparity_map_of_another_size_is_reported(tmp_path: Path) -> None:
    folder = write_scene(tmp_path, "Storage")
    write_pfm(folder / "disp0.pfm", np.ones((H, W - 1), np.float32))
    with pytest.raises(DatasetError) as caught:
        MiddleburyStereo(tmp_path, validate="quick")
    (problem,) = problems_of(caught)
    assert problem.startswith(f"Storage/disp0.pfm: is {H}x{W - 1} (height x width) but its image Storage/im0.png")


# --------------------------------------------------------------------------------------
# A real scene: Middlebury 2014 Motorcycle, quarter size, as shipped by scikit-image
# --------------------------------------------------------------------------------------

# The calibration scikit-image documents for its quarter-size copy (skimage.data.stereo_motorcycle):
# the full-size calib.txt (f 3979.911, cx 1244.772, cy 1019.507, doffs 124.343) divided by 4.
MOTORCYCLE = {"f": 994.978, "cx": 311.193, "cy": 254.877, "doffs": 31.086, "baseline": 193.001}


def write_motorcycle(root: Path) -> tuple[np.ndarray, np.ndarray]:
    skimage_data = pytest.importorskip("skimage.data")
    left, right, disp = skimage_data.stereo_motorcycle()
    folder = root / "Motorcycle-perfect"
    folder.mkdir(parents=True)
    PILImage.fromarray(left).save(folder / "im0.png")
    PILImage.fromarray(right).save(folder / "im1.png")
    # scikit-image's docstring says NaN marks unknown pixels; its array holds inf (and no NaN).
    # The official files hold inf: write that, whatever the source used.
    write_pfm(folder / "disp0.pfm", np.where(np.isfinite(disp), disp, np.inf).astype(np.float32))
    m = MOTORCYCLE
    height, width = disp.shape
    (folder / "calib.txt").write_text(
        f"cam0=[{m['f']} 0 {m['cx']}; 0 {m['f']} {m['cy']}; 0 0 1]\n"
        f"cam1=[{m['f']} 0 {m['cx'] + m['doffs']}; 0 {m['f']} {m['cy']}; 0 0 1]\n"
        f"doffs={m['doffs']}\nbaseline={m['baseline']}\nwidth={width}\nheight={height}\nndisp=68\nisint=0\n"
    )
    return left, disp


def normals_from_depth(depth: np.ndarray, valid: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals ``[H, W, 3]`` from back-projected central differences; where all 4 neighbours are valid."""
    height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1) * depth[..., None]
    du = np.zeros_like(points)
    dv = np.zeros_like(points)
    du[:, 1:-1] = points[:, 2:] - points[:, :-2]
    dv[1:-1] = points[2:] - points[:-2]
    n = np.cross(dv, du)  # y down x x right: towards the camera (-z) for a frontal plane
    inner = np.zeros_like(valid)
    inner[1:-1, 1:-1] = valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:]
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(inner[..., None], n / np.where(length > 0, length, 1.0), 0.0), inner


def test_a_real_middlebury_scene_read_back_in_its_official_layout(tmp_path: Path) -> None:
    left, disp = write_motorcycle(tmp_path)
    ds = isolated_manager(depth_plugin).registry("datasets").create("middlebury", {"root": str(tmp_path)})
    sample = ds[0]
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), left)
    depth, valid = sample["depth"][0].numpy(), sample["valid"].numpy()

    # Validity: exactly the pixels with a finite disparity (all of them are positive here).
    finite = np.isfinite(disp)
    assert valid.mean() == finite.mean() and (valid == finite).all()
    assert 0.9 < valid.mean() < 0.95  # 92.7 % of the quarter-size map has ground truth

    # Depth: f * B / (d + doffs), computed here in float64 from the documented calibration.
    m = MOTORCYCLE
    z = m["f"] * (m["baseline"] / 1000.0) / (disp[finite].astype(np.float64) + m["doffs"])
    np.testing.assert_allclose(depth[valid], z, rtol=1e-6)
    assert float(depth[valid].min()) == pytest.approx(z.min(), rel=1e-6)
    assert float(depth[valid].max()) == pytest.approx(z.max(), rel=1e-6)
    assert (depth[~valid] == 0).all()

    # Physical sense: a motorcycle in a room, seen from about 2 m: 2.1 m (its front) to 5.0 m
    # (the back wall); the nearby object is motorcycle-sized (its visible length ~1.9 m, ~2 m real).
    assert 2.0 < z.min() < 2.3 and 4.5 < z.max() < 5.5
    k = sample["intrinsics"].numpy().astype(np.float64)
    v, u = np.nonzero(valid & (depth < 3.0))
    x = (u - k[0, 2]) * depth[v, u] / k[0, 0]
    length = np.percentile(x, 99) - np.percentile(x, 1)
    assert 1.5 < length < 2.4, length

    # Normals from this depth and these intrinsics: unit length wherever they are defined, and
    # (visible surfaces) facing the camera almost everywhere.
    normals_common = pytest.importorskip("pixcore_normals._common")
    normals, inner = normals_from_depth(depth.astype(np.float64), valid, k)
    target = torch.from_numpy(normals.transpose(2, 0, 1)[None].astype(np.float32))
    usable = normals_common.usable(target, torch.from_numpy(valid)[None])[0].numpy()
    assert (usable == inner).all() and inner.mean() > 0.8  # 83 %
    np.testing.assert_allclose(np.linalg.norm(normals[usable], axis=-1), 1.0, atol=1e-6)
    v, u = np.nonzero(usable)
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, dtype=np.float64)], -1)
    facing = (normals[v, u] * rays).sum(-1) < 0
    assert facing.mean() > 0.97, facing.mean()
