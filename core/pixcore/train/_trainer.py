"""The trainer: a plain PyTorch loop that reads top to bottom.

    model, data, optimiser <- config
    for step in range(steps):
        batch  <- next batch, moved to the device
        loss   <- weighted sum of the task losses        (non-finite: stop, name the task)
        backward, clip, optimiser step, schedule step
        every log_every steps:        one row in log.csv, progress bar
        every eval_every steps / end: evaluate the tasks' metrics on held-out data
        every checkpoint_every / end: write the checkpoint atomically
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pixcore._config import RunConfig, TrainerConfig
from pixcore._errors import PixcoreError
from pixcore._interfaces import Augmentation, Dataset, Sample
from pixcore._model import MultiTaskModel, build_model_from_config
from pixcore._plugins import PluginManager, get_plugin_manager
from pixcore.train._checkpoint import save_checkpoint

__all__ = [
    "AugmentedDataset",
    "NonFiniteLossError",
    "Trainer",
    "TrainResult",
    "build_optimizer",
    "evaluate",
    "evaluate_baselines",
    "select_device",
    "train",
]


class NonFiniteLossError(PixcoreError):
    """The loss became NaN or infinite; the message names the step and the task."""


def select_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU; otherwise ``name`` as given."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise PixcoreError(f"device {name!r} was asked for but CUDA is not available; use 'auto' or 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build_optimizer(model: nn.Module, config: TrainerConfig) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay, none on norm weights and biases.

    Every parameter with fewer than two dimensions is a bias or a normalisation scale:
    decaying those towards zero only fights the normalisation (as in nanoGPT).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainerConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant or cosine decay to zero at ``config.steps``."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class AugmentedDataset(torch.utils.data.Dataset[Sample]):
    """Applies an augmentation with a generator seeded by (seed, epoch, index).

    Seeding per sample, rather than per worker, makes the augmented stream identical
    whatever the number of data loader workers, and different in every epoch.
    """

    def __init__(self, dataset: Dataset, augmentation: Augmentation | None, seed: int) -> None:
        self.dataset = dataset
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[index]
        if self.augmentation is None:
            return sample
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        )
        return self.augmentation(sample, generator)


def _to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    # non_blocking overlaps the copy with compute when the loader pins memory (CUDA).
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: MultiTaskModel, loader: DataLoader[Sample], device: torch.device,
    manager: PluginManager | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the tasks' metrics over ``loader``: ``{task: {metric key: value, "protocol": ...}}``."""
    was_training = model.training
    model.eval()
    metrics = {name: binding.new_metrics(manager) for name, binding in model.bindings.items()}
    for metric_set in metrics.values():
        for metric in metric_set.values():
            metric.reset()
    for batch in loader:
        batch = _to_device(batch, device)
        predictions = model(batch["image"])
        for name, binding in model.bindings.items():
            target, valid = binding.task.target_and_valid(batch)
            for metric in metrics[name].values():
                metric.update(predictions[name], target, valid)
    model.train(was_training)
    return _collect(metrics)


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
    """What a finished run produced."""

    metrics: dict[str, dict[str, Any]]
    steps: int
    seconds: float
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Trains a :class:`MultiTaskModel`; see the module docstring for the loop.

    Args:
        model: The model (its tasks carry losses and metrics).
        config: Trainer settings.
        train_loader: Yields training batches (re-iterated every epoch).
        val_loader: Held-out batches for evaluation, or None.
        out_dir: Where ``log.csv``, ``metrics.json`` and ``checkpoint.safetensors`` go.
        run_config: Stored in the checkpoint so that it can rebuild its model.
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
    ) -> None:
        self.config = config
        self.device = select_device(config.device)
        self.model = model.to(self.device)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_config = run_config
        self.manager = manager
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.step = 0
        self.epoch = 0

    def _batches(self) -> Iterator[Sample]:
        # An endless stream over epochs; each epoch re-seeds shuffling and augmentation.
        while True:
            dataset = self.train_loader.dataset
            if isinstance(dataset, AugmentedDataset):
                dataset.epoch = self.epoch
            sampler_generator = getattr(self.train_loader.sampler, "generator", None)
            if isinstance(sampler_generator, torch.Generator):
                sampler_generator.manual_seed(self.config.seed * 100_003 + self.epoch)
            yield from self.train_loader
            self.epoch += 1

    def fit(self) -> TrainResult:
        """Train for ``config.steps`` optimiser steps; evaluate and checkpoint at the end."""
        config = self.config
        log_file, writer = self._open_log()
        history: list[dict[str, float]] = []
        metrics: dict[str, dict[str, Any]] = {}
        start = time.perf_counter()
        progress = _progress(config.steps, enabled=config.progress)
        self.model.train()
        batches = self._batches()
        try:
            while self.step < config.steps:
                batch = _to_device(next(batches), self.device)
                predictions = self.model(batch["image"])
                loss, parts = self.model.compute_loss(predictions, batch)
                if not torch.isfinite(loss):  # one sync per step: cheap next to the step itself
                    raise NonFiniteLossError(self._non_finite_message(parts))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1

                if self.step % config.log_every == 0 or self.step == config.steps:
                    row = {"step": self.step, "epoch": self.epoch, "lr": self.scheduler.get_last_lr()[0],
                           "loss": loss.item(), "seconds": time.perf_counter() - start}
                    row.update({k: float(v) for k, v in parts.items()})
                    history.append(row)
                    if writer is not None:
                        writer.writerow(row)
                        log_file.flush()  # type: ignore[union-attr]
                    progress.set_postfix(loss=f"{row['loss']:.3f}")
                progress.update(1)

                evaluate_now = config.eval_every is not None and self.step % config.eval_every == 0
                if self.val_loader is not None and (evaluate_now or self.step == config.steps):
                    metrics = evaluate(self.model, self.val_loader, self.device, self.manager)
                checkpoint_now = config.checkpoint_every is not None and self.step % config.checkpoint_every == 0
                if checkpoint_now or self.step == config.steps:
                    self.save()
        finally:
            progress.close()
            if log_file is not None:
                log_file.close()
        seconds = time.perf_counter() - start
        if self.out_dir is not None and metrics:
            (self.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return TrainResult(metrics, self.step, seconds, self.checkpoint_path, history)

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoint.safetensors"

    def save(self) -> Path | None:
        """Write the checkpoint (weights, optimiser, scheduler, RNG, config) atomically."""
        path = self.checkpoint_path
        if path is None:
            return None
        metadata: dict[str, Any] = {"step": self.step, "epoch": self.epoch}
        if self.run_config is not None:
            metadata["config"] = self.run_config.model_dump(mode="json")
        else:
            metadata["model_config"] = self.model.config.model_dump(mode="json")
        return save_checkpoint(path, self.model, self.optimizer, scheduler=self.scheduler, metadata=metadata)

    def _open_log(self) -> tuple[Any, csv.DictWriter[str] | None]:
        if self.out_dir is None:
            return None, None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fields = ["step", "epoch", "lr", "loss", "seconds"]
        for name in self.model.bindings:
            fields.append(f"{name}/loss")
        handle = open(self.out_dir / "log.csv", "w", newline="")  # noqa: SIM115 - closed in fit()
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        return handle, writer

    def _non_finite_message(self, parts: Mapping[str, Tensor]) -> str:
        bad = [k.split("/")[0] for k, v in parts.items() if k.endswith("/loss") and not torch.isfinite(v)]
        tasks = ", ".join(sorted(set(bad))) or "unknown"
        return (
            f"the loss is not finite at step {self.step + 1} (task: {tasks}). No checkpoint was "
            "written with these weights. Lower the learning rate, set trainer.grad_clip, or check "
            "that task's targets for NaN/inf values."
        )


class _NoProgress:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="step", dynamic_ncols=True)


