"""Replay a recorded (or simulated) session as live LSL streams, in a process of its own.

A :class:`SessionPlayer` opens up to three outlets (see :mod:`streams.lsl_outlet`):

================== ============== ==================================================
stream name        type           channels
================== ============== ==================================================
``<name>``         ``Neural``     one per neural channel (units ``counts``)
``<name>-kinematics`` ``Kinematics`` the session's kinematics, e.g. vx, vy (cm/s)
``<name>-targets`` ``Targets``    target x, y (cm), when the session has targets
================== ============== ==================================================

By default one neural sample per session bin, all three streams stamped alike. With
``input_kind`` the neural stream carries the population at a rig's native rate instead (see
:mod:`streams.native_rate`): ``"counts"`` at ``input_rate_hz`` (e.g. 1 kHz), ``"events"``
(an irregular int32 stream, one channel index per spike, ``desc/neural_channels`` giving the
population size) or ``"broadband"`` (e.g. 30 kHz voltage in µV, spike waveforms on noise). Their
sub-samples or events sum to the session's counts exactly, and the session's bin ``k`` ends at
``t0 + k * bin`` with ``t0`` a whole multiple of the bin width on ``local_clock()`` and the
bin's last sample stamped at its end, so :class:`streams.frontend.FrontEnd` recovers the
session's bins. Kinematics and targets stay one sample per bin, stamped at the bin end times.
The nominal rate is the rate at which samples really arrive (``speed`` x the native rate, 0
for events), and ``desc`` records the input kind, the replay speed and the session's bin width.

Pacing: bin ``k`` ends at ``t_start + (timestamps[k] - timestamps[0]) / speed`` on
``pylsl.local_clock()`` (plus one session duration per completed loop). Each bin is rendered
when it starts; the player pushes every sample that is due, stamped with its *scheduled* time,
then sleeps until the next push point (every bin end for per-bin streams, every millisecond
counted back from each bin end at native rates, each event). The schedule is fixed at the
start, so sleep overshoot never accumulates into drift: a late wake-up just pushes a larger
chunk. Gaps in the session's timestamps are replayed as gaps.

The player runs in a separate process (``multiprocessing`` spawn context) so that the GIL and
the consumer's work cannot disturb its timing. It dies with the process that started it, even
a SIGKILLed one (:func:`streams.lifetime.die_with_parent`). After the last bin (``loop=False``)
the outlets stay open until :meth:`SessionPlayer.stop`, so consumers can drain what was sent.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import pylsl

from streams.frontend import INPUT_KIND_KEY, INPUT_KINDS, NEURAL_CHANNELS_KEY, InputKind
from streams.lifetime import die_with_parent
from streams.lsl_outlet import (
    KINEMATICS_SUFFIX,
    KINEMATICS_TYPE,
    NEURAL_TYPE,
    TARGETS_SUFFIX,
    TARGETS_TYPE,
    open_outlet,
)
from streams.native_rate import Rendered, Renderer, integer_counts, samples_per_bin
from streams.session import Session
from streams.synthetic import SyntheticConfig, simulate_session

logger = logging.getLogger(__name__)

_CTX = multiprocessing.get_context("spawn")
_STREAMS = ("neural", "kinematics", "targets")
BROADBAND_RATE_HZ = 30_000.0
_EVENTS_PUSH_INTERVAL_S = 0.001  # events due within this are pushed together
_GRID_TOLERANCE = 1e-6  # in bins


class SessionPlayer:
    """Play a :class:`~streams.session.Session` over LSL at ``speed`` x real time.

    Args:
        session: the session to play, or a :class:`~streams.synthetic.SyntheticConfig` that
            the player process simulates (see :func:`simulate_stream`).
        name: neural stream name; the others are ``<name>-kinematics``, ``<name>-targets``.
        speed: replay speed factor (> 0): 2 plays twice as fast as recorded.
        loop: start over after the last bin (forever, until :meth:`stop`); timestamps keep
            increasing across loops.
        source_id: LSL source id of the neural stream (others get the stream suffix);
            default ``"bci-player-<name>"``.
        wait_for_consumers: if set, wait up to this many seconds, after the outlets open,
            for the ``wait_for`` outlets to have a consumer before the first bin, so a
            consumer that connects right after :meth:`start` misses nothing. None: play at
            once.
        wait_for: which outlets ``wait_for_consumers`` waits on, by role: ``"neural"``,
            ``"kinematics"``, ``"targets"`` (default: all three; absent streams are skipped).
        kinematics_units: unit of each kinematics channel (one string for all); default:
            the session's ``kinematics_units`` (simulated sessions: ``cm/s``), and no unit in
            the stream's desc when the session has none.
        chunk_max: most bins rendered at once when the player catches up.
        input_kind: how the neural stream carries the population: ``"counts"`` (default),
            ``"events"`` or ``"broadband"`` (see the module docstring).
        input_rate_hz: native sample rate (before ``speed``): counts default to one sample
            per bin (the per-bin stream), broadband to 30 kHz; not for events.

    Lifecycle: :meth:`start` (returns once the outlets are discoverable), :meth:`wait`,
    :meth:`stop`; also a context manager. ``running`` is True while the process is alive.
    """

    def __init__(
        self,
        session: Session | SyntheticConfig,
        name: str = "bci-sim",
        speed: float = 1.0,
        loop: bool = False,
        *,
        source_id: str | None = None,
        wait_for_consumers: float | None = None,
        wait_for: tuple[str, ...] = _STREAMS,
        kinematics_units: str | tuple[str, ...] | None = None,
        chunk_max: int = 256,
        input_kind: InputKind = "counts",
        input_rate_hz: float | None = None,
    ) -> None:
        if not isinstance(session, (Session, SyntheticConfig)):
            raise TypeError(
                f"SessionPlayer plays a Session or a SyntheticConfig, got "
                f"{type(session).__name__}; load a file with streams.session.load_session"
            )
        speed = float(speed)
        if not math.isfinite(speed) or speed <= 0:
            raise ValueError(f"speed={speed!r} must be a finite factor > 0 (1 = real time)")
        if not name:
            raise ValueError("stream name must not be empty")
        if wait_for_consumers is not None and not wait_for_consumers >= 0:
            raise ValueError(f"wait_for_consumers={wait_for_consumers!r} must be >= 0 or None")
        unknown = [role for role in wait_for if role not in _STREAMS]
        if unknown or not wait_for:
            raise ValueError(f"wait_for={tuple(wait_for)!r}: name one or more of {_STREAMS}")
        if int(chunk_max) < 1:
            raise ValueError(f"chunk_max={chunk_max!r} must be >= 1")
        self.input_kind = input_kind
        self.input_rate_hz = _input_rate(session, input_kind, input_rate_hz)
        self.source = session
        self.name = name
        self.speed = speed
        self.loop = bool(loop)
        self.source_id = source_id or f"bci-player-{name}"
        self.wait_for_consumers = wait_for_consumers
        self.wait_for = tuple(wait_for)
        if kinematics_units is None:
            kinematics_units = session.kinematics_units if isinstance(session, Session) else "cm/s"
        self.kinematics_units = kinematics_units
        self.chunk_max = int(chunk_max)

        if isinstance(session, Session):
            has = (True, session.kinematics is not None, session.targets is not None)
            n_kinematics = 0 if session.kinematics is None else session.kinematics.shape[1]
        else:
            has, n_kinematics = (True, True, True), 2  # simulated: vx, vy and targets
        if kinematics_units is not None and (
            not isinstance(kinematics_units, str) and len(kinematics_units) != n_kinematics
        ):
            raise ValueError(
                f"kinematics_units={kinematics_units!r} has {len(kinematics_units)} entries for "
                f"{n_kinematics} kinematics channels; give one unit each or one string for all"
            )
        self.n_bins = session.n_bins
        suffixes = ("", KINEMATICS_SUFFIX, TARGETS_SUFFIX)
        self.stream_names: tuple[str, ...] = tuple(
            f"{name}{suffix}" for suffix, present in zip(suffixes, has, strict=True) if present
        )
        self._present = has

        self._ready = _CTX.Event()
        self._stop = _CTX.Event()
        self._finished = _CTX.Event()
        self._playing = _CTX.Event()
        self._pushed = _CTX.Array("q", len(_STREAMS), lock=False)
        self._max_lag = _CTX.Value("d", 0.0, lock=False)
        self._loops = _CTX.Value("q", 0, lock=False)
        self._start_time = _CTX.Value("d", math.nan, lock=False)
        self._errors: multiprocessing.connection.Connection | None = None
        self._process: Any = None
        self._error: str | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> SessionPlayer:
        """Start the player process; return once its outlets exist (discoverable).

        Raises RuntimeError with the child's traceback if it fails to come up in ``timeout``.
        """
        if self._process is not None:
            raise RuntimeError(
                f"player {self.name!r} was already started; create a new SessionPlayer to "
                "play again"
            )
        self._errors, child_end = _CTX.Pipe(duplex=False)
        config = _PlayConfig(
            name=self.name,
            speed=self.speed,
            loop=self.loop,
            source_id=self.source_id,
            wait_for_consumers=self.wait_for_consumers,
            wait_for=tuple(_STREAMS.index(role) for role in self.wait_for),
            kinematics_units=self.kinematics_units
            if self.kinematics_units is None or isinstance(self.kinematics_units, str)
            else tuple(self.kinematics_units),
            chunk_max=self.chunk_max,
            input_kind=self.input_kind,
            input_rate_hz=self.input_rate_hz,
        )
        self._process = _CTX.Process(
            target=_run_player,
            args=(
                self.source,
                config,
                _Shared(
                    ready=self._ready,
                    stop=self._stop,
                    finished=self._finished,
                    playing=self._playing,
                    pushed=self._pushed,
                    max_lag=self._max_lag,
                    loops=self._loops,
                    start_time=self._start_time,
                ),
                child_end,
                os.getpid(),
            ),
            name=f"player-{self.name}",
            daemon=True,
        )
        self._process.start()
        child_end.close()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if not self._process.is_alive() or time.monotonic() > deadline:
                error = self._child_error()
                self._kill()
                raise RuntimeError(
                    f"player {self.name!r} did not open its outlets within {timeout} s"
                    + (f":\n{error}" if error else "")
                )
        logger.info(
            "player %r: streams %s open, %d bins at %gx",
            self.name,
            self.stream_names,
            self.n_bins,
            self.speed,
        )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the outlets and end the process. Idempotent.

        Raises RuntimeError (with the child's traceback) if the player process failed.
        """
        if self._process is None:
            return
        if self._process.is_alive():
            self._stop.set()
            self._process.join(timeout)
            if self._process.is_alive():
                logger.warning("player %r did not stop within %g s; killing it", self.name, timeout)
                self._kill()
        error = self._child_error()
        if error:
            raise RuntimeError(f"player {self.name!r} failed:\n{error}")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every bin was pushed (``loop=False``); False on timeout or failure."""
        if self._process is None:
            raise RuntimeError("player not started; call start() first")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished.wait(0.05):
            if not self._process.is_alive():
                return self._finished.is_set()
            if deadline is not None and time.monotonic() > deadline:
                return False
        return True

    def __enter__(self) -> SessionPlayer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except RuntimeError:
            if exc_type is None:
                raise
            logger.exception("player %r failed while another error propagated", self.name)

    # --- state ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the player process is alive (outlets open)."""
        return self._process is not None and self._process.is_alive()

    @property
    def playing(self) -> bool:
        """True once the first bin is due (after any wait for consumers)."""
        return self._playing.is_set()

    @property
    def finished(self) -> bool:
        """True once every bin was pushed (never with ``loop=True``)."""
        return self._finished.is_set()

    @property
    def start_time(self) -> float:
        """``local_clock()`` time at which the first bin was due (NaN before playing)."""
        return float(self._start_time.value)

    def counters(self) -> dict[str, Any]:
        """Samples pushed per stream, completed loops and the largest push lag (seconds).

        The lag is how long after its scheduled time a bin was pushed (the player's own
        timing error; the timestamps are the scheduled times regardless).
        """
        pushed = {
            stream_name: int(self._pushed[i])
            for i, stream_name in enumerate(self._all_names())
            if self._present[i]
        }
        return {
            "pushed": pushed,
            "loops": int(self._loops.value),
            "max_lag_s": float(self._max_lag.value),
        }

    def _all_names(self) -> tuple[str, str, str]:
        return (self.name, f"{self.name}{KINEMATICS_SUFFIX}", f"{self.name}{TARGETS_SUFFIX}")

    # --- internals ------------------------------------------------------------------------

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(5.0)

    def _child_error(self) -> str:
        if self._error is None and self._errors is not None:
            try:
                if self._errors.poll(0.2):
                    self._error = str(self._errors.recv())
            except (EOFError, OSError):
                pass
        return self._error or ""


