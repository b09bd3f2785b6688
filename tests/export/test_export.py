"""pixcore export: ONNX and torch.export graphs against the eager model, metadata, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from pixcore.export import ExportError, export_model
from pixcore.testing import TinyBackbone, TinyBackbonePlugin, isolated_manager
from torch import Tensor

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

#: Every core head under one of the three shipped tasks: one export covers them all.
HEAD_TASKS = {
    "seg_fpn": ("segmentation", "fpn", {"num_classes": 5}),
    "depth_linear": ("depth", "linear", {"max_depth": 10.0}),
    "normals_deeplab": ("normals", "deeplabv3plus", {}),
    "seg_upernet": ("segmentation", "upernet", {"num_classes": 3}),
    "depth_dpt": ("depth", "dpt", {"bins": 8, "max_depth": 10.0}),
}
ODD_SIZES = ((97, 130), (33, 70), (64, 64))


class _ToyTask(pixcore.Task):
    """A third-party task: two channels decoded by tanh, nothing export-specific."""

    from pixcore._targets import ScalarField as target_kind  # noqa: N813

    default_loss = "l1"
    default_metrics = ()

    def __init__(self) -> None:
        super().__init__("toy", None)

    @property
    def out_channels(self) -> int:
        return 2

    def decode(self, raw: Tensor) -> Tensor:
        return torch.tanh(raw)

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        return np.zeros((*value.shape[-2:], 3), np.uint8)

    def baseline(self, targets: Any) -> Tensor:
        return torch.zeros(2)


class _ToyPlugin:
    @pixcore.hookimpl
    def pixcore_tasks(self) -> list[pixcore.Component]:
        return [pixcore.Component("toy", _ToyTask)]


@pytest.fixture(scope="module")
def manager() -> pixcore.PluginManager:
    return isolated_manager(TinyBackbonePlugin(), "pixcore_seg._plugin", "pixcore_depth._plugin",
                            "pixcore_normals._plugin", _ToyPlugin())


@pytest.fixture(scope="module")
def model(manager: pixcore.PluginManager) -> pixcore.MultiTaskModel:
    torch.manual_seed(0)
    tasks: dict[str, Any] = {
        key: {"task": task, "params": params, "head": {"name": head, "params": {} if head == "linear" else {
            "channels": 16}}}
        for key, (task, head, params) in HEAD_TASKS.items()
    }
    tasks["toy"] = {"task": "toy", "head": {"name": "fpn", "params": {"channels": 16}}}
    model = pixcore.build_model("testing/tiny", tasks=tasks, manager=manager).eval()
    with torch.no_grad():  # away from the near-zero initial outputs: the outputs must differ
        for head in model.heads.values():
            head.output.weight.normal_(std=0.3)  # type: ignore[union-attr, operator]
    return model


@pytest.fixture(scope="module")
def exported(model: pixcore.MultiTaskModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(model, tmp_path_factory.mktemp("onnx"), dynamic=True).path


def _run(path: Path, image: Tensor) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": image.numpy()}), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(("height", "width"), ODD_SIZES)
def test_onnx_matches_eager_for_every_head_and_task(
    model: pixcore.MultiTaskModel, exported: Path, height: int, width: int
) -> None:
    image = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = model(image)
    out = _run(exported, image)
    for key, (task, _, _) in HEAD_TASKS.items():
        if task == "segmentation":
            np.testing.assert_array_equal(out[key], eager[key].argmax(1).numpy())
            probabilities = torch.softmax(eager[key], 1).numpy()
            np.testing.assert_allclose(out[f"{key}_probabilities"], probabilities, atol=1e-5)
            assert out[key].shape == (2, height, width) and out[key].dtype == np.int64
        else:
            np.testing.assert_allclose(out[key], eager[key].numpy(), atol=1e-4, rtol=1e-4)
            assert out[key].shape == (2, eager[key].shape[1], height, width)
    np.testing.assert_allclose(out["toy"], eager["toy"].numpy(), atol=1e-5)  # a third-party decode


def test_metadata_tells_a_consumer_everything(model: pixcore.MultiTaskModel, exported: Path) -> None:
    proto = onnx.load(str(exported))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["pixcore"])
    assert meta["format"] == "pixcore-export" and meta["version"] == 1
    assert meta["input"]["dtype"] == "uint8" and meta["input"]["dynamic"] is True
    assert meta["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406], abs=1e-6)
    assert [o["name"] for o in meta["outputs"]] == [o.name for o in proto.graph.output]
    seg = meta["tasks"]["seg_fpn"]
    assert seg["kind"] == "class_mask" and seg["num_classes"] == 5 and seg["ignore_index"] == 255
    assert seg["outputs"] == {"ids": "seg_fpn", "probabilities": "seg_fpn_probabilities"}
    # The palette is the task's own colours: its picture of class k is palette[k].
    picture = model.tasks["seg_fpn"].visualize(torch.eye(5).unsqueeze(1))
    assert seg["palette"] == picture[0].tolist()
    depth = meta["tasks"]["depth_dpt"]
    assert depth["kind"] == "scalar_field" and depth["units"] == "m" and depth["max_depth"] == 10.0
    assert depth["channels"] == 1  # 8 bins decoded to one depth
    assert meta["tasks"]["normals_deeplab"]["kind"] == "unit_vector_field"
    assert meta["tasks"]["toy"]["task"] == "toy"
    assert meta["versions"]["pixcore"] and meta["versions"]["torch"] == torch.__version__
    assert meta["config"]["backbone"]["name"] == "testing/tiny"


def test_static_export_and_no_probabilities(model: pixcore.MultiTaskModel, tmp_path: Path) -> None:
    result = export_model(model, tmp_path, dynamic=False, size=(40, 56), probabilities=False)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    assert shape[1:] == [3, 40, 56] and not isinstance(shape[0], int)  # any batch, one size
    assert not any(o.name.endswith("_probabilities") for o in session.get_outputs())
    assert result.metadata["input"]["size"] == [40, 56]  # type: ignore[index]


def test_torch_export_archive_with_sidecar(model: pixcore.MultiTaskModel, tmp_path: Path) -> None:
    result = export_model(model, tmp_path, format="torch-export")
    assert result.path.name == "model.pt2"
    meta = json.loads((tmp_path / "model.json").read_text())
    program = torch.export.load(str(result.path))
    image = torch.randint(0, 256, (1, 3, 45, 77), dtype=torch.uint8)
    outputs = dict(zip([o["name"] for o in meta["outputs"]], program.module()(image), strict=True))
    with torch.no_grad():
        eager = model(image)
    torch.testing.assert_close(outputs["normals_deeplab"], eager["normals_deeplab"])


class _DataDependent(pixcore.Backbone):
    """A backbone that branches on a tensor's value: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_info = [pixcore.FeatureLevel(4, 4)]
        self.conv = torch.nn.Conv2d(3, 4, 4, stride=4)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.conv(x)
        if features.mean() > 0:  # data-dependent control flow
            features = -features
        return [features]


