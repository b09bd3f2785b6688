"""SIGTERM and SIGINT during training: finish the step, write a checkpoint, exit cleanly.

Clusters announce pre-emption with SIGTERM and give a grace period before SIGKILL:
Slurm's ``scancel`` and container runtimes signal *every process of the job*, the
data-loader workers included; Kubernetes signals the container's first process, and
torchrun forwards the signal to its workers. Ctrl-C sends SIGINT to the terminal's
process group. While :class:`StopSignals` is active:

* the first SIGTERM or SIGINT only records a stop request, which the trainer acts on at
  the end of the current step (checkpoint, exit status :data:`EXIT_INTERRUPTED`);
* a repeated SIGTERM changes nothing (a job's launcher and its scheduler often both send
  one; the scheduler's answer to a run that does not stop is SIGKILL, not a third TERM);
* a second SIGINT gives up at once (the previous handler runs: ``KeyboardInterrupt``),
  except under torchrun, which forwards the first one itself.

Data-loader workers must outlive the signal, since the main process still needs their
batches to finish its step; torch installs its own SIGTERM handler in every worker,
which would kill it. :func:`shield_workers` makes a loader's workers ignore both
signals, and :func:`deferred_signals` holds the signals back while workers are forked,
so that one arriving at that moment reaches the main process only, after the fork.
The main process then shuts its workers down in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["EXIT_INTERRUPTED", "StopSignals", "deferred_signals", "shield_workers"]

#: Exit status of ``pixcore train`` after a signal stopped it and a checkpoint was written
#: (EX_TEMPFAIL of sysexits.h: "try again later", here with ``--resume``).
EXIT_INTERRUPTED = 75

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: SIGTERM/SIGINT set :attr:`received` instead of killing the process.

    Handlers are installed only in the main thread (Python allows no other) and the
    previous ones are restored on exit.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            return  # a forked child that has not set its own handlers yet: the main process decides
        name = signal.Signals(signum).name
        if self.received is not None:
            if signum == signal.SIGINT and not _under_launcher():  # Ctrl-C twice: stop now
                signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)
                signal.raise_signal(signum)
            return  # a repeated SIGTERM: already stopping
        self.received = name
        # os.write, not print: a handler may interrupt a print (the progress bar's) and
        # Python's buffered streams refuse re-entrant writes.
        again = "press Ctrl-C again to stop at once" if signum == signal.SIGINT else "SIGKILL stops at once"
        os.write(2, f"\npixcore: {name} received: finishing the current step and writing a "
                    f"checkpoint ({again})\n".encode())


def _under_launcher() -> bool:
    # torchrun forwards the signal it got to its workers: after Ctrl-C, a worker gets SIGINT
    # from the terminal and again from torchrun. Its hard stop is SIGKILL after a timeout.
    return "TORCHELASTIC_RUN_ID" in os.environ


class _IgnoreStopSignals:
    """A loader's ``worker_init_fn``: ignore SIGTERM/SIGINT, then run the loader's own one.

    A class, not a closure, so that loaders with the ``spawn`` start method can pickle it.
    """

    def __init__(self, inner: Callable[[int], None] | None) -> None:
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_IGN)  # also discards one held back since the fork
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        if self.inner is not None:
            self.inner(worker_id)


def shield_workers(loader: DataLoader[Any]) -> None:
    """Make ``loader``'s worker processes ignore SIGTERM and SIGINT (idempotent)."""
    if loader.num_workers > 0 and not isinstance(loader.worker_init_fn, _IgnoreStopSignals):
        loader.worker_init_fn = _IgnoreStopSignals(loader.worker_init_fn)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGTERM/SIGINT back in this thread (delivered on exit); children inherit the block.

    Wrap the start of a loader's workers in it: a signal sent to the whole process group
    at that moment then reaches each new worker only after it has chosen to ignore it.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
