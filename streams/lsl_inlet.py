"""LSL inlet: one acquisition thread pulls a pylsl stream into a :class:`RingBuffer`.

Usage::

    with LslInlet(name="amp", source_id="amp-serial-1234", buffer_s=10.0) as inlet:
        if not inlet.wait_connected(timeout=10.0):
            raise RuntimeError(inlet.state_message)
        data, timestamps = inlet.read_new()      # copies, oldest first
        counters = inlet.counters()              # every dropped/odd sample, with its cause

The rest of the contract is kept with the code it describes: the states and counters in
:mod:`streams.lsl_status`; the resolve timeout, recovery and schema checks in
:mod:`streams.lsl_connection`; the gap, jump, transport-drop and rate checks in
:mod:`streams.timestamp_audit`.

Timestamps are the raw LSL timestamps (sender clock); nothing is corrected, except in a
chunk-stamped regular stream (a device that stamps every sample of a chunk with one arrival
time): there each chunk is spread back from its stamp, one nominal period apart
(:class:`streams.timestamps.LiveChunkStamps`; ``chunk_stamped`` says which kind the stream is),
and a gap must also exceed half a chunk, so chunk arrival jitter is not a gap. The latest
``time_correction()`` offset is kept in ``clock_offset`` (add it to map timestamps to the
local clock) with its history, refreshed every ``clock_refresh_s``.

A sample with a NaN or Inf is counted (``non_finite_samples``) and, by default, rejected;
with ``keep_non_finite=True`` it is written as it is, for a consumer that repairs single
channels (the daemon replaces them by the model's normalisation mean).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import asdict
from types import TracebackType

import numpy as np
import pylsl

from streams.inlet_settings import InletSettings
from streams.lsl_connection import (
    RETRY_S,
    LostError,
    LslConnection,
    LslTimeoutError,
    StopRequested,
    UnsupportedStream,
)
from streams.lsl_schema import StreamSchema
from streams.lsl_status import HISTORY, InletCounters, InletState
from streams.ring import RingBuffer
from streams.timestamp_audit import TimestampAudit
from streams.timestamps import LiveChunkStamps

logger = logging.getLogger(__name__)

__all__ = ["LslInlet"]

_CLOCK_RETRY_S = 0.1  # period of time_correction() reads until liblsl has an estimate


class LslInlet(LslConnection):
    """Acquire one LSL stream into a ring buffer from a background thread.

    Args:
        name, type, source_id: stream properties to match (at least one; all given must
            match). Give ``source_id`` whenever the device has one: liblsl recovery needs it.
        resolve_timeout_s: time without a matching stream before the state turns ``lost``
            (the search continues); also bounds the schema check after a recovery.
        buffer_s: ring length in seconds of data (capacity = ``ceil(buffer_s * rate)``).
        capacity: ring rows, overriding ``buffer_s``.
        irregular_capacity: ring rows for an irregular-rate stream when ``capacity`` is not
            given (without either, such a stream is refused: ``buffer_s`` cannot size it).
        watchdog_s: seconds without samples before the state turns ``stalled``.
        lost_after_s: seconds without samples before the stream is declared ``lost`` and
            re-resolved (must exceed ``watchdog_s``).
        max_chunk: most samples taken per ``pull_chunk``.
        gap_factor: a timestamp step above ``gap_factor`` sample periods is a gap.
        jump_s: a forward timestamp step above this many seconds is a jump.
        poll_interval_s: longest wait for a sample in one pull (the pull returns as soon
            as one arrives; this bounds how often the watchdog and stop are checked).
        wake_on_sample: True: block in liblsl and take each sample as it arrives (lowest
            latency); False: sleep ``poll_interval_s`` between pulls that found nothing
            (for side streams, so their thread does not wake exactly when the main
            stream's samples arrive).
        coalesce_s: least time between two pulls that return samples: at rates above
            ``1 / coalesce_s`` samples are taken in chunks (bounded per-chunk overhead),
            below it each sample as it comes.
        clock_refresh_s: period of ``time_correction()`` reads.
        pull_in_caller: False: a background thread pulls into the ring (several readers
            may share it). True: no thread; the consumer calls :meth:`pull` in its own loop,
            which resolves, connects, blocks in liblsl for the next samples and writes them
            into the ring, so a sample reaches the consumer with no thread hop.
        keep_non_finite: write samples with NaN or Inf (counted) instead of rejecting them.

    Raises ValueError for inconsistent arguments.
    """

    def __init__(
        self,
        name: str | None = None,
        type: str | None = None,
        source_id: str | None = None,
        *,
        resolve_timeout_s: float = 5.0,
        buffer_s: float = 10.0,
        capacity: int | None = None,
        watchdog_s: float = 1.0,
        lost_after_s: float = 5.0,
        max_chunk: int = 1024,
        gap_factor: float = 1.5,
        jump_s: float = 1.0,
        poll_interval_s: float = 0.002,
        wake_on_sample: bool = True,
        coalesce_s: float = 2.5e-4,
        clock_refresh_s: float = 5.0,
        pull_in_caller: bool = False,
        irregular_capacity: int | None = None,
        keep_non_finite: bool = False,
    ) -> None:
        super().__init__(
            InletSettings(
                name,
                type,
                source_id,
                resolve_timeout_s=resolve_timeout_s,
                buffer_s=buffer_s,
                capacity=capacity,
                watchdog_s=watchdog_s,
                lost_after_s=lost_after_s,
                max_chunk=max_chunk,
                gap_factor=gap_factor,
                jump_s=jump_s,
                poll_interval_s=poll_interval_s,
                wake_on_sample=wake_on_sample,
                coalesce_s=coalesce_s,
                clock_refresh_s=clock_refresh_s,
                pull_in_caller=pull_in_caller,
                irregular_capacity=irregular_capacity,
                keep_non_finite=keep_non_finite,
            )
        )
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._ring: RingBuffer | None = None
        self._buffer: np.ndarray | None = None  # pull destination, max_chunk rows
        self._data_event = threading.Event()  # set after each write to the ring
        self._chunk_stamps: LiveChunkStamps | None = None  # regular streams (first schema)
        self._audit = TimestampAudit(self._settings.jump_s, self._query_text(), logger)
        self._last_take = 0.0  # monotonic time of the last pull that returned samples
        # per-connection pump state (see _begin_pump)
        self._last_data = self._alive_since = self._next_clock = 0.0
        self._clock_known = False
        self._accepted = 0  # samples written by the current pull (caller mode)
        self._clock_offset: float | None = None
        self._clock_history: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=HISTORY
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LslInlet:
        """Start the acquisition thread (returns at once; see ``wait_connected``)."""
        if self._started:
            raise RuntimeError(
                "LslInlet.start() was already called; an inlet runs once: call stop() and "
                "create a new LslInlet to start again"
            )
        if self._stopped:
            raise RuntimeError("this LslInlet was stopped; create a new LslInlet to start again")
        self._started = True
        if "source_id" not in self._props:
            logger.warning(
                "LslInlet for %s: no source_id given; liblsl can only recover streams that "
                "have one, and a re-resolve by name/type may pick up another device",
                self._query_text(),
            )
        self._set_state(InletState.RESOLVING, f"looking for a stream with {self._query_text()}")
        if self._settings.pull_in_caller:
            return self
        self._thread = threading.Thread(
            target=self._run, name=f"lsl-inlet[{self._query_text()}]", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the stream; returns within ``timeout`` seconds.

        Idempotent. Raises RuntimeError if the thread did not end in time (it is a daemon
        thread and cannot outlive the process). Buffered data stay readable.
        """
        self._stop_event.set()
        self._stopped = True
        self._close_caller_inlet()
        self._resolver = None
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(
                    f"the LslInlet acquisition thread did not stop within {timeout} s "
                    f"(state '{self.state}'); it blocks inside liblsl"
                )
        if self.state != InletState.STOPPED:
            self._set_state(InletState.STOPPED, "stopped by stop()")

    def __enter__(self) -> LslInlet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- status ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while acquiring (the thread runs, or in caller mode: started) and stop() was
        not requested."""
        if self._settings.pull_in_caller:
            return self._started and not self._stop_event.is_set()
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop_event.is_set()

    @property
    def clock_offset(self) -> float | None:
        """Latest ``time_correction()`` in seconds (add to a timestamp for local time)."""
        with self._lock:
            return self._clock_offset

    def clock_offsets(self) -> np.ndarray:
        """History of clock offsets as (k, 2): local_clock() time read, offset (s)."""
        with self._lock:
            return np.array(self._clock_history, dtype=np.float64).reshape(-1, 2)

    def counters(self) -> InletCounters:
        """A consistent snapshot of all counters (see :class:`InletCounters`)."""
        with self._lock:
            ring = self._ring.counters() if self._ring is not None else None
            chunks = self._chunk_stamps
            return InletCounters(
                samples_written=ring.written if ring is not None else 0,
                chunk_stamped=None if chunks is None else chunks.chunked,
                overflowed=ring.overflowed if ring is not None else 0,
                ring=ring,
                **self._n,
                **asdict(self._audit.counters),
            )

    # --- reading -----------------------------------------------------------------------------

    def wait_for_data(self, timeout: float) -> bool:
        """Block until the inlet's thread wrote samples since the last call, or ``timeout``
        seconds (with ``pull_in_caller=True`` the caller's :meth:`pull` says what arrived).

        Returns True when there may be new samples (read them with :meth:`read_new`); the
        consumer of a low-latency loop waits here instead of polling.
        """
        fired = self._data_event.wait(timeout)
        self._data_event.clear()  # cleared before the caller reads, so no write is missed
        return fired

    def read_new(self, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the samples not read yet, oldest first: ``(data (n, C), timestamps (n,))``.

        Timestamps are raw LSL timestamps. See :meth:`RingBuffer.read_new`.
        """
        return self._require_ring("read_new").read_new(max_rows)

    def read_last(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the newest ``n`` samples regardless of the read position."""
        return self._require_ring("read_last").read_last(n)

    def _require_ring(self, what: str) -> RingBuffer:
        if not self._started:
            raise RuntimeError(
                f"LslInlet.{what}() before start(): call start() (or use the inlet as a "
                "context manager) first"
            )
        ring = self._ring
        if ring is None:
            raise RuntimeError(
                f"LslInlet.{what}(): no stream connected yet (state '{self.state}': "
                f"{self.state_message}); call wait_connected(timeout) first"
            )
        return ring

    def __repr__(self) -> str:
        return f"LslInlet({self._query_text()}, state='{self.state}')"

    # --- acquisition thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._acquire()
        except StopRequested:
            pass
        except UnsupportedStream as exc:
            self._set_state(InletState.ERROR, str(exc))
        except Exception as exc:
            logger.exception("LslInlet for %s failed", self._query_text())
            self._set_state(
                InletState.ERROR,
                f"acquisition thread failed: {exc!r}; stop() this inlet and create a new one",
            )

    def _acquire(self) -> None:
        while True:
            info = self._resolve()
            inlet = self._open(info)
            if inlet is None:  # refused or failed; the state says why
                self._sleep(RETRY_S)
                continue
            try:
                self._pump(inlet)
            finally:
                inlet.close_stream()
                del inlet  # destroys the liblsl inlet (and its recovery threads)

    def _adopt_schema(self, schema: StreamSchema) -> None:
        dtype = schema.dtype
        if dtype is None:
            raise UnsupportedStream(
                f"stream {schema.describe()} has channel format '{schema.channel_format}', "
                "which LslInlet does not support; use a numeric stream"
            )
        if self._settings.capacity is not None:
            capacity = self._settings.capacity
        elif schema.nominal_srate > 0:
            capacity = max(1, math.ceil(self._settings.buffer_s * schema.nominal_srate))
        elif self._settings.irregular_capacity is not None:
            capacity = int(self._settings.irregular_capacity)
        else:
            raise UnsupportedStream(
                f"stream {schema.describe()} has an irregular rate, so buffer_s cannot size "
                "the ring; pass capacity=<samples>"
            )
        ring = RingBuffer(capacity, schema.n_channels, dtype)
        with self._lock:
            self._schema = schema
            self._ring = ring
            self._buffer = np.empty((self._settings.max_chunk, schema.n_channels), dtype=dtype)
            if schema.nominal_srate > 0:
                self._chunk_stamps = LiveChunkStamps(
                    schema.nominal_srate, self._settings.gap_factor
                )
        logger.info(
            "LslInlet: schema of %s adopted; ring of %d samples", schema.describe(), capacity
        )

    def _liblsl_buflen(self, schema: StreamSchema) -> int:
        """liblsl buffers as long as the ring, at least 5 s; its size in samples (hundreds for
        irregular streams) is what the transport-drop check compares a backlog with."""
        with self._lock:
            ring = self._ring
        assert ring is not None
        max_buflen = max(5, math.ceil(ring.capacity / max(schema.nominal_srate, 1.0)))
        self._audit.transport_capacity = max_buflen * (round(schema.nominal_srate) or 100)
        return max_buflen

    def _pump(self, inlet: pylsl.StreamInlet) -> None:
        """Pull until stop, loss or refusal; returns so the caller closes the inlet."""
        self._begin_pump()
        wait_s = self._settings.poll_interval_s
        while not self._stop_event.is_set() and self._pump_step(inlet, wait_s):
            pass

    def _begin_pump(self) -> None:
        now = time.monotonic()
        self._last_data = now  # when the latest sample arrived
        self._alive_since = now  # lost_after_s counts from here (reset by a recovery)
        # The first time_correction() estimate takes liblsl about half a second of probing
        # in the background; ask without waiting until it exists, then every refresh.
        self._next_clock = now
        self._clock_known = False

    def _pump_step(self, inlet: pylsl.StreamInlet, wait_s: float) -> bool:
        """One pull (waiting up to ``wait_s`` for a sample) and its bookkeeping; False when
        the connection ended (lost or refused: the state says why)."""
        with self._lock:
            buffer = self._buffer
            schema = self._schema
        assert buffer is not None and schema is not None
        try:
            timestamps = self._pull(inlet, buffer, wait_s)
        except LostError:
            self._mark_lost("liblsl reported the stream lost (it cannot recover it)")
            return False
        n = len(timestamps)
        data = buffer[:n]
        # liblsl reconnects to a restarted source on its own. It says so through
        # was_clock_reset() (only once it had a clock estimate); samples resuming after a
        # stall may also come from a new outlet. Either way the samples may already be
        # from it: check the source before accepting anything.
        reset = inlet.was_clock_reset()
        if reset or (n and self.state == InletState.STALLED):
            data = data.copy()
            verdict = self._check_source(n, liblsl_reset=reset)
            if verdict is None:
                return False
            if verdict == "new":
                self._alive_since = time.monotonic()
                self._next_clock, self._clock_known = self._alive_since, False
        now = time.monotonic()
        if n:
            self._accept(data, timestamps, schema)
            if self.state == InletState.STALLED:
                self._set_state(
                    InletState.CONNECTED,
                    f"samples again after {now - self._last_data:.2f} s without",
                )
            self._last_data = self._alive_since = now
        else:
            if now - self._alive_since >= self._settings.lost_after_s:
                self._mark_lost(
                    f"no sample for {now - self._last_data:.1f} s "
                    f"(lost_after_s={self._settings.lost_after_s:g})"
                )
                return False
            if (
                now - self._last_data >= self._settings.watchdog_s
                and self.state == InletState.CONNECTED
            ):
                with self._lock:
                    self._n["stalls"] += 1
                self._audit.restart_rate_window()  # a stall is not the source's rate
                self._set_state(
                    InletState.STALLED, f"no sample for {self._settings.watchdog_s:g} s"
                )
        if now >= self._next_clock:
            self._clock_known = self._update_clock(inlet) or self._clock_known
            refresh = self._settings.clock_refresh_s if self._clock_known else _CLOCK_RETRY_S
            self._next_clock = now + refresh
        return True

    # --- caller mode -------------------------------------------------------------------------

    def pull(self, timeout: float) -> int:
        """Caller mode: connect when needed, wait up to ``timeout`` seconds for samples and
        write what arrived into the ring; returns the number of samples written (read them
        with :meth:`read_new`). Never blocks much longer than ``timeout`` while searching;
        connecting to a found stream may take up to ``resolve_timeout_s``.

        Call from one thread only. Raises RuntimeError without ``pull_in_caller=True``,
        before :meth:`start` or after :meth:`stop`.
        """
        if not self._settings.pull_in_caller:
            raise RuntimeError(
                "LslInlet.pull() needs pull_in_caller=True; this inlet's thread pulls: read "
                "with wait_for_data() and read_new()"
            )
        if not self.running:
            raise RuntimeError("LslInlet.pull() before start() or after stop(): start it first")
        if self.state == InletState.ERROR:
            return 0
        try:
            if self._inlet is None:
                if not self._connect(timeout):
                    return 0
                self._begin_pump()
            assert self._inlet is not None
            self._accepted = 0
            if not self._pump_step(self._inlet, timeout):
                self._close_caller_inlet()
                self._retry_at = time.monotonic() + RETRY_S
            return self._accepted
        except UnsupportedStream as exc:
            self._close_caller_inlet()
            self._set_state(InletState.ERROR, str(exc))
        except StopRequested:
            pass
        return 0

    def _pull(self, inlet: pylsl.StreamInlet, buffer: np.ndarray, wait_s: float) -> np.ndarray:
        """Pull what is buffered into ``buffer``; when nothing is, block up to ``wait_s``
        for one sample (liblsl wakes us as it arrives) and take what followed it,
        or, without ``wake_on_sample``, sleep the poll interval.
        Returns the timestamps of the samples now at the top of ``buffer``."""
        max_chunk = self._settings.max_chunk
        early = self._last_take + self._settings.coalesce_s - time.monotonic()
        if early > 0:  # samples come fast: let a chunk gather
            self._stop_event.wait(early)
        available = inlet.samples_available()
        if available:
            _, stamps = inlet.pull_chunk(timeout=0.0, max_samples=max_chunk, dest_obj=buffer)
            self._note_backlog(inlet, available, len(stamps))
            self._last_take = time.monotonic()
            return np.asarray(stamps, dtype=np.float64)
        if not self._settings.wake_on_sample:
            self._stop_event.wait(wait_s)
            return np.empty(0, dtype=np.float64)
        sample, stamp = inlet.pull_sample(timeout=wait_s)
        if stamp is None:
            return np.empty(0, dtype=np.float64)
        buffer[0] = sample
        rest = np.empty(0, dtype=np.float64)  # stamps of the samples that followed it
        available = inlet.samples_available()
        if max_chunk > 1 and available:
            _, rest = inlet.pull_chunk(timeout=0.0, max_samples=max_chunk - 1, dest_obj=buffer[1:])
        self._note_backlog(inlet, available + 1, len(rest) + 1)
        self._last_take = time.monotonic()
        return np.array([stamp, *rest], dtype=np.float64)

    def _note_backlog(self, inlet: pylsl.StreamInlet, before: int, pulled: int) -> None:
        """Tell the audit how full liblsl's buffer was around this pull: ``before`` samples
        waited when it started, and ``pulled`` were taken with more still waiting after (a
        drop may land between the count and the pull, on a busy machine)."""
        self._audit.note_backlog(max(before, pulled + inlet.samples_available()))

    # --- samples -----------------------------------------------------------------------------

    def _accept(self, data: np.ndarray, timestamps: np.ndarray, schema: StreamSchema) -> None:
        n = len(timestamps)
        n_bad = 0
        if data.dtype.kind == "f" and not math.isfinite(data.sum()):  # sum: one pass, no mask
            finite = np.isfinite(data).all(axis=1)
            n_bad = n - int(finite.sum())
        rate = schema.nominal_srate
        gap_s = math.inf  # irregular streams have no gaps
        if self._chunk_stamps is not None:
            timestamps = self._chunk_stamps(timestamps)
            gap_s = self._chunk_stamps.gap_s
        with self._lock:
            self._n["samples_received"] += n
            self._audit.check(timestamps, rate, gap_s)
            if rate > 0:
                self._audit.check_rate(n, rate, time.monotonic())
            if n_bad:
                self._n["non_finite_samples"] += n_bad
                if not self._settings.keep_non_finite:
                    self._n["non_finite_rejected"] += n_bad
                    data = data[finite]
                    timestamps = timestamps[finite]
            assert self._ring is not None
            self._ring.write(data, timestamps)
            self._accepted += len(timestamps)
        if not self._settings.pull_in_caller:  # a caller that pulls needs no wake-up
            self._data_event.set()
        if n_bad:
            kept = "kept" if self._settings.keep_non_finite else "rejected"
            logger.debug("LslInlet: %s %d sample(s) with NaN/Inf", kept, n_bad)

    def _update_clock(self, inlet: pylsl.StreamInlet) -> bool:
        """Read liblsl's clock offset estimate; False while there is none yet (the thread
        waits up to 10 ms for it, the caller's loop not at all)."""
        try:
            timeout = 0.0 if self._settings.pull_in_caller else 0.01
            offset = float(inlet.time_correction(timeout=timeout))
        except (LslTimeoutError, LostError) as exc:
            logger.debug("LslInlet: no clock offset yet (%s)", exc)
            return False
        with self._lock:
            self._clock_offset = offset
            self._n["clock_offset_updates"] += 1
            self._clock_history.append((pylsl.local_clock(), offset))
        return True

    def _mark_lost(self, reason: str) -> None:
        """Declare the stream lost; the arrivals around a loss say nothing of its rate."""
        with self._lock:
            self._audit.restart_rate_window()
        super()._mark_lost(reason)
