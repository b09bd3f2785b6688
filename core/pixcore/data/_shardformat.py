"""The shard format: tar files in the WebDataset layout, plus an ``index.json`` that makes them seekable.

A shard is a plain, uncompressed tar file. A sample is a run of consecutive members named
``<key>.<sample key>.<ext>`` (``000000017.semseg.png``), which is the layout WebDataset
reads, so ``tar tf`` lists a shard and ``webdataset.WebDataset(url)`` streams it. Every
value is stored losslessly in a standard format that its extension names:

=================================  ===================  =====================================
value                              member               decoded as
=================================  ===================  =====================================
``Image`` uint8 ``[3, H, W]``      ``.png`` (RGB), or   the same ``Image``
                                   the source ``.jpg``
                                   / ``.png`` bytes
``ClassMask`` ids in 0..65535      ``.png``, 8 or 16    ``ClassMask`` of the stored dtype
                                   bits greyscale       (int64)
``ValidityMask`` ``[H, W]``        ``.png``, 1 bit      ``ValidityMask`` (bool)
``Intrinsics``                     ``.json`` (numbers)  ``Intrinsics`` of the stored dtype
any other tensor                   ``.npy``             the same dtype, shape and kind
a number, string, list, dict       ``.json``            the same value
=================================  ===================  =====================================

``index.json`` holds, per split, the shards with their sample counts and the byte offset
of every sample, the keys with their kinds and dtypes, the class names, and where the
samples came from (data set name and parameters, pixcore version). The offsets let a
reader start anywhere without scanning a shard: resuming mid-epoch, giving parts of one
shard to several workers, and re-reading one sample after a dropped connection.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from torch import Tensor

from pixcore._errors import ConfigError
from pixcore._targets import ClassMask, Image, Intrinsics, TargetKind, ValidityMask

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "KeySpec",
    "ShardEntry",
    "SplitIndex",
    "decode_value",
    "encode_value",
    "image_from_bytes",
    "parse_size",
    "sample_key",
    "sample_members",
]

FORMAT = "pixcore-shards"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"

#: Sample keys become part of member names: no dots (WebDataset splits names at the first
#: dot of the base name) and no slashes.
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+$")
_PNG_CLASS_MAX = 65535
_IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}


def sample_key(index: int) -> str:
    """The member-name prefix of sample ``index`` of the source data set: ``000000017``."""
    return f"{index:09d}"


def parse_size(text: str | int) -> int:
    """``"1GB"``, ``"500MB"``, ``"64MiB"``, ``"20kB"`` or a number of bytes -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKMGT]?)(i?)[bB]?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"shard size {text!r} is not a size: write e.g. 1GB, 500MB, 64MiB or 1000000 (bytes)")
    number, prefix, binary = float(match.group(1)), match.group(2).upper(), match.group(3)
    power = " KMGT".index(prefix) if prefix else 0
    return int(number * (1024 if binary else 1000) ** power)


# --------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """What a sample key holds: its kind (``"class_mask"``...), the class to rebuild and the dtype."""

    kind: str
    cls: str  # "module:QualifiedName" of the TargetKind subclass; "tensor" or "json" otherwise
    dtype: str  # torch dtype name without "torch." ("int64"); "" for JSON values

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "class": self.cls, "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeySpec:
        return cls(str(data["kind"]), str(data["class"]), str(data["dtype"]))

    @classmethod
    def of(cls, value: Any) -> KeySpec:
        if isinstance(value, TargetKind):
            kind = type(value)
            return cls(kind.kind, f"{kind.__module__}:{kind.__qualname__}", _dtype_name(value.dtype))
        if isinstance(value, Tensor):
            return cls("tensor", "tensor", _dtype_name(value.dtype))
        return cls("json", "json", "")

    def target_class(self) -> type[TargetKind] | None:
        """The ``TargetKind`` subclass to rebuild values with (None: a plain tensor or a JSON value)."""
        if self.cls in ("tensor", "json"):
            return None
        module, _, name = self.cls.partition(":")
        try:
            found: Any = importlib.import_module(module)
            for part in name.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            raise ConfigError(
                f"the shards hold values of kind {self.kind!r} (class {self.cls}), which cannot be "
                f"imported here: install the plugin that defines it"
            ) from None
        if not (isinstance(found, type) and issubclass(found, TargetKind)):
            raise ConfigError(f"the shards name {self.cls} as a target kind, but it is not a pixcore TargetKind")
        return found


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"index.json names the dtype {name!r}, which this PyTorch does not know")
    return dtype


