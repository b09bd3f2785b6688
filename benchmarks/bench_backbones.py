"""Transformer backbones from pixcore-timm on CPU: DPT against smp's, a DINOv2 linear probe, memory at 1024x1024.

Usage::

    python benchmarks/bench_backbones.py [--threads 2] [--rounds 15] [--warmup 2] [--out DIR]
    python benchmarks/bench_backbones.py --quick        # a smoke run: 3 rounds, no memory case

Random weights everywhere (nothing is downloaded); ``torch.set_num_threads(--threads)``.

a) ``dpt``: ViT-S/16 (``vit_small_patch16_224``) with a DPT decoder, one training step's
   forward and backward (train mode, loss = mean of the output; gradients cleared with
   ``set_to_none``) on a batch of 2 at 224x224:

   * ``pixcore``: ``build_model("timm/vit_small_patch16_224", tasks={"depth": {"head": "dpt"}})``,
     fed uint8 images (normalised inside); the loss is the mean of the decoded depth.
   * ``smp``: ``smp.DPT(encoder_name="tu-vit_small_patch16_224", encoder_weights=None,
     classes=1)`` (smp 0.6's defaults: readout ``cat``, intermediate channels
     256/512/1024/1024, fusion 256), fed float images.

   The decoders differ (pixcore's projects every block to one width and runs its output
   head one octave coarser; smp's keeps DPT's per-level widths and a full-resolution
   head), so the table gives each one's decoder parameters.

b) ``probe``: DINOv2-S/14 (``vit_small_patch14_dinov2``), a segmentation task with 5
   classes, one SGD step (forward, cross entropy against random labels, backward,
   ``optimizer.step()``) on a batch of 2 at 224x224 (16x16 patches of 14 pixels, so no
   padding):

   * ``lin.4``: backbone params ``{"probe": "lin.4", "freeze": True}`` (the last four
     blocks, each with the class token; no gradients to the backbone) and the ``linear``
     head with ``batch_norm: true``: DINOv2's "lin. 4" protocol;
   * ``fpn``: the same backbone with its default parameters (trained, last norm applied
     to four evenly spaced blocks) and the ``fpn`` head behind ViTDet's simple pyramid.

c) ``memory``: peak resident memory of ViT-B/16 (``vit_base_patch16_224``) + DPT depth
   (pixcore, as in a) at 1024x1024, batch 1, eval mode, ``torch.inference_mode``. Each
   model runs in a fresh subprocess (started before this process builds anything), which
   reads its peak RSS after the imports, after building the model (before the forward)
   and after the forward: ``VmHWM`` from /proc/self/status (the child's own peak) and
   ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which on Linux also holds the parent's
   resident memory at fork (it survives exec), so it cannot go below that. smp's DPT
   (``dynamic_img_size=True``, which smp's docs ask for at sizes other than the
   encoder's native one) is measured the same way for reference.

Timing: after ``--warmup`` untimed calls of each job, every round times one call of every
job of a) and b) in a random, interleaved order, so that load from other processes hits
every job alike; the table gives the median over rounds, and each ratio is the median over
rounds of the ratio within a round.
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
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

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

VIT_S = "vit_small_patch16_224"
DINOV2_S = "vit_small_patch14_dinov2"
VIT_B = "vit_base_patch16_224"
NUM_CLASSES = 5
DEFAULT_OUT = Path(tempfile.gettempdir()) / "bench_results"


def _versions() -> dict[str, str]:
    import segmentation_models_pytorch as smp
    import timm

    return {
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "segmentation_models_pytorch": smp.__version__, "pixcore": pixcore.__version__,
    }


def _parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _pixcore_head_parameters(model: pixcore.MultiTaskModel) -> int:
    """The decoder: every head, plus the simple pyramid (neck) when one was added."""
    neck = _parameters(model.neck) if model.neck is not None else 0
    return _parameters(model.heads) + neck


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def pixcore_dpt(encoder: str) -> pixcore.MultiTaskModel:
    return pixcore.build_model(f"timm/{encoder}", tasks={"depth": {"head": "dpt"}})


def smp_dpt(encoder: str, **kwargs: Any) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.DPT(encoder_name=f"tu-{encoder}", encoder_weights=None, classes=1, **kwargs)


def pixcore_probe(probe: bool) -> pixcore.MultiTaskModel:
    backbone: dict[str, Any] = {"name": f"timm/{DINOV2_S}"}
    task: dict[str, Any] = {"task": "segmentation", "params": {"num_classes": NUM_CLASSES}}
    if probe:
        backbone["params"] = {"probe": "lin.4", "freeze": True}
        task["head"] = {"name": "linear", "params": {"batch_norm": True}}
    else:
        task["head"] = "fpn"
    return pixcore.build_model(backbone, tasks={"semseg": task})


# --------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------


def _forward_backward(model: nn.Module, x: Tensor, output: Callable[[Any], Tensor]) -> Callable[[], None]:
    def step() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        output(model(x)).mean().backward()

    return step


def _sgd_step(model: pixcore.MultiTaskModel, x: Tensor, y: Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x)["semseg"], y).backward()
        optimizer.step()

    return step


def _timed_jobs(
    jobs: dict[str, Callable[[], None]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    for name, fn in jobs.items():
        start = time.perf_counter()
        for _ in range(warmup):
            fn()
        print(f"  warm-up {name}: {(time.perf_counter() - start) / max(warmup, 1):.2f} s per call", flush=True)
    names = list(jobs)
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(0)
    for r in range(rounds):
        for j in rng.permutation(len(names)):
            start = time.perf_counter()
            jobs[names[j]]()
            times[names[j]].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {1000 * times[n][-1]:.0f} ms" for n in names),
              flush=True)
    return times


def _paired(times: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))


# --------------------------------------------------------------------------------------
# Memory (run in a fresh subprocess per model)
# --------------------------------------------------------------------------------------


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _hwm_mib() -> float:
    """The peak RSS of the process since its exec (``VmHWM``); NaN where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return float("nan")


