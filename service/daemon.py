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

States (``Daemon.state``, a :class:`~service.lifecycle.DecoderState`; transitions logged):
``starting``, ``waiting-for-stream``, ``decoding``, ``stream-lost`` (stalled or lost after
data had flowed; the output *holds*: zero velocity at the model's bin rate; sequence numbers
count decoded bins only), ``schema-mismatch`` (channel count, bin width or input kind do not
fit the model; after data had flowed the output holds as when lost), ``stopped``, ``error``.
The API adds ``restarting`` while the supervisor restarts a dead decoder process.

Collaborators, one job each: :mod:`service.daemon_input` (does the stream fit the model;
its front-end), :mod:`service.daemon_output` (push, refuse, hold; latency: each bin's push
minus its close on the local clock, a miss beyond ``deadline_s``, default the model's bin
width), :mod:`service.daemon_controls` (the API's requests, swaps loaded off the loop) and
:mod:`service.daemon_status` (the status document's parts, latency statistics).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

from bci.checkpoint import DecoderFile, load_decoder
from bci.runtime import single_threaded_blas
from service.daemon_controls import ControlServer
from service.daemon_input import InputMatch
from service.daemon_output import DecodedOutput, ensure_output_free, output_source_id
from service.daemon_status import latency_stats, outlet_status, stream_status
from service.decoding import BinDecoder
from service.engine import Engine, Sink
from service.events import EventOutlet
from service.idle_gc import IdleCollector
from service.lifecycle import DecoderState
from service.recording import DecodedRecording
from service.settings import Settings
from service.shared_state import DecodedBin, SharedState
from service.targets import IntentionTargets, TargetFeed
from streams.channels import read_channel_map
from streams.frontend import FrontEnd
from streams.lsl_inlet import LslInlet
from streams.lsl_outlet import KINEMATICS_SUFFIX, KinematicsOutlet
from streams.lsl_status import InletState

__all__ = ["Daemon"]

logger = logging.getLogger(__name__)

_LOST = (InletState.STALLED, InletState.LOST)
_STATE_EVENTS = {
    DecoderState.STREAM_LOST: "stream_lost",
    DecoderState.SCHEMA_MISMATCH: "schema_mismatch",
}
_TARGET_POLL_S = 0.0005  # wait between looks while an update waits for late targets
_PREWARM_LEAD_S = 0.0005  # prewarm the decoder this long before the next bin is due
_EVENTS_CAPACITY = 1 << 16  # ring rows for a spike-event stream (irregular rate)


class Daemon:
    """Decode the neural stream named by ``settings`` with its checkpoint, live.

    Lifecycle: :meth:`start` runs :meth:`prepare` (loads the model, opens the outlet, the
    inlet and the target streams; raises ``ValueError`` for a missing or invalid checkpoint)
    and the loop on a thread; :meth:`stop` ends it; also a context manager. The decoder
    process calls :meth:`prepare` and :meth:`run` on its main thread instead.

    ``state``: the shared block to write (default: a private one, readable in-process);
    a restarted decoder continues its sequence numbers and skips bins it already decoded.
    ``controls`` / ``replies``: the API's request and answer queues (see
    :data:`~service.daemon_controls.Control`).
    ``before_outlet`` is called right before the outlet opens (the supervisor closes its
    zero-velocity stand-in then). ``output_source_id`` is the outlet's LSL source_id
    (default: :func:`~service.daemon_output.output_source_id`); ``realtime`` says what
    scheduling the process got.
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
        self._input: InputMatch | None = None  # stream channel -> model input
        self._output: DecodedOutput | None = None  # pushes, refusals, holds, latency
        self._control_server: ControlServer | None = None
        self._rollbacks_seen = 0  # e-prop rollbacks already published
        self.kinematics_labels: tuple[str, ...] = ()
        self._blas_limits: Any = None
        self._state = DecoderState.STARTING
        self._message = "not started"
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ever_connected = False
        self._skip_until = -np.inf  # bins ending at or before this were decoded already
        self._prewarm_at: float | None = None  # local clock time to prewarm the decoder
        self._collector = IdleCollector()  # garbage collection between bins, not in them
        self._last_arrival = 0.0  # local clock time samples last came
        self._next_status = 0.0
        self._published_model: str | None = None  # model id in the latest status document
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
        channel_map = None  # --channel-map, read now: a bad file stops the start
        if settings.channel_map is not None:
            channel_map = read_channel_map(settings.channel_map)
        self._skip_until = self._shared.last_stamp
        self.engine = Engine(
            checkpoint,
            adapt=settings.adapt,
            track_inputs_s=settings.track_inputs,
            sinks=[self._push, self._shared.write_bin, *self.sinks],
            defer_updates=True,  # run by the BinDecoder once the window's targets are in
            first_seq=self._shared.bins_written,
        )
        if self.deadline_s is None:
            self.deadline_s = float(self.engine.bin_s)
        if self._before_outlet is None:  # supervised, the supervisor checked the name
            ensure_output_free(settings)
        if settings.record is not None:  # before the outlet: an existing file stops here
            self.recording = self._open_recording(settings.record, checkpoint, self.engine)
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
        self._output = DecodedOutput(
            self.outlet, self.engine, self._shared, self.deadline_s, self.kinematics_labels
        )
        self.events = EventOutlet(settings.output_base, source_id)
        # Daemon.swap looked up per request: the one entry for swaps, from the API or not
        self._control_server = ControlServer(self.engine, self.events, lambda p: self.swap(p))
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
        self._input = InputMatch(
            settings, self.engine, self.inlet, checkpoint.manifest, channel_map
        )
        self._set_state(DecoderState.WAITING_FOR_STREAM, f"looking for stream {settings.stream!r}")
        return self

    def _open_recording(
        self, path: Path, checkpoint: DecoderFile, engine: Engine
    ) -> DecodedRecording:
        """The recording of the input and decoded streams at ``path`` (``--record``)."""
        settings = self.settings
        return DecodedRecording(
            path,
            input_name=settings.stream,
            n_channels=engine.n_channels,
            output_name=f"{settings.output_base}{KINEMATICS_SUFFIX}",
            output_labels=self.kinematics_labels,
            rate_hz=1.0 / engine.bin_s,
            # labels, units and the live streams' own headers (known once they are open)
            input_labels=checkpoint.manifest.channel_labels,
            output_units=checkpoint.manifest.kinematics_units,
            source_header=lambda: self.inlet.header_xml if self.inlet else None,
            output_header=lambda: self.outlet.header_xml() if self.outlet else None,
        )

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
        if self._control_server is not None:
            self._control_server.close()
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
        if self._state != DecoderState.STOPPED:
            self._set_state(DecoderState.STOPPED, "stopped by stop()")
        if self._shared is not None:
            self._publish_status()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------------
    @property
    def state(self) -> DecoderState:
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
        return self._ever_connected and self.state.holds_output

    def latency(self) -> dict[str, Any]:
        """Latency over the latency ring's bins (milliseconds); see :func:`latency_stats`."""
        return latency_stats(self.shared, self.deadline_s)

    def _set_state(self, state: DecoderState, message: str) -> None:
        with self._state_lock:
            previous = self._state
            if state == previous:
                self._message = message
                return
            self._state, self._message = state, message
        level = logging.WARNING if state.holds_output else logging.INFO
        if state == DecoderState.ERROR:
            level = logging.ERROR
        logger.log(level, "daemon %s -> %s: %s", previous, state, message)
        if state.holds_output and self._output is not None:
            self._output.next_hold = 0.0  # the first zero-velocity sample goes out at once
        self._next_status = 0.0  # readers see the change at once
        event = _STATE_EVENTS.get(state)
        if state == DecoderState.DECODING and previous.holds_output:
            event = "stream_restored"
        if event is not None and self.events is not None:
            self.events.publish(event, message=message)

    def status(self) -> dict[str, Any]:
        """The status document the API serves (see :mod:`service.api.link`)."""
        engine = self.engine
        stream = stream_status(self.settings.stream, self.inlet, self.frontend, self._output)
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
            "outlet": outlet_status(self.outlet, self._output, self.bins_skipped),
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
            with self._collector:
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
            self._set_state(DecoderState.ERROR, f"{type(error).__name__}: {error}")
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
        output = self._output
        if self.holding and output is not None:
            wait = min(wait, max(0.0, output.next_hold - time.monotonic()))
        if self._prewarm_at is not None:
            wait = min(wait, max(0.0, self._prewarm_at - pylsl.local_clock()))
        return wait

    def _between_bins(self) -> None:
        if self.holding and self._output is not None:
            self._output.hold_tick()
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
        self._collector.collect_due()  # the bin is out: garbage collection costs no bin

    def _serve_controls(self, fail: bool = False) -> None:
        """Answer the API's requests (between bins) and the swaps the loader has finished
        (see :meth:`ControlServer.take_answers`; ``fail``: the loop ended)."""
        server = self._control_server
        if server is None:
            return
        answers = server.take_answers(self._controls, fail)
        if answers:  # readers see each answer's effect as soon as they have the answer
            self._publish_status()
            if self._replies is not None:
                for answer in answers:
                    self._replies.put(answer)

    def _on_swap(self, applied: dict[str, Any]) -> None:
        """The engine applied a swap or rollback between two bins: publish it."""
        if self.events is not None:
            self.events.publish(applied["kind"], model_id=applied["model_id"],
                                previous_model_id=applied["previous_model_id"],
                                at_seq=applied["at_seq"])  # fmt: skip

    def _decode_new(self) -> None:
        """Bin what is new and decode every bin that closed."""
        inlet, match, decoder = self.inlet, self._input, self.decoder
        assert inlet is not None and match is not None and decoder is not None
        if not self._stream_usable(inlet, match):
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
        inputs = match.channels.select(bins.data).astype(np.float32)
        for x, end in zip(inputs, bins.end_times, strict=True):
            if end <= self._skip_until:
                self.bins_skipped += 1
                continue
            decoded = decoder.step(x, float(end), float(end) + offset)
            if recording is not None and decoded is not None:
                recording.add(float(end) + offset, x, decoded.values)
        refused = f"; output refused at {self.last_refusal}" if self.last_refusal else ""
        self._set_state(
            DecoderState.DECODING, f"decoding {inlet.info.name if inlet.info else '?'}{refused}"
        )

    def _stream_usable(self, inlet: LslInlet, match: InputMatch) -> bool:
        """Check the inlet's state and schema (making the front-end on first contact);
        False, with the state saying why, when nothing can be decoded now."""
        state = inlet.state
        if state == InletState.ERROR:
            self._set_state(DecoderState.ERROR, f"inlet failed: {inlet.state_message}")
            self._stop.set()
            return False
        waiting = state in (InletState.IDLE, InletState.RESOLVING)
        if waiting or (state in _LOST and not self._ever_connected):
            self._set_state(DecoderState.WAITING_FOR_STREAM, inlet.state_message)
            return False
        info = inlet.info
        if info is not None and self.frontend is None:
            try:
                frontend = match.make_frontend(info, inlet.description)
                if self.targets is not None:
                    self.targets.use_bin_width(frontend.bin_s)
            except ValueError as error:
                self._set_state(DecoderState.SCHEMA_MISMATCH, str(error))
                return False
            self.frontend = frontend
        if info is None or self.frontend is None:
            return False
        refusal = match.source_refusal(info)
        if refusal:  # a new source whose channels do not fit
            self._set_state(DecoderState.SCHEMA_MISMATCH, refusal)
            return False
        if state == InletState.SCHEMA_MISMATCH:  # a restarted outlet, another schema: refused
            self._set_state(DecoderState.SCHEMA_MISMATCH, inlet.state_message)
            return False
        if state in _LOST:
            self._set_state(DecoderState.STREAM_LOST, f"inlet {state}: {inlet.state_message}")
        return True

    def _push(self, decoded: DecodedBin) -> None:
        """The engine's first sink: push ``decoded`` to the outlet (see :class:`DecodedOutput`)."""
        output = self._output
        if output is None:
            return
        inlet = self.inlet
        offset = None if inlet is None else inlet.clock_offset
        output.push(decoded, offset, self._last_arrival)

    @property
    def outputs_refused(self) -> int:
        """Non-finite or implausible outputs, zero pushed instead."""
        return 0 if self._output is None else self._output.refused

    @property
    def last_refusal(self) -> str:
        """Why the latest output was refused, and what was done ("" before one)."""
        return "" if self._output is None else self._output.last_refusal

    @property
    def hold_pushes(self) -> int:
        """Zero-velocity samples pushed while the stream was lost."""
        return 0 if self._output is None else self._output.hold_pushes
