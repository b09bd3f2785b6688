"""The ``shards`` data set: samples streamed from tar shards on a local disk or any fsspec URL.

Why the reading loop is written here rather than taken from a library: WebDataset reads
the same tar layout but cannot resume mid-epoch (its maintainers recommend resampling
instead), LitData resumes but only from its own binary chunk format, and torchdata.nodes
has no tar or object-storage reader and is no longer developed. The loop is small
because the index records every sample's byte offset: a stream knows in advance which
samples it reads and in which order (:mod:`pixcore.data._shardplan`), so it can skip the
samples a resumed run has already trained on without reading them, and re-read one
sample after a dropped connection.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field
from torch.utils.data import IterableDataset, get_worker_info

from pixcore._errors import PixcoreError
from pixcore._interfaces import Sample
from pixcore._targets import TargetKind
from pixcore.data._files import DatasetError
from pixcore.data._shardformat import (
    FORMAT,
    INDEX_NAME,
    ShardEntry,
    SplitIndex,
    decode_value,
    sample_key,
    sample_members,
)
from pixcore.data._shardplan import (
    buffer_order,
    consumed_batches,
    even_span,
    resume_reads,
    shard_order,
    span_bounds,
    span_segments,
    stream_rng,
)

__all__ = ["ShardDataset", "open_filesystem", "read_split_index"]

_BACKOFF_SECONDS = 0.2  # first wait before a retry; doubled each time


def open_filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(fsspec file system, path)`` of ``url``: a local folder, ``s3://bucket/prefix``, ``gs://``...

    A protocol whose fsspec implementation is not installed is a :class:`DatasetError`
    that says what to install.
    """
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as error:
        protocol = url.split("://", 1)[0]
        extra = " (pip install 'pixcore[shards]')" if protocol in ("s3", "s3a") else ""
        raise DatasetError(
            f"cannot read {url}: the {protocol}:// file system needs a package that is not installed{extra}: {error}"
        ) from None
    return fs, str(path).rstrip("/")


def read_split_index(fs: Any, root: str, url: str, split: str) -> SplitIndex:
    """The ``index.json`` entry of ``split`` under ``root``; a clear :class:`DatasetError` otherwise."""
    where = f"{url}/{INDEX_NAME}"
    try:
        with fs.open(f"{root}/{INDEX_NAME}", "rb") as handle:
            document = json.loads(handle.read())
    except FileNotFoundError:
        raise DatasetError(
            f"shards at {url}: there is no {INDEX_NAME} ({where}). Write shards with "
            f"`pixcore shard CONFIG_OR_DATASET --out {url}`, which writes the index after the shards"
        ) from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{where} is not valid JSON ({error}); write the shards again") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise DatasetError(f"{where} is not a pixcore shard index (no \"format\": \"{FORMAT}\")")
    splits = document.get("splits", {})
    if split not in splits:
        raise DatasetError(
            f"{where} has no split {split!r}; it has {', '.join(map(repr, sorted(splits))) or 'none'}. "
            f"Set the parameter `split`, or write that split with `pixcore shard ... --split {split}`"
        )
    try:
        return SplitIndex.from_json(splits[split])
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{where}, split {split!r}, is damaged ({error}); write the shards again") from None


@dataclass(frozen=True)
class _Position:
    """Where a stream stands: which samples are left and in which order they are emitted."""

    shards: np.ndarray  # per read position: index of its shard in the split index
    samples: np.ndarray  # per read position: sample number within that shard
    order: np.ndarray  # emission order of read positions
    emitted: int  # emissions already consumed (skipped without decoding)
    reads: list[int]  # read positions still to read, in reading order


