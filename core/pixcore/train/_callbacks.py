"""Callbacks: code that runs at fixed points of :meth:`Trainer.fit`.

The loop, with every event marked where it fires (``>>``) and the built-in callback
that listens to it::

    fit(resume=None):
        no resume: refuse an out_dir that holds a run (unless overwrite)
        resume: restore weights, optimiser, schedule, gradient scaler, EMA weights,
                step, epoch, position in the epoch, skipped-step count and callback
                states
        >> on_fit_start(trainer)            CSVLogger/JSONLLogger open (resume: cut
                                            rows after the resumed step), RunRecord
                                            (run.jsonl), TensorBoard, EarlyStopping
                                            (checks its metric exists)
        resume: restore the random generators (last: nothing may draw before step 1)
        while step < steps:
            >> on_step_start(trainer)
            freeze_backbone: the backbone back in eval mode (BatchNorm statistics fixed)
            for each of accumulate_grad_batches micro-batches:
                batch <- next batch: order fixed by (seed, epoch); a resumed epoch
                         leaves out the batches it already trained on
                loss  <- the task losses combined by model.weighting (forward under
                         autocast for bf16/fp16; the losses see float32 predictions)
                one sync: is the loss finite? (DDP: the ranks also agree on stop signals)
                loss not finite?  "stop": raise NonFiniteLossError, no checkpoint
                                  "skip": drop the step (its other batches are used up)
                backward of loss / accumulate_grad_batches (fp16: scaled; DDP: gradients
                averaged over ranks in the last micro-batch only, no_sync before it)
            unscale (fp16), clip; gradients not finite?  "stop": raise, "skip": drop
            dropped?  undo the forward's buffer updates, count it as skipped
            else: optimiser step, EMA update
            schedule step; step += 1
            every log_every steps and at the last step:
                >> on_log(trainer, row)       CSVLogger, JSONLLogger, TensorBoardLogger
            every eval_every steps and at the last step:
                metrics <- evaluate, with the EMA weights if ema_eval (DDP: summed
                           over ranks); out_dir: rank 0 writes eval/step_<N>.npz
                >> on_evaluate_end(trainer, metrics)   JSONLLogger, TensorBoardLogger,
                                                       EarlyStopping (may request a stop)
            >> on_step_end(trainer, loss)     Checkpointing, every checkpoint_every steps
            SIGTERM/SIGINT received or request_stop() called: leave the loop
        >> on_fit_end(trainer, result)      Checkpointing (final checkpoint),
                                            TensorBoardLogger (close), RunRecord

    trainer.save(), wherever it is called:
        weights, statistics or EMA weights not finite: raise, keep the old checkpoint
        rank 0 writes the checkpoint, the other ranks wait for it
        >> on_checkpoint(trainer, path)

Every event fires on every rank of a distributed run, so callbacks can take part in
collective operations; a callback that writes files checks ``trainer.is_main_process``.
``on_fit_end`` does not fire when ``fit`` raises. A callback that keeps state across a
resume returns it from :meth:`Callback.state_dict` (JSON-serialisable); it is stored in
the checkpoint under :attr:`Callback.state_key`.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor

from pixcore._errors import PixcoreError

if TYPE_CHECKING:
    from pixcore.train._trainer import Trainer, TrainResult

__all__ = [
    "CSVLogger",
    "Callback",
    "Checkpointing",
    "EarlyStopping",
    "JSONLLogger",
    "TensorBoardLogger",
]


class Callback:
    """Base class: every event is a no-op; override the ones you need."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state in the checkpoint (default: the class name)."""
        return type(self).__qualname__

    def state_dict(self) -> dict[str, Any]:
        """State to store in checkpoints so that a resumed run continues it."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back the state of :meth:`state_dict` when a run resumes."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step (after a resume restored the trainer's state)."""

    def on_step_start(self, trainer: Trainer) -> None:
        """Before the batch of step ``trainer.step + 1`` is fetched."""

    def on_log(self, trainer: Trainer, row: Mapping[str, float]) -> None:
        """Every ``log_every`` steps: step, epoch, lr, loss, skipped, seconds, task losses."""

    def on_evaluate_end(self, trainer: Trainer, metrics: Mapping[str, Mapping[str, Any]]) -> None:
        """After an evaluation: ``{task: {metric key: value, "protocol": ...}}``."""

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        """After step ``trainer.step``; ``loss`` is detached and not synchronised (no ``.item()``)."""

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """After a checkpoint was written to ``path`` (on every rank, once rank 0 wrote it)."""

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        """After the loop finished or was stopped (not when ``fit`` raised)."""


