"""Reading data sets stored as files: decoders, per-file fields and up-front validation.

A reader of an on-disk format (Pascal VOC, Cityscapes, NYU, a plain folder...) only has
to *list* its samples: it builds one :class:`Record` per sample (which file feeds which
field) and describes each field with a :class:`FileField` (how the file is decoded, which
values are legal, which typed tensors it becomes). :class:`FileDataset` does the rest:

* it checks the whole data set in its constructor (``validate="full"``: every file is
  decoded and its values checked; ``"quick"``: existence, sizes and formats from the
  file headers;
  ``"off"``: nothing), and reports every problem at once in one :class:`DatasetError`
  that names each file, what is wrong with it and how to fix it;
* it decodes a sample on ``__getitem__`` into typed tensors (:mod:`pixcore.targets`).

Decoding uses Pillow and numpy only. Pixel-aligned files of one sample must have the
image's size; the ``"image"`` field is the reference.
"""

from __future__ import annotations

import abc
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from pixcore._errors import PixcoreError
from pixcore._interfaces import Dataset, Sample
from pixcore._targets import (
    DEFAULT_IGNORE_INDEX,
    ClassMask,
    Image,
    ScalarField,
    TargetKind,
    UnitVectorField,
    ValidityMask,
)

__all__ = [
    "MAX_REPORTED_PROBLEMS",
    "ClassMaskFile",
    "DatasetError",
    "DatasetParams",
    "DirectoryIndex",
    "FileDataset",
    "FileField",
    "FileFormatError",
    "ImageFile",
    "Record",
    "ScalarFile",
    "ValidateMode",
    "ValidityFile",
    "VectorFile",
    "file_size",
    "read_image",
    "read_label",
    "read_scalar",
    "read_vectors",
]

#: How a data set is checked when it is opened (see :class:`FileDataset`).
ValidateMode = Literal["full", "quick", "off"]

#: At most this many problems are listed in one :class:`DatasetError`; the rest are counted.
MAX_REPORTED_PROBLEMS = 30

#: File extensions read as numpy arrays rather than images.
_NUMPY_SUFFIXES = (".npy",)


class DatasetError(PixcoreError, ValueError):
    """A data set on disk is missing, incomplete or malformed.

    The message names every offending file (relative to the data set root), what is
    wrong with it and how to fix it; for a missing folder or an empty split it shows the
    expected layout.
    """


class FileFormatError(ValueError):
    """A file decodes, but not into what its field needs (an RGB label, an 8-bit depth map).

    Raised by the ``read_*`` functions; the message is the whole explanation, fix included.
    """


# --------------------------------------------------------------------------------------
# Decoders
# --------------------------------------------------------------------------------------


def _open(path: Path) -> PILImage.Image:
    return PILImage.open(path)


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    with open(path, "rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise FileFormatError(
                "cannot be read: not a .npy file (no NPY header; damaged, or another format "
                "renamed); write arrays with numpy.save"
            )
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if not isinstance(array, np.ndarray):  # pragma: no cover - np.load of .npy is an array
        raise FileFormatError("is not a single numpy array; save it with numpy.save")
    return array


def file_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image or ``.npy`` file, read from its header only.

    A ``.npy`` array may be ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with ``C`` in
    ``{1, 3}``.
    """
    if path.suffix.lower() in _NUMPY_SUFFIXES:
        return _plane_shape(_load_npy(path, mmap=True).shape)
    with _open(path) as img:
        width, height = img.size
    return height, width


def _plane_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(H, W)`` of an array shaped ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` (C in 1, 3)."""
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    if len(shape) == 3 and shape[2] in (1, 3):
        return int(shape[0]), int(shape[1])
    if len(shape) == 3 and shape[0] in (1, 3):
        return int(shape[1]), int(shape[2])
    raise FileFormatError(
        f"has array shape {shape}; expected [H, W], [H, W, C] or [C, H, W] with C = 1 or 3"
    )


