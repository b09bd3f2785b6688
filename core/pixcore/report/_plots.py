"""The report's figures, drawn with matplotlib's object-oriented API on the Agg canvas.

No pyplot: figures are plain :class:`matplotlib.figure.Figure` objects attached to a
``FigureCanvasAgg``, so drawing a report neither changes the user's matplotlib backend
nor needs a display, and figures are freed with their last reference.

Each ``*_figure`` function returns a figure, or None when the run has nothing to draw for
it. Units: depth and its errors in metres, angles in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from pixcore._runfiles import Snapshot
from pixcore.export._pictures import vector_picture

__all__ = [
    "DPI",
    "angle_histogram_figure",
    "confusion_figure",
    "depth_error_figure",
    "depth_maps_figure",
    "iou_from_confusion",
    "iou_figure",
    "loss_figure",
    "lr_figure",
    "metrics_figure",
    "normals_maps_figure",
    "samples_figure",
    "save_figure",
    "weights_figure",
]

DPI = 100
#: Thresholds of the "within" percentages of normals, degrees (as the angular_error metric).
ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
#: Colour of pixels without a valid value in every map of the report (matplotlib's "0.82").
NO_VALUE_GREY = "0.82"
#: Units of metric keys, by task role, for the axis titles.
METRIC_UNITS: dict[str, dict[str, str]] = {
    "depth": {"rmse": "m", "sq_rel": "m", "mae": "m"},
    "normals": {"mean": "degrees", "median": "degrees", "rmse": "degrees",
                "pct_11.25": "%", "pct_22.5": "%", "pct_30": "%"},
}
_MAX_METRIC_PANELS = 12


def _figure(width: float, height: float, layout: Literal["constrained"] | None = "constrained") -> Figure:
    """A figure on an Agg canvas. ``layout=None`` for the grids, which place their axes themselves:
    the constrained layout measures every tick label of every panel and draws twice, which made
    the grids most of a report's time."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


@dataclass(frozen=True)
class _ImageTable:
    """A figure of image panels in rows and columns, placed in inches, with colour-bar axes."""

    figure: Figure
    panels: list[list[Axes]]
    #: ``(column, row)``: the colour bar of that column in that row; ``(column, -1)``: one for all rows.
    colorbars: dict[tuple[int, int], Axes]


