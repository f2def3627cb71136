"""LSL inlet: one acquisition thread pulls a pylsl stream into a :class:`RingBuffer`.

Usage::

    with LslInlet(name="amp", source_id="amp-serial-1234", buffer_s=10.0) as inlet:
        if not inlet.wait_connected(timeout=10.0):
            raise RuntimeError(inlet.state_message)
        data, timestamps = inlet.read_new()      # copies, oldest first
        counters = inlet.counters()              # every dropped/odd sample, with its cause

States (``inlet.state``) and counters (:class:`InletCounters`, with causes) are listed in
:mod:`streams.lsl_status`.

Resolve timeout (decision): ``start()`` never blocks. If no stream matches within
``resolve_timeout_s`` the state becomes ``lost`` with a message naming the query and saying
that the search goes on; the thread keeps searching, so an outlet started later is still
picked up. Callers that need data now use ``wait_connected(timeout)`` (False on timeout) and
report ``state_message``.

Recovery. The pylsl inlet is opened with ``recover=True``; liblsl can only recover a stream
that has a ``source_id`` (it re-resolves by name, type, channel count and source_id when the
connection breaks). Without a source_id liblsl raises ``LostError`` instead; the inlet then
re-resolves by the original name/type query, which could pick up another device with the same
name, so pass ``source_id`` (a warning is logged when none is given). Without a given
``source_id`` the connected source's is used to find the stream again, until the stream has
been lost for ``watchdog_s``: from then on any source with the given properties (e.g. the
acquisition program restarted with a new source_id) is taken, if its schema matches, and
logged and counted as "source changed". When liblsl does not
find the stream again (e.g. it came back with another channel count), the inlet gives up after
``lost_after_s`` without samples, drops the pylsl inlet and re-resolves by source_id itself.
After any reconnect the channel count, channel format and nominal rate are checked against
the first-seen schema before any new sample is accepted: for our own reconnects before
opening, for liblsl's by resolving the source_id again and comparing the outlet instance
(``uid``) and schema. liblsl's reconnects are noticed through ``was_clock_reset()`` (which
liblsl only raises once it had a clock estimate, about 0.5 s after connecting) and through
samples resuming after a stall; a restart that liblsl bridges within ``watchdog_s`` during
the first half second of a connection goes unnoticed (its gap is still counted).
``StreamInlet.info()`` is no help here: it keeps returning the *old* outlet's description
after a liblsl recovery. If the source cannot be resolved for the check within
``resolve_timeout_s``, the held samples are refused and the stream is declared lost.

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

The gap, jump, transport-drop and rate checks are described in
:mod:`streams.timestamp_audit`.

liblsl caveat handled here: the first ``pull_chunk`` on a fresh pylsl inlet waits, without
timeout, for the stream's full description; if the source dies before that, even
``pull_chunk(timeout=0.0)`` blocks until it comes back. The inlet therefore fetches ``info()``
(with a timeout) right after opening, before the first pull.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from types import TracebackType
from typing import Any

import numpy as np
import pylsl

from streams.channels import labels_of
from streams.discovery import visible_summary
from streams.lsl_schema import StreamSchema, desc_texts
from streams.lsl_status import STATES, InletCounters, StateChange
from streams.ring import RingBuffer
from streams.timestamp_audit import TimestampAudit
from streams.timestamps import LiveChunkStamps

try:
    from pylsl.util import LostError
    from pylsl.util import TimeoutError as LslTimeoutError
except ImportError:  # pragma: no cover - pylsl < 1.17 kept its exceptions in pylsl.pylsl
    from pylsl.pylsl import LostError  # type: ignore[no-redef]
    from pylsl.pylsl import TimeoutError as LslTimeoutError  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

__all__ = ["LslInlet"]

_SLICE_S = 0.25  # longest single blocking liblsl call in the thread (bounds stop())
_RETRY_S = 0.5  # pause between resolve attempts after a refused or failed connection
_CLOCK_RETRY_S = 0.1  # period of time_correction() reads until liblsl has an estimate
_HISTORY = 1000  # state changes and clock offsets kept


class _Stopping(Exception):
    """Raised inside the acquisition thread when stop() was requested."""


class _Unsupported(Exception):
    """The stream cannot be handled by this inlet; the message says what to do."""


class LslInlet:
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
        props = {"name": name, "type": type, "source_id": source_id}
        props = {k: v for k, v in props.items() if v is not None}
        if not props:
            raise ValueError(
                "LslInlet needs at least one of name, type or source_id to find the stream, "
                "e.g. LslInlet(name='amp', source_id='amp-serial-1234')"
            )
        for key, value in props.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key} must be a non-empty string, got {value!r}")
            if "'" in value:
                raise ValueError(
                    f"{key} {value!r} contains a single quote, which LSL queries "
                    "cannot match; rename the stream"
                )
        for key, value in (
            ("resolve_timeout_s", resolve_timeout_s),
            ("buffer_s", buffer_s),
            ("watchdog_s", watchdog_s),
            ("lost_after_s", lost_after_s),
            ("gap_factor", gap_factor),
            ("jump_s", jump_s),
            ("poll_interval_s", poll_interval_s),
            ("clock_refresh_s", clock_refresh_s),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a finite number > 0, got {value!r}")
        if lost_after_s <= watchdog_s:
            raise ValueError(
                f"lost_after_s ({lost_after_s}) must exceed watchdog_s ({watchdog_s}): a stream "
                "is declared stalled first, lost later"
            )
        if gap_factor <= 1:
            raise ValueError(f"gap_factor must be > 1 sample period, got {gap_factor}")
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be a positive integer or None, got {capacity!r}")
        if not isinstance(max_chunk, int) or max_chunk < 1:
            raise ValueError(f"max_chunk must be a positive integer, got {max_chunk!r}")

        self._props = props
        self._resolve_timeout_s = float(resolve_timeout_s)
        self._buffer_s = float(buffer_s)
        self._capacity = capacity
        self._watchdog_s = float(watchdog_s)
        self._lost_after_s = float(lost_after_s)
        self._max_chunk = max_chunk
        self._data_event = threading.Event()  # set after each write to the ring
        self._description: dict[str, str] = {}
        self._channel_labels: tuple[str, ...] | None = None
        self._header_xml = ""  # the connected stream's full info.as_xml()
        self._gap_factor = float(gap_factor)
        self._audit = TimestampAudit(float(jump_s), self._query_text(), logger)
        self._poll_s = float(poll_interval_s)
        self._wake_on_sample = bool(wake_on_sample)
        if not (math.isfinite(coalesce_s) and coalesce_s >= 0):
            raise ValueError(f"coalesce_s must be >= 0 seconds, got {coalesce_s!r}")
        self._coalesce_s = float(coalesce_s)
        self._last_take = 0.0  # monotonic time of the last pull that returned samples
        self._clock_refresh_s = float(clock_refresh_s)
        self._pull_in_caller = bool(pull_in_caller)
        if irregular_capacity is not None and int(irregular_capacity) < 1:
            raise ValueError(f"irregular_capacity must be positive, got {irregular_capacity!r}")
        self._irregular_capacity = irregular_capacity
        self._keep_non_finite = bool(keep_non_finite)
        self._chunk_stamps: LiveChunkStamps | None = None  # regular streams (first schema)
        # caller mode: the open pylsl inlet, the resolver looking for one, and the earliest
        # time of the next connection attempt after a refused or failed one
        self._inlet: pylsl.StreamInlet | None = None
        self._resolver: tuple[str, pylsl.ContinuousResolver] | None = None
        self._resolve_started = 0.0
        self._resolve_timeout_noted = ""  # query whose resolve timeout was reported
        self._retry_at = 0.0
        self._lost_since: float | None = None  # monotonic time the stream was last lost
        # per-connection pump state (see _begin_pump)
        self._last_data = self._alive_since = self._next_clock = 0.0
        self._clock_known = False
        self._accepted = 0  # samples written by the current pull (caller mode)

        self._lock = threading.Lock()  # state, counters, schema; taken before the ring's lock
        self._state_changed = threading.Condition(self._lock)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False

        self._state = "idle"
        self._history: collections.deque[StateChange] = collections.deque(maxlen=_HISTORY)
        self._history.append(StateChange("idle", pylsl.local_clock(), "created"))
        self._schema: StreamSchema | None = None
        self._ring: RingBuffer | None = None
        self._buffer: np.ndarray | None = None
        self._connections = 0
        self._uid = ""  # outlet instance currently connected
        self._refused_uids: set[str] = set()
        self._clock_offset: float | None = None
        self._clock_history: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=_HISTORY
        )
        self._n: dict[str, int] = dict.fromkeys(
            (
                "samples_received",
                "non_finite_samples",
                "non_finite_rejected",
                "samples_refused",
                "reconnects",
                "source_changes",
                "stalls",
                "lost",
                "schema_mismatches",
                "resolve_timeouts",
                "clock_offset_updates",
            ),
            0,
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
        self._set_state("resolving", f"looking for a stream with {self._query_text()}")
        if self._pull_in_caller:
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
        if self.state != "stopped":
            self._set_state("stopped", "stopped by stop()")

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
        if self._pull_in_caller:
            return self._started and not self._stop_event.is_set()
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop_event.is_set()

    @property
    def connected(self) -> bool:
        """True while the state is ``connected`` (data flowing)."""
        return self.state == "connected"

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def state_message(self) -> str:
        """The message of the latest state change (why the inlet is in its state)."""
        with self._lock:
            return self._history[-1].message

    @property
    def state_history(self) -> tuple[StateChange, ...]:
        """The latest state changes, oldest first (at most 1000)."""
        with self._lock:
            return tuple(self._history)

    @property
    def info(self) -> StreamSchema | None:
        """The first-seen stream schema (None before the first connection)."""
        with self._lock:
            return self._schema

    @property
    def description(self) -> dict[str, str]:
        """Text elements directly under the connected stream's ``desc`` (e.g. the player's
        ``session_bin_s``), as read when the connection opened; empty before."""
        with self._lock:
            return dict(self._description)

    @property
    def channel_labels(self) -> tuple[str, ...] | None:
        """The connected stream's channel labels (``desc/channels/channel/label``); None
        before a connection or when a channel has none."""
        with self._lock:
            return self._channel_labels

    @property
    def header_xml(self) -> str | None:
        """The connected stream's full header (``info.as_xml()``: desc, created_at,
        hostname), as read when the connection opened; None before."""
        with self._lock:
            return self._header_xml or None

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

    def wait_for_state(self, states: str | Sequence[str], timeout: float) -> bool:
        """Wait until the state is one of ``states``; False on timeout."""
        wanted = {states} if isinstance(states, str) else set(states)
        unknown = wanted.difference(STATES)
        if unknown:
            raise ValueError(f"unknown state(s) {sorted(unknown)}; states are {STATES}")
        with self._state_changed:
            return self._state_changed.wait_for(lambda: self._state in wanted, timeout)

    def wait_connected(self, timeout: float) -> bool:
        """Wait until data flow (state ``connected``); False on timeout, error or stop."""
        with self._state_changed:
            self._state_changed.wait_for(
                lambda: self._state in ("connected", "error", "stopped"), timeout
            )
            return self._state == "connected"

    # --- reading -----------------------------------------------------------------------------

    def wait_for_data(self, timeout: float) -> bool:
        """Block until samples were written since the last call, or ``timeout`` seconds.

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
        except _Stopping:
            pass
        except _Unsupported as exc:
            self._set_state("error", str(exc))
        except Exception as exc:
            logger.exception("LslInlet for %s failed", self._query_text())
            self._set_state(
                "error",
                f"acquisition thread failed: {exc!r}; stop() this inlet and create a new one",
            )

    def _acquire(self) -> None:
        while True:
            info = self._resolve()
            inlet = self._open(info)
            if inlet is None:  # refused or failed; the state says why
                self._sleep(_RETRY_S)
                continue
            try:
                self._pump(inlet)
            finally:
                inlet.close_stream()
                del inlet  # destroys the liblsl inlet (and its recovery threads)

    def _resolve(self) -> pylsl.StreamInfo:
        """Resolve until a stream matches the current query (raises _Stopping on stop)."""
        started = time.monotonic()
        while True:
            self._check_stop()
            query = self._current_query()
            infos = pylsl.resolve_bypred(query, 1, _SLICE_S)
            if infos:
                return self._choose(infos, query)
            self._note_resolve_timeout(query, time.monotonic() - started)

    def _choose(self, infos: list[pylsl.StreamInfo], query: str) -> pylsl.StreamInfo:
        """The stream to open among those matching ``query``: one with the first-seen schema
        when there is one (a warning names the choice when several match)."""
        schema = self._schema
        if schema is not None:
            infos.sort(key=lambda i: bool(schema.differences(StreamSchema.from_info(i))))
        if len(infos) > 1:
            logger.warning(
                "%d streams match %s; using %s; pass source_id to choose",
                len(infos),
                query,
                StreamSchema.from_info(infos[0]).describe(),
            )
        return infos[0]

    def _note_resolve_timeout(self, query: str, waited: float) -> None:
        """After ``resolve_timeout_s`` of searching, say so once per search: the state turns
        ``lost`` before the first connection, later a warning is logged."""
        if waited < self._resolve_timeout_s or self._resolve_timeout_noted == query:
            return
        self._resolve_timeout_noted = query
        message = (
            f"no LSL stream with {query} found within {self._resolve_timeout_s:g} s; "
            "still searching: check that the outlet runs and that name/type/source_id "
            f"match; {visible_summary()}"  # 'bci streams' lists them too
        )
        with self._lock:
            initial = self._schema is None
            if initial:
                self._n["resolve_timeouts"] += 1
        if initial:
            self._set_state("lost", message)
        else:
            logger.warning("LslInlet: %s", message)

    def _open(self, info: pylsl.StreamInfo) -> pylsl.StreamInlet | None:
        """Check the schema, open a pylsl inlet and fetch its full info; None if refused."""
        schema = StreamSchema.from_info(info)
        with self._lock:
            first = self._schema
        if first is None:
            self._adopt_schema(schema)
        else:
            differences = first.differences(schema)
            if differences:
                self._refuse(schema, differences)
                return None
            if schema.source_id != first.source_id:
                self._change_source(first, schema)
        if not schema.source_id:
            logger.warning(
                "stream %s has no source_id: liblsl cannot recover it after a crash; the "
                "inlet will re-resolve by %s",
                schema.describe(),
                self._query_text(),
            )
        with self._lock:
            ring = self._ring
        assert ring is not None
        max_buflen = max(5, math.ceil(ring.capacity / max(schema.nominal_srate, 1.0)))
        inlet = pylsl.StreamInlet(info, max_buflen=max_buflen, recover=True)
        # liblsl's buffer: max_buflen seconds, or hundreds of samples for irregular streams
        self._audit.transport_capacity = max_buflen * (round(schema.nominal_srate) or 100)
        try:
            # Fetch the full description now: a first pull on an inlet whose source has died
            # meanwhile would otherwise wait for it without timeout.
            full = self._blocking(inlet.info, "fetch the stream description")
            self._blocking(inlet.open_stream, "open the stream")
        except (LslTimeoutError, LostError) as exc:
            inlet.close_stream()
            self._mark_lost(f"found {schema.describe()} but could not connect: {exc}")
            return None
        with self._lock:
            self._lost_since = None
            if self._connections:
                self._n["reconnects"] += 1
            self._connections += 1
            self._uid = schema.uid
            self._description = desc_texts(full)
            self._channel_labels = labels_of(full)
            self._header_xml = full.as_xml()
            self._resolve_timeout_noted = ""
            again = self._connections > 1
        self._set_state(
            "connected", ("reconnected to " if again else "connected to ") + schema.describe()
        )
        return inlet

    def _change_source(self, old: StreamSchema, new: StreamSchema) -> None:
        """Another source with the same schema took the place of a lost one (no source_id
        was given): follow it from now on."""
        with self._lock:
            self._schema = new
            self._n["source_changes"] += 1
        logger.warning(
            "LslInlet: source changed: %s replaces %s (same channels, format and rate)",
            new.describe(),
            old.describe(),
        )

    def _adopt_schema(self, schema: StreamSchema) -> None:
        dtype = schema.dtype
        if dtype is None:
            raise _Unsupported(
                f"stream {schema.describe()} has channel format '{schema.channel_format}', "
                "which LslInlet does not support; use a numeric stream"
            )
        if self._capacity is not None:
            capacity = self._capacity
        elif schema.nominal_srate > 0:
            capacity = max(1, math.ceil(self._buffer_s * schema.nominal_srate))
        elif self._irregular_capacity is not None:
            capacity = int(self._irregular_capacity)
        else:
            raise _Unsupported(
                f"stream {schema.describe()} has an irregular rate, so buffer_s cannot size "
                "the ring; pass capacity=<samples>"
            )
        ring = RingBuffer(capacity, schema.n_channels, dtype)
        with self._lock:
            self._schema = schema
            self._ring = ring
            self._buffer = np.empty((self._max_chunk, schema.n_channels), dtype=dtype)
            if schema.nominal_srate > 0:
                self._chunk_stamps = LiveChunkStamps(schema.nominal_srate, self._gap_factor)
        logger.info(
            "LslInlet: schema of %s adopted; ring of %d samples", schema.describe(), capacity
        )

    def _refuse(self, schema: StreamSchema, differences: list[str]) -> None:
        with self._lock:
            new = schema.uid not in self._refused_uids
            if new:
                self._refused_uids.add(schema.uid)
                self._n["schema_mismatches"] += 1
        message = (
            f"stream {schema.describe()} does not match the first-seen schema "
            f"({'; '.join(differences)}); its data are refused. Restart the outlet with the "
            "original settings or create a new LslInlet"
        )
        if new or self.state != "schema-mismatch":
            self._set_state("schema-mismatch", message)

    def _pump(self, inlet: pylsl.StreamInlet) -> None:
        """Pull until stop, loss or refusal; returns so the caller closes the inlet."""
        self._begin_pump()
        while not self._stop_event.is_set() and self._pump_step(inlet, self._poll_s):
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
        if reset or (n and self.state == "stalled"):
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
            if self.state == "stalled":
                self._set_state(
                    "connected", f"samples again after {now - self._last_data:.2f} s without"
                )
            self._last_data = self._alive_since = now
        else:
            if now - self._alive_since >= self._lost_after_s:
                self._mark_lost(
                    f"no sample for {now - self._last_data:.1f} s "
                    f"(lost_after_s={self._lost_after_s:g})"
                )
                return False
            if now - self._last_data >= self._watchdog_s and self.state == "connected":
                with self._lock:
                    self._n["stalls"] += 1
                self._audit.restart_rate_window()  # a stall is not the source's rate
                self._set_state("stalled", f"no sample for {self._watchdog_s:g} s")
        if now >= self._next_clock:
            self._clock_known = self._update_clock(inlet) or self._clock_known
            refresh = self._clock_refresh_s if self._clock_known else _CLOCK_RETRY_S
            self._next_clock = now + refresh
        return True

    # --- caller mode ---------------------------------------------------------------------------

    def pull(self, timeout: float) -> int:
        """Caller mode: connect when needed, wait up to ``timeout`` seconds for samples and
        write what arrived into the ring; returns the number of samples written (read them
        with :meth:`read_new`). Never blocks much longer than ``timeout`` while searching;
        connecting to a found stream may take up to ``resolve_timeout_s``.

        Call from one thread only. Raises RuntimeError without ``pull_in_caller=True``,
        before :meth:`start` or after :meth:`stop`.
        """
        if not self._pull_in_caller:
            raise RuntimeError(
                "LslInlet.pull() needs pull_in_caller=True; this inlet's thread pulls: read "
                "with wait_for_data() and read_new()"
            )
        if not self.running:
            raise RuntimeError("LslInlet.pull() before start() or after stop(): start it first")
        if self.state == "error":
            return 0
        try:
            if self._inlet is None and not self._connect(timeout):
                return 0
            assert self._inlet is not None
            self._accepted = 0
            if not self._pump_step(self._inlet, timeout):
                self._close_caller_inlet()
                self._retry_at = time.monotonic() + _RETRY_S
            return self._accepted
        except _Unsupported as exc:
            self._close_caller_inlet()
            self._set_state("error", str(exc))
        except _Stopping:
            pass
        return 0

    def _connect(self, timeout: float) -> bool:
        """Caller mode: look (without blocking in liblsl) for the stream and open it."""
        now = time.monotonic()
        if now < self._retry_at:
            self._stop_event.wait(min(timeout, self._retry_at - now))
            return False
        info = self._resolved(timeout)
        if info is None:
            return False
        inlet = self._open(info)
        if inlet is None:
            self._retry_at = time.monotonic() + _RETRY_S
            return False
        self._inlet = inlet
        self._begin_pump()
        return True

    def _resolved(self, timeout: float) -> pylsl.StreamInfo | None:
        """A stream matching the current query found by liblsl's background resolver, or
        None after waiting up to ``timeout`` (the first-resolve timeout is counted here)."""
        query = self._current_query()
        if self._resolver is None or self._resolver[0] != query:
            # forget a vanished outlet after a second, so a lost stream is not reopened
            self._resolver = (query, pylsl.ContinuousResolver(pred=query, forget_after=1.0))
            self._resolve_started = time.monotonic()
        deadline = time.monotonic() + timeout
        while True:
            infos = self._resolver[1].results()
            if infos:
                return self._choose(infos, query)
            self._note_resolve_timeout(query, time.monotonic() - self._resolve_started)
            left = deadline - time.monotonic()
            if left <= 0 or self._stop_event.wait(min(left, 0.005)):
                return None

    def _close_caller_inlet(self) -> None:
        inlet, self._inlet = self._inlet, None
        self._resolve_started = time.monotonic()  # the next search starts now
        if inlet is not None:
            inlet.close_stream()
            del inlet  # destroys the liblsl inlet (and its recovery threads)

    def _pull(self, inlet: pylsl.StreamInlet, buffer: np.ndarray, wait_s: float) -> np.ndarray:
        """Pull what is buffered into ``buffer``; when nothing is, block up to ``wait_s``
        for one sample (liblsl wakes us as it arrives) and take what followed it,
        or, without ``wake_on_sample``, sleep the poll interval.
        Returns the timestamps of the samples now at the top of ``buffer``."""
        early = self._last_take + self._coalesce_s - time.monotonic()
        if early > 0:  # samples come fast: let a chunk gather
            self._stop_event.wait(early)
        available = inlet.samples_available()
        if available:
            self._audit.note_backlog(available)
            _, stamps = inlet.pull_chunk(timeout=0.0, max_samples=self._max_chunk, dest_obj=buffer)
            self._last_take = time.monotonic()
            return np.asarray(stamps, dtype=np.float64)
        if not self._wake_on_sample:
            self._stop_event.wait(wait_s)
            return np.empty(0, dtype=np.float64)
        sample, stamp = inlet.pull_sample(timeout=wait_s)
        if stamp is None:
            return np.empty(0, dtype=np.float64)
        buffer[0] = sample
        rest: list[float] = []
        available = inlet.samples_available()
        self._audit.note_backlog(available + 1)
        if self._max_chunk > 1 and available:
            _, rest = inlet.pull_chunk(
                timeout=0.0, max_samples=self._max_chunk - 1, dest_obj=buffer[1:]
            )
        self._last_take = time.monotonic()
        return np.array([stamp, *rest], dtype=np.float64)

    def _check_source(self, n_held: int, liblsl_reset: bool) -> str | None:
        """Resolve the source again after a liblsl recovery or a stall.

        Returns "same" (still the outlet instance we opened), "new" (liblsl reconnected to a
        restarted outlet with the first-seen schema), or None when the ``n_held`` samples are
        refused (schema changed, or no answer within resolve_timeout_s); the state then says
        why and the caller drops the pylsl inlet.
        """
        with self._lock:
            schema = self._schema
            current_uid = self._uid
        assert schema is not None
        query = self._current_query()
        deadline = time.monotonic() + self._resolve_timeout_s
        infos: list[pylsl.StreamInfo] = []
        while not infos and time.monotonic() < deadline and not self._stop_event.is_set():
            infos = pylsl.resolve_bypred(query, 1, _SLICE_S)
        if not infos:
            self._count_refused(n_held)
            self._mark_lost(
                f"no stream with {query} answered within {self._resolve_timeout_s:g} s to "
                f"check the source after {'a liblsl reconnect' if liblsl_reset else 'a stall'}; "
                f"{n_held} sample(s) refused"
            )
            return None
        candidates = [StreamSchema.from_info(info) for info in infos]
        if not liblsl_reset and any(c.uid == current_uid for c in candidates):
            return "same"  # a stall of the same outlet, not a restart
        restarted = [c for c in candidates if c.uid != current_uid] or candidates
        for candidate in restarted:
            differences = schema.differences(candidate)
            if differences:
                self._count_refused(n_held)
                self._refuse(candidate, differences)
                return None
        with self._lock:
            self._uid = restarted[0].uid
            self._n["reconnects"] += 1
            self._connections += 1
        # The state turns "connected" when samples flow (see _pump).
        logger.info("LslInlet: liblsl reconnected to %s; schema unchanged", restarted[0].describe())
        return "new"

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
                if not self._keep_non_finite:
                    self._n["non_finite_rejected"] += n_bad
                    data = data[finite]
                    timestamps = timestamps[finite]
            assert self._ring is not None
            self._ring.write(data, timestamps)
            self._accepted += len(timestamps)
        self._data_event.set()
        if n_bad:
            kept = "kept" if self._keep_non_finite else "rejected"
            logger.debug("LslInlet: %s %d sample(s) with NaN/Inf", kept, n_bad)

    # --- helpers -----------------------------------------------------------------------------

    def _blocking(self, call: Any, what: str) -> Any:
        """Call ``call(timeout=...)`` in stop-aware slices for up to resolve_timeout_s (the
        caller's loop: at most half a second, then the attempt is retried later); returns
        its result."""
        limit = self._resolve_timeout_s
        if self._pull_in_caller:
            limit = min(limit, 0.5)
        deadline = time.monotonic() + limit
        while True:
            self._check_stop()
            try:
                return call(timeout=_SLICE_S)
            except LslTimeoutError:
                if time.monotonic() >= deadline:
                    raise LslTimeoutError(f"could not {what} within {limit:g} s") from None

    def _update_clock(self, inlet: pylsl.StreamInlet) -> bool:
        """Read liblsl's clock offset estimate; False while there is none yet (the thread
        waits up to 10 ms for it, the caller's loop not at all)."""
        try:
            timeout = 0.0 if self._pull_in_caller else 0.01
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
        with self._lock:
            self._n["lost"] += 1
            if self._lost_since is None:
                self._lost_since = time.monotonic()
            self._audit.restart_rate_window()
        self._set_state("lost", f"{reason}; re-resolving {self._current_query()}")

    def _count_refused(self, n: int) -> None:
        with self._lock:
            self._n["samples_received"] += n
            self._n["samples_refused"] += n

    def _set_state(self, state: str, message: str) -> None:
        with self._state_changed:
            previous = self._state
            self._state = state
            self._history.append(StateChange(state, pylsl.local_clock(), message))
            self._state_changed.notify_all()
        level = logging.WARNING if state in ("stalled", "lost", "schema-mismatch") else logging.INFO
        if state == "error":
            level = logging.ERROR
        logger.log(level, "LslInlet %s -> %s: %s", previous, state, message)

    def _current_query(self) -> str:
        """XPath predicate: the given properties, plus the connected source's source_id, unless
        none was given and the stream has been lost for ``watchdog_s`` (then any source by the
        given properties, e.g. an acquisition program restarted with a new source_id)."""
        props = dict(self._props)
        schema = self._schema
        lost = self._lost_since
        follow = lost is not None and time.monotonic() - lost >= self._watchdog_s
        if schema is not None and schema.source_id and not (follow and "source_id" not in props):
            props["source_id"] = schema.source_id
        return " and ".join(f"{k}='{v}'" for k, v in props.items())

    def _query_text(self) -> str:
        return " and ".join(f"{k}='{v}'" for k, v in self._props.items())

    def _check_stop(self) -> None:
        if self._stop_event.is_set():
            raise _Stopping

    def _sleep(self, seconds: float) -> None:
        if self._stop_event.wait(seconds):
            raise _Stopping
