"""The timestamp audit of an accepted stream: gaps, jumps, duplicates, backwards steps,
samples dropped by the transport, and the arrival rate. Pure bookkeeping: no liblsl and no
clock of its own (the caller passes the arrival time), so it is tested without a stream.

Gap checks run on consecutive timestamps of the accepted stream (across chunks and
reconnects): ``dt > gap_s`` is a gap (the inlet's ``gap_factor / rate``, plus half a chunk
for a chunk-stamped stream; estimated ``round(dt * rate) - 1`` missing samples, duration
``dt - 1 / rate``); ``dt > jump_s`` is also a jump; ``dt == 0`` a duplicate; ``dt < 0`` a
backwards step. These samples are kept and counted, not altered. A step that comes with a
pull which found liblsl's own buffer (nearly) full, or with the pull after it, is not a gap of
the source: liblsl drops the oldest samples when its buffer overflows (the consumer fell
behind), also while a pull takes samples and while the rest of a burst lands, so such gaps are
counted as ``transport_dropped`` ("dropped by the transport: N samples").

Rate check (regular streams): samples arriving per second of the local clock, over windows
of :data:`RATE_WINDOW_S` without a stall, loss or transport drop. A window more than
:data:`RATE_TOLERANCE` off the declared rate counts a ``rate_mismatches`` and logs a warning
(once, until the rate is back within the tolerance); ``measured_rate_hz`` is the latest window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["RATE_TOLERANCE", "RATE_WINDOW_S", "TimestampAudit", "TimestampCounters"]

RATE_WINDOW_S = 2.0  # arrival-rate measurement window, seconds
RATE_TOLERANCE = 0.1  # relative difference between measured and declared rate tolerated
_FULL = 0.9  # liblsl's buffer this full: a pull may race its drops of the oldest samples
_TRANSPORT_CHECKS = 2  # the pull that found it full and the next may show liblsl's drops

_logger = logging.getLogger(__name__)


@dataclass
class TimestampCounters:
    """The audit's running counts (samples unless stated otherwise), named as in
    :class:`streams.lsl_status.InletCounters`, which documents each."""

    transport_dropped: int = 0
    rate_mismatches: int = 0
    measured_rate_hz: float = 0.0
    gaps: int = 0
    gap_missing_samples: int = 0
    gap_total_s: float = 0.0
    last_gap_s: float = 0.0
    jumps: int = 0
    timestamps_backwards: int = 0
    duplicates: int = 0


class TimestampAudit:
    """Counts what the timestamps and arrival rate of one stream say, in :attr:`counters`.

    Not thread-safe: the owner serialises calls and reads of :attr:`counters`.

    Args:
        jump_s: a forward timestamp step above this many seconds is a jump.
        label: names the stream in the rate warning (e.g. its LSL query).
        logger: receives the warnings (jumps, transport drops, rate) and debug lines (gaps).
    """

    def __init__(self, jump_s: float, label: str, logger: logging.Logger = _logger) -> None:
        self.counters = TimestampCounters()
        self.transport_capacity = 0  # samples liblsl's buffer holds (set on open)
        self._jump_s = jump_s
        self._label = label
        self._logger = logger
        self._transport_checks = 0  # next checks whose gaps are liblsl's drops
        self._last_ts: float | None = None  # the latest timestamp checked, seconds
        self._rate_window: tuple[float, int] | None = None  # (start time s, samples)
        self._rate_off = False  # the latest window was off the declared rate

    def note_backlog(self, waiting: int) -> None:
        """A pull is taking samples while ``waiting`` were in liblsl's buffer: when that is
        (nearly) full, the gaps of this pull's :meth:`check` and the next one's are the
        transport's drops."""
        if waiting >= _FULL * self.transport_capacity:
            self._transport_checks = _TRANSPORT_CHECKS

    def restart_rate_window(self) -> None:
        """Forget the current rate window (after a stall or loss: not the source's rate)."""
        self._rate_window = None

    def check_rate(self, n: int, rate: float, now: float) -> None:
        """Add ``n`` samples arrived at ``now`` (seconds, monotonic) to the rate window and
        judge a complete one against the declared ``rate`` (Hz, > 0)."""
        if self._rate_window is None:
            self._rate_window = (now, 0)  # counts from the next arrival
            return
        start, count = self._rate_window
        count += n
        if now - start < RATE_WINDOW_S:
            self._rate_window = (start, count)
            return
        measured = count / (now - start)
        self._rate_window = (now, 0)
        self.counters.measured_rate_hz = measured
        off = abs(measured - rate) > RATE_TOLERANCE * rate
        if off:
            self.counters.rate_mismatches += 1
            if not self._rate_off:
                self._logger.warning(
                    "LslInlet: %s declares %g Hz but delivers %.4g Hz (more than %d%% off); "
                    "check the device's rate setting",
                    self._label,
                    rate,
                    measured,
                    round(RATE_TOLERANCE * 100),
                )
        self._rate_off = off

    def check(self, timestamps: np.ndarray, rate: float, gap_s: float) -> None:
        """Count gaps (steps above ``gap_s`` seconds; ``math.inf`` for an irregular stream, whose
        ``rate`` is 0 Hz), jumps, duplicates and backwards steps of the next (non-empty)
        ``timestamps`` (s), or, when the pull found liblsl's buffer full, the samples it
        dropped."""
        transport = self._transport_checks > 0
        self._transport_checks = max(self._transport_checks - 1, 0)
        if len(timestamps) == 1 and self._last_ts is not None and not transport:  # live case
            self._check_step(float(timestamps[0]) - self._last_ts, rate, gap_s)
            self._last_ts = float(timestamps[0])
            return
        if self._last_ts is None:
            steps = np.diff(timestamps)
        else:
            steps = np.diff(timestamps, prepend=self._last_ts)
        self._last_ts = float(timestamps[-1])
        if not steps.size:
            return
        n = self.counters
        n.timestamps_backwards += int(np.count_nonzero(steps < 0))
        n.duplicates += int(np.count_nonzero(steps == 0))
        gaps = steps[steps > gap_s]
        if transport:  # liblsl dropped the oldest samples while this pull was pending
            if gaps.size:
                self._count_transport_drop(int(np.sum(np.rint(gaps * rate) - 1)))
            return
        jumps = steps[steps > self._jump_s]
        if jumps.size:
            n.jumps += int(jumps.size)
            self._logger.warning("LslInlet: timestamp jump(s) of %s s", np.round(jumps, 3).tolist())
        if gaps.size:
            durations = gaps - 1.0 / rate
            n.gaps += int(gaps.size)
            n.gap_missing_samples += int(np.sum(np.rint(gaps * rate) - 1))
            n.gap_total_s += float(durations.sum())
            n.last_gap_s = float(durations[-1])
            self._logger.debug("LslInlet: gap(s) of %s s", np.round(durations, 4).tolist())

    def _count_transport_drop(self, missing: int) -> None:
        """Count samples liblsl dropped from its full buffer."""
        self.counters.transport_dropped += missing
        self._rate_window = None  # these arrivals say nothing of the source's rate
        self._logger.warning(
            "LslInlet: dropped by the transport: %d samples (liblsl's buffer of %d samples "
            "was full: the consumer fell behind)",
            missing,
            self.transport_capacity,
        )

    def _check_step(self, step: float, rate: float, gap_s: float) -> None:
        """:meth:`check` for one step (s), without numpy."""
        n = self.counters
        if step <= 0:
            if step < 0:
                n.timestamps_backwards += 1
            else:
                n.duplicates += 1
            return
        if step > self._jump_s:
            n.jumps += 1
            self._logger.warning("LslInlet: timestamp jump(s) of %s s", [round(step, 3)])
        if step > gap_s:
            n.gaps += 1
            n.gap_missing_samples += round(step * rate) - 1
            n.gap_total_s += step - 1.0 / rate
            n.last_gap_s = step - 1.0 / rate
            self._logger.debug("LslInlet: gap(s) of %s s", [round(step - 1.0 / rate, 4)])