def simulate_stream(
    config: SyntheticConfig | None = None,
    name: str = "bci-sim",
    speed: float = 1.0,
    loop: bool = True,
    **kwargs: Any,
) -> SessionPlayer:
    """A (not yet started) player that streams the synthetic population of ``config``.

    The player process simulates the session (:func:`streams.synthetic.simulate_session`)
    and plays it like a recorded one, looping by default so the stream runs until stopped.
    ``kwargs`` go to :class:`SessionPlayer`.
    """
    return SessionPlayer(config or SyntheticConfig(), name=name, speed=speed, loop=loop, **kwargs)


# --- child process ------------------------------------------------------------------------


@dataclass(frozen=True)
class _PlayConfig:
    """Player settings for the child process (``wait_for`` as stream indices)."""

    name: str
    speed: float
    loop: bool
    source_id: str
    wait_for_consumers: float | None
    wait_for: tuple[int, ...]
    kinematics_units: str | tuple[str, ...] | None
    chunk_max: int
    input_kind: InputKind
    input_rate_hz: float  # native rate before speed; 0 for events


@dataclass(frozen=True)
class _Shared:
    """Events and shared-memory values between the player handle and its process."""

    ready: Any
    stop: Any
    finished: Any
    playing: Any
    pushed: Any  # counts per stream, in _STREAMS order
    max_lag: Any
    loops: Any
    start_time: Any


