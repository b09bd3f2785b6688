"""End-to-end loader throughput: pixcore's readers + augmentations + collate vs albumentations.

Usage::

    pip install albumentations opencv-python-headless scikit-image   # the peer and the photos
    python benchmarks/bench_loader.py [--rounds 5] [--images 256] [--workers 2] [--batch 8]

Writes two small data sets to a temporary folder, from scikit-image's real photos
(astronaut, chelsea, coffee, ...) cropped and resized to 512x512 at random:

* ``voc``: Pascal VOC layout, ``JPEGImages/<id>.jpg`` (quality 90) and palette PNG labels
  ``SegmentationClass/<id>.png`` (random blobs of 21 classes, 255 borders);
* ``nyu``: the ``nyu_depth_v2`` layout, ``train/rgb/<name>.jpg``, ``train/depth/<name>.png``
  (16-bit millimetres, 0 = missing) and ``train/normals/<name>.png``.

Then it reads every sample once per epoch through a ``DataLoader`` (``--workers``
processes, ``--batch`` samples per batch, shuffled) with a typical training pipeline:
random resized crop to 512x512 (scale 0.25-1), horizontal flip (p=0.5), colour jitter,
ImageNet normalisation.

* pixcore: the ``voc`` / ``nyu_depth_v2`` readers (``validate="quick"``) with
  ``pixcore.augment`` and ``pixcore.data.collate``;
* peer: a plain ``torch.utils.data.Dataset`` that decodes the same files with OpenCV
  (JPEG, 16-bit PNG) and PIL (palette PNG), albumentations' transforms (depth, normals and
  validity as ``additional_targets`` of kind ``mask``, i.e. nearest neighbour; the flip
  done by hand so that the normals' x component can be negated) and ``default_collate``.

Every round runs one epoch of each (data set, library) in a shuffled order, so that load
from other processes hits both alike; the table gives the median images/s over rounds
and the median of the per-round ratios. Worker start-up is part of every epoch (a new
iterator per epoch, as ``persistent_workers=False``, the default, does).
"""

from __future__ import annotations

import os

# Each worker process single-threaded, as the DataLoader sets torch's threads in workers.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from torch.utils.data import DataLoader, Dataset, default_collate  # noqa: E402

try:
    import pixcore  # noqa: F401
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from _common import cpu_name  # noqa: E402  (benchmarks/, the script's own folder)
from pixcore import augment as pa  # noqa: E402
from pixcore.data import collate  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
SCALE = (0.25, 1.0)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "cat", "retina")


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def _photos() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        image = np.asarray(loader())
        if image.ndim == 3 and image.shape[2] >= 3:
            out.append(np.ascontiguousarray(image[..., :3]))
    return out


