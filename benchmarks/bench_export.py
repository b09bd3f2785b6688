"""Exported models on CPU: ONNX Runtime against eager torch (parity, metrics, latency), INT8 quantisation.

Usage::

    python benchmarks/bench_export.py --checkpoint RUN/checkpoint.safetensors [--threads 2] [--rounds 15]
        [--out /tmp/bench_export]
    python benchmarks/bench_export.py --checkpoint RUN/checkpoint.safetensors --sections latency --no-spinning
    python benchmarks/bench_export.py --quick           # a smoke run: demo model only, 3 rounds

``--checkpoint`` is a trained demo run (``pixcore demo --out RUN``); without it the demo's
architecture (``core/pixcore/configs/demo.yaml``: ResNet-18, FPN heads for 7-class
segmentation, depth and normals) is built with random weights, and the tables say so.

a) ``parity``: every model is exported (:func:`pixcore.export.export_model`, dynamic
   batch/height/width, opset 18) and run with ONNX Runtime (CPU, fp32) and eagerly
   (``torch.inference_mode``) on two held-out synthetic rooms at 96x96, 97x130 (not a
   multiple of 32) and 256x320 (larger than the demo's training size). Per output: the
   largest absolute difference (class probabilities, depth in metres, unit normals) and
   the share of pixels with the same class id. Models: the demo model, and one per
   backbone family with the demo's three heads (random weights, every head's output
   layer re-drawn with std 0.3 so the outputs are not all near zero): CNN
   (``timm/resnet18``), hierarchical transformer (``timm/swin_tiny_patch4_window7_224``)
   and plain ViT (``--vit``, default ``timm/vit_tiny_patch16_224``); ``--parity-models``
   picks some of them. A model whose dynamic export fails or takes more than
   ``--export-timeout`` seconds is exported once per size with that fixed size instead,
   and the table says so (Swin's dynamic export takes minutes: torch.export reasons
   symbolically about its window padding in every block).
b) ``metrics``: the demo model on the 128 held-out rooms of its config (``data.val``:
   synthetic, split ``val``, 96x96), scored by pixcore's own metrics (each task's
   ``new_metrics()``, updated as :func:`pixcore.train.evaluate` does) from eager torch,
   ONNX Runtime fp32, static INT8 and dynamic INT8: mIoU (``miou``), AbsRel
   (``depth_errors``) and mean angular error in degrees (``angular_error``). Static INT8
   is calibrated on ``--calibration`` (64) images of the config's ``data.train``
   (:func:`pixcore.export._quantize.calibration_images`, no augmentations).
c) ``calibration``: the same scores for the static INT8 variants tried: MinMax,
   percentile (99.999 and 99.99) and entropy ranges (512 histogram bins), the outputs'
   tails kept float or not, int8 instead of uint8 activations, ``quant_pre_process`` first.
d) ``latency``: the demo model, batch 1, ``--sizes`` (256x256, 512x512), ``--threads``
   threads (``torch.set_num_threads``; ONNX Runtime ``intra_op_num_threads``, one
   inter-op thread): eager torch (``inference_mode``), ``torch.compile`` (default mode,
   ``dynamic=False``), ONNX Runtime fp32, static INT8 and dynamic INT8. After
   ``--warmup`` untimed calls of each, every round times one call of every (runner, size)
   in a random, interleaved order; the table gives the median over rounds and the median
   over rounds of the ratio to eager within a round. By default idle threads spin as each
   library sets them to (ONNX Runtime's ``allow_spinning``, OpenMP's wait policy); on a
   machine with as many cores as threads the spinning threads of one runner then slow the
   next one down. ``--no-spinning`` makes idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``,
   ``session.intra_op.allow_spinning=0``): every runner as if it ran alone.
e) ``size``: export (fp32) and quantisation (static: calibration included) seconds and
   file sizes.
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


# Fix the thread count (and, with --no-spinning, the OpenMP wait policy) before numpy / torch start their pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads_from_argv()
if "--no-spinning" in sys.argv:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

try:
    import pixcore  # noqa: F401
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

import pixcore  # noqa: E402
from _common import cpu_name  # noqa: E402  (benchmarks/, the script's own folder)
from pixcore._config import RunConfig, load_config, validate_config  # noqa: E402
from pixcore.data import SyntheticScenes, collate  # noqa: E402
from pixcore.export import export_model  # noqa: E402
from pixcore.export._quantize import calibration_images, quantize_model  # noqa: E402
from pixcore.model._compose import build_model_from_config  # noqa: E402

DEMO_CONFIG = Path(pixcore.__file__).parent / "configs" / "demo.yaml"
DEFAULT_OUT = Path(tempfile.gettempdir()) / "bench_export"
PARITY_SIZES = ((96, 96), (97, 130), (256, 320))
SECTIONS = ("parity", "metrics", "variants", "latency")
#: (column, metric key, label) of the metric tables.
METRICS = (("semseg", "miou", "mIoU"), ("depth", "abs_rel", "AbsRel"), ("normals", "mean", "mean angle (deg)"))
#: The static INT8 variants of table c): label -> quantize_model keyword arguments.
VARIANTS: dict[str, dict[str, Any]] = {
    "MinMax, tails float (default)": {},
    "MinMax, everything ORT quantises": {"keep_float": "none"},
    "MinMax, int8 activations": {"activation_type": "int8"},
    "MinMax, quant_pre_process first": {"preprocess": True},
    "percentile 99.999": {"method": "percentile"},
    "percentile 99.99": {"method": "percentile", "percentile": 99.99},
    "entropy, 512 bins": {"method": "entropy"},
}


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript
    import timm

    return {
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "onnx": onnx.__version__, "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__,
        "pixcore": pixcore.__version__,
    }


# --------------------------------------------------------------------------------------
# Models and runners
# --------------------------------------------------------------------------------------


def _perturb_outputs(model: pixcore.MultiTaskModel) -> pixcore.MultiTaskModel:
    with torch.no_grad():
        for head in model.heads.values():
            head.output.weight.normal_(std=0.3)  # type: ignore[union-attr, operator]
    return model


def demo_model(checkpoint: Path | None) -> tuple[pixcore.MultiTaskModel, RunConfig]:
    """The trained demo model and its run config, or the demo architecture with random weights."""
    if checkpoint is not None:
        from pixcore.infer import load_model
        from pixcore.train import read_metadata

        config = validate_config(RunConfig, read_metadata(checkpoint)["config"], str(checkpoint))
        return load_model(checkpoint), config
    config = load_config(DEMO_CONFIG)
    torch.manual_seed(0)
    return _perturb_outputs(build_model_from_config(config.model).eval()), config


def family_model(backbone: str, config: RunConfig) -> pixcore.MultiTaskModel:
    """``backbone`` (random weights) with the demo's three heads."""
    model_config = config.model.model_dump(mode="json")
    model_config["backbone"] = {"name": backbone, "params": {"pretrained": False}}
    torch.manual_seed(0)
    return _perturb_outputs(build_model_from_config(model_config).eval())


