"""Contract check for multi-task loss weightings (:class:`pixcore.TaskWeighting`)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from pixcore._interfaces import LossOutput, TaskWeighting
from pixcore.plugin._manager import PluginManager, get_plugin_manager
from pixcore.testing._contract import ContractError, require, require_finite

__all__ = ["check_weighting"]

Present = Mapping[str, bool | Tensor] | None


def _losses(tasks: Sequence[str], step: int, absent_value: float | None = None,
            absent: str | None = None) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    values = 0.1 + 2.0 * torch.rand(len(tasks), generator=g)
    losses = {t: values[i].clone().requires_grad_(True) for i, t in enumerate(tasks)}
    if absent is not None and absent_value is not None:
        losses[absent] = torch.tensor(absent_value, requires_grad=True)
    return losses


def _call(
    weighting: TaskWeighting, losses: Mapping[str, Tensor], present: Present, what: str
) -> LossOutput:
    out = weighting(losses, present)
    require(
        isinstance(out, LossOutput),
        f"{what} returned {type(out).__name__}, not a pixcore.LossOutput",
    )
    total = out.total
    require(
        isinstance(total, Tensor) and total.ndim == 0 and total.is_floating_point(),
        f"{what}: LossOutput.total must be a floating 0-dim tensor, got "
        f"{getattr(total, 'shape', total)!r}",
    )
    require_finite(total.detach(), f"{what}: LossOutput.total")
    for name, part in out.parts.items():
        require(
            isinstance(part, Tensor) and part.ndim == 0,
            f"{what}: parts[{name!r}] must be a 0-dim tensor",
        )
        require_finite(part.detach(), f"{what}: parts[{name!r}]")
    return out


def _state(weighting: TaskWeighting) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in weighting.state_dict().items()}


def _same_state(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> bool:
    def same(x: Tensor, y: Tensor) -> bool:
        if not x.is_floating_point():
            return torch.equal(x, y)
        return torch.equal(x.nan_to_num(), y.nan_to_num()) and torch.equal(x.isnan(), y.isnan())

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def _train_step(weighting: TaskWeighting, losses: Mapping[str, Tensor], present: Present,
                what: str) -> float:
    """One training step: forward, backward, and a plain SGD step on the weighting's parameters."""
    out = _call(weighting, losses, present, what)
    params = [p for p in weighting.parameters() if p.requires_grad]
    if params:
        grads = torch.autograd.grad(out.total, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if g is not None:
                    p.sub_(0.1 * g)
    return float(out.total.detach())


def check_weighting(
    weighting: str | Callable[[], TaskWeighting],
    params: Mapping[str, Any] | None = None,
    *,
    tasks: Sequence[str] = ("a", "b", "c"),
    manager: PluginManager | None = None,
    steps: int = 7,
) -> None:
    """Check the :class:`pixcore.TaskWeighting` contract; raise :class:`ContractError` if broken.

    ``weighting`` is a registry name (created with ``params`` and the context facts
    ``tasks`` and ``weights``, as pixcore does) or a factory returning a fresh instance.
    Rules, over a few training steps with losses drawn per step:

    * ``forward(losses, present)`` returns a :class:`pixcore.LossOutput` whose total is a
      finite floating scalar with a gradient path to the losses of present tasks; parts
      are finite scalars;
    * ``present=None`` means every task is present;
    * an absent task (``present[t]`` False) has no influence: the gradient w.r.t. its
      loss is exactly zero, and its loss value changes neither the total nor the state
      (statistics), then or later;
    * the state is complete: a fresh instance loaded with ``state_dict()`` after some
      steps continues with the same totals (learnable weights are parameters, running
      statistics buffers), so that a resumed run is exact;
    * evaluation mode changes no state.

    Example::

        from pixcore.testing import check_weighting, isolated_manager
        import my_plugin

        def test_contract():
            check_weighting("my_weighting", manager=isolated_manager(my_plugin))
    """
    tasks = list(tasks)
    require(len(tasks) >= 2, "check_weighting needs at least two task names")
    if isinstance(weighting, str):
        name = weighting
        registry = (manager or get_plugin_manager()).registry("weightings")
        context = {"tasks": tasks, "weights": dict.fromkeys(tasks, 1.0)}

        def create() -> TaskWeighting:
            return registry.create(name, params, context=context)  # type: ignore[no-any-return]
        what = f"weighting {name!r}"
    else:
        create = weighting
        what = "weighting"
    first = create()
    require(
        isinstance(first, TaskWeighting),
        f"{what} created a {type(first).__name__}, not a pixcore.TaskWeighting",
    )
    absent = tasks[1]
    present = {t: torch.tensor(t != absent) for t in tasks}

    # Gradient paths, present=None, and an absent task's zero gradient.
    probe = copy.deepcopy(first).train()
    losses = _losses(tasks, 0)
    out = _call(probe, losses, present, what)
    require(out.total.requires_grad, f"{what}: LossOutput.total has no gradient path to the losses")
    grads = torch.autograd.grad(out.total, [losses[t] for t in tasks], allow_unused=True)
    for task, grad in zip(tasks, grads, strict=True):
        if task == absent:
            require(grad is None or not bool(grad.abs().sum()),
                    f"{what}: the loss of an absent task gets a non-zero gradient ({grad})")
    everyone = dict.fromkeys(tasks, True)
    all_none = _call(copy.deepcopy(first).train(), _losses(tasks, 0), None, what).total.detach()
    all_true = _call(copy.deepcopy(first).train(), _losses(tasks, 0), everyone, what).total.detach()
    require(torch.equal(all_none, all_true),
            f"{what}: present=None gives {float(all_none)}, every task present {float(all_true)}")

    # An absent task's loss value influences nothing, then or later.
    a, b = copy.deepcopy(first).train(), copy.deepcopy(first).train()
    for step in range(steps):
        flags = present if step % 3 == 1 else None
        ta = _train_step(a, _losses(tasks, step, 1.0, absent if flags else None), flags, what)
        tb = _train_step(b, _losses(tasks, step, 1000.0, absent if flags else None), flags, what)
        require(ta == tb, f"{what}: step {step}: the loss of an absent task changed the total "
                          f"({ta} against {tb})")
    if not _same_state(_state(a), _state(b)):
        raise ContractError(
            f"{what}: the loss of an absent task entered the state: "
            f"{ {k: v.tolist() for k, v in _state(a).items()} } against "
            f"{ {k: v.tolist() for k, v in _state(b).items()} }"
        )

    # The state is complete: a fresh instance loaded from state_dict continues identically.
    original = copy.deepcopy(first).train()
    half = max(1, steps // 2)
    for step in range(half):
        _train_step(original, _losses(tasks, step), present if step % 3 == 1 else None, what)
    restored = create().train()
    try:
        restored.load_state_dict(original.state_dict())
    except Exception as error:  # a mismatch of keys or shapes
        raise ContractError(
            f"{what}: a fresh instance cannot load the state_dict: {error}"
        ) from error
    for step in range(half, steps + 2):
        flags = present if step % 3 == 1 else None
        t1 = _train_step(original, _losses(tasks, step), flags, what)
        t2 = _train_step(restored, _losses(tasks, step), flags, what)
        require(
            t1 == t2,
            f"{what}: after loading its state_dict, step {step} gives {t2} instead of {t1}: "
            "keep every running statistic in a buffer (register_buffer)",
        )

    # Evaluation mode changes no state.
    before = _state(original)
    original.eval()
    for step in range(3):
        _call(original, _losses(tasks, 100 + step), None, what)
    require(
        _same_state(before, _state(original)), f"{what}: a forward in eval mode changed the state"
    )
