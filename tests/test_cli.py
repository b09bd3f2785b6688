"""The command line, end to end with the real plugins: demo, train, eval, predict, plugins, list."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from PIL import Image
from pixcore._cli import DEBUG_ENV, main
from pixcore.data import CLASS_NAMES
from pixcore.train import load_checkpoint, read_metadata

pytestmark = pytest.mark.slow

SMALL = [
    "data.train.params.height=40", "data.train.params.width=48",
    "data.val.params.height=40", "data.val.params.width=48",
    "data.val.params.length=8", "data.batch_size=4", "data.num_workers=0",
    "trainer.progress=false", "trainer.log_every=1",
]


def _args(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def test_demo_writes_metrics_log_checkpoint_and_picture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--steps", "3", "--samples", "2", *_args(SMALL)])
    printed = capsys.readouterr().out
    assert code == 0  # without --check a missed bar is reported, not fatal
    for task, metric in (("semseg", "miou"), ("depth", "abs_rel"), ("normals", "mean")):
        assert f"{task:<8} {metric:<8}" in printed, printed

    summary = json.loads((out / "metrics.json").read_text())
    assert {b["task"] for b in summary["bars"]} == {"semseg", "depth", "normals"}
    assert summary["model"]["depth"]["protocol"]["depth_errors"]
    assert 0.0 <= summary["baseline"]["semseg"]["miou"] <= 1.0

    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert {"semseg/loss", "depth/loss", "normals/loss"} <= set(rows[0])

    # The checkpoint rebuilds the model from its own config and predicts the same.
    path = out / "checkpoint.safetensors"
    config = pixcore.RunConfig.model_validate(read_metadata(path)["config"])
    model = pixcore.build_model_from_config(config.model)
    report = load_checkpoint(path, model)
    assert report.metadata["step"] == 3
    assert model(torch.zeros(1, 3, 40, 48, dtype=torch.uint8))["depth"].shape == (1, 1, 40, 48)

    picture = np.asarray(Image.open(out / "samples.png"))
    # 2 rows of 7 panels (input + truth/prediction for 3 tasks), each 2x upscaled.
    assert picture.shape[0] > 2 * 2 * 40 and picture.shape[1] > 7 * 2 * 48
    assert picture.std() > 20, "the picture is not blank"

    # The run report, named in the last lines of the output.
    pictures = {p.stem.partition("_")[2] for p in (out / "report").glob("*.png")}
    assert (out / "report.html").is_file()
    assert {"loss", "iou_semseg", "confusion_semseg", "depth_maps_depth", "normals_maps_normals", "samples"} <= pictures
    assert f"report: {out / 'report.html'}" in printed.splitlines()[-2]


def test_demo_check_fails_when_a_bar_is_missed(tmp_path: Path) -> None:
    # One step at lr 0 cannot beat the baselines: --check must turn that into exit code 1.
    code = main(["demo", "--out", str(tmp_path), "--steps", "1", "--check", "--samples", "1",
                 *_args([*SMALL, "trainer.lr=1e-12"])])
    assert code == 1


def test_demo_check_fails_when_a_class_misses_its_iou(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pixcore._cli as cli

    # Bars any model meets, so that only the per-class IoU can decide the exit code.
    monkeypatch.setattr(cli, "DEMO_BARS", (("semseg", "miou", True, 0.0), ("depth", "abs_rel", False, math.inf),
                                           ("normals", "mean", False, math.inf)))
    argv = ["demo", "--steps", "1", "--check", "--samples", "1", *_args([*SMALL, "trainer.lr=1e-12"])]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 1  # one step at lr 0: no class reaches 0.5
    printed = capsys.readouterr().out
    assert all(f"{name:<10}" in printed for name in CLASS_NAMES), printed
    summary = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert all(bar["passed"] for bar in summary["bars"])
    assert [c["class"] for c in summary["classes"]] == list(CLASS_NAMES)
    assert not all(c["passed"] for c in summary["classes"])

    monkeypatch.setattr(cli, "DEMO_MIN_CLASS_IOU", 0.0)  # the same run passes when any IoU will do
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0


@pytest.mark.parametrize(
    ("ious", "names", "expected"),
    [
        ([0.9, 0.5, 0.49], ("floor", "wall", "sphere"), [("floor", 0.9, True), ("wall", 0.5, True),
                                                         ("sphere", 0.49, False)]),
        # Names that do not match the scored classes are not guessed from.
        ([0.7, 0.2], ("floor", "wall", "sphere"), [("class 0", 0.7, True), ("class 1", 0.2, False)]),
        ([0.7, 0.2], None, [("class 0", 0.7, True), ("class 1", 0.2, False)]),
    ],
)
def test_class_ious_names_each_class_and_compares_with_the_bar(
    ious: list[float], names: tuple[str, ...] | None, expected: list[tuple[str, float, bool]]
) -> None:
    from pixcore._cli import _class_ious

    metrics = {"miou": 0.5, "pixel_acc": 0.9, **{f"iou/{c}": v for c, v in enumerate(ious)}}
    assert _class_ious(metrics, names) == expected


@pytest.mark.parametrize(
    ("overrides", "native", "precision"),
    [
        ([], True, "bf16"),  # native bfloat16: the demo's 500 steps fit its time
        ([], False, "32"),  # emulated bfloat16 would be slower than float32
        (["trainer.precision=32"], True, "32"),  # the user's choice wins
        (["trainer.precision = fp16"], True, "fp16"),
        (["trainer.steps=3"], True, "bf16"),
    ],
)
def test_demo_trains_in_bf16_only_where_native_unless_told(
    overrides: list[str], native: bool, precision: str
) -> None:
    from pixcore._cli import _demo_config_path, _demo_precision

    chosen = _demo_precision(overrides, native)
    assert set(overrides) <= set(chosen)
    assert pixcore.load_config(_demo_config_path(), chosen).trainer.precision == precision


def test_class_ious_a_class_neither_shown_nor_predicted_fails() -> None:
    from pixcore._cli import _class_ious

    [(name, iou, ok)] = _class_ious({"iou/0": math.nan}, ("sphere",))
    assert name == "sphere" and math.isnan(iou) and not ok


def test_train_from_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        """
model:
  backbone: timm/resnet18
  tasks:
    depth: {}
