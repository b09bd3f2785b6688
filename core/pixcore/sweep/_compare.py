r"""The comparison of a sweep's settings: mean ± std over seeds, min, max, and delta-m.

For each setting and each numeric final metric ``task/key`` of the members'
``metrics.json``: the number of seeds ``n`` that reported a finite value, their mean, their
*sample* standard deviation (``ddof=1``; none for a single seed), min and max.

:math:`\Delta_m` of a setting compares its seed means with the baseline setting's seed
means by :func:`pixcore.delta_m`: each metric's relative change in percent, signed by its
``higher_is_better`` (read from the metric classes of the baseline's config by
:func:`pixcore.metric_directions`), averaged per task and then over tasks; positive is
better. Metrics without a direction, or whose baseline mean is 0 (a relative change is
undefined) or not finite, are left out and listed as skipped.

Written to the sweep folder: ``comparison.csv`` (one row per setting and metric),
``comparison.json`` (everything, values per seed included), ``comparison.md`` (tables),
and ``plots/*.png``.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pixcore._errors import ConfigError, PixcoreError
from pixcore.sweep._grid import SEED_KEY, setting_label
from pixcore.sweep._plan import Member, Setting, SweepPlan, load_plan

if TYPE_CHECKING:
    from pixcore._config import RunConfig
    from pixcore.plugin._manager import PluginManager

__all__ = [
    "STD_NOTE",
    "Comparison",
    "MetricStats",
    "SettingSummary",
    "baseline_setting",
    "check_metric_names",
    "compare",
    "finished_metrics",
    "format_markdown",
]

#: How the spread over seeds is computed; written into every comparison file.
STD_NOTE = "std: sample standard deviation over seeds (ddof=1); none for a single seed"


@dataclass(frozen=True)
class MetricStats:
    """One metric of one setting over its seeds (finite values only)."""

    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    values: dict[int, float | None]  # seed -> value (None: missing or not finite)


@dataclass
class SettingSummary:
    """One setting: its seeds' metrics and its delta-m against the baseline."""

    label: str
    setting: dict[str, str]
    seeds: list[int]
    missing: list[str]
    metrics: dict[str, MetricStats]
    delta_m: float | None = None
    delta_m_per_task: dict[str, float] = field(default_factory=dict)
    delta_m_skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Comparison:
    """A sweep's comparison (see the module docstring); ``files`` are what :func:`compare` wrote."""

    out: Path
    plan: SweepPlan
    baseline: str
    metrics: list[str]
    chosen: list[str]
    directions: dict[str, bool | None]
    settings: list[SettingSummary]
    files: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The content of ``comparison.json``."""
        return {
            "config": str(self.plan.config),
            "axes": {axis.key: list(axis.values) for axis in self.plan.axes},
            "seed_key": SEED_KEY,
            "seeds": list(self.plan.seeds),
            "baseline": self.baseline,
            "std": STD_NOTE,
            "delta_m": {"unit": "percent, positive is better", "metrics": self.chosen,
                        "protocol": _delta_m_protocol()},
            "higher_is_better": self.directions,
            "settings": [_jsonable(asdict(summary)) for summary in self.settings],
        }


def _delta_m_protocol() -> str:
    from pixcore.model._delta_m import DELTA_M_PROTOCOL

    return DELTA_M_PROTOCOL


def _jsonable(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null; dict keys text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- reading the members ---------------------------------------------------------------


def _numeric_leaves(prefix: str, value: Any, into: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _numeric_leaves(f"{prefix}/{key}", inner, into)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        into[prefix] = float(value)


def finished_metrics(folder: Path) -> dict[str, float] | None:
    """``{"task/key": value}`` of a finished run's ``metrics.json``; None if it has not finished.

    A run has finished when ``metrics.json`` holds a complete JSON object of tasks (the
    trainer writes it last, and only for a run that was not interrupted).
    """
    try:
        data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) for v in data.values()):
        return None
    found: dict[str, float] = {}
    for task, results in data.items():
        _numeric_leaves(str(task), results, found)
    return found


# -- the baseline and the metrics asked for ----------------------------------------------


def baseline_setting(plan: SweepPlan, spec: Mapping[str, str] | None) -> Setting:
    """The setting ``spec`` (``{key: value}``, some or all swept keys) names; None: the first setting."""
    settings = plan.settings()
    if not spec:
        return settings[0]
    keys = [axis.key for axis in plan.axes]
    unknown = [key for key in spec if key not in keys]
    if unknown:
        raise ConfigError(f"--baseline: {', '.join(unknown)} is not swept; the swept keys are "
                          f"{', '.join(keys) or '(none)'}")
    matching = [s for s in settings if all(dict(s)[key] == value for key, value in spec.items())]
    if len(matching) != 1:
        values = "; ".join(f"{a.key}: {', '.join(a.values)}" for a in plan.axes)
        problem = "matches no setting" if not matching else f"matches {len(matching)} settings; name more keys"
        raise ConfigError(f"--baseline {','.join(f'{k}={v}' for k, v in spec.items())} {problem} (values as "
                          f"written in --set: {values})")
    return matching[0]


def check_metric_names(metrics: Sequence[str], tasks: Sequence[str]) -> None:
    """Each metric is ``task/key`` with a task of the config."""
    for name in metrics:
        task, slash, key = name.partition("/")
        if not slash or not key:
            raise ConfigError(f"--metric {name!r}: expected TASK/KEY, e.g. depth/abs_rel")
        if task not in tasks:
            raise ConfigError(f"--metric {name!r}: the config has no task {task!r}; its tasks are {', '.join(tasks)}")


# -- statistics -------------------------------------------------------------------------


def _stats(values: dict[int, float | None]) -> MetricStats:
    finite = np.array([v for v in values.values() if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return MetricStats(0, None, None, None, None, values)
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else None
    return MetricStats(int(finite.size), float(finite.mean()), std, float(finite.min()), float(finite.max()), values)


def _summaries(plan: SweepPlan, metrics: list[str], results: dict[Member, dict[str, float]]) -> list[SettingSummary]:
    summaries = []
    for setting in plan.settings():
        members = [m for m in plan.members if m.setting == setting]
        done = [m for m in members if m in results]
        stats = {name: _stats({m.seed: results[m].get(name) for m in done}) for name in metrics}
        summaries.append(SettingSummary(setting_label(setting), dict(setting), [m.seed for m in done],
                                        [m.name for m in members if m not in results], stats))
    return summaries


# -- delta-m ----------------------------------------------------------------------------


def _run_config(plan: SweepPlan, member: Member) -> RunConfig:
    """The config ``member`` ran with: from its checkpoint, else from the plan's config file."""
    from pixcore._config import RunConfig, load_config

    checkpoint = plan.folder(member) / "checkpoint.safetensors"
    if checkpoint.exists():
        from pixcore.train import read_metadata

        try:
            return RunConfig.model_validate(read_metadata(checkpoint)["config"])
        except (PixcoreError, KeyError, ValueError):
            pass  # an unreadable checkpoint: the config file says the same
    return load_config(plan.config, member.overrides)


