"""The end-to-end contract check of a task: model, loss, metrics, pictures, baseline."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pixcore._interfaces import Task
from pixcore._model import build_model
from pixcore._plugins import PluginManager, get_plugin_manager
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
       ``[B, out_channels, 61, 83]``;
    3. the model's loss on a batch with invalid pixels is finite, and backward gives finite,
       non-zero gradients to the backbone; with *every* pixel invalid the loss is exactly
       zero and still backward-able;
    4. the loss passes :func:`check_loss` (invalid pixels have no influence, ...);
    5. every default metric passes :func:`check_metric` (summable state, reset, invalid
       pixels have no influence, ...);
    6. ``visualize`` of a prediction and of a target, with and without ``valid``, returns
       an ``[H, W, 3]`` uint8 picture;
    7. ``baseline`` returns a finite ``[out_channels]`` prediction, on which the loss is
       finite.

    Args:
        task_name: Registry name of the task.
        params: The task's parameters.
        manager: The plugin manager (default: the process-wide one). Use
            :func:`isolated_manager` to check a plugin on its own.
        head: Head name or ``{"name": ..., "params": ...}``; default: the task's.
        loss: Loss name or config; default: the task's.
        size: Input size; keep it odd so that padding and cropping are exercised.
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
    generator = torch.Generator().manual_seed(seed)

    def batch_for(task: Task, invalid_fraction: float = 0.25) -> RandomBatch:
        if make_batch is not None:
            return make_batch(task, generator, invalid_fraction)
        return random_batch(
            task, batch_size=batch_size, size=size, invalid_fraction=invalid_fraction,
            generator=generator,
        )

    # 1. the task and its defaults
    task = manager.registry("tasks").create(task_name, params)
    what = f"task {task_name!r} ({type(task).__name__})"
    require(isinstance(task, Task), f"{what} is not a pixcore.Task")
    channels = task.out_channels
    require(isinstance(channels, int) and channels > 0, f"{what}: out_channels = {channels!r}")
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

    # 2. a model around it
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

    # 3. the model's loss and the backbone's gradients
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
    empty = batch_for(task, invalid_fraction=1.0)
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

    # 4. the loss on its own, with decoded random predictions
    loss_module = model.losses["out"]
    shape = (data.valid.shape[0], channels, height, width)

    def random_prediction() -> Tensor:
        return task.decode(torch.randn(shape, generator=generator)).detach()

    other = batch_for(task)
    check_loss(
        loss_module, random_prediction(), data.target, data.valid,
        other_prediction=random_prediction(), other_target=other.target,
    )

    # 5. the metrics
    batches = [(random_prediction(), b.target, b.valid) for b in (data, batch_for(task))]
    others = [(random_prediction(), b.target, b.valid) for b in (other, batch_for(task))]
    metrics = manager.registry("metrics")
    for config in model.bindings["out"].metric_configs:
        fresh = functools.partial(
            metrics.create, config.name, config.params, context=task.context()
        )
        check_metric(fresh, batches, other_batches=others)

    # 6. pictures
    with torch.no_grad():
        one_prediction = prediction[0].detach()
        for label, value in (("prediction", one_prediction), ("target", data.target[0])):
            for mask in (data.valid[0], None):
                picture = task.visualize(value, mask)
                _check_picture(
                    picture, (height, width),
                    f"{what}: visualize({label}, valid={'mask' if mask is not None else None})",
                )

    # 7. the trivial baseline
    def pairs() -> Iterator[tuple[Tensor, Tensor]]:
        for b in (data, other):
            yield task.target_and_valid(b.batch)

    baseline = task.baseline(pairs())
    require(
        isinstance(baseline, Tensor) and tuple(baseline.shape) == (channels,),
        f"{what}: baseline must be a [{channels}] tensor, got "
        f"{getattr(baseline, 'shape', baseline)}",
    )
    require_finite(baseline, f"{what}: baseline")
    constant = baseline.float().view(1, channels, 1, 1).expand(shape)
    baseline_loss = loss_module(constant, target, valid).total.detach()
    require_finite(baseline_loss, f"{what}: loss of the baseline")
