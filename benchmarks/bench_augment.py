"""Joint augmentation speed: pixcore vs albumentations vs torchvision v2, one CPU thread.

Usage::

    pip install albumentations          # benchmark only; pixcore does not need it
    python benchmarks/bench_augment.py [--rounds 15] [--calls 20] [--size 512]

Every case runs the same work in each library on 512x512 uint8 RGB images with a uint8
class mask (rendered synthetic rooms, 8 different scenes in turn):

* albumentations gets HWC numpy arrays (what cv2 / PIL decoding gives it);
* torchvision v2 and pixcore get the tensors that ``torchvision.io.decode_jpeg`` and
  ``pil_to_tensor`` return: ``[3, H, W]`` views of HWC memory ("decoded layout"); the
  ``chw`` rows repeat pixcore and torchvision with contiguous ``[3, H, W]`` images;
* pixcore gets a fresh ``torch.Generator`` per call (as its trainer does), the others
  their global random state.

The cases: ``hflip`` (p=1); ``resized_crop`` (random resized crop to 512x512, scale
0.25-1, bilinear image, nearest mask); ``rotate`` (uniform in +-30 degrees, bilinear
image, nearest mask, constant fill); ``color_jitter`` (brightness, contrast, saturation
0.4, hue 0.1); ``pipeline`` (resized crop, flip with p=0.5, colour jitter, ImageNet
normalisation to float32 ``[3, H, W]``); ``pipeline, contiguous`` also makes the image
contiguous, as a batch needs it (albumentations' ``ToTensorV2`` returns a transposed view
of HWC memory, which ``default_collate`` copies later; pixcore's ``normalize`` already
returns contiguous memory). ``pipeline 5 targets`` runs pixcore's pipeline on image, mask,
depth, normals and validity mask.

Timing: after ``--warmup`` untimed calls of each, every round times ``--calls`` calls of
every (case, library) in an interleaved order, so that load from other processes hits all
libraries alike; the table gives the median over rounds of the mean time per call.
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy / torch / cv2 start their pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

try:
    import pixcore  # noqa: F401
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from _common import cpu_name  # noqa: E402  (benchmarks/, the script's own folder)
from pixcore import augment as pa  # noqa: E402
from pixcore.data import render_scene  # noqa: E402
from pixcore.targets import ClassMask, Image, ScalarField, UnitVectorField, ValidityMask  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
SCALE = (0.25, 1.0)
DEGREES = 30.0


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def make_inputs(size: int, count: int) -> list[dict[str, Any]]:
    """Rendered scenes in every library's native form."""
    out = []
    for i in range(count):
        s = render_scene(11, i, size, size)
        hwc = np.ascontiguousarray(s.image)
        mask = s.semseg.astype(np.uint8)
        decoded = torch.from_numpy(hwc).permute(2, 0, 1)  # as torchvision.io.decode_jpeg
        chw = decoded.contiguous()
        mask_t = torch.from_numpy(mask)
        out.append({
            "np_image": hwc,
            "np_mask": mask,
            "tv": (tv_tensors.Image(decoded), tv_tensors.Mask(mask_t)),
            "tv_chw": (tv_tensors.Image(chw), tv_tensors.Mask(mask_t)),
            "px": {"image": Image(decoded), "mask": ClassMask(mask_t)},
            "px_chw": {"image": Image(chw), "mask": ClassMask(mask_t)},
            "px5": {
                "image": Image(decoded),
                "mask": ClassMask(mask_t),
                "depth": ScalarField(torch.from_numpy(s.depth)[None]),
                "normals": UnitVectorField(torch.from_numpy(s.normals).permute(2, 0, 1).contiguous()),
                "valid": ValidityMask(torch.from_numpy(s.valid)),
            },
        })
    return out


# --------------------------------------------------------------------------------------
# The three libraries
# --------------------------------------------------------------------------------------


def albumentations_cases(size: int) -> dict[str, Callable[[dict[str, Any], int], Any]]:
    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2

    cv2.setNumThreads(0)
    crop = A.RandomResizedCrop(
        size=(size, size), scale=SCALE, interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST, p=1.0,
    )
    cases = {
        "hflip": A.HorizontalFlip(p=1.0),
        "resized_crop": crop,
        "rotate": A.Rotate(
            limit=DEGREES, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255, p=1.0,
        ),
        "color_jitter": A.ColorJitter(**JITTER, p=1.0),
        "pipeline": A.Compose([
            crop,
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(**JITTER, p=1.0),
            A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0),
            ToTensorV2(),
        ]),
    }
    calls = {
        name: (lambda tf: lambda x, i: tf(image=x["np_image"], mask=x["np_mask"]))(t) for name, t in cases.items()
    }
    pipeline = calls["pipeline"]
    calls["pipeline, contiguous"] = lambda x, i: pipeline(x, i)["image"].contiguous()
    return calls


