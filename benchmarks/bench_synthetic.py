"""Throughput of the synthetic scene renderer (``pixcore.data.render_scene``) on one core.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py [--repeats 7] [--scenes 200]

For each image size it renders a few warm-up scenes, then times ``--repeats`` runs of
``--scenes`` distinct scenes each and prints the median (and min/max) samples per
second. ``--dataset`` also times ``SyntheticScenes.__getitem__`` (render plus conversion
to typed tensors). The target is at least 200 samples/s at 128x128 on one core.
"""

from __future__ import annotations

import os

# Pin to one core before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _common import cpu_name  # noqa: E402  (benchmarks/, the script's own folder)

try:
    from pixcore.data._synthetic import SyntheticScenes, render_scene
except ImportError:  # running from a source checkout without PYTHONPATH=core
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    from pixcore.data._synthetic import SyntheticScenes, render_scene


def _time(fn: Callable[[int], object], scenes: int, repeats: int, warmup: int) -> list[float]:
    """Samples/s of ``fn(i)`` over ``scenes`` indices, once per repeat, after a warm-up."""
    for i in range(warmup):
        fn(10**6 + i)
    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(scenes):
            fn(r * scenes + i)
        rates.append(scenes / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per size")
    parser.add_argument("--scenes", type=int, default=200, help="scenes per repetition")
    parser.add_argument("--warmup", type=int, default=20, help="untimed scenes per size")
    parser.add_argument(
        "--sizes", default="128x128,256x256", help="comma-separated HxW sizes to time"
    )
    parser.add_argument(
        "--dataset", action="store_true", help="also time SyntheticScenes.__getitem__"
    )
    args = parser.parse_args()

    print(f"machine : {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores)")
    print(f"python  : {platform.python_version()} ({platform.python_implementation()})")
    print(f"numpy   : {np.__version__}")
    print(f"threads : OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(
        f"method  : {args.warmup} warm-up scenes, "
        f"median of {args.repeats} x {args.scenes} scenes"
    )
    for size in args.sizes.split(","):
        h, w = (int(x) for x in size.lower().split("x"))
        runs = [("render_scene", lambda i, h=h, w=w: render_scene(0, i, h, w))]
        if args.dataset:
            try:
                import torch

                torch.set_num_threads(1)
            except ImportError:  # pragma: no cover
                pass
            ds = SyntheticScenes(length=10**7, height=h, width=w)
            runs.append(("SyntheticScenes[i]", ds.__getitem__))
        for name, fn in runs:
            rates = _time(fn, args.scenes, args.repeats, args.warmup)
            print(
                f"{h:4d}x{w:<4d} {name:20s} median {statistics.median(rates):7.1f} samples/s "
                f"(min {min(rates):.1f}, max {max(rates):.1f})"
            )


if __name__ == "__main__":
    main()
