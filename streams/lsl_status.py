"""What an :class:`streams.lsl_inlet.LslInlet` reports: its states, their changes and its
counters.

States (``inlet.state``; each change is logged and kept in ``state_history`` with its
``pylsl.local_clock()`` time and a message):

================== ===========================================================================
``idle``           constructed, ``start()`` not called yet
``resolving``      looking for the stream for the first time
``connected``      data flowing
``stalled``        connected, but no sample for ``watchdog_s``; back to ``connected`` when data
                   resume
``lost``           liblsl raised ``LostError``, the stream stalled for ``lost_after_s``, or the
                   first resolve found nothing within ``resolve_timeout_s``; the thread keeps
                   re-resolving in the background and reconnects when the stream comes back
``schema-mismatch`` the stream came back with another channel count, channel format or nominal
                   rate than first seen: its data are refused (never written) and the thread
                   keeps looking for a stream that matches the first-seen schema
``stopped``        ``stop()`` returned
``error``          unsupported stream (string format; irregular rate without ``capacity``) or
                   an unexpected failure; the message says what to do; the thread has ended
================== ===========================================================================

Counters (:class:`InletCounters`), with causes::

    samples_received == samples_written + non_finite_rejected + samples_refused
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from streams.ring import RingCounters

__all__ = ["HISTORY", "InletCounters", "InletState", "StateChange"]

HISTORY = 1000  # state changes (and clock offsets) an inlet keeps


class InletState(str, Enum):
    """An inlet's lifecycle (the table above); a state is its value in JSON, logs and
    metrics, and compares equal to it."""

    IDLE = "idle"
    RESOLVING = "resolving"
    CONNECTED = "connected"
    STALLED = "stalled"
    LOST = "lost"
    SCHEMA_MISMATCH = "schema-mismatch"
    STOPPED = "stopped"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StateChange:
    """One state transition: ``time`` is ``pylsl.local_clock()`` seconds."""

    state: InletState
    time: float
    message: str


@dataclass(frozen=True)
class InletCounters:
    """One consistent snapshot of an inlet's counters (samples unless stated otherwise).

    ``samples_received == samples_written + non_finite_rejected + samples_refused``, and
    ``ring`` satisfies ``written == read + overflowed + available``.

    Attributes:
        samples_received: samples pulled from liblsl.
        samples_written: samples written into the ring.
        non_finite_samples: samples with a NaN or Inf in any channel.
        non_finite_rejected: those of them rejected (all, unless ``keep_non_finite``).
        transport_dropped: samples liblsl dropped from its full buffer before they were
            pulled (the consumer fell behind); not counted as gaps.
        rate_mismatches: rate windows more than 10% off the declared rate.
        measured_rate_hz: arrival rate over the latest complete window (0: none yet).
        chunk_stamped: the stream stamps whole chunks (re-stamped), None until judged (its
            first 32 intervals, in which no gap is counted) or for irregular streams.
        samples_refused: samples pulled after a reconnect whose schema did not match or could
            not be checked.
        gaps: timestamp steps larger than ``gap_factor / rate``.
        gap_missing_samples: estimated samples missing in those gaps.
        gap_total_s, last_gap_s: summed and latest gap duration (``dt - 1 / rate``), seconds.
        jumps: forward timestamp steps larger than ``jump_s`` (also counted as gaps).
        timestamps_backwards: steps with a timestamp earlier than the previous one.
        duplicates: steps with a timestamp equal to the previous one.
        reconnects: connections after the first (liblsl recoveries and own re-resolves).
        source_changes: times another source (source_id) with the same schema replaced a
            lost one; only without a given ``source_id``.
        stalls: times no sample came for ``watchdog_s``.
        lost: times the stream was declared lost.
        schema_mismatches: outlet instances (uids) refused for a schema change.
        resolve_timeouts: initial resolves that found nothing within ``resolve_timeout_s``.
        clock_offset_updates: ``time_correction()`` values read.
        overflowed: ring rows dropped because the consumer fell behind (= ``ring.overflowed``).
        ring: the ring's own counters (None before the first connection).
    """

    samples_received: int
    samples_written: int
    non_finite_samples: int
    non_finite_rejected: int
    transport_dropped: int
    rate_mismatches: int
    measured_rate_hz: float
    chunk_stamped: bool | None
    samples_refused: int
    gaps: int
    gap_missing_samples: int
    gap_total_s: float
    last_gap_s: float
    jumps: int
    timestamps_backwards: int
    duplicates: int
    reconnects: int
    source_changes: int
    stalls: int
    lost: int
    schema_mismatches: int
    resolve_timeouts: int
    clock_offset_updates: int
    overflowed: int
    ring: RingCounters | None
