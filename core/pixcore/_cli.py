"""The ``pixcore`` command line: demo, train, launch, eval, predict, export, shard, plugins, list.

A mistake of the user's (a :class:`~pixcore.PixcoreError`: a bad config value, a damaged
checkpoint, an unknown device) is one line on stderr, ``pixcore: error: ...``, and exit
status 2. Anything else is a bug and shows its traceback. ``--debug`` (or
``PIXCORE_DEBUG=1``) shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence, Sized
from importlib.resources import files
from pathlib import Path
from typing import Any, cast

from pixcore._errors import ConfigError, PixcoreError

__all__ = ["DEBUG_ENV", "main"]

#: Set to 1 to show the traceback of every error, as ``pixcore --debug`` does.
DEBUG_ENV = "PIXCORE_DEBUG"

#: The demo's promise: how far the model must beat each trivial baseline.
#: (task, metric key, higher is better, required ratio model/baseline)
DEMO_BARS: tuple[tuple[str, str, bool, float], ...] = (
    ("semseg", "miou", True, 2.0),
    ("depth", "abs_rel", False, 0.5),
    ("normals", "mean", False, 0.6),
)
#: ... and the IoU every segmentation class must reach on the held-out rooms: a high mIoU can
#: hide a class the model never predicts.
DEMO_MIN_CLASS_IOU = 0.5


def _class_ious(metrics: dict[str, Any], class_names: Sequence[str] | None) -> list[tuple[str, float, bool]]:
    """``(class name, IoU, reaches DEMO_MIN_CLASS_IOU)`` per class of a ``miou`` result.

    A NaN IoU (a class neither shown nor predicted) fails: the demo promises every class.
    Classes are named by the data set when it names as many as the metric scored.
    """
    count = sum(1 for key in metrics if key.startswith("iou/"))
    names = list(class_names) if class_names is not None and len(class_names) == count else None
    rows = []
    for c in range(count):
        iou = float(metrics[f"iou/{c}"])
        rows.append((names[c] if names else f"class {c}", iou, iou >= DEMO_MIN_CLASS_IOU))
    return rows


def _demo_precision(overrides: Sequence[str], bf16_native: bool) -> list[str]:
    """The demo's overrides, with bfloat16 first where the device computes it natively.

    A step costs 0.6-0.7x there, which is what lets the demo train 500 steps in little more
    time than 300 took; emulated bfloat16 is slower than float32, so other devices keep the
    config's float32. First, so that a ``trainer.precision`` the user sets wins.
    """
    return ["trainer.precision=bf16", *overrides] if bf16_native else list(overrides)


def _demo_config_path() -> Path:
    return Path(str(files("pixcore") / "configs" / "demo.yaml"))


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset

    from pixcore._config import load_config
    from pixcore.train import EXIT_INTERRUPTED, bf16_is_native, evaluate_baselines, select_device, train
    from pixcore.viz import image_to_rgb, save_grid

    overrides = list(args.set or [])
    if args.steps is not None:
        overrides.append(f"trainer.steps={args.steps}")
    if args.device is not None:
        overrides.append(f"trainer.device={args.device}")
    device = select_device(load_config(_demo_config_path(), overrides).trainer.device)
    config = load_config(_demo_config_path(), _demo_precision(overrides, bf16_is_native(device)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    precision = {"32": "float32", "bf16": "bfloat16", "fp16": "float16"}[config.trainer.precision]
    print(f"pixcore demo: {config.trainer.steps} steps on {device} in {precision}, writing to {out}/", flush=True)

    trainer, result = train(config, out_dir=out, overwrite=True)  # a new demo replaces the last one
    if result.interrupted:  # a signal stopped it after the checkpoint (message printed): no report
        return EXIT_INTERRUPTED
    model = trainer.model

    # Trivial baselines, fitted on training scenes and scored on the same held-out scenes.
    assert trainer.val_loader is not None
    train_set = trainer.train_loader.dataset
    fit_loader: DataLoader[Any] = DataLoader(
        # The demo's data sets are map-style, hence Sized.
        Subset(train_set, range(min(256, len(cast(Sized, train_set))))), batch_size=config.data.batch_size
    )
    baselines = evaluate_baselines(model.cpu(), fit_loader, trainer.val_loader)
    model.to(trainer.device)

    rows, verdicts = [], []
    for task, key, higher, ratio in DEMO_BARS:
        ours, base = result.metrics[task][key], baselines[task][key]
        achieved = ours / base if base else float("inf")
        ok = achieved >= ratio if higher else achieved <= ratio
        verdicts.append(ok)
        rows.append((task, key, ours, base, achieved, ("x >= " if higher else "x <= ") + f"{ratio:g}", ok))

    print(f"\ntrained {result.steps} steps in {result.seconds:.0f} s\n")
    print(f"{'task':<8} {'metric':<8} {'model':>9} {'baseline':>9} {'ratio':>7}  {'goal':<8} ok")
    for task, key, ours, base, achieved, goal, ok in rows:
        print(f"{task:<8} {key:<8} {ours:>9.4f} {base:>9.4f} {achieved:>7.3f}  {goal:<8} {'yes' if ok else 'NO'}")
    for task, values in result.metrics.items():
        print(f"  {task} protocols: {values.get('protocol')}")
    classes = _class_ious(result.metrics[DEMO_BARS[0][0]], getattr(trainer.val_loader.dataset, "class_names", None))
    print(f"\n{'class':<10} {'IoU':>6}  goal      ok")
    for name, iou, ok in classes:
        print(f"{name:<10} {iou:>6.3f}  >= {DEMO_MIN_CLASS_IOU:<6g} {'yes' if ok else 'NO'}")
    verdicts.extend(ok for _, _, ok in classes)

    summary = {
        "model": result.metrics,
        "baseline": baselines,
        "bars": [
            {"task": t, "metric": k, "model": o, "baseline": b, "ratio": a, "goal": g, "passed": ok}
            for t, k, o, b, a, g, ok in rows
        ],
        "classes": [{"class": n, "iou": v, "goal": f">= {DEMO_MIN_CLASS_IOU:g}", "passed": ok} for n, v, ok in classes],
        "steps": result.steps,
        "seconds": result.seconds,
        "device": str(trainer.device),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))

    # A picture of held-out samples: input | target and prediction for every task.
    val_set = trainer.val_loader.dataset
    model.eval()
    panels = []
    with torch.no_grad():
        for index in range(min(args.samples, len(cast(Sized, val_set)))):  # map-style, as above
            sample = val_set[index]
            predictions = model(sample["image"].unsqueeze(0).to(trainer.device))
            row = [image_to_rgb(np.asarray(sample["image"]))]
            for name, binding in model.bindings.items():
                target, valid = binding.task.target_and_valid({k: v.unsqueeze(0) for k, v in sample.items()})
                row.extend(binding.task.visualize_pair(target[0], predictions[name][0].cpu(), valid[0]))
            panels.append(row)
    labels = ["input"] + [f"{n} {w}" for n in model.bindings for w in ("truth", "pred")]
    grid = save_grid(out / "samples.png", panels, labels, scale=2)
    from pixcore.report import build_report

    report = build_report(out)
    print(f"\nwrote {out / 'metrics.json'}, {out / 'log.csv'}, {result.checkpoint}, {grid}")
    print(f"report: {report} (opens offline in a browser; `pixcore report {out}` redraws it)")
    if all(verdicts):
        print(f"the model beats every trivial baseline by the required margin; every class has IoU >= "
              f"{DEMO_MIN_CLASS_IOU:g}")
        return 0
    print(f"the model did NOT beat every baseline by the required margin or reach IoU {DEMO_MIN_CLASS_IOU:g} "
          "in every class (see 'ok' above)")
    return 1 if args.check else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pixcore.train._launch import record_exit_status

    code = _train(args)
    record_exit_status(code)  # for `pixcore launch`, when it started this process
    return code


def _train(args: argparse.Namespace) -> int:
    from pixcore._config import load_config
    from pixcore.train import EXIT_INTERRUPTED, train

    config = load_config(args.config, args.set)
    resume = None
    if args.resume:
        resume = Path(args.out) / "checkpoint.safetensors"
        if not resume.exists():
            raise PixcoreError(
                f"--resume: there is no checkpoint at {resume}. Pass the --out folder of the run to "
                "resume, or leave out --resume to start a new run."
            )
    trainer, result = train(config, out_dir=args.out, resume=resume, overwrite=args.overwrite)
    if result.interrupted:  # a signal stopped it after writing the checkpoint (message printed)
        return EXIT_INTERRUPTED
    if trainer.is_main_process:
        print(json.dumps(result.metrics, indent=2))
    return 0


def _cmd_launch(args: argparse.Namespace) -> int:
    from pixcore.train._launch import launch

    return launch(args.torchrun_args)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pixcore.sweep._command import sweep_command

    return sweep_command(args)


def _inference_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Predictor options of ``eval`` and ``predict``."""
    if args.overlap is not None and args.window is None:
        raise PixcoreError("--overlap applies to sliding-window inference; give --window H W too")
    return {
        "hflip": args.tta,
        "scales": tuple(args.scales) if args.scales else (1.0,),
        "window": tuple(args.window) if args.window is not None else None,
        "overlap": 0.5 if args.overlap is None else args.overlap,
        "weighting": args.window_weights,
    }


