"""The trainer: a plain PyTorch loop that reads top to bottom.

    model, data, optimiser <- config        (torchrun: join the process group, wrap in DDP)
    resume: restore everything the next step depends on, RNG states included
    for step in range(step, steps):
        for each of accumulate_grad_batches micro-batches:
            batch  <- next batch of the epoch   (order fixed by (seed, epoch))
            loss   <- weighted sum of the task losses, forward under autocast (bf16/fp16)
                      (not finite: stop, or skip the step)
            backward (of loss / accumulate_grad_batches; DDP syncs on the last one only)
        unscale (fp16), clip; gradients not finite: stop, or skip the step
        optimiser step, EMA update, schedule step
        every log_every steps:        one log row (CSV, JSONL), progress bar
        every eval_every steps / end: evaluate the tasks' metrics on held-out data
        every checkpoint_every / end: write the checkpoint atomically (finite weights only)
        SIGTERM / SIGINT:             finish this step, write the checkpoint, stop
                                      (data-loader workers ignore both and are shut down last)

Every hook point is an event of :mod:`pixcore.train._callbacks`, whose docstring (and
``docs/training.md``) shows the loop with each event where it fires.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler

from pixcore._config import RunConfig, TrainerConfig
from pixcore._errors import PixcoreError
from pixcore._interfaces import Sample
from pixcore.model._compose import MultiTaskModel, build_model_from_config
from pixcore.plugin._manager import PluginManager, get_plugin_manager
from pixcore.train._callbacks import (
    Callback,
    Checkpointing,
    CSVLogger,
    EarlyStopping,
    JSONLLogger,
    TensorBoardLogger,
)
from pixcore.train._checkpoint import (
    CheckpointError,
    RngState,
    load_checkpoint,
    read_metadata,
    read_rng_state,
    save_checkpoint,
)
from pixcore.train._data import (
    AugmentedDataset,
    ShardSampler,
    epoch_batches,
    is_stream,
    rebuild_loader,
    stream_layout,
    stream_loader,
    training_sampler,
)
from pixcore.train._distributed import (
    all_reduce_mean,
    any_across_ranks,
    barrier,
    current_distributed,
    gather_objects,
    init_distributed,
    select_device,
)
from pixcore.train._ema import ModelEMA
from pixcore.train._optim import build_optimizer, build_scheduler
from pixcore.train._precision import (
    CompiledForward,
    autocast,
    check_precision,
    configure_cudnn,
    grad_scaler,
    to_channels_last,
)
from pixcore.train._pretrained import PretrainedReport, apply_pretrained, check_recipe, pretrained_to_load
from pixcore.train._record import SNAPSHOT_SAMPLES, EvaluationSnapshot, RunRecord, first_indices, snapshot_path
from pixcore.train._signals import StopSignals, deferred_signals, shield_workers

__all__ = [
    "AugmentedDataset",
    "NonFiniteLossError",
    "RunExistsError",
    "Trainer",
    "TrainResult",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "evaluate_baselines",
    "make_loaders",
    "select_device",
    "train",
]


class NonFiniteLossError(PixcoreError):
    """The loss or the gradients became NaN or infinite; the message names the step and where."""


class RunExistsError(PixcoreError):
    """A new run was asked to write into a folder that holds another run."""


#: The files that make a folder a run's: a new run refuses to start over them.
RUN_FILES = ("checkpoint.safetensors", "log.csv", "log.jsonl", "metrics.json")


def _to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    # non_blocking overlaps the copy with compute when the loader pins memory (CUDA).
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: MultiTaskModel, loader: DataLoader[Sample], device: torch.device,
    manager: PluginManager | None = None, *, precision: str = "32", channels_last: bool = False,
    observer: Callable[[Mapping[str, Tensor], Mapping[str, Tensor]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the tasks' metrics over ``loader``: ``{task: {metric key: value, "protocol": ...}}``.

    Under DDP each rank passes its shard of the data; the metrics sum their state over all
    ranks, so every rank returns the results for the whole data set. ``precision``
    (``"32"``, ``"bf16"``, ``"fp16"``) runs the forward pass under autocast; the metrics
    always see float32 predictions. ``channels_last`` passes images in NHWC memory order.
    ``observer(batch, predictions)``, if given, sees every batch (on the device) with the
    float32 predictions after the metrics (the trainer keeps its evaluation snapshots so).
    """
    was_training = model.training
    model.eval()
    metrics = {name: binding.new_metrics(manager) for name, binding in model.bindings.items()}
    for metric_set in metrics.values():
        for metric in metric_set.values():
            metric.reset()
    with deferred_signals():  # see pixcore.train._signals: workers start before a signal lands
        batches = iter(loader)
    for batch in batches:
        batch = _to_device(batch, device)
        image = to_channels_last(batch["image"]) if channels_last else batch["image"]
        with autocast(precision, device):
            predictions = model(image)
        predictions = {name: value.float() for name, value in predictions.items()}
        for name, binding in model.bindings.items():
            target, valid = binding.task.target_and_valid(batch)
            for metric in metrics[name].values():
                metric.update(predictions[name], target, valid)
        if observer is not None:
            observer(batch, predictions)
    model.train(was_training)
    results = _collect(metrics)
    features = _feature_protocol(model)
    if features:  # e.g. "DINOv2 lin.4": how the features were read is part of the result
        for values in results.values():
            values["protocol"]["features"] = features
    return results