def _image_table(
    rows: int, titles: Sequence[str], aspect: float, suptitle: str, labels: Sequence[str],
    colorbars: Mapping[int, str] = {},  # noqa: B006 (read only)
    panel: float = 2.3, bottom: float = 0.15,
) -> _ImageTable:
    """``rows`` x ``len(titles)`` panels of ``panel`` inches wide (``aspect`` = height / width), row
    ``labels`` on the left; ``colorbars[c]``: ``"row"`` for a colour bar right of column ``c`` in every
    row, ``"all"`` for one spanning the rows."""
    height_panel = panel * min(max(aspect, 0.25), 2.0)
    gap, bar, bar_room, left, right, top = 0.1, 0.13, 1.0, 0.4, 0.1, 0.8
    xs: list[float] = []
    bars: dict[int, float] = {}
    x = left
    for c in range(len(titles)):
        xs.append(x)
        x += panel
        if c in colorbars:
            bars[c] = x + 0.08
            x += 0.08 + bar + bar_room
        else:
            x += gap
    width = x + right
    height = top + rows * (height_panel + gap) + bottom
    figure = _figure(width, height, layout=None)
    figure.suptitle(suptitle, y=1.0 - 0.15 / height, va="top")

    def box(x0: float, y_top: float, w: float, h: float) -> tuple[float, float, float, float]:
        """``(left, bottom, width, height)`` in figure fractions of a box given in inches from the top left."""
        return (x0 / width, 1.0 - (y_top + h) / height, w / width, h / height)

    panels: list[list[Axes]] = []
    for r in range(rows):
        y = top + r * (height_panel + gap)
        line = [figure.add_axes(box(xs[c], y, panel, height_panel)) for c in range(len(titles))]
        for c, ax in enumerate(line):
            ax.set_axis_off()
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
        if r < len(labels):
            line[0].text(-0.03, 0.5, labels[r], rotation=90, ha="right", va="center", fontsize=9,
                         transform=line[0].transAxes)
        panels.append(line)
    cbars: dict[tuple[int, int], Axes] = {}
    for c, kind in colorbars.items():
        if kind == "all":
            span = rows * (height_panel + gap) - gap
            cbars[(c, -1)] = figure.add_axes(box(bars[c], top + 0.1 * span, bar, 0.8 * span))
        else:
            for r in range(rows):
                y = top + r * (height_panel + gap)
                cbars[(c, r)] = figure.add_axes(box(bars[c], y + 0.05 * height_panel, bar, 0.9 * height_panel))
    return _ImageTable(figure, panels, cbars)


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as PNG (no "Software" text chunk: the report names no web address)."""
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _with_bad(name: str, bad: str = NO_VALUE_GREY) -> Colormap:
    """A colour map that draws masked (invalid) pixels light grey."""
    return colormaps[name].with_extremes(bad=bad)


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(float(r["step"]), float(r[key])) for r in rows
             if isinstance(r.get(key), int | float) and math.isfinite(float(r[key]))]
    if not pairs:
        return np.empty(0), np.empty(0)
    steps, values = zip(*pairs, strict=True)
    return np.asarray(steps), np.asarray(values)


def _plot(ax: Axes, steps: np.ndarray, values: np.ndarray, **style: Any) -> None:
    ax.plot(steps, values, marker="o" if len(steps) <= 25 else None, markersize=3, **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers


def _finish_axes(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


# --------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------


def loss_figure(rows: Sequence[Mapping[str, Any]], tasks: Iterable[str]) -> Figure:
    """The total (weighted) loss and every task's loss over the steps; log scale when all are positive."""
    figure = _figure(8.0, 4.2)
    ax = figure.add_subplot()
    everything: list[np.ndarray] = []
    for key, label, width in [("loss", "total (weighted)", 2.2)] + [(f"{t}/loss", t, 1.4) for t in tasks]:
        steps, values = _series(rows, key)
        if len(steps):
            _plot(ax, steps, values, label=label, linewidth=width)
            everything.append(values)
    if everything and all((v > 0).all() for v in everything):
        ax.set_yscale("log")
        # Ticks at 1, 2, 5 times powers of ten, as plain numbers (0.5, 2) rather than 5 x 10^-1: a loss
        # often spans about one decade, where the powers of ten alone would leave one or two labels.
        ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    _finish_axes(ax, "step", "loss (training batches)", "Training loss")
    ax.legend(loc="best")
    return figure


