"""When each sample of a regular stream is due: the one pacing rule of the LSL pushers that
stand in for a device (the latency benchmarks' pushers and the tests' outlet process).

Sample ``k`` (0-based) is due at ``t0 + k / rate`` seconds on ``pylsl.local_clock()`` and is
stamped with that time. :meth:`PushSchedule.run` is the one pushing loop: it hands each batch
of due samples (chunks, or one by one after :meth:`PushSchedule.wait_for`) to the pusher's own
``push``, so a late pusher catches up rather than drifting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pylsl

__all__ = ["PushSchedule"]


class Stop(Protocol):
    """A threading or multiprocessing ``Event`` that asks the pusher to stop."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class PushSchedule:
    """Samples due at ``t0 + k / rate`` (s, local clock; ``rate`` in Hz), ``total`` of them
    (None: unbounded)."""

    t0: float
    rate: float
    total: int | None = None

    def stamps(self, index: np.ndarray) -> np.ndarray:
        """The due times (s) of samples ``index``."""
        return self.t0 + np.asarray(index, dtype=np.float64) / self.rate

    def due(self, now: float) -> int:
        """How many samples are due at ``now`` (s): those stamped at or before it."""
        n = max(int((now - self.t0) * self.rate) + 1, 0)
        return n if self.total is None else min(n, self.total)

    def wait_for(self, k: int, stop: Stop, spin_s: float = 0.0) -> bool:
        """Sleep until sample ``k`` is due, spinning the last ``spin_s`` seconds for sub-
        millisecond precision; False when ``stop`` is set first."""
        due = self.t0 + k / self.rate
        ahead = due - pylsl.local_clock() - spin_s
        if ahead > 0 and stop.wait(ahead):
            return False
        while pylsl.local_clock() < due:
            if spin_s <= 0:
                time.sleep(0)
        return not stop.is_set()

    def run(
        self, push: Callable[[int, int], int], stop: Stop, chunk_max: int = 1, spin_s: float = 0.0
    ) -> int:
        """Push the samples as they fall due, until ``total`` are pushed (never, when None) or
        ``stop`` is set; returns how many were pushed.

        ``push(k, n)`` pushes up to ``n`` due samples from sample ``k`` on and returns how many
        it pushed (fewer, even 0, when it pauses). Batches hold at most ``chunk_max`` samples;
        with 1, each sample is pushed when :meth:`wait_for` (spinning ``spin_s``) says it is
        due."""
        k = 0
        while (self.total is None or k < self.total) and not stop.is_set():
            n = min(self.due(pylsl.local_clock()) - k, chunk_max)
            if n > 0:
                k += push(k, n)
            elif not self.wait_for(k, stop, spin_s):
                break
        return k