def _directions(config: RunConfig, manager: PluginManager | None) -> dict[str, bool]:
    """``{"task/key": higher is better}`` of the metrics ``config``'s tasks evaluate."""
    from pixcore._config import ComponentConfig
    from pixcore.model._compose import TaskBinding, build_tasks
    from pixcore.model._delta_m import metric_directions

    bindings = {}
    for key, task in build_tasks(config.model, manager=manager).items():
        metrics = config.model.tasks[key].metrics
        if metrics is None:
            metrics = [ComponentConfig(name=name) for name in type(task).default_metrics]
        bindings[key] = TaskBinding(task, metrics, config.model.tasks[key].weight)
    directions = metric_directions(bindings, manager)
    return {f"{task}/{key}": higher for task, keys in directions.items() for key, higher in keys.items()}


def _delta_m(summary: SettingSummary, base: SettingSummary, chosen: list[str],
             directions: Mapping[str, bool | None]) -> None:
    """Fill ``summary``'s delta-m over the ``chosen`` metrics that can be compared."""
    from pixcore.model._delta_m import delta_m

    results: dict[str, dict[str, float]] = {}
    baselines: dict[str, dict[str, float]] = {}
    keys: dict[str, list[str]] = {}
    directions_by_task: dict[str, dict[str, bool]] = {}
    for name in chosen:
        task, _, key = name.partition("/")
        mean, base_mean, higher = summary.metrics[name].mean, base.metrics[name].mean, directions.get(name)
        reason = None
        if higher is None:
            reason = "no direction (its metric's higher_is_better does not name it)"
        elif mean is None or base_mean is None:
            reason = "no finite value in this setting or in the baseline"
        elif base_mean == 0.0:
            reason = "the baseline's mean is 0: a relative change is undefined"
        if reason is not None:
            summary.delta_m_skipped[name] = reason
            continue
        assert mean is not None and base_mean is not None and higher is not None
        results.setdefault(task, {})[key] = mean
        baselines.setdefault(task, {})[key] = base_mean
        keys.setdefault(task, []).append(key)
        directions_by_task.setdefault(task, {})[key] = higher
    if not keys:
        return
    found = delta_m(results, baselines, directions=directions_by_task, keys=keys)
    summary.delta_m = float(found["delta_m"])
    summary.delta_m_per_task = {task: float(value) for task, value in found["per_task"].items()}