def torchvision_cases(size: int, key: str = "tv") -> dict[str, Callable[[dict[str, Any], int], Any]]:
    bilinear = v2.InterpolationMode.BILINEAR
    crop = v2.RandomResizedCrop(size, scale=SCALE, interpolation=bilinear, antialias=True)
    cases = {
        "hflip": v2.RandomHorizontalFlip(p=1.0),
        "resized_crop": crop,
        "rotate": v2.RandomRotation(
            DEGREES, interpolation=bilinear, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}
        ),
        "color_jitter": v2.ColorJitter(**JITTER),
        "pipeline": v2.Compose([
            crop,
            v2.RandomHorizontalFlip(p=0.5),
            v2.ColorJitter(**JITTER),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]),
    }
    calls = {name: (lambda tf: lambda x, i: tf(*x[key]))(t) for name, t in cases.items()}
    pipeline = calls["pipeline"]
    calls["pipeline, contiguous"] = lambda x, i: pipeline(x, i)[0].contiguous()
    return calls


def pixcore_cases(size: int, key: str = "px") -> dict[str, Callable[[dict[str, Any], int], Any]]:
    crop = pa.RandomResizedCrop(size, scale=SCALE, antialias=True)
    cases = {
        "hflip": pa.HorizontalFlip(p=1.0),
        "resized_crop": crop,
        "rotate": pa.Rotate(DEGREES, fill=0, mask_fill=255),
        "color_jitter": pa.ColorJitter(**JITTER),
        "pipeline": pa.Compose([
            crop, pa.HorizontalFlip(p=0.5), pa.ColorJitter(**JITTER), pa.Normalize(MEAN, STD)
        ]),
    }

    def call(t: pa.Transform) -> Callable[[dict[str, Any], int], Any]:
        return lambda x, i: t(x[key], torch.Generator().manual_seed(i))

    calls = {name: call(t) for name, t in cases.items()}
    pipeline = calls["pipeline"]
    calls["pipeline, contiguous"] = lambda x, i: pipeline(x, i)["image"].contiguous()
    return calls


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    inputs = make_inputs(args.size, 8)
    libraries: dict[str, dict[str, Callable[[dict[str, Any], int], Any]]] = {
        "pixcore": pixcore_cases(args.size),
        "torchvision": torchvision_cases(args.size),
        "pixcore chw": pixcore_cases(args.size, "px_chw"),
        "torchvision chw": torchvision_cases(args.size, "tv_chw"),
    }
    try:
        import albumentations
        import cv2

        libraries["albumentations"] = albumentations_cases(args.size)
        versions_extra = f"albumentations {albumentations.__version__}, opencv {cv2.__version__}"
    except ImportError:
        versions_extra = "albumentations not installed"
    libraries["pixcore"]["pipeline 5 targets"] = pixcore_cases(args.size, "px5")["pipeline"]

    jobs = [(case, lib, fn) for lib, cases in libraries.items() for case, fn in cases.items()]
    times: dict[tuple[str, str], list[float]] = {(c, lib): [] for c, lib, _ in jobs}
    # Warm-up: pixcore caches small index tables per (window, output) length pair, as a
    # training run's loader workers do after their first few thousand samples; every
    # library gets the same number of calls.
    for _case, _lib, fn in jobs:
        for i in range(args.warmup):
            fn(inputs[i % len(inputs)], 10**6 + i)
    rng = np.random.default_rng(0)
    counter = 0
    for _ in range(args.rounds):
        for j in rng.permutation(len(jobs)):
            case, lib, fn = jobs[j]
            start = time.perf_counter()
            for _ in range(args.calls):
                fn(inputs[counter % len(inputs)], counter)
                counter += 1
            times[(case, lib)].append((time.perf_counter() - start) / args.calls)

    ms = {k: 1000.0 * statistics.median(v) for k, v in times.items()}
    print(f"machine : {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores)")
    print(f"python  : {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, {versions_extra}")
    print(f"threads : torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          "cv2.setNumThreads(0)")
    print(f"method  : {args.size}x{args.size} uint8, {args.warmup} warm-up calls, median over {args.rounds} "
          f"interleaved rounds of the mean of {args.calls} calls\n")
    header = ("| case | pixcore (ms) | albumentations (ms) | torchvision v2 (ms) "
              "| pixcore / albumentations | pixcore / torchvision |")
    print(header)
    print("|" + "---|" * 6)
    for case in ("hflip", "resized_crop", "rotate", "color_jitter", "pipeline", "pipeline, contiguous"):
        ours = ms[(case, "pixcore")]
        alb = ms.get((case, "albumentations"), float("nan"))
        tv = ms[(case, "torchvision")]
        print(f"| {case} | {ours:.3f} | {alb:.3f} | {tv:.3f} | {ours / alb:.2f}x | {ours / tv:.2f}x |")
    for case in ("hflip", "resized_crop", "rotate", "color_jitter", "pipeline", "pipeline, contiguous"):
        ours = ms[(case, "pixcore chw")]
        tv = ms[(case, "torchvision chw")]
        alb = ms.get((case, "albumentations"), float("nan"))
        print(f"| {case}, contiguous CHW input | {ours:.3f} | {alb:.3f} | {tv:.3f} "
              f"| {ours / alb:.2f}x | {ours / tv:.2f}x |")
    five = ms[("pipeline 5 targets", "pixcore")]
    two = ms[("pipeline", "pixcore")]
    print(f"\npixcore pipeline, image + mask + depth + normals + validity: {five:.3f} ms "
          f"= {five / two:.2f}x the image + mask pipeline ({two:.3f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--calls", type=int, default=20, help="calls per (case, library) per round")
    parser.add_argument("--size", type=int, default=512, help="image height and width")
    parser.add_argument("--warmup", type=int, default=300, help="untimed calls per (case, library) first")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
