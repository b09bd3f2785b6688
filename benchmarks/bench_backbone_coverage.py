"""Which timm model families run as backbones at any input size: pixcore-timm against segmentation_models_pytorch.

Usage::

    python benchmarks/bench_backbone_coverage.py [--threads 2] [--out DIR]
    python benchmarks/bench_backbone_coverage.py --families resnet,swin_transformer,vision_transformer
    python benchmarks/bench_backbone_coverage.py --skip-smp          # pixcore only

Families come from timm itself: every module of ``timm.models`` that registers models
(``timm.models._registry._module_to_models``) is a family. Its representative is the model
of that module with the fewest parameters (timm's tiny ``test_*`` models only when a
family has no other), counted on the meta device
(``with torch.device("meta"): timm.create_model(name)``; names that fail to build there
are skipped and listed in the JSON; ties go to the first name alphabetically). A family
*supports features* when ``timm.create_model(representative, features_only=True)`` builds
(on the CPU, random weights); the others are listed as excluded, with timm's error.

Input sizes (height x width): 224x224 (most models' native size), 256x320, 97x130 (odd,
prime height, a multiple of nothing) and 512x768 (large, non-square). For every
(family, size):

* ``pixcore``: ``pixcore.build_model(f"timm/{rep}", tasks={"depth": {}, "semseg": {"task":
  "segmentation", "params": {"num_classes": 5}}})`` (random weights, default heads), eval
  mode, ``torch.no_grad``, a ``[1, 3, H, W]`` uint8 image. It passes when both predictions
  are at the input size (``[1, 1, H, W]`` depth, ``[1, 5, H, W]`` logits) and finite.
* ``smp``: ``smp.Unet(encoder_name=f"tu-{rep}", encoder_weights=None, classes=5)``; when
  Unet cannot build (or fails at every size), ``smp.FPN`` with the same arguments, then
  ``smp.DPT`` (``dynamic_img_size=True``, as smp's documentation asks for at sizes other
  than the native one; without it if the encoder refuses it): the first that works is
  kept and named in the table. smp models take only sizes divisible by their output
  stride and raise an error naming it otherwise, so the float ``[1, 3, H, W]`` image is
  zero-padded (``F.pad``, bottom and right) to a multiple of ``model.encoder.output_stride``
  (32 for most encoders), as an smp user does, and the ``[1, 5, H', W']`` output cropped
  back to ``H x W``. It passes when the output has that shape and is finite.

Each model is built once per family and reused across sizes; every exception is caught and
recorded as ``type: message`` (first 200 characters), with the line that raised it and,
for chained errors, the innermost cause. A forward hook on pixcore's backbone also checks
that every feature map has the contract's size ``ceil(H / stride)`` for the (padded) input
it got; a mismatch is listed separately and does not fail the case, since the heads resize
features anyway. Results go to ``--out`` (``bench_backbone_coverage.json`` and ``.md``):
counts, a table with one row per family (representative, size policy picked by pixcore, a
tick or cross per size for each framework), every failure with its reason, and the
off-contract cases.
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
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from timm.models import _registry  # noqa: E402
from torch import Tensor, nn  # noqa: E402

try:
    import pixcore  # noqa: F401
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

import pixcore  # noqa: E402
from _common import cpu_name  # noqa: E402  (benchmarks/, the script's own folder)

SIZES: tuple[tuple[int, int], ...] = ((224, 224), (256, 320), (97, 130), (512, 768))
NUM_CLASSES = 5
TASKS: dict[str, Any] = {"depth": {}, "semseg": {"task": "segmentation", "params": {"num_classes": NUM_CLASSES}}}
#: smp architectures tried in turn: (class name, extra constructor arguments).
SMP_ATTEMPTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Unet", {}), ("FPN", {}), ("DPT", {"dynamic_img_size": True}),
)
DEFAULT_OUT = Path(tempfile.gettempdir()) / "bench_results"
OK, FAIL = "\u2713", "\u2717"


def _reason(error: BaseException) -> str:
    """``type: message``, the message's first 200 characters on one line."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message[:200]}"


def _root(error: BaseException) -> BaseException:
    """The innermost exception of a chain (``raise ... from``, or raised while handling)."""
    seen = {id(error)}
    while True:
        inner = error.__cause__ or error.__context__
        if inner is None or id(inner) in seen:
            return error
        seen.add(id(inner))
        error = inner


