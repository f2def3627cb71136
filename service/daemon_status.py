"""The parts of the daemon's status document the API serves, and its latency statistics.

The decoding loop publishes the document (:meth:`service.daemon.Daemon.status`) to the
shared block; the API reads it and computes :func:`latency_stats` over the shared latency
ring, so both processes report the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.daemon_output import DecodedOutput
from service.shared_state import SharedState
from streams.frontend import FrontEnd
from streams.lsl_inlet import LslInlet
from streams.lsl_outlet import KinematicsOutlet

__all__ = ["latency_stats", "outlet_status", "stream_status"]


def stream_status(
    name: str, inlet: LslInlet | None, frontend: FrontEnd | None, output: DecodedOutput | None
) -> dict[str, Any]:
    """The ``stream`` part: the input stream ``name``'s inlet state, schema, counters and
    clock offset (s), the front-end's input kind and counters, and the bins whose input was
    stamped ahead of the local clock (``future_stamped``: ``bins``, ``largest_lead_ms``)."""
    info = None if inlet is None else inlet.info
    stream: dict[str, Any] = {"name": name, "state": None, "message": None,
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
        "bins": 0 if output is None else output.future_stamped,
        "largest_lead_ms": (0.0 if output is None else output.largest_lead_s) * 1e3,
    }
    return stream


def outlet_status(
    outlet: KinematicsOutlet | None, output: DecodedOutput | None, bins_skipped: int
) -> dict[str, Any]:
    """The ``outlet`` part: its name, samples pushed, refused outputs (``push_errors``, the
    API's name) with the latest refusal, zero-velocity holds, and ``bins_skipped`` (bins a
    previous decoder process had decoded already)."""
    return {
        "name": None if outlet is None else outlet.name,
        "pushed": 0 if outlet is None else outlet.pushed,
        "push_errors": 0 if output is None else output.refused,
        "last_refusal": None if output is None else output.last_refusal or None,
        "hold_pushes": 0 if output is None else output.hold_pushes,
        "bins_skipped": bins_skipped,
    }


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