def weights_figure(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """The weighting's ``weight/<task>`` values over the steps, or None for fixed weights."""
    keys = sorted({k for r in rows for k in r if k.startswith("weight/")})
    if not keys:
        return None
    figure = _figure(8.0, 3.6)
    ax = figure.add_subplot()
    for key in keys:
        steps, values = _series(rows, key)
        _plot(ax, steps, values, label=key.partition("/")[2], linewidth=1.6)
    _finish_axes(ax, "step", "weight of the task's loss", "Loss weights (model.weighting)")
    ax.legend(loc="best")
    return figure


def lr_figure(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """The learning rate (of the heads; the backbone's is a multiple) over the steps."""
    steps, values = _series(rows, "lr")
    if not len(steps):
        return None
    figure = _figure(8.0, 3.0)
    ax = figure.add_subplot()
    _plot(ax, steps, values, color="tab:purple", linewidth=1.8)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _finish_axes(ax, "step", "learning rate", "Learning rate (first parameter group)")
    return figure


def metrics_figure(
    evaluations: Sequence[tuple[int, Mapping[str, Mapping[str, Any]]]], task: str, role: str = "other"
) -> Figure | None:
    """One panel per scalar metric of ``task`` over the evaluations (per-class keys left out)."""
    rows = [{"step": step, **metrics.get(task, {})} for step, metrics in evaluations if task in metrics]
    if len(rows) < 2:  # one point per panel says nothing the summary table does not
        return None
    keys: list[str] = []
    for row in rows:
        keys += [k for k, v in row.items() if k != "step" and "/" not in k and k not in keys
                 and isinstance(v, int | float) and not isinstance(v, bool)]
    keys = keys[:_MAX_METRIC_PANELS]
    if not keys:
        return None
    columns = min(3, len(keys))
    lines = math.ceil(len(keys) / columns)
    # Fixed margins, in inches (see _figure): room for 4-digit tick labels left of each panel.
    panel_w, panel_h, left, gap_w, gap_h, top, bottom = 2.75, 1.75, 0.8, 0.85, 0.75, 0.75, 0.55
    width = left + columns * panel_w + (columns - 1) * gap_w + 0.2
    height = top + lines * panel_h + (lines - 1) * gap_h + bottom
    figure = _figure(width, height, layout=None)
    figure.subplots_adjust(left=left / width, right=1.0 - 0.2 / width, top=1.0 - top / height,
                           bottom=bottom / height, wspace=gap_w / panel_w, hspace=gap_h / panel_h)
    figure.suptitle(f"{task}: validation metrics over the steps", y=1.0 - 0.12 / height, va="top")
    units = METRIC_UNITS.get(role, {})
    for i, key in enumerate(keys):
        ax = figure.add_subplot(lines, columns, i + 1)
        steps, values = _series(rows, key)
        _plot(ax, steps, values, color="tab:blue", linewidth=1.6)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.4g}"))
        unit = units.get(key)
        ax.set_title(f"{key} ({unit})" if unit else key, fontsize=10)
        ax.grid(alpha=0.3)
        if i >= len(keys) - columns:
            ax.set_xlabel("step")
    return figure


# --------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """IoU per class, ``TP / (G + P - TP)``; NaN for a class neither labelled nor predicted."""
    counts = confusion.astype(np.float64)
    tp = np.diag(counts)
    union = counts.sum(1) + counts.sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def iou_figure(confusion: np.ndarray, names: Sequence[str], task: str, step: int) -> Figure:
    """Horizontal bars of the IoU of every class, with the mean over the classes that occur."""
    iou = iou_from_confusion(confusion)
    classes = len(names)
    figure = _figure(7.5, max(2.6, 0.32 * classes + 1.3))
    ax = figure.add_subplot()
    positions = np.arange(classes)
    ax.barh(positions, np.nan_to_num(iou, nan=0.0), color="tab:blue", height=0.7)
    for y, value in zip(positions, iou, strict=True):
        text = "not present" if np.isnan(value) else f"{value:.2f}"
        ax.text((0.0 if np.isnan(value) else float(value)) + 0.01, float(y), text, va="center", fontsize=8)
    if np.isfinite(iou).any():
        mean = float(np.nanmean(iou))
        ax.axvline(mean, color="tab:red", linestyle="--", linewidth=1.2, label=f"mean IoU\n{mean:.3f}")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the bars, never over their labels
    ax.set_yticks(positions, [str(n) for n in names], fontsize=9 if classes <= 40 else 6)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.1)
    _finish_axes(ax, "IoU (intersection over union)", "class",
                 f"{task}: IoU per class, whole validation set, step {step}")
    return figure


def confusion_figure(confusion: np.ndarray, names: Sequence[str], task: str, step: int) -> Figure:
    """The confusion matrix normalised per true class (each row sums to 1), with class names."""
    counts = confusion.astype(np.float64)
    totals = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), np.nan)
    classes = len(names)
    side = min(16.0, max(4.5, 0.5 * classes + 2.8))
    figure = _figure(side + 1.2, side)
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(normalised), cmap=_with_bad("Blues", "white"), vmin=0.0, vmax=1.0,
                      interpolation="nearest")
    figure.colorbar(image, ax=ax, label="fraction of the true class's pixels", shrink=0.8)
    ticks = np.arange(classes)
    size = 9 if classes <= 20 else 6
    ax.set_xticks(ticks, [str(n) for n in names], rotation=45, ha="right", rotation_mode="anchor", fontsize=size)
    ax.set_yticks(ticks, [str(n) for n in names], fontsize=size)
    if classes <= 15:
        for (row, column), value in np.ndenumerate(normalised):
            if np.isfinite(value) and value >= 0.005:
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{task}: confusion matrix, rows normalised, step {step}")
    return figure


