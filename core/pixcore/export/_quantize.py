"""INT8 quantisation of an exported ONNX model with ONNX Runtime's quantisation tools.

:func:`quantize_model` turns ``model.onnx`` (written by :func:`pixcore.export.export_model`)
into an INT8 model that takes and gives the same tensors:

* ``static`` (the default): weights (per output channel) and activations are quantised
  to 8 bits ahead of time, in the QDQ format (``QuantizeLinear``/``DequantizeLinear``
  pairs that ONNX Runtime fuses into integer kernels). The activations' ranges come from
  running the float model on calibration images (:func:`calibration_images` draws them
  from a run's own training data), so those must look like what the model will see.
* ``dynamic``: only the weights of ``Conv``/``MatMul`` are quantised ahead of time; the
  activations' ranges are measured on every call. No calibration images; mostly worth it
  for transformers (``MatMul``), rarely for convolutional networks.

The choices by default, measured on the demo model (``benchmarks/bench_export.py``; 128
held-out rooms, 2 threads of an AVX-512 VNNI CPU, onnxruntime 1.32):

* ranges by MinMax: percentile ranges (99.999, 99.99) moved the metrics as little (all
  within 4e-4 mIoU and AbsRel, 0.011 degrees), entropy ranges four to a hundred times
  more (with ONNX Runtime's 128 histogram bins, entropy calibration has one candidate
  range, the full one, and gives MinMax's ranges: :func:`_entropy_ranges` uses more);
* ``uint8`` activations with ``int8`` weights: the same accuracy as ``int8``
  activations in half the time (``int8`` activations ran as slowly as fp32);
* no ``quant_pre_process``: the exporter's graph is already optimised; pre-processing
  gives the same graph, with extra ONNX Runtime-only opset imports;
* the outputs' tails stay float (``keep_float="auto"``, :func:`float_nodes`): for each
  output every node after its last convolution or matrix product (upsampling to the
  image's size, cropping, and the decoding: argmax and softmax of class scores, a
  depth's activation, the normalisation of unit vectors). Quantising them too moved
  mIoU 7 times and the mean angle 9 times more, for at most 4 % of speed. The input's
  normalisation (``Cast``, ``Sub``, ``Div``) is not quantised in any case.

The quantised model keeps the ``pixcore`` metadata (:mod:`pixcore.export._metadata`) and
adds to it ``"quantization": {"mode", "calibration_images", "method", ...}``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from pixcore._errors import PixcoreError
from pixcore.export._metadata import METADATA_KEY

if TYPE_CHECKING:
    from pixcore._config import RunConfig
    from pixcore._interfaces import Dataset

__all__ = ["QuantizationError", "calibration_images", "float_nodes", "quantize_model"]

Mode = Literal["static", "dynamic"]
Method = Literal["minmax", "entropy", "percentile"]

#: Operators with weights: where a model's float tails end.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


class QuantizationError(PixcoreError):
    """A model or a calibration set that cannot be quantised; the message says why."""


class ImageReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds calibration images, one ``{"image": uint8 [1, 3, H, W]}`` per call, and counts them."""

    def __init__(self, images: Iterable[np.ndarray], input_name: str = "image") -> None:
        self._images: Iterator[np.ndarray] = iter(images)
        self.input_name = input_name
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        if image is None:
            return None
        array = np.asarray(image)
        if array.ndim == 3:
            array = array[None]
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] != 3:
            raise QuantizationError(
                f"a calibration image must be uint8 [1, 3, H, W] (or [3, H, W]), got {array.dtype} "
                f"{list(array.shape)}"
            )
        self.count += 1
        return {self.input_name: np.ascontiguousarray(array)}


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """The names of the nodes ``keep_float="auto"`` keeps float: the outputs' tails.

    A tail is every node that an output depends on after the output's last weighted
    operator (:data:`WEIGHTED_OPS`), found by walking back from the output; shape
    computations (``Shape`` nodes and what feeds only them) are not followed.
    """
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output if name}
    keep: dict[str, None] = {}  # an ordered set
    stack = [producers[o.name] for o in graph.output if o.name in producers]
    while stack:
        node = stack.pop()
        if node.op_type in WEIGHTED_OPS or node.op_type == "Shape" or node.name in keep:
            continue
        keep[node.name] = None
        stack.extend(producers[name] for name in node.input if name in producers)
    return list(keep)


