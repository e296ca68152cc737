"""Stop requests from the scheduler: SIGTERM or SIGUSR1 ends training after the current step.

SLURM sends SIGTERM when a job is cancelled, preempted or reaches its time limit (then SIGKILL
after ``KillWait``, 30 s by default). It sends SIGUSR1 ahead of the limit when the job requests
it with ``--signal=USR1@<seconds>``. The trainer finishes the step it is in, writes a checkpoint and leaves
with ``REQUEUE_EXIT_CODE``.

Exit code 75 is ``EX_TEMPFAIL`` of sysexits.h ("temporary failure; the user is invited to retry").
It is not zero, so Snakemake marks the job failed and never mistakes the missing final weights for
a finished run; ``--retries`` (or a SLURM requeue) starts the same command again, and that run
resumes from the checkpoint. It is also below 128, so it is not read as "killed by a signal".
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

logger = logging.getLogger(__name__)

REQUEUE_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing the checkpoint of ``step``."""

    exit_code = REQUEUE_EXIT_CODE
    run_status = "KILLED"  # how the MLflow run of the stage ends

    def __init__(self, signal_name: str, step: int):
        super().__init__(f"stopped by {signal_name} after step {step}; the checkpoint of step {step} is written")
        self.signal_name, self.step = signal_name, step


class StopRequest:
    """Records a stop signal instead of dying on it; use as a context manager around the training loop."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.signals = signals
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            logger.warning("received %s: stopping after the current step", signal.Signals(signum).name)
        self.received = signal.Signals(signum)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self) -> "StopRequest":
        for sig in self.signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                logger.warning("cannot catch %s outside the main thread; it will end training abruptly", sig.name)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