def _run_player(
    source: Session | SyntheticConfig,
    config: _PlayConfig,
    shared: _Shared,
    errors: multiprocessing.connection.Connection,
    parent_pid: int,
) -> None:
    die_with_parent(parent_pid)  # even a SIGKILLed parent leaves no player streaming
    # The handle in the parent decides when to stop; Ctrl-C in a terminal reaches the whole
    # process group, so ignore it here and let the parent stop the player cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _play(source, config, shared)
    except BaseException:
        errors.send(traceback.format_exc())
        raise


def _open_outlets(session: Session, config: _PlayConfig) -> list[tuple[int, Any, np.ndarray]]:
    extra = {
        "replay_speed": f"{config.speed:g}",
        "session_bin_s": f"{session.bin_s:g}",
        "session_bins": str(session.n_bins),
    }
    labels = session.channel_labels or tuple(f"ch{c:03d}" for c in range(session.n_channels))
    neural_extra = {**extra, INPUT_KIND_KEY: config.input_kind}
    units, channel_format = "counts", "float32"
    if config.input_kind == "events":
        labels, units, channel_format = ("channel",), "index", "int32"
        neural_extra[NEURAL_CHANNELS_KEY] = str(session.n_channels)
    elif config.input_kind == "broadband":
        units = "uV"
    outlets = [
        (
            0,
            open_outlet(
                config.name,
                NEURAL_TYPE,
                labels,
                units,
                config.input_rate_hz * config.speed,
                channel_format,
                source_id=config.source_id,
                model="session player",
                extra=neural_extra,
            ),
            session.neural,
        )
    ]
    srate = config.speed / session.bin_s
    if session.kinematics is not None:
        assert session.kinematics_labels is not None
        outlets.append(
            (
                1,
                open_outlet(
                    f"{config.name}{KINEMATICS_SUFFIX}",
                    KINEMATICS_TYPE,
                    session.kinematics_labels,
                    config.kinematics_units,
                    srate,
                    source_id=f"{config.source_id}{KINEMATICS_SUFFIX}",
                    model="session player",
                    extra=extra,
                ),
                session.kinematics,
            )
        )
    if session.targets is not None:
        outlets.append(
            (
                2,
                open_outlet(
                    f"{config.name}{TARGETS_SUFFIX}",
                    TARGETS_TYPE,
                    ("x", "y"),
                    "cm",
                    srate,
                    source_id=f"{config.source_id}{TARGETS_SUFFIX}",
                    model="session player",
                    extra=extra,
                ),
                session.targets,
            )
        )
    return outlets