def _random_view(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of ``photo`` (at least half its short side), resized to ``size``."""
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = PILImage.fromarray(photo[top : top + side, left : left + side])
    view = np.asarray(crop.resize((size, size), PILImage.Resampling.BILINEAR))
    return view[:, ::-1] if rng.random() < 0.5 else view


def _blobs(rng: np.random.Generator, size: int, classes: int) -> np.ndarray:
    """A label map of random rectangles of random classes, with 255 borders (as VOC's)."""
    labels = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        c = int(rng.integers(1, classes))
        y0, x0 = (int(v) for v in rng.integers(0, size - 32, 2))
        y1, x1 = y0 + int(rng.integers(32, size - y0 + 1)), x0 + int(rng.integers(32, size - x0 + 1))
        labels[y0:y1, x0:x1] = 255
        labels[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3] = c
    return labels


def write_voc(root: Path, photos: list[np.ndarray], count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    base = root / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    palette = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8).reshape(-1).tolist()
    ids = []
    for i in range(count):
        name = f"2007_{i:06d}"
        PILImage.fromarray(_random_view(photos[i % len(photos)], rng, size)).save(
            base / "JPEGImages" / f"{name}.jpg", quality=90
        )
        label = PILImage.fromarray(_blobs(rng, size, 21), mode="P")
        label.putpalette(palette)
        label.save(base / "SegmentationClass" / f"{name}.png")
        ids.append(name)
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    return base


def write_nyu(root: Path, photos: list[np.ndarray], count: int, size: int) -> Path:
    rng = np.random.default_rng(2)
    base = root / "nyu" / "train"
    for folder in ("rgb", "depth", "normals"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / size
    for i in range(count):
        name = f"{i:05d}"
        PILImage.fromarray(_random_view(photos[i % len(photos)], rng, size)).save(
            base / "rgb" / f"{name}.jpg", quality=90
        )
        a, b, c = rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5), rng.uniform(2.0, 5.0)
        depth = c + a * (xs - 0.5) + b * (ys - 0.5)  # a tilted plane, metres
        depth_mm = np.round(depth * 1000).astype(np.uint16)
        depth_mm[_blobs(rng, size, 2) == 255] = 0  # missing measurements
        PILImage.fromarray(depth_mm).save(base / "depth" / f"{name}.png")
        normal = np.array([a, b, -1.0]) / np.linalg.norm([a, b, -1.0])
        normals = np.broadcast_to(np.round((normal + 1) / 2 * 255).astype(np.uint8), (size, size, 3))
        PILImage.fromarray(np.ascontiguousarray(normals)).save(base / "normals" / f"{name}.png")
    return base.parent


# --------------------------------------------------------------------------------------
# The two sides
# --------------------------------------------------------------------------------------


def pixcore_pipeline(size: int) -> pa.Compose:
    return pa.Compose([
        pa.RandomResizedCrop(size, scale=SCALE),
        pa.HorizontalFlip(p=0.5),
        pa.ColorJitter(**JITTER),
        pa.Normalize(MEAN, STD),
    ])


def pixcore_datasets(voc: Path, nyu: Path, size: int) -> dict[str, Dataset[Any]]:
    from pixcore_depth._datasets import NYUDepthV2
    from pixcore_seg._datasets import VOCSegmentation

    return {
        "voc": VOCSegmentation(voc, validate="quick", transform=pixcore_pipeline(size)),
        "nyu": NYUDepthV2(nyu, normals=True, validate="quick", transform=pixcore_pipeline(size)),
    }


class PeerVOC(Dataset[dict[str, Any]]):
    """What one writes by hand: cv2 for the JPEG, PIL for the palette PNG, albumentations."""

    def __init__(self, base: Path, size: int) -> None:
        import albumentations as A
        from albumentations.pytorch import ToTensorV2

        self.ids = (base / "ImageSets/Segmentation/train.txt").read_text().split()
        self.base = base
        self.transform = A.Compose([
            A.RandomResizedCrop(size=(size, size), scale=SCALE, p=1.0),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(**JITTER, p=1.0),
            A.Normalize(mean=MEAN, std=STD),
            ToTensorV2(),
        ])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import cv2

        name = self.ids[i]
        image = cv2.cvtColor(cv2.imread(str(self.base / "JPEGImages" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        mask = np.asarray(PILImage.open(self.base / "SegmentationClass" / f"{name}.png"))
        out = self.transform(image=image, mask=mask)
        return {"image": out["image"], "semseg": out["mask"]}


class PeerNYU(Dataset[dict[str, Any]]):
    """Depth and normals by hand: nearest-neighbour ``additional_targets``, the flip by hand."""

    def __init__(self, root: Path, size: int) -> None:
        import albumentations as A
        from albumentations.pytorch import ToTensorV2

        self.base = root / "train"
        self.names = sorted(p.stem for p in (self.base / "rgb").glob("*.jpg"))
        targets = {"depth": "mask", "normals": "mask", "valid": "mask"}
        self.geometry = A.Compose([A.RandomResizedCrop(size=(size, size), scale=SCALE, p=1.0)],
                                  additional_targets=targets)
        self.photometric = A.Compose([A.ColorJitter(**JITTER, p=1.0), A.Normalize(mean=MEAN, std=STD), ToTensorV2()])

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import cv2

        name = self.names[i]
        image = cv2.cvtColor(cv2.imread(str(self.base / "rgb" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(self.base / "depth" / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32)
        depth *= 0.001
        raw = cv2.cvtColor(cv2.imread(str(self.base / "normals" / f"{name}.png")), cv2.COLOR_BGR2RGB)
        normals = raw.astype(np.float32) * (2.0 / 255.0) - 1.0
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        out = self.geometry(image=image, depth=depth, normals=normals, valid=(depth > 0).astype(np.uint8))
        image, depth, normals, valid = out["image"], out["depth"], out["normals"], out["valid"]
        if np.random.random() < 0.5:  # the flip by hand: mirror and negate x
            image, depth, valid = image[:, ::-1], depth[:, ::-1], valid[:, ::-1]
            normals = normals[:, ::-1] * np.array([-1.0, 1.0, 1.0], np.float32)
        image = self.photometric(image=np.ascontiguousarray(image))["image"]
        return {
            "image": image,
            "depth": torch.from_numpy(np.ascontiguousarray(depth))[None],
            "valid": torch.from_numpy(np.ascontiguousarray(valid)).bool(),
            "normals": torch.from_numpy(np.ascontiguousarray(normals)).permute(2, 0, 1).contiguous(),
        }


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)  # albumentations draws from numpy / random
    try:
        import cv2

        cv2.setNumThreads(0)
    except ImportError:
        pass


def epoch(dataset: Dataset[Any], fn: Any, args: argparse.Namespace) -> float:
    """Images per second for one shuffled epoch, worker start-up included."""
    loader = DataLoader(
        dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers, collate_fn=fn,
        worker_init_fn=_seed_worker,
    )
    start = time.perf_counter()
    count = 0
    for batch in loader:
        count += int(batch["image"].shape[0])
    return count / (time.perf_counter() - start)


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    import albumentations
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        photos = _photos()
        voc = write_voc(Path(tmp), photos, args.images, args.size)
        nyu = write_nyu(Path(tmp), photos, args.images, args.size)
        ours = pixcore_datasets(voc, nyu, args.size)
        jobs: list[tuple[str, str, Dataset[Any], Any]] = [
            ("voc", "pixcore", ours["voc"], collate),
            ("voc", "albumentations", PeerVOC(voc, args.size), default_collate),
            ("nyu", "pixcore", ours["nyu"], collate),
            ("nyu", "albumentations", PeerNYU(nyu, args.size), default_collate),
        ]
        rates: dict[tuple[str, str], list[float]] = {(d, lib): [] for d, lib, _, _ in jobs}
        rng = np.random.default_rng(0)
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for j in rng.permutation(len(jobs)):
                data, lib, dataset, fn = jobs[j]
                rates[(data, lib)].append(epoch(dataset, fn, args))
            loads.append(os.getloadavg()[0])

    print(f"machine : {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores), "
          f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    print(f"python  : {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"albumentations {albumentations.__version__}, opencv {cv2.__version__}")
    print(f"method  : {args.images} images of {args.size}x{args.size} per epoch, {args.workers} workers, "
          f"batch {args.batch}, median over {args.rounds} interleaved rounds\n")
    print("| data | pixcore (images/s) | albumentations (images/s) | pixcore / albumentations "
          "(median of per-round ratios, range) |")
    print("|---|---|---|---|")
    for data in ("voc", "nyu"):
        ours_r, peer_r = rates[(data, "pixcore")], rates[(data, "albumentations")]
        ratios = [a / b for a, b in zip(ours_r, peer_r, strict=True)]
        print(f"| {data} | {statistics.median(ours_r):.1f} | {statistics.median(peer_r):.1f} | "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved epochs per (data set, library)")
    parser.add_argument("--images", type=int, default=256, help="images per data set")
    parser.add_argument("--size", type=int, default=512, help="image height and width")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--batch", type=int, default=8, help="samples per batch")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
