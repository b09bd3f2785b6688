"""Training-style loading from shards (local disk, a local S3 server) against the folder reader.

Usage::

    pip install 'pixcore[shards]' 'moto[server]'     # moto: the local S3 server
    nice python benchmarks/bench_shards.py [--samples 512] [--size 128] [--rounds 5]

The same data in every case: ``--samples`` rendered synthetic rooms written once as
files (PNG image, PNG class mask, ``.npy`` depth and normals, PNG validity mask), read
by the ``folder`` data set, and the same folder written into shards of about 8 MB by
``pixcore.data.write_shards`` (images keep their PNG bytes). Each case loads one epoch
the way the trainer does (``pixcore.train.make_loaders``): 2 data-loader workers, the
demo's augmentations (random resized crop, flip, colour jitter; seeded per sample),
``pixcore.data.collate`` into batches of 16, full batches only:

* ``folder``: the map-style reader, a ``DistributedSampler`` permutation per epoch;
* ``shards, local disk``: the ``shards`` data set on the local folder, shuffle buffer 256;
* ``shards, S3 (moto)``: the same shards uploaded to moto's S3 server on 127.0.0.1 and
  read through s3fs.

Timing: every round loads one epoch of every case, in turn (worker start-up included,
as in training, where workers start every epoch); the table gives the median over
rounds of images per second, and the ratio to the folder reader.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import DataLoader

try:
    import pixcore  # noqa: F401
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from _common import cpu_name  # noqa: E402  (benchmarks/, the script's own folder)
from pixcore.augment import ColorJitter, Compose, HorizontalFlip, RandomResizedCrop
from pixcore.data import FolderDataset, ShardDataset, collate, render_scene, write_shards
from pixcore.train._data import AugmentedDataset, seed_epoch, stream_loader, training_sampler

BATCH, WORKERS, SEED = 16, 2, 0


def write_folder(root: Path, samples: int, size: int) -> None:
    """Rendered rooms as files, in the layouts the folder reader takes."""
    for sub in ("images", "semseg", "depth", "normals", "valid"):
        (root / sub).mkdir(parents=True)
    for i in range(samples):
        scene = render_scene(0, i, size, size)
        name = f"{i:06d}"
        PILImage.fromarray(scene.image).save(root / "images" / f"{name}.png")
        PILImage.fromarray(scene.semseg.astype(np.uint8)).save(root / "semseg" / f"{name}.png")
        np.save(root / "depth" / f"{name}.npy", scene.depth)
        np.save(root / "normals" / f"{name}.npy", scene.normals)
        PILImage.fromarray(scene.valid).save(root / "valid" / f"{name}.png")


def folder_dataset(root: Path) -> FolderDataset:
    return FolderDataset(root, image="images/*.png", validate="off", targets={  # type: ignore[arg-type]
        "semseg": {"pattern": "semseg/*.png", "kind": "class_mask", "num_classes": 7},
        "depth": {"pattern": "depth/*.npy", "kind": "scalar", "invalid_value": None},
        "normals": {"pattern": "normals/*.npy", "kind": "unit_vector"},
        "valid": {"pattern": "valid/*.png", "kind": "validity"},
    })


def augmentation(size: int) -> Compose:
    return Compose([
        RandomResizedCrop(size=size, scale=(0.7, 1.0), ratio=(0.85, 1.18)),
        HorizontalFlip(),
        ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
    ])


def folder_loader(root: Path, size: int) -> DataLoader[Any]:
    augmented = AugmentedDataset(folder_dataset(root), augmentation(size), SEED)
    return DataLoader(augmented, batch_size=BATCH, sampler=training_sampler(augmented, SEED, 0, 1), drop_last=True,
                      collate_fn=collate, num_workers=WORKERS, generator=torch.Generator().manual_seed(SEED))


def shard_loader(url: str, size: int, storage_options: dict[str, Any] | None = None) -> DataLoader[Any]:
    stream = ShardDataset(url, shuffle_buffer=256, storage_options=storage_options)
    return stream_loader(stream, augmentation(size), seed=SEED, rank=0, world_size=1, batch_size=BATCH,
                         num_workers=WORKERS, pin_memory=False, collate_fn=collate)


def epoch_rate(loader: DataLoader[Any], epoch: int) -> float:
    """Images per second over one epoch of ``loader`` (workers started inside the timing)."""
    seed_epoch(loader, SEED, epoch)
    start, images = time.perf_counter(), 0
    for batch in loader:
        images += int(batch["image"].shape[0])
    return images / (time.perf_counter() - start)


def start_s3(shards: Path) -> tuple[Any, str, dict[str, Any]]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ[name] = value
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="bench")
    for path in sorted(shards.iterdir()):
        client.upload_file(str(path), "bench", f"shards/{path.name}")
    return server, "s3://bench/shards", {"endpoint_url": endpoint}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-s3", action="store_true", help="leave out the S3 case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pixcore-bench-shards-") as tmp:
        root, shards = Path(tmp) / "folder", Path(tmp) / "shards"
        write_folder(root, args.samples, args.size)
        written = write_shards(folder_dataset(root), str(shards), shard_size="8MB", source={"name": "folder"})
        cases: dict[str, Callable[[], DataLoader[Any]]] = {
            "folder": lambda: folder_loader(root, args.size),
            "shards, local disk": lambda: shard_loader(str(shards), args.size),
        }
        server = None
        if not args.no_s3:
            server, url, options = start_s3(shards)
            cases["shards, S3 (moto)"] = lambda: shard_loader(url, args.size, options)
        loaders = {name: make() for name, make in cases.items()}
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for round_ in range(args.rounds):
            for name, loader in loaders.items():
                rates[name].append(epoch_rate(loader, round_))
        if server is not None:
            server.stop()
    load_after = os.getloadavg()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    import fsspec
    import PIL

    record = {
        "command": " ".join(sys.argv),
        "cpu": cpu_name(), "cores": os.cpu_count(),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "pillow": PIL.__version__, "fsspec": fsspec.__version__,
                     "s3fs": _version("s3fs"), "moto": _version("moto")},
        "samples": args.samples, "size": args.size, "rounds": args.rounds, "batch": BATCH, "workers": WORKERS,
        "shards": len(written.index.shards),
        "images_per_second": {name: round(value, 1) for name, value in medians.items()},
        "ratio_to_folder": {name: round(value / medians["folder"], 3) for name, value in medians.items()},
        "all_rounds": {name: [round(v, 1) for v in values] for name, values in rates.items()},
    }
    print(f"| case | images/s (median of {args.rounds}) | vs folder |")
    print("| --- | --- | --- |")
    for name, value in medians.items():
        print(f"| {name} | {value:.0f} | {value / medians['folder']:.2f}x |")
    print(json.dumps(record, indent=1))
    return 0


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
