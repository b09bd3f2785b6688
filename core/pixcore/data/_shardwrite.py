"""Writing any data set into tar shards plus ``index.json`` (``pixcore shard``).

Shards are written with Python's ``tarfile`` in the WebDataset layout (see
:mod:`pixcore.data._shardformat`), with headers that depend only on member names and
sizes, so the same data set written twice gives the same bytes. The destination is a
local folder or any fsspec URL; ``index.json`` is written last, so a folder whose index
lists a split holds all of that split's shards.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pixcore._errors import PixcoreError
from pixcore.data._files import FileDataset, ImageFile
from pixcore.data._shardformat import (
    INDEX_NAME,
    KeySpec,
    ShardEntry,
    SplitIndex,
    check_key,
    encode_value,
    member_info,
    new_index_document,
    parse_size,
    sample_key,
    source_image,
)
from pixcore.data._shards import open_filesystem

__all__ = ["WrittenShards", "dataset_to_shard", "write_shards"]

_END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE

#: One encoded sample: its index, ``(key, extension, bytes)`` per value, and each key's spec.
Encoded = tuple[int, list[tuple[str, str, bytes]], dict[str, KeySpec]]


@dataclass(frozen=True)
class WrittenShards:
    """What :func:`write_shards` wrote: the split's index entry, where, and how long it took."""

    url: str
    split: str
    index: SplitIndex
    seconds: float


class _EncodedSamples(torch.utils.data.Dataset[Encoded]):
    """Sample ``i`` of a data set, encoded into member bytes (so that loader workers encode in parallel)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        field = getattr(dataset, "fields", {}).get("image") if isinstance(dataset, FileDataset) else None
        self.image_files = type(field) is ImageFile  # a subclass may decode differently: store pixels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Encoded:
        sample = self.dataset[index]
        members: list[tuple[str, str, bytes]] = []
        specs: dict[str, KeySpec] = {}
        for key in sorted(sample):
            check_key(key)
            value = sample[key]
            specs[key] = KeySpec.of(value)
            stored = self._source_image(index, value) if key == "image" else None
            extension, data = stored if stored is not None else encode_value(value)
            members.append((key, extension, data))
        return index, members, specs

    def _source_image(self, index: int, value: Any) -> tuple[str, bytes] | None:
        if not (self.image_files and isinstance(value, Tensor)):
            return None
        return source_image(self.dataset.records[index].files["image"], value)


def _unbatched(item: Any) -> Any:
    """The loader's collate function: samples are written one by one."""
    return item


class _ShardFile:
    """One tar shard being written; records each sample's offset."""

    def __init__(self, fs: Any, root: str, name: str, first: int) -> None:
        self.fs, self.name, self.first = fs, name, first
        self.path = f"{root}/{name}"
        # A local shard is written under a temporary name and renamed when complete.
        self.local = _is_local(fs)
        self.target = f"{self.path}.tmp" if self.local else self.path
        self.handle = fs.open(self.target, "wb")
        self.tar = tarfile.open(fileobj=self.handle, mode="w", format=tarfile.USTAR_FORMAT)
        self.offsets: list[int] = []

    @property
    def size(self) -> int:
        return int(self.tar.offset)

    def add(self, index: int, members: list[tuple[str, str, bytes]]) -> None:
        self.offsets.append(self.size)
        key = sample_key(index)
        for name, extension, data in members:
            self.tar.addfile(member_info(f"{key}.{name}.{extension}", len(data)), io.BytesIO(data))

    def close(self) -> ShardEntry:
        end = self.size
        self.tar.close()  # the end-of-archive blocks, padded to tar's record size
        total = int(self.handle.tell())
        self.handle.close()
        if self.local:
            self.fs.mv(self.target, self.path)
        return ShardEntry(self.name, len(self.offsets), total, self.first, (*self.offsets, end))


