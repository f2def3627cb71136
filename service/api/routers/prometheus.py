"""``GET /metrics`` (and the older path ``GET /api/v1/metrics/prometheus``, kept as an alias):
the daemon's counters in the Prometheus text format 0.0.4 (``generate_latest`` with its default
underscore escaping writes that format; prometheus_client >= 0.22 names 1.0.0 as
``CONTENT_TYPE_LATEST``, so the 0.0.4 content type is set explicitly).

Every value is read at scrape time from what the decoder already publishes in shared memory
(the latency ring, and its status document: inlet counters, engine status and activity);
the decoding loop does no extra work. Each
app has its own :class:`~prometheus_client.CollectorRegistry` (``app.state.prometheus``, made
by :func:`build_registry`), never the process-wide default one.

Derived values:

- ``bci_decode_latency_seconds`` is a cumulative histogram: each scrape adds the ring entries
  measured since the previous scrape. Entries that left the ring (``latency_window`` bins)
  before any scrape saw them are counted in ``bci_decode_latency_unobserved_bins_total``.
- ``bci_hidden_activation_sparsity_ratio = 1 - mean_rate_hz * bin_s``: the expected fraction
  of (neuron, bin) pairs without a spike (a neuron fires at most once per bin).
- ``bci_synaptic_operations_per_second = sum_j rate_j (H + K) + events_in * H``, with
  ``rate_j`` the firing rate (Hz) of hidden neuron ``j``, ``H`` hidden neurons (each spike
  reaches ``H`` recurrent and ``K`` readout synapses) and ``events_in`` the non-zero input
  channel values per second (moving average over ``rate_tau_s`` seconds; each reaches ``H``
  input synapses). These are NeuroBench effective accumulates
  (:func:`bci.metrics.synaptic_operations`) for dense weights, per second instead of per bin.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from service.api.link import DecoderLink
from service.lifecycle import DecoderState
from streams.lsl_status import InletState

__all__ = [
    "LATENCY_BUCKETS_S",
    "DaemonCollector",
    "bucket_counts",
    "build_registry",
    "root_router",
    "router",
]

router = APIRouter(prefix="/metrics", tags=["metrics"])  # under /api/v1: the older path
root_router = APIRouter(tags=["metrics"])  # GET /metrics: where Prometheus scrapes by default

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
)


def bucket_counts(latencies_s: np.ndarray, bounds_s: np.ndarray) -> np.ndarray:
    """How many latencies fall in each bucket ``(previous bound, bound]`` (s), and above the
    last bound (the final entry): Prometheus' ``le`` semantics, not cumulative."""
    index = np.searchsorted(bounds_s, latencies_s, side="left")
    return np.bincount(index, minlength=len(bounds_s) + 1)


class DaemonCollector(Collector):
    """Builds every ``bci_*`` metric of one daemon on each scrape.

    Holds the cumulative latency histogram between scrapes (guarded by a lock: scrapes may
    run concurrently on the server's worker threads).
    """

    def __init__(
        self,
        get_link: Callable[[], DecoderLink],
        buckets_s: tuple[float, ...] = LATENCY_BUCKETS_S,
    ) -> None:
        self._get_link = get_link
        self.buckets_s = np.asarray(sorted(buckets_s), dtype=np.float64)
        self._lock = threading.Lock()
        self._seen = 0  # ring entries (bins) accounted for so far
        self._bucket_counts = np.zeros(len(self.buckets_s) + 1, dtype=np.int64)  # last: +Inf
        self._sum_s = 0.0
        self._unobserved = 0

    @property
    def link(self) -> DecoderLink:
        return self._get_link()

    def collect(self) -> Iterator[Metric]:
        status = self.link.status()
        yield _state_gauge(
            "bci_daemon_state",
            "Daemon lifecycle state (1 = current).",
            DecoderState,
            status["state"],
        )
        yield from self._latency(status)
        outlet = status.get("outlet")
        if outlet is not None:
            yield _counter(
                "bci_output_hold_pushes",
                "Zero-velocity samples pushed while the stream was lost.",
                outlet["hold_pushes"],
            )
            yield _counter(
                "bci_output_push_errors",
                "Decoded bins whose output was refused (non-finite or beyond the model's bound); "
                "zero velocity went out instead.",
                outlet["push_errors"],
            )
            yield _counter(
                "bci_output_pushed_samples",
                "Samples pushed to the decoded-kinematics outlet.",
                outlet["pushed"],
            )
        yield _counter(
            "bci_decoder_restarts",
            "Times the decoder process died and was restarted.",
            status["decoder"]["restarts"],
        )
        stream = status.get("stream") or {}
        if stream.get("counters") is not None:
            yield from _inlet_metrics(stream)
        if status.get("engine") is not None:
            yield from _engine_metrics(status, self.link.shared.bins_written)

    def _latency(self, status: dict[str, Any]) -> Iterator[Metric]:
        with self._lock:  # copy inside: concurrent scrapes see the ring in order
            total, ring = self.link.latency_samples()
            new = total - self._seen
            fresh = ring[len(ring) - min(new, len(ring)) :]
            self._unobserved += new - len(fresh)
            self._seen = total
            self._bucket_counts += bucket_counts(fresh, self.buckets_s)
            self._sum_s += float(fresh.sum())
            cumulative = np.cumsum(self._bucket_counts)
            sum_s, unobserved = self._sum_s, self._unobserved
        bounds = [f"{b:g}" for b in self.buckets_s] + ["+Inf"]
        histogram = HistogramMetricFamily(
            "bci_decode_latency_seconds",
            "Input sample timestamp (local clock) to decoded output pushed, per bin.",
        )
        histogram.add_metric([], list(zip(bounds, cumulative.tolist(), strict=True)), sum_s)
        yield histogram
        yield _counter(
            "bci_decode_latency_unobserved_bins",
            "Bins whose latency left the ring before a scrape read it.",
            unobserved,
        )
        stats = self.link.latency(status)
        yield _counter(
            "bci_deadline_misses",
            "Decoded bins slower than the deadline.",
            stats["deadline_misses"],
        )
        if stats["deadline_ms"] is not None:
            yield _gauge(
                "bci_deadline_seconds", "Latency deadline per bin.", stats["deadline_ms"] / 1e3
            )