def _preprocess(source: Path, folder: Path) -> Path:
    """ONNX Runtime's pre-processing for quantisation: graph optimisation and shape inference.

    Symbolic shape inference may not follow every dynamic dimension; the model is then
    pre-processed without it.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = folder / "preprocessed.onnx"
    try:
        quant_pre_process(str(source), str(out), auto_merge=True)
    except Exception:
        quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantisation tools print progress and log warnings on every call: silence them."""
    logger = logging.getLogger("onnxruntime")
    level, disabled = logger.level, logging.root.manager.disable
    logger.setLevel(logging.ERROR)
    logging.disable(logging.WARNING)  # the quantiser also logs to the root logger
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
        logging.disable(disabled)


def _calibration_method(method: Method) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise QuantizationError(f"unknown calibration method {method!r}; one of {', '.join(methods)}")
    return methods[method]


def _entropy_ranges(model: Path, reader: ImageReader, folder: Path, bins: int) -> Path:
    """The entropy calibration's ranges, in a calibration cache that ``quantize_static`` reads.

    ``quantize_static`` builds its entropy calibrator with 128 histogram bins, as many as
    the quantised histogram has: the search then has one candidate, the full range, and
    gives MinMax's ranges. This calibrator gets ``bins`` bins.
    """
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data

    calibrator = create_calibrator(
        model, None, augmented_model_path=str(folder / "augmented.onnx"), calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": bins, "num_quantized_bins": 128},
    )
    calibrator.collect_data(reader)
    cache = folder / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            meta: dict[str, Any] = json.loads(entry.value)
            return meta
    return {}


def _write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for key, value in [*kept, (METADATA_KEY, json.dumps(metadata))]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(path))


