"""``bci serve``: the decoder process, the API process, and the supervisor that restarts them.

Process layout::

    supervisor (bci serve: owns the shared block, the queues and the HTTP socket)
      |-- decoder process: LSL inlet -> front-end -> engine -> outlet; no HTTP, no asyncio
      |      writes SharedState (bins, latency, status, heartbeat); drains the control queue
      |-- API process: FastAPI + uvicorn on the supervisor's socket; reads SharedState,
             puts controls on the control queue, takes answers from the reply queue

Both children are started with the ``spawn`` method and die with the supervisor
(:func:`streams.lifetime.die_with_parent`). When the API process dies, decoding goes on and a
new API process serves the same socket. When the decoder process dies, the supervisor marks
the shared block ``restarting`` (``/health`` says so), pushes zero velocity at the bin rate on
a stand-in outlet with the decoder's name and source_id (consumers that recover by source_id
keep receiving), and starts a new decoder with the model that was decoding (read from the last
status document) and the adaptation setting it had; the new decoder continues the sequence
numbers and skips bins the dead one had decoded. The stand-in closes right before the new
decoder opens its outlet.

The API process runs at a lower CPU priority (``os.nice(API_NICENESS)``): whatever its
clients make it do, the decoder, the rig's acquisition and the lab's other processes come
first when the cores are busy.

The decoder process imports numpy, numba and pylsl, not torch (checkpoints load through
safetensors' numpy API). With ``realtime`` it asks for SCHED_FIFO priority on a pinned core
and logs, and publishes in its status, whether the system allowed it.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bci.checkpoint import read_manifest
from service.daemon_output import ensure_output_free, output_source_id
from service.lifecycle import SupervisorState
from service.settings import Settings
from service.shared_state import SharedState
from streams.lsl_outlet import KinematicsOutlet

__all__ = ["Supervisor", "request_realtime", "serve_supervised"]

logger = logging.getLogger(__name__)

_CTX = multiprocessing.get_context("spawn")
_START_TIMEOUT_S = 60.0  # a decoder that is not ready by then failed to start
_RESTART_PAUSE_S = 0.5  # least time between two restarts of the same process
_HANDOVER_S = 1.0  # longest wait for a consumer to reach the stand-in before it closes
API_NICENESS = 10  # the API process yields the CPU to the decoder and the rig


@dataclass(frozen=True)
class _DecoderArgs:
    settings: Settings
    shared_name: str
    layout: dict[str, int]
    source_id: str


class Supervisor:
    """Run the decoder and API processes for ``settings`` on ``listener`` (see the module
    docstring). :meth:`start` returns once the decoder has loaded its model and opened its
    streams (``ValueError`` naming the problem when it could not); :meth:`run` then watches
    both processes until :meth:`stop`."""

    def __init__(self, settings: Settings, listener: socket.socket) -> None:
        if settings.model is None:
            raise ValueError("no model to decode with: pass --model PATH or set BCI_MODEL")
        self.settings = settings
        self.listener = listener
        manifest = read_manifest(settings.model)
        self.labels = tuple(manifest.kinematics_labels)
        self.units: list[str] | None = manifest.kinematics_units  # None: not known
        self.bin_s = float(manifest.bin_s)
        self.source_id = output_source_id(settings, manifest.model_id)
        self.shared = SharedState.create(len(self.labels))
        self.controls = _CTX.Queue()
        self.replies = _CTX.Queue()
        self.decoder: Any = None
        self.api: Any = None
        self.restarts = {"decoder": 0, "api": 0}
        self._stop = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Supervisor:
        ensure_output_free(self.settings)  # before any process starts
        self.decoder = self._start_decoder(self.settings, stand_in=None)
        self.api = self._start_api()
        return self

    def run(self, seconds: float | None = None) -> None:
        """Watch both processes; restart whichever dies, until :meth:`stop` (or ``seconds``)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self._stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            sentinels = [p.sentinel for p in (self.decoder, self.api) if p is not None]
            multiprocessing.connection.wait(sentinels, timeout=0.2)
            if self._stop.is_set():
                break
            if self.api is not None and not self.api.is_alive():
                self._restart_api()
            if self.decoder is not None and not self.decoder.is_alive():
                self._restart_decoder()

    def stop(self, timeout: float = 10.0) -> None:
        """End both processes (SIGTERM, then SIGKILL after ``timeout``) and free the block."""
        self._stop.set()
        for process in (self.api, self.decoder):
            if process is not None and process.is_alive():
                process.terminate()
        for process in (self.api, self.decoder):
            if process is not None:
                process.join(timeout)
                if process.is_alive():
                    process.kill()
                    process.join(2.0)
        self.shared.set_supervisor(SupervisorState.STOPPED)
        self.shared.close()

    # -- decoder -----------------------------------------------------------------------------
    def _start_decoder(self, settings: Settings, stand_in: _StandIn | None) -> Any:
        ready, outlet_free = _CTX.Event(), _CTX.Event()
        errors_r, errors_w = _CTX.Pipe(duplex=False)
        args = _DecoderArgs(settings, self.shared.name, self.shared.layout, self.source_id)
        process = _CTX.Process(
            target=_decoder_main,
            args=(args, self.controls, self.replies, ready, outlet_free, errors_w, os.getpid()),
            name="bci-decoder",
        )
        process.start()
        errors_w.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not ready.wait(0.05):
            if not process.is_alive() or time.monotonic() > deadline:
                message = errors_r.recv() if errors_r.poll(1.0) else ""
                process.join(1.0)
                if process.is_alive():
                    process.kill()
                raise ValueError(message or f"the decoder process ended (exit {process.exitcode})")
        if stand_in is not None:  # the new decoder's outlet takes over the stream
            stand_in.handover(_HANDOVER_S)
        outlet_free.set()
        self.shared.set_supervisor(SupervisorState.RUNNING, self.restarts["decoder"])
        return process

    def _restart_decoder(self) -> None:
        code = self.decoder.exitcode
        self.restarts["decoder"] += 1
        self.shared.set_supervisor(SupervisorState.RESTARTING, self.restarts["decoder"])
        logger.error("decoder process died (exit %s); restarting it", code)
        stand_in = _StandIn(self.settings.output_base, self.labels, self.units, self.bin_s,
                            self.source_id)  # fmt: skip
        settings = self._current_settings()
        time.sleep(_RESTART_PAUSE_S)
        while not self._stop.is_set():
            try:
                self.decoder = self._start_decoder(settings, stand_in)
                logger.info("decoder process restarted with %s", settings.model)
                return
            except ValueError as error:
                logger.error("decoder restart failed: %s; trying again", error)
                time.sleep(1.0)
        stand_in.close()

    def _current_settings(self) -> Settings:
        """The settings a restarted decoder needs: the model that was decoding and whether
        it adapted (from the last status document); a recording is not reopened."""
        engine = self.shared.status().get("engine") or {}
        path = engine.get("model_path")
        update: dict[str, Any] = {"record": None}
        if path and Path(path).is_file():
            update["model"] = Path(path)
        if engine:
            update["adapt"] = engine.get("adaptation") is not None
        return self.settings.model_copy(update=update)

    # -- API -----------------------------------------------------------------------------------
    def _start_api(self) -> Any:
        process = _CTX.Process(
            target=_api_main,
            args=(
                self.settings,
                self.listener,
                self.shared.name,
                self.shared.layout,
                self.controls,
                self.replies,
                os.getpid(),
            ),
            name="bci-api",
        )
        process.start()
        return process

    def _restart_api(self) -> None:
        self.restarts["api"] += 1
        logger.error("API process died (exit %s); restarting it", self.api.exitcode)
        time.sleep(_RESTART_PAUSE_S)
        self.api = self._start_api()