def _peaks() -> tuple[float, float]:
    return _maxrss_mib(), _hwm_mib()


def memory_child(which: str, size: int) -> dict[str, Any]:
    """Peak RSS around one inference forward of ViT-B/16 + DPT at ``size`` x ``size``."""
    after_imports = _peaks()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if which == "pixcore":
            model: nn.Module = pixcore_dpt(VIT_B)
            x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
        else:
            model = smp_dpt(VIT_B, dynamic_img_size=True)
            x = torch.randn(1, 3, size, size)
    model.eval()
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    before = _peaks()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(x)
    seconds = time.perf_counter() - start
    after = _peaks()
    prediction = out["depth"] if isinstance(out, dict) else out
    return {
        "model": which, "size": size, "output_shape": list(prediction.shape),
        "parameters": _parameters(model), "parameter_mib": parameter_bytes / 2**20, "buffer_mib": buffer_bytes / 2**20,
        "maxrss_after_imports_mib": after_imports[0], "maxrss_before_forward_mib": before[0],
        "maxrss_after_forward_mib": after[0], "maxrss_increase_mib": after[0] - before[0],
        "hwm_after_imports_mib": after_imports[1], "hwm_before_forward_mib": before[1],
        "hwm_after_forward_mib": after[1], "hwm_increase_mib": after[1] - before[1], "forward_s": seconds,
    }


