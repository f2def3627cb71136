"""The API's requests to the decoding loop, served between two bins.

Requests come on a queue as :data:`Control` tuples and are answered on another as
``(request id, ok, result or error text)``. A swap is loaded and validated on a loader thread
(off the loop; the engine applies it between two bins) and answered once loaded; rollbacks and
adaptation controls run on the loop's thread when drained.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.engine import Engine
from service.events import EventOutlet

__all__ = ["Control", "ControlServer"]

Control = tuple[int, str, tuple[Any, ...]]
"""A request from the API: ``(request id, command, arguments)``."""

Answer = tuple[int, bool, Any]
"""An answer to the API: ``(request id, ok, result or error text)``."""


class ControlServer:
    """Serve the API's requests on ``engine``; adaptation controls are published on
    ``events``. ``swap(path)`` validates and stages a checkpoint (on the loader thread) and
    returns its model id, or raises ``ValueError`` / ``OSError``."""

    def __init__(self, engine: Engine, events: EventOutlet, swap: Callable[[Path], str]) -> None:
        self.engine = engine
        self.events = events
        self.swap = swap
        self._loader: queue.SimpleQueue[tuple[int, Path] | None] = queue.SimpleQueue()
        self._loader_thread: threading.Thread | None = None
        self._loaded: queue.SimpleQueue[Answer] = queue.SimpleQueue()

    def take_answers(self, controls: Any, fail: bool = False) -> list[Answer]:
        """Serve the requests waiting on ``controls`` (None: no API) and collect the answers
        due, with the swaps the loader has finished; with ``fail`` (the loop ended) only the
        finished swaps: new requests stay unanswered, and the API times out saying the decoder
        did not answer."""
        answers = []
        while True:  # swaps the loader thread has validated and staged (or refused)
            try:
                answers.append(self._loaded.get_nowait())
            except queue.Empty:
                break
        while controls is not None and not fail:
            try:
                request = controls.get_nowait()
            except queue.Empty:
                break
            answer = self._serve(request)
            if answer is not None:
                answers.append(answer)
        return answers

    def close(self) -> None:
        """Stop the loader thread (a swap being loaded finishes first)."""
        if self._loader_thread is not None:
            self._loader.put(None)
            self._loader_thread.join(5.0)
            self._loader_thread = None

    def _serve(self, request: Control) -> Answer | None:
        """One API request: swaps go to the loader thread (answered when loaded), the rest is
        done here; returns the answer."""
        request_id, command, args = request
        if command == "swap":
            self._start_loader()
            self._loader.put((request_id, Path(args[0])))
            return None
        try:
            if command == "rollback":
                result: Any = self.engine.rollback()
            elif command == "adaptation":
                result = self._adaptation(*args)
            else:
                raise ValueError(f"unknown control {command!r}")
        except (ValueError, RuntimeError) as error:
            return request_id, False, str(error)
        return request_id, True, result

    def _adaptation(self, action: str, *args: Any) -> None:
        engine = self.engine
        if action in ("enable", "disable"):
            engine.set_adaptation(action == "enable")
        else:
            learner = engine.learner
            if learner is None:
                raise RuntimeError(
                    "adaptation is off: POST /adaptation/enable first (or start with --adapt)"
                )
            getattr(learner, action)(*args)
        if action == "set_learning_rate":
            self.events.publish("learning_rate", lr=float(args[0]))
        else:
            self.events.publish("adaptation", action=action)
        return None

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