def serve_supervised(
    settings: Settings,
    listener: socket.socket,
    announce: Callable[[], None],
    seconds: float | None = None,
) -> None:
    """Run a :class:`Supervisor` until SIGINT / SIGTERM (or ``seconds``), then stop it.

    ``announce`` is called once the decoder has loaded its model and opened its streams
    (print the URL there): a start that fails raises ``ValueError`` before it.
    """
    supervisor = Supervisor(settings, listener)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        supervisor.start()
        announce()
        supervisor.run(seconds)
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
        signal.signal(signal.SIGTERM, previous)


class _StandIn:
    """Zero velocity at the bin rate on the decoded stream while no decoder runs."""

    def __init__(self, name: str, labels: tuple[str, ...], units: list[str] | None,
                 bin_s: float, source_id: str):  # fmt: skip
        self.outlet = KinematicsOutlet(name, labels=labels, units=units,
                                       nominal_srate=1.0 / bin_s, source_id=source_id,
                                       component="bci serve (decoder restarting)")  # fmt: skip
        self.bin_s = bin_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bci-stand-in", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        zeros = np.zeros(len(self.outlet.labels), dtype=np.float32)
        while not self._stop.wait(self.bin_s):
            self.outlet.push(zeros)

    def handover(self, wait_s: float) -> None:
        """Close once a consumer has received zeros, or after ``wait_s`` without one: liblsl
        consumers take a moment to recover to a replaced outlet, and meanwhile they should
        see the hold rather than nothing."""
        deadline = time.monotonic() + wait_s
        while not self.outlet.have_consumers and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.outlet.have_consumers:
            time.sleep(2 * self.bin_s)  # at least one zero sample reaches it
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.outlet.close()