data:
  train: {name: synthetic, params: {length: 16, height: 32, width: 32}}
  val: {name: synthetic, params: {split: val, length: 4, height: 32, width: 32}}
  batch_size: 4
trainer: {steps: 2, progress: false}
"""
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"depth"} and metrics["depth"]["abs_rel"] > 0
    assert (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_train_reports_config_errors_with_their_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("model: {backbone: timm/resnet18, tasks: {depth: {}}}\ndata: {train: synthetic}\n")
    assert main(["train", str(config), "--set", "trainer.stepz=3"]) == 2
    error = capsys.readouterr().err
    assert "trainer.stepz" in error and "bad.yaml" in error


def test_plugins_lists_distributions_versions_and_registrations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    infos = {i["distribution"]: i for i in json.loads(capsys.readouterr().out)}
    assert infos["pixcore-depth"]["registered"]["tasks"] == ["depth"]
    assert infos["pixcore-timm"]["registered"]["backbones"] == ["timm/*"]
    assert infos["pixcore-seg"]["version"] == "0.1.0"
    assert all(i["status"] == "loaded" for i in infos.values())


def test_list_filters_by_family_and_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "backbones", "timm/resnet1*", "--limit", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("backbones (")
    assert out[1:4] == ["  timm/resnet101", "  timm/resnet101_clip", "  timm/resnet101_clip_gap"]
    assert "more" in out[4]


def test_list_check_reports_sizes_and_heads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "backbones", "--check", "timm/test_vit", "--sizes", "33x45,64x64"]) == 0
    out = capsys.readouterr().out
    assert "4 levels [64 ch @ stride 16" in out and "size_policy: stride" in out
    assert "33x45: ok" in out and "64x64: ok" in out
    for head in ("fpn", "linear", "deeplabv3plus", "upernet", "dpt"):
        assert f"    {head}: ok" in out


def test_list_check_exits_1_naming_what_fails(capsys: pytest.CaptureFixture[str]) -> None:
    # A relative-position ViT takes only its native 160 x 160 unless resized to it.
    args = ["list", "backbones", "--check", "timm/test_vit_relpos", "--sizes", "160x160,96x128"]
    assert main([*args, "--set", "size_policy=stride"]) == 1
    out = capsys.readouterr().out
    assert "160x160: ok" in out and "96x128: FAILS: ConfigError" in out and "size_policy" in out
    assert main(args) == 0  # auto: resize
    assert main(["list", "backbones", "--check", "timm/test_vit", "--sizes", "big"]) == 2
    assert "--sizes: 'big' is not HEIGHTxWIDTH" in capsys.readouterr().err


# -- eval and predict: a tiny model trained for two steps, then used from its checkpoint ---

TINY_RUN = """
model:
  backbone: testing/tiny
  tasks:
    semseg: {task: segmentation, params: {num_classes: 7}, head: {name: fpn, params: {channels: 8}}}
    depth: {head: {name: fpn, params: {channels: 8}}}
    normals: {head: {name: fpn, params: {channels: 8}}}