# -- the files --------------------------------------------------------------------------


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _write_csv(comparison: Comparison, path: Path) -> None:
    keys = [axis.key for axis in comparison.plan.axes]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["setting", *keys, "metric", "higher_is_better", "n", "mean", "std", "min", "max"])
        for summary in comparison.settings:
            axes = [summary.setting[key] for key in keys]
            for name in comparison.metrics:
                s = summary.metrics[name]
                direction = comparison.directions.get(name)
                writer.writerow([summary.label, *axes, name, "" if direction is None else direction, s.n,
                                 *(repr(v) if v is not None else "" for v in (s.mean, s.std, s.min, s.max))])
            writer.writerow([summary.label, *axes, "delta_m", True, len(summary.seeds),
                             "" if summary.delta_m is None else repr(summary.delta_m), "", "", ""])


def format_markdown(comparison: Comparison) -> str:
    """``comparison.md``: the settings with their delta-m, then the chosen metrics per setting."""
    plan = comparison.plan
    keys = [axis.key for axis in plan.axes] or ["setting"]
    lines = [
        "# Sweep comparison", "",
        f"Config `{plan.config}`; {len(comparison.settings)} setting(s) x seeds "
        f"{', '.join(map(str, plan.seeds))} (`{SEED_KEY}`); baseline: `{comparison.baseline}`.",
        f"Cells: mean ± {STD_NOTE}. Δm: percent against the baseline, positive is better, over "
        f"{', '.join(comparison.chosen) or 'no metric'}. All metrics, with min and max: comparison.csv.", "",
        "| " + " | ".join([*keys, "seeds", "Δm (%)"]) + " |",
        "|" + "---|" * (len(keys) + 2),
    ]
    for summary in comparison.settings:
        cells = [summary.setting[key] for key in keys] if plan.axes else [summary.label]
        if summary.label == comparison.baseline:
            cells[-1] += " (baseline)"
        lines.append("| " + " | ".join([*cells, str(len(summary.seeds)), _number(summary.delta_m, 3)]) + " |")
    lines += ["", "| metric | better | " + " | ".join(s.label for s in comparison.settings) + " |",
              "|---|---|" + "---|" * len(comparison.settings)]
    for name in comparison.chosen:
        direction = {True: "higher", False: "lower", None: ""}[comparison.directions.get(name)]
        cells = []
        for summary in comparison.settings:
            s = summary.metrics[name]
            cells.append(_number(s.mean) + ("" if s.std is None else f" ± {_number(s.std, 2)}"))
        lines.append(f"| {name} | {direction} | " + " | ".join(cells) + " |")
    missing = [name for summary in comparison.settings for name in summary.missing]
    if missing:
        lines += ["", f"Not finished (not in the table): {', '.join(missing)}. Run the sweep's command again to "
                      "finish them."]
    return "\n".join(lines) + "\n"