def quantize_model(
    onnx_path: str | Path,
    out_path: str | Path,
    *,
    mode: Mode = "static",
    calibration: Iterable[np.ndarray] | None = None,
    method: Method = "minmax",
    per_channel: bool = True,
    preprocess: bool = False,
    keep_float: Literal["auto", "none"] | Sequence[str] = "auto",
    activation_type: Literal["uint8", "int8"] = "uint8",
    percentile: float = 99.999,
    bins: int = 512,
) -> Path:
    """Quantise the exported model ``onnx_path`` to INT8 and write it to ``out_path``.

    Args:
        onnx_path: A model written by :func:`pixcore.export.export_model` (its
            ``pixcore`` metadata is kept; any ONNX model with one image input works).
        out_path: Where the quantised model goes (its folder is created).
        mode: ``"static"`` (activations calibrated ahead of time, QDQ format) or
            ``"dynamic"`` (weights only; see the module docstring).
        calibration: For ``static``: uint8 images ``[1, 3, H, W]`` like those the model
            will see (:func:`calibration_images`); a few dozen are enough. Unused by
            ``dynamic``.
        method: How ``static`` picks each activation's range from the calibration
            outputs: ``"minmax"`` (the full range seen), ``"percentile"`` (the
            ``percentile``-th percentile of the absolute values) or ``"entropy"`` (the
            range that keeps the KL divergence of the 8-bit histogram smallest).
        per_channel: One weight scale per output channel (static mode).
        preprocess: Run ONNX Runtime's ``quant_pre_process`` (graph optimisation and
            shape inference) first.
        keep_float: ``"auto"``: keep the outputs' tails float (:func:`float_nodes`);
            ``"none"``: quantise whatever ONNX Runtime quantises; or the names of the
            nodes to keep float.
        activation_type: The 8-bit type of activations (static): ``uint8`` (with int8
            weights, the fastest kernels of ONNX Runtime's x86 CPU provider) or ``int8``.
        percentile: The percentile of ``method="percentile"``.
        bins: The histogram bins of ``method="entropy"`` (see :func:`_entropy_ranges`).

    Returns:
        ``out_path``.

    Raises:
        QuantizationError: ``static`` without calibration images, an image that is not
            uint8 ``[1, 3, H, W]``, or an unknown ``mode`` or ``method``.

    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    source, out = Path(onnx_path), Path(out_path)
    if mode not in ("static", "dynamic"):
        raise QuantizationError(f"unknown quantisation mode {mode!r}; 'static' or 'dynamic'")
    if mode == "static" and calibration is None:
        raise QuantizationError("static quantisation needs calibration images (calibration_images(config))")
    out.parent.mkdir(parents=True, exist_ok=True)
    original = onnx.load(str(source), load_external_data=False)
    metadata = _read_metadata(original)
    input_name = original.graph.input[0].name
    info: dict[str, Any] = {"mode": mode}
    with tempfile.TemporaryDirectory(prefix="pixcore-quantize-") as tmp, _quiet():
        model_in = _preprocess(source, Path(tmp)) if preprocess else source
        prepared = onnx.load(str(model_in))
        if keep_float == "auto":
            excluded = float_nodes(prepared)
        elif keep_float == "none":
            excluded = []
        else:
            excluded = list(keep_float)
        if mode == "static":
            images = iter(calibration or ())
            first = next(images, None)
            if first is None:
                raise QuantizationError("static quantisation needs calibration images: the iterable was empty")
            reader = ImageReader(itertools.chain([first], images), input_name)
            calibrate = _calibration_method(method)
            extra: dict[str, Any] = {"CalibPercentile": percentile} if method == "percentile" else {}
            activation = QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8
            cache = _entropy_ranges(model_in, reader, Path(tmp), bins) if method == "entropy" else None
            quantize_static(
                str(model_in), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=activation, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                calibrate_method=calibrate, extra_options=extra, calibration_cache_path=cache,
            )
            info.update(calibration_images=reader.count, method=method, per_channel=per_channel,
                        format="QDQ", activations=activation_type, weights="int8")
            if method == "percentile":
                info["percentile"] = percentile
        else:
            quantize_dynamic(str(model_in), str(out), weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
            info.update(calibration_images=0, method=None, weights="int8")  # ranges measured on every call
    info.update(preprocessed=preprocess, float_nodes=len(excluded))
    metadata["quantization"] = info
    _write_metadata(out, metadata)
    return out


def _dataset_from(config_or_dataset: RunConfig | str | Path | Dataset, split: Literal["train", "val"]) -> Any:
    from pixcore._config import RunConfig, load_config

    if isinstance(config_or_dataset, (str, Path)):
        config_or_dataset = load_config(config_or_dataset)
    if not isinstance(config_or_dataset, RunConfig):
        return config_or_dataset
    from pixcore.plugin._manager import get_plugin_manager

    entry = config_or_dataset.data.train if split == "train" else config_or_dataset.data.val
    if entry is None:
        raise QuantizationError(f"the config has no data.{split} to draw calibration images from")
    # As pixcore.train.make_loaders builds it, without the augmentations.
    return get_plugin_manager().registry("datasets").create(entry.name, entry.params, path=f"data.{split}.params")


def calibration_images(
    config_or_dataset: RunConfig | str | Path | Dataset,
    count: int = 64,
    size: tuple[int, int] | None = None,
    *,
    split: Literal["train", "val"] = "train",
) -> list[np.ndarray]:
    """``count`` uint8 images ``[1, 3, H, W]`` for static quantisation, from a run's data.

    Args:
        config_or_dataset: A :class:`~pixcore.RunConfig` (or its YAML file), whose
            ``data.<split>`` data set is built as :func:`pixcore.train.make_loaders` builds
            it, without augmentations; or a data set whose samples hold ``image``.
        count: How many images: spread evenly over the data set (all if it has fewer).
        size: ``(height, width)`` to resize every image to (bilinear), or None to keep
            each image's own size.
        split: ``"train"`` (default) or ``"val"``: which of the config's data sets.

    """
    import torch
    import torch.nn.functional as F

    dataset = _dataset_from(config_or_dataset, split)
    length = len(dataset)
    if length == 0 or count < 1:
        raise QuantizationError(f"no calibration images: the data set has {length}, asked for {count}")
    indices = np.unique(np.linspace(0, length - 1, num=min(count, length)).round().astype(np.int64))
    images: list[np.ndarray] = []
    for index in indices:
        image = torch.as_tensor(dataset[int(index)]["image"])
        if image.dtype != torch.uint8:  # a float image in [0, 1]
            image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
        image = image[None] if image.ndim == 3 else image
        if size is not None and tuple(image.shape[-2:]) != tuple(size):
            resized = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
            image = resized.round().clamp(0, 255).to(torch.uint8)
        images.append(image.numpy())
    return images
