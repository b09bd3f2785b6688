"""INT8 quantisation of exported models: static (calibrated QDQ) and dynamic, metadata, calibration data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pixcore
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402
from pixcore.data import SyntheticScenes  # noqa: E402
from pixcore.export import export_model  # noqa: E402
from pixcore.export._quantize import QuantizationError, calibration_images, quantize_model  # noqa: E402
from pixcore.testing import TinyBackbonePlugin, isolated_manager  # noqa: E402

CALIBRATION = 12


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny backbone with a segmentation, a depth and a normals head, exported (dynamic)."""
    manager = isolated_manager(TinyBackbonePlugin(), "pixcore_seg._plugin", "pixcore_depth._plugin",
                               "pixcore_normals._plugin")
    torch.manual_seed(0)
    head = {"name": "fpn", "params": {"channels": 16}}
    tasks: dict[str, Any] = {"semseg": {"task": "segmentation", "params": {"num_classes": 7}, "head": head},
                             "depth": {"task": "depth", "head": head}, "normals": {"task": "normals", "head": head}}
    model = pixcore.build_model("testing/tiny", tasks=tasks, manager=manager).eval()
    with torch.no_grad():  # away from the near-zero initial outputs: classes and depths must vary
        for module in model.heads.values():
            module.output.weight.normal_(std=0.3)  # type: ignore[union-attr, operator]
    return export_model(model, tmp_path_factory.mktemp("fp32")).path


@pytest.fixture(scope="module")
def rooms() -> list[np.ndarray]:
    """Calibration images: training rooms, drawn as pixcore's data building gives them."""
    return calibration_images(SyntheticScenes(split="train", length=40, height=64, width=64), count=CALIBRATION)