def _where(error: BaseException) -> str:
    """``file:line in function`` of the frame that raised ``error`` (path from site-packages or the repository)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.name != "_assert"]  # torch._assert's caller
    if not frames:
        return ""
    frame = frames[-1]
    path = frame.filename
    for marker in ("site-packages/", "/src/", "/core/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{frame.lineno} in {frame.name}"


def _describe(error: BaseException) -> dict[str, str]:
    root = _root(error)
    described = {"error": _reason(error), "where": _where(error)}
    if root is not error:
        described["cause"] = _reason(root)
        described["cause_where"] = _where(root)
    return described


# --------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------


@dataclass
class Family:
    name: str
    representative: str = ""
    parameters: int = 0
    models: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # names that failed on the meta device
    excluded: str = ""  # why the family does not support features ("" if it does)
    size_policy: str = ""
    feature_info: list[list[int]] = field(default_factory=list)  # [channels, stride] per level (pixcore)
    pixcore_build: dict[str, str] = field(default_factory=dict)  # error, if the build failed
    pixcore_build_s: float = 0.0
    smp_model: str = ""  # e.g. "Unet", "DPT(dynamic_img_size=True)"
    smp_attempts: dict[str, str] = field(default_factory=dict)  # architecture -> why it was not kept
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)  # "HxW" -> {"pixcore": ..., "smp": ...}


def _meta_parameters(name: str) -> int:
    with torch.device("meta"):
        model = timm.create_model(name)
    return sum(p.numel() for p in model.parameters())


def select_families(wanted: list[str] | None) -> list[Family]:
    modules = dict(sorted(_registry._module_to_models.items()))
    if wanted:
        unknown = [w for w in wanted if w not in modules]
        if unknown:
            raise SystemExit(f"unknown families {unknown}; timm's are: {', '.join(modules)}")
        modules = {w: modules[w] for w in wanted}
    families = []
    start = time.perf_counter()
    for i, (module, names) in enumerate(modules.items()):
        family = Family(module, models=len(names))
        counts: dict[str, int] = {}
        for name in sorted(names):
            try:
                counts[name] = _meta_parameters(name)
            except Exception as error:
                family.skipped[name] = _reason(error)
        if counts:
            # timm's tiny ``test_*`` models stand for a family only when it has nothing else.
            family.representative = min(counts, key=lambda n: (n.startswith("test_"), counts[n], n))
            family.parameters = counts[family.representative]
        else:
            family.excluded = "no model of this family builds on the meta device"
        families.append(family)
        print(f"[{i + 1:3d}/{len(modules)}] {module}: {family.representative or '-'} "
              f"({family.parameters / 1e6:.2f} M of {len(names)} models"
              f"{f', {len(family.skipped)} skipped' if family.skipped else ''}) "
              f"[{time.perf_counter() - start:.0f} s]", flush=True)
    return families


def check_features(family: Family) -> None:
    if family.excluded:
        return
    try:
        model = timm.create_model(family.representative, features_only=True)
        del model
    except Exception as error:
        family.excluded = _reason(error)
    gc.collect()


# --------------------------------------------------------------------------------------
# Models and cases
# --------------------------------------------------------------------------------------


def _image(height: int, width: int) -> Tensor:
    g = torch.Generator().manual_seed(height * 10_000 + width)
    return torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=g)


def _check(name: str, prediction: Tensor, channels: int, height: int, width: int) -> str:
    """What is wrong with ``prediction``; empty if it is a finite ``[1, channels, height, width]`` tensor."""
    expected = (1, channels, height, width)
    if tuple(prediction.shape) != expected:
        return f"check failed: {name} has shape {tuple(prediction.shape)}, expected {expected}"
    if not bool(torch.isfinite(prediction).all()):
        bad = int((~torch.isfinite(prediction)).sum())
        return f"check failed: {name} has {bad} non-finite values of {prediction.numel()}"
    return ""


class _ContractProbe:
    """A forward hook on the backbone: each feature map's size against the contract ``ceil(H / stride)``."""

    def __init__(self, backbone: nn.Module) -> None:
        self.strides = [int(level.stride) for level in getattr(backbone, "feature_info", [])]
        self.mismatches: list[str] = []
        backbone.register_forward_hook(self.hook)

    def hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: list[Tensor]) -> None:
        height, width = inputs[0].shape[-2:]
        self.mismatches = []
        for i, (feature, stride) in enumerate(zip(output, self.strides, strict=False)):
            expected = (-(-int(height) // stride), -(-int(width) // stride))
            if tuple(feature.shape[-2:]) != expected:
                self.mismatches.append(f"level {i} (stride {stride}): {tuple(feature.shape[-2:])}, "
                                       f"contract {expected} for a {int(height)}x{int(width)} backbone input")


def build_pixcore(family: Family) -> tuple[nn.Module, _ContractProbe] | None:
    torch.manual_seed(0)
    start = time.perf_counter()
    try:
        model = pixcore.build_model(f"timm/{family.representative}", tasks=TASKS).eval()
    except Exception as error:
        family.pixcore_build = _describe(error)
        return None
    finally:
        family.pixcore_build_s = time.perf_counter() - start
    backbone = model.backbone
    family.size_policy = str(getattr(backbone, "size_policy", "?"))
    family.feature_info = [[int(level.channels), int(level.stride)] for level in getattr(backbone, "feature_info", [])]
    return model, _ContractProbe(backbone)


def run_pixcore(model: nn.Module, probe: _ContractProbe, height: int, width: int) -> dict[str, Any]:
    start = time.perf_counter()
    probe.mismatches = []
    try:
        with torch.no_grad():
            out = model(_image(height, width))
        problem = _check("depth", out["depth"], 1, height, width) or _check(
            "semseg", out["semseg"], NUM_CLASSES, height, width)
        result: dict[str, Any] = {"ok": not problem}
        if problem:
            result["error"] = problem
    except Exception as error:
        result = {"ok": False, **_describe(error)}
    if probe.mismatches:
        result["off_contract"] = list(probe.mismatches)
    result["seconds"] = time.perf_counter() - start
    return result


def _smp_label(architecture: str, kwargs: dict[str, Any]) -> str:
    return architecture + (f"({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")


def run_smp(model: nn.Module, height: int, width: int) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        stride = int(getattr(model.encoder, "output_stride", 32))
        x = _image(height, width).float() / 255.0
        x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1)
        x = F.pad(x, (0, (-width) % stride, 0, (-height) % stride))
        with torch.no_grad():
            out = model(x)
        problem = _check("logits", out[..., :height, :width], NUM_CLASSES, height, width)
        result: dict[str, Any] = {"ok": not problem, "padded": [int(x.shape[-2]), int(x.shape[-1])]}
        if problem:
            result["error"] = problem
    except Exception as error:
        result = {"ok": False, **_describe(error)}
    result["seconds"] = time.perf_counter() - start
    return result


def smp_cases(family: Family, sizes: tuple[tuple[int, int], ...]) -> dict[str, dict[str, Any]]:
    """The result per size of the first smp architecture that builds and runs at some size."""
    import segmentation_models_pytorch as smp

    best: tuple[str, dict[str, dict[str, Any]]] | None = None
    attempts = list(SMP_ATTEMPTS)
    while attempts:
        architecture, kwargs = attempts.pop(0)
        label = _smp_label(architecture, kwargs)
        torch.manual_seed(0)
        try:
            model = getattr(smp, architecture)(
                encoder_name=f"tu-{family.representative}", encoder_weights=None, classes=NUM_CLASSES, **kwargs
            ).eval()
        except Exception as error:
            family.smp_attempts[label] = "build: " + _reason(error)
            if "dynamic_img_size" in kwargs and "dynamic_img_size" in str(error):
                attempts.insert(0, (architecture, {k: v for k, v in kwargs.items() if k != "dynamic_img_size"}))
            continue
        results = {}
        for height, width in sizes:
            results[f"{height}x{width}"] = run_smp(model, height, width)
        del model
        gc.collect()
        if any(r["ok"] for r in results.values()):
            family.smp_model = label
            return results
        family.smp_attempts[label] = "failed at every size"
        best = best or (label, results)
    if best is not None:  # built, but failed everywhere: report the first such architecture
        family.smp_model = best[0]
        return best[1]
    failed = {"ok": False, "error": "no smp architecture builds: " + "; ".join(
        f"{k}: {v}" for k, v in family.smp_attempts.items())[:400]}
    return {f"{h}x{w}": dict(failed) for h, w in sizes}


def run_family(family: Family, sizes: tuple[tuple[int, int], ...], skip_smp: bool) -> None:
    built = build_pixcore(family)
    build = f"pixcore build {family.pixcore_build_s:.1f} s" + (
        f" FAILED ({family.pixcore_build['error']})" if built is None
        else f", policy {family.size_policy}, levels (channels, stride) {family.feature_info}")
    print(f"    {build}", flush=True)
    for height, width in sizes:
        key = f"{height}x{width}"
        if built is None:
            family.cases[key] = {"pixcore": {"ok": False, "build": True, **family.pixcore_build}}
        else:
            family.cases[key] = {"pixcore": run_pixcore(*built, height, width)}
        p = family.cases[key]["pixcore"]
        note = "" if p["ok"] else f"  {p.get('error', '')[:160]}"
        if p.get("off_contract"):
            note += f"  off contract: {'; '.join(p['off_contract'])[:200]}"
        print(f"    {key:>8} pixcore {OK if p['ok'] else FAIL} {p.get('seconds', 0.0):6.2f} s{note}", flush=True)
    del built
    gc.collect()
    if skip_smp:
        return
    start = time.perf_counter()
    results = smp_cases(family, sizes)
    for key, result in results.items():
        family.cases[key]["smp"] = result
        print(f"    {key:>8} smp {family.smp_model or '-'} {OK if result['ok'] else FAIL} "
              f"{result.get('seconds', 0.0):6.2f} s" + ("" if result["ok"] else f"  {result.get('error', '')[:160]}"),
              flush=True)
    print(f"    smp: {time.perf_counter() - start:.1f} s", flush=True)
    gc.collect()


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _count(families: list[Family], framework: str) -> tuple[int, int]:
    cases = [c[framework] for f in families for c in f.cases.values() if framework in c]
    return sum(1 for c in cases if c["ok"]), len(cases)


def report(families: list[Family], sizes: tuple[tuple[int, int], ...], skip_smp: bool, header: list[str]) -> str:
    covered = [f for f in families if not f.excluded]
    excluded = [f for f in families if f.excluded]
    keys = [f"{h}x{w}" for h, w in sizes]
    lines = list(header)
    ok, total = _count(covered, "pixcore")
    lines += ["", f"Families: {len(families)} timm modules, {len(covered)} with features, {len(excluded)} excluded.",
              "", f"- pixcore: **{ok}/{total}** (family, size) cases pass ({100 * ok / max(total, 1):.1f}%)"]
    families_ok = sum(1 for f in covered if all(c["pixcore"]["ok"] for c in f.cases.values()))
    lines.append(f"  - families passing at every size: {families_ok}/{len(covered)}")
    if not skip_smp:
        s_ok, s_total = _count(covered, "smp")
        s_families = sum(1 for f in covered if all(c["smp"]["ok"] for c in f.cases.values()))
        lines.append(f"- smp (same run): **{s_ok}/{s_total}** ({100 * s_ok / max(s_total, 1):.1f}%); families passing "
                     f"at every size: {s_families}/{len(covered)}")
        only_p = sum(1 for f in covered for c in f.cases.values() if c["pixcore"]["ok"] and not c["smp"]["ok"])
        only_s = sum(1 for f in covered for c in f.cases.values() if c["smp"]["ok"] and not c["pixcore"]["ok"])
        lines.append(f"- cases only pixcore passes: {only_p}; only smp passes: {only_s}")
        by_arch: dict[str, int] = {}
        for f in covered:
            by_arch[f.smp_model or "none"] = by_arch.get(f.smp_model or "none", 0) + 1
        lines.append("- smp architecture used: " + ", ".join(f"{k} {v}" for k, v in sorted(by_arch.items())))

    columns = ["family", "representative", "params", "size policy"] + [f"pixcore {k}" for k in keys]
    if not skip_smp:
        columns += ["smp model"] + [f"smp {k}" for k in keys]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for f in covered:
        row = [f.name, f"`{f.representative}`", f"{f.parameters / 1e6:.1f} M",
               f"`{f.size_policy}`" if f.size_policy else "build failed"]
        row += [OK if f.cases[k]["pixcore"]["ok"] else FAIL for k in keys]
        if not skip_smp:
            row += [f.smp_model or "-"] + [OK if f.cases[k]["smp"]["ok"] else FAIL for k in keys]
        lines.append("| " + " | ".join(row) + " |")

    if excluded:
        lines += ["", "Excluded families (no feature extractor):", ""]
        lines += [f"- {f.name} (`{f.representative or '-'}`): {f.excluded}" for f in excluded]

    for framework in ("pixcore",) + (() if skip_smp else ("smp",)):
        failures = [(f, k, f.cases[k][framework]) for f in covered for k in keys if not f.cases[k][framework]["ok"]]
        lines += ["", f"{framework} failures ({len(failures)}):", ""]
        if not failures:
            lines.append("- none")
        for f, k, result in failures:
            where = f" [{result['where']}]" if result.get("where") else ""
            cause = f"; cause: {result['cause']} [{result.get('cause_where', '')}]" if result.get("cause") else ""
            model = f", {f.smp_model}" if framework == "smp" and f.smp_model else ""
            lines.append(f"- {f.name} (`{f.representative}`{model}) {k}: {result.get('error', '')}{where}{cause}")

    off = [(f, k, f.cases[k]["pixcore"]["off_contract"]) for f in covered for k in keys
           if f.cases[k]["pixcore"].get("off_contract")]
    lines += ["", f"pixcore cases whose backbone features are off the contract `ceil(H / stride)` ({len(off)}; "
              "the heads resize them, so the outputs pass, but the features do not follow the input size):", ""]
    if not off:
        lines.append("- none")
    for f, k, mismatches in off:
        lines.append(f"- {f.name} (`{f.representative}`, `{f.size_policy}`) {k}: {'; '.join(mismatches)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--threads", type=int, default=2, help="torch threads (and OMP_NUM_THREADS)")
    add("--families", type=str, default="", help="comma-separated timm modules to run (default: all)")
    add("--skip-smp", action="store_true", help="pixcore only")
    add("--sizes", type=str, default=",".join(f"{h}x{w}" for h, w in SIZES), help="comma-separated HxW sizes")
    add("--out", type=Path, default=DEFAULT_OUT, help="folder for bench_backbone_coverage.json and .md")
    args = parser.parse_args()
    sizes = tuple((int(s.split("x")[0]), int(s.split("x")[1])) for s in args.sizes.split(","))

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    warnings.simplefilter("ignore")  # timm's notices of renamed models, smp's readout hints
    logging.getLogger("timm").setLevel(logging.ERROR)
    wall = time.perf_counter()

    import segmentation_models_pytorch as smp

    wanted = [w.strip() for w in args.families.split(",") if w.strip()] or None
    print("choosing representatives (meta device)", flush=True)
    families = select_families(wanted)
    covered = 0
    for i, family in enumerate(families):
        check_features(family)
        if family.excluded:
            print(f"[{i + 1:3d}/{len(families)}] {family.name}: excluded ({family.excluded})", flush=True)
            continue
        covered += 1
        start = time.perf_counter()
        print(f"[{i + 1:3d}/{len(families)}] {family.name}: {family.representative} "
              f"({family.parameters / 1e6:.1f} M) [{time.perf_counter() - wall:.0f} s]", flush=True)
        run_family(family, sizes, args.skip_smp)
        print(f"    family done in {time.perf_counter() - start:.1f} s", flush=True)

    command = "python benchmarks/bench_backbone_coverage.py " + shlex.join(sys.argv[1:])
    versions = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                "segmentation_models_pytorch": smp.__version__, "pixcore": pixcore.__version__}
    machine = f"{cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores)"
    elapsed = time.perf_counter() - wall
    header = [
        f"machine: {machine}; " + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; torch.set_num_threads({torch.get_num_threads()})",
        f"command: `{command.strip()}` ({elapsed / 60:.1f} min)",
        f"sizes (HxW): {', '.join(f'{h}x{w}' for h, w in sizes)}; batch 1, eval, no_grad, random weights",
    ]
    text = report(families, sizes, args.skip_smp, header)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": command.strip(), "machine": machine, "versions": versions, "threads": torch.get_num_threads(),
        "sizes": [list(s) for s in sizes], "skip_smp": args.skip_smp, "wall_s": elapsed,
        "families": [asdict(f) for f in families],
    }
    (args.out / "bench_backbone_coverage.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bench_backbone_coverage.md").write_text(text + "\n")
    print(f"\nwrote {args.out / 'bench_backbone_coverage.json'} and {args.out / 'bench_backbone_coverage.md'}")


if __name__ == "__main__":
    main()
