"""Run an exported pixcore model with ONNX Runtime, without torch.

``pixcore predict --model model.onnx IMAGES... --out DIR`` and :func:`predict_images`
write the same files as ``pixcore predict --checkpoint`` (see
:mod:`pixcore.infer._outputs`): class ids as 8-bit (16-bit above 256 classes) PNGs and
their ``_color.png``; scalar fields as float32 ``.npy`` ``[H, W]`` and 16-bit millimetre
PNGs; unit vectors as float32 ``.npy`` ``[H, W, 3]`` and ``_rgb.png``; any other kind as
``.npy``; ``NAME_grid.png`` with the input and every picture side by side. This module
needs numpy, Pillow and onnxruntime only: it runs where torch is not installed.

The model file is one written by ``pixcore export`` (:func:`pixcore.export.export_model`):
one input ``image``, uint8 ``[B, 3, H, W]`` RGB, and per task the outputs that its
metadata (``metadata_props["pixcore"]``, JSON) names: ``ids`` (int64 ``[B, H, W]``) and
``probabilities`` (float32 ``[B, C, H, W]``) of a class-mask task, ``value`` (float32
``[B, C, H, W]``) of any other.

Test-time augmentation and sliding windows (:class:`OnnxPredictor`) merge predictions as
:class:`pixcore.infer.Predictor` does, by output kind:

================  ====================================  =================================
kind              averaged                              result
================  ====================================  =================================
class_mask        probabilities (the export must have   argmax of the mean probabilities
                  them: ``pixcore export`` without
                  ``--no-probabilities``)
unit_vector_field vectors                               the mean, renormalised
others            values                                the mean
================  ====================================  =================================

* flip (``hflip``): the prediction on the mirrored image is mirrored back along the
  width; unit vectors also have their x component negated. A kind other than these
  three (and ``validity_mask``) cannot be mirrored back and is refused.
* scales: the uint8 image is resized bilinearly (Pillow, on float32 channels, so with
  Pillow's antialiasing when shrinking; rounded back to uint8), and the averaged
  quantities back to the image size by separable bilinear interpolation with half-pixel
  centres (``F.interpolate(..., mode="bilinear", align_corners=False)``, in numpy).
* windows: windows ``round(window * (1 - overlap))`` apart, the last flush with the far
  border, stitched with Gaussian (default) or uniform weights; an image smaller than the
  window is padded (reflected, or replicated where it is too small) and cropped back, as
  :func:`pixcore.infer.sliding_window` does.

Images run one at a time (batch 1). A dynamic export takes any size of at least its
stride (32 for most backbones) along each side; a smaller image (or scaled image) is
refused with the way out: ``--window`` pads it up. A static export (fixed input size)
takes images of exactly that size; any other size is refused, before anything is written,
with the way out: ``--window H W`` with the export's size runs it in windows of that size
(smaller images are padded up to the window).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from pixcore._errors import PixcoreError
from pixcore._imagefiles import IMAGE_SUFFIXES, SCALAR_PNG_SCALE, find_images
from pixcore.export import _pictures as pictures

__all__ = [
    "IMAGE_SUFFIXES",
    "METADATA_KEY",
    "SCALAR_PNG_SCALE",
    "ExportedTask",
    "ModelMetadata",
    "OnnxPredictor",
    "output_files",
    "predict_images",
    "read_metadata",
]

#: The ``metadata_props`` key holding the export's JSON description.
METADATA_KEY = "pixcore"
#: The value of its ``format`` field, and the versions of that format this module reads.
METADATA_FORMAT = "pixcore-export"
METADATA_VERSIONS: tuple[int, ...] = (1,)
#: Output kinds with their own files and merge rules; any other kind is written as ``.npy``.
CLASS_MASK, SCALAR_FIELD, UNIT_VECTOR_FIELD = "class_mask", "scalar_field", "unit_vector_field"
#: Kinds whose prediction on a mirrored image is mirrored back by flipping alone.
_PLAIN_FLIP_KINDS = (CLASS_MASK, SCALAR_FIELD, "validity_mask", "ValidityMask", "image", "Image")
#: Standard deviation of the Gaussian window weights, as a fraction of the window size.
GAUSSIAN_SIGMA = 1.0 / 8.0
WEIGHTINGS: tuple[str, ...] = ("uniform", "gaussian")

_EXPORT_HINT = "export the checkpoint with `pixcore export CHECKPOINT --out DIR`"


# --------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedTask:
    """One task of an exported model, as its metadata describes it.

    ``outputs`` maps a role (``ids``, ``probabilities``, ``value``) to the graph output's
    name; ``palette`` is ``[num_classes, 3]`` uint8 for class-mask tasks.
    """

    name: str
    task: str
    kind: str
    outputs: Mapping[str, str]
    num_classes: int | None = None
    ignore_index: int | None = None
    palette: np.ndarray | None = None

    @property
    def mergeable(self) -> bool:
        """Whether its predictions can be averaged (a class mask needs probabilities)."""
        return self.kind != CLASS_MASK or "probabilities" in self.outputs


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported model's ``pixcore`` metadata says (``raw``: the whole JSON)."""

    input_name: str
    dynamic: bool
    size: tuple[int, int] | None
    stride: int
    tasks: Mapping[str, ExportedTask]
    raw: Mapping[str, Any]

    @property
    def min_size(self) -> int:
        """The smallest height and width a dynamic export takes (its stride)."""
        return max(1, self.stride)


