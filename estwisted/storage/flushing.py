# -*- test-case-name: estwisted.storage.test.test_event_log -*-
"""
A flush in two halves, so that its blocking part can run off the reactor
thread (L{estwisted.core.groupcommit}).

C{log.begin_flush()} (reactor thread) takes every buffered record into a
L{FlushJob}; appends made afterwards form the next batch behind it.
C{job.run()} (any thread, the GIL released in C{pwrite}/C{fdatasync})
makes the records durable and touches nothing the reactor thread reads.
C{log.end_flush(job)} (reactor thread again) publishes the new end, or,
when the job failed, undoes it and drops the batch formed behind it (its
positions follow the failed records), then raises.  At most one job is in
flight per log; L{FlushJob.wait} blocks until its C{run} returned (for
closing and truncating the log with a job in flight).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Optional

#: Called with the seconds each data sync (L{fdatasync}) took, from the
#: thread that ran it; set by the node's metrics (L{estwisted.web.metrics}),
#: so it must be safe to call from any thread.  C{None}: not timed.
sync_observer: Optional[Callable[[float], None]] = None


def fdatasync(fd: int) -> None:
    """
    C{os.fdatasync(fd)}, timed for L{sync_observer} when one is set.
    """
    observer = sync_observer
    if observer is None:
        os.fdatasync(fd)
        return
    started = time.perf_counter()
    os.fdatasync(fd)
    observer(time.perf_counter() - started)


class FlushJob:
    """
    The blocking half of one flush; see the module docstring.

    @ivar end: the log's end once this job is durable.
    @ivar error: what C{write} raised, if anything.
    @ivar ended: C{end_flush} dealt with the job.
    """

    __slots__ = ("end", "error", "ended", "_finished", "_running")

    def __init__(self, end: int) -> None:
        self.end = end
        self.error: Optional[BaseException] = None
        self.ended = False
        self._finished = False
        #: held until L{run} returns (a bare lock: a C{threading.Event}
        #: costs about 3 µs to make and set, once per flush)
        self._running = threading.Lock()
        self._running.acquire()

    def write(self) -> None:
        """
        Make the job's records durable (override); raise on failure.
        """

    def run(self) -> None:
        """
        Call L{write}, keeping what it raises in L{error}; never raises.
        """
        try:
            self.write()
        except BaseException as e:
            self.error = e
        finally:
            if not self._finished:  # a second run leaves the lock alone
                self._finished = True
                self._running.release()

    def fail(self, error: BaseException) -> None:
        """
        End the job with C{error} without running L{write} (as if it had
        raised C{error}).
        """
        if not self._finished:
            self.error = error
            self._finished = True
            self._running.release()

    @property
    def done(self) -> bool:
        """
        Whether L{run} returned.
        """
        return self._finished

    def wait(self, timeout: Optional[float] = None) -> bool:
        """
        Block until L{run} returned.

        @return: whether it did.
        """
        if self._finished:
            return True
        if not self._running.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return self._finished
        self._running.release()
        return True
