"""``pixcore sweep``: the command line of :mod:`pixcore.sweep` (parsed in ``pixcore._cli``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pixcore._errors import ConfigError

if TYPE_CHECKING:
    from pixcore.sweep._compare import Comparison

__all__ = ["add_arguments", "sweep_command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pixcore sweep``."""
    parser.add_argument("config", type=Path, nargs="?", help="run config (YAML/JSON) every member starts from")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=A,B,...",
                        help="a swept config key and its values; every combination of the --set options is a "
                             "setting. Commas inside [...], {...} or quotes belong to the value: "
                             "--set model.mean=[0.5,0.5,0.5],[0.4,0.4,0.4]")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="run each setting with seeds 0 to N-1 (trainer.seed); default 1")
    parser.add_argument("--jobs", type=int, default=1, metavar="J", help="members run at once (default 1)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="sweep folder (default: sweeps/<config name>)")
    parser.add_argument("--baseline", metavar="KEY=VALUE[,KEY2=VALUE2]",
                        help="the setting delta-m compares against (default: the first setting)")
    parser.add_argument("--metric", nargs="+", metavar="TASK/KEY",
                        help="metrics for delta-m, the table and the plots (default: every metric with a "
                             "direction); comparison.csv always holds all")
    parser.add_argument("--no-plots", action="store_true", help="write no plots/*.png")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true",
                      help="write DIR/sweep.json and print one `pixcore train` command per member (also in "
                           "DIR/commands.txt); train nothing")
    mode.add_argument("--member", type=int, metavar="I",
                      help="run member I only (one job of a job array, e.g. $SLURM_ARRAY_TASK_ID); finished: "
                           "skipped, interrupted: resumed")
    mode.add_argument("--compare", type=Path, metavar="DIR",
                      help="compare the finished members of the sweep in DIR (no CONFIG, no --set)")


def _assignments(text: str | None) -> dict[str, str] | None:
    from pixcore.sweep._grid import parse_assignments

    return None if text is None else parse_assignments(text, f"--baseline {text!r}")


def _compare(args: argparse.Namespace) -> int:
    from pixcore.sweep._compare import compare, format_markdown

    if args.config is not None or args.set:
        raise ConfigError("--compare DIR compares the sweep already in DIR: leave out CONFIG and --set")
    comparison = compare(args.compare, baseline=_assignments(args.baseline), metrics=args.metric,
                         plots=not args.no_plots)
    print(format_markdown(comparison))
    print(_written(comparison))
    return 0


def _written(comparison: Comparison) -> str:
    plots = len(comparison.files) - 3
    where = f" and {plots} plots in {comparison.out / 'plots'}" if plots else ""
    return f"wrote {', '.join(str(path) for path in comparison.files[:3])}{where}"


def _plan(args: argparse.Namespace, out: Path) -> int:
    import shlex

    from pixcore.sweep._plan import plan_sweep

    plan = plan_sweep(args.config, args.set, seeds=args.seeds, out=out, baseline=_assignments(args.baseline),
                      metrics=args.metric)
    lines = [shlex.join(plan.train_command(member)) for member in plan.members]
    (plan.out / "commands.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"pixcore sweep: {len(lines)} members planned in {plan.out / 'sweep.json'}; their `pixcore train` "
          f"commands, one per line in member order (--member 0 to {len(lines) - 1}), are below and in "
          f"{plan.out / 'commands.txt'}", file=sys.stderr)
    print("\n".join(lines))
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    """Run ``pixcore sweep``; its exit status (0, 1: a member failed, 2: a mistake, 75: stopped)."""
    if args.compare is not None:
        return _compare(args)
    if args.config is None:
        raise ConfigError("pixcore sweep needs a run config: pixcore sweep CONFIG --set KEY=A,B --seeds N "
                          "(or --compare DIR to compare a sweep)")
    out = args.out if args.out is not None else Path("sweeps") / args.config.stem
    if args.plan:
        return _plan(args, out)
    from pixcore.sweep._compare import format_markdown
    from pixcore.sweep._run import run_sweep

    result = run_sweep(args.config, args.set, seeds=args.seeds, out=out, jobs=args.jobs, member=args.member,
                       baseline=_assignments(args.baseline), metrics=args.metric, plots=not args.no_plots)
    if result.comparison is not None:
        print()
        print(format_markdown(result.comparison))
        print(_written(result.comparison))
    elif args.member is not None and result.exit_status == 0:
        print(f"pixcore sweep: member {args.member} has finished; `pixcore sweep --compare {out}` compares the "
              "members once all have")
    return result.exit_status
