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
import contextlib
import functools
import math
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from pydantic import Field
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
    "DatasetRoot",
    "DatasetValidation",
    "DirectoryIndex",
    "FileDataset",
    "FileField",
    "FileFormatError",
    "ImageFile",
    "ImageTooLargeError",
    "Record",
    "ScalarFile",
    "ValidateMode",
    "ValidityFile",
    "VectorFile",
    "class_id_problem",
    "file_size",
    "illegal_class_ids",
    "pillow_accepts",
    "pillow_max_pixels",
    "read_image",
    "read_label",
    "read_scalar",
    "read_vectors",
    "verify_image",
]

#: How a data set is checked when it is opened (see :class:`FileDataset`).
ValidateMode = Literal["full", "quick", "off"]

# The two parameters every file-based reader takes, declared once for all of them: a
# reader's signature uses these types, and the descriptions travel with them.
#: The ``root`` parameter of a reader: where the data set is.
DatasetRoot = Annotated[
    str | Path, Field(description="Local folder of the data set (see docs/datasets.md).")
]
#: The ``validate`` parameter of a reader: how it is checked when opened.
DatasetValidation = Annotated[
    ValidateMode,
    Field(
        description="Checks when the data set is opened. 'full': decode every file and check "
        "sizes and values; 'quick': existence and sizes from file headers; 'off': none."
    ),
]

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


class ImageTooLargeError(FileFormatError):
    """An image has more pixels than the limit that guards against decompression bombs.

    ``pixels`` is its pixel count (None when unknown), ``size`` its ``(height, width)``
    (None when the file was refused before its size could be read), ``limit`` the most
    pixels accepted. The message says how to raise Pillow's limit; a caller with an
    option of its own (``pixcore predict --max-pixels``) words its own with
    :meth:`extent`.
    """

    def __init__(self, pixels: int | None, limit: int, size: tuple[int, int] | None = None) -> None:
        self.pixels = pixels
        self.limit = limit
        self.size = size
        half = f"{-(-pixels // 2)}" if pixels is not None else "a larger value"
        super().__init__(
            f"{self.extent()}; if the file is genuine, raise Pillow's limit before the data "
            f"are read: PIL.Image.MAX_IMAGE_PIXELS = {half} (Pillow refuses images of more "
            "than twice that; None removes the limit), or downscale the file"
        )

    def extent(self) -> str:
        """``"is 20000x20000 (height x width, 400,000,000 pixels), more than the limit of
        178,956,970 pixels (a guard against decompression bombs)"``."""
        if self.size is not None:
            what = f"is {self.size[0]}x{self.size[1]} (height x width, {self.pixels:,} pixels)"
        elif self.pixels is not None:
            what = f"has {self.pixels:,} pixels"
        else:
            what = "has too many pixels"
        return (
            f"{what}, more than the limit of {self.limit:,} pixels (a guard against "
            "decompression bombs)"
        )

    @classmethod
    def from_pillow(
        cls, error: PILImage.DecompressionBombError, limit: int | None = None
    ) -> ImageTooLargeError:
        """The error for an image that Pillow itself refused (its message has the counts);
        ``limit``: the one to report instead of Pillow's."""
        found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(error))
        pixels = int(found[1]) if found is not None else None
        if limit is None:
            limit = int(found[2]) if found is not None else (pillow_max_pixels() or 0)
        return cls(pixels, limit)


def pillow_max_pixels() -> int | None:
    """The most pixels Pillow opens: twice ``PIL.Image.MAX_IMAGE_PIXELS`` (None: no limit)."""
    limit = PILImage.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * limit


_PILLOW_LIMIT = threading.RLock()


