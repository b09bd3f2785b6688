"""The end-to-end contract check of a task: model, loss, metrics, pictures, baseline."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pixcore._interfaces import Task
from pixcore.model._compose import build_model
from pixcore.plugin._manager import PluginManager, get_plugin_manager
from pixcore.testing._backbone import TINY_BACKBONE_NAME, TinyBackbonePlugin
from pixcore.testing._check_objectives import check_loss, check_metric
from pixcore.testing._contract import require, require_finite
from pixcore.testing._data import RandomBatch, random_batch

__all__ = ["check_task"]

#: ``make_batch(task, generator, invalid_fraction) -> RandomBatch``: a custom batch factory.
BatchFactory = Callable[[Task, torch.Generator, float], RandomBatch]


@contextlib.contextmanager
def _tiny_backbone(manager: PluginManager) -> Iterator[None]:
    """Make ``"testing/tiny"`` resolvable in ``manager`` for the duration of a check."""
    if TINY_BACKBONE_NAME in manager.registry("backbones"):
        yield
        return
    name = manager.register(TinyBackbonePlugin(), name=f"pixcore.testing.{id(manager)}")
    try:
        yield
    finally:
        manager.unregister(name)


def _check_picture(picture: Any, size: tuple[int, int], what: str) -> None:
    require(
        isinstance(picture, np.ndarray) and picture.dtype == np.uint8
        and picture.shape == (*size, 3),
        f"{what} must be a [H, W, 3] uint8 numpy array of shape {(*size, 3)}, got "
        f"{getattr(picture, 'dtype', type(picture))} {getattr(picture, 'shape', '')}",
    )


def check_task(
    task_name: str,
    params: Mapping[str, Any] | None = None,
    *,
    manager: PluginManager | None = None,
    head: str | Mapping[str, Any] | None = None,
    loss: str | Mapping[str, Any] | None = None,
    size: tuple[int, int] = (61, 83),
    batch_size: int = 2,
    seed: int = 0,
    make_batch: BatchFactory | None = None,
) -> None:
    """Check a registered task end to end with a :class:`TinyBackbone` model.

    What is checked, in order:

    1. the task is a :class:`pixcore.Task` with positive ``out_channels``, and its default
       head, loss and metrics resolve in the registries;
    2. :func:`pixcore.build_model` composes it with ``"testing/tiny"`` (registered
       temporarily when the manager lacks it), and a forward pass on uint8 images of an
       odd size (61x83: not a multiple of the stride) gives a finite prediction of exactly
       ``[B, prediction_channels, 61, 83]``;
    3. the model's loss on a batch with invalid pixels is finite, and backward gives finite,
       non-zero gradients to the backbone; with *every* pixel invalid the loss is exactly
       zero and still backward-able;
    4. the loss passes :func:`check_loss` (invalid pixels have no influence, ...);
    5. every default metric passes :func:`check_metric` (summable state, reset, invalid
       pixels have no influence, ...);
    6. ``visualize`` of a prediction and of a target, with and without ``valid``, returns
       an ``[H, W, 3]`` uint8 picture;
    7. ``baseline`` returns a finite ``[prediction_channels]`` prediction, on which the loss is
       finite.

    Args:
        task_name: Registry name of the task.
        params: The task's parameters.
        manager: The plugin manager (default: the process-wide one). Use
            :func:`isolated_manager` to check a plugin on its own.
        head: Head name or ``{"name": ..., "params": ...}``; default: the task's.
        loss: Loss name or config; default: the task's.
        size: Input size; keep it odd so that padding and cropping are exercised.
        batch_size: Images per random batch.
        seed: Seed of the model's initialisation and of the random batches.
        make_batch: ``(task, generator, invalid_fraction) -> RandomBatch`` for target
            kinds that :func:`pixcore.testing.random_batch` cannot invent.

    Raises:
        ContractError: naming the rule that was broken.

    Example::

        import my_plugin
        from pixcore.testing import check_task, isolated_manager

        def test_my_task_contract():
            check_task("my_task", {"num_classes": 3}, manager=isolated_manager(my_plugin))

    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _check_task(
            task_name, params, manager=manager or get_plugin_manager(), head=head, loss=loss,
            size=size, batch_size=batch_size, seed=seed, make_batch=make_batch,
        )


