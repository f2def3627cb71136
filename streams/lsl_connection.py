"""The connection half of :class:`streams.lsl_inlet.LslInlet`: finding its stream, vetting
the schema and source on every (re)connect, opening pylsl inlets, and the states this drives
(:mod:`streams.lsl_status`).

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

liblsl caveat handled here: the first ``pull_chunk`` on a fresh pylsl inlet waits, without
timeout, for the stream's full description; if the source dies before that, even
``pull_chunk(timeout=0.0)`` blocks until it comes back. The inlet therefore fetches ``info()``
(with a timeout) right after opening, before the first pull.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import pylsl

from streams.channels import labels_of
from streams.discovery import visible_summary
from streams.inlet_settings import InletSettings
from streams.lsl_schema import StreamSchema, desc_texts
from streams.lsl_status import HISTORY, InletState, StateChange

try:
    from pylsl.util import LostError
    from pylsl.util import TimeoutError as LslTimeoutError
except ImportError:  # pragma: no cover - pylsl < 1.17 kept its exceptions in pylsl.pylsl
    from pylsl.pylsl import LostError  # type: ignore[no-redef]
    from pylsl.pylsl import TimeoutError as LslTimeoutError  # type: ignore[no-redef]

__all__ = ["RETRY_S", "LslConnection", "StopRequested", "UnsupportedStream"]

logger = logging.getLogger("streams.lsl_inlet")  # the inlet's messages, under one name

_SLICE_S = 0.25  # longest single blocking liblsl call in the thread (bounds stop())
RETRY_S = 0.5  # pause between resolve attempts after a refused or failed connection


class StopRequested(Exception):
    """Raised inside the acquisition thread or loop when stop() was requested."""


class UnsupportedStream(Exception):
    """The stream cannot be handled by the inlet; the message says what to do."""


class LslConnection(ABC):
    """The stream an inlet is connected to, its state and counters, under one lock.

    The subclass sizes its buffers for the first-seen schema (:meth:`_adopt_schema`) and
    says how much liblsl should buffer (:meth:`_liblsl_buflen`).
    """

    def __init__(self, settings: InletSettings) -> None:
        self._settings = settings
        self._props = settings.props
        self._lock = threading.Lock()  # state, counters, schema; taken before the ring's lock
        self._state_changed = threading.Condition(self._lock)
        self._stop_event = threading.Event()
        self._state = InletState.IDLE
        self._history: collections.deque[StateChange] = collections.deque(maxlen=HISTORY)
        self._history.append(StateChange(InletState.IDLE, pylsl.local_clock(), "created"))
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
        self._schema: StreamSchema | None = None
        self._connections = 0
        self._uid = ""  # outlet instance currently connected
        self._refused_uids: set[str] = set()
        self._lost_since: float | None = None  # monotonic time the stream was last lost
        self._resolve_timeout_noted = ""  # query whose resolve timeout was reported
        self._description: dict[str, str] = {}
        self._channel_labels: tuple[str, ...] | None = None
        self._header_xml = ""  # the connected stream's full info.as_xml()
        # caller mode: the open pylsl inlet, the resolver looking for one, and the earliest
        # time of the next connection attempt after a refused or failed one
        self._inlet: pylsl.StreamInlet | None = None
        self._resolver: tuple[str, pylsl.ContinuousResolver] | None = None
        self._resolve_started = 0.0
        self._retry_at = 0.0

    @abstractmethod
    def _adopt_schema(self, schema: StreamSchema) -> None:
        """Take ``schema`` as the first-seen one and size the buffers for it; raise
        :class:`UnsupportedStream` for a stream the inlet cannot handle."""

    @abstractmethod
    def _liblsl_buflen(self, schema: StreamSchema) -> int:
        """Seconds of data liblsl is to buffer for the stream being opened."""

    # --- status ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the state is ``connected`` (data flowing)."""
        return self.state == InletState.CONNECTED

    @property
    def state(self) -> InletState:
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

    def wait_for_state(self, states: str | Sequence[str], timeout: float) -> bool:
        """Wait until the state is one of ``states`` (:class:`InletState` or their values);
        False on timeout."""
        named = [states] if isinstance(states, str) else list(states)
        unknown = sorted(set(named).difference(InletState))
        if unknown:
            known = ", ".join(InletState)
            raise ValueError(f"unknown state(s) {unknown}; states are {known}")
        wanted = {InletState(state) for state in named}
        with self._state_changed:
            return self._state_changed.wait_for(lambda: self._state in wanted, timeout)

    def wait_connected(self, timeout: float) -> bool:
        """Wait until data flow (state ``connected``); False on timeout, error or stop."""
        with self._state_changed:
            ended = (InletState.CONNECTED, InletState.ERROR, InletState.STOPPED)
            self._state_changed.wait_for(lambda: self._state in ended, timeout)
            return self._state == InletState.CONNECTED

    # --- finding the stream ------------------------------------------------------------------

    def _resolve(self) -> pylsl.StreamInfo:
        """Resolve until a stream matches the current query (raises StopRequested on stop)."""
        started = time.monotonic()
        while True:
            self._check_stop()
            query = self._current_query()
            infos = pylsl.resolve_bypred(query, 1, _SLICE_S)
            if infos:
                return self._choose(infos, query)
            self._note_resolve_timeout(query, time.monotonic() - started)

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
        if waited < self._settings.resolve_timeout_s or self._resolve_timeout_noted == query:
            return
        self._resolve_timeout_noted = query
        message = (
            f"no LSL stream with {query} found within {self._settings.resolve_timeout_s:g} s; "
            "still searching: check that the outlet runs and that name/type/source_id "
            f"match; {visible_summary()}"  # 'bci streams' lists them too
        )
        with self._lock:
            initial = self._schema is None
            if initial:
                self._n["resolve_timeouts"] += 1
        if initial:
            self._set_state(InletState.LOST, message)
        else:
            logger.warning("LslInlet: %s", message)

    def _current_query(self) -> str:
        """XPath predicate: the given properties, plus the connected source's source_id, unless
        none was given and the stream has been lost for ``watchdog_s`` (then any source by the
        given properties, e.g. an acquisition program restarted with a new source_id)."""
        props = dict(self._props)
        schema = self._schema
        lost = self._lost_since
        follow = lost is not None and time.monotonic() - lost >= self._settings.watchdog_s
        if schema is not None and schema.source_id and not (follow and "source_id" not in props):
            props["source_id"] = schema.source_id
        return " and ".join(f"{k}='{v}'" for k, v in props.items())

    def _query_text(self) -> str:
        return " and ".join(f"{k}='{v}'" for k, v in self._props.items())

    # --- opening and vetting -----------------------------------------------------------------

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
        # as_numpy: a sample comes back as one array, not as a list of Python floats that
        # the ring's row is then filled from, one by one
        inlet = pylsl.StreamInlet(
            info, max_buflen=self._liblsl_buflen(schema), recover=True, as_numpy=True
        )
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
            InletState.CONNECTED,
            ("reconnected to " if again else "connected to ") + schema.describe(),
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
        if new or self.state != InletState.SCHEMA_MISMATCH:
            self._set_state(InletState.SCHEMA_MISMATCH, message)

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
        deadline = time.monotonic() + self._settings.resolve_timeout_s
        infos: list[pylsl.StreamInfo] = []
        while not infos and time.monotonic() < deadline and not self._stop_event.is_set():
            infos = pylsl.resolve_bypred(query, 1, _SLICE_S)
        if not infos:
            self._count_refused(n_held)
            self._mark_lost(
                f"no stream with {query} answered within {self._settings.resolve_timeout_s:g} s to "
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

    def _connect(self, timeout: float) -> bool:
        """Caller mode: look (without blocking in liblsl) for the stream and open it as
        ``_inlet``; False when none is open yet."""
        now = time.monotonic()
        if now < self._retry_at:
            self._stop_event.wait(min(timeout, self._retry_at - now))
            return False
        info = self._resolved(timeout)
        if info is None:
            return False
        inlet = self._open(info)
        if inlet is None:
            self._retry_at = time.monotonic() + RETRY_S
            return False
        self._inlet = inlet
        return True

    def _close_caller_inlet(self) -> None:
        inlet, self._inlet = self._inlet, None
        self._resolve_started = time.monotonic()  # the next search starts now
        if inlet is not None:
            inlet.close_stream()
            del inlet  # destroys the liblsl inlet (and its recovery threads)

    # --- helpers -----------------------------------------------------------------------------

    def _blocking(self, call: Any, what: str) -> Any:
        """Call ``call(timeout=...)`` in stop-aware slices for up to resolve_timeout_s (the
        caller's loop: at most half a second, then the attempt is retried later); returns
        its result."""
        limit = self._settings.resolve_timeout_s
        if self._settings.pull_in_caller:
            limit = min(limit, 0.5)
        deadline = time.monotonic() + limit
        while True:
            self._check_stop()
            try:
                return call(timeout=_SLICE_S)
            except LslTimeoutError:
                if time.monotonic() >= deadline:
                    raise LslTimeoutError(f"could not {what} within {limit:g} s") from None

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            self._n["lost"] += 1
            if self._lost_since is None:
                self._lost_since = time.monotonic()
        self._set_state(InletState.LOST, f"{reason}; re-resolving {self._current_query()}")

    def _count_refused(self, n: int) -> None:
        with self._lock:
            self._n["samples_received"] += n
            self._n["samples_refused"] += n

    def _set_state(self, state: InletState, message: str) -> None:
        with self._state_changed:
            previous = self._state
            self._state = state
            self._history.append(StateChange(state, pylsl.local_clock(), message))
            self._state_changed.notify_all()
        level = logging.ERROR if state == InletState.ERROR else logging.INFO
        if state in (InletState.STALLED, InletState.LOST, InletState.SCHEMA_MISMATCH):
            level = logging.WARNING
        logger.log(level, "LslInlet %s -> %s: %s", previous, state, message)

    def _check_stop(self) -> None:
        if self._stop_event.is_set():
            raise StopRequested

    def _sleep(self, seconds: float) -> None:
        if self._stop_event.wait(seconds):
            raise StopRequested
