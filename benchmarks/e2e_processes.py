"""The child processes of :mod:`e2e_latency` (spawned, so each has its own interpreter and
GIL): the pusher that keeps the sample schedule, the relay (the two-hop LSL floor), the
reader that times each output, and the dashboard clients. Each reports with
``results.put((tag, payload))`` and ignores Ctrl-C: the parent stops them through events."""

from __future__ import annotations

import collections
import json
import math
import multiprocessing
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pylsl

from streams.lsl_outlet import (
    KINEMATICS_SUFFIX,
    KINEMATICS_TYPE,
    NEURAL_TYPE,
    open_outlet,
    wait_for_consumers,
)
from streams.schedule import PushSchedule

N_IN, N_OUT = 96, 2
SPIKE_RATE_HZ = 30.0  # Poisson rate per channel; counts per bin = SPIKE_RATE_HZ / R
API = "/api/v1"
MODEL_PANELS = ("/model", "/model/available")
SPIN_S = 2e-4  # spin before each push (sleep overshoots ~0.1 ms), at most a quarter period


def _quiet_sigint() -> None:
    """Children ignore Ctrl-C: the parent stops them through events and kills stragglers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stopped(stop: Any) -> bool:
    """True once the parent set ``stop`` or died without setting it."""
    return stop.is_set() or not multiprocessing.parent_process().is_alive()


def _wait_stopped(stop: Any, timeout: float = math.inf) -> None:
    """Return after ``timeout`` seconds or once :func:`_stopped`."""
    deadline = time.monotonic() + timeout
    while not _stopped(stop) and time.monotonic() < deadline:
        stop.wait(min(0.5, max(deadline - time.monotonic(), 0.0)))


# --- pusher process ------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """A neural stream: ``sample_rate`` Hz, ``per_bin`` samples per bin of the decoder."""

    sample_rate: int
    per_bin: int

    @property
    def bin_rate(self) -> float:
        return self.sample_rate / self.per_bin

    @property
    def label(self) -> str:
        if self.per_bin == 1:
            return f"{self.sample_rate} Hz bins"
        return f"{self.sample_rate} Hz counts, {1e3 / self.bin_rate:g} ms bins"


def push(
    name: str,
    source_id: str,
    stream: Input,
    n_bins: int,
    wait_target_s: float,
    seed: int,
    started: Any,
    stop: Any,
    results: Any,
) -> None:
    """Push ``n_bins`` bins of samples on the stamp grid; put ``("pusher", stats)``."""
    _quiet_sigint()
    common = {"source_id": source_id, "component": "e2e_latency benchmark"}
    neural = open_outlet(name, NEURAL_TYPE, [f"ch{c}" for c in range(N_IN)], "counts",
                         float(stream.sample_rate), **common)  # fmt: skip
    common["source_id"] = f"{source_id}-kinematics"
    target = open_outlet(f"{name}{KINEMATICS_SUFFIX}", KINEMATICS_TYPE, ["vx", "vy"], "cm/s",
                         stream.bin_rate, **common)  # fmt: skip
    if not wait_for_consumers([neural], 60.0, stop):
        results.put(("pusher", {"error": f"no inlet connected to {name!r} within 60 s"}))
        return
    target_connected = wait_target_s > 0 and wait_for_consumers([target], wait_target_s, stop)
    started.set()
    stamps, lag = _push_on_schedule(neural, target, stream, n_bins, seed, stop)
    per_bin = stream.per_bin
    results.put(
        (
            "pusher",
            {
                "bin_ends": stamps[per_bin - 1 :: per_bin],
                "lag_p99_ms": float(np.percentile(lag, 99) * 1e3) if len(lag) else math.nan,
                "lag_max_ms": float(lag.max() * 1e3) if len(lag) else math.nan,
                "target_connected": bool(target_connected or target.have_consumers()),
            },
        )
    )
    _wait_stopped(stop, 120.0)  # outlets stay open until the reader has everything


def _push_on_schedule(
    neural: pylsl.StreamOutlet,
    target: pylsl.StreamOutlet,
    stream: Input,
    n_bins: int,
    seed: int,
    stop: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Push Poisson counts stamped ``t0 + (k + 1) / rate`` when the clock reaches each stamp
    (sleep, then spin), a velocity target with each bin's last sample; returns the stamps
    pushed and each push's lag behind its stamp (s)."""
    rate, per_bin = float(stream.sample_rate), stream.per_bin
    rng = np.random.default_rng(seed)
    n_samples = n_bins * per_bin
    counts = rng.poisson(SPIKE_RATE_HZ / rate, (n_samples, N_IN)).astype(np.float32)
    phase = 2 * np.pi * 0.25 * np.arange(n_bins) / stream.bin_rate  # a 4 s circle at 10 cm/s
    velocity = (10.0 * np.stack([np.cos(phase), np.sin(phase)], axis=1)).astype(np.float32)
    bin_s = per_bin / rate
    clock = pylsl.local_clock
    t0 = math.ceil((clock() + 0.05) / bin_s) * bin_s  # bin ends on whole multiples of bin_s
    schedule = PushSchedule(t0 + 1.0 / rate, rate, n_samples)  # the first bin ends at t0 + bin
    stamps = schedule.stamps(np.arange(n_samples))
    spin = min(SPIN_S, 0.25 / rate)
    lag = np.empty(n_samples, dtype=np.float64)

    def push(k: int, _n: int) -> int:
        due = stamps[k]
        lag[k] = clock() - due
        if (k + 1) % per_bin == 0:
            target.push_sample(velocity[k // per_bin], due)
        neural.push_sample(counts[k], due)
        return 1

    pushed = schedule.run(push, stop, spin_s=spin)
    return stamps[:pushed], lag[:pushed]


# --- relay process -------------------------------------------------------------------------


def _open_inlet(name: str, tag: str, results: Any) -> pylsl.StreamInlet | None:
    """An open inlet of stream ``name`` that pulls into numpy arrays (as the daemon's does),
    or None after putting ``(tag, error)``."""
    found = pylsl.resolve_byprop("name", name, 1, 60.0)
    if not found:
        results.put((tag, {"error": f"stream {name!r} not found within 60 s"}))
        return None
    inlet = pylsl.StreamInlet(found[0], max_buflen=60, as_numpy=True)
    inlet.open_stream(10.0)
    return inlet


def relay(
    neural: str, output: str, rate: float, realtime: bool, ready: Any, stop: Any, results: Any
) -> None:
    """Pull each sample of ``neural`` and push its first two values on to ``output`` (with
    ``realtime``: at the decoder process's SCHED_FIFO priority on its core)."""
    _quiet_sigint()
    if realtime:
        from service.supervisor import request_realtime

        request_realtime()
    outlet = open_outlet(output, KINEMATICS_TYPE, ["vx", "vy"], "cm/s", rate,
                         source_id=f"{output}-relay", component="e2e_latency relay")  # fmt: skip
    inlet = _open_inlet(neural, "relay", results)
    if inlet is None:
        return
    ready.set()
    relayed = 0
    while not _stopped(stop):
        sample, stamp = inlet.pull_sample(timeout=0.2)
        if stamp is not None:
            outlet.push_sample(sample[:N_OUT].tolist(), stamp)  # a list, as the daemon's
            relayed += 1
    results.put(("relay", {"relayed": relayed}))


# --- reader process ------------------------------------------------------------------------


def read_output(output: str, ready: Any, stop: Any, results: Any) -> None:
    """Pull ``output`` until ``stop``; put ``("reader", (stamps, received))`` (local clock, s)."""
    _quiet_sigint()
    inlet = _open_inlet(output, "reader", results)
    if inlet is None:
        return
    ready.set()
    stamps: list[float] = []
    received: list[float] = []
    clock = pylsl.local_clock
    while not _stopped(stop):
        _, stamp = inlet.pull_sample(timeout=0.2)
        if stamp is not None:
            received.append(clock())
            stamps.append(stamp)
    results.put(("reader", {"stamps": np.array(stamps), "received": np.array(received)}))


# --- dashboard clients ---------------------------------------------------------------------


def _follow_feed(base: str, stop: threading.Event, stats: dict[str, Any]) -> None:
    """Hold ``GET /feed`` open and parse its events, reconnecting after an error; if the
    daemon has no feed (404), poll ``/kinematics/recent?n=20`` at 20 Hz instead."""
    with httpx.Client(timeout=httpx.Timeout(5.0, read=2.0)) as client:
        while not stop.is_set():
            try:
                with client.stream(
                    "GET", f"{base}/feed", headers={"Accept": "text/event-stream"}
                ) as response:
                    if response.status_code == 404:
                        break
                    response.raise_for_status()
                    stats["mode"] = "feed"
                    data: list[str] = []
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        elif line.startswith("event:"):
                            stats["event_types"].add(line[6:].strip())
                        elif not line and data:
                            json.loads("\n".join(data))
                            stats["events"] += 1
                            data = []
                        if stop.is_set():
                            return
            except (httpx.HTTPError, json.JSONDecodeError) as error:
                _count_error(stats, "/feed", error)
                stop.wait(0.2)  # reconnect as an EventSource does
        else:
            return
        stats["mode"] = "poll-recent"
        while not stop.is_set():
            _get(client, f"{base}/kinematics/recent?n=20", stats)
            stop.wait(0.05)


def _load_model_panels(base: str, stop: threading.Event, stats: dict[str, Any]) -> None:
    """What the page fetches besides the feed: the model panels, on load and whenever the
    model changes (checked every 0.5 s here; the page reacts to the feed's model id)."""
    with httpx.Client(timeout=5.0) as client:
        model_id = None
        while not stop.is_set():
            try:
                current = client.get(f"{base}/health").json()["model_id"]
            except (httpx.HTTPError, ValueError, KeyError) as error:
                _count_error(stats, "/health", error)
                current = model_id
            if current != model_id:
                for path in MODEL_PANELS:
                    _get(client, f"{base}{path}", stats)
                model_id = current
            stop.wait(0.5)


def _get(client: httpx.Client, url: str, stats: dict[str, Any]) -> None:
    try:
        client.get(url).raise_for_status()
        stats["requests"] += 1
    except httpx.HTTPError as error:
        _count_error(stats, url.split(API, 1)[-1], error)


def _count_error(stats: dict[str, Any], path: str, error: Exception) -> None:
    """Count ``error`` under e.g. ``"/feed 503"`` or ``"/feed ReadTimeout"``."""
    if isinstance(error, httpx.HTTPStatusError):
        kind = str(error.response.status_code)
    else:
        kind = type(error).__name__
    stats["errors"][f"{path} {kind}"] += 1


def load_dashboards(base: str, n: int, ready: Any, stop: Any, results: Any) -> None:
    """Run ``n`` dashboard clients (two threads each); put ``("dashboards", totals)``."""
    _quiet_sigint()
    stats = [
        {
            "mode": "none",
            "requests": 0,
            "events": 0,
            "errors": collections.Counter(),
            "event_types": set(),
        }
        for _ in range(n)
    ]
    done = threading.Event()
    threads = [
        threading.Thread(target=fn, args=(base, done, s), daemon=True)
        for s in stats
        for fn in (_follow_feed, _load_model_panels)
    ]
    for thread in threads:
        thread.start()
    ready.set()
    _wait_stopped(stop)
    done.set()
    for thread in threads:
        thread.join(5.0)
    results.put(
        (
            "dashboards",
            {
                "clients": n,
                "modes": sorted({s["mode"] for s in stats}),
                "requests": sum(s["requests"] for s in stats),
                "events": sum(s["events"] for s in stats),
                "event_types": sorted(set().union(*(s["event_types"] for s in stats))),
                "errors": sum(sum(s["errors"].values()) for s in stats),
                "error_kinds": dict(sum((s["errors"] for s in stats), collections.Counter())),
            },
        )
    )
