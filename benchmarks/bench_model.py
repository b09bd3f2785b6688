"""Training-step speed of a pixcore FPN model against segmentation_models_pytorch's FPN, on CPU.

Usage::

    python benchmarks/bench_model.py [--threads 2] [--batch 2] [--size 256] [--rounds 9]
    python benchmarks/bench_model.py --quick        # a smoke run: small and short

Both models segment 21 classes with a randomly initialised ResNet-34 encoder and an FPN
decoder:

* ``pixcore``: ``timm/resnet34`` (pixcore-timm, no pretrained weights), the ``fpn`` head
  with ``channels=128`` (``--channels``), one ``segmentation`` task (pixcore-seg) with
  21 classes; fed float images (``normalize=False``), as smp is.
* ``smp matched``: ``smp.FPN(encoder_name="resnet34", encoder_weights=None, classes=21,
  decoder_pyramid_channels=128, decoder_segmentation_channels=128, decoder_dropout=0)``:
  the decoder widths closest to pixcore's (one width, 128, for the pyramid and the
  segmentation blocks; no dropout, as pixcore's default).
* ``smp default``: the same with smp's default decoder (pyramid 256, segmentation 128,
  dropout 0.2), for reference.

Both decoders are the semantic branch of Panoptic FPN (Kirillov et al. 2019) with the same
convolutions (``tests/test_heads.py`` checks equal parameter counts and conv FLOPs); they
differ in the norm layer (pixcore: BatchNorm by default, smp: GroupNorm) and in the
upsampling (pixcore: bilinear to each next level's exact size, half-pixel centres; smp:
2x bilinear with ``align_corners=True``).

Cases: ``train step`` (train mode: forward, cross-entropy against random labels,
backward; gradients cleared with ``set_to_none``) and ``inference`` (eval mode,
``torch.inference_mode``). Timing: after a warm-up, every round times ``--calls`` calls
of every (model, case) in a random, interleaved order, so that load from other processes
hits every model alike; the table gives the median over rounds of the mean time per call.
"""

from __future__ import annotations

import os
import sys


def _threads_from_argv(default: str = "2") -> str:
    """``--threads N`` (or ``--threads=N``) from the command line, read before torch loads."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return default


# Fix the thread count before numpy / torch start their pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads_from_argv()

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

try:
    import pixcore  # noqa: F401
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

import pixcore  # noqa: E402
from _common import cpu_name  # noqa: E402  (benchmarks/, the script's own folder)
from pixcore.testing import isolated_manager  # noqa: E402

NUM_CLASSES = 21


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


class _PixcoreLogits(nn.Module):
    """A pixcore model seen as ``image -> logits``, like an smp model."""

    def __init__(self, model: pixcore.MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["semseg"]


def pixcore_fpn(channels: int) -> nn.Module:
    manager = isolated_manager("pixcore_timm._plugin", "pixcore_seg._plugin")
    model = pixcore.build_model(
        {"name": "timm/resnet34", "params": {"pretrained": False}},
        tasks={
            "semseg": {
                "task": "segmentation",
                "params": {"num_classes": NUM_CLASSES},
                "head": {"name": "fpn", "params": {"channels": channels}},
            }
        },
        normalize=False,
        manager=manager,
    )
    return _PixcoreLogits(model)


def smp_fpn(pyramid: int, segmentation: int, dropout: float) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.FPN(
        encoder_name="resnet34",
        encoder_weights=None,
        classes=NUM_CLASSES,
        decoder_pyramid_channels=pyramid,
        decoder_segmentation_channels=segmentation,
        decoder_dropout=dropout,
    )


def _decoder_parameters(name: str, model: nn.Module) -> int:
    if name == "pixcore":
        module = model.model.heads  # type: ignore[union-attr]
    else:
        module = nn.ModuleList([model.decoder, model.segmentation_head])  # type: ignore[list-item]
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def _train_step(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    def step() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return step


def _inference(model: nn.Module, x: Tensor) -> Callable[[], None]:
    def step() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)

    return step


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    models: dict[str, nn.Module] = {
        "pixcore": pixcore_fpn(args.channels),
        "smp matched": smp_fpn(args.channels, args.channels, 0.0),
        "smp default": smp_fpn(256, 128, 0.2),
    }
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (args.batch, args.size, args.size), generator=g)
    for name, model in models.items():
        with torch.no_grad():
            shape = tuple(model.eval()(x).shape)
        if shape != (args.batch, NUM_CLASSES, args.size, args.size):
            raise RuntimeError(f"{name} returned logits of shape {shape}")

    jobs: list[tuple[str, str, Callable[[], None]]] = []
    for name, model in models.items():
        jobs.append((name, "train step", _train_step(model, x, y)))
        jobs.append((name, "inference", _inference(model, x)))
    for _, _, fn in jobs:  # warm-up
        for _ in range(args.warmup):
            fn()
    times: dict[tuple[str, str], list[float]] = {(m, c): [] for m, c, _ in jobs}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for j in rng.permutation(len(jobs)):
            name, case, fn = jobs[j]
            start = time.perf_counter()
            for _ in range(args.calls):
                fn()
            times[(name, case)].append((time.perf_counter() - start) / args.calls)
    ms = {k: 1000.0 * statistics.median(v) for k, v in times.items()}

    import segmentation_models_pytorch as smp
    import timm

    print(f"machine : {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores)")
    print(f"python  : {platform.python_version()}, torch {torch.__version__}, "
          f"timm {timm.__version__}, segmentation_models_pytorch {smp.__version__}, "
          f"pixcore {pixcore.__version__}")
    print(f"threads : torch.set_num_threads({torch.get_num_threads()}), "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"method  : input {args.batch}x3x{args.size}x{args.size} float32, {NUM_CLASSES} "
          f"classes, {args.warmup} warm-up calls, median over {args.rounds} interleaved rounds "
          f"of the mean of {args.calls} calls\n")
    # Load from other processes moves whole rounds: the ratio within a round cancels most of it.
    def paired(name: str, case: str) -> float:
        pairs = zip(times[(name, case)], times[("smp matched", case)], strict=True)
        return statistics.median(a / b for a, b in pairs)

    print("| model | decoder params | train step (ms) | inference (ms) "
          "| train / smp matched | inference / smp matched |")
    print("|" + "---|" * 6)
    for name, model in models.items():
        train, infer = ms[(name, "train step")], ms[(name, "inference")]
        params = _decoder_parameters(name, model) / 1e6
        print(f"| {name} | {params:.2f} M | {train:.1f} | {infer:.1f} "
              f"| {paired(name, 'train step'):.2f}x | {paired(name, 'inference'):.2f}x |")
    print("\n(ratios: median over rounds of the ratio within a round)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--threads", type=int, default=2, help="torch threads (and OMP_NUM_THREADS)")
    add("--batch", type=int, default=2, help="images per batch")
    add("--size", type=int, default=256, help="image height and width")
    add("--channels", type=int, default=128, help="pixcore FPN width (smp matched: both widths)")
    add("--rounds", type=int, default=9, help="interleaved timing rounds")
    add("--calls", type=int, default=3, help="calls per (model, case) per round")
    add("--warmup", type=int, default=2, help="untimed calls per (model, case) first")
    add("--quick", action="store_true", help="smoke run: 128x128, 3 rounds of 1 call")
    args = parser.parse_args()
    if args.quick:
        args.size, args.rounds, args.calls, args.warmup = 128, 3, 1, 1
    run(args)


if __name__ == "__main__":
    main()
