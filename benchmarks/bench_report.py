"""Run reports: what the evaluation snapshots cost, and how long `pixcore report` takes.

Usage::

    pixcore demo --out runs/demo                         # a 300-step run (it also writes its report)
    python benchmarks/bench_report.py runs/demo [--rounds 7] [--threads 1]

Two measurements on the run folder given (the demo's, or any run of the installed tasks):

* **evaluation**: the model of its checkpoint evaluated on the config's validation data
  with ``pixcore.train.evaluate``; then the ``EvaluationSnapshot`` observer that the
  trainer passes to it (confusion matrices, the first four samples and their pictures)
  run alone over the same batches and predictions, computed once beforehand, and its file
  written: the time it adds to an evaluation, measured apart so that load from other
  processes does not hide it. Medians over rounds, and the snapshot's size on disk;
* **report**: ``build_report`` of the folder, in this process after a first call (imports
  and font cache warm), median over rounds; then ``pixcore report`` once as a new
  process (imports included), and the size of ``report.html``.

The report is written to a temporary folder (``--out``); its PNGs go to the run's
``report/`` folder, as ``pixcore report`` puts them.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from pixcore import RunConfig, build_model_from_config
from pixcore.report import build_report
from pixcore.train import evaluate, load_checkpoint, make_loaders, read_metadata
from pixcore.train._record import EvaluationSnapshot, first_indices


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor()


def bench_evaluation(run: Path, rounds: int) -> None:
    config = RunConfig.model_validate(read_metadata(run / "checkpoint.safetensors")["config"])
    model = build_model_from_config(config.model)
    load_checkpoint(run / "checkpoint.safetensors", model)
    model.eval()
    _, val_loader = make_loaders(config)
    assert val_loader is not None, "the run's config has no data.val"
    device = torch.device("cpu")
    names = getattr(val_loader.dataset, "class_names", ())
    # The observer alone, on batches and predictions computed once: what the snapshot adds.
    batches = list(val_loader)
    with torch.no_grad():
        outputs = [{k: v.float() for k, v in model(batch["image"]).items()} for batch in batches]
    evaluations, observed, snapshot_bytes = [], [], 0
    for round_ in range(rounds + 1):  # round 0 warms up
        start = time.perf_counter()
        evaluate(model, val_loader, device)
        evaluation = time.perf_counter() - start
        start = time.perf_counter()
        observer = EvaluationSnapshot(model, device, class_names=names, indices=first_indices(val_loader, 4))
        for batch, predictions in zip(batches, outputs, strict=True):
            observer(batch, predictions)
        with tempfile.TemporaryDirectory() as folder:
            snapshot_bytes = observer.save(Path(folder) / "step.npz", 0).stat().st_size
        if round_:
            evaluations.append(evaluation)
            observed.append(time.perf_counter() - start)
    evaluation, extra = statistics.median(evaluations), statistics.median(observed)
    print(f"evaluation of {len(val_loader.dataset)} validation samples, median of {rounds} rounds:")  # type: ignore[arg-type]
    print(f"  evaluate (forward and metrics)            {evaluation:7.3f} s")
    print(f"  the snapshot (every batch, and its file)  {extra:7.3f} s  (+{100 * extra / evaluation:.1f} %)")
    print(f"  snapshot file: {snapshot_bytes / 1024:.0f} KiB")


def bench_report(run: Path, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.html"
        build_report(run, out)  # warm: imports, matplotlib's font cache
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            build_report(run, out)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pixcore", "report", str(run), "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        whole = time.perf_counter() - start
        size = out.stat().st_size
    pictures = list((run / "report").glob("*.png"))
    print(f"report of {run}: build_report median {statistics.median(times):.2f} s over {rounds} rounds "
          f"(min {min(times):.2f}); `pixcore report` as a new process {whole:.2f} s")
    print(f"  report.html {size / 2**20:.2f} MiB with {len(pictures)} embedded PNGs "
          f"({sum(p.stat().st_size for p in pictures) / 2**20:.2f} MiB as files)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a run folder with checkpoint.safetensors (e.g. of pixcore demo)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-evaluation", action="store_true", help="time the report only")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import matplotlib
    import numpy

    print(f"CPU: {_cpu()}, {torch.get_num_threads()} threads; Python {platform.python_version()}, torch "
          f"{torch.__version__}, numpy {numpy.__version__}, matplotlib {matplotlib.__version__}")
    if not args.skip_evaluation:
        bench_evaluation(args.run, args.rounds)
    bench_report(args.run, args.rounds)


if __name__ == "__main__":
    main()
