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
import time
from types import TracebackType
from typing import Any

from streams.frontend import InputKind
from streams.lsl_outlet import (
    KINEMATICS_SUFFIX,
    TARGETS_SUFFIX,
)
from streams.player_process import STREAMS, PlayConfig, PlayerShared, input_rate, run_player
from streams.session import Session
from streams.synthetic import SyntheticConfig

logger = logging.getLogger(__name__)

_CTX = multiprocessing.get_context("spawn")


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
        wait_for: tuple[str, ...] = STREAMS,
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
        unknown = [role for role in wait_for if role not in STREAMS]
        if unknown or not wait_for:
            raise ValueError(f"wait_for={tuple(wait_for)!r}: name one or more of {STREAMS}")
        if int(chunk_max) < 1:
            raise ValueError(f"chunk_max={chunk_max!r} must be >= 1")
        self.input_kind = input_kind
        self.input_rate_hz = input_rate(session, input_kind, input_rate_hz)
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
        self._pushed = _CTX.Array("q", len(STREAMS), lock=False)
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
        config = PlayConfig(
            name=self.name,
            speed=self.speed,
            loop=self.loop,
            source_id=self.source_id,
            wait_for_consumers=self.wait_for_consumers,
            wait_for=tuple(STREAMS.index(role) for role in self.wait_for),
            kinematics_units=self.kinematics_units
            if self.kinematics_units is None or isinstance(self.kinematics_units, str)
            else tuple(self.kinematics_units),
            chunk_max=self.chunk_max,
            input_kind=self.input_kind,
            input_rate_hz=self.input_rate_hz,
        )
        self._process = _CTX.Process(
            target=run_player,
            args=(
                self.source,
                config,
                PlayerShared(
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
