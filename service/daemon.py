"""The decoding daemon's real-time loop: LSL inlet -> ring -> front-end -> engine -> outlet.

Data flow (one thread; ``bci serve`` runs it alone in the decoder process)::

    LslInlet(<stream>, pull_in_caller) --pull()--> RingBuffer --read_new()--> FrontEnd
        --closed bins--> BinDecoder (Engine.process) --> KinematicsOutlet "<output>-kinematics"
                                                    \\--> SharedState (bins, latency, status)

The loop blocks in liblsl for the next sample (:meth:`LslInlet.pull`), so a bin is decoded
and pushed within one call of its arrival, with no thread hop. Raw samples have one home,
the inlet's ring, with its loss counters; the :class:`~streams.frontend.FrontEnd` turns them
into causal bins: per-channel counts (one sample per bin, or a faster stream summed into
bins), spike events, or threshold crossings of broadband voltage (``Settings.input``; by
default from the stream's metadata). A bin closes when a sample at or after its end arrives,
or ``bin_grace_ms`` after its end once the stream has been quiet that long (samples that keep
coming, however late, close bins by their stamps).

Nothing else runs on this thread but what the loop does between bins: controls from the
queue (swaps are loaded and validated on a loader thread, then applied between two bins by
the engine; adaptation controls run here), e-prop updates once a window's targets are in
(:class:`~service.decoding.BinDecoder`), the status document for the API (every
``status_period_s`` and on each state change), and zero-velocity holds.

Readers never block the loop: they read the :class:`~service.shared_state.SharedState`
(recent bins, latency ring, status document) the loop writes.

States (``Daemon.state``; transitions logged, mirrored to ``Engine.set_state``):
``starting``, ``waiting-for-stream``, ``decoding``, ``stream-lost`` (stalled or lost after
data had flowed; the output *holds*: zero velocity at the model's bin rate; sequence numbers
count decoded bins only), ``schema-mismatch`` (channel count, bin width or input kind do not
fit the model; after data had flowed the output holds as when lost), ``stopped``, ``error``.
The API adds ``restarting`` while the supervisor restarts a dead decoder process.

Latency: for every decoded bin, ``pylsl.local_clock()`` right after the push minus the bin's
close on the local clock (its end time plus the inlet's clock offset when known). Bins slower
than ``deadline_s`` (default: the model's bin width) count as deadline misses.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

from bci.checkpoint import load_decoder
from bci.compatibility import ChannelMatch, match_channels, same_bin_width
from bci.runtime import single_threaded_blas
from service.decoding import BinDecoder
from service.engine import STATES, Engine, Sink
from service.events import EventOutlet
from service.recording import DecodedRecording
from service.settings import Settings
from service.shared_state import DecodedBin, SharedState
from service.targets import IntentionTargets, TargetFeed
from streams.channels import read_channel_map
from streams.frontend import FrontEnd, input_kind_of
from streams.lsl_inlet import LslInlet
from streams.lsl_outlet import KINEMATICS_SUFFIX, KinematicsOutlet
from streams.lsl_schema import StreamSchema

__all__ = ["DAEMON_STATES", "Daemon", "ensure_output_free", "latency_stats", "output_source_id"]

logger = logging.getLogger(__name__)

DAEMON_STATES = STATES  # the daemon reports the engine's lifecycle states
_LOST = ("stalled", "lost")
_HOLDING = ("stream-lost", "schema-mismatch")  # daemon states that push zero velocity
_STATE_EVENTS = {"stream-lost": "stream_lost", "schema-mismatch": "schema_mismatch"}
_TARGET_POLL_S = 0.0005  # wait between looks while an update waits for late targets
_PREWARM_LEAD_S = 0.0005  # prewarm the decoder this long before the next bin is due
_EVENTS_CAPACITY = 1 << 16  # ring rows for a spike-event stream (irregular rate)

Control = tuple[int, str, tuple[Any, ...]]
"""A request from the API: ``(request id, command, arguments)``."""


class Daemon:
    """Decode the neural stream named by ``settings`` with its checkpoint, live.

    Lifecycle: :meth:`start` runs :meth:`prepare` (loads the model, opens the outlet, the
    inlet and the target streams; raises ``ValueError`` for a missing or invalid checkpoint)
    and the loop on a thread; :meth:`stop` ends it; also a context manager. The decoder
    process calls :meth:`prepare` and :meth:`run` on its main thread instead.

    ``state``: the shared block to write (default: a private one, readable in-process);
    a restarted decoder continues its sequence numbers and skips bins it already decoded.
    ``controls`` / ``replies``: the API's request and answer queues (see :data:`Control`).
    ``before_outlet`` is called right before the outlet opens (the supervisor closes its
    zero-velocity stand-in then). ``output_source_id`` is the outlet's LSL source_id
    (default: :func:`output_source_id`); ``realtime`` says what scheduling the process got.
    ``sinks`` get every decoded bin on the loop thread, after the outlet (keep them fast).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        state: SharedState | None = None,
        controls: Any = None,
        replies: Any = None,
        before_outlet: Callable[[], None] | None = None,
        poll_s: float = 0.005,
        inlet_options: dict[str, Any] | None = None,
        deadline_s: float | None = None,
        status_period_s: float = 0.2,
        sinks: Iterable[Sink] = (),
        output_source_id: str | None = None,
        realtime: str = "off",
    ) -> None:
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive seconds; got {deadline_s!r}")
        self.settings = settings
        self.sinks = tuple(sinks)
        self.poll_s = float(poll_s)
        self.inlet_options = dict(inlet_options or {})
        self.deadline_s = deadline_s  # None until prepare(): then the model's bin width
        self.status_period_s = float(status_period_s)
        self._shared = state
        self._controls, self._replies = controls, replies
        self._before_outlet = before_outlet
        self._output_source_id = output_source_id
        self.realtime = realtime
        self.engine: Engine | None = None
        self.decoder: BinDecoder | None = None
        self.inlet: LslInlet | None = None
        self.frontend: FrontEnd | None = None
        self.targets: TargetFeed | IntentionTargets | None = None
        self.recording: DecodedRecording | None = None
        self.outlet: KinematicsOutlet | None = None
        self.events: EventOutlet | None = None  # <output>-events (service.events)
        self.channels = ChannelMatch(None, "")  # stream channel -> model input
        self._source = ""  # the source_id whose channels self.channels matches
        self._source_refusal = ""  # why that source's channels do not fit the model
        self._model_labels: list[str] | None = None
        self._channel_map: dict[str, str] | None = None  # --channel-map
        self._rollbacks_seen = 0  # e-prop rollbacks already published
        self.kinematics_labels: tuple[str, ...] = ()
        self._blas_limits: Any = None
        self._state = "starting"
        self._message = "not started"
        self._state_lock = threading.Lock()
        self._loader: queue.SimpleQueue[tuple[int, Path] | None] = queue.SimpleQueue()
        self._loader_thread: threading.Thread | None = None
        self._loaded: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ever_connected = False
        self._skip_until = -np.inf  # bins ending at or before this were decoded already
        self._next_hold = 0.0  # monotonic time of the next zero-velocity push while lost
        self._prewarm_at: float | None = None  # local clock time to prewarm the decoder
        self._last_arrival = 0.0  # local clock time samples last came
        self._next_status = 0.0
        self._published_model: str | None = None  # model id in the latest status document
        self.outputs_refused = 0  # non-finite or implausible outputs, zero pushed instead
        self.future_stamped = 0  # bins whose input was stamped ahead of the local clock
        self.largest_lead_s = 0.0  # the largest such lead (s)
        self.last_refusal = ""  # why the latest one was refused, and what was done
        self._refused_models: set[str] = set()
        self.hold_pushes = 0  # zero-velocity samples pushed while the stream was lost
        self.bins_skipped = 0  # bins a previous decoder process had decoded already

    # -- lifecycle -------------------------------------------------------------------------
    def attach_controls(self, controls: Any, replies: Any) -> None:
        """Serve the requests of ``controls`` and answer on ``replies`` (before start)."""
        self._controls, self._replies = controls, replies

    @property
    def shared(self) -> SharedState:
        """The shared block this daemon writes (recent bins, latency, status)."""
        if self._shared is None:
            raise RuntimeError("the daemon is not prepared; call start() or prepare() first")
        return self._shared

    @property
    def recent(self) -> SharedState:
        """The recent decoded bins (``latest()``, ``recent(n)``, ``since(seq)``)."""
        return self.shared

    def prepare(self) -> Daemon:
        """Load the checkpoint and open the recording, the outlet and the streams."""
        settings = self.settings
        if settings.model is None:
            raise ValueError("no model to decode with: set BCI_MODEL or pass --model PATH")
        checkpoint = load_decoder(settings.model)
        n_out = checkpoint.decoder.n_out
        if self._shared is None:  # a private block, readable after stop(), freed with self
            self._shared = SharedState.create(n_out)
            weakref.finalize(self, self._shared.close)
        self.kinematics_labels = tuple(checkpoint.manifest.kinematics_labels)
        self._model_labels = checkpoint.manifest.channel_labels  # None: unlabelled
        if settings.channel_map is not None:  # read now: a bad file stops the start
            self._channel_map = read_channel_map(settings.channel_map)
        self._skip_until = self._shared.last_stamp
        self.engine = Engine(
            checkpoint,
            adapt=settings.adapt,
            sinks=[self._push, self._shared.write_bin, *self.sinks],
            defer_updates=True,  # run by the BinDecoder once the window's targets are in
            first_seq=self._shared.bins_written,
        )
        if self.deadline_s is None:
            self.deadline_s = float(self.engine.bin_s)
        if self._before_outlet is None:  # supervised, the supervisor checked the name
            ensure_output_free(settings)
        if settings.record is not None:  # before the outlet: an existing file stops here
            self.recording = DecodedRecording(
                settings.record,
                input_name=settings.stream,
                n_channels=self.engine.n_channels,
                output_name=f"{settings.output_base}{KINEMATICS_SUFFIX}",
                output_labels=self.kinematics_labels,
                rate_hz=1.0 / self.engine.bin_s,
                # labels, units and the live streams' own headers (known once they are open)
                input_labels=checkpoint.manifest.channel_labels,
                output_units=checkpoint.manifest.kinematics_units,
                source_header=lambda: self.inlet.header_xml if self.inlet else None,
                output_header=lambda: self.outlet.header_xml() if self.outlet else None,
            )
        if self._before_outlet is not None:
            self._before_outlet()
        source_id = self._output_source_id or output_source_id(settings, checkpoint.model_id)
        self.outlet = KinematicsOutlet(
            settings.output_base,
            labels=self.kinematics_labels,
            units=checkpoint.manifest.kinematics_units,  # the model's; None: unknown
            nominal_srate=1.0 / self.engine.bin_s,
            source_id=source_id,
            component="bci serve",
            extra={  # what a lab needs to join this stream with its input (see README)
                "input_stream": settings.stream,
                "input_source_id": settings.source_id or "",
                "model_id": checkpoint.model_id,
                "model_sha256": checkpoint.manifest.sha256,
                "timestamps": "input bin end time, on this host's LSL clock",
            },
        )
        self.events = EventOutlet(settings.output_base, source_id)
        self.engine.on_swap = self._on_swap
        if settings.target_stream:
            self.targets = self._learning_targets().start()
        self.decoder = BinDecoder(self.engine, self.targets, self._shared.set_target)
        self.inlet = LslInlet(
            name=settings.stream,
            source_id=settings.source_id,
            pull_in_caller=True,
            keep_non_finite=True,  # the engine repairs single channels (counted per channel)
            irregular_capacity=_EVENTS_CAPACITY,
            **self.inlet_options,
        ).start()
        self._set_state("waiting-for-stream", f"looking for stream {settings.stream!r}")
        return self

    def start(self) -> Daemon:
        """:meth:`prepare`, then run the loop on a thread (idempotent)."""
        if self._thread is not None:
            return self
        self.prepare()
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="bci-daemon-loop", daemon=True)
        self._thread.start()
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
        """Stop the loop and close the streams (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("daemon loop did not stop within %g s", timeout)
            self._thread = None
        self._close()

    def _close(self) -> None:
        if self._loader_thread is not None:
            self._loader.put(None)
            self._loader_thread.join(5.0)
            self._loader_thread = None
        if self.inlet is not None:
            self.inlet.stop()
        if self.targets is not None:
            self.targets.stop()
        if self.recording is not None:  # close() is safe to call twice
            logger.info("recorded %d bins to %s", self.recording.bins, self.recording.close())
        if self.outlet is not None:
            self.outlet.close()
        if self.events is not None:
            self.events.close()
        if self._state != "stopped":
            self._set_state("stopped", "stopped by stop()")
        if self._shared is not None:
            self._publish_status()

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
        """Latency over the latency ring's bins (milliseconds); see :func:`latency_stats`."""
        return latency_stats(self.shared, self.deadline_s)

    def _set_state(self, state: str, message: str) -> None:
        with self._state_lock:
            previous = self._state
            if state == previous:
                self._message = message
                return
            self._state, self._message = state, message
        level = logging.WARNING if state in _HOLDING else logging.INFO
        if state == "error":
            level = logging.ERROR
        logger.log(level, "daemon %s -> %s: %s", previous, state, message)
        if self.engine is not None:
            self.engine.set_state(state)
        if state in _HOLDING:
            self._next_hold = 0.0  # the first zero-velocity sample goes out at once
        self._next_status = 0.0  # readers see the change at once
        event = _STATE_EVENTS.get(state)
        if state == "decoding" and previous in ("stream-lost", "schema-mismatch"):
            event = "stream_restored"
        if event is not None and self.events is not None:
            self.events.publish(event, message=message)

    def status(self) -> dict[str, Any]:
        """The status document the API serves (see :mod:`service.api.link`)."""
        engine, inlet, outlet, frontend = self.engine, self.inlet, self.outlet, self.frontend
        info = None if inlet is None else inlet.info
        stream: dict[str, Any] = {"name": self.settings.stream, "state": None, "message": None,
                                  "info": None, "counters": None, "clock_offset": None,
                                  "input": None, "frontend": None}  # fmt: skip
        if inlet is not None:
            stream.update(
                state=inlet.state,
                message=inlet.state_message,
                info=None if info is None else vars(info).copy(),
                counters=_counters_dict(inlet),
                clock_offset=inlet.clock_offset,
            )
        if frontend is not None:
            stream.update(input=frontend.kind, frontend=frontend.counters())
        stream["future_stamped"] = {
            "bins": self.future_stamped,
            "largest_lead_ms": self.largest_lead_s * 1e3,
        }
        engine_status = None if engine is None else engine.status()
        return {
            "pid": os.getpid(),
            "realtime": self.realtime,
            "state": self.state,
            "message": self.state_message,
            "holding": self.holding,
            "labels": list(self.kinematics_labels),
            "bin_s": None if engine is None else engine.bin_s,
            "n_channels": None if engine is None else engine.n_channels,
            "deadline_s": self.deadline_s,
            "engine": engine_status,
            "activity": None if engine is None else engine.activity(),
            "stream": stream,
            "outlet": {
                "name": None if outlet is None else outlet.name,
                "pushed": 0 if outlet is None else outlet.pushed,
                "push_errors": self.outputs_refused,  # the API's name for refused outputs
                "last_refusal": self.last_refusal or None,
                "hold_pushes": self.hold_pushes,
                "bins_skipped": self.bins_skipped,
            },
            "targets": None if self.targets is None else self.targets.status(),
        }

    def _publish_status(self) -> None:
        self._next_status = time.monotonic() + self.status_period_s
        self._published_model = None if self.engine is None else self.engine.model_id
        if self._shared is not None:
            self._shared.publish_status(self.status())

    # -- model ---------------------------------------------------------------------------------
    def swap(self, path: str | Path) -> str:
        """Validate and stage the checkpoint ``path`` (on the calling thread); returns its
        model id. Raises ``ValueError`` (incl. ``CheckpointError``) or ``OSError`` naming the
        reason; the current model keeps decoding."""
        return self._require_engine().request_swap(path)  # counts and logs refusals

    def _require_engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the daemon is not started; call start() first")
        return self.engine

    # -- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        """The real-time loop, on the calling thread, until :meth:`stop` (or SIGTERM in the
        decoder process). Per-bin products are tiny: BLAS runs on one thread here."""
        self._blas_limits = single_threaded_blas()
        try:
            inlet = self.inlet
            assert inlet is not None and self.decoder is not None
            while not self._stop.is_set():
                self._serve_controls()
                wait = self._wait_s()
                if self._prewarm_at is not None and pylsl.local_clock() >= self._prewarm_at:
                    self._prewarm_at = None
                    self._require_engine().prewarm()
                inlet.pull(wait)
                self._decode_new()
                self.decoder.learn()
                self._between_bins()
        except Exception as error:  # the loop must say why it ended
            logger.exception("daemon loop failed")
            self._set_state("error", f"{type(error).__name__}: {error}")
        finally:
            self._blas_limits.restore_original_limits()
            self._serve_controls(fail=True)
            if self._thread is None:  # run() called directly: close here
                self._close()

    def request_stop(self) -> None:
        """Ask the loop to end after the current pass (e.g. from a signal handler)."""
        self._stop.set()

    def _wait_s(self) -> float:
        """How long the next pull may block: until a late target, a grace flush or a hold
        is due, else the poll period."""
        assert self.decoder is not None
        wait = _TARGET_POLL_S if self.decoder.waiting_for_targets else self.poll_s
        frontend, inlet = self.frontend, self.inlet
        if frontend is not None and frontend.next_close is not None and inlet is not None:
            local_close = frontend.next_close + (inlet.clock_offset or 0.0)
            quiet = self._last_arrival + frontend.grace_s
            wait = min(wait, max(0.0, max(local_close, quiet) - pylsl.local_clock()))
        if self.holding:
            wait = min(wait, max(0.0, self._next_hold - time.monotonic()))
        if self._prewarm_at is not None:
            wait = min(wait, max(0.0, self._prewarm_at - pylsl.local_clock()))
        return wait

    def _between_bins(self) -> None:
        if self.holding:
            self._hold_tick()
        learner = None if self.engine is None else self.engine.learner
        if learner is not None and learner.rollbacks != self._rollbacks_seen:
            self._rollbacks_seen = learner.rollbacks
            if self.events is not None:
                reason = learner.status.pause_reason
                self.events.publish("eprop_rollback", rollbacks=learner.rollbacks, reason=reason)
        if self._shared is not None:
            self._shared.beat(os.getpid())
        engine = self.engine
        swapped = engine is not None and engine.model_id != self._published_model
        if swapped or time.monotonic() >= self._next_status:
            self._publish_status()

    def _serve_controls(self, fail: bool = False) -> None:
        """Answer the API's requests (between bins) and the swaps the loader has finished;
        with ``fail`` (the loop ended) only the finished swaps: new requests stay
        unanswered, and the API times out saying the decoder did not answer."""
        answers = []
        while True:  # swaps the loader thread has validated and staged (or refused)
            try:
                answers.append(self._loaded.get_nowait())
            except queue.Empty:
                break
        controls = self._controls
        while controls is not None and not fail:
            try:
                request = controls.get_nowait()
            except queue.Empty:
                break
            answer = self._serve(request)
            if answer is not None:
                answers.append(answer)
        if answers:  # readers see each answer's effect as soon as they have the answer
            self._publish_status()
            for request_id, ok, payload in answers:
                self._reply(request_id, ok, payload)

    def _serve(self, request: Control) -> tuple[int, bool, Any] | None:
        """One API request: swaps go to the loader thread (answered when loaded), the rest is
        done here; returns the answer ``(id, ok, result or error text)``."""
        request_id, command, args = request
        if command == "swap":
            self._start_loader()
            self._loader.put((request_id, Path(args[0])))
            return None
        try:
            if command == "rollback":
                result: Any = self._require_engine().rollback()
            elif command == "adaptation":
                result = self._adaptation(*args)
            else:
                raise ValueError(f"unknown control {command!r}")
        except (ValueError, RuntimeError) as error:
            return request_id, False, str(error)
        return request_id, True, result

    def _adaptation(self, action: str, *args: Any) -> None:
        engine = self._require_engine()
        if action in ("enable", "disable"):
            engine.set_adaptation(action == "enable")
        else:
            learner = engine.learner
            if learner is None:
                raise RuntimeError(
                    "adaptation is off: POST /adaptation/enable first (or start with --adapt)"
                )
            getattr(learner, action)(*args)
        if self.events is not None:
            if action == "set_learning_rate":
                self.events.publish("learning_rate", lr=float(args[0]))
            else:
                self.events.publish("adaptation", action=action)
        return None

    def _on_swap(self, applied: dict[str, Any]) -> None:
        """The engine applied a swap or rollback between two bins: publish it."""
        if self.events is not None:
            self.events.publish(applied["kind"], model_id=applied["model_id"],
                                previous_model_id=applied["previous_model_id"],
                                at_seq=applied["at_seq"])  # fmt: skip

    def _start_loader(self) -> None:
        if self._loader_thread is None:
            self._loader_thread = threading.Thread(
                target=self._load_swaps, name="bci-model-loader", daemon=True
            )
            self._loader_thread.start()

    def _load_swaps(self) -> None:
        """Loader thread: load and validate requested checkpoints off the loop."""
        while (item := self._loader.get()) is not None:
            request_id, path = item
            try:
                model_id = self.swap(path)
            except (ValueError, OSError) as error:
                self._loaded.put((request_id, False, str(error)))
            else:
                self._loaded.put((request_id, True, model_id))

    def _reply(self, request_id: int, ok: bool, payload: Any) -> None:
        if self._replies is not None:
            self._replies.put((request_id, ok, payload))

    def _decode_new(self) -> None:
        """Bin what is new and decode every bin that closed."""
        inlet, engine, decoder = self.inlet, self._require_engine(), self.decoder
        assert inlet is not None and decoder is not None
        if not self._stream_usable(inlet, engine):
            return
        try:
            data, stamps = inlet.read_new()
        except RuntimeError:  # no ring yet
            return
        frontend = self.frontend
        if frontend is None:
            return
        offset = inlet.clock_offset or 0.0
        if len(stamps):
            self._ever_connected = True
            self._last_arrival = pylsl.local_clock()
            bins = frontend.feed(data, stamps)
        elif pylsl.local_clock() - self._last_arrival >= frontend.grace_s:
            bins = frontend.flush(pylsl.local_clock() - offset)  # the stream went quiet
        else:
            return
        if bins.n_bins == 0:
            return
        recording = self.recording
        # the next bin is due one bin width after this batch's last: prewarm just before it
        self._prewarm_at = bins.end_times[-1] + frontend.bin_s + offset - _PREWARM_LEAD_S
        inputs = self.channels.select(bins.data).astype(np.float32)
        for x, end in zip(inputs, bins.end_times, strict=True):
            if end <= self._skip_until:
                self.bins_skipped += 1
                continue
            decoded = decoder.decode(x, float(end), float(end) + offset)
            if recording is not None and decoded is not None:
                recording.add(float(end) + offset, x, decoded.values)
        refused = f"; output refused at {self.last_refusal}" if self.last_refusal else ""
        self._set_state("decoding", f"decoding {inlet.info.name if inlet.info else '?'}{refused}")

    def _stream_usable(self, inlet: LslInlet, engine: Engine) -> bool:
        """Check the inlet's state and schema (making the front-end on first contact);
        False, with the state saying why, when nothing can be decoded now."""
        state = inlet.state
        if state == "error":
            self._set_state("error", f"inlet failed: {inlet.state_message}")
            self._stop.set()
            return False
        if state in ("idle", "resolving") or (state in _LOST and not self._ever_connected):
            self._set_state("waiting-for-stream", inlet.state_message)
            return False
        info = inlet.info
        if info is not None and self.frontend is None:
            try:
                self.frontend = self._make_frontend(info, inlet.description, engine)
            except ValueError as error:
                self._set_state("schema-mismatch", str(error))
                return False
        if info is None or self.frontend is None:
            return False
        if not self._source_fits(info):
            return False
        if state == "schema-mismatch":  # a restarted outlet with another schema: refused
            self._set_state("schema-mismatch", inlet.state_message)
            return False
        if state in _LOST:
            self._set_state("stream-lost", f"inlet {state}: {inlet.state_message}")
        return True

    def _make_frontend(
        self, info: StreamSchema, description: dict[str, str], engine: Engine
    ) -> FrontEnd:
        """The front-end for this stream; ``ValueError`` when it cannot feed the model."""
        settings = self.settings
        bin_s = _stream_bin_s(info, description, engine)
        kind = settings.input
        if kind == "auto":
            kind = input_kind_of(
                info.nominal_srate, info.channel_format, info.n_channels, description, bin_s
            )
        if kind == "events":
            if info.n_channels != 1:
                raise ValueError(
                    f"stream {info.name!r} has {info.n_channels} channels but an events stream "
                    "has one (the channel index); pass --input for another input kind"
                )
            self.channels = ChannelMatch(None, "")
        else:
            self.channels = self._match_channels(info)
        self._source = info.source_id
        frontend = FrontEnd(
            kind,
            bin_s,
            engine.n_channels if kind == "events" else info.n_channels,
            sample_rate_hz=info.nominal_srate,
            grace_s=settings.bin_grace_ms * 1e-3,
            threshold_k=settings.threshold_k,
        )
        logger.info(
            "input %s from %s: %g Hz into %g ms bins", kind, info.describe(),
            info.nominal_srate, bin_s * 1e3,
        )  # fmt: skip
        if self.targets is not None:
            self.targets.use_bin_width(bin_s)
        return frontend

    def _source_fits(self, info: StreamSchema) -> bool:
        """After the source changed (a new source_id under the stream's name), match its
        channel labels again; False, in state ``schema-mismatch``, while they do not fit."""
        if info.source_id != self._source:
            self._source = info.source_id
            try:
                self.channels = self._match_channels(info)
                self._source_refusal = ""
            except ValueError as error:
                self._source_refusal = str(error)
        if self._source_refusal:
            self._set_state("schema-mismatch", self._source_refusal)
            return False
        return True

    def _match_channels(self, info: StreamSchema) -> ChannelMatch:
        """Which stream channel feeds which model input (:mod:`streams.channels`)."""
        assert self.inlet is not None
        match = match_channels(
            self._model_labels,
            self._require_engine().n_channels,
            self.inlet.channel_labels,
            info.n_channels,
            where=f"stream {info.name!r}",
            explicit=self._channel_map,
        )
        if match.note:
            level = logging.INFO if match.index is not None else logging.WARNING
            logger.log(level, "%s", match.note)
        return match

    def _push(self, decoded: DecodedBin) -> None:
        outlet = self.outlet
        if outlet is None or not outlet.running:
            return
        inlet = self.inlet
        offset = None if inlet is None else inlet.clock_offset
        local_stamp = decoded.timestamp + (offset or 0.0)
        values = decoded.values
        if not (np.abs(values) <= self._require_engine().output_bound).all():  # NaN: refused
            self._refuse_output(decoded)
            values = np.zeros_like(values)  # the bin's slot holds zero velocity
        outlet.push(values, local_stamp)
        now = pylsl.local_clock()
        latency = now - local_stamp
        future = latency < 0  # stamped ahead of this clock: measure from the arrival instead
        if future:
            self.future_stamped += 1
            self.largest_lead_s = max(self.largest_lead_s, -latency)
            latency = now - self._last_arrival
        deadline = self.deadline_s
        self.shared.record_latency(
            latency, deadline is not None and latency > deadline, offset is not None, future
        )

    def _refuse_output(self, decoded: DecodedBin) -> None:
        """A non-finite or implausible output is never pushed: count it, roll back to the
        previous model unless it was refused too (else hold zero velocity), say why."""
        engine = self._require_engine()
        bound = engine.output_bound
        k = int(np.flatnonzero(~(np.abs(decoded.values) <= bound))[0])
        self.outputs_refused += 1
        self._refused_models.add(decoded.model_id)
        reason = (
            f"bin {decoded.seq}: {self.kinematics_labels[k]} = {float(decoded.values[k]):.3g} "
            f"beyond the bound {float(bound[k]):.3g} of model {decoded.model_id}"
        )
        previous = engine.previous_model_id
        if previous is not None and previous not in self._refused_models:
            engine.rollback()
            self._refused_models.add(previous)  # rolled back to once; never ping-pong
            reason += f"; rolled back to model {previous}"
        else:
            reason += "; holding zero velocity until a plausible model is swapped in"
        if reason != self.last_refusal:
            logger.error("output refused: %s", reason)
        self.last_refusal = reason

    def _hold_tick(self) -> None:
        """While lost: push zero velocity once per bin."""
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


def ensure_output_free(settings: Settings, wait_s: float = 0.5) -> None:
    """``ValueError`` naming the outlet when another one already publishes the decoded
    stream's name (two daemons, one name: consumers would switch between them)."""
    name = f"{settings.output_base}{KINEMATICS_SUFFIX}"
    found = pylsl.resolve_byprop("name", name, 1, wait_s)
    if found:
        info = found[0]
        raise ValueError(
            f"an outlet named {name!r} already publishes (source_id {info.source_id()!r}, "
            f"host {info.hostname()!r}): stop it, or choose another --output-name"
        )


def output_source_id(settings: Settings, model_id: str) -> str:
    """The decoded stream's LSL source_id: host, output name and the first model's id; the
    supervisor keeps it across decoder restarts so consumers recover to the new decoder."""
    return f"bci-decoder@{socket.gethostname()}/{settings.output_base}/{model_id}"


def _stream_bin_s(info: StreamSchema, description: dict[str, str], engine: Engine) -> float:
    """The bin width on the stream's clock (s); ``ValueError`` when the stream's bins are not
    the model's.

    A session player declares ``desc/session_bin_s`` (its samples are bins, played at
    ``desc/replay_speed`` x real time: ``session_bin_s / speed`` on its clock). Any other stream is
    binned at the model's bin width.
    """
    try:
        declared = float(description.get("session_bin_s", engine.bin_s))
        speed = float(description.get("replay_speed", 1.0))
    except ValueError as error:
        raise ValueError(f"stream {info.name!r} has an unreadable desc: {error}") from None
    if not same_bin_width(declared, engine.bin_s):
        raise ValueError(
            f"stream {info.name!r} carries {declared * 1e3:g} ms bins but the model decodes "
            f"{engine.bin_s * 1e3:g} ms bins; serve a model trained at this bin width"
        )
    if not speed > 0:
        raise ValueError(f"stream {info.name!r} declares speed {speed:g}; it must be > 0")
    return declared / speed


def _counters_dict(inlet: LslInlet) -> dict[str, Any]:
    counters = vars(inlet.counters()).copy()
    ring = counters.get("ring")
    counters["ring"] = None if ring is None else vars(ring).copy()
    return counters


def latency_stats(shared: SharedState, deadline_s: float | None) -> dict[str, Any]:
    """Latency over the shared latency ring (milliseconds): ``p50_ms``/``p99_ms``/``max_ms``
    (None before the first bin), ``bins``, ``window``, ``deadline_misses``,
    ``timestamp_mapping`` (offset / raw / mixed / none: how input times met the local clock)
    and ``from_arrival`` (bins whose input was stamped ahead of the local clock: their latency
    runs from the input's arrival instead, never negative)."""
    total, misses, with_offset, window = shared.latency_window()
    stats: dict[str, float | None] = {"p50_ms": None, "p99_ms": None, "max_ms": None}
    if len(window):
        p50, p99 = np.percentile(window, [50.0, 99.0]) * 1e3
        stats = {"p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(window.max() * 1e3)}
    return {
        **stats,
        "bins": total,
        "window": len(window),
        "window_capacity": shared.layout["latency_capacity"],
        "deadline_ms": None if deadline_s is None else deadline_s * 1e3,
        "deadline_misses": misses,
        "from_arrival": shared.latency_from_arrival(),
        "timestamp_mapping": (
            "none"
            if total == 0
            else "offset"
            if with_offset == total
            else "raw"
            if with_offset == 0
            else "mixed"
        ),
    }
