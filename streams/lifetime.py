"""Child processes that die with their parent, even when the parent is SIGKILLed.

Call :func:`die_with_parent` first thing in a child process (the target of a
``multiprocessing`` process or a ``preexec_fn``). On Linux the kernel sends the child
``SIGTERM`` when the thread that created it exits (``prctl(PR_SET_PDEATHSIG)``); if the parent
is already gone by the time the child asks, the child exits at once. Elsewhere a daemon thread
watches the parent's pid and terminates the child within ``poll_s`` of the parent's death.

The parent's side: a command that owns children runs its work inside
:func:`sigterm_as_interrupt`, so ``kill PID`` unwinds it as Ctrl-C does (``with`` blocks
exit, children are stopped) instead of ending the process on the spot.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["die_with_parent", "sigterm_as_interrupt"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, poll_s: float = 0.5) -> None:
    """Arrange for this process to receive SIGTERM when its parent dies.

    ``parent_pid`` is the pid the caller expects as parent (default: ``os.getppid()`` now);
    when the real parent already differs (the parent died before this call), the process
    terminates itself immediately.
    """
    expected = os.getppid() if parent_pid is None else int(parent_pid)
    if sys.platform.startswith("linux") and _set_pdeathsig(signal.SIGTERM):
        if os.getppid() != expected:  # died between fork and prctl: no signal will come
            os.kill(os.getpid(), signal.SIGTERM)
        return
    threading.Thread(
        target=_watch_parent, args=(expected, poll_s), name="parent-watch", daemon=True
    ).start()


def _set_pdeathsig(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError) as error:  # pragma: no cover - exotic libc
        logger.warning("prctl(PR_SET_PDEATHSIG) unavailable (%s); watching the parent", error)
        return False


def _watch_parent(expected: int, poll_s: float) -> None:  # pragma: no cover - non-Linux
    while os.getppid() == expected:
        time.sleep(poll_s)
    os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` in the main thread (as Ctrl-C
    does); the previous handler is restored on exit. Elsewhere than in the main thread (where
    Python delivers signals) it changes nothing."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