@contextlib.contextmanager
def pillow_accepts(max_pixels: int | None) -> Iterator[None]:
    """Within the block Pillow handles images of up to ``max_pixels`` pixels, silently.

    Pillow's limit (:func:`pillow_max_pixels`) is a process-wide setting: it is raised only
    when ``max_pixels`` is above it (an explicit request for larger images), and restored
    on exit. None: nothing changes.
    """
    if max_pixels is None:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        current = pillow_max_pixels()
        if current is None or max_pixels <= current:
            yield
            return
        with _PILLOW_LIMIT:
            saved = PILImage.MAX_IMAGE_PIXELS
            PILImage.MAX_IMAGE_PIXELS = -(-max_pixels // 2)
            try:
                yield
            finally:
                PILImage.MAX_IMAGE_PIXELS = saved


def _open(path: Path, max_pixels: int | None = None) -> PILImage.Image:
    """Open an image file (no pixel is decoded yet).

    An image of more than ``max_pixels`` pixels (None: Pillow's limit, see
    :func:`pillow_max_pixels`) raises :class:`ImageTooLargeError`.
    """
    try:
        with pillow_accepts(max_pixels):
            img = PILImage.open(path)
    except PILImage.DecompressionBombError as error:  # above Pillow's limit and max_pixels
        raise ImageTooLargeError.from_pillow(error, max_pixels) from None
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageTooLargeError(width * height, max_pixels, (height, width))
    return img


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


def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """An image file -> writable ``[H, W, 3]`` uint8 RGB (greyscale, palette and CMYK are
    converted).

    More than ``max_pixels`` pixels (None: Pillow's limit) raises
    :class:`ImageTooLargeError` before anything is decoded.
    """
    with _open(path, max_pixels) as img:
        if img.mode != "RGB":
            img = img.convert("RGB")
        # np.array, not np.asarray: Pillow hands numpy read-only bytes, and tensors made
        # from the array (without another copy) must be writable.
        return np.array(img, dtype=np.uint8)


def verify_image(path: Path, max_pixels: int | None = None) -> tuple[int, int]:
    """Decode every byte of an image file, cheaply, and return its ``(height, width)``.

    A truncated or damaged file raises (unless the process set
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``, which makes Pillow fill what is missing); so
    does an image of more than ``max_pixels`` pixels (:class:`ImageTooLargeError`). What
    only the pixels need is skipped: JPEGs are decoded at 1/8 scale (every byte is still
    read and entropy-decoded), nothing is converted to RGB.
    """
    with _open(path, max_pixels) as img:
        width, height = img.size
        if img.format == "JPEG":
            img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
        img.load()
    return height, width


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
# Class ids: the one rule every reader applies to a class mask
# --------------------------------------------------------------------------------------


def _value_counts(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of an integer array and the number of pixels of each.

    ``np.bincount`` for the usual 8/16-bit ids (one linear pass), ``np.unique`` only for
    negative or very large values.
    """
    flat = stored.ravel()
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if flat.dtype.itemsize <= 2 and flat.dtype.kind in "ub":
        counts = np.bincount(flat)
    elif int(flat.min()) >= 0 and int(flat.max()) < 1 << 16:
        counts = np.bincount(flat.astype(np.int64, copy=False))
    else:
        values, counts = np.unique(flat, return_counts=True)
        return values.astype(np.int64), counts.astype(np.int64)
    values = np.flatnonzero(counts)
    return values, counts[values]


def _mapped(values: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """Stored values -> class ids through ``lut``; -1 for a value the table lacks."""
    if lut is None:
        return values
    inside = (values >= 0) & (values < len(lut))
    ids = np.full(values.shape, -1, dtype=np.int64)
    ids[inside] = lut[values[inside]]
    return ids


def _legal(ids: np.ndarray, num_classes: int, ignore_index: int, mapped: bool) -> np.ndarray:
    """Per element: whether class id ``ids`` is a class or the ignore index.

    ``mapped``: the ids come from a table, whose -1 marks a stored value the format does
    not define; that stays refused even when the ignore index is -1.
    """
    legal = ((ids >= 0) & (ids < num_classes)) | (ids == ignore_index)
    return legal & (ids != -1) if mapped else legal


def _all_legal(stored: np.ndarray, num_classes: int, ignore_index: int, lut: np.ndarray | None) -> bool:
    """Whether every value of a label map obeys :func:`illegal_class_ids`'s rule.

    The answer for a correct file (nearly every read) in two or three vectorised passes
    over the pixels, where counting the values (what the message needs) costs several
    times more: it runs on every sample read, not only when the data set is validated.
    """
    if stored.dtype == bool:
        stored = stored.view(np.uint8)
    if not np.issubdtype(stored.dtype, np.integer):
        return False  # let the counting path report the values
    if lut is not None:
        if stored.size and (int(stored.min()) < 0 or int(stored.max()) >= len(lut)):
            return False
        return bool(np.take(_legal(lut, num_classes, ignore_index, mapped=True), stored).all())
    inside = stored < num_classes if stored.dtype.kind == "u" else (stored >= 0) & (stored < num_classes)
    count = np.count_nonzero(inside)
    if count < stored.size and not 0 <= ignore_index < num_classes:  # else counted already
        count += np.count_nonzero(stored == ignore_index)
    return bool(count == stored.size)


def illegal_class_ids(
    stored: np.ndarray, num_classes: int, ignore_index: int, lut: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """``(stored value, pixel count)`` of every value of a label map that the rule refuses.

    The rule: after the reader's documented mapping ``lut`` (stored value ``v`` -> class
    ``lut[v]``; ``-1``, or ``v`` beyond the table, marks a value the format does not
    define, refused whatever the ignore index), every id is a class in
    ``[0, num_classes)`` or ``ignore_index``.
    """
    if _all_legal(stored, num_classes, ignore_index, lut):
        return []
    values, counts = _value_counts(stored)
    legal = _legal(_mapped(values, lut), num_classes, ignore_index, mapped=lut is not None)
    return [(int(v), int(c)) for v, c in zip(values[~legal], counts[~legal], strict=True)]


def _value_list(values: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"value{'s' if len(values) > 1 else ''} {shown}{more}"


def _pixel_counts(bad: Sequence[tuple[int, int]], limit: int) -> str:
    shown = [f"{count:,}" for _, count in bad[:limit]]
    text = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    one = len(bad) == 1 and bad[0][1] == 1
    text += " pixel" if one else " pixels"
    if len(bad) > limit:
        text += f"; {sum(count for _, count in bad):,} pixels in all"
    return text


def class_id_problem(
    stored: np.ndarray,
    num_classes: int,
    ignore_index: int,
    lut: np.ndarray | None = None,
    expected: str = "",
    fix: str = "",
) -> str | None:
    """What is wrong with the ids of a label map, or None when it obeys the rule.

    The rule is :func:`illegal_class_ids`'s; every reader applies it when it reads a
    class mask (:class:`ClassMaskFile`), whatever its ``validate`` setting. The message
    lists the offending stored values with their pixel counts, then ``expected`` (what
    the values should be; default: the classes and the ignore index) and ``fix``, e.g.
    ``"value 37 outside the 21 classes (0-20) and not the ignore index 255 (12 pixels);
    <fix>"``.
    """
    bad = illegal_class_ids(stored, num_classes, ignore_index, lut)
    if not bad:
        return None
    n = num_classes
    expected = expected or (
        f"outside the {n} classes (0-{n - 1}) and not the ignore index {ignore_index}"
    )
    fix = fix or (
        f"fix the mask (class ids 0-{n - 1}, {ignore_index} for unlabelled pixels), or set "
        "the number of classes and the ignore index to what the files hold"
    )
    values = _value_list([v for v, _ in bad])
    return f"{values} {expected} ({_pixel_counts(bad, limit=8)}); {fix}"


# --------------------------------------------------------------------------------------
# Fields: one kind of file of a sample
# --------------------------------------------------------------------------------------


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
        return verify_image(path), []

    def convert(self, array: np.ndarray) -> dict[str, Tensor]:
        # A [3, H, W] view of the decoded [H, W, 3] memory, as torchvision.io decodes: a
        # transposing copy was a quarter of the time to read a VOC sample, and
        # pixcore.augment resizes uint8 images fastest in this layout. np.require copies
        # only an array torch cannot share (read-only, or with negative strides).
        hwc = np.require(array, requirements=["C", "W"])
        return {self.key: Image(torch.from_numpy(hwc).permute(2, 0, 1))}

    def keys(self) -> dict[str, type[TargetKind]]:
        return {self.key: Image}


@dataclass(frozen=True, eq=False)
class ClassMaskFile(FileField):
    """A label map -> :class:`~pixcore.targets.ClassMask` ``[H, W]`` under ``key``.

    The ids are uint8 when every class id and the ignore index fit in ``0..255`` (VOC,
    Cityscapes, ADE20K and most data sets), else int64: one byte a pixel instead of eight
    through augmentation, collation and the loader workers' shared memory. Losses and
    metrics take any integer dtype.

    Without ``lut`` the stored values are the class ids: legal values are
    ``0..num_classes-1`` and ``ignore_index``. With ``lut`` (a 1-D int array), stored value
    ``v`` becomes class ``lut[v]``; ``lut[v] = -1`` (or ``v >= len(lut)``) marks a value
    that must not occur. ``expected`` and ``fix`` replace the default wording of the
    out-of-range message: ``"<file>: value 37 <expected> (12 pixels); <fix>"``.

    The rule (:func:`class_id_problem`) is applied by :meth:`check` (full validation,
    every file when the data set is opened) and again by :meth:`convert` on every read,
    whatever ``validate`` says: an illegal value raises :class:`FileFormatError`, which
    :class:`FileDataset` reports as a :class:`DatasetError` naming the file.
    """

    key: str = "semseg"
    num_classes: int = 1
    ignore_index: int = DEFAULT_IGNORE_INDEX
    lut: np.ndarray | None = None
    expected: str = ""
    fix: str = ""
    what: str = "label"
    _table: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.lut is not None:
            lut = np.asarray(self.lut, dtype=np.int64)
            object.__setattr__(self, "lut", lut)
            # The table in the ids' dtype; its -1 entries wrap, but the check refuses them first.
            object.__setattr__(self, "_table", lut.astype(self.dtype))

    @property
    def dtype(self) -> np.dtype[Any]:
        """The ids' dtype: uint8 when every class id and the ignore index fit, else int64."""
        fits = self.num_classes <= 256 and 0 <= self.ignore_index <= 255
        return np.dtype(np.uint8) if fits else np.dtype(np.int64)

    def read(self, path: Path) -> np.ndarray:
        return read_label(path)

    def header(self, path: Path) -> tuple[int, int]:
        return _header(path, _check_label_mode)

    def problem(self, array: np.ndarray) -> str | None:
        """The rule of :func:`class_id_problem` applied to stored values ``array``."""
        return class_id_problem(
            array, self.num_classes, self.ignore_index, self.lut, self.expected, self.fix
        )

    def check(self, array: np.ndarray) -> list[str]:
        problem = self.problem(array)
        return [] if problem is None else [problem]

    def convert(self, array: np.ndarray) -> dict[str, Tensor]:
        # Checked on every read, whatever `validate` says: an id outside the classes would
        # otherwise surface as a loss error at training time, with no file named.
        problem = self.problem(array)
        if problem is not None:
            raise FileFormatError(problem)
        if self.lut is None:
            ids = np.require(array.astype(self.dtype, copy=False), requirements=["C", "W"])
        else:  # every stored value is inside the table: the check refuses the others
            table = self._table if self._table is not None else self.lut  # _table is set with lut
            ids = np.take(table, array)  # faster than lut[array], and bool maps are indices too
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
        # One transposing copy, then work on contiguous [H, W] planes: reductions over the
        # last axis of [H, W, 3] are several times slower.
        chw = np.ascontiguousarray(np.asarray(array).transpose(2, 0, 1), dtype=np.float32)
        finite = np.isfinite(chw).all(axis=0)
        if not finite.all():
            chw[:, ~finite] = 0.0
        x, y, z = chw
        norm = np.sqrt(x * x + y * y + z * z)
        valid = finite & (norm >= 0.5) & (norm <= 1.5)
        # Invalid pixels: dividing by infinity gives zero.
        chw /= np.where(valid, np.maximum(norm, np.float32(1e-12)), np.float32(np.inf))
        for axis in self.flip:
            chw["xyz".index(axis)] *= -1.0
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
            sample.update(self._convert(spec, path, array))
        for key, value in self.constants.items():
            sample[key] = value.clone()
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def _convert(self, spec: FileField, path: Path, array: np.ndarray) -> dict[str, Tensor]:
        """``spec.convert(array)``; values it refuses become a :class:`DatasetError` naming
        ``path``."""
        try:
            return spec.convert(array)
        except FileFormatError as error:
            raise DatasetError(
                f"{self.description}: {self.relative(path)}: {error}. (validate='full' finds "
                "every such file when the data set is opened.)"
            ) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description}, {len(self)} samples)"
