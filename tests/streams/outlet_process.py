"""Run a pylsl outlet in a separate process, for stream tests where timing matters.

Import it from test modules in ``tests/streams`` as ``from outlet_process import ...`` (pytest
puts the test directory on ``sys.path``; spawned children inherit it).

API
---
``OutletSpec(name, source_id="", type="EEG", n_channels=8, rate=500.0, ...)``
    Frozen description of the outlet. Set at most one of ``n_samples`` and ``duration_s``
    (neither: push until stopped). Fields:

    * ``name``, ``type``, ``source_id``: the LSL stream identity (use a fresh uuid per test).
    * ``n_channels`` (>= 1), ``rate`` (Hz, > 0), ``channel_format`` ("float32" or
      "double64").
    * ``start_count``: counter value of the first sample. Sample ``k`` (0-based, counted in
      this process) is :func:`expected_sample` ``(start_count + k, n_channels)``: channel 0 is
      the counter, channel ``c >= 1`` is ``counter + 1000 * c``.
    * ``nan_at``: sample indices ``k`` whose last channel is pushed as ``bad_value`` (NaN by
      default); ``inf_at``: the same with ``+inf``. With one channel, channel 0 is replaced.
    * ``repeat_at``: sample indices pushed twice in a row (same values, same timestamp), as
      a duplicated sample; the outlet then pushes ``total + len(repeat_at)`` samples.
    * ``backwards_at``: sample indices at which the outlet clock steps back by
      ``backwards_step_s`` seconds (as after a clock reset); later timestamps continue from the
      stepped-back clock, so each index gives exactly one backwards step and no gap.
    * ``pause_at``: sample indices before which the outlet stops pushing for ``pause_s``
      seconds (a stall); the held-back samples then go out at once with their original
      timestamps (late, not missing).
    * ``wait_for_consumer_s``: if set, wait up to this long for an inlet before the first push
      (the stream clock starts at the first push), so no sample is pushed into the void.
    * ``chunk_max``: most samples pushed in one ``push_chunk`` call.

    Timestamps are explicit: sample ``k`` is stamped ``t0 + k / rate - steps`` where ``t0`` is
    ``pylsl.local_clock()`` at the first push, and it is pushed once that time has come
    (real-time pacing). After the last sample the outlet stays open until stopped or killed.

``OutletProcess(spec)``: the process handle (``multiprocessing`` "spawn" context).
    * ``start(timeout=15.0)``: start and wait until the outlet exists; raises RuntimeError
      with the child's traceback if it failed.
    * ``stop(timeout=5.0)``: ask the outlet to close cleanly and join (killed if it does not
      exit in time). Idempotent.
    * ``kill()``: SIGKILL, as in a crash: the outlet vanishes without closing. Joins.
    * ``wait_pushed(n, timeout) -> bool``, ``wait_finished(timeout) -> bool``.
    * ``pushed`` (samples handed to liblsl, repeats included), ``first_timestamp``,
      ``last_timestamp`` (``nan`` before the first push), ``finished``, ``alive``, ``pid``,
      ``exitcode``.
    * Context manager: ``with OutletProcess(spec) as outlet: ...`` starts and stops it.

``stop_all(processes, timeout=5.0)``: stop several outlets at once (all are asked to close
first, then joined against one deadline; stragglers are killed).

``unique_ids(prefix) -> (name, source_id)``: a fresh stream name and source_id.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import time
import traceback
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

_CTX = multiprocessing.get_context("spawn")
_FORMATS = ("float32", "double64")


@dataclass(frozen=True)
class OutletSpec:
    """What the child process pushes; see the module docstring."""

    name: str
    source_id: str = ""
    type: str = "EEG"
    n_channels: int = 8
    rate: float = 500.0
    n_samples: int | None = None
    duration_s: float | None = None
    channel_format: str = "float32"
    start_count: int = 0
    nan_at: tuple[int, ...] = ()
    bad_value: float = float("nan")
    inf_at: tuple[int, ...] = ()
    repeat_at: tuple[int, ...] = ()
    pause_at: tuple[int, ...] = ()
    pause_s: float = 1.0
    backwards_at: tuple[int, ...] = ()
    backwards_step_s: float = 0.5
    wait_for_consumer_s: float | None = None
    chunk_max: int = 32

    def __post_init__(self) -> None:
        if self.n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {self.n_channels}")
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 Hz, got {self.rate}")
        if self.n_samples is not None and self.duration_s is not None:
            raise ValueError("give n_samples or duration_s, not both")
        if self.chunk_max < 1:
            raise ValueError(f"chunk_max must be >= 1, got {self.chunk_max}")
        if self.channel_format not in _FORMATS:
            raise ValueError(f"channel_format must be one of {_FORMATS}, got {self.channel_format}")
        for key in ("nan_at", "inf_at", "repeat_at", "backwards_at", "pause_at"):
            object.__setattr__(self, key, tuple(int(i) for i in getattr(self, key)))

    @property
    def total_samples(self) -> int | None:
        """Samples pushed before the outlet idles (None: until stopped)."""
        if self.n_samples is not None:
            return int(self.n_samples)
        if self.duration_s is not None:
            return round(self.duration_s * self.rate)
        return None


def unique_ids(prefix: str = "test") -> tuple[str, str]:
    """A fresh (name, source_id) pair so concurrent tests never see each other's streams."""
    tag = uuid.uuid4().hex[:12]
    return f"{prefix}-{tag}", f"{prefix}-src-{tag}"


