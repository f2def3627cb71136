"""Tests for GET /api/v1/metrics/prometheus: a real server decoding a SessionPlayer stream."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from serving import N_CHANNELS, run_server, train_checkpoint, wait_for

from service.api import create_app
from service.api.link import DecoderLink
from service.api.routers.prometheus import LATENCY_BUCKETS_S, build_registry
from service.daemon import Daemon
from service.lifecycle import DecoderState
from service.settings import Settings
from service.shared_state import SharedState
from streams.player import simulate_stream
from streams.synthetic import SyntheticConfig

pytestmark = pytest.mark.timeout(120)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Daemon]]:
    model = train_checkpoint(tmp_path_factory.mktemp("models") / "a.safetensors", 0)
    name = f"bci-test-prom-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        stream=name,
        source_id=f"bci-player-{name}",
        model=model,
        adapt=True,
        token="t",
        output_name=f"{name}-decoded",
    )
    daemon = Daemon(settings)
    player = simulate_stream(
        SyntheticConfig(n_channels=N_CHANNELS, duration_s=20.0, seed=3),
        name=name,
        loop=True,
    )
    try:
        with (
            run_server(create_app(settings, daemon)) as port,
            httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10.0) as client,
        ):
            player.start()
            assert wait_for(lambda: daemon.state == "decoding")
            yield client, daemon
    finally:
        player.stop()


def test_exposition_while_decoding(scrape: tuple[httpx.Client, Daemon]) -> None:
    client, daemon = scrape

    def published_samples() -> int:  # the status document the API reads, every 0.2 s
        counters = (daemon.shared.status().get("stream") or {}).get("counters") or {}
        return counters.get("samples_received", 0)

    assert wait_for(lambda: daemon.latency()["bins"] >= 40 and published_samples() >= 40)
    response = client.get("/metrics/prometheus")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("bci_") and family.documentation, family.name
    samples = parse(text)
    states = {s: value(samples, "bci_daemon_state", state=s.value) for s in DecoderState}
    assert states["decoding"] == 1.0 and sum(states.values()) == 1.0
    assert value(samples, "bci_stream_state", state="connected") == 1.0
    assert value(samples, "bci_bins_decoded_total") >= 40
    assert value(samples, "bci_stream_samples_received_total") >= 40
    for reason in ("non_finite", "refused"):
        assert value(samples, "bci_stream_samples_rejected_total", reason=reason) == 0
    for name in ("gaps", "reconnects", "stalls", "overflowed_samples"):
        assert value(samples, f"bci_stream_{name}_total") >= 0
    assert value(samples, "bci_deadline_seconds") == pytest.approx(0.05)
    assert value(samples, "bci_model_swaps_total", result="applied") == 0
    assert value(samples, "bci_output_push_errors_total") == 0

    buckets = [value(samples, "bci_decode_latency_seconds_bucket", le=f"{b:g}")
               for b in LATENCY_BUCKETS_S]  # fmt: skip
    count = value(samples, "bci_decode_latency_seconds_count")
    assert buckets == sorted(buckets)
    assert value(samples, "bci_decode_latency_seconds_bucket", le="+Inf") == count >= 40
    assert value(samples, "bci_decode_latency_seconds_sum") > 0
    assert (
        count + value(samples, "bci_decode_latency_unobserved_bins_total")
        <= (daemon.latency()["bins"])
    )

    rate = value(samples, "bci_hidden_mean_firing_rate_hertz")
    assert rate >= 0 and 0 <= value(samples, "bci_hidden_silent_ratio") <= 1
    sparsity = value(samples, "bci_hidden_activation_sparsity_ratio")
    assert sparsity == pytest.approx(max(0.0, 1 - rate * 0.05))
    events = value(samples, "bci_input_events_per_second")
    assert 0 < events <= N_CHANNELS / 0.05
    hidden, outputs = 32, 2
    synops = value(samples, "bci_synaptic_operations_per_second")
    assert synops == pytest.approx(rate * hidden * (hidden + outputs) + events * hidden)

    assert value(samples, "bci_eprop_enabled") == 1.0
    assert value(samples, "bci_eprop_bins_total") > 0
    assert value(samples, "bci_eprop_learning_rate") > 0
    assert value(samples, "bci_eprop_rejections_total", kind="update") == 0

    seen = count
    assert wait_for(lambda: daemon.latency()["bins"] >= seen + 10)
    later = parse(client.get("/metrics/prometheus").text)
    assert value(later, "bci_decode_latency_seconds_count") >= seen + 10  # cumulative


def test_schema_declares_text_plain(scrape: tuple[httpx.Client, Daemon]) -> None:
    client, _ = scrape
    schema = client.get(client.base_url.join("/openapi.json")).json()
    content = schema["paths"]["/api/v1/metrics/prometheus"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain; version=0.0.4; charset=utf-8"]


def _link(latency_capacity: int = 10_000) -> DecoderLink:
    """A link to a shared block no decoder writes yet (the test writes it)."""
    shared = SharedState.create(2, latency_capacity=latency_capacity)
    return DecoderLink(Settings(token="t"), shared, queue.Queue(), queue.Queue())


def test_cumulative_histogram_counts_entries_that_left_the_ring() -> None:
    link = _link(latency_capacity=4)
    registry = build_registry(lambda: link)
    for latency_s in (0.0001, 0.003):
        link.shared.record_latency(latency_s, True, True)
    first = parse(generate_latest(registry).decode())
    assert value(first, "bci_decode_latency_seconds_count") == 2
    assert value(first, "bci_decode_latency_seconds_bucket", le="0.00025") == 1
    assert value(first, "bci_decode_latency_seconds_bucket", le="0.005") == 2
    for latency_s in (0.2, 0.2, 0.2, 0.2, 0.0001, 0.0001):  # 6 more: 2 leave the ring unseen
        link.shared.record_latency(latency_s, True, True)
    second = parse(generate_latest(registry).decode())
    assert value(second, "bci_decode_latency_seconds_count") == 6
    assert value(second, "bci_decode_latency_unobserved_bins_total") == 2
    assert (
        value(second, "bci_decode_latency_seconds_bucket", le="0.1") == 4
    )  # 2 seen before + 2 new
    assert value(second, "bci_decode_latency_seconds_sum") == pytest.approx(
        0.0001 + 0.003 + 0.2 + 0.2 + 0.0001 + 0.0001
    )
    assert value(second, "bci_daemon_state", state="starting") == 1.0
    link.close()
    link.shared.close()


def test_registries_are_per_app() -> None:
    link = _link()
    first, second = build_registry(lambda: link), build_registry(lambda: link)
    assert first is not second
    assert generate_latest(first) == generate_latest(second)
    assert b"bci_" not in generate_latest(REGISTRY)
    link.close()
    link.shared.close()
