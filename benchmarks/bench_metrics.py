"""Segmentation metric speed: pixcore ``miou`` vs torchmetrics ``MulticlassJaccardIndex``.

Usage::

    pip install torchmetrics            # benchmark only; pixcore does not need it
    python benchmarks/bench_metrics.py [--rounds 15] [--calls 5] [--size 512] [--threads 1]
    python benchmarks/bench_metrics.py --quick      # a smoke run on small inputs

Every case times one ``update`` on a batch of 4 random ``--size`` x ``--size`` images with
21 classes (Pascal VOC) and 150 classes (ADE20K); 10 % of the target pixels hold the
ignore index 255. Two kinds of prediction:

* ``logits``: float32 ``[4, C, H, W]``; both metrics take the argmax over classes;
* ``ids``: int64 class ids ``[4, H, W]`` (what a model's argmax or a saved prediction
  gives), which times the confusion-matrix update alone.

The libraries: pixcore's ``MeanIoU`` (what the ``miou`` metric builds; it checks the class
ids of every scored pixel), torchmetrics' ``MulticlassJaccardIndex(ignore_index=255)``
with its defaults (``validate_args=True``: it checks the inputs, with ``torch.unique``),
and the same with ``validate_args=False`` (no checks). Both compute the same confusion
matrix; the tests check that the results agree.

Timing: every round times ``--calls`` calls of every (case, library) in an interleaved
order, so that load from other processes hits all libraries alike; the table gives the
median over rounds of the mean time per call.
"""

from __future__ import annotations

import os

# One thread everywhere by default, before numpy / torch start their pools.
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
import torch  # noqa: E402

try:
    import pixcore_seg  # noqa: F401
except ImportError:  # running from a source checkout without an install
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root / "core"), str(root / "plugins" / "pixcore-seg" / "src")]

from _common import cpu_name  # noqa: E402  (benchmarks/, the script's own folder)
from pixcore_seg import MeanIoU  # noqa: E402

IGNORE = 255
BATCH = 4
CLASSES = (21, 150)
KINDS = ("logits", "ids")


def make_inputs(num_classes: int, size: int, seed: int) -> dict[str, torch.Tensor]:
    """Random logits, their class ids, and a target with 10 % ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(BATCH, num_classes, size, size, generator=g)
    target = torch.randint(0, num_classes, (BATCH, size, size), generator=g)
    target[torch.rand(BATCH, size, size, generator=g) < 0.1] = IGNORE
    return {
        "logits": logits,
        "ids": logits.argmax(1),
        "target": target,
        "valid": torch.ones(BATCH, size, size, dtype=torch.bool),
    }


Call = Callable[[], object]


def library_calls(num_classes: int, kind: str, x: dict[str, torch.Tensor]) -> dict[str, Call]:
    """One ``update`` per library on the same inputs; the metrics are reset now and then."""
    from torchmetrics.classification import MulticlassJaccardIndex

    prediction, target, valid = x[kind], x["target"], x["valid"]
    ours = MeanIoU(num_classes=num_classes, ignore_index=IGNORE)
    checked = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE)
    unchecked = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE, validate_args=False)
    return {
        "pixcore": lambda: ours.update(prediction, target, valid),
        "torchmetrics": lambda: checked.update(prediction, target),
        "torchmetrics, no checks": lambda: unchecked.update(prediction, target),
    }


def check_agreement(num_classes: int, x: dict[str, torch.Tensor]) -> float:
    """Largest |difference| between pixcore's and torchmetrics' per-class IoU."""
    from torchmetrics.classification import MulticlassJaccardIndex

    ours = MeanIoU(num_classes=num_classes, ignore_index=IGNORE)
    theirs = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE, average=None)
    ours.update(x["logits"], x["target"], x["valid"])
    theirs.update(x["logits"], x["target"])
    results = ours.compute()
    mine = torch.tensor([results[f"iou/{c}"] for c in range(num_classes)], dtype=torch.float64)
    return float((mine - theirs.compute().double()).abs().max())


def run(args: argparse.Namespace) -> None:
    import torchmetrics

    torch.set_num_threads(args.threads)
    inputs = {c: make_inputs(c, args.size, seed=c) for c in CLASSES}
    jobs: list[tuple[int, str, str, Call]] = []
    for c in CLASSES:
        for kind in KINDS:
            for lib, fn in library_calls(c, kind, inputs[c]).items():
                jobs.append((c, kind, lib, fn))
    for _, _, _, fn in jobs:  # warm-up
        fn()
    times: dict[tuple[int, str, str], list[float]] = {(c, k, lib): [] for c, k, lib, _ in jobs}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for j in rng.permutation(len(jobs)):
            c, kind, lib, fn = jobs[j]
            start = time.perf_counter()
            for _ in range(args.calls):
                fn()
            times[(c, kind, lib)].append((time.perf_counter() - start) / args.calls)

    ms = {k: 1000.0 * statistics.median(v) for k, v in times.items()}
    print(f"machine : {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores)")
    print(f"python  : {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__}, torchmetrics {torchmetrics.__version__}")
    print(f"threads : torch {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"method  : update() on {BATCH}x{args.size}x{args.size}, 10% ignored pixels, median "
          f"over {args.rounds} interleaved rounds of the mean of {args.calls} calls")
    worst = max(check_agreement(c, inputs[c]) for c in CLASSES)
    print(f"check   : per-class IoU of pixcore and torchmetrics differ by at most {worst:.1e}\n")
    print("| classes | prediction | pixcore (ms) | torchmetrics (ms) "
          "| torchmetrics, no checks (ms) | pixcore / torchmetrics | pixcore / no checks |")
    print("|" + "---|" * 7)
    for c in CLASSES:
        for kind in KINDS:
            ours = ms[(c, kind, "pixcore")]
            tm = ms[(c, kind, "torchmetrics")]
            bare = ms[(c, kind, "torchmetrics, no checks")]
            print(f"| {c} | {kind} | {ours:.2f} | {tm:.2f} | {bare:.2f} | {ours / tm:.2f}x "
                  f"| {ours / bare:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--calls", type=int, default=5, help="calls per (case, library) per round")
    parser.add_argument("--size", type=int, default=512, help="image height and width")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 64x64 images, 2 rounds of 1 call")
    args = parser.parse_args()
    if args.quick:
        args.size, args.rounds, args.calls = 64, 2, 1
    run(args)


if __name__ == "__main__":
    main()
