"""The player's child process: opens the outlets and pushes a session's samples when the local
clock reaches their stamps (see :class:`streams.player.SessionPlayer` for the contract).
Runs under ``multiprocessing`` spawn and dies with its parent."""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import signal
import time
import traceback
from dataclasses import dataclass
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
    wait_for_consumers,
)
from streams.native_rate import Rendered, Renderer, integer_counts, samples_per_bin
from streams.session import Session
from streams.synthetic import SyntheticConfig, simulate_session

logger = logging.getLogger(__name__)

STREAMS = ("neural", "kinematics", "targets")
BROADBAND_RATE_HZ = 30_000.0
_EVENTS_PUSH_INTERVAL_S = 0.001  # events due within this are pushed together
_GRID_TOLERANCE = 1e-6  # in bins


@dataclass(frozen=True)
class PlayConfig:
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
class PlayerShared:
    """Events and shared-memory values between the player handle and its process."""

    ready: Any
    stop: Any
    finished: Any
    playing: Any
    pushed: Any  # counts per stream, in STREAMS order
    max_lag: Any
    loops: Any
    start_time: Any


def run_player(
    source: Session | SyntheticConfig,
    config: PlayConfig,
    shared: PlayerShared,
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


def _open_outlets(session: Session, config: PlayConfig) -> list[tuple[int, Any, np.ndarray]]:
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
                component="session player",
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
                    component="session player",
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
                    component="session player",
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

    def push_due(self, now: float, shared: PlayerShared) -> None:
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


def _play(source: Session | SyntheticConfig, config: PlayConfig, shared: PlayerShared) -> None:
    session = simulate_session(source) if isinstance(source, SyntheticConfig) else source
    outlets = _open_outlets(session, config)
    shared.ready.set()

    if config.wait_for_consumers is not None:
        awaited = [outlet for index, outlet, _ in outlets if index in config.wait_for]
        if not wait_for_consumers(awaited, config.wait_for_consumers, shared.stop, poll_s=0.01):
            if shared.stop.is_set():
                return
            logger.warning(
                "player %r: an outlet still has no consumer after %g s; playing anyway",
                config.name,
                config.wait_for_consumers,
            )

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


def input_rate(source: Session | SyntheticConfig, kind: InputKind, rate_hz: float | None) -> float:
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
