"""Sweeps: one ``pixcore train`` run per setting and seed, resumable, and their comparison.

* :func:`plan_sweep` validates a grid (``--set key=a,b,c`` for every swept key, and seeds)
  and writes its plan, ``DIR/sweep.json``;
* :func:`run_sweep` runs each unfinished member as a ``pixcore train`` subprocess in
  ``DIR/<member>`` (finished ones are skipped, interrupted ones resumed), ``jobs`` at a
  time, then compares them;
* :func:`compare` writes ``comparison.csv``, ``comparison.json``, ``comparison.md`` and
  ``plots/*.png``: mean ± sample std over seeds, min, max, and delta-m against a baseline
  setting.

Behind ``pixcore sweep``; see docs/experiments.md.
"""

from pixcore.sweep._compare import STD_NOTE as STD_NOTE
from pixcore.sweep._compare import Comparison as Comparison
from pixcore.sweep._compare import MetricStats as MetricStats
from pixcore.sweep._compare import SettingSummary as SettingSummary
from pixcore.sweep._compare import compare as compare
from pixcore.sweep._compare import format_markdown as format_markdown
from pixcore.sweep._grid import SEED_KEY as SEED_KEY
from pixcore.sweep._grid import Axis as Axis
from pixcore.sweep._plan import PLAN_FILE as PLAN_FILE
from pixcore.sweep._plan import Member as Member
from pixcore.sweep._plan import SweepPlan as SweepPlan
from pixcore.sweep._plan import load_plan as load_plan
from pixcore.sweep._plan import plan_sweep as plan_sweep
from pixcore.sweep._run import OUTPUT_LOG as OUTPUT_LOG
from pixcore.sweep._run import SweepResult as SweepResult
from pixcore.sweep._run import member_state as member_state
from pixcore.sweep._run import run_sweep as run_sweep

__all__ = [
    "OUTPUT_LOG",
    "PLAN_FILE",
    "SEED_KEY",
    "STD_NOTE",
    "Axis",
    "Comparison",
    "Member",
    "MetricStats",
    "SettingSummary",
    "SweepPlan",
    "SweepResult",
    "compare",
    "format_markdown",
    "load_plan",
    "member_state",
    "plan_sweep",
    "run_sweep",
]