def test_an_untraceable_backbone_is_named(tmp_path: Path) -> None:
    class Plugin:
        @pixcore.hookimpl
        def pixcore_backbones(self) -> list[pixcore.Component]:
            return [pixcore.Component("datadep", _DataDependent)]

    manager = isolated_manager(Plugin(), "pixcore_seg._plugin")
    model = pixcore.build_model("datadep", tasks={"s": {"task": "segmentation", "params": {"num_classes": 2}}},
                                manager=manager)
    with pytest.raises(ExportError, match=r"cannot export the model: torch.export failed in the backbone "
                                          r"_DataDependent"):
        export_model(model, tmp_path)
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
def test_a_plain_vit_with_every_head_exports(tmp_path: Path) -> None:
    manager = isolated_manager("pixcore_timm._plugin", "pixcore_seg._plugin", "pixcore_depth._plugin")
    tasks = {head: {"task": "segmentation", "params": {"num_classes": 3}, "head": {"name": head, "params": {} if
             head == "linear" else {"channels": 16}}} for head in ("fpn", "dpt", "linear", "upernet", "deeplabv3plus")}
    model = pixcore.build_model("timm/test_vit", tasks=tasks, manager=manager).eval()
    path = export_model(model, tmp_path).path
    image = torch.randint(0, 256, (1, 3, 75, 101), dtype=torch.uint8)
    with torch.no_grad():
        eager = model(image)
    out = _run(path, image)
    for head in tasks:
        np.testing.assert_allclose(out[f"{head}_probabilities"], torch.softmax(eager[head], 1).numpy(), atol=1e-4)


