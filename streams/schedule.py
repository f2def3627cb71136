"""When each sample of a regular stream is due: the one pacing rule of the LSL pushers that
stand in for a device (the latency benchmarks' pushers and the tests' outlet process).

Sample ``k`` (0-based) is due at ``t0 + k / rate`` seconds on ``pylsl.local_clock()`` and is
stamped with that time. A pusher pushes what :meth:`PushSchedule.due` says is due (in chunks,
or one by one after :meth:`PushSchedule.wait_for`), so a late pusher catches up rather than
drifting.
"""

from __future__ import annotations

import time
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
