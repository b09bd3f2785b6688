r"""Multi-task summaries: delta-m, the mean relative change against single-task baselines."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pixcore._interfaces import Metric

if TYPE_CHECKING:
    from pixcore.model._compose import MultiTaskModel, TaskBinding
    from pixcore.plugin._manager import PluginManager

__all__ = ["DELTA_M_PROTOCOL", "delta_m", "metric_directions"]

#: Recorded with every delta-m result: exactly what was computed.
DELTA_M_PROTOCOL = (
    "delta-m (Maninis et al. 2019; Vandenhende et al. 2021): mean over tasks of the mean "
    "over each task's metric keys of (-1)^l (M - B) / |B| * 100, l = 1 where lower is better"
)


def _directions_of(metric_class: type, into: dict[str, bool], conflicts: set[str]) -> None:
    declared = getattr(metric_class, "higher_is_better", None) or {}
    for key, higher in declared.items():
        if key in into and into[key] != bool(higher):
            conflicts.add(key)
        into[key] = bool(higher)


def metric_directions(
    model: MultiTaskModel | Mapping[str, TaskBinding], manager: PluginManager | None = None
) -> dict[str, dict[str, bool]]:
    """``{task: {metric key: higher is better}}`` for the metrics a model evaluates.

    Read from each metric class's ``higher_is_better`` (see :class:`pixcore.Metric`);
    pass the result to :func:`delta_m` as ``directions``.

    Example::

        results = pixcore.train.evaluate(model, val_loader, device)
        summary = pixcore.delta_m(results, single_task_results,
                                  directions=pixcore.metric_directions(model))
    """
    bindings = model if isinstance(model, Mapping) else model.bindings
    directions: dict[str, dict[str, bool]] = {}
    for task, binding in bindings.items():
        found: dict[str, bool] = {}
        conflicts: set[str] = set()
        for metric in binding.new_metrics(manager).values():
            _directions_of(type(metric), found, conflicts)
        directions[task] = {k: v for k, v in found.items() if k not in conflicts}
    return directions


def _registered_directions(manager: PluginManager | None) -> tuple[dict[str, bool], set[str]]:
    """Directions of every registered metric class, and the keys they disagree on."""
    from pixcore.plugin._manager import get_plugin_manager

    registry = (manager or get_plugin_manager()).registry("metrics")
    found: dict[str, bool] = {}
    conflicts: set[str] = set()
    for name in registry.list():
        factory = registry.get(name).factory
        if isinstance(factory, type) and issubclass(factory, Metric):
            _directions_of(factory, found, conflicts)
    return found, conflicts


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def delta_m(
    results: Mapping[str, Mapping[str, Any]],
    baselines: Mapping[str, Mapping[str, Any]],
    *,
    directions: Mapping[str, Mapping[str, bool]] | None = None,
    keys: Mapping[str, Sequence[str]] | None = None,
    manager: PluginManager | None = None,
) -> dict[str, Any]:
    r"""The multi-task performance change :math:`\Delta_m` of ``results`` against ``baselines``.

    .. math::
        \Delta_m = \frac{1}{T} \sum_{t=1}^{T} \frac{1}{|K_t|} \sum_{k \in K_t}
                   (-1)^{l_k} \, \frac{M_{t,k} - B_{t,k}}{|B_{t,k}|} \cdot 100

    in percent, with :math:`l_k = 1` where lower is better, :math:`M` the multi-task
    model's and :math:`B` the baseline's (usually single-task models') results
    (Maninis, Radosavovic and Kokkinos, CVPR 2019; Vandenhende et al., TPAMI 2021).
    Each task counts once however many metric keys it has. Positive is better.
    Example: mIoU 0.5 against 0.4 is +25, AbsRel 0.12 against 0.10 is -20; the two tasks
    give :math:`\Delta_m = +2.5`.

    Args:
        results: ``{task: {metric key: value}}``, as :func:`pixcore.train.evaluate`
            returns (non-numeric entries such as ``protocol`` are ignored).
        baselines: The same for the baseline, with the same task names.
        directions: ``{task: {metric key: higher is better}}``, e.g. from
            :func:`metric_directions`. Default: the ``higher_is_better`` of every metric
            class registered with ``manager`` (a key that two classes disagree on has no
            direction then).
        keys: ``{task: [metric keys]}`` to summarise exactly those (each must have a
            direction and a value on both sides). Default: every numeric key of a task's
            results that has a direction; the others are skipped.
        manager: The plugin manager whose metrics give the default directions.

    Returns:
        ``{"delta_m": float, "per_task": {task: float}, "per_key": {task: {key: float}},
        "skipped": {"task/key" or "task": reason}, "protocol": str}``; ``per_task`` is
        each task's mean over its keys, in percent; a task left with no key is skipped.

    Raises:
        KeyError: A task or key asked for is missing from ``results`` or ``baselines``,
            or a key in ``keys`` has no direction.
        ValueError: A baseline value is 0 (the relative change is undefined), a value is
            not a finite number, or no key is left to summarise.

    """
    conflicts: set[str] = set()
    fallback: dict[str, bool] = {}
    if directions is None:
        fallback, conflicts = _registered_directions(manager)

    def direction_of(task: str, key: str) -> bool | None:
        if directions is not None:
            return directions.get(task, {}).get(key)
        return None if key in conflicts else fallback.get(key)

    tasks = list(keys) if keys is not None else list(results)
    per_key: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    for task in tasks:
        if task not in results:
            raise KeyError(
                f"delta_m: task {task!r} is not in the results; they hold {sorted(results)}"
            )
        if task not in baselines:
            raise KeyError(
                f"delta_m: task {task!r} has no baseline; the baselines hold {sorted(baselines)}. "
                "Pass the baseline results of every task (e.g. single-task models')."
            )
        explicit = keys is not None
        candidates = list(keys[task]) if keys is not None else list(results[task])
        changes: dict[str, float] = {}
        for key in candidates:
            where = f"{task}/{key}"
            if key not in results[task]:
                raise KeyError(
                    f"delta_m: {where} is not in the results; {task} has {sorted(results[task])}"
                )
            value = _number(results[task][key])
            if value is None:
                if explicit:
                    raise ValueError(f"delta_m: {where} = {results[task][key]!r} is not a number")
                continue  # protocol names and other records
            higher = direction_of(task, key)
            if higher is None:
                reason = (
                    "metric classes disagree on its direction" if key in conflicts
                    else "no direction (the metric's higher_is_better does not name it)"
                )
                if explicit:
                    raise KeyError(
                        f"delta_m: {where} has {reason}; pass directions={{{task!r}: "
                        f"{{{key!r}: True or False}}}} (True where higher is better)"
                    )
                skipped[where] = reason
                continue
            if key not in baselines[task]:
                if explicit:
                    raise KeyError(
                        f"delta_m: {where} is not in the baselines; "
                        f"{task} has {sorted(baselines[task])}"
                    )
                skipped[where] = "not in the baselines"
                continue
            base = _number(baselines[task][key])
            if base is None or not math.isfinite(base) or not math.isfinite(value):
                raise ValueError(
                    f"delta_m: {where} must be a finite number on both sides; got result "
                    f"{results[task][key]!r}, baseline {baselines[task][key]!r}"
                )
            if base == 0.0:
                raise ValueError(
                    f"delta_m: the baseline of {where} is 0, so its relative change is undefined. "
                    f"Leave the key out with keys={{{task!r}: [...]}}."
                )
            sign = 1.0 if higher else -1.0
            changes[key] = sign * (value - base) / abs(base) * 100.0
        if changes:
            per_key[task] = changes
        else:
            skipped.setdefault(task, "no metric key with a direction and a baseline")
    if not per_key:
        raise ValueError(
            "delta_m: no metric key to summarise; "
            + (f"skipped: {skipped}. " if skipped else "")
            + "Pass directions (pixcore.metric_directions(model)) or keys."
        )
    per_task = {task: sum(changes.values()) / len(changes) for task, changes in per_key.items()}
    return {
        "delta_m": sum(per_task.values()) / len(per_task),
        "per_task": per_task,
        "per_key": per_key,
        "skipped": skipped,
        "protocol": DELTA_M_PROTOCOL,
    }
