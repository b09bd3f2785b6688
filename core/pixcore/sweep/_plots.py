"""Plots of a sweep: each chosen metric against each swept key, mean with std error bars.

One line per combination of the other swept keys' values. Keys whose values are all
numbers get a numeric axis, logarithmic when the values are positive and span two decades
or more (learning rates); other keys are categorical, in the order given on the command
line. Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global backend switched).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pixcore.sweep._grid import Axis, numeric_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from pixcore.sweep._compare import Comparison, SettingSummary

__all__ = ["axis_positions", "plot_comparison"]

Scale = Literal["linear", "log", "categorical"]


def axis_positions(values: Sequence[str]) -> tuple[list[float], Scale]:
    """Where each value of a swept key goes on the x axis, and the axis' scale."""
    numbers = [numeric_value(value) for value in values]
    if numbers and all(number is not None for number in numbers):
        found = [float(number) for number in numbers if number is not None]
        if min(found) > 0 and max(found) / min(found) >= 100:
            return found, "log"
        return found, "linear"
    return [float(i) for i in range(len(values))], "categorical"


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-")


def _draw_lines(ax: Axes, comparison: Comparison, axis: Axis, metric: str, positions: list[float]) -> None:
    """One error-bar line per combination of the other keys' values."""
    by_setting: dict[tuple[tuple[str, str], ...], SettingSummary] = {
        tuple(summary.setting.items()): summary for summary in comparison.settings
    }
    others = [a for a in comparison.plan.axes if a.key != axis.key]
    order = sorted(range(len(axis.values)), key=lambda i: positions[i])
    for combination in itertools.product(*(a.values for a in others)):
        fixed = dict(zip((a.key for a in others), combination, strict=True))
        xs, ys, errors = [], [], []
        for i in order:
            values = {**fixed, axis.key: axis.values[i]}
            stats = by_setting[tuple((a.key, values[a.key]) for a in comparison.plan.axes)].metrics[metric]
            if stats.mean is not None:
                xs.append(positions[i])
                ys.append(stats.mean)
                errors.append(stats.std or 0.0)
        label = ", ".join(f"{key}={value}" for key, value in fixed.items()) or None
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label)
    if others:
        ax.legend(fontsize="small")


def plot_comparison(comparison: Comparison, folder: Path) -> list[Path]:
    """Write ``folder/<metric>__vs__<key>.png`` for each chosen metric and swept key; their paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for axis in comparison.plan.axes:
        positions, scale = axis_positions(axis.values)
        for metric in comparison.chosen:
            figure = Figure(figsize=(6.4, 4.2), layout="constrained")
            FigureCanvasAgg(figure)
            ax = figure.add_subplot()
            _draw_lines(ax, comparison, axis, metric, positions)
            if scale == "log":
                ax.set_xscale("log")
            if scale == "categorical":
                ax.set_xticks(positions, list(axis.values), rotation=20 if len(axis.values) > 4 else 0)
            better = {True: " (higher is better)", False: " (lower is better)", None: ""}
            ax.set_xlabel(axis.key)
            ax.set_ylabel(metric + better[comparison.directions.get(metric)])
            ax.set_title(f"{metric}: mean ± std over seeds", fontsize="medium")
            ax.grid(alpha=0.3)
            path = folder / f"{_file_part(metric)}__vs__{_file_part(axis.key)}.png"
            figure.savefig(path, dpi=100)
            written.append(path)
    return written
