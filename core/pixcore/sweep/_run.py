"""Running a sweep: each member a ``pixcore train`` subprocess in its own folder.

A member is an ordinary run: ``python -m pixcore train CONFIG --out DIR/<member> --set
... --set trainer.seed=S``, so that members are isolated (a crash, an out-of-memory kill
or a leaked thread in one does not touch the others) and anything a run guarantees holds
for each (checkpoints, exact resumption, exit statuses). Its console output goes to
``DIR/<member>/output.log``. When the sweep starts, each member is

* **finished** (its ``metrics.json`` is complete): skipped;
* **interrupted** (a checkpoint, no metrics): continued with ``--resume``;
* **new** (no checkpoint): started; ``--overwrite`` clears the logs a run killed before
  its first checkpoint may have left.

SIGINT or SIGTERM to the sweep starts no further member and passes SIGTERM on to the
running ones, which finish their step, write their checkpoint and exit 75; the sweep then
exits 75 too, and the same command resumes it. ``--jobs J`` runs J members at once.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal

from pixcore._errors import ConfigError
from pixcore.sweep._compare import Comparison, compare, finished_metrics
from pixcore.sweep._plan import Member, SweepPlan, plan_sweep

if TYPE_CHECKING:
    from pixcore.plugin._manager import PluginManager

__all__ = ["EXIT_FAILED", "OUTPUT_LOG", "SweepResult", "member_state", "run_members", "run_sweep"]

#: Exit status of ``pixcore sweep`` when a member failed (the others ran to their end).
EXIT_FAILED = 1
#: Each member's console output, inside its folder (appended to by every attempt).
OUTPUT_LOG = "output.log"
_EXIT_INTERRUPTED = 75  # pixcore.train.EXIT_INTERRUPTED, without importing torch here
_POLL_SECONDS = 0.1

State = Literal["finished", "resume", "start"]


def member_state(folder: Path) -> State:
    """``finished`` (complete metrics.json), ``resume`` (a checkpoint) or ``start``."""
    if finished_metrics(folder) is not None:
        return "finished"
    if (folder / "checkpoint.safetensors").exists():
        return "resume"
    return "start"


@dataclass
class SweepResult:
    """What a sweep run did; :attr:`exit_status` is ``pixcore sweep``'s."""

    plan: SweepPlan
    finished: list[Member] = field(default_factory=list)
    failed: dict[Member, int] = field(default_factory=dict)  # member -> exit status
    interrupted: list[Member] = field(default_factory=list)
    not_started: list[Member] = field(default_factory=list)
    stopped_by: str | None = None
    comparison: Comparison | None = None

    @property
    def exit_status(self) -> int:
        """75 if stopped (re-run to resume), 1 if a member failed, else 0."""
        if self.stopped_by is not None or self.interrupted:
            return _EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed else 0

    def log(self, member: Member) -> Path:
        """The console output of ``member``."""
        return self.plan.folder(member) / OUTPUT_LOG