def _bad_metadata(path: Path, what: str) -> PixcoreError:
    return PixcoreError(
        f"{path}: the pixcore metadata of this ONNX model is malformed ({what}); it was not "
        f"written by `pixcore export`, or was edited: {_EXPORT_HINT} again"
    )


def _parse_metadata(path: Path, text: str | None) -> ModelMetadata:
    if text is None:
        raise PixcoreError(
            f"{path} is an ONNX model, but not one exported by pixcore: it has no {METADATA_KEY!r} "
            "entry in its metadata_props, so the meaning of its outputs is unknown. Run a model "
            f"written by `pixcore export` ({_EXPORT_HINT})"
        )
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad_metadata(path, f"not JSON: {error}") from None
    if not isinstance(raw, dict) or raw.get("format") != METADATA_FORMAT:
        raise _bad_metadata(path, f"its format is not {METADATA_FORMAT!r}")
    version = raw.get("version")
    if version not in METADATA_VERSIONS:
        raise PixcoreError(
            f"{path} was exported in pixcore export format version {version!r}; this pixcore reads "
            f"version(s) {', '.join(map(str, METADATA_VERSIONS))}. Upgrade pixcore where the model "
            "runs, or export it with the pixcore version installed here"
        )
    spec = raw.get("input")
    tasks = raw.get("tasks")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise _bad_metadata(path, "no input name")
    if not isinstance(tasks, dict) or not tasks:
        raise _bad_metadata(path, "no task")
    dynamic = bool(spec.get("dynamic", True))
    size = spec.get("size")
    if not dynamic:
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise _bad_metadata(path, f"a static export without its size [H, W] (size={size!r})")
        size = (int(size[0]), int(size[1]))
    else:
        size = None
    stride = spec.get("stride") or 1
    if not isinstance(stride, int) or stride < 1:
        raise _bad_metadata(path, f"stride={stride!r}")
    parsed = {name: _parse_task(path, name, entry) for name, entry in tasks.items()}
    return ModelMetadata(spec["name"], dynamic, size, stride, parsed, raw)


def _parse_task(path: Path, name: str, entry: Any) -> ExportedTask:
    if not isinstance(entry, dict):
        raise _bad_metadata(path, f"task {name!r} is not an object")
    kind, outputs = entry.get("kind"), entry.get("outputs")
    if not isinstance(kind, str) or not isinstance(outputs, dict) or not all(
        isinstance(v, str) for v in outputs.values()
    ):
        raise _bad_metadata(path, f"task {name!r} has no kind or no outputs")
    if kind != CLASS_MASK:
        if "value" not in outputs:
            raise _bad_metadata(path, f"task {name!r} ({kind}) has no 'value' output")
        return ExportedTask(name, str(entry.get("task", name)), kind, dict(outputs))
    num_classes = entry.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise _bad_metadata(path, f"task {name!r} has num_classes={num_classes!r}")
    if "ids" not in outputs:
        raise _bad_metadata(path, f"task {name!r} (class_mask) has no 'ids' output")
    palette = entry.get("palette")
    colours = pictures.default_palette(num_classes)
    if palette is not None:
        colours = np.asarray(palette)
        if colours.ndim != 2 or colours.shape[1] != 3 or colours.shape[0] < num_classes:
            raise _bad_metadata(path, f"task {name!r}: palette of shape {colours.shape}, not [{num_classes}, 3]")
        colours = np.clip(colours[:num_classes], 0, 255).astype(np.uint8)
    ignore = entry.get("ignore_index")
    return ExportedTask(
        name, str(entry.get("task", name)), kind, dict(outputs), num_classes,
        int(ignore) if isinstance(ignore, int) else None, colours,
    )


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise PixcoreError(
            "running an exported model needs ONNX Runtime: pip install onnxruntime (or "
            "onnxruntime-gpu for NVIDIA GPUs)"
        ) from None
    return onnxruntime


