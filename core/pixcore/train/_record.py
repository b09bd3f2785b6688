"""What a run keeps for its report (``pixcore report``), besides the logs and the checkpoint.

* ``<out>/run.jsonl`` (:class:`RunRecord`): a ``{"kind": "start", ...}`` line each time
  ``fit`` starts (the resolved config, versions, device, processes, precision) and a
  ``{"kind": "end", ...}`` line when it ends (training time, steps per second, why it
  stopped). A resumed run keeps the lines up to its step and appends, as the logs do.
* ``<out>/eval/step_<step>.npz`` (:class:`EvaluationSnapshot`), one file per evaluation:
  the confusion matrix (counts) of every class-mask task over the whole validation set,
  and the first :data:`SNAPSHOT_SAMPLES` validation samples: their image, each task's
  target, prediction and validity, and the task's own pictures of target and prediction.
  A resumed run deletes the files of the steps after its checkpoint.

Only rank 0 writes; the confusion matrices are summed over the ranks first. The samples
are the first ones of rank 0's share of the validation loader, which is not shuffled: the
same samples at every evaluation.

The cost is one ``argmax`` and one ``index_add_`` per class-mask task and batch (the
``miou`` metric does the same work) and, for the first batch only, a copy of a few
samples to the CPU and their pictures.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from pixcore._runfiles import EVAL_DIR, RUN_FILE, SNAPSHOT_FORMAT, snapshot_path, snapshot_paths
from pixcore.train._callbacks import Callback, restart_jsonl
from pixcore.train._distributed import DistributedInfo

if TYPE_CHECKING:
    from pixcore._interfaces import Task
    from pixcore.model._compose import MultiTaskModel
    from pixcore.train._trainer import Trainer, TrainResult

__all__ = [
    "EVAL_DIR",
    "MAX_SIDE",
    "RUN_FILE",
    "SNAPSHOT_SAMPLES",
    "EvaluationSnapshot",
    "RunRecord",
    "first_indices",
    "snapshot_path",
    "snapshot_paths",
    "task_role",
]

#: Validation samples kept at every evaluation.
SNAPSHOT_SAMPLES = 4
#: Kept samples larger than this (pixels, either side) are kept at every n-th pixel, so that
#: a snapshot stays small (about 0.5 MB for the demo's four 96 x 96 samples, about 2 MB at the cap).
MAX_SIDE = 192

#: What the report can draw for a task: its confusion matrix, depth errors, angular errors.
Role = Literal["segmentation", "depth", "normals", "other"]

def task_role(task: Task) -> Role:
    """Which analysis fits ``task``, from its target kind (and, for depth, its context).

    A class mask is a segmentation; a scalar field whose context says ``mode: metric`` is
    depth in metres (relative depth has no unit to draw errors in); a unit-vector field is
    normals. Anything else (a third-party kind) is "other": pictures and curves only.
    """
    kind = getattr(getattr(task, "target_kind", None), "kind", None)
    if kind == "class_mask":
        return "segmentation"
    if kind == "unit_vector_field":
        return "normals"
    if kind == "scalar_field" and _context(task).get("mode") == "metric":
        return "depth"
    return "other"


def _context(task: Task) -> dict[str, Any]:
    try:
        return dict(task.context())
    except Exception:  # a plugin's context() that fails must not stop an evaluation
        return {}


# --------------------------------------------------------------------------------------
# Evaluation snapshots
# --------------------------------------------------------------------------------------


class EvaluationSnapshot:
    """Collects, during one evaluation, what :func:`pixcore.train.evaluate` does not keep.

    Pass it as ``evaluate(..., observer=snapshot)``; it is called with every batch (on the
    device) and the model's predictions. Then :meth:`reduce` (every rank) and
    :meth:`save` (rank 0).

    Args:
        model: The evaluated model (its tasks say what to keep).
        device: Where the confusion matrices are counted (the evaluation's device).
        samples: How many samples to keep (the first ones seen).
        class_names: Names of the classes of the validation data set (``Dataset.class_names``),
            used for a class-mask task whose context has no ``class_names`` and whose class
            count matches.
        indices: Data-set indices of the first samples, when known (recorded as they are).

    """

    def __init__(
        self, model: MultiTaskModel, device: torch.device, *, samples: int = SNAPSHOT_SAMPLES,
        class_names: Sequence[str] = (), indices: Sequence[int] = (),
    ) -> None:
        self.tasks: dict[str, Task] = {name: binding.task for name, binding in model.bindings.items()}
        self.roles: dict[str, Role] = {name: task_role(task) for name, task in self.tasks.items()}
        self.samples = samples
        self.indices = [int(i) for i in indices][:samples]
        self.kept = 0
        #: Every how many pixels the kept samples were taken (1: all; see MAX_SIDE).
        self.stride = 1
        self._arrays: dict[str, list[np.ndarray]] = {}
        self._failed: set[str] = set()
        self._meta: dict[str, dict[str, Any]] = {}
        # Counted eagerly (not at the first batch): every rank must reduce the same tensors.
        self._pairs: dict[str, Tensor] = {}
        for name, task in self.tasks.items():
            context = _context(task)
            meta: dict[str, Any] = {"role": self.roles[name], "kind": getattr(task.target_kind, "kind", None),
                                    "task": getattr(task, "registry_name", None) or type(task).__name__}
            if self.roles[name] == "segmentation":
                classes = int(context.get("num_classes", task.prediction_channels))
                names = context.get("class_names") or (class_names if len(class_names) == classes else ())
                meta.update(num_classes=classes, ignore_index=context.get("ignore_index"),
                            class_names=[str(n) for n in names] or [str(c) for c in range(classes)])
                self._pairs[name] = torch.zeros(classes * classes + 1, dtype=torch.int64, device=device)
            elif self.roles[name] == "depth":
                meta.update(units="m", min_depth=context.get("min_depth"), max_depth=context.get("max_depth"))
            elif self.roles[name] == "normals":
                meta.update(units="degrees")
            self._meta[name] = meta

    def __call__(self, batch: Mapping[str, Tensor], predictions: Mapping[str, Tensor]) -> None:
        """Count this batch into the confusion matrices; keep its first samples if still needed."""
        keeping = self.kept < self.samples
        targets = {name: task.target_and_valid(batch) for name, task in self.tasks.items()
                   if keeping or name in self._pairs}
        for name in self._pairs:
            self._count(name, predictions[name], *targets[name])
        if keeping:
            self._keep(batch, predictions, targets)

    def _count(self, name: str, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        # As few full-size operations as possible: this runs on every batch of every evaluation.
        counts = self._pairs[name]
        classes = self._meta[name]["num_classes"]
        ids = _class_ids(prediction)
        target = target.reshape(ids.shape).long()  # no copy for int64; uint8 would overflow below
        keep = valid.reshape(ids.shape) & (target >= 0) & (target < classes)
        ignore = self._meta[name]["ignore_index"]
        if ignore is not None and 0 <= ignore < classes:  # one outside [0, C) is left out above
            keep &= target != ignore
        if not prediction.is_floating_point():  # class ids from the model itself: check them too
            keep &= (ids >= 0) & (ids < classes)
        # Not scored: the extra last bin. index_add_ keeps the counting free of host syncs.
        pairs = torch.where(keep, target * classes + ids, classes * classes).reshape(-1).to(counts.device)
        counts.index_add_(0, pairs, torch.ones_like(pairs))

    def _keep(
        self, batch: Mapping[str, Tensor], predictions: Mapping[str, Tensor],
        targets: Mapping[str, tuple[Tensor, Tensor]],
    ) -> None:
        from pixcore.viz import image_to_rgb

        take = min(self.samples - self.kept, int(batch["image"].shape[0]))
        step = self.stride = _stride(batch["image"].shape[-2:])
        for i in range(take):
            self._add("image", image_to_rgb(batch["image"][i].detach().cpu())[::step, ::step])
            for name, task in self.tasks.items():
                target, valid = targets[name]
                self._keep_task(name, task, target[i].detach().cpu(), predictions[name][i].detach().float().cpu(),
                                valid[i].detach().cpu().bool(), step)
        self.kept += take

    def _keep_task(self, name: str, task: Task, target: Tensor, prediction: Tensor, valid: Tensor, step: int) -> None:
        role = self.roles[name]
        if name not in self._failed:
            try:
                truth, predicted = task.visualize_pair(target, prediction, valid)
            except Exception as error:  # a plugin's picture must not stop the training
                warnings.warn(f"the run report has no pictures of task {name!r}: its visualize_pair raised "
                              f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=2)
                self._failed.add(name)
                self._arrays = {k: v for k, v in self._arrays.items() if not k.startswith(f"{name}/picture_")}
            else:
                self._add(f"{name}/picture_target", np.asarray(truth, dtype=np.uint8)[::step, ::step])
                self._add(f"{name}/picture_prediction", np.asarray(predicted, dtype=np.uint8)[::step, ::step])
        if role == "other":
            return
        mask = valid.reshape(valid.shape[-2:]).numpy()[::step, ::step]
        if role == "segmentation":
            truth_map = target.reshape(target.shape[-2:]).numpy().astype(np.int32)
            predicted_map = _class_ids(prediction.unsqueeze(0))[0].numpy().astype(np.int32)
        elif role == "depth":  # float16: 0.05 % of the depth, far below the errors drawn; half the bytes
            truth_map = target.reshape(target.shape[-2:]).numpy().astype(np.float16)
            predicted_map = prediction.reshape(prediction.shape[-2:]).numpy().astype(np.float16)
        else:  # normals, [3, H, W]; float16: angles to about 0.05 degrees
            truth_map, predicted_map = target.numpy().astype(np.float16), prediction.numpy().astype(np.float16)
        self._add(f"{name}/target", truth_map[..., ::step, ::step])
        self._add(f"{name}/prediction", predicted_map[..., ::step, ::step])
        self._add(f"{name}/valid", mask)

    def _add(self, key: str, value: np.ndarray) -> None:
        self._arrays.setdefault(key, []).append(np.ascontiguousarray(value))

    def reduce(self, info: DistributedInfo) -> None:
        """Sum the confusion matrices over the ranks (every rank calls it, in the same order)."""
        if info.enabled:
            for counts in self._pairs.values():
                dist.all_reduce(counts, op=dist.ReduceOp.SUM)

    def confusion(self, name: str) -> np.ndarray:
        """The ``[C, C]`` counts of task ``name``: row = true class, column = predicted class."""
        classes = self._meta[name]["num_classes"]
        return self._pairs[name][: classes * classes].cpu().numpy().reshape(classes, classes)

    def save(self, path: str | Path, step: int, seconds: float | None = None) -> Path:
        """Write the snapshot (atomically: a temporary file renamed over ``path``)."""
        path = Path(path)
        meta = {"format": SNAPSHOT_FORMAT, "step": step, "samples": self.kept, "indices": self.indices[: self.kept],
                "stride": self.stride, "evaluation_seconds": seconds, "tasks": self._meta}
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        arrays.update({key: np.stack(values) for key, values in self._arrays.items()})
        arrays.update({f"{name}/confusion": self.confusion(name) for name in self._pairs})
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with temporary.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
        os.replace(temporary, path)
        return path


def _class_ids(prediction: Tensor) -> Tensor:
    """Class ids ``[B, H, W]`` (int64) from logits ``[B, C, H, W]`` or ids ``[B(, 1), H, W]``."""
    if not prediction.is_floating_point():
        return (prediction[:, 0] if prediction.ndim == 4 else prediction).long()
    if prediction.device.type != "cpu" or prediction.shape[1] == 1:
        return prediction.argmax(1)
    # On the CPU, argmax over the class dimension reads memory H * W elements apart; a running
    # maximum over the contiguous class planes gives the same ids (first maximum wins) about
    # twice as fast. pixcore-seg's miou does the same (argmax_classes); core cannot import it.
    best = prediction[:, 0].clone()
    ids = torch.zeros(best.shape, dtype=torch.int64)
    better = torch.empty(best.shape, dtype=torch.bool)
    for c in range(1, prediction.shape[1]):
        plane = prediction[:, c]
        torch.gt(plane, best, out=better)
        ids.masked_fill_(better, c)
        torch.maximum(best, plane, out=best)
    if bool(best.isnan().any()):  # NaN never compares greater: torch's argmax gives its index
        return prediction.argmax(1)
    return ids


def _stride(size: Sequence[int] | torch.Size) -> int:
    return max(1, math.ceil(max(int(s) for s in size) / MAX_SIDE))


def first_indices(loader: Any, count: int) -> list[int]:
    """The data-set indices of a loader's first ``count`` samples, or [] when they cannot be told."""
    sampler = getattr(loader, "sampler", None)
    if sampler is None or getattr(loader, "batch_sampler", None) is None:
        return []
    try:
        return [int(i) for i in islice(iter(sampler), count)]
    except (TypeError, ValueError):
        return []


# --------------------------------------------------------------------------------------
# run.jsonl
# --------------------------------------------------------------------------------------


class RunRecord(Callback):
    """``run.jsonl``: a line when ``fit`` starts (config, versions, device) and one when it ends (timing).

    Rank 0 only. A resumed run keeps the lines up to its step, deletes the evaluation
    snapshots of later steps (they are redone) and appends; a new run starts both afresh.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RUN_FILE
        self._start = 0.0
        self._start_step = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main_process:
            return
        restart_jsonl(self.path, trainer.step)
        for step, path in snapshot_paths(self.out_dir):
            if step > trainer.step or trainer.step == 0:
                path.unlink()
        self._start, self._start_step = time.perf_counter(), trainer.step
        if trainer.run_config is not None:
            config = trainer.run_config.model_dump(mode="json")
        else:
            config = {"model": trainer.model.config.model_dump(mode="json"),
                      "trainer": trainer.config.model_dump(mode="json")}
        self._write({
            "kind": "start", "step": trainer.step, "resumed": trainer.step > 0,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": describe_device(trainer.device), "world_size": trainer.distributed.world_size,
            "precision": trainer.config.precision, "versions": versions(trainer.manager), "config": config,
        })

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        if not trainer.is_main_process:
            return
        seconds = time.perf_counter() - self._start
        steps = trainer.step - self._start_step
        self._write({
            "kind": "end", "step": trainer.step, "seconds": result.seconds, "segment_seconds": seconds,
            "segment_steps": steps, "steps_per_second": steps / seconds if seconds > 0 else None,
            "skipped_steps": result.skipped_steps, "stop_reason": result.stop_reason,
            "interrupted": result.interrupted,
        })

    def _write(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, allow_nan=True) + "\n")


def versions(manager: Any = None) -> dict[str, str]:
    """pixcore, every plugin distribution, torch, timm, numpy and Python versions."""
    found: dict[str, str] = {}
    for name in ("pixcore", "torch", "torchvision", "timm", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    found["torch"] = torch.__version__
    try:
        if manager is None:
            from pixcore.plugin._manager import get_plugin_manager

            manager = get_plugin_manager()
        for info in manager.plugins():
            if info.version and info.distribution not in found:
                found[info.distribution] = info.version
    except Exception:  # the versions are informative: a plugin system that fails must not stop training
        pass
    found["python"] = sys.version.split()[0]
    return found


def describe_device(device: torch.device) -> dict[str, Any]:
    """The device in words: type, name of the GPU or CPU, threads, platform."""
    described: dict[str, Any] = {"device": str(device), "platform": platform.platform()}
    if device.type == "cuda":
        described["name"] = torch.cuda.get_device_name(device)
    else:
        described["name"] = _cpu_name()
        described["threads"] = torch.get_num_threads()
    return described


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
