"""``pixcore launch``: torchrun, with the exit status a requeue script can act on.

torchrun ends with status 1 and a ``SignalException`` traceback when it is told to stop
(SIGTERM from Kubernetes, Slurm or a container runtime), even when every worker wrote
its checkpoint and ended with :data:`~pixcore.train.EXIT_INTERRUPTED` (75); and with a
``ChildFailedError`` when the workers alone were signalled and ended with 75. A
requeue script that waits for 75 never sees it.

``pixcore launch ARGS`` takes torchrun's own arguments and runs torchrun's own code
(``torch.distributed.run``) unchanged. Each ``pixcore train`` worker leaves its exit
status in a folder the launcher made for this launch (``PIXCORE_LAUNCH_STATUS_DIR``);
when torchrun stops on a signal, or because workers failed, the launcher ends with 75
if every one of its workers ended with 75, and says what happened otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pixcore.train._signals import EXIT_INTERRUPTED

__all__ = ["STATUS_DIR_VARIABLE", "launch", "record_exit_status"]

#: Where each worker of ``pixcore launch`` writes its exit status (``rank<RANK>``).
STATUS_DIR_VARIABLE = "PIXCORE_LAUNCH_STATUS_DIR"


def record_exit_status(code: int) -> None:
    """Leave this worker's exit status for ``pixcore launch`` (no-op outside it)."""
    folder, rank = os.environ.get(STATUS_DIR_VARIABLE), os.environ.get("RANK")
    if folder and rank is not None and Path(folder).is_dir():
        Path(folder, f"rank{rank}").write_text(str(code))


def _statuses(folder: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in sorted(folder.glob("rank*")):
        try:
            found[path.name] = int(path.read_text())
        except ValueError:
            continue
    return found


def _outcome(folder: Path, workers: int | None, what: str) -> int:
    statuses = _statuses(folder)
    everyone = workers is None or len(statuses) == workers
    if statuses and everyone and all(code == EXIT_INTERRUPTED for code in statuses.values()):
        print(f"pixcore launch: {what}; all {len(statuses)} workers wrote their checkpoint and ended "
              f"with {EXIT_INTERRUPTED}: resume with the same command and --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    ended = ", ".join(f"{rank} -> {code}" for rank, code in statuses.items()) or "none"
    print(f"pixcore launch: {what}; workers that ended by themselves: {ended}"
          + ("" if everyone else f" (of {workers})"), file=sys.stderr)
    return 1


def launch(argv: Sequence[str]) -> int:
    """Run ``torchrun ARGV``; 75 when every local worker stopped with 75 (see the module doc)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(list(argv))
    workers = int(args.nproc_per_node) if str(args.nproc_per_node).isdigit() else None
    with tempfile.TemporaryDirectory(prefix="pixcore-launch-") as folder:
        os.environ[STATUS_DIR_VARIABLE] = folder  # the workers inherit it
        try:
            run(args)
        except SignalException as error:
            name = getattr(error.sigval, "name", str(error.sigval))
            return _outcome(Path(folder), workers, f"stopped by {name}")
        except ChildFailedError as error:
            codes = {f"rank{rank}": failure.exitcode for rank, failure in error.failures.items()}
            if codes and all(code == EXIT_INTERRUPTED for code in codes.values()):
                return _outcome(Path(folder), workers, "the workers were stopped by a signal")
            print(error.format_msg(), file=sys.stderr)
            return 1
        finally:
            os.environ.pop(STATUS_DIR_VARIABLE, None)
    return 0
