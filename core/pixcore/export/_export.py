"""``pixcore export``: a checkpoint to ONNX or a torch.export archive, with its metadata."""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from pixcore._errors import PixcoreError
from pixcore.export._graph import ExportedGraph, export_outputs
from pixcore.export._metadata import METADATA_KEY, build_metadata
from pixcore.model._compose import MultiTaskModel

__all__ = ["ExportError", "ExportResult", "export_model"]

#: The size of the example image the graph is traced with (any size works with --dynamic).
EXAMPLE_SIZE = (97, 130)


class ExportError(PixcoreError):
    """A model, or one of its components, that cannot be exported; the message says which."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    metadata: dict[str, object]
    seconds: float

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def _load(model: MultiTaskModel | str | Path) -> tuple[MultiTaskModel, str]:
    if isinstance(model, MultiTaskModel):
        return model, ""
    from pixcore.infer import load_model

    return load_model(Path(model)), str(model)


def _dynamic_shapes(dynamic: bool) -> dict[str, dict[int, object]]:
    """The batch is always dynamic; height and width with ``dynamic`` only."""
    auto = torch.export.Dim.DYNAMIC
    return {"image": {0: auto, 2: auto, 3: auto} if dynamic else {0: auto}}


def export_model(
    model: MultiTaskModel | str | Path,
    out: str | Path,
    *,
    format: Literal["onnx", "torch-export"] = "onnx",
    opset: int = 18,
    dynamic: bool = True,
    size: tuple[int, int] | None = None,
    probabilities: bool = True,
) -> ExportResult:
    """Export a model (or a checkpoint file) to ``out/model.onnx`` or ``out/model.pt2``.

    The graph takes uint8 images ``[B, 3, H, W]`` and does what the model's forward does
    (normalisation, padding to the stride, cropping back, decoding), with one named
    output per task (:func:`pixcore.export._graph.export_outputs`). The batch is dynamic;
    with ``dynamic``, height and width too (at least the backbone's stride); else the
    graph takes images of ``size`` (default 97 x 130) only. The metadata
    (:mod:`pixcore.export._metadata`) goes into the ONNX model's ``metadata_props``, or
    into ``model.json`` beside the torch.export archive.
    """
    net, source = _load(model)
    net = net.eval().float()
    if dynamic:
        _check_dynamic(net)
    outputs = export_outputs(net, probabilities=probabilities)
    graph = ExportedGraph(net, outputs).eval()
    height, width = size or EXAMPLE_SIZE
    example = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8)
    task_names = {key: (cfg.task or key) for key, cfg in net.config.tasks.items()}
    metadata = build_metadata(net, outputs, dynamic=dynamic, size=None if dynamic else (height, width),
                              opset=opset if format == "onnx" else None, task_names=task_names)
    metadata["checkpoint"] = source
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with torch.no_grad():
        program = _trace(graph, example, dynamic)
        if format == "onnx":
            path = _write_onnx(graph, program, example, opset, [o.name for o in outputs], metadata, folder)
        else:
            path = folder / "model.pt2"
            torch.export.save(program, path)
            (folder / "model.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return ExportResult(path, metadata, time.perf_counter() - start)


def _check_dynamic(model: MultiTaskModel) -> None:
    """A backbone that cannot take symbolic sizes is refused before minutes of tracing."""
    backbone = model.backbone
    if getattr(backbone, "dynamic_export", True):
        return
    name = getattr(backbone, "model_name", "") or type(backbone).__name__
    reason = getattr(backbone, "fixed_export_reason", "") or "it fixes sizes while it is traced"
    raise ExportError(
        f"the backbone {name} cannot be exported with dynamic height and width: {reason}. Export it at "
        "one size instead (`pixcore export CHECKPOINT --size H W` without --dynamic; in Python "
        "dynamic=False, size=(H, W)) and run other sizes in windows of that size (`pixcore predict "
        "--model model.onnx --window H W`), or train it with the backbone parameter size_policy: resize "
        "(docs/deployment.md, 'What cannot be exported')."
    )


def _trace(graph: ExportedGraph, example: torch.Tensor, dynamic: bool) -> torch.export.ExportedProgram:
    """torch.export's program of the graph, or an :class:`ExportError` naming what failed."""
    try:
        return torch.export.export(graph, (example,), dynamic_shapes=_dynamic_shapes(dynamic), strict=False)
    except Exception as error:
        raise ExportError(_explain(graph, error)) from error


def _explain(graph: ExportedGraph, error: BaseException) -> str:
    """Which component stops the export: the backbone, or a task's head, and why."""
    backbone = type(graph.model.backbone).__name__
    name = getattr(graph.model.backbone, "model_name", "")
    where = f"the backbone {backbone}{f' ({name})' if name else ''}"
    text = " ".join(str(error).split())[:400]
    for frame in _frames(error):
        if "/heads" in frame or "_heads.py" in frame:
            where = "a head (" + ", ".join(type(h).__name__ for h in graph.model.heads.values()) + ")"
            break
    return (
        f"cannot export the model: torch.export failed in {where} ({type(error).__name__}: {text}). "
        "Export without --dynamic (a fixed size) if it is a data-dependent size check; otherwise the "
        "component needs code that torch.export can trace (docs/deployment.md, 'What cannot be exported')."
    )


def _free_output_names(graph: Any) -> None:
    """Rename internal values that share a name with a graph output (a task named ``linear``).

    The exporter names the outputs as asked and internal values after their operators, so
    a task called ``linear`` or ``conv`` would be defined twice, which ONNX forbids. Nodes
    are in topological order: every earlier producer of such a name, and its readers, get a
    suffixed name; the last producer keeps the output's name.
    """
    outputs = {output.name for output in graph.output}
    producers = Counter(name for node in graph.node for name in node.output if name in outputs)
    seen: Counter[str] = Counter()
    active: dict[str, str] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in active:
                node.input[i] = active[name]
        for i, name in enumerate(node.output):
            if producers.get(name, 0) > 1:
                seen[name] += 1
                if seen[name] < producers[name]:
                    active[name] = node.output[i] = f"{name}__internal{seen[name]}"
                else:
                    active.pop(name, None)
    clashing = {name for name, count in producers.items() if count > 1}
    keep = [info for info in graph.value_info if info.name not in clashing]
    del graph.value_info[:]
    graph.value_info.extend(keep)


def _frames(error: BaseException) -> list[str]:
    import traceback

    return [frame.filename for frame in traceback.extract_tb(error.__traceback__)]


def _write_onnx(
    graph: ExportedGraph, program: torch.export.ExportedProgram, example: torch.Tensor, opset: int,
    names: list[str], metadata: dict[str, object], folder: Path,
) -> Path:
    import onnx

    path = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # From torch.export's program (traced once, above), with its dynamic dimensions.
            onnx_program = torch.onnx.export(
                program, (example,), input_names=["image"], output_names=names, dynamo=True,
                opset_version=opset, verbose=False,
            )
        except Exception as error:
            raise ExportError(_explain(graph, error)) from error
    assert onnx_program is not None
    proto = onnx_program.model_proto
    _free_output_names(proto.graph)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save_model(proto, str(path))
    return path