@dataclass
class _TaskModel:
    """The task under check, composed into a model, and the batches drawn for it."""

    what: str  # how errors name the task
    task: Task  # the model's own task instance
    channels: int
    model: Any  # the composed pixcore model
    generator: torch.Generator
    batch_for: Callable[..., RandomBatch]  # (task, invalid_fraction=0.25) -> RandomBatch
    data: RandomBatch  # the batch the model was run on
    predictions: dict[str, Tensor]
    size: tuple[int, int]  # (height, width) of the batch

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``[B, prediction_channels, H, W]`` of a decoded prediction."""
        return (self.data.valid.shape[0], self.channels, *self.size)

    def random_prediction(self) -> Tensor:
        """A decoded random prediction of :attr:`shape` (from the check's generator)."""
        raw = (self.shape[0], self.task.out_channels, *self.size)
        return self.task.decode(torch.randn(raw, generator=self.generator)).detach()


def _check_task(
    task_name: str,
    params: Mapping[str, Any] | None,
    *,
    manager: PluginManager,
    head: str | Mapping[str, Any] | None,
    loss: str | Mapping[str, Any] | None,
    size: tuple[int, int],
    batch_size: int,
    seed: int,
    make_batch: BatchFactory | None,
) -> None:
    """Run the steps of :func:`check_task` in order (the numbers are its docstring's)."""
    generator = torch.Generator().manual_seed(seed)

    def batch_for(task: Task, invalid_fraction: float = 0.25) -> RandomBatch:
        if make_batch is not None:
            return make_batch(task, generator, invalid_fraction)
        return random_batch(
            task, batch_size=batch_size, size=size, invalid_fraction=invalid_fraction,
            generator=generator,
        )

    what, channels = _check_task_defaults(manager, task_name, params)  # 1
    run = _build_and_forward(  # 2
        manager, task_name, params, head, loss, what, channels, generator, batch_for
    )
    target, valid = _check_model_loss(run)  # 3
    other = _check_loss_alone(run)  # 4
    _check_metrics(run, manager, other)  # 5
    _check_pictures(run)  # 6
    _check_baseline(run, other, target, valid)  # 7


def _check_task_defaults(
    manager: PluginManager, task_name: str, params: Mapping[str, Any] | None
) -> tuple[str, int]:
    """Step 1: a Task with positive out_channels whose defaults are registered.

    Returns how errors name the task, and its ``prediction_channels``.
    """
    task = manager.registry("tasks").create(task_name, params)
    what = f"task {task_name!r} ({type(task).__name__})"
    require(isinstance(task, Task), f"{what} is not a pixcore.Task")
    channels = task.out_channels
    require(isinstance(channels, int) and channels > 0, f"{what}: out_channels = {channels!r}")
    channels = task.prediction_channels
    require(isinstance(channels, int) and channels > 0, f"{what}: prediction_channels = {channels!r}")
    for family, kind, names in (
        ("heads", "head", [type(task).default_head]),
        ("losses", "loss", [type(task).default_loss]),
        ("metrics", "metric", list(type(task).default_metrics)),
    ):
        for name in names:
            require(
                name in manager.registry(family),
                f"{what}: its default {kind} {name!r} is not registered",
            )
    return what, channels


def _build_and_forward(
    manager: PluginManager,
    task_name: str,
    params: Mapping[str, Any] | None,
    head: str | Mapping[str, Any] | None,
    loss: str | Mapping[str, Any] | None,
    what: str,
    channels: int,
    generator: torch.Generator,
    batch_for: Callable[..., RandomBatch],
) -> _TaskModel:
    """Step 2: compose the task with the tiny backbone; one forward pass of the right shape."""
    spec: dict[str, Any] = {"task": task_name, "params": dict(params or {})}
    if head is not None:
        spec["head"] = head
    if loss is not None:
        spec["loss"] = loss
    with _tiny_backbone(manager):
        model = build_model(TINY_BACKBONE_NAME, tasks={"out": spec}, manager=manager)
    model.train()
    task = model.tasks["out"]
    data = batch_for(task)
    height, width = data.valid.shape[-2:]
    predictions = model(data.batch["image"])
    prediction = predictions["out"]
    expected = (data.valid.shape[0], channels, height, width)
    require(
        tuple(prediction.shape) == expected,
        f"{what}: prediction shape {tuple(prediction.shape)} for input {(height, width)}, "
        f"expected {expected}",
    )
    require_finite(prediction, f"{what}: prediction")
    return _TaskModel(
        what, task, channels, model, generator, batch_for, data, predictions, (height, width)
    )


def _check_model_loss(run: _TaskModel) -> tuple[Tensor, Tensor]:
    """Step 3: the model's loss is finite and reaches the backbone; zero when all is invalid.

    Returns the task's ``(target, valid)`` for the batch the model ran on.
    """
    what, task, model, data, predictions = run.what, run.task, run.model, run.data, run.predictions
    target, valid = task.target_and_valid(data.batch)
    require(
        valid.dtype == torch.bool and tuple(valid.shape) == tuple(data.valid.shape),
        f"{what}: target_and_valid must give a boolean [B, H, W] mask, got "
        f"{valid.dtype} {tuple(valid.shape)}",
    )
    total, _ = model.compute_loss(predictions, data.batch)
    require_finite(total.detach(), f"{what}: model loss")
    require(
        total.requires_grad,
        f"{what}: the model loss has no gradient; is a prediction detached in decode()?",
    )
    # The same predictions scored against a batch in which every pixel is invalid.
    empty = run.batch_for(task, invalid_fraction=1.0)
    empty_total, _ = model.compute_loss(predictions, empty.batch)
    empty_value = float(empty_total.detach())
    require(
        empty_value == 0.0,
        f"{what}: with every pixel invalid the loss must be exactly 0, got {empty_value!r}",
    )
    require(
        empty_total.requires_grad,
        f"{what}: with every pixel invalid the loss has no grad path",
    )
    model.zero_grad(set_to_none=True)
    empty_total.backward(retain_graph=True)
    for p in model.parameters():
        if p.grad is not None:
            require_finite(p.grad, f"{what}: gradient with every pixel invalid")
    model.zero_grad(set_to_none=True)
    total.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    require(len(grads) > 0, f"{what}: the loss gives no gradient to the backbone")
    for grad in grads:
        require_finite(grad, f"{what}: backbone gradient")
    require(
        any(bool(g.abs().sum() > 0) for g in grads),
        f"{what}: every backbone gradient is zero",
    )
    return target, valid


def _check_loss_alone(run: _TaskModel) -> RandomBatch:
    """Step 4: the loss module passes :func:`check_loss` on decoded random predictions.

    Returns the second batch it drew (the metrics and the baseline use it too).
    """
    other = run.batch_for(run.task)
    check_loss(
        run.model.losses["out"], run.random_prediction(), run.data.target, run.data.valid,
        other_prediction=run.random_prediction(), other_target=other.target,
    )
    return other


def _check_metrics(run: _TaskModel, manager: PluginManager, other: RandomBatch) -> None:
    """Step 5: every metric bound to the task passes :func:`check_metric`."""
    task, batch_for, random_prediction = run.task, run.batch_for, run.random_prediction
    batches = [(random_prediction(), b.target, b.valid) for b in (run.data, batch_for(task))]
    others = [(random_prediction(), b.target, b.valid) for b in (other, batch_for(task))]
    metrics = manager.registry("metrics")
    for config in run.model.bindings["out"].metric_configs:
        fresh = functools.partial(
            metrics.create, config.name, config.params, context=task.context()
        )
        check_metric(fresh, batches, other_batches=others)


def _check_pictures(run: _TaskModel) -> None:
    """Step 6: ``visualize`` of a prediction and a target, with and without a mask."""
    data = run.data
    with torch.no_grad():
        one_prediction = run.predictions["out"][0].detach()
        for label, value in (("prediction", one_prediction), ("target", data.target[0])):
            for mask in (data.valid[0], None):
                picture = run.task.visualize(value, mask)
                _check_picture(
                    picture, run.size,
                    f"{run.what}: visualize({label}, valid={'mask' if mask is not None else None})",
                )


def _check_baseline(run: _TaskModel, other: RandomBatch, target: Tensor, valid: Tensor) -> None:
    """Step 7: ``baseline`` gives a finite ``[prediction_channels]`` prediction with a finite loss."""
    what, task, channels = run.what, run.task, run.channels

    def pairs() -> Iterator[tuple[Tensor, Tensor]]:
        for b in (run.data, other):
            yield task.target_and_valid(b.batch)

    baseline = task.baseline(pairs())
    require(
        isinstance(baseline, Tensor) and tuple(baseline.shape) == (channels,),
        f"{what}: baseline must be a [{channels}] tensor, got "
        f"{getattr(baseline, 'shape', baseline)}",
    )
    require_finite(baseline, f"{what}: baseline")
    constant = baseline.float().view(1, channels, 1, 1).expand(run.shape)
    baseline_loss = run.model.losses["out"](constant, target, valid).total.detach()
    require_finite(baseline_loss, f"{what}: loss of the baseline")