def expected_sample(counter: int | np.ndarray, n_channels: int) -> np.ndarray:
    """The clean sample(s) the outlet pushes for ``counter``: shape (n_channels,) or (n, C)."""
    counter = np.asarray(counter, dtype=np.float64)
    return counter[..., None] + 1000.0 * np.arange(n_channels)


class OutletProcess:
    """Handle on one outlet process; see the module docstring."""

    def __init__(self, spec: OutletSpec) -> None:
        self.spec = spec
        self._ready = _CTX.Event()
        self._stop = _CTX.Event()
        self._finished = _CTX.Event()
        self._pushed = _CTX.Value("q", 0, lock=False)
        self._first_ts = _CTX.Value("d", math.nan, lock=False)
        self._last_ts = _CTX.Value("d", math.nan, lock=False)
        self._errors, child_end = _CTX.Pipe(duplex=False)
        self._process = _CTX.Process(
            target=_run_outlet,
            args=(
                spec,
                self._ready,
                self._stop,
                self._finished,
                self._pushed,
                self._first_ts,
                self._last_ts,
                child_end,
            ),
            name=f"outlet-{spec.name}",
            daemon=True,
        )
        self._child_end = child_end
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> OutletProcess:
        """Start the process and wait until its outlet exists (raises RuntimeError if not)."""
        if self._started:
            raise RuntimeError("OutletProcess.start() called twice; make a new OutletProcess")
        self._started = True
        self._process.start()
        self._child_end.close()  # the parent keeps only the reading end
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if not self._process.is_alive() or time.monotonic() > deadline:
                error = self._child_error()
                self.kill()
                raise RuntimeError(
                    f"outlet process {self.spec.name!r} did not come up within {timeout} s"
                    + (f":\n{error}" if error else "")
                )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the outlet cleanly and join the process (killed if it hangs)."""
        self._request_stop()
        self._join(timeout)
        self.kill()  # no-op once the process has exited

    def _request_stop(self) -> None:
        self._stop.set()

    def kill(self) -> None:
        """SIGKILL the process, as in a crash; the outlet does not close cleanly."""
        if self._started and self._process.is_alive():
            self._process.kill()
        self._join(5.0)

    def _join(self, timeout: float) -> None:
        if self._started:
            self._process.join(timeout)

    def __enter__(self) -> OutletProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- progress ----------------------------------------------------------------------------

    def wait_pushed(self, n: int, timeout: float) -> bool:
        """Wait until at least ``n`` samples were pushed; False on timeout or process death."""
        deadline = time.monotonic() + timeout
        while self.pushed < n:
            if not self._process.is_alive() or time.monotonic() > deadline:
                return self.pushed >= n
            time.sleep(0.01)
        return True

    def wait_finished(self, timeout: float) -> bool:
        """Wait until every sample of a finite spec was pushed."""
        return self._finished.wait(timeout)

    @property
    def pushed(self) -> int:
        return int(self._pushed.value)

    @property
    def first_timestamp(self) -> float:
        return float(self._first_ts.value)

    @property
    def last_timestamp(self) -> float:
        return float(self._last_ts.value)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def alive(self) -> bool:
        return self._started and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def _child_error(self) -> str:
        try:
            if self._errors.poll(0.5):
                return str(self._errors.recv())
        except (EOFError, OSError):
            pass
        return ""


def stop_all(processes: list[OutletProcess], timeout: float = 5.0) -> None:
    """Stop all ``processes`` within about ``timeout`` seconds in total."""
    for process in processes:
        process._request_stop()
    deadline = time.monotonic() + timeout
    for process in processes:
        process._join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        process.kill()


# --- child process -----------------------------------------------------------------------------


def _run_outlet(
    spec: OutletSpec,
    ready: Any,
    stop: Any,
    finished: Any,
    pushed: Any,
    first_ts: Any,
    last_ts: Any,
    errors: multiprocessing.connection.Connection,
) -> None:
    try:
        _push_loop(spec, ready, stop, finished, pushed, first_ts, last_ts)
    except BaseException:
        errors.send(traceback.format_exc())
        raise


def _push_loop(
    spec: OutletSpec,
    ready: Any,
    stop: Any,
    finished: Any,
    pushed: Any,
    first_ts: Any,
    last_ts: Any,
) -> None:
    import pylsl  # imported in the child only

    from streams.lsl_outlet import wait_for_consumers

    stop = _PolledStop(stop)
    fmt = pylsl.cf_float32 if spec.channel_format == "float32" else pylsl.cf_double64
    info = pylsl.StreamInfo(spec.name, spec.type, spec.n_channels, spec.rate, fmt, spec.source_id)
    outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
    ready.set()
    if spec.wait_for_consumer_s is not None:
        wait_for_consumers([outlet], spec.wait_for_consumer_s, stop)
    _push_on_schedule(spec, outlet, stop, pushed, first_ts, last_ts)
    if not stop.is_set():
        finished.set()
        stop.wait()
    del outlet  # close the outlet before the process ends


class _PolledStop:
    """A multiprocessing ``Event`` polled, never waited on: the tests SIGKILL this process, and
    one killed while waiting on the parent's event leaves that event's ``set()`` waiting for
    the dead sleeper for ever."""

    def __init__(self, event: Any) -> None:
        self._event = event

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Poll every 2 ms while a sample may fall due, every 20 ms in an unbounded wait."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        poll_s = 0.02 if timeout is None else 0.002
        while not self._event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(poll_s, left))
        return True


def _push_on_schedule(
    spec: OutletSpec, outlet: Any, stop: Any, pushed: Any, first_ts: Any, last_ts: Any
) -> None:
    """Push ``spec``'s samples on their schedule, with its faults, until all are pushed or
    ``stop`` is set."""
    import pylsl

    from streams.schedule import PushSchedule

    total = spec.total_samples
    nan_at = np.asarray(spec.nan_at, dtype=np.int64)
    inf_at = np.asarray(spec.inf_at, dtype=np.int64)
    repeat_at = np.asarray(spec.repeat_at, dtype=np.int64)
    backwards_at = np.sort(np.asarray(spec.backwards_at, dtype=np.int64))
    pauses = sorted(set(spec.pause_at))
    bad_channel = spec.n_channels - 1
    schedule = PushSchedule(pylsl.local_clock(), spec.rate, total)

    def push(k: int, n: int) -> int:
        if pauses and k == pauses[0]:  # stall here, then catch up
            pauses.pop(0)
            stop.wait(spec.pause_s)
            return 0
        if pauses:
            n = min(n, pauses[0] - k)  # never push across a pause
        index = np.arange(k, k + n)
        chunk = expected_sample(spec.start_count + index, spec.n_channels)
        chunk[np.isin(index, nan_at), bad_channel] = spec.bad_value
        chunk[np.isin(index, inf_at), bad_channel] = np.inf
        steps = np.searchsorted(backwards_at, index, side="right") * spec.backwards_step_s
        stamps = schedule.stamps(index) - steps
        repeats = np.isin(index, repeat_at)
        if repeats.any():  # push those samples twice: same values, same timestamp
            order = np.repeat(np.arange(n), 1 + repeats)
            chunk, stamps = chunk[order], stamps[order]
        outlet.push_chunk(chunk, stamps.tolist())
        if k == 0:
            first_ts.value = float(stamps[0])
        last_ts.value = float(stamps[-1])
        pushed.value += len(stamps)
        return n

    schedule.run(push, stop, chunk_max=spec.chunk_max)