data:
  train: {name: synthetic, params: {length: 8, height: 32, width: 32}}
  val: {name: synthetic, params: {split: val, length: 4, height: 32, width: 40}}
  batch_size: 2
trainer: {steps: 2, progress: false, device: cpu}
"""


def _tiny_manager() -> pixcore.PluginManager:
    from pixcore.testing import isolated_manager

    return isolated_manager(
        "pixcore_seg._plugin", "pixcore_depth._plugin", "pixcore_normals._plugin", tiny_backbone=True
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, checkpoint) of a three-task model with the tiny test backbone."""
    from pixcore.plugin._manager import reset_plugin_manager

    folder = tmp_path_factory.mktemp("tiny_run")
    config = folder / "run.yaml"
    config.write_text(TINY_RUN)
    old, threads = reset_plugin_manager(_tiny_manager()), torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only waits on a busy machine
    try:
        with torch.random.fork_rng():
            assert main(["train", str(config), "--out", str(folder / "run")]) == 0
    finally:
        reset_plugin_manager(old)
        torch.set_num_threads(threads)
    return config, folder / "run" / "checkpoint.safetensors"


@pytest.fixture
def tiny_plugins() -> Iterator[None]:
    """The real task plugins plus the tiny test backbone as the process-wide plugins; one thread."""
    from pixcore.plugin._manager import reset_plugin_manager

    old, threads = reset_plugin_manager(_tiny_manager()), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        reset_plugin_manager(old)
        torch.set_num_threads(threads)


def _scene_images(folder: Path, count: int = 2) -> list[np.ndarray]:
    from pixcore.data import SyntheticScenes

    folder.mkdir(parents=True, exist_ok=True)
    scenes = SyntheticScenes(split="test", length=count, height=30, width=44)
    arrays = [scenes[i]["image"].permute(1, 2, 0).numpy() for i in range(count)]
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"scene{i}.png")
    return arrays