def _providers(device: str, ort: Any) -> list[Any]:
    """ONNX Runtime execution providers for ``device`` ('auto', 'cpu', 'cuda', 'cuda:N')."""
    available = list(ort.get_available_providers())
    name = device.strip().lower()
    if name == "cpu":
        return ["CPUExecutionProvider"]
    if name == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    found = re.fullmatch(r"cuda(?::(\d+))?", name)
    if found is None:
        raise PixcoreError(
            f"device {device!r} is not one ONNX Runtime runs on here; choose 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    if "CUDAExecutionProvider" not in available:
        raise PixcoreError(
            f"device {device!r}: this onnxruntime has no CUDA provider (it has {', '.join(available)}); "
            "pip install onnxruntime-gpu instead of onnxruntime, or use --device cpu"
        )
    options = {"device_id": int(found[1] or 0)}
    return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]


def _session(path: Path, device: str = "auto") -> Any:
    ort = _import_onnxruntime()
    if not path.is_file():
        raise PixcoreError(f"{path} does not exist; give the .onnx file written by `pixcore export`")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about node placement
    providers = _providers(device, ort)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise PixcoreError(
            f"{path} cannot be loaded as an ONNX model ({reason}): it is damaged, truncated or not "
            f"an ONNX file, or needs a newer onnxruntime than {ort.__version__}; {_EXPORT_HINT}"
        ) from None


def _session_metadata(path: Path, session: Any) -> ModelMetadata:
    props = dict(session.get_modelmeta().custom_metadata_map)
    metadata = _parse_metadata(path, props.get(METADATA_KEY))
    inputs = [i.name for i in session.get_inputs()]
    if inputs != [metadata.input_name]:
        raise _bad_metadata(path, f"the graph's inputs are {inputs}, the metadata names {metadata.input_name!r}")
    outputs = {o.name for o in session.get_outputs()}
    for task in metadata.tasks.values():
        missing = sorted(set(task.outputs.values()) - outputs)
        if missing:
            raise _bad_metadata(path, f"task {task.name!r} names outputs {missing} that the graph lacks")
    return metadata


def read_metadata(path: str | Path) -> ModelMetadata:
    """The pixcore metadata of an exported ONNX model (checked against its graph).

    Raises:
        PixcoreError: The file is missing, not an ONNX model, or not exported by pixcore.

    """
    path = Path(path)
    return _session_metadata(path, _session(path, "cpu"))


# --------------------------------------------------------------------------------------
# Geometry in numpy: bilinear resizing, flips, windows
# --------------------------------------------------------------------------------------


def _axis_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of bilinear interpolation with half-pixel centres
    (``align_corners=False``): ``out[i] = (1 - w) * in[i0] + w * in[i1]``."""
    scale = size_in / size_out
    source = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (source - low).astype(np.float32)


def resize_bilinear(value: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[..., h, w]`` float -> ``[..., H, W]`` float32, bilinear with half-pixel centres and
    no antialiasing (what ``F.interpolate(mode="bilinear", align_corners=False)`` computes)."""
    value = np.asarray(value, dtype=np.float32)
    if tuple(value.shape[-2:]) == tuple(size):
        return value
    low, high, weight = _axis_weights(value.shape[-2], size[0])
    rows = value[..., low, :] * (1.0 - weight)[:, None] + value[..., high, :] * weight[:, None]
    low, high, weight = _axis_weights(value.shape[-1], size[1])
    return rows[..., low] * (1.0 - weight) + rows[..., high] * weight


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The size of an image of ``size`` at ``scale`` (as :class:`pixcore.infer.Predictor` rounds it)."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[3, H, W]`` -> uint8 ``[3, h, w]``: Pillow's bilinear filter on each channel as
    float32 (antialiased when shrinking), rounded to the nearest integer."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    channels = [
        np.asarray(PILImage.fromarray(channel.astype(np.float32), mode="F").resize(
            (size[1], size[0]), PILImage.Resampling.BILINEAR))
        for channel in image
    ]
    return np.clip(np.round(np.stack(channels)), 0, 255).astype(np.uint8)


def _flip_back(value: np.ndarray, kind: str) -> np.ndarray:
    """A prediction ``[C, H, W]`` on the mirrored image -> the image's orientation."""
    out = np.ascontiguousarray(value[..., ::-1])
    if kind == UNIT_VECTOR_FIELD:
        out[0] = -out[0]
    return out