# -- process entry points ------------------------------------------------------------------
def _decoder_main(
    args: _DecoderArgs,
    controls: Any,
    replies: Any,
    ready: Any,
    outlet_free: Any,
    errors: Any,
    parent_pid: int,
) -> None:
    """The decoder process: prepare, say ready, wait for the outlet name, decode."""
    from service.daemon import Daemon
    from streams.lifetime import die_with_parent

    die_with_parent(parent_pid)
    _child_logging(args.settings)
    realtime = request_realtime() if args.settings.realtime else "off"
    shared = SharedState.attach(args.shared_name, args.layout)

    def before_outlet() -> None:
        ready.set()
        outlet_free.wait()

    daemon = Daemon(
        args.settings,
        state=shared,
        controls=controls,
        replies=replies,
        before_outlet=before_outlet,
        output_source_id=args.source_id,
        realtime=realtime,
    )
    signal.signal(signal.SIGTERM, lambda *_: daemon.request_stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    try:
        daemon.prepare()
    except (ValueError, OSError) as error:
        errors.send(str(error))
        raise SystemExit(1) from None
    daemon.run()


def _api_main(
    settings: Settings,
    listener: socket.socket,
    shared_name: str,
    layout: dict[str, int],
    controls: Any,
    replies: Any,
    parent_pid: int,
) -> None:
    """The API process: serve the app on the supervisor's socket until SIGTERM."""
    from service.api.app import create_app
    from service.api.link import DecoderLink
    from service.api.server import serve
    from streams.lifetime import die_with_parent

    die_with_parent(parent_pid)
    os.nice(API_NICENESS)
    _child_logging(settings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    link = DecoderLink(settings, SharedState.attach(shared_name, layout), controls, replies)
    serve(create_app(settings, link), listener)
    link.close()


def _child_logging(settings: Settings) -> None:
    level = os.environ.get("BCI_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(processName)s %(name)s: %(message)s")


def request_realtime(priority: int = 50) -> str:
    """Ask for SCHED_FIFO on the last core; returns what the system allowed, in words."""
    core = max(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(0, {core})
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as error:
        message = (f"refused: SCHED_FIFO priority {priority} on core {core} not allowed "
                   f"({error.strerror}); run as root or grant CAP_SYS_NICE")  # fmt: skip
        logger.warning("--realtime %s; decoding at normal priority", message)
        return message
    logger.info("decoder process: SCHED_FIFO priority %d on core %d", priority, core)
    return f"SCHED_FIFO priority {priority} on core {core}"