class _StopRequest:
    """SIGINT/SIGTERM while members run: remembered, acted on by the loop (main thread only)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            os.write(2, f"\npixcore sweep: {self.received} received: the running members finish their step and "
                        "write their checkpoint; no new member starts\n".encode())


@dataclass
class _Running:
    member: Member
    process: subprocess.Popen[bytes]
    output: IO[bytes]
    started: float


class _Scheduler:
    """Runs members as subprocesses, ``jobs`` at a time, and sorts out how each ended."""

    def __init__(self, plan: SweepPlan, jobs: int, result: SweepResult) -> None:
        self.plan, self.jobs, self.result = plan, jobs, result
        self.started = 0

    def command(self, member: Member, state: State) -> list[str]:
        flag = "--resume" if state == "resume" else "--overwrite"
        return [*self.plan.train_command(member, executable=(sys.executable, "-m", "pixcore")), flag]

    def start(self, member: Member, total: int) -> _Running:
        folder = self.plan.folder(member)
        folder.mkdir(parents=True, exist_ok=True)
        state = member_state(folder)
        command = self.command(member, state)
        output = (folder / OUTPUT_LOG).open("ab")
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        output.write(f"# pixcore sweep, {stamp}: {shlex.join(command)}\n".encode())
        output.flush()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.started += 1
        how = "resuming from its checkpoint" if state == "resume" else "started"
        print(f"[{self.started}/{total}] {member.name}: {how} (output: {folder / OUTPUT_LOG})", flush=True)
        return _Running(member, process, output, time.monotonic())

    def finish(self, running: _Running, status: int, stopping: bool) -> None:
        running.output.close()
        member, seconds = running.member, time.monotonic() - running.started
        log = self.plan.folder(member) / OUTPUT_LOG
        if status == 0 and member_state(self.plan.folder(member)) == "finished":
            self.result.finished.append(member)
            print(f"    {member.name}: finished in {seconds:.0f} s", flush=True)
        elif status == _EXIT_INTERRUPTED or (stopping and status != 0):
            self.result.interrupted.append(member)
            print(f"    {member.name}: stopped after {seconds:.0f} s (exit status {status}); it resumes when "
                  "the sweep runs again", flush=True)
        else:
            self.result.failed[member] = status
            print(f"    {member.name}: FAILED (exit status {status}) after {seconds:.0f} s; see {log}", flush=True)

    def run(self, members: Sequence[Member]) -> None:
        queue: deque[Member] = deque(members)
        running: list[_Running] = []
        total = len(members)
        with _StopRequest() as stop:
            forwarded = False
            while running or (queue and stop.received is None):
                while queue and len(running) < self.jobs and stop.received is None:
                    running.append(self.start(queue.popleft(), total))
                if stop.received is not None and not forwarded:
                    for item in running:
                        _signal(item.process, signal.SIGTERM)
                    forwarded = True
                for item in list(running):
                    status = item.process.poll()
                    if status is not None:
                        running.remove(item)
                        self.finish(item, status, stop.received is not None)
                time.sleep(_POLL_SECONDS)
            self.result.stopped_by = stop.received
        self.result.not_started = list(queue)


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:  # it has just ended
        pass


def _report(result: SweepResult) -> None:
    """The end of a sweep run: what finished, failed, was stopped; what to do next."""
    plan = result.plan
    if result.failed:
        print(f"pixcore sweep: {len(result.failed)} member(s) failed:", file=sys.stderr)
        for member, status in result.failed.items():
            print(f"    {member.name} (exit status {status}): {result.log(member)}", file=sys.stderr)
    if result.exit_status == _EXIT_INTERRUPTED:
        cause = f"stopped by {result.stopped_by}" if result.stopped_by else "members were stopped"
        print(f"pixcore sweep: {cause}: {len(result.interrupted)} member(s) interrupted after their checkpoint, "
              f"{len(result.not_started)} not started. Run the same command again to resume "
              f"(`{plan.command_line()}`).", file=sys.stderr, flush=True)
    elif result.failed:
        print("pixcore sweep: fix what the logs say and run the same command again: finished members are skipped, "
              f"the others resumed or started. `pixcore sweep --compare {plan.out}` compares what has finished.",
              file=sys.stderr, flush=True)


def run_members(plan: SweepPlan, members: Sequence[Member], jobs: int = 1) -> SweepResult:
    """Run the unfinished ``members`` of ``plan`` (finished ones are counted, not re-run)."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: run at least 1 member at a time")
    result = SweepResult(plan)
    todo = []
    for member in members:
        if member_state(plan.folder(member)) == "finished":
            result.finished.append(member)
        else:
            todo.append(member)
    resumable = sum(member_state(plan.folder(m)) == "resume" for m in todo)
    print(f"pixcore sweep: {len(members)} member(s) in {plan.out}: {len(result.finished)} finished before, "
          f"{resumable} to resume, {len(todo) - resumable} to start; {jobs} at a time", flush=True)
    if todo:
        _Scheduler(plan, jobs, result).run(todo)
    _report(result)
    return result


def run_sweep(
    config: str | Path,
    settings: Sequence[str] | Mapping[str, Sequence[Any]] = (),
    *,
    seeds: int | Sequence[int] = 1,
    out: str | Path,
    jobs: int = 1,
    member: int | None = None,
    baseline: Mapping[str, str] | None = None,
    metrics: Sequence[str] | None = None,
    plots: bool = True,
    manager: PluginManager | None = None,
) -> SweepResult:
    """Plan (see :func:`plan_sweep`), run every unfinished member, and compare when all have finished.

    ``member``: run only the member with that index (one job of a job array); the
    comparison is then left to ``pixcore sweep --compare``. Returns a :class:`SweepResult`
    whose ``exit_status`` is 0, 75 (stopped: run again to resume) or 1 (a member failed).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: run at least 1 member at a time")
    plan = plan_sweep(config, settings, seeds=seeds, out=out, baseline=baseline, metrics=metrics, manager=manager)
    selected = list(plan.members) if member is None else [plan.member(member)]
    result = run_members(plan, selected, jobs)
    if member is None and len(result.finished) == len(plan.members):
        result.comparison = compare(plan.out, plots=plots, manager=manager)
    return result