@pytest.fixture(scope="module")
def int8(fp32: Path, rooms: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize_model(fp32, tmp_path_factory.mktemp("int8") / "model.onnx", calibration=rooms)


def _held_out() -> np.ndarray:
    val = SyntheticScenes(split="val", length=6, height=64, width=96)  # another split, and another size
    return np.stack([val[i]["image"].numpy() for i in range(len(val))])


def _run(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": images}), strict=True))


def _metadata(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["pixcore"])
    return meta


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _activation_scales(path: Path) -> dict[str, float]:
    """The scale of every quantised activation (``QuantizeLinear`` input -> its scale)."""
    model = onnx.load(str(path))
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return {node.input[0]: float(constants[node.input[1]]) for node in model.graph.node
            if node.op_type == "QuantizeLinear" and node.input[1] in constants and constants[node.input[1]].size == 1}


def test_static_int8_is_quantised_and_close_to_fp32(fp32: Path, int8: Path) -> None:
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(int8)
    images = _held_out()
    ref, out = _run(fp32, images), _run(int8, images)
    assert list(out) == list(ref)
    for name in ref:
        assert out[name].dtype == ref[name].dtype and out[name].shape == ref[name].shape
    # Class ids: measured 99.8 % agreement; the rest are pixels whose two best classes are
    # within a quantisation step of each other.
    assert (out["semseg"] == ref["semseg"]).mean() > 0.98
    # Depth: 8-bit activations carry up to half a step (1/510 of each tensor's range) of
    # error per quantised layer, some ten layers deep: measured 0.5 % mean relative error
    # and a largest error of 3 % of the depths' range; 4x and 3x margins.
    error = np.abs(out["depth"] - ref["depth"])
    assert (error / ref["depth"]).mean() < 0.02
    assert error.max() < 0.1 * np.ptp(ref["depth"])
    # Normals: measured 0.35 degrees mean angle; they stay unit vectors (a float tail).
    cosine = np.clip((out["normals"] * ref["normals"]).sum(axis=1), -1.0, 1.0)
    assert np.degrees(np.arccos(cosine)).mean() < 1.5
    np.testing.assert_allclose(np.linalg.norm(out["normals"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["semseg_probabilities"].sum(axis=1), 1.0, atol=1e-5)


def test_metadata_is_kept_and_tells_the_quantisation(fp32: Path, int8: Path) -> None:
    before, after = _metadata(fp32), _metadata(int8)
    quantization = after.pop("quantization")
    assert after == before
    assert quantization["mode"] == "static" and quantization["method"] == "minmax"
    assert quantization["calibration_images"] == CALIBRATION  # every image went through the reader
    assert quantization["per_channel"] is True and quantization["format"] == "QDQ"


def test_decoding_stays_float(fp32: Path, int8: Path, rooms: list[np.ndarray], tmp_path: Path) -> None:
    """ArgMax, Softmax and the normals' normalisation read float tensors, not 8-bit ones."""

    def fed_by_dequantize(path: Path) -> set[str]:
        graph = onnx.load(str(path)).graph
        producers = {name: node.op_type for node in graph.node for name in node.output}
        return {node.op_type for node in graph.node if node.op_type in ("ArgMax", "Softmax", "ReduceL2")
                and producers.get(node.input[0]) == "DequantizeLinear"}

    assert fed_by_dequantize(int8) == set()
    everything = quantize_model(fp32, tmp_path / "all.onnx", calibration=rooms, keep_float="none")
    assert fed_by_dequantize(everything) == {"ArgMax", "Softmax", "ReduceL2"}  # what "auto" saves them from


def test_the_calibration_images_set_the_ranges(fp32: Path, int8: Path, tmp_path: Path) -> None:
    grey = [np.full((1, 3, 64, 64), 128, np.uint8)] * 4
    flat = quantize_model(fp32, tmp_path / "grey.onnx", calibration=iter(grey))
    rooms, uniform = _activation_scales(int8), _activation_scales(flat)
    assert rooms.keys() == uniform.keys()
    # The first convolution's input, the normalised image: a grey image spans ~0.1 (and
    # the zero padding), rooms span [-2.1, 2.6].
    first_conv = next(node for node in onnx.load(str(fp32)).graph.node if node.op_type == "Conv")
    assert rooms[first_conv.input[0]] > 10 * uniform[first_conv.input[0]]
    assert _metadata(flat)["quantization"]["calibration_images"] == 4


def test_dynamic_quantisation_needs_no_calibration(fp32: Path, tmp_path: Path) -> None:
    path = quantize_model(fp32, tmp_path / "dynamic.onnx", mode="dynamic")
    assert {"ConvInteger", "DynamicQuantizeLinear"} <= _ops(path)
    quantization = _metadata(path)["quantization"]
    assert (quantization["mode"], quantization["calibration_images"]) == ("dynamic", 0)
    images = _held_out()
    assert (_run(path, images)["semseg"] == _run(fp32, images)["semseg"]).mean() > 0.98


def test_bad_calibration_is_refused(fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="needs calibration images"):
        quantize_model(fp32, tmp_path / "a.onnx")
    with pytest.raises(QuantizationError, match="the iterable was empty"):
        quantize_model(fp32, tmp_path / "b.onnx", calibration=[])
    with pytest.raises(QuantizationError, match=r"must be uint8 \[1, 3, H, W\]"):
        quantize_model(fp32, tmp_path / "c.onnx", calibration=[np.zeros((1, 3, 64, 64), np.float32)])
    assert not (tmp_path / "b.onnx").exists()


def test_calibration_images_come_from_the_configs_training_data() -> None:
    from pixcore._config import load_config

    config = load_config(Path(pixcore.__file__).parent / "configs" / "demo.yaml")
    images = calibration_images(config, count=3)
    train = SyntheticScenes(split="train", length=100000, height=96, width=96)  # the config's data.train
    for image, index in zip(images, (0, 50000, 99999), strict=True):  # spread over the data set
        assert image.dtype == np.uint8 and image.shape == (1, 3, 96, 96)
        np.testing.assert_array_equal(image[0], train[index]["image"].numpy())  # no augmentation
    resized = calibration_images(config, count=2, size=(40, 56), split="val")
    assert [image.shape for image in resized] == [(1, 3, 40, 56)] * 2
