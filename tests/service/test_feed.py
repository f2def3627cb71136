"""Tests for GET /api/v1/feed (Server-Sent Events) on a real uvicorn server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from serving import N_CHANNELS, run_server, train_checkpoint, wait_for

from service.api import create_app
from service.api.routers.feed import MAX_FEED_CLIENTS
from service.daemon import Daemon
from service.settings import Settings
from streams.player import simulate_stream
from streams.synthetic import SyntheticConfig

pytestmark = pytest.mark.timeout(180)


@dataclass
class Feed:
    client: httpx.Client
    app: FastAPI
    daemon: Daemon


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    path = train_checkpoint(tmp_path_factory.mktemp("models") / "a.safetensors", 0)
    name = f"bci-test-feed-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        stream=name,
        source_id=f"bci-player-{name}",
        model=path,
        token="feed-token",
        output_name=f"{name}-decoded",
    )
    daemon = Daemon(settings)
    app = create_app(settings, daemon)
    player = simulate_stream(
        SyntheticConfig(n_channels=N_CHANNELS, duration_s=30.0, seed=3),
        name=name,
        speed=1.0,
        loop=True,
    )
    try:
        with run_server(app) as port:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30.0) as client:
                player.start()
                assert wait_for(lambda: client.get("/health").json()["state"] == "decoding")
                yield Feed(client, app, daemon)
    finally:
        player.stop()


def read_events(
    response: httpx.Response, seconds: float
) -> list[tuple[float, str, str | None, dict[str, Any]]]:
    """``(arrival time, event, id, data)`` for each event received within ``seconds``."""
    events = []
    fields: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    for line in response.iter_lines():
        if line:
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")
            continue
        if "data" in fields:
            data = json.loads(fields["data"])
            events.append((time.monotonic(), fields.get("event", ""), fields.get("id"), data))
        fields = {}
        if time.monotonic() > deadline:
            break
    return events


def test_feed_streams_every_bin_once_at_10_hz_or_more(feed: Feed) -> None:
    with feed.client.stream("GET", "/feed", params={"history": 20}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response, 4.0)
    bins_events = [e for e in events if e[1] == "bins"]
    statuses = [e[3] for e in events if e[1] == "status"]
    times = [e[0] for e in bins_events]
    rate_hz = (len(times) - 1) / (times[-1] - times[0])
    assert rate_hz >= 10.0, f"{len(times)} bins events at {rate_hz:.1f} Hz"

    seqs = [b["seq"] for e in bins_events for b in e[3]["bins"]]
    assert len(seqs) >= 40  # 4 s of a 20 bins/s stream
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a bin was lost or repeated"
    assert 0 < len(bins_events[0][3]["bins"]) <= 20  # the history asked for
    assert all(e[3]["missed"] == 0 for e in bins_events)
    for _, _, event_id, data in bins_events:
        if data["bins"]:
            assert int(event_id) == data["bins"][-1]["seq"]
    last = bins_events[-1][3]
    one = last["bins"][-1] if last["bins"] else bins_events[0][3]["bins"][-1]
    assert len(one["values"]) == 2 and one["target"] is None
    assert len(one["spikes"]) == 32 and set(one["spikes"]) <= {0, 1}
    assert last["status"]["state"] == "decoding" and last["status"]["holding"] is False
    assert last["status"]["model_id"] == feed.daemon.engine.model_id

    assert len(statuses) >= 4  # about every 0.5 s
    status = statuses[-1]
    assert status["labels"] == ["vx", "vy"]
    assert status["stream"]["counters"]["samples_received"] > 0
    assert status["latency"]["bins"] > 0 and status["latency"]["p50_ms"] > 0
    histogram = status["latency_histogram"]
    assert abs(sum(histogram["counts"]) - status["latency"]["window"]) <= 5  # read apart
    assert len(histogram["counts"]) == len(histogram["le_ms"]) and histogram["le_ms"][-1] is None
    assert status["adaptation"]["enabled"] is False and status["adaptation"]["status"] is None
    assert len(status["activity"]["firing_rates_hz"]) == 32


def test_feed_resumes_after_last_event_id(feed: Feed) -> None:
    recent = feed.daemon.recent
    assert wait_for(lambda: (latest := recent.latest()) is not None and latest.seq >= 10, 30.0)
    resume_after = recent.latest().seq - 10
    headers = {"Last-Event-ID": str(resume_after)}
    with feed.client.stream("GET", "/feed", headers=headers) as response:
        events = read_events(response, 0.5)
    seqs = [b["seq"] for e in events if e[1] == "bins" for b in e[3]["bins"]]
    assert seqs[:11] == list(range(resume_after + 1, resume_after + 12))


@pytest.mark.parametrize("period", ["5", "1000", "0", "fast"])
def test_bad_period_is_422(feed: Feed, period: str) -> None:
    response = feed.client.get("/feed", params={"period_ms": period})
    assert response.status_code == 422, response.text
    assert "period_ms" in response.text


def test_client_limit_503_and_slots_freed_on_disconnect(feed: Feed) -> None:
    clients = feed.app.state.feed_clients
    assert wait_for(lambda: clients.open == 0, 15.0)
    with ExitStack() as stack:
        for _ in range(MAX_FEED_CLIENTS):
            response = stack.enter_context(
                feed.client.stream("GET", "/feed", params={"period_ms": 100})
            )
            assert response.status_code == 200
        refused = feed.client.get("/feed")
        assert refused.status_code == 503
        assert f"limit {MAX_FEED_CLIENTS}" in refused.json()["detail"]
    assert wait_for(lambda: clients.open == 0, 15.0), f"{clients.open} feeds still open"
    with feed.client.stream("GET", "/feed") as response:
        assert response.status_code == 200
        assert any(e[1] == "bins" for e in read_events(response, 0.2))