def make_loaders(
    config: RunConfig, manager: PluginManager | None = None
) -> tuple[DataLoader[Sample], DataLoader[Sample] | None]:
    """Build the training and validation data loaders described by ``config.data``."""
    manager = manager or get_plugin_manager()
    data = config.data
    train_set = manager.registry("datasets").create(data.train.name, data.train.params, path="data.train.params")
    augmentations = [
        manager.registry("augmentations").create(a.name, a.params, path=f"data.augmentations.{i}.params")
        for i, a in enumerate(data.augmentations)
    ]
    from pixcore._augment import Compose

    augmented = AugmentedDataset(train_set, Compose(augmentations) if augmentations else None, config.trainer.seed)
    pin = select_device(config.trainer.device).type == "cuda"
    workers = data.num_workers
    train_loader: DataLoader[Sample] = DataLoader(
        augmented,
        batch_size=data.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(config.trainer.seed),
        persistent_workers=False,  # workers are re-forked each epoch and see the new epoch number
    )
    val_loader: DataLoader[Sample] | None = None
    if data.val is not None:
        val_set = manager.registry("datasets").create(data.val.name, data.val.params, path="data.val.params")
        val_loader = DataLoader(val_set, batch_size=data.batch_size, shuffle=False, num_workers=workers, pin_memory=pin)
    return train_loader, val_loader


def train(
    config: RunConfig, out_dir: str | Path | None = None, manager: PluginManager | None = None
) -> tuple[Trainer, TrainResult]:
    """Build everything ``config`` describes and train it; the one call behind ``pixcore train``."""
    torch.manual_seed(config.trainer.seed)  # model initialisation
    model = build_model_from_config(config.model, manager=manager)
    train_loader, val_loader = make_loaders(config, manager)
    trainer = Trainer(model, config.trainer, train_loader, val_loader, out_dir=out_dir, run_config=config, manager=manager)
    return trainer, trainer.fit()
