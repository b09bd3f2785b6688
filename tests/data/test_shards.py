"""Shards: writing any data set into tars plus index.json, and the ``shards`` data set streaming them.

Expected values come from the source data sets (each sample is compared with the one it
was written from) or are written out by hand; the tar files are also read with the
standard library, ``tar`` and WebDataset, independently of pixcore's reader.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from PIL import Image as PILImage
from pixcore.data import DatasetError, ShardDataset, SyntheticScenes, write_shards
from pixcore.data import _shards as shards_module
from pixcore.data._shardformat import parse_size
from pixcore.data._shardplan import buffer_order, consumed_batches, resume_reads
from pixcore.targets import ClassMask, Image, Intrinsics, ScalarField, TargetKind, ValidityMask
from torch import Tensor
from torch.utils.data import DataLoader


class Numbered(pixcore.Dataset):
    """Sample ``i`` says its index in its image: pixel (0, 0) holds ``(i % 256, i // 256, 7)``."""

    target_kinds = {"image": Image, "semseg": ClassMask, "depth": ScalarField, "valid": ValidityMask}

    def __init__(self, length: int, size: tuple[int, int] = (4, 5)) -> None:
        self.length, self.size = length, size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> pixcore.Sample:
        h, w = self.size
        image = torch.full((3, h, w), 9, dtype=torch.uint8)
        image[:, 0, 0] = torch.tensor([index % 256, index // 256, 7], dtype=torch.uint8)
        return {
            "image": Image(image),
            "semseg": ClassMask(torch.full((h, w), index % 5, dtype=torch.int64)),
            "depth": ScalarField(torch.full((1, h, w), 0.25 * index, dtype=torch.float32)),
            "valid": ValidityMask(torch.arange(h * w).reshape(h, w) % 2 == 0),
        }


def index_of(sample: pixcore.Sample) -> int:
    pixel = sample["image"][..., :, 0, 0]
    return int(pixel[0]) + 256 * int(pixel[1])


def write(dataset: Any, out: Path, shard_size: str | int = "1GB", split: str = "train") -> Path:
    write_shards(dataset, str(out), split=split, shard_size=shard_size, source={"name": "test"})
    return out


def assert_same_sample(expected: pixcore.Sample, actual: pixcore.Sample) -> None:
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        got = actual[key]
        assert type(got) is type(value), (key, type(got), type(value))
        assert got.dtype == value.dtype and got.shape == value.shape, key
        assert torch.equal(got.as_subclass(Tensor), value.as_subclass(Tensor)), key


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------


def test_every_synthetic_target_comes_back_bitwise(tmp_path: Path) -> None:
    source = SyntheticScenes(length=5, height=12, width=16, seed=3)
    write(source, tmp_path / "s", shard_size="25kB")
    streamed = ShardDataset(str(tmp_path / "s"), shuffle_buffer=0)
    samples = dict(streamed.indexed())
    assert sorted(samples) == list(range(5))
    for i in range(5):
        assert_same_sample(source[i], samples[i])
    assert set(samples[0]) == {"image", "semseg", "depth", "normals", "valid", "intrinsics"}
    assert streamed.target_kinds == source.target_kinds
    assert streamed.class_names == source.class_names


def test_shards_are_plain_tars_in_the_webdataset_layout(tmp_path: Path) -> None:
    source = SyntheticScenes(length=3, height=6, width=7)
    out = write(source, tmp_path / "s")
    expected = [f"00000000{i}.{key}.{ext}" for i in range(3) for key, ext in (
        ("depth", "npy"), ("image", "png"), ("intrinsics", "json"), ("normals", "npy"), ("semseg", "png"),
        ("valid", "png"))]
    with tarfile.open(out / "train-000000.tar") as archive:
        assert archive.getnames() == expected
        depth = np.load(io.BytesIO(archive.extractfile("000000001.depth.npy").read()))  # type: ignore[union-attr]
        semseg = np.asarray(PILImage.open(io.BytesIO(archive.extractfile("000000001.semseg.png").read())))  # type: ignore[union-attr]
    np.testing.assert_array_equal(depth, source[1]["depth"].numpy())
    np.testing.assert_array_equal(semseg, source[1]["semseg"].numpy())
    if shutil.which("tar"):
        listed = subprocess.run(["tar", "tf", str(out / "train-000000.tar")], capture_output=True, text=True,
                                check=True).stdout.split()
        assert listed == expected

    wds = pytest.importorskip("webdataset")
    samples = list(wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == ["000000000", "000000001", "000000002"]
    assert set(samples[2]) >= {"image.png", "semseg.png", "depth.npy", "normals.npy", "valid.png", "intrinsics.json"}
    normals = np.load(io.BytesIO(samples[2]["normals.npy"]))
    np.testing.assert_array_equal(normals, source[2]["normals"].numpy())
    intrinsics = np.array(json.loads(samples[2]["intrinsics.json"]), dtype=np.float32)
    np.testing.assert_array_equal(intrinsics, source[2]["intrinsics"].numpy())


def test_the_index_describes_shards_keys_and_source(tmp_path: Path) -> None:
    out = write(Numbered(7), tmp_path / "s", shard_size=4000)
    document = json.loads((out / "index.json").read_text())
    entry = document["splits"]["train"]
    assert document["format"] == "pixcore-shards"
    assert entry["samples"] == 7 and sum(s["samples"] for s in entry["shards"]) == 7
    assert len(entry["shards"]) > 1, "4000 bytes hold a few samples each"
    for shard in entry["shards"]:
        assert (out / shard["name"]).stat().st_size == shard["bytes"]
        with tarfile.open(out / shard["name"]) as archive:  # each offset is a sample's first header
            starts = [m.offset for m in archive.getmembers() if m.name.endswith(".depth.npy")]
        assert starts == shard["offsets"][:-1]
    assert entry["keys"]["semseg"] == {"kind": "class_mask", "class": "pixcore._targets:ClassMask", "dtype": "int64"}
    assert entry["source"] == {"name": "test"}
    assert entry["pixcore_version"] == pixcore.__version__


def test_unusual_values_are_stored_losslessly(tmp_path: Path) -> None:
    class Edge(TargetKind):  # a third-party kind
        kind = "edge_map"

    class Unusual(pixcore.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> dict[str, Any]:
            return {
                "image": Image(torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(index)) - 0.5),  # .npy
                "wide": ClassMask(torch.tensor([[0, 300], [65535, 1]])),  # 16-bit PNG
                "huge": ClassMask(torch.tensor([[-1, 70000]], dtype=torch.int32)),  # .npy
                "edges": Edge(torch.tensor([[0.5, 1.5]])),
                "plain": torch.arange(3, dtype=torch.int16),
                "camera": Intrinsics(torch.tensor([[500.125, 0, 3.5], [0, 499, 2.5], [0, 0, 1]], dtype=torch.float64)),
                "meta": {"name": f"frame{index}", "exposure": 0.1},
            }

    Edge.__module__, Edge.__qualname__ = __name__, "Edge"
    globals()["Edge"] = Edge  # importable as test_shards:Edge, as a plugin's kind would be
    source = Unusual()
    out = write(source, tmp_path / "s")
    with tarfile.open(out / "train-000000.tar") as archive:
        names = archive.getnames()
    assert "000000000.wide.png" in names and "000000000.huge.npy" in names and "000000000.image.npy" in names
    samples = dict(ShardDataset(str(out), shuffle_buffer=0).indexed())
    for i in range(2):
        expected, actual = source[i], samples[i]
        assert actual.pop("meta") == expected.pop("meta")
        assert_same_sample(expected, actual)


def test_jpeg_sources_keep_their_bytes_and_decode_alike(tmp_path: Path) -> None:
    images, labels = tmp_path / "data" / "images", tmp_path / "data" / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        PILImage.fromarray(rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)).save(images / f"{i}.jpg", quality=80)
        PILImage.fromarray(np.full((8, 10), i, np.uint8)).save(labels / f"{i}.png")
    folder = pixcore.registry("datasets").create("folder", {
        "root": str(tmp_path / "data"), "image": "images/*.jpg",
        "targets": {"semseg": {"pattern": "labels/*.png", "kind": "class_mask", "num_classes": 3}},
    })
    out = write(folder, tmp_path / "s")
    with tarfile.open(out / "train-000000.tar") as archive:
        stored = archive.extractfile("000000001.image.jpg").read()  # type: ignore[union-attr]
    assert stored == (images / "1.jpg").read_bytes()
    samples = dict(ShardDataset(str(out), shuffle_buffer=0).indexed())
    for i in range(3):
        assert_same_sample(folder[i], samples[i])

    # A reader that changes the pixels (here a transform) is stored from its pixels, not its files.
    def darker(sample: pixcore.Sample) -> pixcore.Sample:
        return {**sample, "image": Image(sample["image"] // 2)}

    folder.transform = darker
    out = write(folder, tmp_path / "darker")
    with tarfile.open(out / "train-000000.tar") as archive:
        assert "000000001.image.png" in archive.getnames()
    samples = dict(ShardDataset(str(out), shuffle_buffer=0).indexed())
    for i in range(3):
        assert_same_sample(folder[i], samples[i])


def test_writing_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    def digest(folder: Path) -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())]

    assert digest(write(Numbered(5), tmp_path / "a", 3000)) == digest(write(Numbered(5), tmp_path / "b", 3000))


def test_an_existing_split_is_refused_unless_overwritten(tmp_path: Path) -> None:
    out = write(Numbered(4), tmp_path / "s", 3000)
    write(Numbered(2), out, split="val")  # another split goes beside it
    with pytest.raises(pixcore.PixcoreError, match="already holds split 'train'.*--overwrite"):
        write(Numbered(3), out)
    write_shards(Numbered(3), str(out), split="train", overwrite=True)
    assert sorted(p.name for p in out.glob("train-*.tar")) == ["train-000000.tar"]
    assert len(ShardDataset(str(out), split="train")) == 3
    assert len(ShardDataset(str(out), split="val")) == 2


def test_sizes_parse() -> None:
    assert parse_size("1GB") == 10**9 and parse_size("64MiB") == 64 * 2**20 and parse_size("20kB") == 20_000
    assert parse_size(1234) == 1234 and parse_size("1.5MB") == 1_500_000
    with pytest.raises(pixcore.ConfigError, match="not a size"):
        parse_size("big")


# --------------------------------------------------------------------------------------
# Every sample once per epoch, in an order fixed by (seed, epoch)
# --------------------------------------------------------------------------------------


def epoch_indices(dataset: ShardDataset, rank: int, world_size: int, workers: int, **options: Any) -> list[int]:
    dataset.configure(rank=rank, world_size=world_size, num_workers=workers, **options)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [index_of(sample) for sample in loader]


@pytest.mark.slow
@pytest.mark.parametrize("shard_size", [1500, 10**6], ids=["7 shards", "1 shard"])
def test_every_sample_once_per_epoch_for_every_ranks_and_workers(tmp_path: Path, shard_size: int) -> None:
    out = write(Numbered(13), tmp_path / "s", shard_size)
    dataset = ShardDataset(str(out), shuffle_buffer=3)
    dataset.start_epoch(2)
    for world_size in (1, 2):
        for workers in (0, 1, 2):
            seen = [i for rank in range(world_size) for i in epoch_indices(dataset, rank, world_size, workers)]
            assert collections.Counter(seen) == collections.Counter(range(13)), (world_size, workers)
            sizes = []
            for rank in range(world_size):
                dataset.configure(rank=rank, world_size=world_size, num_workers=workers)
                sizes.append(len(dataset))
            assert sum(sizes) == 13


def test_training_streams_are_cut_to_equal_whole_batches(tmp_path: Path) -> None:
    out = write(Numbered(13), tmp_path / "s", 1500)
    dataset = ShardDataset(str(out), shuffle_buffer=4)
    ranks = [epoch_indices(dataset, r, 2, 0, batch_size=2, drop_last=True) for r in range(2)]
    # 13 samples, 2 streams of 6 or 7: each keeps 3 batches of 2, 12 samples in all.
    assert [len(r) for r in ranks] == [6, 6] and len(dataset) == 6
    assert len(set(ranks[0]) | set(ranks[1])) == 12
    with pytest.raises(DatasetError, match="cannot give each of the 4 streams.*one batch of 4"):
        dataset.configure(rank=0, world_size=2, num_workers=2, batch_size=4)
    assert (dataset.num_workers, dataset.batch_size, len(dataset)) == (0, 2, 6), "a refused setting changes nothing"
    with pytest.raises(pixcore.PixcoreError, match="rank 2 is not in 0..1"):
        dataset.configure(rank=2)


def test_the_order_is_a_function_of_seed_and_epoch(tmp_path: Path) -> None:
    out = write(Numbered(40), tmp_path / "s", 2500)

    def order(seed: int, epoch: int) -> list[int]:
        dataset = ShardDataset(str(out), shuffle_buffer=8)
        dataset.configure(seed=seed)
        dataset.start_epoch(epoch)
        return [i for i, _ in dataset.indexed()]

    first = order(1, 0)
    assert sorted(first) == list(range(40))
    assert order(1, 0) == first
    assert order(1, 1) != first and sorted(order(1, 1)) == list(range(40))
    assert order(2, 0) != first
    unshuffled = ShardDataset(str(out), shuffle_buffer=0)
    assert [i for i, _ in unshuffled.indexed()] == list(range(40))

    def shard_order(epoch: int) -> list[int]:  # a buffer of 1: the shards' order only
        dataset = ShardDataset(str(out), shuffle_buffer=1)
        dataset.start_epoch(epoch)
        return [i for i, _ in dataset.indexed()]

    assert len(unshuffled.index.shards) > 4
    assert shard_order(0) != shard_order(1) and sorted(shard_order(1)) == list(range(40))

    one = write(Numbered(40), tmp_path / "one", 10**6)  # one shard: only the buffer shuffles

    def buffered(epoch: int) -> list[int]:
        dataset = ShardDataset(str(one), shuffle_buffer=8)
        dataset.start_epoch(epoch)
        return [i for i, _ in dataset.indexed()]

    assert buffered(0) != buffered(1) and buffered(0) == buffered(0) and buffered(0) != list(range(40))


def test_buffer_order_is_a_bounded_shuffle() -> None:
    rng = np.random.default_rng(0)
    order = buffer_order(200, 10, rng)
    assert sorted(order.tolist()) == list(range(200))
    # Emission k happens after read 10 + k - 1: nothing is emitted before it is read.
    assert all(position <= 9 + k for k, position in enumerate(order.tolist()[:191]))
    assert buffer_order(5, 0, rng).tolist() == [0, 1, 2, 3, 4]


def test_resume_reads_hold_the_buffer_then_the_rest() -> None:
    order = buffer_order(30, 6, np.random.default_rng(4))
    for emitted in range(31):
        reads = resume_reads(order, 6, emitted)
        remaining = order[emitted:].tolist()
        assert sorted(reads) == sorted(remaining), emitted
        # Replaying the emissions from these reads never needs more than the buffer.
        held: set[int] = set()
        pending = iter(reads)
        for position in remaining:
            while position not in held:
                held.add(next(pending))
            held.remove(position)
            assert len(held) <= 6


def test_consumed_batches_follow_the_loaders_turns() -> None:
    # Worker 0 has 2 batches, worker 1 has 4: the loader yields 0,1,0,1,1,1.
    assert consumed_batches([2, 4], 3) == ([2, 1], 1)
    assert consumed_batches([2, 4], 5) == ([2, 3], 0)
    assert consumed_batches([3, 3, 3], 4) == ([2, 1, 1], 1)
    assert consumed_batches([3, 3, 3], 0) == ([0, 0, 0], 0)
    assert consumed_batches([1], 9) == ([1], 0)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_starting_after_k_batches_continues_the_epoch_exactly(tmp_path: Path, workers: int) -> None:
    out = write(Numbered(21), tmp_path / "s", 1800)
    dataset = ShardDataset(str(out), shuffle_buffer=4)

    def batches(skip: int, drop_last: bool) -> list[list[int]]:
        dataset.configure(num_workers=workers, batch_size=3, drop_last=drop_last)
        dataset.start_epoch(1, skip)
        loader = DataLoader(dataset, batch_size=3, drop_last=drop_last, num_workers=workers)
        return [[index_of({"image": image}) for image in batch["image"]] for batch in loader]

    for drop_last in (True, False):  # uneven workers without drop_last: 10 and 11 samples
        whole = batches(0, drop_last)
        for skip in range(len(whole) + 1):
            assert batches(skip, drop_last) == whole[skip:], (drop_last, skip)


def test_skipped_samples_are_not_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = write(Numbered(12), tmp_path / "s", 2000)
    dataset = ShardDataset(str(out), shuffle_buffer=3)
    decoded: list[int] = []
    real = ShardDataset._decode

    def counting(self: ShardDataset, entry: Any, number: int, data: bytes) -> pixcore.Sample:
        decoded.append(entry.first + number)
        return real(self, entry, number, data)

    monkeypatch.setattr(ShardDataset, "_decode", counting)
    dataset.start_epoch(0, skip_batches=2, batch_size=4, drop_last=True)
    assert len(list(dataset)) == 4 and len(decoded) == 4


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_a_missing_index_or_split_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no index\.json.*pixcore shard"):
        ShardDataset(str(tmp_path))
    out = write(Numbered(2), tmp_path / "s")
    with pytest.raises(DatasetError, match="has no split 'val'; it has 'train'"):
        ShardDataset(str(out), split="val")


def test_a_missing_shard_names_its_url_and_a_sample(tmp_path: Path) -> None:
    out = write(Numbered(6), tmp_path / "s", 2500)
    (out / "train-000001.tar").unlink()
    dataset = ShardDataset(str(out), shuffle_buffer=0)
    with pytest.raises(DatasetError, match=rf"{out}/train-000001\.tar: the shard is missing \(sample 00000000\d"):
        list(dataset)


def test_a_truncated_shard_names_its_url_and_the_sample(tmp_path: Path) -> None:
    out = write(Numbered(6), tmp_path / "s", 10**6)
    entry = json.loads((out / "index.json").read_text())["splits"]["train"]["shards"][0]
    path = out / "train-000000.tar"
    path.write_bytes(path.read_bytes()[: entry["offsets"][4] + 700])  # sample 4 is cut
    dataset = ShardDataset(str(out), shuffle_buffer=0)
    seen: list[int] = []
    with pytest.raises(DatasetError, match=rf"{path}: sample 000000004: the shard is truncated"):
        for i, _ in dataset.indexed():
            seen.append(i)
    assert seen == [0, 1, 2, 3]


def test_a_damaged_member_names_the_shard_sample_and_member(tmp_path: Path) -> None:
    out = write(Numbered(4), tmp_path / "s")
    path = out / "train-000000.tar"
    with tarfile.open(path) as archive:
        member = archive.getmember("000000002.depth.npy")
    data = bytearray(path.read_bytes())
    data[member.offset_data: member.offset_data + 6] = b"BROKEN"  # no .npy magic any more
    path.write_bytes(bytes(data))
    damaged = rf"{path}: sample 000000002: member 000000002\.depth\.npy cannot be decoded"
    with pytest.raises(DatasetError, match=damaged):
        list(ShardDataset(str(out), shuffle_buffer=0))


def test_a_failed_read_is_retried_from_its_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = write(Numbered(9), tmp_path / "s", 10**6)
    opened: list[str] = []
    real_open = shards_module.open_shard

    class DropsOnce:
        """A file whose first read after 3 samples fails, as a dropped connection does."""

        dropped = False

        def __init__(self, handle: Any) -> None:
            self.handle, self.reads = handle, 0

        def seek(self, offset: int) -> int:
            return int(self.handle.seek(offset))

        def read(self, size: int) -> bytes:
            self.reads += 1
            if self.reads == 4 and not DropsOnce.dropped:
                DropsOnce.dropped = True
                raise ConnectionResetError("connection reset by peer")
            return bytes(self.handle.read(size))

        def close(self) -> None:
            self.handle.close()

    def open_shard(fs: Any, path: str) -> Any:
        opened.append(path)
        return DropsOnce(real_open(fs, path))

    monkeypatch.setattr(shards_module, "open_shard", open_shard)
    monkeypatch.setattr(shards_module, "_BACKOFF_SECONDS", 0.0)
    dataset = ShardDataset(str(out), shuffle_buffer=0)
    assert [i for i, _ in dataset.indexed()] == list(range(9))
    assert DropsOnce.dropped and len(opened) == 2, "reopened once, at the failed sample"

    DropsOnce.dropped = False
    always = ShardDataset(str(out), shuffle_buffer=0, retries=0)
    with pytest.raises(DatasetError, match=r"sample 000000003: reading failed 1 times \(ConnectionResetError"):
        list(always)