def test_eval_prints_metrics_with_protocols_and_writes_json(
    tiny_run: tuple[Path, Path], tiny_plugins: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, checkpoint = tiny_run
    out = tmp_path / "metrics.json"
    code = main(["eval", str(config), "--checkpoint", str(checkpoint), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    for needle in ("semseg", "miou", "abs_rel", "normals", "confusion-pooled", "pixel-pooled"):
        assert needle in printed, printed
    record = json.loads(out.read_text())
    metrics = record["metrics"]
    assert set(metrics) == {"semseg", "depth", "normals"}
    assert record["inference"]["hflip"] is False and record["inference"]["window"] is None

    # The training run evaluated the same model on the same data at its last step.
    trained = json.loads((checkpoint.parent / "metrics.json").read_text())
    for task, key in (("semseg", "miou"), ("depth", "abs_rel"), ("normals", "mean")):
        assert metrics[task][key] == pytest.approx(trained[task][key], rel=1e-6)


def test_eval_with_tta_and_windows_records_its_settings(
    tiny_run: tuple[Path, Path], tiny_plugins: None, tmp_path: Path
) -> None:
    config, checkpoint = tiny_run
    out = tmp_path / "m.json"
    assert main(["eval", str(config), "--checkpoint", str(checkpoint), "--tta", "--window", "16", "24",
                 "--overlap", "0.25", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["inference"] == {"hflip": True, "scales": [1.0], "window": [16, 24], "overlap": 0.25,
                                   "weighting": "gaussian"}
    assert 0.0 <= record["metrics"]["semseg"]["miou"] <= 1.0
    assert record["metrics"]["depth"]["protocol"]["depth_errors"]


def test_eval_without_held_out_data_says_how_to_add_it(
    tiny_run: tuple[Path, Path], tiny_plugins: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, checkpoint = tiny_run
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(config.read_text().replace("  val: {name: synthetic", "  # val: {name: synthetic"))
    assert main(["eval", str(no_val), "--checkpoint", str(checkpoint)]) == 2
    error = capsys.readouterr().err
    assert "data.val" in error and "val:" in error


def test_predict_writes_each_task_in_its_format(
    tiny_run: tuple[Path, Path], tiny_plugins: None, tmp_path: Path
) -> None:
    from pixcore.infer import load_model

    _, checkpoint = tiny_run
    arrays = _scene_images(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--device", "cpu"]) == 0
    model = load_model(checkpoint)
    for i, array in enumerate(arrays):
        stem = f"scene{i}"
        with torch.no_grad():
            predictions = model(torch.from_numpy(array).permute(2, 0, 1)[None])

        ids = np.asarray(Image.open(out / f"{stem}_semseg.png"))
        assert ids.dtype == np.uint8 and ids.shape == (30, 44)
        np.testing.assert_array_equal(ids, predictions["semseg"][0].argmax(0).numpy())
        assert np.asarray(Image.open(out / f"{stem}_semseg_color.png")).shape == (30, 44, 3)

        depth = np.load(out / f"{stem}_depth.npy")
        assert depth.dtype == np.float32 and depth.shape == (30, 44)
        np.testing.assert_allclose(depth, predictions["depth"][0, 0].numpy(), rtol=1e-5)
        millimetres = np.asarray(Image.open(out / f"{stem}_depth.png"))
        assert millimetres.dtype == np.uint16 and millimetres.shape == (30, 44)
        assert np.abs(millimetres / 1000.0 - depth).max() <= 0.001  # within 1 mm

        normals = np.load(out / f"{stem}_normals.npy")
        assert normals.dtype == np.float32 and normals.shape == (30, 44, 3)
        np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, rtol=1e-5)
        assert np.asarray(Image.open(out / f"{stem}_normals_rgb.png")).shape == (30, 44, 3)

        grid = np.asarray(Image.open(out / f"{stem}_grid.png"))
        assert grid.shape[1] > 4 * 44  # input + three tasks


def test_predict_with_tta_refuses_to_overwrite_and_names_unreadable_files(
    tiny_run: tuple[Path, Path], tiny_plugins: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, checkpoint = tiny_run
    _scene_images(tmp_path / "in", 1)
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in" / "scene0.png"), "--checkpoint", str(checkpoint),
            "--out", str(out), "--tta", "--scales", "0.75", "1", "--device", "cpu"]
    assert main(args) == 0
    first = np.load(out / "scene0_normals.npy")
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    np.testing.assert_array_equal(np.load(out / "scene0_normals.npy"), first)

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["predict", str(broken), "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "o2")]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert main(["predict", str(broken), "--checkpoint", str(tmp_path / "none.safetensors"),
                 "--out", str(tmp_path / "o3")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_on_a_real_photo(tiny_run: tuple[Path, Path], tiny_plugins: None, tmp_path: Path) -> None:
    """A real photo (scikit-image's chelsea, 300x451, saved as JPEG): every output at its size,
    equal to the model's own prediction on the decoded file."""
    from pixcore.infer import load_model
    from skimage import data

    _, checkpoint = tiny_run
    photo = tmp_path / "photos" / "chelsea.jpg"
    photo.parent.mkdir()
    Image.fromarray(data.chelsea()).save(photo, quality=90)
    out = tmp_path / "out"
    assert main(["predict", str(photo.parent), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--device", "cpu"]) == 0
    decoded = np.array(Image.open(photo).convert("RGB"))
    with torch.no_grad():
        predictions = load_model(checkpoint)(torch.from_numpy(decoded).permute(2, 0, 1)[None])
    ids = np.asarray(Image.open(out / "chelsea_semseg.png"))
    assert ids.shape == (300, 451)
    np.testing.assert_array_equal(ids, predictions["semseg"][0].argmax(0).numpy())
    depth = np.load(out / "chelsea_depth.npy")
    assert depth.shape == (300, 451) and bool((depth > 0).all())
    np.testing.assert_allclose(depth, predictions["depth"][0, 0].numpy(), rtol=1e-5)
    normals = np.load(out / "chelsea_normals.npy")
    assert normals.shape == (300, 451, 3)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, rtol=1e-5)


# -- user errors: one line and exit status 2; --debug shows the traceback --------------------

MINIMAL_RUN = "model: {backbone: testing/tiny, tasks: [depth]}\ndata: {train: synthetic}\n"


@pytest.fixture
def minimal_config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(MINIMAL_RUN)
    return path


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.device=gpu0", "trainer.device: device 'gpu0' is not a device name; use 'auto', 'cpu', 'cuda', "),
    ("trainer.lr=[1", "override 'trainer.lr=[1': its value '[1' is not valid YAML"),
    ("trainer.lr=.inf", "trainer.lr: Input should be a finite number"),
    ("trainer.stpes=3", "trainer.stpes: Extra inputs are not permitted (got 3) - did you mean 'steps'?"),
])
def test_a_config_mistake_is_one_error_line_and_status_2(
    minimal_config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    override: str, expected: str,
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert main(["train", str(minimal_config), "--set", override]) == 2
    error = capsys.readouterr().err
    assert error.startswith("pixcore: error: ") and expected in error
    assert "Traceback" not in error


def test_debug_flag_and_env_show_the_traceback_of_user_errors(
    minimal_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(pixcore.ConfigError, match="not valid YAML"):
        main(["--debug", "train", str(minimal_config), "--set", "trainer.lr=[1"])
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(pixcore.DeviceError, match="'gpu0'"):
        main(["predict", str(minimal_config), "--checkpoint", "c.safetensors", "--out", "o",
              "--device", "gpu0"])


def test_a_bug_is_not_hidden_behind_an_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixcore import _cli

    def bug(args: object) -> int:
        raise KeyError("internal")

    monkeypatch.setattr(_cli, "_cmd_list", bug)
    with pytest.raises(KeyError, match="internal"):
        main(["list"])


def test_the_command_prints_no_traceback_unless_debugging(minimal_config: Path) -> None:
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "pixcore._cli", "train", str(minimal_config), "--set", "trainer.lr=[1"]
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 2
    assert quiet.stderr.startswith("pixcore: error: override 'trainer.lr=[1'") and "Traceback" not in quiet.stderr
    loud = subprocess.run(command, capture_output=True, text=True, env={**env, DEBUG_ENV: "1"}, timeout=120)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "ConfigError" in loud.stderr


def test_predict_with_a_torch_checkpoint_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, weights)
    _scene_images(tmp_path / "in", 1)
    assert main(["predict", str(tmp_path / "in"), "--checkpoint", str(weights), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert f"{weights} is a torch checkpoint (.pt), not a pixcore checkpoint (.safetensors)" in error
    assert f"model.pretrained: {weights}" in error


def test_plugins_lists_clashing_plugins_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    from pixcore.plugin._manager import reset_plugin_manager

    class First:
        @pixcore.hookimpl
        def pixcore_heads(self) -> Iterator[pixcore.Component]:
            yield pixcore.Component("twin_head", dict)

    class Second(First):
        pass

    manager = pixcore.PluginManager(autoload=False)
    manager.register(First(), name="first", distribution="dist-one", version="1.0")
    manager.register(Second(), name="second", distribution="dist-two", version="2.0")
    old = reset_plugin_manager(manager)
    try:
        assert main(["plugins"]) == 0
    finally:
        reset_plugin_manager(old)
    out = capsys.readouterr().out
    assert "first: dist-one 1.0 [clash]" in out and "second: dist-two 2.0 [clash]" in out
    assert "error: head 'twin_head' is registered twice: by dist-one 1.0 and by dist-two 2.0" in out
    assert "pixcore: pixcore" in out and "[loaded]" in out


@pytest.mark.slow
def test_export_writes_an_onnx_model_with_named_outputs(
    tiny_run: tuple[Path, Path], tiny_plugins: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    _, checkpoint = tiny_run
    assert main(["export", str(checkpoint), "--dynamic", "--out", str(tmp_path / "model")]) == 0
    out = capsys.readouterr().out
    assert "model.onnx" in out and "dynamic batch, height and width" in out
    assert "outputs semseg, semseg_probabilities, depth, normals" in out
    assert (tmp_path / "model" / "model.onnx").stat().st_size > 0
    assert main(["export", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_eval_of_an_exported_model_matches_its_checkpoint(
    tiny_run: tuple[Path, Path], tiny_plugins: None, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    config, checkpoint = tiny_run
    assert main(["export", str(checkpoint), "--dynamic", "--out", str(tmp_path / "model")]) == 0
    scores = {}
    for source in (["--checkpoint", str(checkpoint)], ["--model", str(tmp_path / "model" / "model.onnx")]):
        out = tmp_path / f"{source[0][2:]}.json"
        assert main(["eval", str(config), *source, "--out", str(out), "--device", "cpu"]) == 0
        scores[source[0]] = json.loads(out.read_text())["metrics"]
    eager, exported = scores["--checkpoint"], scores["--model"]
    for task, metrics in eager.items():
        for key, value in metrics.items():
            if isinstance(value, float) and value == value:  # not NaN
                assert exported[task][key] == pytest.approx(value, abs=1e-4), f"{task}/{key}"


def test_demo_stopped_by_a_signal_exits_75_without_a_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import pixcore.train
    from pixcore.train import TrainResult

    def stopped(config: Any, **kwargs: Any) -> tuple[Any, TrainResult]:
        return object(), TrainResult(metrics={}, steps=24, seconds=1.0, checkpoint=None, interrupted=True,
                                     stop_reason="SIGTERM")

    monkeypatch.setattr(pixcore.train, "train", stopped)
    assert main(["demo", "--out", str(tmp_path), "--steps", "300"]) == 75


@pytest.mark.slow
def test_export_int8_writes_a_quantised_copy_and_needs_calibration_for_static(
    tiny_run: tuple[Path, Path], tiny_plugins: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    config, checkpoint = tiny_run
    base = ["export", str(checkpoint), "--dynamic", "--out", str(tmp_path / "m")]
    assert main([*base, "--int8", "static"]) == 2
    assert "--int8 static calibrates on real images: give --calibration CONFIG" in capsys.readouterr().err
    assert main([*base, "--int8", "static", "--calibration", str(config), "--calibration-images", "4"]) == 0
    assert "INT8 static, calibrated on 4 images" in capsys.readouterr().out
    quantised = tmp_path / "m" / "model.int8.onnx"
    assert main(["eval", str(config), "--model", str(quantised), "--device", "cpu"]) == 0
    assert "semseg" in capsys.readouterr().out