def check_window(window: Sequence[int], overlap: float, weighting: str = "gaussian") -> tuple[int, int]:
    """Validate sliding-window settings (as :func:`pixcore.infer._window.check_window`)."""
    pair = tuple(window)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise PixcoreError(
            f"window={window!r} is not a window size; give (height, width) as two positive "
            "integers, e.g. --window 512 512"
        )
    if not isinstance(overlap, int | float) or not 0.0 <= float(overlap) < 1.0:
        raise PixcoreError(
            f"overlap={overlap!r} is out of range; it is the fraction of a window shared with "
            "its neighbour, 0 <= overlap < 1 (e.g. 0.5)"
        )
    if weighting not in WEIGHTINGS:
        raise PixcoreError(f"window weighting {weighting!r} is unknown; choose one of {', '.join(WEIGHTINGS)}")
    return int(pair[0]), int(pair[1])


def _starts(length: int, window: int, overlap: float) -> list[int]:
    if length <= window:
        return [0]
    stride = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, length - window, stride))
    if not starts or starts[-1] != length - window:
        starts.append(length - window)
    return starts


def window_positions(size: tuple[int, int], window: tuple[int, int], overlap: float) -> list[tuple[int, int]]:
    """Top-left corners of the windows over a (padded) image of ``size``, row by row."""
    lefts = _starts(size[1], window[1], overlap)
    return [(top, left) for top in _starts(size[0], window[0], overlap) for left in lefts]


def window_weights(window: tuple[int, int], weighting: str) -> np.ndarray:
    """The float32 weight map ``[h, w]`` of one window (peak 1 for Gaussian weights)."""
    if weighting == "uniform":
        return np.ones(window, dtype=np.float32)

    def axis(n: int) -> np.ndarray:
        centre, sigma = (n - 1) / 2.0, GAUSSIAN_SIGMA * n
        return np.exp(-((np.arange(n, dtype=np.float64) - centre) ** 2) / (2.0 * sigma * sigma))

    weights = axis(window[0])[:, None] * axis(window[1])[None, :]
    return (weights / weights.max()).astype(np.float32)


def _pad_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = image.shape[-2:]
    pad_h, pad_w = size[0] - height, size[1] - width
    if pad_h == 0 and pad_w == 0:
        return image
    widths = ((0, 0), (0, int(pad_h)), (0, int(pad_w)))
    if pad_h < height and pad_w < width:
        return np.pad(image, widths, mode="reflect")
    return np.pad(image, widths, mode="edge")


def sliding_window(
    predict: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    image: np.ndarray,
    window: tuple[int, int],
    overlap: float = 0.5,
    weighting: str = "gaussian",
) -> dict[str, np.ndarray]:
    """Run ``predict`` (``[3, h, w] -> {name: [C, h, w]}``) on overlapping windows of ``image``
    ``[3, H, W]`` and stitch the outputs: per pixel the weighted mean of the windows' values."""
    height, width = image.shape[-2:]
    padded_size = (max(height, window[0]), max(width, window[1]))
    padded = _pad_to(image, padded_size)
    weights = window_weights(window, weighting)
    sums: dict[str, np.ndarray] = {}
    total = np.zeros(padded_size, dtype=np.float32)
    for top, left in window_positions(padded_size, window, overlap):
        rows, cols = slice(top, top + window[0]), slice(left, left + window[1])
        for name, value in predict(np.ascontiguousarray(padded[:, rows, cols])).items():
            if name not in sums:
                sums[name] = np.zeros((*value.shape[:-2], *padded_size), dtype=np.float32)
            sums[name][..., rows, cols] += value.astype(np.float32) * weights
        total[rows, cols] += weights
    return {name: (value / total)[..., :height, :width] for name, value in sums.items()}


# --------------------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------------------