def _channels_last(array: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` -> ``[H, W, C]`` when the leading axis is the small one."""
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
        return np.moveaxis(array, 0, -1)
    return array


def read_image(path: Path) -> np.ndarray:
    """An image file -> ``[H, W, 3]`` uint8 RGB (greyscale, palette and CMYK are converted)."""
    with _open(path) as img:
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img, dtype=np.uint8)


_LABEL_MODES = {"P", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"}
_SCALAR_MODES = {"L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def _check_label_mode(img: PILImage.Image) -> None:
    if img.mode not in _LABEL_MODES:
        raise FileFormatError(
            f"has {len(img.getbands())} channels (mode {img.mode}); a label map is a "
            "single-channel (palette or greyscale) image whose pixel values are class ids. "
            "Convert colour-coded labels to class ids first"
        )


def _check_scalar_mode(img: PILImage.Image, allow_8bit: bool) -> None:
    if img.mode in ("L", "P") and not allow_8bit:
        raise FileFormatError(
            f"is an 8-bit image (mode {img.mode}); depth maps are stored as 16-bit PNGs, float "
            "TIFFs or .npy arrays. An 8-bit file is usually a visualisation: use the raw "
            "measurement files"
        )
    if img.mode not in _SCALAR_MODES:
        raise FileFormatError(
            f"has {len(img.getbands())} channels (mode {img.mode}); a scalar map has one "
            "channel (16-bit PNG, float TIFF or .npy)"
        )


def _check_vector_mode(img: PILImage.Image) -> None:
    if img.mode != "RGB":
        raise FileFormatError(
            f"has mode {img.mode}; a vector map is an RGB image whose channels encode "
            "x, y, z as (n + 1) / 2 * 255, or a float .npy array [H, W, 3]"
        )


def _header(path: Path, check: Callable[[PILImage.Image], None]) -> tuple[int, int]:
    """``(H, W)`` of an image after ``check`` looked at its mode (no pixel decoding)."""
    if path.suffix.lower() in _NUMPY_SUFFIXES:
        return file_size(path)
    with _open(path) as img:
        check(img)
        width, height = img.size
    return height, width


def read_label(path: Path) -> np.ndarray:
    """A label map -> ``[H, W]`` integer array of the ids *stored in the file*.

    A palette PNG (Pascal VOC, Cityscapes colour-free ids) gives its palette **indices**,
    not its colours; greyscale 8/16-bit PNGs give their values; a ``.npy`` file must hold
    a 2-D integer array. A colour (RGB) image is refused: a label map holds one id per
    pixel.
    """
    if path.suffix.lower() in _NUMPY_SUFFIXES:
        array = _load_npy(path)
        array = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
        array = array[0] if array.ndim == 3 and array.shape[0] == 1 else array
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise FileFormatError(
                f"holds a {array.dtype} array of shape {array.shape}; a label map is a 2-D "
                "integer array of class ids"
            )
        return array
    with _open(path) as img:
        _check_label_mode(img)
        array = np.asarray(img)
    return array.astype(np.uint8) if array.dtype == bool else array


def read_scalar(path: Path, allow_8bit: bool = False) -> np.ndarray:
    """A scalar map -> ``[H, W]`` array of the raw stored values (not scaled).

    16-bit PNGs give ``uint16`` (or ``int32``), float TIFFs and ``.npy`` files give floats.
    An 8-bit image is refused unless ``allow_8bit``: depth stored in 8 bits is almost
    always a visualisation, not a measurement.
    """
    if path.suffix.lower() in _NUMPY_SUFFIXES:
        array = _channels_last(_load_npy(path))
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim != 2 or not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise FileFormatError(
                f"holds a {array.dtype} array of shape {array.shape}; a scalar map is a 2-D "
                "numeric array ([H, W])"
            )
        return array
    with _open(path) as img:
        _check_scalar_mode(img, allow_8bit)
        return np.asarray(img)


def read_vectors(path: Path) -> np.ndarray:
    """A vector map -> ``[H, W, 3]`` float32, not normalised.

    An 8-bit RGB image encodes each component ``n`` in ``[-1, 1]`` as ``(n + 1) / 2 * 255``
    (the usual normal-map encoding), decoded as ``value / 255 * 2 - 1``; a ``.npy`` array
    ``[H, W, 3]`` or ``[3, H, W]`` holds the components directly.
    """
    if path.suffix.lower() in _NUMPY_SUFFIXES:
        array = _channels_last(_load_npy(path))
        if array.ndim != 3 or array.shape[2] != 3 or not np.issubdtype(array.dtype, np.floating):
            raise FileFormatError(
                f"holds a {array.dtype} array of shape {array.shape}; a vector map is a float "
                "array [H, W, 3] or [3, H, W]"
            )
        return array.astype(np.float32, copy=False)
    with _open(path) as img:
        _check_vector_mode(img)
        array = np.asarray(img)
    return array.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


# --------------------------------------------------------------------------------------
# Fields: one kind of file of a sample
# --------------------------------------------------------------------------------------


def _value_list(values: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"value{'s' if len(values) > 1 else ''} {shown}{more}"


class FileField(abc.ABC):
    """How one kind of file of a sample is decoded, checked and turned into tensors.

    Subclasses implement :meth:`read` (raise :class:`FileFormatError` for a file of the
    wrong kind), :meth:`convert` and :meth:`keys`; :meth:`check` returns problems with the
    decoded values (each a sentence that says how to fix it), :meth:`header` the file's
    ``(height, width)`` without decoding it.
    """

    #: What the file is, for messages: "image", "label", "depth map"...
    what: str = "file"

    @abc.abstractmethod
    def read(self, path: Path) -> np.ndarray:
        """Decode ``path``; the first two axes are rows and columns."""

    def header(self, path: Path) -> tuple[int, int]:
        """``(height, width)`` from the file header (no pixel decoding)."""
        return file_size(path)

    def check(self, array: np.ndarray) -> list[str]:
        """Problems with the decoded values (empty when they are legal)."""
        return []

    def verify(self, path: Path) -> tuple[tuple[int, int], list[str]]:
        """Full check of one file: its ``(height, width)`` and the problems of its values.

        Raises like :meth:`read` when the file cannot be decoded. The default decodes the
        file and calls :meth:`check`; a field may override it with a cheaper complete
        decode.
        """
        array = self.read(path)
        return (int(array.shape[0]), int(array.shape[1])), self.check(array)

    @abc.abstractmethod
    def convert(self, array: np.ndarray) -> dict[str, Tensor]:
        """Decoded array -> the typed tensors it contributes to a sample."""

    @abc.abstractmethod
    def keys(self) -> dict[str, type[TargetKind]]:
        """The sample keys :meth:`convert` produces, with their kinds."""


@dataclass(frozen=True)
class ImageFile(FileField):
    """An RGB image -> :class:`~pixcore.targets.Image` uint8 ``[3, H, W]`` under ``key``."""

    key: str = "image"
    what: str = "image"

    def read(self, path: Path) -> np.ndarray:
        return read_image(path)

    def verify(self, path: Path) -> tuple[tuple[int, int], list[str]]:
        # Decode every byte (truncation and corruption raise) but skip what only the
        # pixels need: JPEGs are decoded at 1/8 scale, nothing is converted to RGB.
        with _open(path) as img:
            width, height = img.size
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            img.load()
        return (height, width), []

    def convert(self, array: np.ndarray) -> dict[str, Tensor]:
        return {self.key: Image(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))}

    def keys(self) -> dict[str, type[TargetKind]]:
        return {self.key: Image}


@dataclass(frozen=True, eq=False)
class ClassMaskFile(FileField):
    """A label map -> :class:`~pixcore.targets.ClassMask` int64 ``[H, W]`` under ``key``.

    Without ``lut`` the stored values are the class ids: legal values are
    ``0..num_classes-1`` and ``ignore_index``. With ``lut`` (a 1-D int array), stored value
    ``v`` becomes class ``lut[v]``; ``lut[v] = -1`` (or ``v >= len(lut)``) marks a value
    that must not occur. ``expected`` and ``fix`` replace the default wording of the
    out-of-range message: ``"<file>: value 37 <expected>; <fix>"``.
    """

    key: str = "semseg"
    num_classes: int = 1
    ignore_index: int = DEFAULT_IGNORE_INDEX
    lut: np.ndarray | None = None
    expected: str = ""
    fix: str = ""
    what: str = "label"

    def __post_init__(self) -> None:
        if self.lut is not None:
            lut = np.asarray(self.lut, dtype=np.int64)
            object.__setattr__(self, "lut", lut)

    def read(self, path: Path) -> np.ndarray:
        return read_label(path)

    def header(self, path: Path) -> tuple[int, int]:
        return _header(path, _check_label_mode)

    def _illegal(self, array: np.ndarray) -> list[int]:
        if array.dtype == np.uint8:
            present = np.flatnonzero(np.bincount(array.ravel(), minlength=256))
        else:
            present = np.unique(array)
        if self.lut is None:
            legal = ((present >= 0) & (present < self.num_classes)) | (present == self.ignore_index)
        else:
            inside = (present >= 0) & (present < len(self.lut))
            legal = np.zeros(present.shape, dtype=bool)
            legal[inside] = self.lut[present[inside]] >= 0
        return [int(v) for v in present[~legal]]

    def check(self, array: np.ndarray) -> list[str]:
        bad = self._illegal(array)
        if not bad:
            return []
        n = self.num_classes
        expected = self.expected or (
            f"outside the {n} classes (0-{n - 1}) and not the ignore index {self.ignore_index}"
        )
        fix = self.fix or (
            f"store class ids 0-{n - 1}, and {self.ignore_index} for unlabelled pixels"
        )
        return [f"{_value_list(bad)} {expected}; {fix}"]

    def convert(self, array: np.ndarray) -> dict[str, Tensor]:
        if self.lut is None:
            ids = array.astype(np.int64)
        else:
            # Values the check would refuse become the ignore index (validate="off").
            lut = np.where(self.lut >= 0, self.lut, self.ignore_index)
            padded = np.full(max(int(array.max(initial=0)) + 1, len(lut)), self.ignore_index)
            padded[: len(lut)] = lut
            ids = padded[np.clip(array.astype(np.int64), 0, None)]
        return {self.key: ClassMask(torch.from_numpy(ids))}

    def keys(self) -> dict[str, type[TargetKind]]:
        return {self.key: ClassMask}


@dataclass(frozen=True)
class ScalarFile(FileField):
    """A scalar map (depth) -> :class:`~pixcore.targets.ScalarField` ``[1, H, W]`` float32.

    ``value = raw * integer_scale`` for integer files (16-bit PNG millimetres: 0.001;
    KITTI: 1/256) and ``raw * float_scale`` for float files (TIFF, ``.npy``). A pixel is
    valid where the value is finite, the raw value is not ``invalid_value`` and the value
    is at least ``min_value``; invalid pixels hold 0. With ``valid_key`` a
    :class:`~pixcore.targets.ValidityMask` is produced under that key. Full validation
    refuses NaN/inf and values below ``min_value`` (use ``invalid_value`` to mark
    missing measurements).
    """

    key: str = "depth"
    valid_key: str | None = "valid"
    integer_scale: float = 1.0
    float_scale: float = 1.0
    invalid_value: float | None = 0.0
    min_value: float | None = 0.0
    allow_8bit: bool = False
    what: str = "depth map"

    def read(self, path: Path) -> np.ndarray:
        return read_scalar(path, allow_8bit=self.allow_8bit)

    def header(self, path: Path) -> tuple[int, int]:
        return _header(path, functools.partial(_check_scalar_mode, allow_8bit=self.allow_8bit))

    def _scale(self, array: np.ndarray) -> float:
        return self.float_scale if np.issubdtype(array.dtype, np.floating) else self.integer_scale

    def check(self, array: np.ndarray) -> list[str]:
        problems = []
        floating = np.issubdtype(array.dtype, np.floating)
        fill = f"{self.invalid_value if self.invalid_value is not None else 0:g}"
        finite = np.isfinite(array) if floating else np.ones(array.shape, dtype=bool)
        n_bad = int(array.size - np.count_nonzero(finite))
        if n_bad:
            problems.append(
                f"{n_bad} NaN/inf value{'s' if n_bad > 1 else ''}: a {self.what} must be finite; "
                f"store {fill} where there is no measurement"
            )
        scale = self._scale(array)
        unsigned = np.issubdtype(array.dtype, np.unsignedinteger)
        if self.min_value is not None and not (unsigned and scale >= 0 and self.min_value <= 0):
            scaled = np.where(finite, array, 0).astype(np.float64) * scale
            low = scaled < self.min_value
            if self.invalid_value is not None:
                low &= array != self.invalid_value
            n_low = int(np.count_nonzero(low))
            if n_low:
                problems.append(
                    f"{n_low} value{'s' if n_low > 1 else ''} below {self.min_value:g} "
                    f"(minimum {float(scaled[low].min()):g}): a {self.what} must be >= "
                    f"{self.min_value:g}; store {fill} where there is no measurement"
                )
        return problems

    def convert(self, array: np.ndarray) -> dict[str, Tensor]:
        value = array.astype(np.float32) * np.float32(self._scale(array))
        valid = np.isfinite(value)
        if self.invalid_value is not None:
            valid &= array != self.invalid_value
        if self.min_value is not None:
            valid &= value >= self.min_value
        value = np.where(valid, value, np.float32(0.0)).astype(np.float32, copy=False)
        out: dict[str, Tensor] = {self.key: ScalarField(torch.from_numpy(value)[None])}
        if self.valid_key is not None:
            out[self.valid_key] = ValidityMask(torch.from_numpy(valid))
        return out

    def keys(self) -> dict[str, type[TargetKind]]:
        kinds: dict[str, type[TargetKind]] = {self.key: ScalarField}
        if self.valid_key is not None:
            kinds[self.valid_key] = ValidityMask
        return kinds


@dataclass(frozen=True)
class VectorFile(FileField):
    """A normal map -> :class:`~pixcore.targets.UnitVectorField` ``[3, H, W]`` float32.

    A pixel is valid where its decoded vector is finite and its length is between 0.5 and
    1.5: a zero vector, a mid-grey ``(128, 128, 128)`` or a black ``(0, 0, 0)`` PNG pixel
    (the usual "no normal" markers) is invalid. Valid vectors are normalised to unit
    length; invalid ones are 0. ``flip`` negates components after decoding, to convert
    another camera convention to pixcore's (x right, y down, z forward), e.g.
    ``("y", "z")`` for an OpenGL-style (y up, z backward) file. With ``valid_key`` a
    :class:`~pixcore.targets.ValidityMask` is produced under that key.
    """

    key: str = "normals"
    valid_key: str | None = "normals_valid"
    flip: tuple[str, ...] = ()
    what: str = "normal map"

    def read(self, path: Path) -> np.ndarray:
        return read_vectors(path)

    def header(self, path: Path) -> tuple[int, int]:
        return _header(path, _check_vector_mode)

    def convert(self, array: np.ndarray) -> dict[str, Tensor]:
        v = np.where(np.isfinite(array), array, np.float32(0.0)).astype(np.float32, copy=False)
        norm = np.sqrt((v * v).sum(axis=-1))
        valid = np.isfinite(array).all(axis=-1) & (norm >= 0.5) & (norm <= 1.5)
        v = np.where(valid[..., None], v / np.maximum(norm, np.float32(1e-12))[..., None], 0.0)
        for axis in self.flip:
            v[..., "xyz".index(axis)] *= -1.0
        chw = np.ascontiguousarray(v.transpose(2, 0, 1), dtype=np.float32)
        out: dict[str, Tensor] = {self.key: UnitVectorField(torch.from_numpy(chw))}
        if self.valid_key is not None:
            out[self.valid_key] = ValidityMask(torch.from_numpy(valid))
        return out

    def keys(self) -> dict[str, type[TargetKind]]:
        kinds: dict[str, type[TargetKind]] = {self.key: UnitVectorField}
        if self.valid_key is not None:
            kinds[self.valid_key] = ValidityMask
        return kinds


@dataclass(frozen=True)
class ValidityFile(FileField):
    """A mask file (single-channel image or ``.npy``): non-zero -> True, as a ValidityMask."""

    key: str = "valid"
    what: str = "validity mask"

    def read(self, path: Path) -> np.ndarray:
        if path.suffix.lower() in _NUMPY_SUFFIXES:
            array = _load_npy(path)
            if array.ndim != 2:
                raise FileFormatError(
                    f"holds an array of shape {array.shape}; a validity mask is 2-D [H, W]"
                )
            return array
        return read_label(path)

    def convert(self, array: np.ndarray) -> dict[str, Tensor]:
        return {self.key: ValidityMask(torch.from_numpy(np.asarray(array) != 0))}

    def keys(self) -> dict[str, type[TargetKind]]:
        return {self.key: ValidityMask}


# --------------------------------------------------------------------------------------
# Listing files
# --------------------------------------------------------------------------------------


class DirectoryIndex:
    """Cached directory listings: existence tests without one ``stat`` per file.

    Listing a folder once is much faster than testing each of its files, especially on
    network file systems. Safe to share between threads (at worst two threads list the
    same folder) and picklable (data loader workers).
    """

    def __init__(self) -> None:
        self._names: dict[Path, frozenset[str]] = {}

    def names(self, folder: Path) -> frozenset[str]:
        """The entry names of ``folder`` (empty if it does not exist)."""
        cached = self._names.get(folder)
        if cached is None:
            try:
                cached = frozenset(os.listdir(folder))
            except OSError:
                cached = frozenset()
            self._names[folder] = cached
        return cached

    def exists(self, path: Path) -> bool:
        """Whether ``path`` is an entry of its folder."""
        return path.name in self.names(path.parent)

    def find(self, folder: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
        """The first ``folder/stem+suffix`` that exists, trying ``suffixes`` in order."""
        names = self.names(folder)
        for suffix in suffixes:
            if stem + suffix in names:
                return folder / (stem + suffix)
        return None


# --------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------


with warnings.catch_warnings():
    # The option is called `validate` in configs; it shadows pydantic's deprecated
    # BaseModel.validate class method, which nothing here uses.
    warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)

    class DatasetParams(BaseModel):
        """Parameters every file-based reader accepts: where it is and how it is checked."""

        model_config = ConfigDict(extra="forbid")

        root: Path = Field(description="Local folder of the data set (see docs/datasets.md).")
        validate: ValidateMode = Field(  # type: ignore[assignment]
            default="full",
            description=(
                "Checks when the data set is opened. 'full': decode every file and check "
                "sizes and values; 'quick': existence and sizes from file headers; 'off': none."
            ),
        )


@dataclass(frozen=True)
class Record:
    """One sample: a name (for messages) and the file feeding each field."""

    name: str
    files: Mapping[str, Path] = field(default_factory=dict)


@dataclass
class _Problems:
    """Problems found while checking, in a stable order."""

    items: list[tuple[Path | None, str]] = field(default_factory=list)

    def add(self, path: Path | None, message: str) -> None:
        self.items.append((path, message))


def _reason(error: BaseException) -> str:
    if isinstance(error, FileFormatError):
        return str(error)
    if isinstance(error, UnidentifiedImageError):
        return (
            "cannot be read: not a recognised image file (damaged, truncated or not an "
            "image); re-extract or re-download it"
        )
    text = str(error).strip() or type(error).__name__
    if isinstance(error, PermissionError):
        return f"cannot be read ({text}); check the file's permissions"
    return (
        f"cannot be read ({text}); the file is damaged or truncated: re-extract or "
        "re-download it"
    )


class FileDataset(Dataset):
    """Base of the readers of data sets stored as files.

    A subclass lists its samples as :class:`Record` objects, describes each field with a
    :class:`FileField` (the ``"image"`` field is the size reference) and calls
    ``super().__init__``, which validates the files and sets ``target_kinds`` from the
    fields. ``constants`` are tensors added to every sample (camera intrinsics).

    Validation (``validate``):

    * ``"full"`` (default): every file exists, decodes, has its image's size and holds
      legal values (class ids within the classes or the ignore index, finite
      non-negative depth...). Files are decoded in a thread pool.
    * ``"quick"``: every file exists and has its image's size, and label and depth files
      have the right format (channels, bit depth), all read from file headers.
    * ``"off"``: nothing; a bad file raises :class:`DatasetError` when its sample is read.

    Every problem is reported at once (up to :data:`MAX_REPORTED_PROBLEMS`, then a count
    of the rest) in one :class:`DatasetError`.
    """

    #: Short name used in messages ("voc", "cityscapes"...); subclasses override it.
    name: ClassVar[str] = "files"

    def __init__(
        self,
        records: Sequence[Record],
        fields: Mapping[str, FileField],
        *,
        roots: Sequence[Path],
        validate: ValidateMode = "full",
        description: str = "",
        constants: Mapping[str, Tensor] | None = None,
        transform: Callable[[Sample], Sample] | None = None,
        workers: int | None = None,
    ) -> None:
        self.records = list(records)
        self.fields = dict(fields)
        self.roots = [Path(r) for r in roots]
        self.description = description or f"{self.name} data set at {self.roots[0]}"
        self.constants = dict(constants or {})
        self.transform = transform
        self._index = DirectoryIndex()
        kinds: dict[str, type[TargetKind]] = {}
        for field_name, spec in self.fields.items():
            for key, kind in spec.keys().items():
                if key in kinds:
                    raise ValueError(
                        f"{self.description}: field {field_name!r} produces sample key {key!r}, "
                        "which another field already produces; give each target its own key"
                    )
                kinds[key] = kind
        for key, value in self.constants.items():
            kinds[key] = type(value) if isinstance(value, TargetKind) else TargetKind
        # The keys depend on the options (labels, normals...), so they are per instance.
        self.target_kinds = kinds  # type: ignore[misc]
        if validate not in ("full", "quick", "off"):
            raise ValueError(f"validate must be 'full', 'quick' or 'off', got {validate!r}")
        if validate != "off":
            self._validate(full=validate == "full", workers=workers)

    # -- messages ---------------------------------------------------------------------

    def relative(self, path: Path) -> str:
        """``path`` relative to the first data set root that holds it (for messages)."""
        for root in self.roots:
            try:
                return path.relative_to(root).as_posix()
            except ValueError:
                continue
        return str(path)

    def sample_problems(
        self, record: Record, sizes: Mapping[str, tuple[int, int]]
    ) -> list[tuple[Path | None, str]]:
        """Extra checks of one sample given the ``(H, W)`` of its readable files.

        Override to check, e.g., that the image size matches fixed camera intrinsics.
        """
        return []

    def layout_problems(self) -> list[tuple[Path | None, str]]:
        """Problems found while listing (orphan labels, duplicate names...); reported with
        the per-file problems. Override in readers that collect them."""
        return []

    # -- validation -------------------------------------------------------------------

    def _check_record(self, record: Record, full: bool) -> list[tuple[Path | None, str]]:
        out: list[tuple[Path | None, str]] = []
        sizes: dict[str, tuple[int, int]] = {}
        for field_name, path in record.files.items():
            spec = self.fields[field_name]
            if not self._index.exists(path):
                out.append((path, self.missing_message(field_name, record)))
                continue
            try:
                if full:
                    sizes[field_name], messages = spec.verify(path)
                    out.extend((path, message) for message in messages)
                else:
                    sizes[field_name] = spec.header(path)
            except Exception as error:  # any decoding failure is a problem of this file
                out.append((path, _reason(error)))
        reference = sizes.get("image")
        if reference is not None:
            for field_name, size in sizes.items():
                if field_name != "image" and size != reference:
                    message = self._size_message(record, field_name, size, reference)
                    out.append((record.files[field_name], message))
        out.extend(self.sample_problems(record, sizes))
        return out

    def _size_message(
        self, record: Record, field_name: str, size: tuple[int, int], reference: tuple[int, int]
    ) -> str:
        what = self.fields[field_name].what
        return (
            f"is {size[0]}x{size[1]} (height x width) but its image "
            f"{self.relative(record.files['image'])} is {reference[0]}x{reference[1]}; a "
            f"{what} must have its image's size: re-export it at {reference[0]}x{reference[1]} "
            "or check that it belongs to this image"
        )

    def missing_message(self, field_name: str, record: Record) -> str:
        """The message for a missing file; override to say where it should come from."""
        what = self.fields[field_name].what
        if field_name == "image":
            return f"missing image of sample {record.name!r}: restore the file"
        return (
            f"missing {what} of {self.relative(record.files['image'])}: every sample needs "
            f"its {what}; restore the file or remove the sample"
        )

    def _validate(self, full: bool, workers: int | None) -> None:
        problems = _Problems()
        for item in self.layout_problems():
            problems.add(*item)
        count = len(self.records)
        if count:
            threads = workers or min(16, (os.cpu_count() or 1) * 2, max(1, math.ceil(count / 4)))
            if threads <= 1 or count < 8:
                results: Iterable[list[tuple[Path | None, str]]] = (
                    self._check_record(r, full) for r in self.records
                )
            else:
                with ThreadPoolExecutor(threads, thread_name_prefix="pixcore-check") as pool:
                    check = functools.partial(self._check_record, full=full)
                    results = list(pool.map(check, self.records, chunksize=16))
            for result in results:
                for item in result:
                    problems.add(*item)
        if problems.items:
            raise DatasetError(self._report(problems, full))

    def _report(self, problems: _Problems, full: bool) -> str:
        n = len(problems.items)
        lines = [
            f"{self.description}: {n} problem{'s' if n > 1 else ''} found while checking "
            f"{len(self.records)} sample{'s' if len(self.records) != 1 else ''} "
            f"(validate={'full' if full else 'quick'}):"
        ]
        for path, message in problems.items[:MAX_REPORTED_PROBLEMS]:
            where = self.relative(path) if path is not None else ""
            lines.append(f"  {where}: {message}" if where else f"  {message}")
        if n > MAX_REPORTED_PROBLEMS:
            rest = n - MAX_REPORTED_PROBLEMS
            lines.append(f"  ... and {rest} more problem{'s' if rest > 1 else ''}")
        lines.append(
            "Fix the files above. To open the data set anyway, set the parameter `validate` "
            "to 'quick' (existence and sizes only) or 'off' (no checks; a bad file then fails "
            "when its sample is read)."
        )
        return "\n".join(lines)

    # -- access -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        sample: Sample = {}
        size: tuple[int, int] | None = None
        for field_name, path in record.files.items():
            spec = self.fields[field_name]
            try:
                array = spec.read(path)
            except FileNotFoundError:
                raise DatasetError(
                    f"{self.description}: {self.relative(path)}: "
                    f"{self.missing_message(field_name, record)}"
                ) from None
            except Exception as error:
                raise DatasetError(
                    f"{self.description}: {self.relative(path)}: {_reason(error)}"
                ) from error
            this = (int(array.shape[0]), int(array.shape[1]))
            if size is None:
                size = this
            elif this != size:
                raise DatasetError(
                    f"{self.description}: {self.relative(path)}: "
                    + self._size_message(record, field_name, this, size)
                )
            sample.update(spec.convert(array))
        for key, value in self.constants.items():
            sample[key] = value.clone()
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description}, {len(self)} samples)"