class _Pending:
    """Rendered samples of one outlet, pushed once their push point is due."""

    def __init__(self, index: int, outlet: Any) -> None:
        self.index = index
        self.outlet = outlet
        self._data: np.ndarray | None = None
        self._stamps = np.zeros(0)
        self._push = np.zeros(0, dtype=bool)

    def add(self, rendered: Rendered) -> None:
        if self._data is None or self._stamps.shape[0] == 0:
            self._data, self._stamps, self._push = rendered
            return
        self._data = np.concatenate([self._data, rendered.data])
        self._stamps = np.concatenate([self._stamps, rendered.stamps])
        self._push = np.concatenate([self._push, rendered.push])

    @property
    def empty(self) -> bool:
        return self._stamps.shape[0] == 0

    def next_push(self) -> float:
        """Stamp of the next push point (inf when nothing is pending)."""
        points = np.flatnonzero(self._push)
        return float(self._stamps[points[0]]) if points.size else math.inf

    def push_due(self, now: float, shared: _Shared) -> None:
        """Push every sample up to the last due push point; record the push lag."""
        due = np.flatnonzero(self._push & (self._stamps <= now))
        if due.size == 0:
            return
        stop = int(due[-1]) + 1
        assert self._data is not None
        self.outlet.push_chunk(self._data[:stop], self._stamps[:stop].tolist())
        shared.pushed[self.index] += stop
        lag = now - float(self._stamps[due[0]])
        if lag > shared.max_lag.value:
            shared.max_lag.value = lag
        self._data = self._data[stop:]
        self._stamps = self._stamps[stop:]
        self._push = self._push[stop:]