class OnnxPredictor:
    """An exported pixcore model in ONNX Runtime, with optional flip TTA, scales and windows.

    Args:
        path: The ``.onnx`` file written by ``pixcore export``.
        hflip: Also predict on the horizontally mirrored image and average.
        scales: Image scale factors to predict at and average (``(1.0,)``: the image only).
        window: ``(h, w)``: predict in overlapping windows of this size and stitch them.
        overlap: Fraction of a window shared with its neighbour, in ``[0, 1)``.
        weighting: ``"gaussian"`` (default) or ``"uniform"`` weights within a window.
        device: ``"auto"`` (CUDA when this onnxruntime has it, else the CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.

    Calling it on a uint8 ``[3, H, W]`` RGB image returns, per task, class ids ``[H, W]``
    (int64) for a class-mask task and the float32 ``[C, H, W]`` prediction for any other.

    Raises:
        PixcoreError: A missing, damaged or non-pixcore model file; bad options; TTA,
            scales or windows with a class-mask task exported without probabilities, or
            flip TTA with a kind that cannot be mirrored back; a window other than a static
            export's size.

    """

    def __init__(
        self,
        path: str | Path,
        *,
        hflip: bool = False,
        scales: Sequence[float] = (1.0,),
        window: Sequence[int] | None = None,
        overlap: float = 0.5,
        weighting: str = "gaussian",
        device: str = "auto",
    ) -> None:
        self.path = Path(path)
        self.hflip = bool(hflip)
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or any(not (math.isfinite(s) and s > 0) for s in self.scales):
            raise PixcoreError(f"scales={tuple(scales)!r}: give one or more positive scale factors, e.g. 0.75 1.0 1.25")
        self.window = None if window is None else check_window(window, overlap, weighting)
        self.overlap = float(overlap)
        self.weighting = weighting
        self.session = _session(self.path, device)
        self.metadata = _session_metadata(self.path, self.session)
        shape = list(self.session.get_inputs()[0].shape)
        # A static export may fix the batch size too: the image is then repeated to fill it.
        self._batch = shape[0] if len(shape) == 4 and isinstance(shape[0], int) and shape[0] > 0 else 1
        self._check_options()

    @property
    def tasks(self) -> Mapping[str, ExportedTask]:
        """The model's tasks in output order."""
        return self.metadata.tasks

    @property
    def plain(self) -> bool:
        """True without TTA and windows: the model's outputs are returned unchanged."""
        return not self.hflip and self.scales == (1.0,) and self.window is None

    def _check_options(self) -> None:
        if self.plain:
            return
        what = "flip TTA (--tta)" if self.hflip else "multi-scale (--scales)" if self.scales != (1.0,) else "windows"
        for task in self.tasks.values():
            if not task.mergeable:
                raise PixcoreError(
                    f"{self.path}: {what} averages class probabilities, but task {task.name!r} was exported "
                    "without them (class ids only). Export the checkpoint again with probabilities "
                    "(`pixcore export` without --no-probabilities), or predict without --tta, --scales "
                    "and --window"
                )
            if self.hflip and task.kind not in (*_PLAIN_FLIP_KINDS, UNIT_VECTOR_FIELD):
                raise PixcoreError(
                    f"{self.path}: flip TTA (--tta): task {task.name!r} has output kind {task.kind!r}, whose "
                    "prediction on a mirrored image cannot be mirrored back here; predict without --tta"
                )
        if self.window is not None and not self.metadata.dynamic and self.window != self.metadata.size:
            size = self.metadata.size
            assert size is not None
            raise PixcoreError(
                f"{self.path} was exported for inputs of {size[0]}x{size[1]} only; --window must be that "
                f"size: --window {size[0]} {size[1]} (got {self.window[0]}x{self.window[1]})"
            )
        if self.window is not None and self.metadata.dynamic and min(self.window) < self.metadata.min_size:
            raise PixcoreError(
                f"window {self.window[0]}x{self.window[1]} is smaller than the {self.metadata.min_size} pixels "
                f"per side that {self.path} takes; use a larger --window"
            )

    def check_size(self, size: tuple[int, int], image: Path | str = "an image") -> None:
        """Refuse, with the way out, an image size the model cannot be run on with these options."""
        if self.window is not None:
            return  # every run is a window of an accepted size (checked with the options)
        for scale in self.scales:
            run = scaled_size(size, scale)
            at = "" if scale == 1.0 else f" at scale {scale:g}"
            if not self.metadata.dynamic and run != self.metadata.size:
                fixed = self.metadata.size
                assert fixed is not None
                raise PixcoreError(
                    f"{image} is {run[0]}x{run[1]} (height x width){at}, but {self.path} was exported for "
                    f"{fixed[0]}x{fixed[1]} inputs only. Predict it in windows of that size with "
                    f"--window {fixed[0]} {fixed[1]}, resize the image, or export with dynamic shapes "
                    "(`pixcore export --dynamic`)"
                )
            if min(run) < self.metadata.min_size:
                side = self.metadata.min_size
                raise PixcoreError(
                    f"{image} is {run[0]}x{run[1]} (height x width){at}; {self.path} takes at least "
                    f"{side}x{side}. Add --window {side} {side} (a smaller image is padded up to the window "
                    "and the outputs cropped back), or upscale the image"
                )

    def _run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The named outputs for one uint8 ``[3, h, w]`` image (batch 1), shapes checked."""
        height, width = image.shape[-2:]
        batch = np.ascontiguousarray(np.broadcast_to(image, (self._batch, *image.shape)))
        names = [o.name for o in self.session.get_outputs()]
        try:
            values = self.session.run(names, {self.metadata.input_name: batch})
        except Exception as error:  # onnxruntime's own types; the first line says what failed
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise PixcoreError(
                f"{self.path} failed on an input of {height}x{width} (height x width): {reason}"
            ) from None
        outputs = dict(zip(names, values, strict=True))
        for task in self.tasks.values():
            for role, name in task.outputs.items():
                shape = tuple(outputs[name].shape)
                expected = "[1, H, W]" if role == "ids" else "[1, C, H, W]"
                spatial = shape[1:] if role == "ids" else shape[2:]
                if len(shape) != (3 if role == "ids" else 4) or shape[0] != self._batch or spatial != (height, width):
                    raise PixcoreError(
                        f"{self.path}: output {name!r} ({task.name} {role}) has shape {list(shape)} for a "
                        f"{height}x{width} input; expected {expected} at the input's size. {_EXPORT_HINT}"
                    )
        return outputs

    def _averaged(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Per task the quantity that is averaged (probabilities or values), ``[C, h, w]``."""

        def predict(x: np.ndarray) -> dict[str, np.ndarray]:
            outputs = self._run(x)
            role = {name: "probabilities" if task.kind == CLASS_MASK else "value" for name, task in self.tasks.items()}
            return {name: outputs[task.outputs[role[name]]][0].astype(np.float32) for name, task in self.tasks.items()}

        if self.window is None:
            return predict(image)
        return sliding_window(predict, image, self.window, self.overlap, self.weighting)

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Predict one uint8 RGB image ``[3, H, W]``; see the class docstring."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise PixcoreError(f"an image to predict is uint8 [3, H, W] RGB, got {image.dtype} {list(image.shape)}")
        size = (int(image.shape[1]), int(image.shape[2]))
        self.check_size(size)
        if self.plain:
            outputs = self._run(image)
            return {
                name: outputs[task.outputs["ids"]][0].astype(np.int64) if task.kind == CLASS_MASK
                else outputs[task.outputs["value"]][0].astype(np.float32)
                for name, task in self.tasks.items()
            }
        sums: dict[str, np.ndarray] = {}
        count = 0
        for scale in self.scales:
            scaled = image if scale == 1.0 else resize_image(image, scaled_size(size, scale))
            for mirrored in (False, True) if self.hflip else (False,):
                x = np.ascontiguousarray(scaled[:, :, ::-1]) if mirrored else scaled
                for name, value in self._averaged(x).items():
                    if mirrored:
                        value = _flip_back(value, self.tasks[name].kind)
                    value = resize_bilinear(value, size)
                    sums[name] = value if name not in sums else sums[name] + value
                count += 1
        merged: dict[str, np.ndarray] = {}
        for name, total in sums.items():
            mean = total / count
            kind = self.tasks[name].kind
            if kind == CLASS_MASK:
                merged[name] = mean.argmax(0).astype(np.int64)
            elif kind == UNIT_VECTOR_FIELD:
                norm = np.sqrt((mean.astype(np.float64) ** 2).sum(0, keepdims=True))
                merged[name] = (mean / np.maximum(norm, 1e-12)).astype(np.float32)
            else:
                merged[name] = mean.astype(np.float32)
        return merged


