"""SIGTERM and SIGINT during training: finish the step, write a checkpoint, exit cleanly.

Clusters announce pre-emption with SIGTERM (Slurm, Kubernetes, torchrun forwarding it
to its workers) and give a grace period before SIGKILL; Ctrl-C sends SIGINT. While
:class:`StopSignals` is active, the first such signal only records a stop request, which
the trainer acts on at the end of the current step. A second signal gives up at once
(the previous handler runs: Ctrl-C twice raises ``KeyboardInterrupt``).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

__all__ = ["EXIT_INTERRUPTED", "StopSignals"]

#: Exit status of ``pixcore train`` after a signal stopped it and a checkpoint was written
#: (EX_TEMPFAIL of sysexits.h: "try again later", here with ``--resume``).
EXIT_INTERRUPTED = 75

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: SIGTERM/SIGINT set :attr:`received` instead of killing the process.

    Handlers are installed only in the main thread (Python allows no other) and the
    previous ones are restored on exit. Data-loader workers forked meanwhile inherit the
    handler and ignore the signal (a job scheduler signals every process of the job): the
    main process finishes its step with their batches and then shuts them down.
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
            return  # a forked data-loader worker: the main process decides
        name = signal.Signals(signum).name
        if self.received is not None:  # the second signal: stop now, the default way
            signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.received = name
        # os.write, not print: a handler may interrupt a print (the progress bar's) and
        # Python's buffered streams refuse re-entrant writes.
        os.write(2, f"\npixcore: {name} received: finishing the current step and writing a "
                    f"checkpoint (send {name} again to stop at once)\n".encode())
