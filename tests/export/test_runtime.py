"""pixcore predict --model: an exported model in ONNX Runtime, without torch.

Against the eager model and :class:`pixcore.infer.Predictor` on the same weights (plain,
flip TTA, scales, windows), the files of ``predict --checkpoint``, the refusals (existing
outputs, a static size, missing probabilities, damaged or foreign files) and, in a
subprocess, that the whole command imports neither torch nor pydantic: once in this
environment (nothing of them in ``sys.modules``), once in a fresh virtual environment that
holds only numpy, Pillow and onnxruntime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from PIL import Image
from pixcore import PixcoreError
from pixcore._cli import main
from pixcore.export import export_model
from pixcore.export._runtime import OnnxPredictor, predict_images, read_metadata
from pixcore.infer import Predictor
from pixcore.infer import predict_images as predict_with_torch
from pixcore.targets import TargetKind
from pixcore.testing import TinyBackbonePlugin, isolated_manager
from torch import Tensor

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
FPN = {"name": "fpn", "params": {"channels": 16}}
STATIC = (48, 64)


class Edges(TargetKind):
    """A third-party target kind: the runtime knows nothing of it but its name."""

    kind = "edges"


class _EdgeTask(pixcore.Task):
    """Two channels of a kind with no file format and no flip rule."""

    target_kind = Edges
    default_loss = "l1"
    default_metrics = ()

    def __init__(self) -> None:
        super().__init__("edges", None)

    @property
    def out_channels(self) -> int:
        return 2

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        return np.zeros((*value.shape[-2:], 3), np.uint8)

    def baseline(self, targets: Any) -> Tensor:
        return torch.zeros(2)


class _EdgePlugin:
    @pixcore.hookimpl
    def pixcore_tasks(self) -> list[pixcore.Component]:
        return [pixcore.Component("edges", _EdgeTask)]


@pytest.fixture(scope="module")
def manager() -> pixcore.PluginManager:
    return isolated_manager(TinyBackbonePlugin(), "pixcore_seg._plugin", "pixcore_depth._plugin",
                            "pixcore_normals._plugin", _EdgePlugin())


def _build(manager: pixcore.PluginManager, tasks: dict[str, Any]) -> pixcore.MultiTaskModel:
    torch.manual_seed(0)
    model = pixcore.build_model("testing/tiny", tasks=tasks, manager=manager).eval()
    with torch.no_grad():  # away from the near-constant initial outputs, so that TTA changes them
        for head in model.heads.values():
            head.output.weight.normal_(std=0.3)  # type: ignore[union-attr, operator]
    return model


@pytest.fixture(scope="module")
def model(manager: pixcore.PluginManager) -> pixcore.MultiTaskModel:
    return _build(manager, {
        "semseg": {"task": "segmentation", "params": {"num_classes": 5}, "head": FPN},
        "depth": {"head": FPN, "params": {"max_depth": 10.0}},
        "normals": {"head": FPN},
    })


@pytest.fixture(scope="module")
def exported(model: pixcore.MultiTaskModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(model, tmp_path_factory.mktemp("dynamic"), dynamic=True).path


@pytest.fixture(scope="module")
def static(model: pixcore.MultiTaskModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(model, tmp_path_factory.mktemp("static"), dynamic=False, size=STATIC).path


@pytest.fixture(scope="module")
def ids_only(manager: pixcore.PluginManager, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Edges (a kind the runtime does not know) first, then class ids without probabilities."""
    model = _build(manager, {"edges": {"task": "edges", "head": "linear"},
                             "semseg": {"task": "segmentation", "params": {"num_classes": 3}, "head": "linear"}})
    return export_model(model, tmp_path_factory.mktemp("ids"), probabilities=False).path, model


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB image (uint8 [3, H, W]) with some noise: structure for the model to see."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(x / 7.0 + c) * np.cos(y / 9.0 - c) for c in range(3)])
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _eager(model: torch.nn.Module, image: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(image)[None])
    return {name: value[0].float().numpy() for name, value in out.items()}


def _check_against(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], ids_agree: float = 1.0,
                   atol: float = 1e-4) -> None:
    agree = float(np.mean(got["semseg"] == expected["semseg"].argmax(0)))
    assert agree >= ids_agree, f"class ids agree on {agree:.4f} of the pixels"
    np.testing.assert_allclose(got["depth"], expected["depth"], atol=atol, rtol=0)
    np.testing.assert_allclose(got["normals"], expected["normals"], atol=atol, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got["normals"], axis=0), 1.0, atol=1e-5)