# --------------------------------------------------------------------------------------
# Files: finding, checking, writing
# --------------------------------------------------------------------------------------


def output_files(stem: str, task: str, kind: str) -> list[str]:
    """The file names written for one task of one image (as :func:`pixcore.infer.output_files`)."""
    if kind == CLASS_MASK:
        return [f"{stem}_{task}.png", f"{stem}_{task}_color.png"]
    if kind == SCALAR_FIELD:
        return [f"{stem}_{task}.png", f"{stem}_{task}.npy"]
    if kind == UNIT_VECTOR_FIELD:
        return [f"{stem}_{task}.npy", f"{stem}_{task}_rgb.png"]
    return [f"{stem}_{task}.npy"]


#: What decoding an image file may raise for a bad file (a bug raises something else).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


class _TooLarge(Exception):
    def __init__(self, pixels: int | None, limit: int | None) -> None:
        super().__init__(pixels, limit)
        self.pixels, self.limit = pixels, limit


@contextlib.contextmanager
def _pillow_accepts(max_pixels: int | None) -> Iterator[None]:
    """Within the block Pillow opens images of up to ``max_pixels`` pixels (None: its own limit)."""
    if max_pixels is None:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        limit = PILImage.MAX_IMAGE_PIXELS
        if limit is None or max_pixels <= 2 * limit:
            yield
            return
        PILImage.MAX_IMAGE_PIXELS = -(-max_pixels // 2)
        try:
            yield
        finally:
            PILImage.MAX_IMAGE_PIXELS = limit


def _open(path: Path, max_pixels: int | None) -> PILImage.Image:
    try:
        img = PILImage.open(path)
    except PILImage.DecompressionBombError as error:
        found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(error))
        raise _TooLarge(int(found[1]) if found else None, max_pixels or (int(found[2]) if found else None)) from None
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise _TooLarge(width * height, max_pixels)
    return img