def _keep_rows_up_to(lines: list[str], step: int, step_of: Any) -> list[str]:
    kept = []
    for line in lines:
        try:
            if int(step_of(line)) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            continue
    return kept


def restart_jsonl(path: Path, step: int) -> None:
    """Start the JSON-lines file ``path`` for a fit from ``step``: a resume keeps the lines
    of steps up to it (whatever a killed run wrote after), a new run starts empty."""
    lines: list[str] = []
    if step > 0 and path.exists():
        lines = _keep_rows_up_to(path.read_text().splitlines(), step, lambda line: json.loads(line)["step"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


class CSVLogger(Callback):
    """One CSV row per ``on_log`` (rank 0). A resumed run keeps the rows up to its step."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fields: list[str] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main_process:
            return
        self.fields = ["step", "epoch", "lr", "loss", "skipped", "seconds"]
        self.fields += [f"{name}/loss" for name in trainer.model.bindings]
        rows: list[dict[str, str]] = []
        if trainer.step > 0 and self.path.exists():  # rows after the checkpoint are redone
            with self.path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if r.get("step", "").isdigit()
                        and int(r["step"]) <= trainer.step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def on_log(self, trainer: Trainer, row: Mapping[str, float]) -> None:
        if not trainer.is_main_process:
            return
        # Opened per row (every log_every steps): nothing to close if the process dies.
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore").writerow(row)


class JSONLLogger(Callback):
    """One JSON object per line (rank 0): ``{"kind": "train", ...row}`` and evaluations,
    ``{"kind": "eval", "step": ..., "metrics": {...}}``. A resume keeps lines up to its step."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main_process:
            return
        restart_jsonl(self.path, trainer.step)

    def _write(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, allow_nan=True) + "\n")

    def on_log(self, trainer: Trainer, row: Mapping[str, float]) -> None:
        if trainer.is_main_process:
            self._write({"kind": "train", **row})

    def on_evaluate_end(self, trainer: Trainer, metrics: Mapping[str, Mapping[str, Any]]) -> None:
        if trainer.is_main_process:
            self._write({"kind": "eval", "step": trainer.step, "metrics": metrics})


class TensorBoardLogger(Callback):
    """Scalars for TensorBoard (rank 0), if ``torch.utils.tensorboard`` can be imported.

    It needs the ``tensorboard`` package, which pixcore does not depend on: without it
    the callback warns once and does nothing.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main_process:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            warnings.warn(
                f"TensorBoard logging is off: torch.utils.tensorboard cannot be imported ({error}). "
                "Install it with `pip install tensorboard`, or set trainer.tensorboard=false.",
                stacklevel=2,
            )
            return
        # purge_step: a resumed run drops the events logged after its checkpoint.
        self.writer = SummaryWriter(str(self.log_dir), purge_step=trainer.step + 1 if trainer.step else None)

    def on_log(self, trainer: Trainer, row: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key not in ("step", "epoch"):
                self.writer.add_scalar(f"train/{key}", value, global_step=int(row["step"]))

    def on_evaluate_end(self, trainer: Trainer, metrics: Mapping[str, Mapping[str, Any]]) -> None:
        if self.writer is None:
            return
        for task, values in metrics.items():
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"val/{task}/{key}", value, global_step=trainer.step)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Checkpointing(Callback):
    """Writes the checkpoint every ``every`` steps (None: never) and when ``fit`` ends.

    The end covers a finished run, an early stop and a stop by SIGTERM/SIGINT; a run that
    raised (a non-finite loss) writes nothing, so the last checkpoint holds good weights.
    """

    def __init__(self, every: int | None) -> None:
        self.every = every
        self._saved_step = -1

    def on_fit_start(self, trainer: Trainer) -> None:
        self._saved_step = trainer.step if trainer.step > 0 else -1  # a resume starts from one

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        if self.every is not None and trainer.step % self.every == 0:
            trainer.save()
            self._saved_step = trainer.step

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        if self._saved_step != trainer.step:
            trainer.save()
            self._saved_step = trainer.step


class EarlyStopping(Callback):
    """Stops training when a metric has not improved for ``patience`` evaluations.

    Args:
        monitor: ``"task/key"`` of an evaluation result, e.g. ``"depth/abs_rel"``.
        mode: ``"min"`` if lower is better, ``"max"`` if higher is better.
        patience: Evaluations without improvement before stopping.
        min_delta: How much better than the best so far counts as an improvement.

    Evaluations happen every ``trainer.eval_every`` steps, which must be set. Metrics are
    reduced over all ranks, so every rank takes the same decision.

    """

    def __init__(
        self, monitor: str, mode: Literal["min", "max"] = "min", patience: int = 3, min_delta: float = 0.0
    ) -> None:
        task, sep, key = monitor.partition("/")
        if not sep or not task or not key:
            raise PixcoreError(f"EarlyStopping monitor {monitor!r} must be 'task/metric', e.g. 'depth/abs_rel'")
        if mode not in ("min", "max"):
            raise PixcoreError(f"EarlyStopping mode {mode!r} must be 'min' or 'max'")
        if patience < 1:
            raise PixcoreError(f"EarlyStopping patience must be at least 1, got {patience}")
        self.monitor, self.task, self.key = monitor, task, key
        self.mode, self.patience, self.min_delta = mode, patience, abs(min_delta)
        self.best: float | None = None
        self.best_step = 0
        self.bad_evaluations = 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_step = state["best"], int(state["best_step"])
        self.bad_evaluations = int(state["bad_evaluations"])

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.config.eval_every is None or trainer.val_loader is None:
            raise PixcoreError(
                f"EarlyStopping({self.monitor!r}) needs evaluations during training: set "
                "trainer.eval_every and give the trainer validation data (data.val)"
            )
        self._check_monitor(trainer)

    def _check_monitor(self, trainer: Trainer) -> None:
        """Before step 1: the monitored result exists and ``mode`` matches its direction."""
        results = _expected_results(trainer)
        if self.monitor not in results:
            # The task's keys are compared with the key alone (they all share the task's name).
            probe = self.key.lower()
            keys = {n.partition("/")[2].lower(): n for n in results if n.startswith(f"{self.task}/")}
            if not keys:  # a misspelt task: compare whole names
                probe, keys = self.monitor.lower(), {n.lower(): n for n in results}
            close = [keys[c] for c in difflib.get_close_matches(probe, list(keys), n=3, cutoff=0.6)]
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise PixcoreError(
                f"early stopping monitors {self.monitor!r}, which the evaluation does not report; "
                f"{hint}the evaluation reports: {', '.join(sorted(results))}. "
                "Set trainer.early_stopping_metric to one of them."
            )
        higher = results[self.monitor]
        if higher is not None and higher != (self.mode == "max"):
            wanted = "max" if higher else "min"
            raise PixcoreError(
                f"early stopping monitors {self.monitor!r}, where {'higher' if higher else 'lower'} "
                f"is better, but its mode is {self.mode!r}: it would stop on improvement. "
                f"Set trainer.early_stopping_mode={wanted}."
            )

    def on_evaluate_end(self, trainer: Trainer, metrics: Mapping[str, Mapping[str, Any]]) -> None:
        if self.task not in metrics or self.key not in metrics[self.task]:
            available = [f"{t}/{k}" for t, values in metrics.items() for k in values if k != "protocol"]
            raise PixcoreError(f"EarlyStopping monitors {self.monitor!r}, which is not evaluated; "
                               f"choose one of {available}")
        value = float(metrics[self.task][self.key])
        better = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if better and not math.isnan(value):
            self.best, self.best_step, self.bad_evaluations = value, trainer.step, 0
            return
        self.bad_evaluations += 1
        if self.bad_evaluations >= self.patience:
            trainer.request_stop(
                f"early stopping: {self.monitor} has not improved for {self.patience} evaluations "
                f"(best {self.best} at step {self.best_step})"
            )


def _expected_results(trainer: Trainer) -> dict[str, bool | None]:
    """``{"task/key": higher is better (None: not declared)}`` of what an evaluation will report.

    The metrics are created as an evaluation creates them and computed once on their
    empty state, which gives their result keys without looking at any data.
    """
    results: dict[str, bool | None] = {}
    for task, binding in trainer.model.bindings.items():
        for metric in binding.new_metrics(trainer.manager).values():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # 0/0 on an empty state is expected here
                try:
                    keys = list(metric._compute(metric.state))
                except Exception:  # a metric that cannot compute on no data: its declared keys
                    keys = list(metric.higher_is_better)
            for key in keys:
                results[f"{task}/{key}"] = metric.higher_is_better.get(key)
    return results