def _cmd_eval(args: argparse.Namespace) -> int:
    from pixcore._config import load_config
    from pixcore.infer import evaluate_checkpoint, format_metrics

    config = load_config(args.config, args.set)
    options = _inference_options(args)
    device = args.device or config.trainer.device
    if args.model is not None:  # an exported model, in ONNX Runtime
        from pixcore.export._evaluate import evaluate_exported

        results = evaluate_exported(config, args.model, device=device, **options)
    else:
        results = evaluate_checkpoint(config, args.checkpoint, weights=args.weights, device=device, **options)
    print(format_metrics(results))
    if args.out is not None:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        source = {"model": str(args.model)} if args.model is not None else {"checkpoint": str(args.checkpoint)}
        record = {**source, "config": str(args.config), "weights": args.weights,
                  "inference": options, "metrics": results}
        out.write_text(json.dumps(record, indent=2))
        print(f"\nwrote {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pixcore.export import export_model

    size = None if args.size is None else (args.size[0], args.size[1])
    result = export_model(args.checkpoint, args.out, format=args.format, opset=args.opset, dynamic=args.dynamic,
                          size=size, probabilities=not args.no_probabilities)
    outputs = ", ".join(o["name"] for o in result.metadata["outputs"])  # type: ignore[attr-defined]
    shape = "dynamic batch, height and width" if args.dynamic else f"fixed size {size or 'of 97x130'}"
    print(f"wrote {result.path} ({result.size_bytes / 2**20:.1f} MiB, {result.seconds:.1f} s): input image uint8 "
          f"[B, 3, H, W], {shape}; outputs {outputs}")
    if args.int8 is not None:
        _quantize_export(args, result.path)
    return 0


def _quantize_export(args: argparse.Namespace, model: Path) -> None:
    """``export --int8 static|dynamic``: an INT8 copy beside the fp32 model (ONNX Runtime quantisation)."""
    from pixcore.export._quantize import calibration_images, quantize_model

    if args.format != "onnx":
        raise ConfigError("--int8 quantises an ONNX model: use it with --format onnx")
    images = None
    if args.int8 == "static":
        if args.calibration is None:
            raise ConfigError("--int8 static calibrates on real images: give --calibration CONFIG (its data.train "
                              "images are used), or use --int8 dynamic")
        images = calibration_images(args.calibration, count=args.calibration_images)
    path = quantize_model(model, model.with_name("model.int8.onnx"), mode=args.int8, calibration=images)
    calibrated = f", calibrated on {len(images)} images" if images else ""
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, INT8 {args.int8}{calibrated}); score it with "
          f"`pixcore eval CONFIG --model {path}`")