#: ``--no-spinning``: ONNX Runtime's idle intra-op threads sleep instead of spinning.
SPINNING = "--no-spinning" not in sys.argv


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if not SPINNING:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_predict(session: Any) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """An ONNX Runtime session seen as the eager model: class probabilities stand for logits."""
    names = [o.name for o in session.get_outputs()]

    def predict(image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(zip(names, session.run(None, {"image": image.numpy()}), strict=True))
        return {
            "semseg": torch.from_numpy(out["semseg_probabilities"]), "semseg_ids": torch.from_numpy(out["semseg"]),
            "depth": torch.from_numpy(out["depth"]), "normals": torch.from_numpy(out["normals"]),
        }

    return predict


def eager_predict(model: pixcore.MultiTaskModel) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    def predict(image: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = model(image)
        return {"semseg": torch.softmax(out["semseg"].float(), 1), "semseg_ids": out["semseg"].argmax(1),
                "depth": out["depth"].float(), "normals": out["normals"].float()}

    return predict


def _rooms(height: int, width: int, count: int, split: str = "val") -> torch.Tensor:
    rooms = SyntheticScenes(split=split, length=count, height=height, width=width)
    return torch.stack([rooms[i]["image"] for i in range(count)])


# --------------------------------------------------------------------------------------
# a) parity, b) and c) metrics
# --------------------------------------------------------------------------------------


class _ExportTimeout(Exception):
    pass


def _export_within(model: pixcore.MultiTaskModel, folder: Path, seconds: int, **options: Any) -> Any:
    """``export_model``, stopped after ``seconds`` (torch.export's symbolic shape reasoning can run for hours)."""

    def stop(signum: int, frame: Any) -> None:
        raise _ExportTimeout(f"no export after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        return export_model(model, folder, **options)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _why(error: BaseException) -> str:
    cause: BaseException | None = error  # a timeout may arrive wrapped by the exporter, twice or more
    while cause is not None and not isinstance(cause, _ExportTimeout):
        cause = cause.__cause__ or cause.__context__
    cause = cause or error
    return f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"


def parity(name: str, model: pixcore.MultiTaskModel, folder: Path, threads: int, timeout: int) -> dict[str, Any]:
    """ONNX Runtime against eager torch at every size of :data:`PARITY_SIZES`, from one dynamic export.

    A model whose dynamic export fails (or takes more than ``timeout`` seconds) is
    exported once per size with that fixed size instead, and the row says why.
    """
    row: dict[str, Any] = {"model": name}
    paths: dict[tuple[int, int], Path] = {}
    try:
        result = _export_within(model, folder / "dynamic", timeout)
        row.update(export_s=result.seconds, size_mb=result.size_bytes / 1e6, export="dynamic")
        paths = dict.fromkeys(PARITY_SIZES, result.path)
    except Exception as error:
        row["dynamic_error"] = _why(error)
        print(f"  {name}: dynamic export failed ({row['dynamic_error']}); one fixed-size export per size", flush=True)
        seconds = []
        for height, width in PARITY_SIZES:
            try:
                result = _export_within(model, folder / f"{height}x{width}", timeout, dynamic=False,
                                        size=(height, width))
            except Exception as fixed_error:
                row["error"] = f"dynamic: {row['dynamic_error']}; fixed size: {_why(fixed_error)}"
                return row
            paths[(height, width)] = result.path
            seconds.append(result.seconds)
        row.update(export_s=statistics.mean(seconds), size_mb=result.size_bytes / 1e6, export="fixed size")
    eager = eager_predict(model)
    for (height, width), path in paths.items():
        image = _rooms(height, width, 2)
        ours, ref = ort_predict(ort_session(path, threads))(image), eager(image)
        row[f"{height}x{width}"] = {
            "probabilities": float((ours["semseg"] - ref["semseg"]).abs().max()),
            "depth": float((ours["depth"] - ref["depth"]).abs().max()),
            "depth_max": float(ref["depth"].abs().max()),
            "normals": float((ours["normals"] - ref["normals"]).abs().max()),
            "class_agreement": float((ours["semseg_ids"] == ref["semseg_ids"]).double().mean()),
        }
    print(f"  parity {name}: {row}", flush=True)
    return row


def score(model: pixcore.MultiTaskModel, predict: Callable[[torch.Tensor], dict[str, torch.Tensor]],
          batches: list[dict[str, Any]]) -> tuple[dict[str, float], list[torch.Tensor]]:
    """The metrics of ``predict`` over ``batches`` (updated as pixcore.train.evaluate does), and its class ids."""
    metrics = {name: binding.new_metrics() for name, binding in model.bindings.items()}
    for metric_set in metrics.values():
        for metric in metric_set.values():
            metric.reset()
    ids = []
    for batch in batches:
        predictions = predict(batch["image"])
        ids.append(predictions["semseg_ids"])
        for name, binding in model.bindings.items():
            target, valid = binding.task.target_and_valid(batch)
            for metric in metrics[name].values():
                metric.update(predictions[name].float(), target, valid)
    values: dict[str, float] = {}
    for name, metric_set in metrics.items():
        for metric in metric_set.values():
            values.update({f"{name}/{key}": float(value) for key, value in metric.compute().items()
                           if isinstance(value, (int, float))})
    return values, ids


def _agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    same = sum(int((x == y).sum()) for x, y in zip(a, b, strict=True))
    return same / sum(x.numel() for x in a)


# --------------------------------------------------------------------------------------
# d) latency
# --------------------------------------------------------------------------------------


def timed(jobs: dict[tuple[str, str], Callable[[], object]], rounds: int, warmup: int) -> dict[tuple[str, str],
                                                                                                list[float]]:
    for key, fn in jobs.items():
        start = time.perf_counter()
        for _ in range(warmup):
            fn()
        print(f"  warm-up {key}: {(time.perf_counter() - start) / max(warmup, 1) * 1000:.0f} ms per call", flush=True)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in jobs}
    keys = list(jobs)
    rng = np.random.default_rng(0)
    for r in range(rounds):
        for j in rng.permutation(len(keys)):
            start = time.perf_counter()
            jobs[keys[j]]()
            times[keys[j]].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{rounds}", flush=True)
    return times


def _load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _paired(times: dict[tuple[str, str], list[float]], key: tuple[str, str], base: tuple[str, str]) -> float:
    return statistics.median(a / b for a, b in zip(times[key], times[base], strict=True))


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.1e}" if value != 0 and abs(value) < 1e-3 else f"{value:.4f}"


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    warnings.simplefilter("ignore")  # the exporter's and timm's notices
    wall = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    model, config = demo_model(args.checkpoint)
    demo_label = "demo (trained)" if args.checkpoint else "demo architecture (untrained: random weights)"
    result: dict[str, Any] = {"demo": demo_label, "checkpoint": str(args.checkpoint or "")}

    # e) export and quantisation: time and size
    print("exporting the demo model", flush=True)
    fp32 = export_model(model, work / "fp32")
    calibration = calibration_images(config, count=args.calibration)
    start = time.perf_counter()
    int8 = quantize_model(fp32.path, work / "int8" / "model.onnx", calibration=calibration)
    static_s = time.perf_counter() - start
    start = time.perf_counter()
    dynamic = quantize_model(fp32.path, work / "dynamic" / "model.onnx", mode="dynamic")
    dynamic_s = time.perf_counter() - start
    result["size"] = {
        "ONNX fp32": {"seconds": fp32.seconds, "mb": fp32.size_bytes / 1e6, "what": "export_model (dynamic)"},
        "ONNX INT8 static": {"seconds": static_s, "mb": int8.stat().st_size / 1e6,
                             "what": f"quantize_model, {args.calibration} calibration images (MinMax)"},
        "ONNX INT8 dynamic": {"seconds": dynamic_s, "mb": dynamic.stat().st_size / 1e6, "what": "quantize_model"},
    }
    print(f"  {result['size']}", flush=True)

    # b) metrics on the held-out rooms
    sections = set(args.sections)
    val = config.data.val
    assert val is not None, "the demo config has held-out data"
    rooms = SyntheticScenes(**{k: v for k, v in val.params.items()})  # split val, 128 rooms, 96x96
    batches = [collate([rooms[i] for i in range(s, min(s + 16, len(rooms)))]) for s in range(0, len(rooms), 16)]
    runners = {
        "eager torch": eager_predict(model),
        "ORT fp32": ort_predict(ort_session(fp32.path, args.threads)),
        "ORT INT8 static": ort_predict(ort_session(int8, args.threads)),
        "ORT INT8 dynamic": ort_predict(ort_session(dynamic, args.threads)),
    }
    scores: dict[str, dict[str, float]] = {}
    ids: dict[str, list[torch.Tensor]] = {}
    for name, predict in runners.items() if sections & {"metrics", "variants"} else ():
        scores[name], ids[name] = score(model, predict, batches)
        print(f"  metrics {name}: " + ", ".join(f"{t}/{k} {scores[name][f'{t}/{k}']:.5f}" for t, k, _ in METRICS),
              flush=True)
    result["metrics"] = {name: {"scores": scores[name], "class_agreement_vs_eager": _agreement(ids[name],
                         ids["eager torch"])} for name in scores}

    # c) calibration variants
    variants: dict[str, Any] = {}
    if "variants" in sections:
        reference = scores["ORT fp32"]
        for label, options in VARIANTS.items():
            start = time.perf_counter()
            path = quantize_model(fp32.path, work / "variants" / f"{len(variants)}.onnx", calibration=calibration,
                                  **options)
            seconds = time.perf_counter() - start
            values, variant_ids = score(model, ort_predict(ort_session(path, args.threads)), batches)
            variants[label] = {
                "options": options, "seconds": seconds, "scores": values,
                "delta": {f"{t}/{k}": values[f"{t}/{k}"] - reference[f"{t}/{k}"] for t, k, _ in METRICS},
                "class_agreement_vs_fp32": _agreement(variant_ids, ids["ORT fp32"]),
            }
            print(f"  variant {label}: {variants[label]['delta']}", flush=True)
    result["calibration"] = variants

    # a) parity
    families = {demo_label: model} if args.quick else {demo_label: model, "timm/resnet18": None,
                                                       "timm/swin_tiny_patch4_window7_224": None, args.vit: None}
    if args.parity_models:
        families = {name: net for name, net in families.items() if name in args.parity_models or (
            net is model and "demo" in args.parity_models)}
    rows = []
    for name, net in families.items() if "parity" in sections else ():
        print(f"parity: {name}", flush=True)
        try:
            net = net if net is not None else family_model(name, config)
        except Exception as error:
            rows.append({"model": name, "error": f"{type(error).__name__}: {str(error)[:300]}"})
            continue
        rows.append(parity(name, net, work / f"parity{len(rows)}", args.threads, args.export_timeout))
    result["parity"] = rows

    # d) latency
    compiled: Any = None
    compile_note = ""
    try:
        if "latency" not in sections:
            raise _Skipped
        compiled = torch.compile(model, dynamic=False)
        with torch.inference_mode():
            start = time.perf_counter()
            for size in args.sizes:
                compiled(torch.zeros(1, 3, size, size, dtype=torch.uint8))
        compile_note = (f"torch.compile's first calls (compilation) took {time.perf_counter() - start:.0f} s for "
                        f"{len(args.sizes)} sizes (less when inductor's on-disk cache holds the graphs)")
    except _Skipped:
        pass
    except Exception as error:
        compiled = None
        compile_note = f"torch.compile failed: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
        traceback.print_exc()
    print(f"  {compile_note}", flush=True)
    sessions = {"ORT fp32": ort_session(fp32.path, args.threads), "ORT INT8 static": ort_session(int8, args.threads),
                "ORT INT8 dynamic": ort_session(dynamic, args.threads)}

    def torch_job(net: Any, image: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return net(image)

        return call

    def ort_job(session: Any, image: np.ndarray) -> Callable[[], object]:
        return lambda: session.run(None, {"image": image})

    jobs: dict[tuple[str, str], Callable[[], object]] = {}
    for size in args.sizes if "latency" in sections else ():
        image = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        key = f"{size}x{size}"
        jobs[("eager torch", key)] = torch_job(model, image)
        if compiled is not None:
            jobs[("torch.compile", key)] = torch_job(compiled, image)
        for name, session in sessions.items():
            jobs[(name, key)] = ort_job(session, image.numpy())
    print(f"latency: {len(jobs)} jobs, {args.warmup} warm-up calls, {args.rounds} interleaved rounds", flush=True)
    load_before = _load_average()
    times = timed(jobs, args.rounds, args.warmup) if jobs else {}
    result["load_average"] = {"before": load_before, "after": _load_average()}
    result["latency"] = {
        f"{name} @ {key}": {"median_ms": 1000 * statistics.median(values),
                            "vs_eager": _paired(times, (name, key), ("eager torch", key)), "times_s": values}
        for (name, key), values in times.items()
    }
    result["compile"] = compile_note

    # The tables
    command = "python benchmarks/bench_export.py " + shlex.join(sys.argv[1:])
    versions = _versions()
    machine = f"{cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores)"
    lines = [
        f"machine: {machine}; " + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; {args.threads} threads (torch.set_num_threads; ORT intra_op_num_threads, inter_op 1)",
        f"command: `{command.strip()}`",
        f"demo model: {demo_label}" + (f" ({args.checkpoint})" if args.checkpoint else ""),
    ]
    if rows:
        lines += _parity_table(rows)
    if scores:
        lines += _metrics_table(scores, result, rooms, val.params)
    if variants:
        lines += _variants_table(variants, args.calibration)
    if times:
        lines += _latency_table(result, jobs, args, compile_note)
    lines += _size_table(result)
    elapsed = time.perf_counter() - wall
    lines += ["", f"(whole run: {elapsed:.0f} s)"]
    table = "\n".join(lines)
    print("\n" + table)

    args.out.mkdir(parents=True, exist_ok=True)
    result.update(command=command.strip(), machine=machine, versions=versions, threads=args.threads,
                  rounds=args.rounds, warmup=args.warmup, wall_s=elapsed)
    (args.out / "bench_export.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "bench_export.md").write_text(table + "\n")
    print(f"\nwrote {args.out / 'bench_export.json'} and {args.out / 'bench_export.md'}")


class _Skipped(Exception):
    pass


def _parity_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "**a) Parity**, ONNX Runtime fp32 against eager torch, 2 held-out rooms per size: largest |difference| of "
        "class probabilities / depth (m; in brackets the largest depth) / unit normals, and class-id agreement:",
        "",
        "| model | export (s) | " + " | ".join(f"{h}x{w}" for h, w in PARITY_SIZES) + " |",
        "|---|---|" + "---|" * len(PARITY_SIZES),
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | failed: {row['error']} |" + " |" * len(PARITY_SIZES))
            continue
        cells = [f"{_fmt(c['probabilities'])} / {_fmt(c['depth'])} ({c['depth_max']:.3g}) / {_fmt(c['normals'])}, "
                 f"{100 * c['class_agreement']:.2f} %" for c in (row[f"{h}x{w}"] for h, w in PARITY_SIZES)]
        label = row["model"] + (" (fixed-size exports¹)" if row["export"] == "fixed size" else "")
        lines.append(f"| {label} | {row['export_s']:.0f} | " + " | ".join(cells) + " |")
    notes = [f"¹ {row['model']}: the dynamic export failed ({row['dynamic_error']}); exported once per size "
             "(`dynamic=False, size=(H, W)`), export time is the mean." for row in rows if "dynamic_error" in row]
    return lines + ([""] + notes if notes else [])


def _metrics_table(scores: dict[str, dict[str, float]], result: dict[str, Any], rooms: SyntheticScenes,
                   params: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"**b) Metrics** of the demo model on the {len(rooms)} held-out rooms ({params.get('height')}x"
        f"{params.get('width')}, pixcore's metrics); Δ against eager torch:",
        "",
        "| runner | " + " | ".join(f"{label} | Δ" for _, _, label in METRICS) + " | class ids = eager |",
        "|---|" + "---|---|" * len(METRICS) + "---|",
    ]
    for name in scores:
        cells = []
        for task, key, _ in METRICS:
            value, base = scores[name][f"{task}/{key}"], scores["eager torch"][f"{task}/{key}"]
            cells.append(f"{value:.5f} | {value - base:+.1e}" if name != "eager torch" else f"{value:.5f} | ")
        agreement = result["metrics"][name]["class_agreement_vs_eager"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * agreement:.2f} % |")
    return lines


def _variants_table(variants: dict[str, Any], calibration: int) -> list[str]:
    lines = [
        "",
        f"**c) Static INT8 variants** ({calibration} calibration images from `data.train`), Δ against ORT "
        "fp32 on the same rooms:",
        "",
        "| variant | quantise (s) | " + " | ".join(f"Δ {label}" for _, _, label in METRICS) + " | class ids = fp32 |",
        "|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for label, v in variants.items():
        cells = [f"{v['delta'][f'{t}/{k}']:+.5f}" for t, k, _ in METRICS]
        lines.append(f"| {label} | {v['seconds']:.0f} | " + " | ".join(cells)
                     + f" | {100 * v['class_agreement_vs_fp32']:.2f} % |")
    return lines


def _latency_table(result: dict[str, Any], jobs: dict[tuple[str, str], Any], args: argparse.Namespace,
                   compile_note: str) -> list[str]:
    lines = [
        "",
        f"**d) Latency**, demo model, batch 1, {args.threads} threads; median ms of {args.rounds} interleaved rounds "
        f"after {args.warmup} warm-up calls (ratio: median of the per-round ratios to eager); {compile_note}; "
        f"1-minute load average before / after: {result['load_average']['before']} / "
        f"{result['load_average']['after']}; idle threads "
        + ("spin (library defaults)" if SPINNING else "sleep (`--no-spinning`)") + ":",
        "",
        "| runner | " + " | ".join(f"{s}x{s} (ms) | vs eager" for s in args.sizes) + " |",
        "|---|" + "---|---|" * len(args.sizes),
    ]
    for name in dict.fromkeys(name for name, _ in jobs):
        cells = []
        for size in args.sizes:
            entry = result["latency"][f"{name} @ {size}x{size}"]
            cells.append(f"{entry['median_ms']:.1f} | {entry['vs_eager']:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _size_table(result: dict[str, Any]) -> list[str]:
    lines = ["", "**e) Export and quantisation**, demo model:", "",
             "| file | how | seconds | size (MB) |", "|---|---|---|---|"]
    for name, entry in result["size"].items():
        lines.append(f"| {name} | {entry['what']} | {entry['seconds']:.1f} | {entry['mb']:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--checkpoint", type=Path, default=None, help="a trained demo run's checkpoint (default: random weights)")
    add("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads (and OMP_NUM_THREADS)")
    add("--sizes", type=int, nargs="+", default=[256, 512], help="square image sizes of the latency table")
    add("--rounds", type=int, default=15, help="interleaved timing rounds")
    add("--warmup", type=int, default=3, help="untimed calls per job first")
    add("--calibration", type=int, default=64, help="calibration images for static INT8")
    add("--vit", default="timm/vit_tiny_patch16_224", help="the plain ViT of the parity table")
    add("--no-spinning", action="store_true",
        help="idle threads sleep (OMP_WAIT_POLICY=PASSIVE, ORT allow_spinning=0) instead of spinning")
    add("--export-timeout", type=int, default=1800, help="seconds before a parity export is given up")
    add("--parity-models", nargs="+", default=None,
        help="only these models in the parity table: 'demo', timm/resnet18, timm/swin_tiny_patch4_window7_224, --vit")
    add("--out", type=Path, default=DEFAULT_OUT, help="folder for bench_export.json and .md")
    add("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
        help="what to run besides the export and quantisation (e): a) parity, b) metrics, c) variants, d) latency")
    add("--quick", action="store_true", help="smoke run: demo model only, no variants, 3 rounds, 1 warm-up call")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup = 3, 1
        args.sections = [s for s in args.sections if s != "variants"]
    run(args)


if __name__ == "__main__":
    main()
