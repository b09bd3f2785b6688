"""Run reports: ``pixcore report RUN_DIR`` writes one self-contained HTML page of a run.

The page shows the training curves, the validation metrics over the steps, per-class IoU
and the confusion matrix, depth and normals error maps and histograms, sample grids, and
the config, versions, device and timing of the run; see ``docs/training.md`` ("Run
report"). It reads what the trainer writes into the run folder (``log.jsonl``,
``run.jsonl``, ``eval/step_*.npz``; see :mod:`pixcore.train._record`).

* ``_run``: reading a run folder;
* ``_plots``: the figures (matplotlib, Agg canvas);
* ``_html``: the page (inline CSS, embedded PNGs, no script);
* ``_build``: :func:`build_report`.
"""

from pixcore.report._build import build_report as build_report

__all__ = ["build_report"]