def _cmd_shard(args: argparse.Namespace) -> int:
    from pixcore.data._shardwrite import dataset_to_shard, write_shards

    dataset, source = dataset_to_shard(args.source, args.split, args.set)
    print(f"writing {len(dataset)} samples of {source['name']} into {args.out}/ (split {args.split})", flush=True)
    written = write_shards(dataset, args.out, split=args.split, shard_size=args.shard_size, source=source,
                           overwrite=args.overwrite, workers=args.workers, report=lambda line: print(line, flush=True))
    size = sum(shard.bytes for shard in written.index.shards) / 1e6
    print(f"wrote {written.index.samples} samples in {len(written.index.shards)} shards ({size:.1f} MB) and "
          f"{args.out}/index.json in {written.seconds:.1f} s; stream them with\n"
          f"  data.{'train' if args.split != 'val' else 'val'}: {{name: shards, params: {{url: {args.out}, "
          f"split: {args.split}}}}}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.model is not None:
        return _predict_exported(args)
    from pixcore.infer import Predictor, load_model, predict_images
    from pixcore.train import select_device

    device = select_device(args.device)
    model = load_model(args.checkpoint, weights=args.weights, device=device)
    predictor = Predictor(model, **_inference_options(args))
    written = predict_images(predictor, args.images, args.out, overwrite=args.overwrite, device=device,
                             max_pixels=args.max_pixels)
    print(f"wrote {len(written)} files to {args.out}/")
    return 0


def _predict_exported(args: argparse.Namespace) -> int:
    """``predict --model``: an exported model in ONNX Runtime; imports neither torch nor pydantic."""
    from pixcore.export._runtime import predict_images

    if args.weights != "auto":
        raise PixcoreError("--weights chooses the weights of a checkpoint; an exported model (--model) holds "
                           "the weights it was exported with: leave out --weights")
    written = predict_images(args.model, args.images, args.out, overwrite=args.overwrite, max_pixels=args.max_pixels,
                             device=args.device, **_inference_options(args))
    print(f"wrote {len(written)} files to {args.out}/")
    return 0


def _add_inference_arguments(parser: argparse.ArgumentParser, exported: bool = False) -> None:
    """The options of ``eval`` and ``predict``; ``exported``: ``--model`` as the alternative to ``--checkpoint``."""
    if exported:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--checkpoint", type=Path, help="checkpoint.safetensors written by `pixcore train`")
        source.add_argument("--model", type=Path,
                            help="model.onnx written by `pixcore export`, run with ONNX Runtime (torch not needed)")
    else:
        parser.add_argument("--checkpoint", type=Path, required=True,
                            help="checkpoint.safetensors written by `pixcore train`")
    parser.add_argument("--weights", choices=("auto", "model", "ema"), default="auto",
                        help="trained or EMA weights; auto (default): EMA if the run evaluated with them")
    parser.add_argument("--tta", action="store_true",
                        help="average with the prediction on the mirrored image (mirrored back per "
                             "target kind: normals' x negated)")
    parser.add_argument("--scales", type=float, nargs="+", metavar="S",
                        help="also average over these image scales, e.g. --scales 0.75 1 1.25")
    parser.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                        help="predict in overlapping H x W windows and stitch them")
    parser.add_argument("--overlap", type=float,
                        help="fraction of a window shared with its neighbour (default 0.5)")
    parser.add_argument("--window-weights", choices=("gaussian", "uniform"), default="gaussian",
                        help="weights within a window when stitching (default gaussian)")