def test_outputs_match_the_eager_model(model: pixcore.MultiTaskModel, exported: Path) -> None:
    image = _image(70, 90)  # neither side a multiple of the stride
    got = OnnxPredictor(exported, device="cpu")(image)
    assert got["semseg"].shape == (70, 90) and got["semseg"].dtype == np.int64
    assert got["depth"].shape == (1, 70, 90) and got["normals"].shape == (3, 70, 90)
    _check_against(got, _eager(model, image))


OPTIONS: list[dict[str, Any]] = [
    {"hflip": True},
    {"scales": (0.75, 1.25)},
    {"window": (48, 64), "overlap": 0.5},
    {"hflip": True, "scales": (0.5, 1.0), "window": (32, 40), "overlap": 0.25, "weighting": "uniform"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=["flip", "scales", "windows", "all-uniform"])
def test_tta_and_windows_match_the_torch_predictor(
    model: pixcore.MultiTaskModel, exported: Path, options: dict[str, Any]
) -> None:
    image = _image(70, 90, seed=1)
    got = OnnxPredictor(exported, **options)(image)
    expected = _eager(Predictor(model, **options), image)
    # Resizing the uint8 image (Pillow on float channels vs torch) may differ by one grey
    # level; everything else is the same arithmetic.
    scaled = "scales" in options
    _check_against(got, expected, ids_agree=0.995 if scaled else 1.0, atol=2e-3 if scaled else 1e-4)
    plain = _eager(model, image)  # the options change the prediction: the comparison means something
    assert np.abs(got["depth"] - plain["depth"]).max() > 1e-3
    assert np.abs(got["normals"] - plain["normals"]).max() > 1e-3


def _inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    rgb, grey, photo = folder / "room.png", folder / "grey.png", folder / "photo.jpg"
    Image.fromarray(_image(70, 90).transpose(1, 2, 0)).save(rgb)
    Image.fromarray(_image(40, 50, seed=2)[0]).save(grey)  # mode L: converted to RGB
    Image.fromarray(_image(45, 61, seed=3).transpose(1, 2, 0)).save(photo, quality=90)
    return [rgb, grey, photo]


def test_the_files_are_those_of_the_checkpoint_path(
    model: pixcore.MultiTaskModel, exported: Path, tmp_path: Path
) -> None:
    images = _inputs(tmp_path / "in")
    by_torch = predict_with_torch(model, images, tmp_path / "torch")
    by_onnx = predict_images(exported, images, tmp_path / "onnx")
    assert [p.name for p in by_onnx] == [p.name for p in by_torch]
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted(p.name for p in by_torch)
    for name in (p.name for p in by_torch):
        ours, theirs = tmp_path / "onnx" / name, tmp_path / "torch" / name
        if name.endswith(".npy"):
            a, b = np.load(ours), np.load(theirs)
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape, name
            np.testing.assert_allclose(a, b, atol=1e-4, err_msg=name)
            continue
        with Image.open(ours) as mine, Image.open(theirs) as reference:
            assert (mine.mode, mine.size) == (reference.mode, reference.size), name
            a, b = np.asarray(mine).astype(np.int64), np.asarray(reference).astype(np.int64)
        if name.endswith(("_semseg.png", "_semseg_color.png")):
            np.testing.assert_array_equal(a, b, err_msg=name)  # class ids: identical
        elif name.endswith("_depth.png"):
            assert np.abs(a - b).max() <= 1, name  # millimetres: within 1 mm
        else:  # pictures: the same up to a rounding at a few pixels
            assert np.mean(a != b) < 0.01 and np.abs(a - b).max() <= 2, name
    depth = np.load(tmp_path / "onnx" / "room_depth.npy")
    with Image.open(tmp_path / "onnx" / "room_depth.png") as png:
        assert png.mode.startswith("I") and np.abs(np.asarray(png) / 1000.0 - depth).max() <= 0.0005 + 1e-6
    assert np.load(tmp_path / "onnx" / "grey_normals.npy").shape == (40, 50, 3)


def test_existing_outputs_are_refused_unless_overwrite(exported: Path, tmp_path: Path) -> None:
    images = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    written = predict_images(exported, images[:1], out)
    (out / "room_grid.png").write_bytes(b"older")
    with pytest.raises(PixcoreError, match=r"exist already .*--overwrite"):
        predict_images(exported, images[:1], out)
    assert (out / "room_grid.png").read_bytes() == b"older"  # nothing was written
    assert predict_images(exported, images[:1], out, overwrite=True) == written
    assert (out / "room_grid.png").read_bytes() != b"older"
    with pytest.raises(PixcoreError, match="never input images"):  # not even with overwrite
        predict_images(exported, [images[0], out / "room_semseg.png"], out, overwrite=True)


def test_a_static_export_takes_its_size_or_windows_of_it(
    model: pixcore.MultiTaskModel, static: Path, tmp_path: Path
) -> None:
    assert read_metadata(static).size == STATIC
    image = _image(*STATIC, seed=4)
    _check_against(OnnxPredictor(static)(image), _eager(model, image))
    images = _inputs(tmp_path / "in")
    with pytest.raises(PixcoreError, match=r"exported for 48x64 inputs only.*--window 48 64"):
        predict_images(static, images, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(PixcoreError, match=r"--window must be that size: --window 48 64"):
        OnnxPredictor(static, window=(32, 32))
    for size in ((70, 90), (40, 50)):  # larger, and smaller (padded up to the window)
        image = _image(*size, seed=5)
        got = OnnxPredictor(static, window=STATIC, overlap=0.5)(image)
        _check_against(got, _eager(Predictor(model, window=STATIC, overlap=0.5), image))


def test_without_probabilities_tta_is_refused_with_the_fix(ids_only: tuple[Path, Any], tmp_path: Path) -> None:
    path, model = ids_only
    image = _image(50, 70, seed=6)
    got, expected = OnnxPredictor(path)(image), _eager(model, image)
    np.testing.assert_array_equal(got["semseg"], expected["semseg"].argmax(0))
    for options in ({"scales": (1.0, 1.5)}, {"window": (32, 32)}):
        with pytest.raises(PixcoreError, match=r"exported\s+without them.*without --no-probabilities"):
            OnnxPredictor(path, **options)
    assert main(["predict", "--model", str(path), *map(str, _inputs(tmp_path / "in")), "--out",
                 str(tmp_path / "out"), "--window", "32", "32"]) == 2
    assert not (tmp_path / "out").exists()


def test_other_kinds_are_npy_files_and_not_mirrored(ids_only: tuple[Path, Any], tmp_path: Path) -> None:
    path, model = ids_only
    images = _inputs(tmp_path / "in")
    written = predict_images(path, images[:1], tmp_path / "out")
    assert [p.name for p in written] == ["room_edges.npy", "room_semseg.png", "room_semseg_color.png", "room_grid.png"]
    edges = np.load(tmp_path / "out" / "room_edges.npy")
    expected = _eager(model, _image(70, 90))["edges"]
    assert edges.shape == (70, 90, 2)
    np.testing.assert_allclose(edges, np.moveaxis(expected, 0, -1), atol=1e-4)
    with pytest.raises(PixcoreError, match=r"task 'edges' has output kind .*cannot be mirrored back"):
        OnnxPredictor(path, hflip=True)


def _metadata_of(path: Path) -> dict[str, Any]:
    proto = onnx.load(str(path))
    return dict(json.loads({p.key: p.value for p in proto.metadata_props}["pixcore"]))


def _with_metadata(source: Path, target: Path, value: str | None) -> Path:
    proto = onnx.load(str(source))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != "pixcore"]
    del proto.metadata_props[:]
    for key, text in kept + ([("pixcore", value)] if value is not None else []):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, text
    onnx.save(proto, str(target))
    return target


def test_damaged_and_foreign_files_are_refused_clearly(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(PixcoreError, match=r"does not exist"):
        OnnxPredictor(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model" * 10)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported.read_bytes()[:5000])
    for path in (garbage, truncated):
        with pytest.raises(PixcoreError, match=r"cannot be loaded as an ONNX model .*pixcore export"):
            OnnxPredictor(path)
    with pytest.raises(PixcoreError, match=r"not one exported by pixcore: it has no 'pixcore' entry"):
        OnnxPredictor(_with_metadata(exported, tmp_path / "foreign.onnx", None))
    newer = {**_metadata_of(exported), "version": 99}
    with pytest.raises(PixcoreError, match=r"format version 99.*Upgrade pixcore"):
        OnnxPredictor(_with_metadata(exported, tmp_path / "newer.onnx", json.dumps(newer)))
    with pytest.raises(PixcoreError, match=r"malformed \(not JSON"):
        OnnxPredictor(_with_metadata(exported, tmp_path / "bad.onnx", "{"))
    renamed = _metadata_of(exported)
    renamed["tasks"]["depth"]["outputs"]["value"] = "height"
    with pytest.raises(PixcoreError, match=r"task 'depth' names outputs \['height'\] that the graph lacks"):
        OnnxPredictor(_with_metadata(exported, tmp_path / "renamed.onnx", json.dumps(renamed)))
    code = main(["predict", "--model", str(garbage), str(exported), "--out", str(tmp_path / "out")])
    assert code == 2 and not (tmp_path / "out").exists()


def test_the_command_line(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = [str(p) for p in _inputs(tmp_path / "in")]
    assert main(["predict", "--model", str(exported), *images, "--out", str(tmp_path / "a"), "--tta",
                 "--window", "40", "40", "--overlap", "0.25", "--device", "cpu"]) == 0
    assert "wrote 21 files" in capsys.readouterr().out
    expected = OnnxPredictor(exported, hflip=True, window=(40, 40), overlap=0.25)(_image(70, 90))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "room_semseg.png")), expected["semseg"])
    for wrong in (["--checkpoint", "c.safetensors", "--model", str(exported)], []):
        with pytest.raises(SystemExit) as exit_status:  # exactly one of them
            main(["predict", *wrong, *images, "--out", str(tmp_path / "b")])
        assert exit_status.value.code == 2
    assert "one of the arguments --checkpoint --model is required" in capsys.readouterr().err
    assert main(["predict", "--model", str(exported), *images, "--out", str(tmp_path / "b"), "--weights",
                 "ema"]) == 2
    assert "leave out --weights" in capsys.readouterr().err


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONSTARTUP"}}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})


#: Runs the command and lists the heavy modules it imported.
_COMMAND = textwrap.dedent("""
    import sys
    from pixcore._cli import main
    code = main(sys.argv[1:])
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision", "pydantic", "pluggy", "yaml"})
    print("imported:", ",".join(heavy) or "nothing heavy")
    sys.exit(code)
""")


def test_predict_model_imports_no_torch(exported: Path, tmp_path: Path) -> None:
    images = [str(p) for p in _inputs(tmp_path / "in")]
    args = [sys.executable, "-c", _COMMAND, "predict", "--model", str(exported), *images, "--out",
            str(tmp_path / "out"), "--tta", "--scales", "1", "1.25", "--window", "40", "40"]
    result = _run(args)
    assert result.returncode == 0, result.stderr
    assert "imported: nothing heavy" in result.stdout, result.stdout + result.stderr
    assert len(list((tmp_path / "out").iterdir())) == 21


def test_predict_model_runs_where_only_numpy_pillow_and_onnxruntime_are(exported: Path, tmp_path: Path) -> None:
    """A fresh virtual environment with numpy, Pillow, onnxruntime (linked from this one) and
    pixcore's source on its path (what ``pip install --no-deps`` gives), nothing else."""
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    where = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    purelib = Path(where.stdout.strip())
    allowed = ("numpy", "numpy.libs", "PIL", "pillow.libs", "onnxruntime")
    for folder in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for name in allowed:
            if (Path(folder) / name).exists() and not (purelib / name).exists():
                (purelib / name).symlink_to(Path(folder) / name)
    (purelib / "pixcore-source.pth").write_text(f"{ROOT / 'core'}\n")
    missing = _run([str(python), "-c", "import torch"])
    assert missing.returncode != 0 and "No module named 'torch'" in missing.stderr
    images = [str(p) for p in _inputs(tmp_path / "in")]
    result = _run([str(python), "-m", "pixcore", "predict", "--model", str(exported), *images, "--out",
                   str(tmp_path / "out"), "--tta"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote 21 files to {tmp_path / 'out'}/"
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "room_depth.npy"),
                                  OnnxPredictor(exported, hflip=True)(_image(70, 90))["depth"][0])
