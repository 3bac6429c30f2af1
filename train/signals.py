"""Stop when asked: SIGTERM (what batch schedulers send before they preempt or end a job),
SIGINT (Ctrl-C) and SIGUSR1 (SLURM's ``--signal`` warning) become a request to stop after the
training step in progress, which the trainer answers by writing ``checkpoint_latest.pth`` of that
step and exiting with 128 + the signal's number.

Under torchrun a signal may reach one rank, or every rank at slightly different steps; ``agreed``
(one ``all_reduce`` of a number per step) makes every rank stop after the same step.  A second
signal changes nothing (torchrun forwards the signal it gets to workers that may have had it
already); ``kill -9`` stops at once, and loses at most what the last checkpoint does not hold.
"""
import signal
import threading

#: the signals that ask a run to stop
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopRequests:
    """While entered (in the main thread): ``signum``, the first of ``SIGNALS`` this process got (0: none)."""

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def _note(self, signum, frame):
        self.signum = self.signum or signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def agreed(self, distributed) -> int:
        """The signal that stops every rank now (0: go on): the largest that any rank got; a collective."""
        return distributed.max(self.signum)


def ignore_in_workers(worker_id: int) -> None:
    """``worker_init_fn`` of the data loaders: their worker processes leave the stop signals to the trainer
    (a scheduler signals every process of a job; a worker killed by it would end the run before its
    checkpoint). They end with the trainer's loader, or by themselves when the trainer dies."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def name(signum: int) -> str:
    """``'SIGTERM'`` for 15."""
    return signal.Signals(signum).name


class Stopped(Exception):
    """A run stopped by a signal after writing its checkpoint; ``line`` says where and how to continue."""

    def __init__(self, signum: int, line: str):
        super().__init__(line)
        self.signum, self.line = signum, line