# -- compare ----------------------------------------------------------------------------


def _chosen(metrics: list[str], asked: Sequence[str] | None, directions: Mapping[str, bool | None]) -> list[str]:
    if asked:
        unknown = [name for name in asked if name not in metrics]
        if unknown:
            raise ConfigError(f"--metric {', '.join(unknown)}: not a metric of the finished members; they report "
                              f"{', '.join(metrics)}")
        return list(asked)
    with_direction = [name for name in metrics if directions.get(name) is not None]
    return with_direction or metrics


def compare(
    out: str | Path,
    *,
    baseline: Mapping[str, str] | None = None,
    metrics: Sequence[str] | None = None,
    plots: bool = True,
    manager: PluginManager | None = None,
) -> Comparison:
    """Compare the finished members of the sweep in ``out`` and write the comparison files.

    Args:
        out: The sweep folder (with ``sweep.json``).
        baseline: ``{key: value}`` naming the baseline setting; default: the plan's
            (``--baseline`` of the sweep), else the first setting.
        metrics: ``["task/key", ...]`` for delta-m, the Markdown table and the plots;
            default: the plan's, else every metric with a direction.
        plots: Also draw ``plots/<metric>__vs__<key>.png`` (matplotlib).
        manager: The plugin manager whose metric classes give the directions.

    Raises:
        PixcoreError: ``out`` holds no sweep, or no member has finished.
        ConfigError: A baseline or metric that the sweep does not have.

    """
    plan = load_plan(out)
    base_setting = baseline_setting(plan, baseline if baseline is not None else plan.baseline)
    results = {m: r for m in plan.members if (r := finished_metrics(plan.folder(m))) is not None}
    if not results:
        raise PixcoreError(f"no member of the sweep in {plan.out} has finished (none has a metrics.json); run "
                           f"`{plan.command_line()}` first")
    names = list(dict.fromkeys(name for m in plan.members if m in results for name in results[m]))
    base_member = next((m for m in plan.members if m.setting == base_setting and m in results), None)
    directions: dict[str, bool | None] = {name: None for name in names}
    if base_member is not None:
        found = _directions(_run_config(plan, base_member), manager)
        directions.update({name: found.get(name) for name in names})
    chosen = _chosen(names, metrics if metrics is not None else plan.metrics, directions)
    summaries = _summaries(plan, names, results)
    base = next(s for s in summaries if s.label == setting_label(base_setting))
    for summary in summaries:
        _delta_m(summary, base, chosen, directions)
    comparison = Comparison(plan.out, plan, base.label, names, chosen, directions, summaries)
    _write(comparison, plots)
    return comparison


def _write(comparison: Comparison, plots: bool) -> None:
    out = comparison.out
    _write_csv(comparison, out / "comparison.csv")
    (out / "comparison.json").write_text(json.dumps(comparison.to_json(), indent=2) + "\n", encoding="utf-8")
    (out / "comparison.md").write_text(format_markdown(comparison), encoding="utf-8")
    comparison.files = [out / "comparison.csv", out / "comparison.json", out / "comparison.md"]
    if plots:
        from pixcore.sweep._plots import plot_comparison

        comparison.files += plot_comparison(comparison, out / "plots")