def _unreadable(path: Path, error: BaseException, checking: bool = False) -> PixcoreError:
    written = " Nothing was written." if checking else ""
    if isinstance(error, _TooLarge):
        pixels = f"{error.pixels:,} pixels" if error.pixels is not None else "too many pixels"
        limit = f" of {error.limit:,} pixels" if error.limit is not None else ""
        wanted = f" {error.pixels}" if error.pixels is not None else " N"
        return PixcoreError(
            f"image {path} has {pixels}, more than the limit{limit} (a guard against decompression "
            f"bombs).{written} If the file is genuine, raise the limit: --max-pixels{wanted}, or "
            "downscale it; --window 1024 1024 runs the model on one window at a time"
        )
    if isinstance(error, UnidentifiedImageError):
        reason = "cannot be read: not a recognised image file (damaged, truncated or not an image)"
    else:
        reason = f"cannot be read ({str(error).strip() or type(error).__name__}); the file is damaged or truncated"
    return PixcoreError(f"image {path} {reason}.{written} Give PNG or JPEG files: replace this one or leave it out.")


def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """An image file -> uint8 ``[3, H, W]`` RGB (grey, palette, RGBA are converted)."""
    try:
        with _pillow_accepts(max_pixels), _open(path, max_pixels) as img:
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            array = np.asarray(rgb, dtype=np.uint8)
    except (_TooLarge, *_DECODE_ERRORS) as error:
        raise _unreadable(path, error) from None
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _check_decodes(path: Path, max_pixels: int | None) -> tuple[int, int]:
    """Decode every byte of ``path`` (JPEGs at 1/8 scale); return ``(height, width)``."""
    try:
        with _pillow_accepts(max_pixels), _open(path, max_pixels) as img:
            width, height = img.size
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            img.load()
    except (_TooLarge, *_DECODE_ERRORS) as error:
        raise _unreadable(path, error, checking=True) from None
    return height, width


def _plan(files: Sequence[Path], out: Path, tasks: Mapping[str, ExportedTask]) -> dict[Path, Path]:
    """Every output file, in writing order, with the input image it comes from (collisions refused)."""
    stems: dict[str, Path] = {}
    planned: dict[Path, tuple[Path, str]] = {}
    for path in files:
        if path.stem in stems:
            raise PixcoreError(
                f"{stems[path.stem]} and {path} have the same name, so their outputs would collide "
                f"in {out}; predict them into different --out folders"
            )
        stems[path.stem] = path
        outputs = [(out / f, name) for name, task in tasks.items() for f in output_files(path.stem, name, task.kind)]
        for output, task_name in [*outputs, (out / f"{path.stem}_grid.png", "the grid")]:
            if output in planned:
                first = planned[output]
                raise PixcoreError(
                    f"{output} would be written twice, for {first[0]} ({first[1]!r}) and for {path} "
                    f"({task_name!r}): image and task names run together; rename one of the images, or "
                    "predict them into different --out folders"
                )
            planned[output] = (path, task_name)
    return {output: source for output, (source, _) in planned.items()}


def _identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


def _refuse_replacing_inputs(planned: Mapping[Path, Path], files: Sequence[Path]) -> None:
    inputs = {_identity(path): path for path in files}
    for output, source in planned.items():
        if output.exists() and _identity(output) in inputs:
            folder = output.parent.resolve()
            raise PixcoreError(
                f"the input image {inputs[_identity(output)]} would be overwritten by {output.name}, an output "
                f"of {source}; --overwrite replaces earlier outputs, never input images. Write the outputs to "
                f"a folder that holds no input, e.g. --out {folder.parent / f'{folder.name}_predictions'}"
            )