def _memory(which: str, size: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--threads", str(threads),
               "--memory-child", which, "--memory-size", str(size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"model": which, "size": size, "error": f"exit {done.returncode}: {' | '.join(tail)[:300]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    warnings.simplefilter("ignore")  # timm's notices of renamed models, smp's readout hint
    wall = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    floats = (images.float() / 255.0 - 0.45) / 0.225
    labels = torch.randint(0, NUM_CLASSES, (args.batch, args.size, args.size), generator=g)

    # First, while this process is small: a child inherits its parent's peak RSS at fork
    # (ru_maxrss survives exec on Linux); VmHWM, the child's own peak, does not.
    memory: list[dict[str, Any]] = []
    if not args.skip_memory:
        for which in ("pixcore", "smp"):
            print(f"memory: {which} ViT-B/16 + DPT at {args.memory_size}x{args.memory_size} (subprocess)", flush=True)
            memory.append(_memory(which, args.memory_size, args.threads))
            print(f"  {memory[-1]}", flush=True)
    print("building models", flush=True)
    dpt_pixcore, dpt_smp = pixcore_dpt(VIT_S), smp_dpt(VIT_S)
    probe_lin4, probe_fpn = pixcore_probe(True), pixcore_probe(False)
    with torch.no_grad():
        shapes = {
            "dpt pixcore": tuple(dpt_pixcore.eval()(images)["depth"].shape),
            "dpt smp": tuple(dpt_smp.eval()(floats).shape),
            "probe lin.4": tuple(probe_lin4.eval()(images)["semseg"].shape),
            "probe fpn": tuple(probe_fpn.eval()(images)["semseg"].shape),
        }
    for name, shape in shapes.items():
        if shape[-2:] != (args.size, args.size):
            raise RuntimeError(f"{name} returned a prediction of shape {shape}")

    jobs: dict[str, Callable[[], None]] = {
        "dpt pixcore": _forward_backward(dpt_pixcore, images, lambda out: out["depth"]),
        "dpt smp": _forward_backward(dpt_smp, floats, lambda out: out),
        "probe lin.4": _sgd_step(probe_lin4, images, labels),
        "probe fpn": _sgd_step(probe_fpn, images, labels),
    }
    print(f"timing {len(jobs)} jobs: {args.warmup} warm-up calls, {args.rounds} interleaved rounds", flush=True)
    times = _timed_jobs(jobs, args.rounds, args.warmup)
    ms = {name: 1000.0 * statistics.median(values) for name, values in times.items()}

    heads = {
        "dpt pixcore": _pixcore_head_parameters(dpt_pixcore),
        "dpt smp": sum(_parameters(m) for name, m in dpt_smp.named_children() if name != "encoder"),
        "probe lin.4": _pixcore_head_parameters(probe_lin4),
        "probe fpn": _pixcore_head_parameters(probe_fpn),
    }
    trainable = {
        "dpt pixcore": _parameters(dpt_pixcore, True), "dpt smp": _parameters(dpt_smp, True),
        "probe lin.4": _parameters(probe_lin4, True), "probe fpn": _parameters(probe_fpn, True),
    }
    command = "python benchmarks/bench_backbones.py " + shlex.join(sys.argv[1:])
    versions = _versions()
    machine = f"{cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores)"
    lines = [
        f"machine: {machine}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; torch.set_num_threads({torch.get_num_threads()})",
        f"command: `{command.strip()}`",
        "",
        f"Training step, batch {args.batch} at {args.size}x{args.size}, random weights; median of {args.rounds} "
        f"interleaved rounds after {args.warmup} warm-up calls (ratio: median of the per-round ratios):",
        "",
        "| case | model | decoder params | trainable params | ms per step | ratio |",
        "|---|---|---|---|---|---|",
        f"| ViT-S/16 + DPT, forward + backward | pixcore `dpt` | {heads['dpt pixcore'] / 1e6:.2f} M "
        f"| {trainable['dpt pixcore'] / 1e6:.2f} M | {ms['dpt pixcore']:.0f} "
        f"| **{_paired(times, 'dpt pixcore', 'dpt smp'):.2f}x** smp |",
        f"| | smp `DPT` | {heads['dpt smp'] / 1e6:.2f} M | {trainable['dpt smp'] / 1e6:.2f} M "
        f"| {ms['dpt smp']:.0f} | 1.00x |",
        f"| DINOv2-S/14, SGD step | pixcore `lin.4` probe (frozen, `linear` + BN) "
        f"| {heads['probe lin.4'] / 1e6:.3f} M | {trainable['probe lin.4'] / 1e6:.3f} M "
        f"| {ms['probe lin.4']:.0f} | **{_paired(times, 'probe lin.4', 'probe fpn'):.2f}x** fpn |",
        f"| | pixcore `fpn` (backbone trained, simple pyramid) | {heads['probe fpn'] / 1e6:.2f} M "
        f"| {trainable['probe fpn'] / 1e6:.2f} M | {ms['probe fpn']:.0f} | 1.00x |",
    ]
    if memory:
        lines += [
            "",
            f"Peak RSS, ViT-B/16 + DPT depth, 1x3x{args.memory_size}x{args.memory_size}, eval, "
            "`torch.inference_mode`, one fresh process per model:",
            "",
            "| model | params (MiB) | peak RSS after imports (MiB) | before forward (MiB) | after forward (MiB) "
            "| forward adds (MiB) | `ru_maxrss` before / after (MiB) | forward (s) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in memory:
            label = "pixcore `dpt`" if m["model"] == "pixcore" else "smp `DPT` (`dynamic_img_size=True`, reference)"
            if "error" in m:
                lines.append(f"| {label} | failed: {m['error']} | | | | | | |")
                continue
            lines.append(
                f"| {label} | {m['parameter_mib']:.0f} ({m['parameters'] / 1e6:.1f} M) "
                f"| {m['hwm_after_imports_mib']:.0f} | {m['hwm_before_forward_mib']:.0f} "
                f"| {m['hwm_after_forward_mib']:.0f} | **{m['hwm_increase_mib']:.0f}** "
                f"| {m['maxrss_before_forward_mib']:.0f} / {m['maxrss_after_forward_mib']:.0f} | {m['forward_s']:.1f} |"
            )
        lines += [
            "",
            "(peak RSS: the child's `VmHWM` from /proc/self/status, its own peak since exec; `ru_maxrss` of "
            "`RUSAGE_SELF` also counts the parent's resident memory at fork, which Linux carries across exec.)",
        ]
    elapsed = time.perf_counter() - wall
    lines += ["", f"(whole run: {elapsed:.0f} s)"]
    table = "\n".join(lines)
    print("\n" + table)

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": command.strip(), "machine": machine, "versions": versions, "threads": torch.get_num_threads(),
        "batch": args.batch, "size": args.size, "rounds": args.rounds, "warmup": args.warmup,
        "times_s": times, "median_ms": ms, "ratios": {
            "dpt pixcore / smp": _paired(times, "dpt pixcore", "dpt smp"),
            "probe lin.4 / fpn": _paired(times, "probe lin.4", "probe fpn"),
        },
        "decoder_parameters": heads, "trainable_parameters": trainable, "memory": memory, "wall_s": elapsed,
    }
    (args.out / "bench_backbones.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bench_backbones.md").write_text(table + "\n")
    print(f"\nwrote {args.out / 'bench_backbones.json'} and {args.out / 'bench_backbones.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--threads", type=int, default=2, help="torch threads (and OMP_NUM_THREADS)")
    add("--batch", type=int, default=2, help="images per batch (cases a and b)")
    add("--size", type=int, default=224, help="image height and width (cases a and b)")
    add("--rounds", type=int, default=15, help="interleaved timing rounds")
    add("--warmup", type=int, default=2, help="untimed calls per job first")
    add("--memory-size", type=int, default=1024, help="image height and width of the memory case")
    add("--skip-memory", action="store_true", help="leave out the memory case")
    add("--out", type=Path, default=DEFAULT_OUT, help="folder for bench_backbones.json and .md")
    add("--quick", action="store_true", help="smoke run: 3 rounds, 1 warm-up call, no memory case")
    add("--memory-child", choices=("pixcore", "smp"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        torch.set_num_threads(args.threads)
        print(json.dumps(memory_child(args.memory_child, args.memory_size)))
        return
    if args.quick:
        args.rounds, args.warmup, args.skip_memory = 3, 1, True
    run(args)


if __name__ == "__main__":
    main()