@dataclass(frozen=True)
class ShardEntry:
    """One tar file: its name (relative to the index), sample count, size and sample offsets.

    ``offsets`` has ``samples + 1`` entries: sample ``i`` occupies bytes
    ``offsets[i]:offsets[i + 1]`` (its members, headers included).
    """

    name: str
    samples: int
    bytes: int
    first: int  # index in the source data set of the shard's first sample
    offsets: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "samples": self.samples, "bytes": self.bytes, "first": self.first,
                "offsets": list(self.offsets)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardEntry:
        offsets = tuple(int(o) for o in data["offsets"])
        entry = cls(str(data["name"]), int(data["samples"]), int(data["bytes"]), int(data["first"]), offsets)
        if len(offsets) != entry.samples + 1 or any(b < a for a, b in zip(offsets, offsets[1:], strict=False)):
            raise ValueError(f"shard {entry.name}: {len(offsets)} offsets for {entry.samples} samples")
        return entry


@dataclass
class SplitIndex:
    """The ``index.json`` entry of one split: its shards, keys, classes and origin."""

    shards: list[ShardEntry]
    keys: dict[str, KeySpec]
    source: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    ignore_index: int = 255
    pixcore_version: str = ""

    @property
    def samples(self) -> int:
        return sum(shard.samples for shard in self.shards)

    def target_kinds(self) -> dict[str, type[TargetKind]]:
        """The keys that hold typed tensors, for the check of what the tasks read."""
        kinds: dict[str, type[TargetKind]] = {}
        for key, spec in self.keys.items():
            cls = spec.target_class()
            if cls is not None:
                kinds[key] = cls
        return kinds

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "pixcore_version": self.pixcore_version,
            "source": self.source,
            "keys": {key: spec.to_json() for key, spec in self.keys.items()},
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "shards": [shard.to_json() for shard in self.shards],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SplitIndex:
        shards = [ShardEntry.from_json(s) for s in data["shards"]]
        index = cls(
            shards=shards,
            keys={key: KeySpec.from_json(spec) for key, spec in data["keys"].items()},
            source=dict(data.get("source", {})),
            class_names=tuple(data.get("class_names", ())),
            ignore_index=int(data.get("ignore_index", 255)),
            pixcore_version=str(data.get("pixcore_version", "")),
        )
        if "samples" in data and int(data["samples"]) != index.samples:
            raise ValueError(f"'samples' is {data['samples']} but the shards hold {index.samples}")
        return index