class _SizeRecorder(TinyBackbone):
    """The tiny backbone, remembering the (symbolic, while exporting) size it was given."""

    seen: list[Any] = []

    def forward(self, x: Tensor) -> list[Tensor]:
        _SizeRecorder.seen.append(x.shape[-2])
        return super().forward(x)


def test_the_padded_size_is_a_stride_multiple_the_exporter_can_see() -> None:
    """Windowed backbones (Swin) divide the padded size again and again: written as
    ``stride * ceil(H / stride)`` the exporter's shape algebra divides it exactly; written as
    ``H + (-H) % stride`` it carries a remainder term into every block and takes minutes."""
    import sympy

    class Plugin:
        @pixcore.hookimpl
        def pixcore_backbones(self) -> list[pixcore.Component]:
            return [pixcore.Component("recorder", _SizeRecorder)]

    manager = isolated_manager(Plugin(), "pixcore_seg._plugin")
    model = pixcore.build_model("recorder", tasks={"s": {"task": "segmentation", "params": {"num_classes": 2}}},
                                manager=manager).eval()
    _SizeRecorder.seen.clear()
    auto = torch.export.Dim.DYNAMIC
    torch.export.export(model, (torch.zeros(2, 3, 97, 130, dtype=torch.uint8),),
                        dynamic_shapes={"image": {0: auto, 2: auto, 3: auto}}, strict=False)
    height = _SizeRecorder.seen[-1]
    assert isinstance(height, torch.SymInt)
    assert sympy.simplify(sympy.Mod(height.node.expr, 32)) == 0, height.node.expr
    assert sympy.simplify(sympy.Mod(height.node.expr // 4, 8)) == 0, height.node.expr


class _FixedSizeBackbone(TinyBackbone):
    dynamic_export = False
    fixed_export_reason = "its attention windows are counted in Python"


def test_a_backbone_that_fixes_sizes_is_refused_with_the_way_out(tmp_path: Path) -> None:
    class Plugin:
        @pixcore.hookimpl
        def pixcore_backbones(self) -> list[pixcore.Component]:
            return [pixcore.Component("fixed", _FixedSizeBackbone)]

    manager = isolated_manager(Plugin(), "pixcore_seg._plugin")
    model = pixcore.build_model("fixed", tasks={"s": {"task": "segmentation", "params": {"num_classes": 2}}},
                                manager=manager).eval()
    with pytest.raises(ExportError, match=r"_FixedSizeBackbone cannot be exported with dynamic height and width: "
                                          r"its attention windows are counted in Python\. .*--size H W.*--window H W"):
        export_model(model, tmp_path / "dynamic", dynamic=True)
    assert not (tmp_path / "dynamic" / "model.onnx").exists()
    path = export_model(model, tmp_path / "fixed", dynamic=False, size=(64, 96)).path
    image = torch.randint(0, 256, (1, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        eager = model(image)
    np.testing.assert_array_equal(_run(path, image)["s"], eager["s"].argmax(1).numpy())