def _cmd_plugins(args: argparse.Namespace) -> int:
    from pixcore.plugin._manager import get_plugin_manager

    infos = get_plugin_manager().plugins()
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return 0
    for info in infos:
        version = f" {info.version}" if info.version else ""
        print(f"{info.name}: {info.distribution}{version} [{info.status}]")
        if info.error:
            print(f"    error: {info.error}")
        for family, names in info.registered.items():
            print(f"    {family}: {', '.join(names)}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from pixcore.plugin._manager import get_plugin_manager
    from pixcore.plugin._registry import FAMILIES

    manager = get_plugin_manager()
    if args.check:
        return _check_backbone(args)
    families = [args.family] if args.family else list(FAMILIES)
    for family in families:
        registry = manager.registry(family)
        names = registry.list(args.pattern)
        print(f"{family} ({len(names)}):")
        for name in names[: args.limit]:
            print(f"  {name}")
        if len(names) > args.limit:
            print(f"  ... {len(names) - args.limit} more (use --limit)")
    return 0


def _check_backbone(args: argparse.Namespace) -> int:
    from pixcore.model._support import DEFAULT_CHECK_SIZES, check_support

    if args.family not in (None, "backbones"):
        raise ConfigError(f"--check checks a backbone; use `pixcore list backbones --check NAME`, not {args.family!r}")
    sizes = DEFAULT_CHECK_SIZES if args.sizes is None else tuple(_size(text) for text in args.sizes.split(","))
    report = check_support(args.check, params=_backbone_params(args.set or []), sizes=sizes)
    print(report.format())
    return 0 if report.ok else 1


def _size(text: str) -> tuple[int, int]:
    height, sep, width = text.strip().lower().partition("x")
    if not (sep and height.isdigit() and width.isdigit() and int(height) > 0 and int(width) > 0):
        raise ConfigError(f"--sizes: {text!r} is not HEIGHTxWIDTH (e.g. 97x130)")
    return int(height), int(width)


def _backbone_params(items: list[str]) -> dict[str, object]:
    import yaml

    params: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected PARAM=VALUE, e.g. --set size_policy=resize")
        params[key] = yaml.safe_load(value)
    return params


def _cmd_report(args: argparse.Namespace) -> int:
    from pixcore.report import build_report

    path = build_report(args.run_dir, args.out)
    print(f"wrote {path} (its pictures are also in {Path(args.run_dir) / 'report'}/)")
    return 0


def _cmd_new_plugin(args: argparse.Namespace) -> int:
    from pixcore._scaffold import write_plugin

    scaffold = write_plugin(args.name, args.out, task=args.task)
    names = scaffold.names
    print(f"wrote {len(scaffold.files)} files to {scaffold.root}/: distribution "
          f"{names.distribution}, package {names.package}, plugin {names.plugin}")
    for family, registered in scaffold.registered.items():
        print(f"    {family}: {', '.join(registered)}")
    print(f"next:\n    cd {scaffold.root}\n    pip install -e .\n    pytest\n    pixcore plugins")
    return 0


def _parser(registry: bool = True) -> argparse.ArgumentParser:
    """The command line; ``registry=False`` leaves the families of ``list`` unchecked, sparing the
    import of the plugin system (pydantic) to commands that do not need it (``predict --model``
    runs where only numpy, Pillow and onnxruntime are installed)."""
    from pixcore import __version__

    families: tuple[str, ...] | None = None
    if registry:
        from pixcore.plugin._registry import FAMILIES as families

    parser = argparse.ArgumentParser(prog="pixcore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pixcore {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of user errors too (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a multi-task model on synthetic scenes and report")
    demo.add_argument("--out", default="pixcore-demo", help="output folder (default: pixcore-demo)")
    demo.add_argument("--steps", type=int, help="optimiser steps (default: the demo config's)")
    demo.add_argument("--device", help="'auto' (default), 'cpu', 'cuda', 'mps'")
    demo.add_argument("--samples", type=int, default=6, help="held-out samples in samples.png")
    demo.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    demo.add_argument("--check", action="store_true", help="exit 1 if a baseline bar is missed")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser("train", help="train from a YAML/JSON run config")
    train.add_argument("config", type=Path)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set trainer.steps=100")
    train.add_argument("--out", default="runs/latest", help="output folder")
    train.add_argument("--resume", action="store_true",
                       help="continue exactly from <out>/checkpoint.safetensors (same config and "
                            "number of processes); exit status 75 means a signal stopped the run "
                            "after a checkpoint, resume it with --resume")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --out (its checkpoint and logs); without it "
                            "a folder that holds a run is refused")
    train.set_defaults(func=_cmd_train)

    launch = sub.add_parser(
        "launch", add_help=False,
        help="torchrun with pixcore's exit status: 75 when a signal stopped every worker after "
             "its checkpoint (`pixcore launch --nproc-per-node 2 --no-python pixcore train ...`)")
    launch.add_argument("torchrun_args", nargs=argparse.REMAINDER, help="torchrun's own arguments")
    launch.set_defaults(func=_cmd_launch)

    from pixcore.sweep._command import add_arguments as add_sweep_arguments

    sweep = sub.add_parser("sweep", help="train every setting x seed of a grid, each a `pixcore train` run in its "
                                         "own folder (resumable), and compare them: mean ± std, delta-m, plots")
    add_sweep_arguments(sweep)
    sweep.set_defaults(func=_cmd_sweep)

    evaluation = sub.add_parser("eval", help="score a checkpoint on a config's held-out data (data.val)")
    evaluation.add_argument("config", type=Path, help="run config (YAML/JSON); its data.val is scored")
    _add_inference_arguments(evaluation, exported=True)
    evaluation.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a config value, e.g. --set data.batch_size=4")
    evaluation.add_argument("--device", help="'auto', 'cpu', 'cuda', 'mps' (default: the config's)")
    evaluation.add_argument("--out", help="also write the metrics to this JSON file")
    evaluation.set_defaults(func=_cmd_eval)

    predict = sub.add_parser("predict", help="write the predictions of a checkpoint (or of an exported "
                                             "model, with ONNX Runtime) for image files")
    predict.add_argument("images", nargs="+", type=Path, help="image files or folders of them (.png, .jpg)")
    _add_inference_arguments(predict, exported=True)
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--device", default="auto",
                         help="'auto' (default), 'cpu', 'cuda', 'mps'; with --model 'auto' (CUDA if this "
                              "onnxruntime has it), 'cpu', 'cuda' or 'cuda:N'")
    predict.add_argument("--overwrite", action="store_true", help="replace existing output files")
    predict.add_argument("--max-pixels", type=int, default=None, metavar="N",
                         help="accept images of up to N pixels (width x height); default: Pillow's "
                              "limit, about 179 million. Larger images are refused before anything is "
                              "written")
    predict.set_defaults(func=_cmd_predict)

    export = sub.add_parser("export", help="a checkpoint as an ONNX or torch.export graph with its metadata")
    export.add_argument("checkpoint", type=Path, help="checkpoint file (.safetensors) of a trained model")
    export.add_argument("--format", choices=("onnx", "torch-export"), default="onnx")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    export.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    export.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="the fixed input size without --dynamic")
    export.add_argument("--no-probabilities", action="store_true",
                        help="class ids only for segmentation (no <task>_probabilities output)")
    export.add_argument("--int8", choices=("static", "dynamic"),
                        help="also write model.int8.onnx, quantised by ONNX Runtime (static: calibrated)")
    export.add_argument("--calibration", type=Path, metavar="CONFIG",
                        help="with --int8 static: a run config whose data.train images calibrate it")
    export.add_argument("--calibration-images", type=int, default=64, metavar="N", help="default 64")
    export.add_argument("--out", required=True, type=Path, help="output folder")
    export.set_defaults(func=_cmd_export)

    shard = sub.add_parser("shard", help="write a data set into tar shards (WebDataset layout) plus index.json, "
                                         "to stream it with the `shards` data set")
    shard.add_argument("source", metavar="CONFIG_OR_DATASET",
                       help="a run config (its data.train or data.val) or a data set name (e.g. voc)")
    shard.add_argument("--out", required=True, help="folder or fsspec URL (s3://bucket/prefix) to write to")
    shard.add_argument("--split", default="train",
                       help="train (default) or val: which part of a config, and the shards' split name")
    shard.add_argument("--shard-size", default="1GB", help="size of each tar file (default 1GB; e.g. 256MB)")
    shard.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a config override (with a config) or a data set parameter (with a name)")
    shard.add_argument("--workers", type=int, default=0, help="processes that decode and encode samples")
    shard.add_argument("--overwrite", action="store_true", help="replace the split if --out already holds it")
    shard.set_defaults(func=_cmd_shard)

    plugins = sub.add_parser("plugins", help="installed plugins, versions and what they register")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=_cmd_plugins)

    listing = sub.add_parser("list", help="names in the registries")
    listing.add_argument("family", nargs="?", choices=families)
    listing.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'timm/resnet*'")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--check", metavar="NAME",
                         help="build backbone NAME and report the input sizes and heads it works with")
    listing.add_argument("--sizes", metavar="HxW,...",
                         help="with --check: the sizes to try (default: 32x32 to 1024x768)")
    listing.add_argument("--set", action="append", metavar="PARAM=VALUE",
                         help="with --check: a backbone parameter (repeatable)")
    listing.set_defaults(func=_cmd_list)

    new_plugin = sub.add_parser(
        "new-plugin", help="write a new plugin package that installs and passes its tests")
    new_plugin.add_argument("name",
                            help="distribution name, e.g. pixcore-edges (package pixcore_edges)")
    new_plugin.add_argument("--task", action="store_true",
                            help="a task with its head, loss, metric and data set "
                                 "(default: one head)")
    new_plugin.add_argument("--out", type=Path,
                            help="folder to create, which must be new or empty (default: ./NAME)")
    new_plugin.set_defaults(func=_cmd_new_plugin)

    report = sub.add_parser("report", help="an HTML report of a run folder: curves, metrics, error maps, samples")
    report.add_argument("run_dir", type=Path, help="the --out folder of `pixcore train` or `pixcore demo`")
    report.add_argument("--out", type=Path, help="the HTML file to write (default: RUN_DIR/report.html)")
    report.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pixcore`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:  # everything after it is torchrun's, options included
        args = _parser().parse_args(["launch"])
        args.torchrun_args = argv[1:]
    else:
        command = next((arg for arg in argv if not arg.startswith("-")), None)
        args = _parser(registry=command != "predict").parse_args(argv)  # predict --model: no pydantic
    try:
        return int(args.func(args))
    except PixcoreError as error:
        if _debugging(args):
            raise
        print(f"pixcore: error: {error}", file=sys.stderr)
        return 2


def _debugging(args: argparse.Namespace) -> bool:
    flag = os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
    return flag or bool(getattr(args, "debug", False))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