def _tar_size(members: list[tuple[str, str, bytes]]) -> int:
    blocks = sum(1 + -(-len(data) // tarfile.BLOCKSIZE) for _, _, data in members)
    return blocks * tarfile.BLOCKSIZE


def write_shards(
    dataset: Any, out: str, *, split: str = "train", shard_size: str | int = "1GB",
    source: Mapping[str, Any] | None = None, overwrite: bool = False, workers: int = 0,
    storage_options: dict[str, Any] | None = None, report: Callable[[str], None] | None = None,
) -> WrittenShards:
    """Write every sample of a map-style ``dataset`` into ``out/<split>-000000.tar ...`` and ``out/index.json``.

    A new shard is started when the next sample would take the current one past
    ``shard_size`` (``"1GB"``, ``"64MiB"``, bytes). ``source`` (the data set's name and
    parameters) is recorded in the index. A split that ``out`` already holds is refused
    unless ``overwrite``. ``workers`` data-loader processes decode and encode samples in
    parallel; ``report`` receives one line per written shard.
    """
    start = time.perf_counter()
    limit = parse_size(shard_size)
    if not isinstance(dataset, Sized) or len(dataset) == 0:
        raise PixcoreError(f"there is nothing to write: the data set {dataset!r} has no samples")
    fs, root = open_filesystem(out, storage_options)
    fs.makedirs(root, exist_ok=True)
    document = _claim_split(fs, root, out, split, overwrite)
    shards, keys = _write_samples(fs, root, split, _encoded(dataset, workers), limit, report or (lambda line: None))
    from pixcore import __version__

    index = SplitIndex(
        shards=shards, keys=keys, source=dict(source or {}),
        class_names=tuple(getattr(dataset, "class_names", ()) or ()),
        ignore_index=int(getattr(dataset, "ignore_index", 255)), pixcore_version=__version__,
    )
    document["splits"][split] = json.loads(json.dumps(index.to_json(), default=str))
    _write_index(fs, root, document)
    return WrittenShards(out, split, index, time.perf_counter() - start)


def _encoded(dataset: Any, workers: int) -> Iterator[Encoded]:
    encoded = _EncodedSamples(dataset)
    if workers <= 0:
        return (encoded[i] for i in range(len(encoded)))
    loader = torch.utils.data.DataLoader(encoded, batch_size=None, num_workers=workers, collate_fn=_unbatched)
    return iter(loader)


def _write_samples(
    fs: Any, root: str, split: str, samples: Iterator[Encoded], limit: int, report: Callable[[str], None]
) -> tuple[list[ShardEntry], dict[str, KeySpec]]:
    shards: list[ShardEntry] = []
    keys: dict[str, KeySpec] = {}
    current: _ShardFile | None = None
    for index, members, specs in samples:
        _merge_specs(keys, specs, index)
        if current is not None and current.offsets and current.size + _tar_size(members) + _END_OF_ARCHIVE > limit:
            shards.append(_finish(current, report))
            current = None
        if current is None:
            current = _ShardFile(fs, root, f"{split}-{len(shards):06d}.tar", index)
        current.add(index, members)
    if current is not None:
        shards.append(_finish(current, report))
    return shards, keys


def _finish(shard: _ShardFile, report: Callable[[str], None]) -> ShardEntry:
    entry = shard.close()
    report(f"wrote {shard.path} ({entry.samples} samples, {entry.bytes / 1e6:.1f} MB)")
    return entry


def _merge_specs(keys: dict[str, KeySpec], specs: Mapping[str, KeySpec], index: int) -> None:
    """Every sample must store a key as the same kind and dtype (a sample may lack a key)."""
    for key, spec in specs.items():
        known = keys.setdefault(key, spec)
        if known != spec:
            raise PixcoreError(
                f"sample {index}: key {key!r} is a {spec.kind} of dtype {spec.dtype or 'JSON'}, but earlier "
                f"samples hold a {known.kind} of dtype {known.dtype or 'JSON'}; a key must hold the same kind "
                "of value in every sample"
            )


def _claim_split(fs: Any, root: str, out: str, split: str, overwrite: bool) -> dict[str, Any]:
    """The index document to extend; an existing ``split`` is refused, or removed with ``overwrite``."""
    index_path = f"{root}/{INDEX_NAME}"
    document = new_index_document()
    if fs.exists(index_path):
        with fs.open(index_path, "rb") as handle:
            document = json.loads(handle.read())
    old = sorted(fs.glob(f"{root}/{split}-*.tar"))
    if split not in document.get("splits", {}) and not old:
        return document
    if not overwrite:
        raise PixcoreError(
            f"{out} already holds split {split!r} ({len(old)} shard file(s)); pass --overwrite to replace it, "
            "or choose another --out or --split"
        )
    document.get("splits", {}).pop(split, None)
    _write_index(fs, root, document)  # the index stops listing the split before its shards go
    for path in old:
        fs.rm(path)
    return document


def _write_index(fs: Any, root: str, document: Mapping[str, Any]) -> None:
    path = f"{root}/{INDEX_NAME}"
    target = f"{path}.tmp" if _is_local(fs) else path  # a local index is replaced atomically
    text = json.dumps(document, indent=1)
    # Lists of numbers (the offsets) on one line each: the index stays readable.
    text = re.sub(r"\[[\d,\s]*\]", lambda m: "[" + ", ".join(re.findall(r"\d+", m.group(0))) + "]", text)
    with fs.open(target, "wb") as handle:
        handle.write((text + "\n").encode())
    if target != path:
        fs.mv(target, path)


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


def dataset_to_shard(
    target: str, split: str, overrides: list[str], manager: Any = None
) -> tuple[Any, dict[str, Any]]:
    """The data set ``pixcore shard TARGET`` writes, and its description for the index.

    ``target`` is a run config (its ``data.train`` or ``data.val``, by ``split``;
    ``overrides`` are ``--set`` config overrides) or a registered data set name
    (``overrides`` are its parameters; a ``split`` parameter it declares defaults to
    ``split``).
    """
    from pathlib import Path

    from pixcore._config import load_config
    from pixcore._errors import ConfigError
    from pixcore.plugin._manager import get_plugin_manager
    from pixcore.plugin._params import declared_parameters

    registry = (manager or get_plugin_manager()).registry("datasets")
    source: dict[str, Any] = {}
    if Path(target).suffix.lower() in (".yaml", ".yml", ".json"):
        if split not in ("train", "val"):
            raise ConfigError(f"--split {split!r}: a config has data.train and data.val; use --split train or val")
        config = load_config(target, overrides)
        entry = config.data.train if split == "train" else config.data.val
        if entry is None:
            raise ConfigError(f"{target} has no data.val to write; give it one, or use --split train")
        name, params, where = entry.name, dict(entry.params), f"data.{split}.params"
        source.update(config=str(target), entry=f"data.{split}")
    else:
        name, params, where = target, _parameters(overrides), ""
        declared = {p.name for p in declared_parameters(registry.get(name).factory)}
        if "split" in declared and "split" not in params:
            params["split"] = split
    dataset = registry.create(name, params, path=where)
    if not isinstance(dataset, Sized) or isinstance(dataset, torch.utils.data.IterableDataset):
        raise PixcoreError(f"data set {name!r} is a stream, not a map-style data set: it cannot be written into shards")
    arguments = registry.validate(name, params, path=where)
    source.update(name=name, params=json.loads(json.dumps(arguments, default=str)))
    return dataset, source


def _parameters(items: list[str]) -> dict[str, Any]:
    import yaml

    from pixcore._errors import ConfigError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected PARAM=VALUE, e.g. --set root=/data/VOC2012")
        params[key.strip()] = yaml.safe_load(value)
    return params