def _play(source: Session | SyntheticConfig, config: _PlayConfig, shared: _Shared) -> None:
    session = simulate_session(source) if isinstance(source, SyntheticConfig) else source
    outlets = _open_outlets(session, config)
    shared.ready.set()

    if config.wait_for_consumers is not None:
        deadline = time.monotonic() + config.wait_for_consumers
        awaited = [outlet for index, outlet, _ in outlets if index in config.wait_for]
        while not all(outlet.have_consumers() for outlet in awaited):
            if shared.stop.is_set():
                return
            if time.monotonic() > deadline:
                logger.warning(
                    "player %r: an outlet still has no consumer after %g s; playing anyway",
                    config.name,
                    config.wait_for_consumers,
                )
                break
            time.sleep(0.01)

    bin_clock = session.bin_s / config.speed
    renderer = Renderer(
        config.input_kind,
        bin_clock,
        session.n_channels,
        config.input_rate_hz * config.speed,
        seed=source.seed if isinstance(source, SyntheticConfig) else 0,
    )
    coalesce_s = _EVENTS_PUSH_INTERVAL_S if config.input_kind == "events" else 0.0
    offsets = (session.timestamps - session.timestamps[0]) / config.speed
    period = session.duration_s / config.speed
    n = offsets.shape[0]
    clock = pylsl.local_clock
    now = clock()
    # Bin 0 ends at `base`: at once for a per-bin stream; at native rates on the bin grid
    # (a whole multiple of the bin width), one whole bin ahead.
    base = now if renderer.per_bin else (math.floor(now / bin_clock) + 2) * bin_clock
    shared.start_time.value = base
    shared.playing.set()
    pending = [_Pending(index, outlet) for index, outlet, _ in outlets]
    sources = [data for _, _, data in outlets]
    k = 0  # next bin to render
    rendered_all = False
    while not shared.stop.is_set():
        now = clock()
        if not rendered_all:  # render the bins that have started
            started = int(np.searchsorted(offsets, now - base + bin_clock, side="right"))
            stop_k = min(started, k + config.chunk_max)
            if stop_k > k:
                ends = base + offsets[k:stop_k]
                pending[0].add(renderer.render(sources[0][k:stop_k], ends))
                for queue, data in zip(pending[1:], sources[1:], strict=True):
                    queue.add(Rendered(data[k:stop_k], ends, np.ones(stop_k - k, dtype=bool)))
                k = stop_k
                if k == n:
                    if config.loop:
                        k, base = 0, base + period
                        shared.loops.value += 1
                    else:
                        rendered_all = True
        for queue in pending:
            queue.push_due(now, shared)
        if rendered_all and all(queue.empty for queue in pending):
            shared.finished.set()
            break
        wake = min(queue.next_push() for queue in pending)
        if not rendered_all:
            wake = min(wake, base + offsets[k] - bin_clock)
        wait_s = max(wake, now + coalesce_s) - clock()
        if wait_s > 0:
            time.sleep(min(wait_s, 0.05))  # wake at least every 50 ms to honour stop
    shared.stop.wait()  # keep the outlets open until stopped, so consumers can drain
    del outlets


def _input_rate(source: Session | SyntheticConfig, kind: InputKind, rate_hz: float | None) -> float:
    """The native rate to publish at (0 for events); ValueError naming the fix."""
    if kind not in INPUT_KINDS:
        raise ValueError(f"input_kind={kind!r} is unknown; use one of {', '.join(INPUT_KINDS)}")
    if kind == "events":
        if rate_hz is not None:
            raise ValueError("input_rate_hz does not apply to events (an irregular stream)")
        rate = 0.0
    else:
        default = BROADBAND_RATE_HZ if kind == "broadband" else 1.0 / source.bin_s
        rate = default if rate_hz is None else float(rate_hz)
        per_bin = samples_per_bin(rate, source.bin_s)
        if kind == "counts" and per_bin == 1:
            return rate  # the per-bin stream: any values, any timestamps
    if isinstance(source, Session):
        integer_counts(source.neural)
        steps = (source.timestamps - source.timestamps[0]) / source.bin_s
        if np.abs(steps - np.round(steps)).max() > _GRID_TOLERANCE:
            raise ValueError(
                "the session's timestamps are not whole bins apart, so its bins cannot be "
                "placed on a bin grid; play it per bin (input_kind='counts', no input_rate_hz)"
            )
    return rate