class ShardDataset(IterableDataset[Sample]):
    """Samples streamed from shards written by ``pixcore shard``, each exactly once per epoch.

    Every process and data-loader worker streams its own span of the epoch (see
    :mod:`pixcore.data._shardplan`), so together they see every sample once. Outside the
    trainer, call :meth:`configure` with the process's ``rank`` and ``world_size``.

    Args:
        url: The folder holding ``index.json`` and the tar shards: a local path or any
            fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``https://...``).
        split: The split of ``index.json`` to read (``train``, ``val``...).
        shuffle_buffer: Samples held by each stream's shuffle buffer. 0: no shuffling at
            all, the stored order (evaluation); 1: the shard order only; more: the shard
            order and a buffer of that many samples.
        storage_options: Options of the fsspec file system, e.g. ``{endpoint_url:
            http://127.0.0.1:9000}`` for an S3-compatible store. Keep credentials out of
            configs (they are stored in checkpoints): use the environment
            (``AWS_ACCESS_KEY_ID``...).
        retries: How often a failed read (a dropped connection) is retried, from the
            sample it failed in, before the error is raised.

    """

    def __init__(
        self,
        url: str,
        split: str = "train",
        shuffle_buffer: Annotated[int, Field(ge=0)] = 1000,
        storage_options: dict[str, Any] | None = None,
        retries: Annotated[int, Field(ge=0)] = 3,
    ) -> None:
        self.url = str(url).rstrip("/")
        self.split = split
        self.shuffle_buffer = int(shuffle_buffer)
        self.storage_options = dict(storage_options or {})
        self.retries = int(retries)
        fs, self._root = open_filesystem(self.url, self.storage_options)
        self.index = read_split_index(fs, self._root, self.url, split)
        if self.index.samples == 0:
            raise DatasetError(f"{self.url}/{INDEX_NAME}: split {split!r} holds no samples")
        self.target_kinds: dict[str, type[TargetKind]] = self.index.target_kinds()
        self.class_names = tuple(self.index.class_names)
        self.ignore_index = self.index.ignore_index
        self._sizes = [shard.samples for shard in self.index.shards]
        # The run's position: set by the trainer (configure, start_epoch) before each epoch.
        self.seed, self.epoch, self.skip_batches = 0, 0, 0
        self.rank, self.world_size, self.num_workers = 0, 1, 0
        self.batch_size: int | None = None
        self.drop_last = False

    # -- the run's position -------------------------------------------------------------

    def configure(
        self, *, seed: int | None = None, rank: int | None = None, world_size: int | None = None,
        num_workers: int | None = None, batch_size: int | None = None, drop_last: bool | None = None,
    ) -> None:
        """Set what the plan depends on besides the epoch; ``None`` keeps a setting.

        ``batch_size`` with ``drop_last`` cuts every stream to the same number of full
        batches (training); without ``drop_last`` every sample of the split is streamed.
        """
        given = {"seed": seed, "rank": rank, "world_size": world_size, "num_workers": num_workers,
                 "batch_size": batch_size, "drop_last": drop_last}
        previous = {name: getattr(self, name) for name in given}
        for name, value in given.items():
            if value is not None:
                setattr(self, name, value)
        try:
            if not 0 <= self.rank < self.world_size:
                raise PixcoreError(f"rank {self.rank} is not in 0..{self.world_size - 1} (the world size)")
            self._check_even_batches()
        except PixcoreError:
            for name, value in previous.items():  # a refused setting changes nothing
                setattr(self, name, value)
            raise

    def start_epoch(self, epoch: int, skip_batches: int = 0, *, seed: int | None = None,
                    num_workers: int | None = None, batch_size: int | None = None,
                    drop_last: bool | None = None) -> None:
        """Make the next iteration stream ``epoch``, less the first ``skip_batches`` batches of the loader.

        The skipped samples are not read: each worker works out how many of the loader's
        batches were its own (the loader takes them from the workers in turn).
        """
        self.configure(seed=seed, num_workers=num_workers, batch_size=batch_size, drop_last=drop_last)
        self.epoch, self.skip_batches = int(epoch), int(skip_batches)

    @property
    def streams(self) -> int:
        """Processes x data-loader workers: the number of spans an epoch is cut into."""
        return self.world_size * max(1, self.num_workers)

    def _even(self) -> bool:
        return bool(self.drop_last and self.batch_size)

    def _check_even_batches(self) -> None:
        if self._even() and even_span(self.index.samples, self.streams, int(self.batch_size or 1)) == 0:
            raise DatasetError(
                f"{self.url} (split {self.split!r}): {self.index.samples} samples cannot give each of the "
                f"{self.streams} streams ({self.world_size} process(es) x {max(1, self.num_workers)} worker(s)) "
                f"one batch of {self.batch_size}; lower data.batch_size or data.num_workers, or write more samples"
            )

    def __len__(self) -> int:
        """Samples this process streams in an epoch (all its workers together)."""
        workers = max(1, self.num_workers)
        return sum(self._plan_size(self.rank * workers + w, workers) for w in range(workers))

    def layout(self) -> dict[str, Any]:
        """What the order of an epoch depends on besides (seed, epoch): a resumed run must match it."""
        return {
            "url": self.url, "split": self.split, "samples": self.index.samples,
            "shards": len(self.index.shards), "shuffle_buffer": self.shuffle_buffer,
            "world_size": self.world_size, "num_workers": self.num_workers,
        }

    # -- the plan -------------------------------------------------------------------------

    def _position(self, slot: int, workers: int) -> _Position:
        """The stream of loader worker ``slot``: that of worker ``(slot + next) % workers`` in a resumed epoch."""
        consumed, following = self._consumed_batches(workers)
        worker = (slot + following) % workers
        stream = self.rank * workers + worker
        shuffle = self.shuffle_buffer > 0
        order_of_shards = shard_order(len(self._sizes), self.seed, self.epoch, shuffle)
        start, stop = span_bounds(self.index.samples, self.world_size * workers, stream)
        if self._even():
            stop = start + even_span(self.index.samples, self.world_size * workers, int(self.batch_size or 1))
        segments = span_segments(self._sizes, order_of_shards, start, stop)
        shards = np.concatenate([np.full(len(s), s.shard) for s in segments] or [np.zeros(0, np.int64)])
        samples = np.concatenate([np.arange(s.start, s.stop) for s in segments] or [np.zeros(0, np.int64)])
        buffer = self.shuffle_buffer if shuffle else 0
        order = buffer_order(len(shards), buffer, stream_rng(self.seed, self.epoch, self.rank, worker))
        emitted = min(len(order), consumed[worker] * int(self.batch_size or 1))
        return _Position(shards, samples, order, emitted, resume_reads(order, buffer, emitted))

    def _consumed_batches(self, workers: int) -> tuple[list[int], int]:
        """Each worker's batches among the ``skip_batches`` first, and the worker whose turn is next."""
        if not self.skip_batches:
            return [0] * workers, 0
        batch = int(self.batch_size or 1)
        sizes = [self._plan_size(self.rank * workers + w, workers) for w in range(workers)]
        batches = [n // batch if self.drop_last else math.ceil(n / batch) for n in sizes]
        return consumed_batches(batches, self.skip_batches)

    def _plan_size(self, stream: int, workers: int) -> int:
        streams = self.world_size * workers
        if self._even():
            return even_span(self.index.samples, streams, int(self.batch_size or 1))
        start, stop = span_bounds(self.index.samples, streams, stream)
        return stop - start

    # -- streaming --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Sample]:
        for _, sample in self.indexed():
            yield sample

    def indexed(self) -> Iterator[tuple[int, Sample]]:
        """``(index in the source data set, sample)`` of this process's and worker's stream."""
        info = get_worker_info()
        slot, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        position = self._position(slot, workers)
        reader = _ShardReader(self)
        raw = reader.read((int(position.shards[p]), int(position.samples[p]), p) for p in position.reads)
        held: dict[int, tuple[int, int, bytes]] = {}
        try:
            for p in position.order[position.emitted:]:
                p = int(p)
                while p not in held:
                    got, shard, number, data = next(raw)
                    held[got] = (shard, number, data)
                shard, number, data = held.pop(p)
                entry = self.index.shards[shard]
                yield entry.first + number, self._decode(entry, number, data)
        finally:
            reader.close()

    def _decode(self, entry: ShardEntry, number: int, data: bytes) -> Sample:
        key = sample_key(entry.first + number)
        where = f"{self.url}/{entry.name}"
        sample: dict[str, Any] = {}
        try:
            for name, payload in sample_members(data):
                stem, _, rest = name.partition(".")
                field_name, _, extension = rest.partition(".")
                if stem != key or field_name not in self.index.keys:
                    raise DatasetError(
                        f"{where}: sample {key}: found member {name!r} where the index expects sample {key}; "
                        f"the shard does not match {self.url}/{INDEX_NAME}: write the shards and the index again"
                    )
                try:
                    sample[field_name] = decode_value(extension, payload, self.index.keys[field_name])
                except Exception as error:
                    raise DatasetError(
                        f"{where}: sample {key}: member {name} cannot be decoded ({type(error).__name__}: {error}); "
                        "the shard is damaged: write it again"
                    ) from None
        except DatasetError:
            raise
        except Exception as error:  # tarfile.ReadError and friends: damaged headers
            raise DatasetError(
                f"{where}: sample {key}: the tar data is damaged ({type(error).__name__}: {error}); "
                "write the shard again"
            ) from None
        if not sample:
            raise DatasetError(f"{where}: sample {key}: holds no member; write the shard again")
        return sample

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(url={self.url!r}, split={self.split!r}, "
                f"{self.index.samples} samples in {len(self.index.shards)} shards)")


class _ShardReader:
    """Reads samples' bytes by (shard, sample), one open file per shard, retrying failed reads.

    Consecutive samples of one shard are read through the same file object, so fsspec's
    read-ahead turns them into a few large requests. A read that fails (a dropped
    connection, a timeout) is retried from the start of its sample on a reopened file,
    ``retries`` times with growing waits.
    """

    def __init__(self, dataset: ShardDataset) -> None:
        self.dataset = dataset
        self.fs, self.root = open_filesystem(dataset.url, dataset.storage_options)
        self.current: int | None = None
        self.handle: Any = None

    def read(self, wanted: Iterator[tuple[int, int, int]]) -> Iterator[tuple[int, int, int, bytes]]:
        for shard, number, position in wanted:
            yield position, shard, number, self._sample_bytes(shard, number)

    def close(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            except Exception:  # a broken connection may fail to close; nothing to keep
                pass
        self.handle, self.current = None, None

    def _open(self, shard: int) -> Any:
        if self.current != shard or self.handle is None:
            self.close()
            self.handle = open_shard(self.fs, f"{self.root}/{self.dataset.index.shards[shard].name}")
            self.current = shard
        return self.handle

    def _sample_bytes(self, shard: int, number: int) -> bytes:
        entry = self.dataset.index.shards[shard]
        start, stop = entry.offsets[number], entry.offsets[number + 1]
        where, key = f"{self.dataset.url}/{entry.name}", sample_key(entry.first + number)
        error: Exception | None = None
        for attempt in range(self.dataset.retries + 1):
            if attempt:
                self.close()
                time.sleep(_BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                handle = self._open(shard)
                handle.seek(start)
                data = handle.read(stop - start)
            except FileNotFoundError:
                raise DatasetError(
                    f"{where}: the shard is missing (sample {key} is in it, says {self.dataset.url}/{INDEX_NAME}); "
                    "copy it back or write the shards again"
                ) from None
            except PermissionError as denied:
                raise DatasetError(f"{where}: sample {key}: access denied ({denied}); check the credentials") from None
            except Exception as failure:  # a dropped connection, a timeout, a server error: retry
                error = failure
                continue
            if len(data) == stop - start:
                return bytes(data)
            size = self._size(shard)
            if 0 <= size < stop:
                raise DatasetError(
                    f"{where}: sample {key}: the shard is truncated ({size} bytes; the sample "
                    f"ends at byte {stop}, the index says the shard has {entry.bytes}); write it again"
                )
            error = OSError(f"read {len(data)} of {stop - start} bytes")
        raise DatasetError(
            f"{where}: sample {key}: reading failed {self.dataset.retries + 1} times "
            f"({type(error).__name__}: {error}); check the connection, or raise the parameter `retries`"
        )

    def _size(self, shard: int) -> int:
        try:
            return int(self.fs.size(f"{self.root}/{self.dataset.index.shards[shard].name}"))
        except Exception:
            return -1


def open_shard(fs: Any, path: str) -> Any:
    """Open one shard for reading (a module function, so that tests can wrap what it returns)."""
    return fs.open(path, "rb")

