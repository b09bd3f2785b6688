""":func:`build_report`: a run folder -> ``report.html`` and ``report/*.png``."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from pixcore._errors import PixcoreError
from pixcore.report import _plots as plots
from pixcore.report._html import (
    Markup,
    Picture,
    Section,
    details,
    paragraph,
    preformatted,
    render,
    side_by_side,
    table,
)
from pixcore.report._run import RunData, load_run

__all__ = ["PICTURES_DIR", "build_report"]

#: The folder of the PNGs, inside the run folder.
PICTURES_DIR = "report"


class _Pictures:
    """Saves figures as numbered PNGs into one folder and frees them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):  # a section that is gone must not leave its picture
            old.unlink()
        self.count = 0

    def add(self, name: str, figure: Figure | None, caption: str) -> Picture | None:
        if figure is None:
            return None
        self.count += 1
        path = plots.save_figure(figure, self.folder / f"{self.count:02d}_{name}.png")
        return Picture(path, caption)


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the run in ``run_dir``: one HTML file that opens offline.

    ``out`` defaults to ``<run_dir>/report.html``; the PNGs it embeds are also written to
    ``<run_dir>/report/``. A folder that is not a run (no ``log.jsonl``, or no logged step
    yet) is a :class:`~pixcore.PixcoreError`; a run without evaluations gets its curves.
    """
    run = load_run(run_dir)
    target = Path(out) if out is not None else run.folder / "report.html"
    if target.is_dir():
        raise PixcoreError(f"--out {target} is a folder; give the path of the HTML file to write, "
                           f"e.g. {target / 'report.html'}")
    pictures = _Pictures(run.folder / PICTURES_DIR)
    roles = _roles(run)
    sections = [_summary(run), _training(run, pictures), _metrics(run, roles, pictures)]
    for name, role in roles.items():
        builder = _TASK_SECTIONS.get(role)
        if builder is not None and run.snapshot is not None:
            sections.append(builder(run, name, pictures))
    sections += [_samples(run, pictures), _about(run)]
    page = render(f"pixcore run report: {run.folder.name}", _subtitle(run), [s for s in sections if s.items])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def _roles(run: RunData) -> dict[str, str]:
    """Every task of the run with its role (segmentation, depth, normals, other)."""
    roles: dict[str, str] = {}
    if run.snapshot is not None:
        roles.update({name: str(meta.get("role", "other")) for name, meta in run.snapshot.tasks.items()})
    for _, metrics in run.evaluations:
        roles.update({name: "other" for name in metrics if name not in roles})
    for row in run.train_rows:
        roles.update({k[: -len("/loss")]: "other" for k in row if k.endswith("/loss") and k[:-5] not in roles})
    return roles


def _subtitle(run: RunData) -> str:
    planned = ((run.config or {}).get("trainer") or {}).get("steps")
    steps = f"step {run.last_step}" + (f" of {planned}" if planned else "")
    evaluated = f", last evaluation at step {run.evaluations[-1][0]}" if run.evaluations else ", no evaluation yet"
    return f"{run.folder.resolve()}: {steps}{evaluated}"


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


def _summary(run: RunData) -> Section:
    section = Section("summary", "Summary")
    if not run.evaluations:
        section.items.append(paragraph("No evaluation yet: the metrics appear after the first one "
                                       "(trainer.eval_every, and at the last step).", note=True))
        return section
    step, metrics = run.evaluations[-1]
    tables = []
    for task, values in metrics.items():
        rows = [(key, float(value)) for key, value in values.items()
                if "/" not in key and isinstance(value, int | float) and not isinstance(value, bool)]
        if rows:
            tables.append(table(None, rows, caption=task))
    section.items.append(paragraph(f"Validation metrics of the last evaluation, step {step}:"))
    section.items.append(side_by_side(tables))
    return section


def _training(run: RunData, pictures: _Pictures) -> Section:
    section = Section("training", "Training curves")
    tasks = [k[: -len("/loss")] for k in run.train_rows[-1] if k.endswith("/loss")]
    loss = pictures.add("loss", plots.loss_figure(run.train_rows, tasks),
                       "Loss of the training batches at each logged step: the total that the optimiser minimises "
                       "(the task losses combined by model.weighting) and each task's own loss.")
    weights = pictures.add("weights", plots.weights_figure(run.train_rows),
                          "The weight of each task's loss in the total, as the weighting set it at each logged step.")
    lr = pictures.add("lr", plots.lr_figure(run.train_rows),
                      "Learning rate of the first parameter group (warm-up, then the schedule).")
    section.items += [p for p in (loss, weights, lr) if p is not None]
    if weights is None:
        weighting = ((run.config or {}).get("model") or {}).get("weighting") or "sum"
        name = weighting.get("name", "sum") if isinstance(weighting, dict) else weighting
        section.items.insert(1, paragraph(f"The loss weights are constant (model.weighting: {name!s}), so there are "
                                          "no weight curves."))
    return section


def _metrics(run: RunData, roles: dict[str, str], pictures: _Pictures) -> Section:
    section = Section("metrics", "Validation metrics over the steps")
    for task, role in roles.items():
        picture = pictures.add(f"metrics_{_slug(task)}", plots.metrics_figure(run.evaluations, task, role),
                               f"{task}: each metric of every evaluation on the validation set.")
        if picture is not None:
            section.items.append(picture)
    if not section.items:
        if len(run.evaluations) == 1:
            section.items.append(paragraph(
                f"One evaluation (step {run.evaluations[0][0]}): its metrics are in the summary. Set "
                "trainer.eval_every to follow them over the steps.", note=True))
        else:
            section.items.append(paragraph("No evaluation yet.", note=True))
    return section


def _segmentation(run: RunData, task: str, pictures: _Pictures) -> Section:
    section = Section(f"task-{_slug(task)}", _task_title(task, "segmentation"))
    snapshot = run.snapshot
    assert snapshot is not None
    confusion = snapshot.get(task, "confusion")
    if confusion is None:
        section.items.append(paragraph(f"The snapshot of step {snapshot.step} has no confusion matrix.", note=True))
        return section
    names = list(snapshot.tasks[task].get("class_names") or range(confusion.shape[0]))
    items = [
        pictures.add(f"iou_{_slug(task)}", plots.iou_figure(confusion, names, task, snapshot.step),
                     "IoU of each class, from the confusion matrix of the whole validation set (pixels pooled over "
                     "all images); the mean is over the classes that are labelled or predicted."),
        pictures.add(f"confusion_{_slug(task)}", plots.confusion_figure(confusion, names, task, snapshot.step),
                     "Confusion matrix of the whole validation set: row = true class, column = predicted class; "
                     "each row is divided by the pixels of its true class, so the diagonal is the class's recall."),
    ]
    section.items += [p for p in items if p is not None]
    counts = confusion.sum(1)
    section.items.append(table(("class", "labelled pixels", "IoU"), [
        (str(n), int(c), _number(v)) for n, c, v in zip(names, counts, plots.iou_from_confusion(confusion),
                                                            strict=True)]))
    return section


def _depth(run: RunData, task: str, pictures: _Pictures) -> Section:
    section = Section(f"task-{_slug(task)}", _task_title(task, "depth"))
    snapshot = run.snapshot
    assert snapshot is not None
    items = [
        pictures.add(f"depth_maps_{_slug(task)}", plots.depth_maps_figure(snapshot, task),
                     "True and predicted depth in metres on each sample's own colour scale (2nd to 98th percentile "
                     "of its true depth), and the absolute error in metres on one scale for all samples. Grey: no "
                     "valid depth."),
        pictures.add(f"depth_error_{_slug(task)}", plots.depth_error_figure(snapshot, task),
                     "Error against true depth, over the valid pixels of the samples above (12 bins of equal "
                     "width): mean absolute error and RMSE in metres, absolute relative error, and the pixels "
                     "per bin."),
    ]
    section.items += [p for p in items if p is not None]
    return section


def _normals(run: RunData, task: str, pictures: _Pictures) -> Section:
    section = Section(f"task-{_slug(task)}", _task_title(task, "surface normals"))
    snapshot = run.snapshot
    assert snapshot is not None
    items = [
        pictures.add(f"normals_maps_{_slug(task)}", plots.normals_maps_figure(snapshot, task),
                     "True and predicted normals drawn as (n + 1) / 2 (x red, y green, z blue), and the angle "
                     "between them in degrees. Grey: no valid normal."),
        pictures.add(f"normals_hist_{_slug(task)}", plots.angle_histogram_figure(snapshot, task),
                     "Angular errors of the valid pixels of the samples above, in 1-degree bins, with the "
                     "share of pixels under 11.25, 22.5 and 30 degrees."),
    ]
    section.items += [p for p in items if p is not None]
    return section


_TASK_SECTIONS: dict[str, Callable[[RunData, str, _Pictures], Section]] = {
    "segmentation": _segmentation, "depth": _depth, "normals": _normals,
}


def _samples(run: RunData, pictures: _Pictures) -> Section:
    section = Section("samples", "Samples")
    if run.snapshot is not None:
        picture = pictures.add("samples", plots.samples_figure(run.snapshot),
                               "The first validation samples, the same at every evaluation: each task's target and "
                               "prediction as the task draws them.")
        if picture is not None:
            section.items.append(picture)
            return section
    if run.samples_picture is not None:
        section.items.append(Picture(run.samples_picture, "samples.png written by pixcore demo."))
    return section


def _about(run: RunData) -> Section:
    section = Section("run", "Run: config, versions, device, timing")
    section.items += [Markup("<h3>Timing</h3>"), _timing(run)]
    start = run.segments[-1][0] if run.segments else None
    if start is not None:
        device = start.get("device") or {}
        rows: list[tuple[str, object]] = [(str(k), str(v)) for k, v in device.items()]
        rows += [("processes", str(start.get("world_size", 1))), ("precision", str(start.get("precision", "")))]
        versions = start.get("versions") or {}
        section.items.append(side_by_side([table(None, rows, caption="Device"),
                                           table(None, sorted(versions.items()), caption="Versions")]))
    if run.config is not None:
        text = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)
        section.items += [Markup("<h3>Config</h3>"), details("the resolved run config (YAML)", preformatted(text))]
    for note in run.notes:
        section.items.append(paragraph(note, note=True))
    return section


def _timing(run: RunData) -> Markup:
    if not run.segments:
        seconds = run.train_rows[-1].get("seconds")
        if not isinstance(seconds, int | float) or seconds <= 0:
            return paragraph("No timing recorded.", note=True)
        return table(("steps", "seconds", "steps per second"),
                     [(run.last_step, float(seconds), run.last_step / float(seconds))])
    rows = []
    for start, end in run.segments:
        if end is None:
            rows.append((start.get("time", ""), start.get("step", 0), "no end recorded (running, or the process "
                         "died)", "", "", ""))
            continue
        rows.append((start.get("time", ""), start.get("step", 0), end.get("step", 0),
                     _number(end.get("segment_seconds")), _number(end.get("steps_per_second")),
                     str(end.get("stop_reason") or "finished")))
    header = ("started (UTC)", "from step", "to step", "wall time (s)", "steps per second", "ended")
    text = table(header, rows)
    total = run.segments[-1][1]
    if total is not None and isinstance(total.get("seconds"), int | float):
        text = Markup(text + str(paragraph(
            f"Training time in all: {float(total['seconds']):.1f} s for {total.get('step')} steps "
            "(wall clock, evaluations and checkpoints included).")))
    return text


def _number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(float(value)) else "n/a"
    return "n/a"


def _task_title(task: str, what: str) -> str:
    return task if what.endswith(task) else f"{task} ({what})"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "task"