def build_registry(get_link: Callable[[], DecoderLink]) -> CollectorRegistry:
    """A fresh registry holding one :class:`DaemonCollector` for the decoder that
    ``get_link()`` returns at scrape time."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(get_link))
    return registry


_TEXT = {
    200: {
        "content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}},
        "description": "Prometheus text exposition format 0.0.4",
    }
}


@root_router.get("/metrics", response_class=Response, responses=_TEXT)
@router.get("/prometheus", response_class=Response, responses=_TEXT)
def get_prometheus(request: Request) -> Response:
    """Every ``bci_*`` metric, read at scrape time."""
    registry: CollectorRegistry = request.app.state.prometheus
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)


# -- metric families ------------------------------------------------------------------------
def _counter(name: str, documentation: str, value: float, **labels: str) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _state_gauge(
    name: str, documentation: str, states: type[Enum], current: str
) -> GaugeMetricFamily:
    """One gauge per state of the lifecycle ``states``: 1 for ``current``, else 0."""
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state in states:
        family.add_metric([state.value], float(state.value == current))
    return family


def _labelled_counter(
    name: str, documentation: str, label: str, values: dict[str, float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _inlet_metrics(stream: dict[str, Any]) -> Iterator[Metric]:
    counters = stream["counters"]
    yield _state_gauge(
        "bci_stream_state", "Neural LSL inlet state (1 = current).", InletState, stream["state"]
    )
    yield _counter(
        "bci_stream_samples_received", "Samples pulled from liblsl.", counters["samples_received"]
    )
    yield _counter(
        "bci_stream_samples_written",
        "Samples written into the inlet ring.",
        counters["samples_written"],
    )
    yield _labelled_counter(
        "bci_stream_samples_rejected",
        "Samples not written, by reason: non_finite (NaN/Inf in a channel) or refused "
        "(schema changed or unchecked after a reconnect).",
        "reason",
        {"non_finite": counters["non_finite_rejected"], "refused": counters["samples_refused"]},
    )
    yield _counter(
        "bci_stream_non_finite_samples",
        "Samples with a NaN or Inf in a channel (kept: the decoder repairs the channel).",
        counters["non_finite_samples"],
    )
    yield _counter(
        "bci_stream_transport_dropped_samples",
        "Samples liblsl dropped from its full buffer before the loop pulled them.",
        counters["transport_dropped"],
    )
    yield _counter(
        "bci_stream_rate_mismatches",
        "Rate windows more than 10% off the declared rate.",
        counters["rate_mismatches"],
    )
    yield _gauge(
        "bci_stream_measured_rate_hz",
        "Arrival rate over the latest rate window (0: none yet).",
        counters["measured_rate_hz"],
    )
    yield _counter(
        "bci_stream_gaps", "Timestamp steps above gap_factor sample periods.", counters["gaps"]
    )
    yield _counter(
        "bci_stream_gap_missing_samples",
        "Samples estimated missing in gaps.",
        counters["gap_missing_samples"],
    )
    yield _counter(
        "bci_stream_gap_seconds", "Summed duration of the gaps.", counters["gap_total_s"]
    )
    yield _counter("bci_stream_reconnects", "Connections after the first.", counters["reconnects"])
    yield _counter("bci_stream_stalls", "Times no sample came for watchdog_s.", counters["stalls"])
    yield _counter("bci_stream_lost", "Times the stream was declared lost.", counters["lost"])
    yield _counter(
        "bci_stream_overflowed_samples",
        "Unread ring samples dropped because the decoding loop fell behind.",
        counters["overflowed"],
    )
    if stream.get("clock_offset") is not None:
        yield _gauge(
            "bci_stream_clock_offset_seconds",
            "Latest LSL time_correction() offset.",
            stream["clock_offset"],
        )


def _engine_metrics(status_doc: dict[str, Any], bins_decoded: int) -> Iterator[Metric]:
    status = status_doc["engine"]
    yield _counter("bci_bins_decoded", "Bins decoded since start (across swaps).", bins_decoded)
    yield _labelled_counter(
        "bci_input_non_finite_bins",
        "Bins whose channel had a NaN or Inf, replaced by the model's normalisation mean.",
        "channel",
        {str(c): n for c, n in enumerate(status["non_finite_inputs"]) if n},
    )
    yield _counter(
        "bci_input_bins_dropped", "Bins without one finite channel (not decoded).",
        status["bins_dropped"],
    )  # fmt: skip
    info = GaugeMetricFamily("bci_model", "Model decoding now (1).", labels=["model_id"])
    info.add_metric([status["model_id"]], 1.0)
    yield info
    swaps = status["swaps"]
    yield _labelled_counter(
        "bci_model_swaps",
        "Model swaps and rollbacks by result: applied, refused (invalid model) or superseded "
        "(replaced before the loop applied it).",
        "result",
        {key: swaps[key] for key in ("applied", "refused", "superseded")},
    )
    yield _gauge(
        "bci_model_swap_pending", "1 while a swap waits for the next bin.", float(swaps["pending"])
    )
    yield from _activity_metrics(status_doc)
    yield from _adaptation_metrics(status["adaptation"])


def _activity_metrics(status_doc: dict[str, Any]) -> Iterator[Metric]:
    activity = status_doc["activity"]
    rates = np.asarray(activity["firing_rates_hz"], dtype=np.float64)
    n_hidden, n_out = len(rates), len(status_doc["labels"])
    mean_rate = activity["mean_rate_hz"]
    yield _gauge(
        "bci_hidden_mean_firing_rate_hertz",
        "Mean firing rate of the hidden "
        f"neurons (moving average over {activity['rate_tau_s']:g} s).",
        mean_rate,
    )
    yield _gauge(
        "bci_hidden_silent_ratio",
        "Fraction of hidden neurons firing below 0.1 Hz.",
        activity["silent_fraction"],
    )
    yield _gauge(
        "bci_hidden_activation_sparsity_ratio",
        "Expected fraction of (neuron, bin) pairs without a spike: 1 - mean rate x bin width.",
        max(0.0, 1.0 - mean_rate * status_doc["bin_s"]),
    )
    events = activity["input_events_hz"]
    if status_doc["engine"]["bins_decoded"] == 0:  # no input seen yet
        return
    yield _gauge("bci_input_events_per_second", "Non-zero input channel values per second.", events)
    synops = float(rates.sum()) * (n_hidden + n_out) + events * n_hidden
    yield _gauge(
        "bci_synaptic_operations_per_second",
        "Effective synaptic operations per second: hidden spikes x (H + K) + input events x H.",
        synops,
    )


def _adaptation_metrics(learner: dict[str, Any] | None) -> Iterator[Metric]:
    yield _gauge(
        "bci_eprop_enabled", "1 while the e-prop learner runs.", float(learner is not None)
    )
    if learner is None:
        return
    for key, documentation in (
        ("bins", "Bins the learner has seen."),
        ("bins_with_target", "Bins that came with a learning target."),
        ("updates_applied", "Weight updates applied."),
        ("updates_clipped", "Weight updates clipped to the norm bound."),
        ("rollbacks", "Rollbacks of the weights to the last snapshot."),
    ):
        yield _counter(f"bci_eprop_{key}", documentation + " Resets on a model swap.", learner[key])
    yield _labelled_counter(
        "bci_eprop_rejections",
        "Learning inputs refused, by kind: update (non-finite update), input (non-finite input "
        "bin), target (non-finite target). Resets on a model swap.",
        "kind",
        {
            "update": learner["updates_rejected"],
            "input": learner["inputs_rejected"],
            "target": learner["targets_rejected"],
        },
    )
    yield _gauge(
        "bci_eprop_last_update_norm",
        "Frobenius norm of the last update.",
        learner["last_update_norm"],
    )
    yield _gauge("bci_eprop_learning_rate", "Current learning rate.", learner["lr"])
    yield _gauge("bci_eprop_paused", "1 while learning is paused.", float(learner["paused"]))