def new_index_document() -> dict[str, Any]:
    """An ``index.json`` without splits."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "splits": {}}


# --------------------------------------------------------------------------------------
# Values <-> member bytes
# --------------------------------------------------------------------------------------


def check_key(key: str) -> None:
    """Refuse a sample key that cannot be part of a WebDataset member name."""
    if not _KEY_PATTERN.match(key):
        raise ConfigError(
            f"sample key {key!r} cannot be stored in a shard: member names are '<index>.<key>.<ext>', "
            "so a key may only hold letters, digits, '_' and '-'. Rename the key in the data set"
        )


def encode_value(value: Any) -> tuple[str, bytes]:
    """``(extension, bytes)`` of one sample value, losslessly (see the module docstring)."""
    if isinstance(value, Tensor):
        array = value.detach().cpu().contiguous().numpy()
        if isinstance(value, Image) and array.dtype == np.uint8 and array.ndim == 3 and array.shape[0] == 3:
            return "png", _png(PILImage.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0))))  # RGB
        if isinstance(value, ValidityMask) and array.ndim == 2 and array.size:
            return "png", _png(PILImage.fromarray(array))  # bool: 1-bit PNG
        if isinstance(value, ClassMask) and array.ndim == 2 and array.size and _fits_png(array):
            return "png", _png(_class_png(array))
        if isinstance(value, Intrinsics) and value.is_floating_point():
            return "json", json.dumps(array.tolist()).encode()
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return "npy", buffer.getvalue()
    try:
        return "json", json.dumps(value).encode()
    except TypeError:
        raise ConfigError(
            f"a sample value of type {type(value).__name__} cannot be stored in a shard: samples hold "
            "tensors (pixcore.targets) and JSON values (numbers, strings, lists, dicts)"
        ) from None


def _fits_png(array: np.ndarray) -> bool:
    return bool(array.min() >= 0 and array.max() <= _PNG_CLASS_MAX)


def _class_png(array: np.ndarray) -> PILImage.Image:
    if int(array.max()) < 256:
        return PILImage.fromarray(array.astype(np.uint8))  # 8-bit greyscale ("L")
    return PILImage.fromarray(array.astype(np.uint16))  # 16-bit greyscale ("I;16")


def _png(picture: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def image_from_bytes(data: bytes) -> np.ndarray:
    """Image file bytes -> ``[H, W, 3]`` uint8 RGB, as ``pixcore.data.read_image`` decodes a file."""
    with PILImage.open(io.BytesIO(data)) as picture:
        rgb = picture if picture.mode == "RGB" else picture.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8)


def source_image(path: Any, image: Tensor) -> tuple[str, bytes] | None:
    """The image file's own bytes when they are a JPEG or PNG that decodes to exactly ``image``.

    Storing the source bytes keeps a JPEG data set its size (a PNG of a photo is several
    times larger); the check makes sure that a reader which changed the pixels (a
    transform, an orientation) is stored from its pixels instead.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        with PILImage.open(io.BytesIO(data)) as picture:
            extension = _IMAGE_EXTENSIONS.get(picture.format or "")
        if extension is None:
            return None
        decoded = torch.from_numpy(image_from_bytes(data).transpose(2, 0, 1).copy())
    except (OSError, ValueError):
        return None
    same = decoded.shape == image.shape and bool(torch.equal(decoded, image.as_subclass(Tensor).cpu()))
    return (extension, data) if same else None


def decode_value(extension: str, data: bytes, spec: KeySpec) -> Any:
    """Member bytes -> the sample value ``spec`` describes (raises on damaged bytes)."""
    cls = spec.target_class()
    if extension == "json":
        value = json.loads(data)
        if spec.cls == "json":
            return value
        tensor = torch.tensor(value, dtype=_torch_dtype(spec.dtype))
    elif extension == "npy":
        array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif extension in ("png", "jpg", "jpeg"):
        tensor = _decode_picture(data, spec)
    else:
        raise ValueError(f"unknown member extension {extension!r}")
    tensor = tensor.to(_torch_dtype(spec.dtype))
    return cls(tensor) if cls is not None else tensor


def _decode_picture(data: bytes, spec: KeySpec) -> Tensor:
    if spec.kind == Image.kind:
        return torch.from_numpy(np.ascontiguousarray(image_from_bytes(data).transpose(2, 0, 1)))
    with PILImage.open(io.BytesIO(data)) as picture:
        array = np.array(picture)  # a writable copy
    return torch.from_numpy(array)


# --------------------------------------------------------------------------------------
# Samples <-> tar members
# --------------------------------------------------------------------------------------


def member_info(name: str, size: int) -> tarfile.TarInfo:
    """A tar header that depends on nothing but the name and size: shards are reproducible."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def sample_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """``(member name, bytes)`` of one sample's bytes, as cut from a shard by its offsets."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for info in archive:
            if not info.isfile():
                continue
            handle = archive.extractfile(info)
            if handle is None:  # pragma: no cover - isfile() members always have data
                continue
            yield info.name, handle.read()
