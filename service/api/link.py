"""The API's view of the decoder: it reads what the decoder loop publishes in shared memory and
sends it controls through a queue; nothing here can make the loop wait.

The decoder answers each control (``(id, ok, result or error text)``) on the reply queue; a
thread of the API process hands answers to the requests waiting for them. While the
supervisor restarts a dead decoder process, or when the decoder's heartbeat is older than
``stale_after_s``, :meth:`DecoderLink.status` says so in ``state`` and ``message``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np

from service.daemon_status import latency_stats
from service.lifecycle import DecoderState, SupervisorState
from service.settings import Settings
from service.shared_state import SharedState

__all__ = ["ControlRefused", "DecoderLink"]

logger = logging.getLogger(__name__)


class ControlRefused(ValueError):
    """The decoder refused a control; the message says why and what to do."""


class DecoderLink:
    """Read the decoder's shared state and send it controls (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        shared: SharedState,
        controls: Any,
        replies: Any,
        *,
        stale_after_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self._controls, self._replies = controls, replies
        self.stale_after_s = float(stale_after_s)
        self._ids = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_replies, name="bci-replies", daemon=True)
        self._reader.start()

    def close(self) -> None:
        self._closed.set()
        self._reader.join(2.0)

    # -- reading -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The decoder's status document, with ``state``/``message`` telling when the decoder
        process is being restarted or has stopped answering, and ``decoder`` its process."""
        status = self.shared.status() or {
            "state": DecoderState.STARTING,
            "message": "the decoder process is starting",
        }
        process = self.shared.decoder()
        status["decoder"] = process
        age = process["heartbeat_age_s"]
        if process["supervisor"] == SupervisorState.RESTARTING:
            status.update(
                state=DecoderState.RESTARTING,
                message=f"the decoder process died and is being restarted (restart "
                f"{process['restarts']}); the output holds zero velocity meanwhile",
                holding=True,
            )
        elif (
            status.get("state") not in (DecoderState.STOPPED, DecoderState.ERROR)
            and age is not None
        ):
            if age > self.stale_after_s:
                status.update(
                    state=DecoderState.ERROR,
                    message=f"the decoder process has not answered for {age:.1f} s",
                )
        status.setdefault("labels", [])
        status.setdefault("holding", False)
        return status

    @property
    def recent(self) -> SharedState:
        """The recent decoded bins (``latest()``, ``recent(n)``, ``since(seq)``)."""
        return self.shared

    def latency(self, status: dict[str, Any] | None = None) -> dict[str, Any]:
        """Latency statistics over the shared ring (see :func:`latency_stats`)."""
        status = self.status() if status is None else status
        return latency_stats(self.shared, status.get("deadline_s"))

    def latency_samples(self) -> tuple[int, np.ndarray]:
        """``(bins measured in total, the ring's latencies in seconds, oldest first)``."""
        total, _, _, window = self.shared.latency_window()
        return total, window

    # -- controls ------------------------------------------------------------------------------
    def control(self, command: str, *args: Any, timeout: float = 10.0) -> Any:
        """Ask the decoder loop to run ``command`` between bins and return its answer.

        Raises :class:`ControlRefused` with the decoder's reason, ``TimeoutError`` when no
        answer came within ``timeout`` seconds (e.g. the decoder is being restarted).
        """
        request_id = next(self._ids)
        future: Future = Future()
        with self._lock:
            self._pending[request_id] = future
        try:
            self._controls.put((request_id, command, args))
            ok, payload = future.result(timeout)
        except TimeoutError:
            raise TimeoutError(
                f"the decoder did not answer '{command}' within {timeout:g} s "
                f"({self.status()['state']}); try again"
            ) from None
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        if not ok:
            raise ControlRefused(str(payload))
        return payload

    def _read_replies(self) -> None:
        while not self._closed.is_set():
            try:
                request_id, ok, payload = self._replies.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):  # the queue's other end is gone
                return
            with self._lock:
                future = self._pending.get(request_id)
            if future is not None and not future.done():
                future.set_result((ok, payload))
