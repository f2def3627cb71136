"""The decoding daemon: an LSL inlet feeding an :class:`~service.engine.Engine` on one loop
thread, the decoded kinematics going to an LSL outlet and to a :class:`RecentBins` ring.

Data flow::

    LslInlet(<stream>) --read_new()--> loop thread --Engine.process()--> RecentBins (HTTP reads)
                                                                   \\--> KinematicsOutlet
                                                                        "<output>-kinematics"

Each incoming sample is one bin: the simulator and the session player already stream binned
counts. Binning a faster (e.g. 1 kHz) neural stream inside the daemon is a later step.

The loop never waits on HTTP. HTTP handlers read :meth:`Engine.status` and the
:class:`RecentBins` ring; control requests (adaptation pause/resume/learning rate) are queued
and applied by the loop between bins, so the learner is only ever touched by the loop thread.
Model swaps use :meth:`Engine.request_swap`, which loads and validates on the caller's thread
and stages the model for the loop.

States (``Daemon.state``; transitions logged, mirrored to ``Engine.set_state``):
``starting``, ``waiting-for-stream`` (the stream has not been seen yet), ``decoding``,
``stream-lost`` (the inlet is stalled or lost after data had flowed; the output *holds*:
zero velocity is pushed to the outlet at the model's bin rate by a timer in the loop, and
:attr:`Daemon.holding` is True; no decoded bin is invented, so sequence numbers keep counting
decoded bins only; decoding resumes by itself when the inlet delivers again, e.g. after
liblsl recovers the same source_id),
``schema-mismatch`` (the stream's channel count or bin width differs from the model's, or the
outlet came back with another schema, which the inlet refuses; nothing is decoded, and after
data had flowed the output holds zero velocity as when lost),
``stopped`` and ``error``.

Latency: for every decoded bin pushed to the outlet the loop records
``pylsl.local_clock()`` right after the push minus the input sample's timestamp mapped to the
local clock (timestamp + the inlet's ``clock_offset`` when known, else the raw timestamp;
:meth:`Daemon.latency` says which). The last ``latency_window`` values live in a preallocated
ring owned by the loop thread; readers get a copy taken under a short lock
(:meth:`Daemon.latency`). Bins slower than ``deadline_s`` (default: the model's bin width)
count as deadline misses.

Wake-up: the loop blocks in :meth:`LslInlet.wait_for_data`, which the inlet's thread
signals as soon as liblsl hands it a sample, so a bin is decoded and pushed within a thread
wake-up of its arrival rather than at the next poll.

Adaptation: with ``settings.target_stream`` a :class:`~service.targets.TargetFeed` reads the
learning targets; each bin learns from the target stamped within half a bin of it (see
:mod:`service.targets`). Targets are attached after the bin was pushed, while the bin's
e-prop window is open, so one that arrives after its bin (the usual case when the task
computer streams the cursor) still counts: the loop runs the window's weight update once its
targets are in, or half a bin after it fell due, never between a bin's arrival and its push.
Without a target stream the learner decodes but learns nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
from threadpoolctl import threadpool_limits

from bci.checkpoint import load_checkpoint, read_manifest
from bci.runtime import single_threaded_blas
from service.engine import STATES, DecodedBin, Engine, RecentBins, Sink, model_id_of
from service.recording import DecodedRecording
from service.settings import Settings
from service.targets import IntentionTargets, TargetFeed
from streams.lsl_inlet import LslInlet, StreamSchema
from streams.lsl_outlet import KINEMATICS_SUFFIX, KinematicsOutlet

__all__ = ["DAEMON_STATES", "Daemon"]

logger = logging.getLogger(__name__)

DAEMON_STATES = STATES  # the daemon reports the engine's lifecycle states
_LOST = ("stalled", "lost")
_HOLDING = ("stream-lost", "schema-mismatch")  # daemon states that push zero velocity
_TARGET_POLL_S = 0.0005  # wait between looks while an update waits for late targets


class Daemon:
    """Decode the neural stream named by ``settings`` with its checkpoint, live.

    Lifecycle: :meth:`start` (loads the model, opens the outlet, starts the inlet and the loop
    thread; raises ``ValueError`` for a missing or invalid checkpoint) and :meth:`stop`; also
    a context manager. ``inlet_options`` go to :class:`~streams.lsl_inlet.LslInlet`;
    ``sinks`` get every decoded bin on the loop thread, after the outlet (keep them fast).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        poll_s: float = 0.005,
        recent_capacity: int = 1200,
        inlet_options: dict[str, Any] | None = None,
        latency_window: int = 10_000,
        deadline_s: float | None = None,
        sinks: Iterable[Sink] = (),
    ) -> None:
        self.settings = settings
        self.sinks = tuple(sinks)
        self.poll_s = float(poll_s)
        self.recent = RecentBins(recent_capacity)
        self.inlet_options = dict(inlet_options or {})
        self.engine: Engine | None = None
        self.inlet: LslInlet | None = None
        self.targets: TargetFeed | IntentionTargets | None = None
        self.recording: DecodedRecording | None = None
        self._blas_limits: threadpool_limits | None = None
        self.outlet: KinematicsOutlet | None = None
        self.kinematics_labels: tuple[str, ...] = ()
        self._manifests: dict[str, dict] = {}
        self._state = "starting"
        self._message = "not started"
        self._state_lock = threading.Lock()
        self._controls: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ever_connected = False
        self.push_errors = 0
        if int(latency_window) != latency_window or latency_window < 1:
            raise ValueError(f"latency_window must be a positive integer; got {latency_window!r}")
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive seconds; got {deadline_s!r}")
        self.deadline_s = deadline_s  # None until start(): then the model's bin width
        self._latency = np.zeros(int(latency_window), dtype=np.float64)  # seconds, ring
        self._latency_n = 0  # bins measured in total
        self._latency_misses = 0
        self._latency_offset_bins = 0  # bins mapped with the inlet's clock offset
        self._latency_lock = threading.Lock()
        self._next_hold = 0.0  # monotonic time of the next zero-velocity push while lost
        # decoded bins without a target yet: (seq, local stamp, decoded values)
        self._awaiting: deque[tuple[int, float, np.ndarray]] = deque()
        self._due_since = 0.0  # monotonic time the e-prop update fell due; 0: not due
        self.hold_pushes = 0  # zero-velocity samples pushed while the stream was lost

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Daemon:
        """Load the checkpoint, open the outlet, start the inlet and the loop (idempotent)."""
        if self._thread is not None:
            return self
        settings = self.settings
        if settings.model is None:
            raise ValueError("no model to decode with: set BCI_MODEL or pass --model PATH")
        checkpoint = load_checkpoint(settings.model)
        self._manifests[model_id_of(checkpoint)] = checkpoint.manifest
        self.kinematics_labels = tuple(checkpoint.manifest["kinematics_labels"])
        self.engine = Engine(
            checkpoint,
            adapt=settings.adapt,
            sinks=[self._push, self.recent, *self.sinks],
            defer_updates=True,  # run by the loop once the window's targets are in
        )
        if settings.record is not None:  # before the outlet: an existing file stops here
            self.recording = DecodedRecording(
                settings.record,
                input_name=settings.stream,
                n_channels=self.engine.n_channels,
                output_name=f"{settings.output_base}{KINEMATICS_SUFFIX}",
                output_labels=self.kinematics_labels,
                rate_hz=1.0 / self.engine.bin_s,
            )
        self.outlet = KinematicsOutlet(
            settings.output_base,
            labels=self.kinematics_labels,
            units=["" for _ in self.kinematics_labels],
            nominal_srate=1.0 / self.engine.bin_s,
            model="bci serve",
        )
        if self.deadline_s is None:
            self.deadline_s = float(self.engine.bin_s)
        self._stop.clear()
        # per-bin products are tiny: BLAS worker threads would only spin and steal the cores
        # the inlet, the outlet's consumers and the pushing process need (bci.runtime)
        self._blas_limits = single_threaded_blas()
        if settings.target_stream:
            self.targets = self._learning_targets().start()
        self.inlet = LslInlet(
            name=settings.stream, source_id=settings.source_id, **self.inlet_options
        ).start()
        self._set_state("waiting-for-stream", f"looking for stream {settings.stream!r}")
        self._thread = threading.Thread(target=self._run, name="bci-daemon-loop", daemon=True)
        self._thread.start()
        logger.info(
            "daemon started: stream %r -> outlet %r, model %s",
            settings.stream,
            self.outlet.name,
            self.engine.model_id,
        )
        return self

    def _learning_targets(self) -> TargetFeed | IntentionTargets:
        """The target stream as configured: true kinematics, or goal + cursor (intention)."""
        settings, engine = self.settings, self._require_engine()
        n_out = len(self.kinematics_labels)
        goal = TargetFeed(settings.target_stream or "", n_out, engine.bin_s,
                          self.inlet_options, source_id=settings.target_source_id)  # fmt: skip
        if settings.target_kind == "kinematics":
            return goal
        cursor = TargetFeed(  # Settings checked that the stream is named
            settings.cursor_stream or "", n_out, engine.bin_s, self.inlet_options
        )
        return IntentionTargets(goal, cursor, settings.hold_radius)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop, the inlet and the outlet (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("daemon loop did not stop within %g s", timeout)
            self._thread = None
        if self.inlet is not None:
            self.inlet.stop()
        if self.targets is not None:
            self.targets.stop()
        if self.recording is not None:
            logger.info("recorded %d bins to %s", self.recording.bins, self.recording.close())
        if self.outlet is not None:
            self.outlet.close()
        if self._blas_limits is not None:
            self._blas_limits.restore_original_limits()
            self._blas_limits = None
        if self._state != "stopped":
            self._set_state("stopped", "stopped by stop()")

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------------
    @property
    def state(self) -> str:
        with self._state_lock:
            return self._state

    @property
    def state_message(self) -> str:
        with self._state_lock:
            return self._message

    @property
    def holding(self) -> bool:
        """True while the output holds zero velocity: the stream was decoded, then was lost
        or came back with another schema."""
        return self._ever_connected and self.state in _HOLDING

    def latency(self) -> dict[str, Any]:
        """Latency over the last ``latency_window`` decoded bins (milliseconds).

        The ring is copied under a short lock; the statistics are computed on the caller's
        thread. ``p50_ms``/``p99_ms``/``max_ms`` are None before the first bin.
        """
        with self._latency_lock:
            total, misses = self._latency_n, self._latency_misses
            with_offset = self._latency_offset_bins
            window = self._latency[: min(total, len(self._latency))].copy()
        stats: dict[str, float | None] = {"p50_ms": None, "p99_ms": None, "max_ms": None}
        if len(window):
            p50, p99 = np.percentile(window, [50.0, 99.0]) * 1e3
            peak = float(window.max() * 1e3)
            stats = {"p50_ms": float(p50), "p99_ms": float(p99), "max_ms": peak}
        if total == 0:
            clock = "none"
        elif with_offset == total:
            clock = "offset"
        elif with_offset == 0:
            clock = "raw"
        else:
            clock = "mixed"
        return {
            **stats,
            "bins": total,
            "window": len(window),
            "window_capacity": len(self._latency),
            "deadline_ms": None if self.deadline_s is None else self.deadline_s * 1e3,
            "deadline_misses": misses,
            "timestamp_mapping": clock,
        }

    def latency_samples(self) -> tuple[int, np.ndarray]:
        """``(bins measured in total, the ring's latencies in seconds, oldest first)``,
        copied under the latency lock (for histograms built outside the loop)."""
        with self._latency_lock:
            total, ring = self._latency_n, self._latency.copy()
        if total <= len(ring):
            return total, ring[:total]
        return total, np.roll(ring, -(total % len(ring)))

    def _set_state(self, state: str, message: str) -> None:
        with self._state_lock:
            previous = self._state
            if state == previous:
                self._message = message
                return
            self._state, self._message = state, message
        level = logging.WARNING if state in ("stream-lost", "schema-mismatch") else logging.INFO
        if state == "error":
            level = logging.ERROR
        logger.log(level, "daemon %s -> %s: %s", previous, state, message)
        if self.engine is not None:
            self.engine.set_state(state)
        if state in _HOLDING:
            self._next_hold = 0.0  # the first zero-velocity sample goes out at once

    # -- model ---------------------------------------------------------------------------------
    def manifest(self, model_id: str) -> dict | None:
        """The manifest of a model this daemon has loaded, by id."""
        return self._manifests.get(model_id)

    def swap(self, path: str | Path) -> str:
        """Validate and stage the checkpoint ``path``; returns its model id.

        Raises ``ValueError`` (incl. ``CheckpointError``) or ``OSError`` naming the reason;
        the current model keeps decoding.
        """
        model_id = self._require_engine().request_swap(path)  # counts and logs refusals
        try:
            manifest = read_manifest(path)
        except (ValueError, OSError) as error:  # replaced since: summary only, not fatal
            logger.warning("manifest of %s unreadable after the swap: %s", path, error)
        else:
            if str(manifest.get("sha256", ""))[:12] == model_id:
                self._manifests[model_id] = manifest
        return model_id

    def rollback(self) -> str:
        return self._require_engine().rollback()

    def call_in_loop(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` on the loop thread between bins and return its result (HTTP may wait on
        the loop; the loop never waits on HTTP). ``TimeoutError`` if the loop is not running."""
        if self._thread is None or not self._thread.is_alive():
            raise TimeoutError(f"the decoding loop is not running (state {self.state})")
        future: Future = Future()
        self._controls.put((fn, future))
        return future.result(timeout)

    def _require_engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the daemon is not started; call start() first")
        return self.engine

    # -- loop thread ---------------------------------------------------------------------------
    def _push(self, decoded: DecodedBin) -> None:
        outlet = self.outlet
        if outlet is None or not outlet.running:
            return
        try:
            offset = self.inlet.clock_offset if self.inlet is not None else None
            local_stamp = decoded.timestamp + (offset or 0.0)
            outlet.push(decoded.values, local_stamp)
        except ValueError as error:  # non-finite output: counted, not fatal
            self.push_errors += 1
            logger.warning("bin %d not pushed: %s", decoded.seq, error)
            return
        self._record_latency(pylsl.local_clock() - local_stamp, offset is not None)

    def _record_latency(self, latency_s: float, with_offset: bool) -> None:
        deadline = self.deadline_s
        with self._latency_lock:
            self._latency[self._latency_n % len(self._latency)] = latency_s
            self._latency_n += 1
            self._latency_offset_bins += with_offset
            if deadline is not None and latency_s > deadline:
                self._latency_misses += 1

    def _hold_tick(self) -> None:
        """While lost: push zero velocity once per bin (a timer checked on each poll)."""
        now = time.monotonic()
        if now < self._next_hold:
            return
        bin_s = self._require_engine().bin_s
        # keep the bin rate; after a pause longer than a bin (or the first tick) restart from now
        following = self._next_hold + bin_s
        self._next_hold = following if following > now else now + bin_s
        outlet = self.outlet
        if outlet is not None and outlet.running and self.kinematics_labels:
            outlet.push(np.zeros(len(self.kinematics_labels), dtype=np.float32))
            self.hold_pushes += 1

    def _run(self) -> None:
        try:
            inlet = self.inlet
            assert inlet is not None
            while not self._stop.is_set():
                self._drain_controls()
                worked = self._step()
                self._learn()
                if not worked:
                    # while an update waits for late targets, look again soon
                    inlet.wait_for_data(_TARGET_POLL_S if self._due_since else self.poll_s)
        except Exception as error:  # the loop must say why it ended
            logger.exception("daemon loop failed")
            self._set_state("error", f"{type(error).__name__}: {error}")
        finally:
            self._drain_controls(fail=True)

    def _drain_controls(self, fail: bool = False) -> None:
        while True:
            try:
                fn, future = self._controls.get_nowait()
            except queue.Empty:
                return
            if fail:
                future.set_exception(RuntimeError("the decoding loop has stopped"))
                continue
            try:
                future.set_result(fn())
            except Exception as error:
                future.set_exception(error)

    def _step(self) -> bool:
        """Decode what is new; False when there was nothing to do."""
        inlet, engine = self.inlet, self._require_engine()
        assert inlet is not None
        state = inlet.state
        if state == "error":
            self._set_state("error", f"inlet failed: {inlet.state_message}")
            self._stop.set()
            return False
        if state in ("idle", "resolving") or (state in _LOST and not self._ever_connected):
            self._set_state("waiting-for-stream", inlet.state_message)
            return False
        info = inlet.info
        if info is not None:
            problem = _schema_problem(info, inlet.description, engine)
            if problem:
                self._set_state("schema-mismatch", problem)
                return False
        if state == "schema-mismatch":  # a restarted outlet with another schema: refused
            self._set_state("schema-mismatch", inlet.state_message)
            if self.holding:
                self._hold_tick()
            return False
        if state in _LOST:
            self._set_state("stream-lost", f"inlet {state}: {inlet.state_message}")
        try:
            data, timestamps = inlet.read_new()
        except RuntimeError:  # no ring yet
            timestamps = data = np.empty(0)
        if len(timestamps) == 0:
            if self.holding:
                self._hold_tick()
            return False
        self._ever_connected = True
        self._learn()  # targets that came since: attached before a full window must close
        targets = self.targets if engine.learner is not None else None
        offset = inlet.clock_offset or 0.0
        recording = self.recording
        for row, stamp in zip(data, timestamps, strict=True):
            # the target is attached right after the push (_learn): never on the way out
            x = np.asarray(row, dtype=np.float32)
            decoded = engine.process(x, None, float(stamp))
            if targets is not None:
                self._awaiting.append((decoded.seq, float(stamp) + offset, decoded.values))
            if recording is not None:
                recording.add(float(stamp) + offset, x, decoded.values)
        self._set_state("decoding", f"decoding {inlet.info.name if inlet.info else '?'}")
        return True

    def _learn(self) -> None:
        """Give decoded bins the targets that arrived after them, then run the e-prop update
        once its window's targets are in (or half a bin after it fell due)."""
        engine = self._require_engine()
        targets = self.targets
        while self._awaiting:
            seq, stamp, values = self._awaiting[0]
            target = None if targets is None else targets.target_for(stamp, values)
            waiting = target is None and targets is not None and not targets.settled(stamp)
            if waiting and engine.awaits_target(seq):
                break
            self._awaiting.popleft()
            stored = target is not None and engine.provide_target(seq, target)
            if stored:
                self.recent.set_target(seq, target)
            if targets is not None:
                targets.record(stored)
        if not engine.update_due:
            self._due_since = 0.0
            return
        now = time.monotonic()
        if not self._due_since:
            self._due_since = now
        if not self._awaiting or now - self._due_since >= 0.5 * engine.bin_s:
            engine.run_update()
            self._due_since = 0.0


def _schema_problem(info: StreamSchema, description: dict[str, str], engine: Engine) -> str:
    """Why the stream cannot feed ``engine`` (channel count, bin width), or "".

    The bin width is the stream's ``desc/session_bin_s`` when it declares one (a session
    player at any speed), else the period of its nominal rate (irregular streams: unchecked).
    """
    if info.n_channels != engine.n_channels:
        return (
            f"stream {info.name!r} has {info.n_channels} channels but the model expects "
            f"{engine.n_channels}; serve a model trained on this stream"
        )
    try:
        bin_s = float(description["session_bin_s"])
    except (KeyError, ValueError):
        bin_s = 1.0 / info.nominal_srate if info.nominal_srate > 0 else engine.bin_s
    if abs(bin_s / engine.bin_s - 1.0) > 1e-3:
        return (
            f"stream {info.name!r} carries {bin_s * 1e3:g} ms bins but the model decodes "
            f"{engine.bin_s * 1e3:g} ms bins; serve a model trained at this stream's bin width"
        )
    return ""