def _feature_protocol(model: nn.Module) -> str:
    """The backbone's ``protocol`` (a probing protocol such as DINOv2's lin.4), or ""."""
    inner = getattr(model, "model", model)  # a Predictor wraps the model
    backbone = getattr(inner, "backbone", None) or getattr(model, "backbone", None)
    return str(getattr(backbone, "protocol", "") or "")


def _collect(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for task_name, metric_set in metrics.items():
        out: dict[str, Any] = {}
        protocols: dict[str, str] = {}
        for metric_name, metric in metric_set.items():
            out.update(metric.compute())
            protocols[metric_name] = metric.protocol
        out["protocol"] = protocols
        results[task_name] = out
    return results


@torch.no_grad()
def evaluate_baselines(
    model: MultiTaskModel,
    fit_loader: DataLoader[Sample],
    eval_loader: DataLoader[Sample],
    manager: PluginManager | None = None,
) -> dict[str, dict[str, Any]]:
    """Score each task's trivial constant prediction (majority class, mean depth, ...).

    The constant is fitted on ``fit_loader`` (training data) and scored on ``eval_loader``
    with the same metrics as the model, so the two can be compared directly.
    """
    constants: dict[str, Tensor] = {}
    for name, binding in model.bindings.items():
        pairs = (binding.task.target_and_valid(batch) for batch in fit_loader)
        constants[name] = binding.task.baseline(pairs).float()
    metrics = {name: binding.new_metrics(manager) for name, binding in model.bindings.items()}
    for batch in eval_loader:
        for name, binding in model.bindings.items():
            target, valid = binding.task.target_and_valid(batch)
            b, (h, w) = target.shape[0], target.shape[-2:]
            prediction = constants[name].view(1, -1, 1, 1).expand(b, -1, h, w)
            for metric in metrics[name].values():
                metric.update(prediction, target, valid)
    return _collect(metrics)


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced.

    ``stop_reason`` says why a run ended before ``config.steps`` (early stopping, a
    signal); ``interrupted`` is True when a signal stopped it, so that it should be resumed.
    """

    metrics: dict[str, dict[str, Any]]
    steps: int
    seconds: float
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0
    stop_reason: str | None = None
    interrupted: bool = False


class Trainer:
    """Trains a :class:`MultiTaskModel`; see the module docstring for the loop.

    Args:
        model: The model (its tasks carry losses and metrics).
        config: Trainer settings.
        train_loader: Yields training batches (re-iterated every epoch). Its order must be
            a function of the loader's generator or of ``sampler.set_epoch`` (as with
            ``shuffle=True`` or a ``DistributedSampler``) or of a stream's ``start_epoch``:
            the trainer re-seeds them from ``(seed, epoch)`` so that a resumed run sees the
            same batches.
        val_loader: Held-out batches for evaluation, or None.
        out_dir: Where ``log.csv``, ``log.jsonl``, ``metrics.json``,
            ``checkpoint.safetensors`` and, for ``pixcore report``, ``run.jsonl`` and
            ``eval/step_<N>.npz`` go (None: nothing is written).
        run_config: Stored in the checkpoint so that it can rebuild its model.
        overwrite: Let a new run replace the run already in ``out_dir`` (its checkpoint
            and logs are deleted when training starts); without it :meth:`fit` refuses.
        manager: Plugin manager that creates the metrics (default: the process-wide one).
        callbacks: Extra :class:`Callback` objects, called after the built-in ones.

    Under torchrun (``RANK``/``WORLD_SIZE`` set) the trainer joins the process group and
    trains with DistributedDataParallel; ``train_loader`` must then give each rank its own
    share (a ``DistributedSampler``; :func:`make_loaders` builds one).

    Besides the model, optimiser and scheduler, a trainer holds ``scaler`` (the fp16
    gradient scaler, else None) and ``ema`` (a :class:`~pixcore.train.ModelEMA` when
    ``config.ema_decay`` is set, else None); ``model`` is always the plain module (not
    wrapped in DDP nor compiled), the one that is saved.

    """

    def __init__(
        self,
        model: MultiTaskModel,
        config: TrainerConfig,
        train_loader: DataLoader[Sample],
        val_loader: DataLoader[Sample] | None = None,
        *,
        out_dir: str | Path | None = None,
        run_config: RunConfig | None = None,
        manager: PluginManager | None = None,
        callbacks: Sequence[Callback] = (),
        overwrite: bool = False,
    ) -> None:
        self.config = config
        self.overwrite = overwrite
        self.distributed, self.device = init_distributed(config.device)
        check_precision(config.precision, self.device)
        configure_cudnn(config.cudnn_benchmark, self.device)
        self.model = self._prepare_model(model)
        self.train_loader = train_loader
        self.val_loader = self._shard_for_evaluation(val_loader)
        for loader in (self.train_loader, self.val_loader):
            if loader is not None:
                shield_workers(loader)  # a SIGTERM to the whole job must not kill them
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_config = run_config
        self.manager = manager
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = grad_scaler(config.precision, self.device)  # fp16 only
        self.ema = ModelEMA(self.model, config.ema_decay) if config.ema_decay is not None else None
        #: What train() loaded from model.pretrained (None: nothing).
        self.pretrained_report: PretrainedReport | None = None
        # The forward pass goes through DDP (which averages gradients in backward) and
        # torch.compile; saving, evaluation and compute_loss use the plain model.
        self.train_model: nn.Module = self.model
        self._ddp: Any = None
        if self.distributed.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = self._ddp = DistributedDataParallel(self.model, device_ids=device_ids)
        self._forward: Any = self.train_model
        if config.compile:
            self._forward = CompiledForward(self.train_model, config.compile_backend)
        self._check_train_loader()
        # Position of the run: what a checkpoint stores besides weights and optimiser.
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of `epoch` already trained on
        self.skipped_steps = 0
        self.metrics: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, float]] = []
        self.stop_reason: str | None = None
        self._seconds_before = 0.0  # training time before a resume
        self._fit_start = time.perf_counter()
        self._last_eval_step = -1
        self.callbacks: list[Callback] = [*self._builtin_callbacks(), *callbacks]

    # -- set-up ---------------------------------------------------------------------------

    @property
    def is_main_process(self) -> bool:
        """True on rank 0 (and in a single process): the one that writes files."""
        return self.distributed.is_main

    def _prepare_model(self, model: MultiTaskModel) -> MultiTaskModel:
        model = model.to(self.device)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.config.sync_batchnorm and self.distributed.enabled:
            if self.device.type != "cuda":
                raise PixcoreError(
                    "trainer.sync_batchnorm needs CUDA: PyTorch's SyncBatchNorm does not run on "
                    f"{self.device.type}. Set trainer.sync_batchnorm=false for CPU runs."
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.config.freeze_backbone:
            backbone = getattr(model, "backbone", None)
            if not isinstance(backbone, nn.Module):
                raise PixcoreError(
                    f"trainer.freeze_backbone: {type(model).__name__} has no `backbone` module to freeze"
                )
            backbone.requires_grad_(False)
            backbone.eval()
        return model

    def _keep_backbone_frozen(self) -> None:
        # model.train() (at the start, after each evaluation, or in a callback) also puts the
        # backbone in training mode; a frozen one must stay in eval mode so that its
        # BatchNorm statistics do not move.
        if self.config.freeze_backbone and self.model.backbone.training:
            self.model.backbone.eval()

    def _shard_for_evaluation(self, loader: DataLoader[Sample] | None) -> DataLoader[Sample] | None:
        # Each rank evaluates every world_size-th sample; metrics add up the shards.
        if loader is None or not self.distributed.enabled:
            return loader
        if not isinstance(loader.sampler, SequentialSampler):
            return loader  # already sharded, or the caller's own choice
        length, info = len(loader.dataset), self.distributed  # type: ignore[arg-type]
        return rebuild_loader(loader, sampler=ShardSampler(length, info.rank, info.world_size))

    def _check_train_loader(self) -> None:
        if not self.distributed.enabled:
            return
        world_size = self.distributed.world_size
        if is_stream(self.train_loader.dataset) and getattr(self.train_loader.dataset, "world_size", 1) == world_size:
            return  # a stream configured for this world: each rank streams its own span
        if getattr(self.train_loader.sampler, "num_replicas", None) != world_size:
            raise PixcoreError(
                f"training with {self.distributed.world_size} processes needs a training loader that "
                "gives each rank its own share of the data: build it with "
                "sampler=torch.utils.data.DistributedSampler(dataset, seed=...), or for a stream (the "
                "shards data set) call dataset.configure(rank=..., world_size=...) (make_loaders does both)"
            )

    def _builtin_callbacks(self) -> list[Callback]:
        config = self.config
        callbacks: list[Callback] = []
        if self.out_dir is not None:
            callbacks += [CSVLogger(self.out_dir / "log.csv"), JSONLLogger(self.out_dir / "log.jsonl"),
                          RunRecord(self.out_dir)]
            if config.tensorboard:
                callbacks.append(TensorBoardLogger(self.out_dir / "tensorboard"))
        if config.early_stopping_metric is not None:
            callbacks.append(EarlyStopping(config.early_stopping_metric, config.early_stopping_mode,
                                           config.early_stopping_patience))
        if self.out_dir is not None:
            callbacks.append(Checkpointing(config.checkpoint_every))
        return callbacks

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def request_stop(self, reason: str) -> None:
        """Stop after the current step (callbacks use it; EarlyStopping does)."""
        self.stop_reason = self.stop_reason or reason

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, resume: str | Path | None = None) -> TrainResult:
        """Train until ``config.steps``; evaluate and checkpoint at the end.

        ``resume``: a checkpoint written by this trainer. Training continues from it
        exactly: on CPU the weights end bitwise equal to those of an uninterrupted run.
        """
        config = self.config
        if resume is None:
            self._claim_out_dir()
        rng = self._restore(resume) if resume is not None else None
        self._fit_start = time.perf_counter()
        progress = _progress(config.steps, self.step, enabled=config.progress and self.is_main_process)
        self.model.train()
        batches = self._batches()
        self._emit("on_fit_start")
        if rng is not None:
            rng.restore()  # last: nothing may draw random numbers between here and step 1
        interrupted = False
        with StopSignals() as signals:
            try:
                while self.step < config.steps and self.stop_reason is None:
                    self._emit("on_step_start")
                    loss, parts, signalled = self._step(batches, signals)
                    self.step += 1

                    if self.step % config.log_every == 0 or self.step == config.steps:
                        row = self._log_row(loss, parts)
                        progress.set_postfix(loss=f"{row['loss']:.3f}")
                        self._emit("on_log", row)
                    progress.update(1)
                    evaluate_now = config.eval_every is not None and self.step % config.eval_every == 0
                    if self.val_loader is not None and (evaluate_now or self.step == config.steps):
                        self._evaluate()
                    self._emit("on_step_end", loss.detach())

                    # A signal interrupts a run that is not finished (nor stopped by a callback).
                    signalled = signalled or (not self.distributed.enabled and signals.received is not None)
                    if signalled and self.stop_reason is None and self.step < config.steps:
                        self.stop_reason = signals.received or "a signal on another rank"
                        interrupted = True
            finally:
                progress.close()
                batches.close()  # shuts down data-loader workers now, not at garbage collection

            finished = self.step == config.steps and self._last_eval_step != self.step
            if finished and self.val_loader is not None:
                self._evaluate()  # a resumed run that had already finished: its final metrics
            result = TrainResult(
                self.metrics, self.step, self._seconds(),
                self.checkpoint_path, self.history, self.skipped_steps, self.stop_reason, interrupted,
            )
            if self.is_main_process and self.out_dir is not None and self.metrics and not interrupted:
                (self.out_dir / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
            self._emit("on_fit_end", result)  # Checkpointing writes the final checkpoint here
        if self.skipped_steps and self.is_main_process:  # the metrics alone would not show it
            print(f"pixcore: {self.skipped_steps} of {self.step} steps were skipped: their loss or "
                  "gradients were not finite (trainer.on_non_finite=skip; the 'skipped' column of "
                  "log.csv says when)", file=sys.stderr, flush=True)
        if interrupted and self.is_main_process:
            path = self.checkpoint_path
            where = f"checkpoint: {path}" if path is not None else "no out_dir: no checkpoint"
            print(f"pixcore: stopped by {self.stop_reason} after step {self.step} of {config.steps} "
                  f"({where}). Resume with `pixcore train CONFIG --resume` or Trainer.fit(resume=...).",
                  file=sys.stderr, flush=True)
        return result

    def _step(
        self, batches: Iterator[Sample], signals: StopSignals
    ) -> tuple[Tensor, dict[str, Tensor], bool]:
        """One optimiser step over ``accumulate_grad_batches`` batches.

        Returns the loss and its parts (means over the micro-batches) and whether a stop
        signal arrived (agreed by all ranks under DDP).
        """
        config = self.config
        accumulate = config.accumulate_grad_batches
        self._keep_backbone_frozen()
        # "skip" must be able to undo the forward's updates of BatchNorm statistics.
        buffers = [b.detach().clone() for b in self.model.buffers()] if config.on_non_finite == "skip" else []
        self.optimizer.zero_grad(set_to_none=True)
        losses: list[Tensor] = []
        parts: list[dict[str, Tensor]] = []
        skip = signalled = False
        for micro in range(accumulate):
            batch = next(batches)
            if skip:
                continue  # the step is dropped; its other batches are still used up, as planned
            # Under DDP, gradients are averaged across ranks in the backward of the last
            # micro-batch only; the others accumulate locally.
            no_sync = self._ddp is not None and micro < accumulate - 1
            with self._ddp.no_sync() if no_sync else contextlib.nullcontext():
                loss, loss_parts = self._forward_loss(_to_device(batch, self.device))
                # One sync per micro-batch, cheap next to the step itself. Under DDP the ranks
                # also agree here on a stop signal, so that they all leave after the same step.
                non_finite, stop = self._check_step(loss, signals)
                signalled = signalled or stop
                if non_finite and config.on_non_finite == "stop":
                    raise NonFiniteLossError(self._non_finite_message(loss_parts))
                skip = non_finite
                if not skip:
                    scaled = loss / accumulate if accumulate > 1 else loss
                    (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
            losses.append(loss.detach())
            parts.append(loss_parts)

        if skip:  # "skip": no update; the step still counts (and its schedule)
            self._undo_forward(buffers)
        else:
            skip = not self._gradients_ok(buffers)  # "stop" raises there
        if skip:
            self.skipped_steps += 1
        elif self.scaler is not None:
            self.scaler.step(self.optimizer)  # leaves out a step whose gradients hold inf/NaN
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None and not skip:
            self.ema.update(self.model)
        # The schedule advances with every step, taken or not (skipped, or left out by the
        # scaler); PyTorch warns about the latter, which is intended here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()
        if accumulate == 1:
            return losses[0], parts[0], signalled
        return torch.stack(losses).mean(), _mean_parts(parts, losses[0].device), signalled

    def _gradients_ok(self, buffers: list[Tensor]) -> bool:
        """Unscale (fp16) and clip; False (after undoing the step) if a gradient is not finite.

        A finite loss can still have infinite or NaN gradients (a huge learning rate, an
        overflow in backward): an optimiser step with them would put NaN into the weights
        and from there into the next checkpoint. One norm over all gradients tells, at the
        cost of one read of them (clipping computes it anyway). Under DDP the gradients are
        already averaged, so every rank decides alike. The fp16 gradient scaler does this
        itself, as part of finding its scale: its steps are left to it.
        """
        config = self.config
        if self.scaler is not None and config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        if config.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        elif self.scaler is None:
            norm = nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
        else:
            return True
        if self.scaler is not None or bool(torch.isfinite(norm)):
            return True
        if config.on_non_finite == "stop":
            raise NonFiniteLossError(self._non_finite_gradients_message())
        self._undo_forward(buffers)
        return False

    def _undo_forward(self, buffers: list[Tensor]) -> None:
        # The forward's BatchNorm statistics go back to before the step, gradients are dropped.
        with torch.no_grad():
            for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
        self.optimizer.zero_grad(set_to_none=True)

    def _forward_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        image = to_channels_last(batch["image"]) if self.config.channels_last else batch["image"]
        with autocast(self.config.precision, self.device):
            predictions = self._forward(image)
        if self.config.precision != "32":
            # Losses reduce over many pixels: they see float32 predictions.
            predictions = {name: value.float() for name, value in predictions.items()}
        return self.model.compute_loss(predictions, batch)

    def _batches(self) -> Generator[Sample, None, None]:
        # An endless stream over epochs. The order of an epoch depends on (seed, epoch) only,
        # so a resumed run re-creates it and leaves out the batches it already trained on.
        while True:
            skip = self.batch_in_epoch
            with deferred_signals():  # forked workers must ignore a SIGTERM before it lands
                epoch = iter(epoch_batches(self.train_loader, self.config.seed, self.epoch, skip))
            for batch in epoch:
                self.batch_in_epoch += 1
                yield batch
            if self.batch_in_epoch == 0:
                loader = self.train_loader
                raise PixcoreError(
                    f"the training loader yields no batches ({len(loader.dataset)} samples, "  # type: ignore[arg-type]
                    f"batch size {loader.batch_size}, drop_last={loader.drop_last}, "
                    f"{self.distributed.world_size} process(es)); use a smaller data.batch_size or more data"
                )
            self.epoch += 1
            self.batch_in_epoch = 0

    def _check_step(self, loss: Tensor, signals: StopSignals) -> tuple[bool, bool]:
        """(the loss is not finite, a stop signal arrived), agreed by all ranks under DDP."""
        non_finite = ~torch.isfinite(loss.detach())
        if not self.distributed.enabled:
            return bool(non_finite), False  # a signal is read after the step, with no sync
        stop = torch.tensor(signals.received is not None, device=loss.device)
        # Any rank's NaN skips (or stops) the step on all of them, or DDP's backward would hang.
        non_finite_any, stop_any = any_across_ranks(torch.stack([non_finite, stop]), self.distributed)
        return non_finite_any, stop_any

    def _seconds(self) -> float:
        """Training time so far, including the time before a resume."""
        return self._seconds_before + time.perf_counter() - self._fit_start

    def _log_row(self, loss: Tensor, parts: Mapping[str, Tensor]) -> dict[str, float]:
        # One transfer for all values (a sync, on log steps only), averaged over ranks.
        names = list(parts)
        values = torch.stack([loss.detach().float().reshape(())] + [
            torch.as_tensor(parts[n], dtype=torch.float32, device=loss.device).detach().reshape(())
            for n in names
        ])
        numbers = all_reduce_mean(values, self.distributed).tolist()
        row: dict[str, float] = {
            "step": self.step, "epoch": self.epoch, "lr": float(self.scheduler.get_last_lr()[0]),
            "loss": numbers[0], "skipped": self.skipped_steps,
            "seconds": self._seconds(),
        }
        row.update(zip(names, numbers[1:], strict=True))
        self.history.append(row)
        return row

    def _evaluate(self) -> None:
        # fork_rng: evaluation must not move the training's random stream, or how often one
        # evaluates would change the trained weights.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        assert self.val_loader is not None
        snapshot = None
        if self.out_dir is not None:  # what `pixcore report` draws (see pixcore.train._record)
            snapshot = EvaluationSnapshot(
                self.evaluation_model, self.device, class_names=getattr(self.val_loader.dataset, "class_names", ()),
                indices=first_indices(self.val_loader, SNAPSHOT_SAMPLES),
            )
        start = time.perf_counter()
        with torch.random.fork_rng(devices=devices):
            self.metrics = evaluate(self.evaluation_model, self.val_loader, self.device, self.manager,
                                    precision=self.config.precision, channels_last=self.config.channels_last,
                                    observer=snapshot)
        if snapshot is not None and self.out_dir is not None:
            snapshot.reduce(self.distributed)
            if self.is_main_process:
                snapshot.save(snapshot_path(self.out_dir, self.step), self.step, time.perf_counter() - start)
        self._last_eval_step = self.step
        self._emit("on_evaluate_end", self.metrics)

    @property
    def evaluation_model(self) -> MultiTaskModel:
        """The model that evaluation scores: the EMA weights with ``ema_eval``, else the model."""
        if self.ema is not None and self.config.ema_eval:
            return self.ema.module  # type: ignore[return-value]
        return self.model

    # -- checkpoints ------------------------------------------------------------------------

    def _claim_out_dir(self) -> None:
        """Refuse to start a new run over another run's files, unless ``overwrite`` says so."""
        if self.out_dir is None:
            return
        found = [name for name in RUN_FILES if (self.out_dir / name).exists()] if self.is_main_process else []
        # Rank 0's view decides (only it writes there); every rank must stop alike.
        flag = torch.tensor([bool(found) and not self.overwrite], device=self.device)
        if not any_across_ranks(flag, self.distributed)[0]:
            if found and self.is_main_process:  # --overwrite: the old run goes, as asked
                for name in found:
                    (self.out_dir / name).unlink()
            return
        raise RunExistsError(
            f"{self.out_dir} already holds a run ({', '.join(found) or 'on rank 0'}"
            f"{self._describe_run()}). To continue it, resume (`pixcore train CONFIG --out "
            f"{self.out_dir} --resume`); to keep it, choose another --out; to replace it, pass "
            "--overwrite (Trainer(..., overwrite=True))."
        )

    def _describe_run(self) -> str:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return ""
        try:
            meta = read_metadata(path)
        except CheckpointError:
            return "; its checkpoint is unreadable"
        steps = meta.get("config", {}).get("trainer", {}).get("steps")
        return f"; checkpoint at step {meta.get('step')}" + (f" of {steps}" if steps else "")

    def _check_finite_state(self) -> None:
        """Refuse to write weights, buffers or EMA weights that hold NaN or inf."""
        modules = {"model": self.model, "ema": self.ema.averaged if self.ema is not None else None}
        bad = [f"{prefix}.{name}" for prefix, module in modules.items() if module is not None
               for name, value in module.state_dict().items()
               if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        flag = torch.tensor([bool(bad)], device=self.device)
        if any_across_ranks(flag, self.distributed)[0]:
            raise NonFiniteLossError(
                f"not writing the checkpoint of step {self.step}: {', '.join(bad[:5]) or 'a tensor on rank 0'} "
                f"{'holds' if len(bad) == 1 else 'hold'} NaN or inf values. The checkpoint on disk is "
                "kept as it was (from before). Lower trainer.lr, set trainer.grad_clip, or check "
                "the data for NaN/inf values."
            )

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoint.safetensors"

    def save(self) -> Path | None:
        """Write the checkpoint atomically: everything the next step depends on.

        Weights, optimiser, schedule, step, epoch, position in the epoch, skipped steps,
        callback states and every rank's random generators. Every rank must call it (the
        generators are gathered); rank 0 writes while the others wait.
        """
        path = self.checkpoint_path
        if path is None:
            return None
        self._check_finite_state()
        states = gather_objects(RngState.capture(), self.distributed)
        if self.is_main_process:
            metadata: dict[str, Any] = {
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "skipped_steps": self.skipped_steps, "world_size": self.distributed.world_size,
                "seconds": self._seconds(),
                "callbacks": {c.state_key: s for c in self.callbacks if (s := c.state_dict())},
            }
            if (layout := stream_layout(self.train_loader)) is not None:  # what a stream's order depends on
                metadata["data_layout"] = layout
            if self.run_config is not None:
                metadata["config"] = self.run_config.model_dump(mode="json")
            else:
                metadata["model_config"] = self.model.config.model_dump(mode="json")
            if self.scaler is not None:
                metadata["grad_scaler"] = self.scaler.state_dict()
            if self.ema is not None:
                metadata["ema_decay"] = self.ema.decay
            save_checkpoint(path, self.model, self.optimizer, scheduler=self.scheduler, metadata=metadata,
                            rng=states, ema=self.ema.averaged if self.ema is not None else None)
        barrier(self.distributed, self.device)
        self._emit("on_checkpoint", path)
        return path

    def _restore(self, path: str | Path) -> RngState:
        """Load a checkpoint of this run; returns the RNG state to restore just before step 1."""
        path = Path(path)
        meta = read_metadata(path)
        if "batch_in_epoch" not in meta:
            raise CheckpointError(
                f"{path} does not record its position in the epoch, so it cannot be resumed exactly; "
                "start a new run from its weights with load_checkpoint(path, model)"
            )
        if meta.get("world_size", 1) != self.distributed.world_size:
            raise CheckpointError(
                f"{path} was written by a run with {meta['world_size']} process(es), this one has "
                f"{self.distributed.world_size}: the data order and batches depend on it. Resume with "
                f"the same number of processes, or start a new run from its weights."
            )
        if meta["step"] > self.config.steps:
            raise CheckpointError(
                f"{path} is at step {meta['step']}, beyond trainer.steps={self.config.steps}; "
                "raise trainer.steps to continue training"
            )
        _check_stream_layout(path, meta.get("data_layout"), stream_layout(self.train_loader))
        has_ema = "ema_decay" in meta
        load_checkpoint(path, self.model, self.optimizer, scheduler=self.scheduler,
                        ema=self.ema.averaged if self.ema is not None and has_ema else None)
        if self.ema is not None and not has_ema:
            warnings.warn(
                f"{path} holds no moving average of the weights (trainer.ema_decay was not set); the "
                "average starts from the resumed weights", UserWarning, stacklevel=3,
            )
            self.ema = ModelEMA(self.model, self.ema.decay)
        if self.scaler is not None and "grad_scaler" in meta:
            self.scaler.load_state_dict(meta["grad_scaler"])
        self.step, self.epoch = int(meta["step"]), int(meta["epoch"])
        self.batch_in_epoch = int(meta["batch_in_epoch"])
        self.skipped_steps = int(meta.get("skipped_steps", 0))
        self._seconds_before = float(meta.get("seconds", 0.0))
        try:
            if self.batch_in_epoch >= len(self.train_loader):  # the epoch was complete
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        except TypeError:  # an iterable data set of unknown length
            pass
        states = meta.get("callbacks", {})
        for callback in self.callbacks:
            if callback.state_key in states:
                callback.load_state_dict(states[callback.state_key])
        return read_rng_state(path, self.distributed.rank)

    def _non_finite_gradients_message(self) -> str:
        bad = [name for name, p in self.model.named_parameters()
               if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        return (
            f"the gradients are not finite at step {self.step + 1} (the loss was finite), in: "
            f"{shown or 'a parameter of another rank'}. The step was not taken, so no checkpoint "
            "holds these values. Lower trainer.lr, set trainer.grad_clip, or set "
            "trainer.on_non_finite=skip to skip such steps."
        )

    def _non_finite_message(self, parts: Mapping[str, Tensor]) -> str:
        bad = [k.split("/")[0] for k, v in parts.items() if k.endswith("/loss") and not torch.isfinite(v)]
        tasks = ", ".join(sorted(set(bad))) or ("on another rank" if self.distributed.enabled else "unknown")
        return (
            f"the loss is not finite at step {self.step + 1} (task: {tasks}). No checkpoint was "
            "written with these weights. Lower the learning rate, set trainer.grad_clip, check "
            "that task's targets for NaN/inf values, or set trainer.on_non_finite=skip to skip "
            "such steps."
        )


def _check_stream_layout(path: Path, saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> None:
    """A stream's order depends on its shards and on the processes x workers that split them."""
    if saved is None or current is None or dict(saved) == dict(current):
        return
    changed = ", ".join(f"{k}: {saved.get(k)!r} then, {current.get(k)!r} now"
                        for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k))
    raise CheckpointError(
        f"{path} was written by a run that streamed its data differently ({changed}); the order of the "
        "samples depends on it. Resume with the same shards, data.batch_size and data.num_workers, or start "
        "a new run from its weights."
    )


def _mean_parts(parts: Sequence[Mapping[str, Any]], device: torch.device) -> dict[str, Tensor]:
    """Each loss part's mean over the micro-batches of a step (parts present in all of them)."""
    keys = [k for k in parts[0] if all(k in p for p in parts)]
    return {
        k: torch.stack([torch.as_tensor(p[k], dtype=torch.float32, device=device).detach().reshape(())
                        for p in parts]).mean()
        for k in keys
    }


class _NoProgress:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


def make_loaders(
    config: RunConfig, manager: PluginManager | None = None
) -> tuple[DataLoader[Sample], DataLoader[Sample] | None]:
    """Build the training and validation data loaders described by ``config.data``.

    ``data.batch_size`` is per process: under torchrun with N processes the global batch
    is N times larger, and the N batches of a step hold exactly the samples that one
    process with an N times larger batch would see (see ``training_sampler``).

    Each data set's declared ``target_kinds`` must hold every task's ``target_key`` and
    ``valid_key`` with the right kind (:func:`pixcore.data._keys.check_data_keys`): a
    mismatch is a :class:`pixcore.ConfigError` now, not a ``KeyError`` at the first step.
    A data set without ``target_kinds`` is not checked.

    A stream (the ``shards`` data set) is not sampled: every rank and loader worker streams
    its own span of the epoch, cut to whole batches (:func:`pixcore.train._data.stream_loader`).
    """
    from pixcore.data._keys import check_data_keys
    from pixcore.model._compose import build_tasks

    manager = manager or get_plugin_manager()
    data = config.data
    tasks = build_tasks(config.model, manager=manager)
    train_set = manager.registry("datasets").create(data.train.name, data.train.params, path="data.train.params")
    check_data_keys(train_set, tasks, where="data.train")
    augmentations = [
        manager.registry("augmentations").create(a.name, a.params, path=f"data.augmentations.{i}.params")
        for i, a in enumerate(data.augmentations)
    ]
    from pixcore.augment import Compose
    from pixcore.data import collate  # samples may lack some labels (present/<key>)

    augmentation = Compose(augmentations) if augmentations else None
    pin = select_device(config.trainer.device).type == "cuda"
    workers = data.num_workers
    rank, world_size = current_distributed().rank, current_distributed().world_size
    if is_stream(train_set):  # streamed shards: each rank and worker reads its own span
        train_loader = stream_loader(train_set, augmentation, seed=config.trainer.seed, rank=rank,
                                     world_size=world_size, batch_size=data.batch_size, num_workers=workers,
                                     pin_memory=pin, collate_fn=collate)
    else:
        augmented = AugmentedDataset(train_set, augmentation, config.trainer.seed)
        train_loader = _map_style_loader(augmented, config, rank, world_size, pin, collate)
    val_loader: DataLoader[Sample] | None = None
    if data.val is not None:
        val_set = manager.registry("datasets").create(data.val.name, data.val.params, path="data.val.params")
        check_data_keys(val_set, tasks, where="data.val")
        shard = None
        if is_stream(val_set):  # every sample once, across ranks and workers
            val_set.configure(rank=rank, world_size=world_size, num_workers=workers)  # type: ignore[attr-defined]
        elif world_size > 1:
            shard = ShardSampler(len(val_set), rank, world_size)
        val_loader = DataLoader(val_set, batch_size=data.val_batch_size or data.batch_size, sampler=shard,
                                num_workers=workers, pin_memory=pin, collate_fn=collate)
    return train_loader, val_loader


def _map_style_loader(
    augmented: AugmentedDataset, config: RunConfig, rank: int, world_size: int, pin: bool, collate: Any
) -> DataLoader[Sample]:
    return DataLoader(
        augmented,
        batch_size=config.data.batch_size,
        sampler=training_sampler(augmented, config.trainer.seed, rank, world_size),
        drop_last=True,
        collate_fn=collate,
        num_workers=config.data.num_workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(config.trainer.seed),
        persistent_workers=False,  # workers are re-forked each epoch and see the new epoch number
    )


def train(
    config: RunConfig, out_dir: str | Path | None = None, manager: PluginManager | None = None,
    *, resume: str | Path | None = None, callbacks: Sequence[Callback] = (), overwrite: bool = False,
) -> tuple[Trainer, TrainResult]:
    """Build everything ``config`` describes and train it; the one call behind ``pixcore train``.

    Under torchrun it joins the process group first (and leaves it at the end).
    ``resume`` continues from a checkpoint of the same run (see :meth:`Trainer.fit`);
    without it, a folder that holds a run is refused unless ``overwrite``.
    ``model.pretrained`` weights are loaded right after the model is built (not when
    resuming) and the report printed to stderr (rank 0) and kept in
    ``trainer.pretrained_report``; ``trainer.recipe`` is checked against them first.
    """
    owns_group = not (dist.is_available() and dist.is_initialized())
    info, _ = init_distributed(config.trainer.device)  # the loaders need this process's rank
    try:
        check_recipe(config)
        torch.manual_seed(config.trainer.seed)  # model initialisation
        model = build_model_from_config(config.model, manager=manager)
        report = None
        weights = None if resume is not None else pretrained_to_load(config, verbose=info.is_main)
        if weights is not None:  # a resumed run has its weights
            report = apply_pretrained(model, weights, verbose=info.is_main)
        train_loader, val_loader = make_loaders(config, manager)
        trainer = Trainer(model, config.trainer, train_loader, val_loader, out_dir=out_dir,
                          run_config=config, manager=manager, callbacks=callbacks, overwrite=overwrite)
        trainer.pretrained_report = report
        return trainer, trainer.fit(resume=resume)
    finally:
        if owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
