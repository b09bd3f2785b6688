"""Streaming shards from S3 for real: moto's S3 server on 127.0.0.1, read through s3fs.

The server, its bucket and credentials come from ``conftest.py`` (``s3_server``); shards
are written locally and uploaded with boto3, independently of pixcore.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pixcore
import pytest
import torch
from pixcore.data import DatasetError, ShardDataset, SyntheticScenes, write_shards
from pixcore.data import _shards as shards_module
from torch import Tensor
from torch.utils.data import DataLoader

pytest.importorskip("s3fs")


def _same(expected: pixcore.Sample, actual: pixcore.Sample) -> bool:
    return expected.keys() == actual.keys() and all(
        type(actual[k]) is type(v) and torch.equal(actual[k].as_subclass(Tensor), v.as_subclass(Tensor))
        for k, v in expected.items()
    )


@pytest.fixture(autouse=True)
def _fresh_s3fs() -> None:
    """s3fs caches file systems by their arguments: an endpoint set by the environment would leak."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticScenes, Path]:
    source = SyntheticScenes(length=9, height=12, width=14, seed=5)
    out = tmp_path_factory.mktemp("synthetic")
    write_shards(source, str(out), shard_size="30kB", source={"name": "synthetic"})
    return source, out


def test_streaming_from_s3_gives_every_sample_bitwise(s3_server: Any, synthetic: tuple[Any, Path]) -> None:
    source, local = synthetic
    url = s3_server.upload(local, "every")
    dataset = ShardDataset(url, shuffle_buffer=0, storage_options={"endpoint_url": s3_server.endpoint})
    assert len(dataset.index.shards) > 1
    samples = dict(dataset.indexed())
    assert sorted(samples) == list(range(9))
    assert all(_same(source[i], samples[i]) for i in range(9))

    # Two workers, each with its own s3fs connection: still every sample once.
    dataset = ShardDataset(url, shuffle_buffer=3, storage_options={"endpoint_url": s3_server.endpoint})
    dataset.configure(num_workers=2)
    images = [sample["image"] for sample in DataLoader(dataset, batch_size=None, num_workers=2)]
    matches = collections.Counter(i for image in images for i in range(9) if torch.equal(image, source[i]["image"]))
    assert matches == collections.Counter(range(9))


def test_the_endpoint_can_come_from_the_environment(
    s3_server: Any, synthetic: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = s3_server.upload(synthetic[1], "env")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)  # read by botocore, under s3fs
    assert len(ShardDataset(url)) == 9


def test_writing_straight_to_s3_gives_the_bytes_written_locally(s3_server: Any, synthetic: tuple[Any, Path]) -> None:
    source, local = synthetic
    url = "s3://pixcore-test/written"
    write_shards(source, url, shard_size="30kB", source={"name": "synthetic"},
                 storage_options={"endpoint_url": s3_server.endpoint})
    for path in sorted(local.iterdir()):
        body = s3_server.client.get_object(Bucket="pixcore-test", Key=f"written/{path.name}")["Body"].read()
        assert body == path.read_bytes(), path.name


@pytest.mark.slow  # s3fs waits between its own retries: about 2 s
@pytest.mark.parametrize("drops", [1, 5], ids=["s3fs retries", "pixcore retries"])
def test_a_connection_dropped_mid_shard_is_retried(
    s3_server: Any, synthetic: tuple[Any, Path], dropping_proxy: Any, monkeypatch: pytest.MonkeyPatch, drops: int
) -> None:
    # s3fs retries an incomplete read 5 times itself; after that the shards reader reopens
    # the shard at the sample that failed.
    source, local = synthetic
    url = s3_server.upload(local, "dropped")
    proxy = dropping_proxy(s3_server.endpoint, target=b"/dropped/train-000001.tar", after=3000, times=drops)
    opened: list[str] = []
    real_open = shards_module.open_shard
    monkeypatch.setattr(shards_module, "open_shard", lambda fs, path: opened.append(path) or real_open(fs, path))
    monkeypatch.setattr(shards_module, "_BACKOFF_SECONDS", 0.0)
    dataset = ShardDataset(url, shuffle_buffer=0, storage_options={"endpoint_url": proxy.endpoint})
    indices = [i for i, sample in dataset.indexed() if _same(source[i], sample)]
    assert proxy.dropped == drops, "the proxy cut responses of train-000001.tar"
    assert indices == list(range(9)), "every sample once, in order, bitwise"
    assert sum(path.endswith("train-000001.tar") for path in opened) == (1 if drops < 5 else 2)


def test_missing_and_truncated_shards_on_s3_name_the_url_and_sample(
    s3_server: Any, synthetic: tuple[Any, Path]
) -> None:
    url = s3_server.upload(synthetic[1], "damaged")
    options = {"endpoint_url": s3_server.endpoint}
    dataset = ShardDataset(url, shuffle_buffer=0, storage_options=options)
    first, second = dataset.index.shards[0], dataset.index.shards[1]
    s3_server.client.delete_object(Bucket="pixcore-test", Key=f"damaged/{second.name}")
    with pytest.raises(DatasetError, match=rf"{url}/{second.name}: the shard is missing \(sample {second.first:09d}"):
        list(dataset)

    body = (synthetic[1] / first.name).read_bytes()[: first.offsets[1] + 100]  # sample 1 is cut
    s3_server.client.put_object(Bucket="pixcore-test", Key=f"damaged/{first.name}", Body=body)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # forget the listing cached before the upload
    truncated = rf"{url}/{first.name}: sample {first.first + 1:09d}: the shard is truncated"
    with pytest.raises(DatasetError, match=truncated):
        list(ShardDataset(url, shuffle_buffer=0, storage_options=options))


def test_a_missing_index_on_s3_is_explained(s3_server: Any) -> None:
    with pytest.raises(DatasetError, match=r"s3://pixcore-test/nothing: there is no index\.json"):
        ShardDataset("s3://pixcore-test/nothing", storage_options={"endpoint_url": s3_server.endpoint})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["synthetic", "voc"])
def test_training_streams_from_s3_with_two_workers(
    kind: str, s3_server: Any, voc_root: Path, small_run: Any, tmp_path: Path
) -> None:
    for plugin in ("pixcore_seg", "pixcore_depth", "pixcore_normals", "pixcore_timm"):
        pytest.importorskip(plugin)
    from pixcore import RunConfig
    from pixcore.train import train

    local = tmp_path / "shards"
    for split in ("train", "val"):
        if kind == "synthetic":
            dataset: Any = SyntheticScenes(split=split, length=6 if split == "train" else 2, height=32, width=32)
        else:
            dataset = pixcore.registry("datasets").create("voc", {"root": str(voc_root), "split": split})
        write_shards(dataset, str(local), split=split, shard_size="20kB", source={"name": kind})
    url = s3_server.upload(local, f"training-{kind}")
    options = {"endpoint_url": s3_server.endpoint}
    config = small_run(kind, {"name": "shards", "params": {"url": url, "storage_options": options}},
                       {"name": "shards", "params": {"url": url, "split": "val", "storage_options": options}})
    config["data"]["num_workers"] = 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer, result = train(RunConfig.model_validate(config))
    finally:
        torch.set_num_threads(threads)
    assert result.steps == 2 and set(result.metrics) == set(config["model"]["tasks"])
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    assert len(trainer.train_loader) == 2  # 2 workers, each 1 full batch per epoch