def _refuse_existing(planned: Iterable[Path], overwrite: bool) -> None:
    existing = [p for p in planned if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise PixcoreError(
            f"{len(existing)} output file(s) exist already ({shown}); pass --overwrite "
            "(overwrite=True) to replace them, or choose another --out folder"
        )


def _channels_last(value: np.ndarray) -> np.ndarray:
    return value[0] if value.shape[0] == 1 else np.moveaxis(value, 0, -1)


def _write_task(out: Path, stem: str, task: ExportedTask, prediction: np.ndarray) -> np.ndarray:
    """Write one task's files for one image; return its picture for the grid."""
    name = task.name
    if task.kind == CLASS_MASK:
        assert task.num_classes is not None
        picture = pictures.class_picture(prediction, task.num_classes, task.palette, task.ignore_index)
        dtype = np.uint8 if task.num_classes <= 256 else np.uint16
        PILImage.fromarray(prediction.astype(dtype)).save(out / f"{stem}_{name}.png")
        PILImage.fromarray(picture).save(out / f"{stem}_{name}_color.png")
        return picture
    value = prediction.astype(np.float32)
    array = np.ascontiguousarray(_channels_last(value))
    if task.kind == SCALAR_FIELD:
        if value.shape[0] != 1:
            raise PixcoreError(f"task {name!r} is a scalar field, but the model predicts {value.shape[0]} channels")
        picture = pictures.scalar_picture(value[0])
        np.save(out / f"{stem}_{name}.npy", array)
        scaled = np.nan_to_num(array * SCALAR_PNG_SCALE, nan=0.0, posinf=65535.0, neginf=0.0)
        PILImage.fromarray(np.clip(np.round(scaled), 0, 65535).astype(np.uint16)).save(out / f"{stem}_{name}.png")
        return picture
    if task.kind == UNIT_VECTOR_FIELD:
        picture = pictures.vector_picture(value)
        np.save(out / f"{stem}_{name}.npy", array)
        PILImage.fromarray(picture).save(out / f"{stem}_{name}_rgb.png")
        return picture
    np.save(out / f"{stem}_{name}.npy", array)
    return pictures.scalar_picture(value[0])  # any other kind: its first channel in Turbo colours


def predict_images(
    model: str | Path | OnnxPredictor,
    images: Sequence[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    max_pixels: int | None = None,
    hflip: bool = False,
    scales: Sequence[float] = (1.0,),
    window: Sequence[int] | None = None,
    overlap: float = 0.5,
    weighting: str = "gaussian",
    device: str = "auto",
) -> list[Path]:
    """Predict every image with an exported model and write each task's outputs.

    The files and their checks are those of :func:`pixcore.infer.predict_images`: nothing
    is written until the output names were checked (no two alike, none an input image,
    none existing unless ``overwrite``), the model file and options were checked, and
    every image was decoded in full and its size found acceptable to the model.

    Args:
        model: The ``.onnx`` file written by ``pixcore export``, or an :class:`OnnxPredictor`
            (then the options below other than ``overwrite`` and ``max_pixels`` are its own).
        images: Image files or folders of images (``.png``, ``.jpg``).
        out: Output folder (created).
        overwrite: Replace existing output files (never an input image).
        max_pixels: Largest image accepted, in pixels; None: Pillow's limit.
        hflip: Flip TTA (see :class:`OnnxPredictor`).
        scales: Scale factors to average over.
        window: ``(h, w)`` of sliding windows, or None.
        overlap: Fraction of a window shared with its neighbour.
        weighting: ``"gaussian"`` or ``"uniform"`` window weights.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        The files written, in order.

    """
    files = find_images(images)
    out = Path(out)
    predictor = model if isinstance(model, OnnxPredictor) else OnnxPredictor(
        model, hflip=hflip, scales=scales, window=window, overlap=overlap, weighting=weighting, device=device
    )
    planned = _plan(files, out, predictor.tasks)
    _refuse_replacing_inputs(planned, files)
    _refuse_existing(planned, overwrite)
    for path in files:
        predictor.check_size(_check_decodes(path, max_pixels), path)
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        image = read_image(path, max_pixels)
        predictions = predictor(image)
        panels = [pictures.image_picture(image)]
        for name, task in predictor.tasks.items():
            panels.append(_write_task(out, path.stem, task, predictions[name]))
        pictures.make_grid(panels, ["input", *predictor.tasks]).save(out / f"{path.stem}_grid.png")
    return list(planned)