# --------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------


def _depth_arrays(snapshot: Snapshot, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    target, prediction, valid = (snapshot.get(task, k) for k in ("target", "prediction", "valid"))
    if target is None or prediction is None or valid is None:
        return None
    truth, predicted = target.astype(np.float64), prediction.astype(np.float64)
    keep = valid.astype(bool) & np.isfinite(truth) & (truth > 0) & np.isfinite(predicted)
    return truth, predicted, keep


def _upper(values: np.ndarray, floor: float, quantile: float = 98.0) -> float:
    """A colour-bar top shared by every row: a high percentile, so a few outliers do not wash it out."""
    return max(floor, float(np.percentile(values, quantile))) if values.size else floor


def depth_maps_figure(snapshot: Snapshot, task: str) -> Figure | None:
    """Per kept sample: input, true and predicted depth (same scale, metres), absolute error (metres)."""
    arrays = _depth_arrays(snapshot, task)
    images = snapshot.arrays.get("image")
    if arrays is None:
        return None
    truth, predicted, keep = arrays
    error = np.abs(predicted - truth)
    error_top = _upper(error[keep], 1e-3)
    rows = truth.shape[0]
    table = _image_table(
        rows, ("input", "true depth", "predicted depth", "absolute error"), truth.shape[1] / truth.shape[2],
        f"{task}: depth and its error on {rows} validation samples, step {snapshot.step}",
        [_sample_label(snapshot, r) for r in range(rows)], colorbars={2: "row", 3: "all"},
    )
    depth_map, error_map = _with_bad("turbo"), _with_bad("magma")
    wrong = None
    for r in range(rows):
        ax_image, ax_truth, ax_predicted, ax_error = table.panels[r]
        if images is not None:
            ax_image.imshow(images[r], interpolation="nearest")
        valid_depth = truth[r][keep[r]]
        low, high = (np.percentile(valid_depth, [2.0, 98.0]) if valid_depth.size else (0.0, 1.0))
        ax_truth.imshow(np.ma.masked_where(~keep[r], truth[r]), cmap=depth_map, vmin=low, vmax=high,
                        interpolation="nearest")
        shown = ax_predicted.imshow(np.ma.masked_where(~keep[r], predicted[r]), cmap=depth_map, vmin=low,
                                    vmax=high, interpolation="nearest")
        table.figure.colorbar(shown, cax=table.colorbars[(2, r)], label="depth (m)", extend="both")
        wrong = ax_error.imshow(np.ma.masked_where(~keep[r], error[r]), cmap=error_map, vmin=0.0, vmax=error_top,
                                interpolation="nearest")
    if wrong is not None:
        table.figure.colorbar(wrong, cax=table.colorbars[(3, -1)], extend="max",
                              label="absolute error (m), one scale for all rows")
    return table.figure


def depth_error_figure(snapshot: Snapshot, task: str, bins: int = 12) -> Figure | None:
    """Mean absolute error (m) and absolute relative error per bin of true depth, with the pixel counts."""
    arrays = _depth_arrays(snapshot, task)
    if arrays is None:
        return None
    truth, predicted, keep = arrays
    t, p = truth[keep], predicted[keep]
    if t.size == 0:
        return None
    edges = np.linspace(float(t.min()), float(t.max()) + 1e-9, bins + 1)
    which = np.clip(np.digitize(t, edges) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    absolute = np.bincount(which, weights=np.abs(p - t), minlength=bins)
    squared = np.bincount(which, weights=(p - t) ** 2, minlength=bins)
    relative = np.bincount(which, weights=np.abs(p - t) / t, minlength=bins)
    used = counts > 0
    centres = 0.5 * (edges[:-1] + edges[1:])
    figure = _figure(8.0, 5.6)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot(centres[used], absolute[used] / counts[used], marker="o", label="mean |error| (m)", color="tab:red")
    top.plot(centres[used], np.sqrt(squared[used] / counts[used]), marker="s", label="RMSE (m)", color="tab:orange")
    top.set_ylabel("error (m)")
    twin = top.twinx()
    twin.plot(centres[used], relative[used] / counts[used], marker="^", linestyle="--", color="tab:blue",
              label="AbsRel")
    twin.set_ylabel("absolute relative error |error| / depth")
    handles = top.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    figure.legend(handles=handles, loc="outside lower center", ncols=3)  # below the plots, never on the curves
    top.grid(alpha=0.3)
    top.set_title(f"{task}: error against true depth, {int(keep.sum())} valid pixels of "
                  f"{truth.shape[0]} samples, step {snapshot.step}")
    bottom.bar(centres, counts, width=np.diff(edges) * 0.9, color="0.6")
    _finish_axes(bottom, "true depth (m)", "pixels", "")
    return figure


# --------------------------------------------------------------------------------------
# Normals
# --------------------------------------------------------------------------------------


def _angles(snapshot: Snapshot, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``(truth, prediction, angle in degrees [N, H, W], keep)`` of a normals task."""
    target, prediction, valid = (snapshot.get(task, k) for k in ("target", "prediction", "valid"))
    if target is None or prediction is None or valid is None:
        return None
    t, p = target.astype(np.float64), prediction.astype(np.float64)
    t_length, p_length = np.linalg.norm(t, axis=1), np.linalg.norm(p, axis=1)
    keep = valid.astype(bool) & np.isfinite(t_length) & (t_length > 1e-6) & np.isfinite(p_length)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (t * p).sum(1) / (t_length * np.where(p_length > 1e-6, p_length, np.inf))
    angle = np.degrees(np.arccos(np.clip(np.nan_to_num(cosine, nan=0.0), -1.0, 1.0)))
    return t, p, angle, keep


def normals_maps_figure(snapshot: Snapshot, task: str) -> Figure | None:
    """Per kept sample: input, true and predicted normals as ``(n + 1) / 2``, angular error (degrees)."""
    found = _angles(snapshot, task)
    images = snapshot.arrays.get("image")
    if found is None:
        return None
    truth, predicted, angle, keep = found
    top = min(180.0, math.ceil(_upper(angle[keep], 10.0) / 5.0) * 5.0)
    rows = truth.shape[0]
    table = _image_table(
        rows, ("input", "true normals", "predicted normals", "angular error"), truth.shape[2] / truth.shape[3],
        f"{task}: normals and their angular error on {rows} validation samples, step {snapshot.step}",
        [_sample_label(snapshot, r) for r in range(rows)], colorbars={3: "all"},
    )
    wrong = None
    for r in range(rows):
        ax_image, ax_truth, ax_predicted, ax_error = table.panels[r]
        if images is not None:
            ax_image.imshow(images[r], interpolation="nearest")
        ax_truth.imshow(_grey_where(vector_picture(truth[r]), ~keep[r]), interpolation="nearest")
        ax_predicted.imshow(_grey_where(vector_picture(predicted[r]), ~keep[r]), interpolation="nearest")
        wrong = ax_error.imshow(np.ma.masked_where(~keep[r], angle[r]), cmap=_with_bad("magma"), vmin=0.0,
                                vmax=top, interpolation="nearest")
    if wrong is not None:
        table.figure.colorbar(wrong, cax=table.colorbars[(3, -1)], extend="max",
                              label="angular error (degrees), one scale for all rows")
    return table.figure


def _grey_where(picture: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """``picture`` with the ``missing`` pixels in the report's no-value grey."""
    shown = picture.copy()
    shown[missing] = round(255 * float(NO_VALUE_GREY))
    return shown


def angle_histogram_figure(snapshot: Snapshot, task: str) -> Figure | None:
    """Histogram of the angular errors (degrees) of the kept samples, with mean, median and thresholds."""
    found = _angles(snapshot, task)
    if found is None:
        return None
    angles = found[2][found[3]]
    if angles.size == 0:
        return None
    right = min(180.0, max(45.0, math.ceil(float(np.percentile(angles, 99.5)) / 5.0) * 5.0))
    figure = _figure(8.0, 4.0)
    ax = figure.add_subplot()
    ax.hist(angles, bins=np.arange(0.0, right + 1.0, 1.0).tolist(), weights=np.full(angles.size, 100.0 / angles.size),
            color="tab:blue", alpha=0.8)
    mean, median = float(angles.mean()), float(np.median(angles))
    ax.axvline(mean, color="tab:red", linewidth=1.5, label=f"mean {mean:.1f}°")
    ax.axvline(median, color="black", linestyle="--", linewidth=1.5, label=f"median {median:.1f}°")
    for threshold, style in zip(ANGLE_THRESHOLDS, (":", "-.", (0, (5, 1))), strict=True):
        share = 100.0 * float((angles < threshold).mean())
        ax.axvline(threshold, color="0.35", linestyle=style, linewidth=1.0,
                   label=f"below {threshold:g}°: {share:.0f}% of pixels")
    ax.set_xlim(0.0, right)
    ax.legend(loc="upper right")
    _finish_axes(ax, "angular error (degrees)", "pixels (%)",
                 f"{task}: angular error, {angles.size} valid pixels of {found[0].shape[0]} samples, "
                 f"step {snapshot.step}")
    return figure


# --------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------


def _sample_label(snapshot: Snapshot, row: int) -> str:
    indices = snapshot.meta.get("indices") or []
    return f"sample {indices[row]}" if row < len(indices) else f"sample #{row + 1}"


def samples_figure(snapshot: Snapshot) -> Figure | None:
    """Input, then each task's target and prediction as the task draws them, for every kept sample."""
    images = snapshot.arrays.get("image")
    if images is None:
        return None
    tasks = [name for name in snapshot.tasks if snapshot.get(name, "picture_target") is not None]
    rows = images.shape[0]
    titles = ["input"] + [f"{name}: {which}" for name in tasks for which in ("truth", "prediction")]
    legends = {name: _class_colours(snapshot, name) for name in tasks}
    handles = [Patch(color=(colour[0] / 255.0, colour[1] / 255.0, colour[2] / 255.0), label=label)
               for name in tasks for label, colour in legends[name]]
    table = _image_table(rows, titles, images.shape[1] / images.shape[2],
                         f"Validation samples at step {snapshot.step}: truth and prediction per task",
                         [_sample_label(snapshot, r) for r in range(rows)], panel=1.9,
                         bottom=0.85 if handles else 0.15)
    for r in range(rows):
        pictures = [images[r]]
        for name in tasks:
            pictures += [snapshot.arrays[f"{name}/picture_target"][r], snapshot.arrays[f"{name}/picture_prediction"][r]]
        for ax, picture in zip(table.panels[r], pictures, strict=True):
            ax.imshow(picture, interpolation="nearest")
    if handles:
        table.figure.legend(handles=handles, loc="lower center", ncols=min(len(handles), 8), fontsize=8,
                            title="class colours (classes present in these samples)", title_fontsize=8,
                            frameon=False)
    return table.figure


def _class_colours(snapshot: Snapshot, task: str) -> list[tuple[str, tuple[int, int, int]]]:
    """``(class name, colour)`` of each class in the kept targets, read off the task's own picture."""
    meta = snapshot.tasks.get(task, {})
    target, picture, valid = snapshot.get(task, "target"), snapshot.get(task, "picture_target"), snapshot.get(
        task, "valid")
    if meta.get("role") != "segmentation" or target is None or picture is None or valid is None:
        return []
    if picture.shape[:3] != target.shape:
        return []
    names = meta.get("class_names") or []
    labelled = valid.astype(bool)
    found: list[tuple[str, tuple[int, int, int]]] = []
    for c in np.unique(target[labelled]):
        if not 0 <= c < len(names):
            continue
        n, y, x = np.argwhere((target == c) & labelled)[0]
        red, green, blue = (int(v) for v in picture[n, y, x])
        found.append((str(names[c]), (red, green, blue)))
    return found
