"""``bci serve`` as a lab runs it: a supervisor with a decoder process and an API process.

Each process is SIGKILLed while a player streams and a pylsl client reads the decoded stream:
the other one carries on, the supervisor restarts the dead one, and no bin is lost (API
killed) or decoded twice (decoder killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import N_CHANNELS, OutputReader, free_port, train_checkpoint, wait_for

from streams.player import SessionPlayer, simulate_stream
from streams.synthetic import SyntheticConfig

SPEED = 2.0  # 50 ms bins at 40 bins/s
BIN_PERIOD_S = 0.05 / SPEED

pytestmark = pytest.mark.timeout(180)


@dataclass
class Serve:
    process: subprocess.Popen
    api: httpx.Client
    player: SessionPlayer
    output: str


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    name = f"bci-test-proc-{uuid.uuid4().hex[:8]}"
    model = train_checkpoint(tmp_path / "m.safetensors", seed=0)
    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "serve", "--stream", name, "--port", str(port),
            "--model", str(model), "--token", "t", "--output-name", name + "-o"]  # fmt: skip
    errors = tmp_path / "stderr.txt"
    player = simulate_stream(
        SyntheticConfig(n_channels=N_CHANNELS, duration_s=60.0, seed=3),
        name=name,
        speed=SPEED,
        loop=True,
    )
    with errors.open("w") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10.0) as api:
            assert wait_for(lambda: _health(api) is not None, 60.0), errors.read_text()
            with player:
                assert wait_for(lambda: _state(api) == "decoding", 30.0), errors.read_text()
                yield Serve(process, api, player, f"{name}-o-kinematics")
        if process.poll() is None:  # a test may have killed it
            process.send_signal(signal.SIGTERM)
            assert process.wait(30.0) == 0, errors.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _health(api: httpx.Client) -> dict | None:
    try:
        response = api.get("/health")
    except httpx.TransportError:
        return None
    return response.json() if response.is_success else None


def _state(api: httpx.Client) -> str | None:
    health = _health(api)
    return None if health is None else health["state"]


def _decoded_stamps(api: httpx.Client, n: int) -> tuple[np.ndarray, np.ndarray]:
    bins = api.get("/kinematics/recent", params={"n": n}).json()["bins"]
    return np.array([b["seq"] for b in bins]), np.array([b["timestamp"] for b in bins])


def test_api_killed_decoding_goes_on_and_api_returns(serve: Serve) -> None:
    reader = OutputReader(serve.output)
    reader.start()
    health = _health(serve.api)
    assert health is not None and health["decoder"]["pid"] != health["api_pid"]
    decoder_pid, api_pid = health["decoder"]["pid"], health["api_pid"]
    before = health["bins_decoded"]
    os.kill(api_pid, signal.SIGKILL)
    assert wait_for(lambda: _health(serve.api) is not None, 5.0), "API not back within 5 s"
    health = _health(serve.api)
    assert health["api_pid"] != api_pid and health["decoder"]["pid"] == decoder_pid
    assert health["state"] == "decoding" and health["decoder"]["restarts"] == 0
    assert wait_for(lambda: _health(serve.api)["bins_decoded"] > before + 40, 10.0)
    values, stamps = reader.finish()
    # the output went on: one sample per input bin, evenly spaced (up to clock-offset
    # refreshes of microseconds), none a zero-velocity hold
    steps = np.diff(stamps)
    assert len(stamps) > 40 and np.allclose(steps, BIN_PERIOD_S, atol=1e-3), steps.max()
    assert np.all(np.abs(values).sum(axis=1) > 0)
    seqs, decoded = _decoded_stamps(serve.api, 200)
    assert np.array_equal(seqs, np.arange(seqs[0], seqs[0] + len(seqs)))  # contiguous
    assert np.allclose(np.diff(decoded), BIN_PERIOD_S, atol=1e-6)  # the player's own clock


def test_decoder_killed_output_holds_and_no_bin_is_decoded_twice(serve: Serve) -> None:
    reader = OutputReader(serve.output)
    reader.start()
    health = _health(serve.api)
    decoder_pid = health["decoder"]["pid"]
    assert wait_for(lambda: _health(serve.api)["bins_decoded"] > 20, 10.0)
    os.kill(decoder_pid, signal.SIGKILL)
    states: set[str] = set()

    def restarted() -> bool:
        health = _health(serve.api)
        states.add(health["state"])
        return health["decoder"]["pid"] not in (None, decoder_pid) and (
            health["state"] == "decoding"
        )

    assert wait_for(restarted, 60.0), states
    assert "restarting" in states  # health said so while the supervisor restarted it
    health = _health(serve.api)
    assert health["decoder"]["restarts"] == 1
    after = health["bins_decoded"]
    assert wait_for(lambda: _health(serve.api)["bins_decoded"] > after + 40, 10.0)

    def recovered() -> bool:  # the client reached the new decoder's outlet (liblsl recovery)
        values = np.asarray(reader.values[-5:], np.float32)
        return (
            len(values) == 5
            and bool(np.all(np.abs(values).sum(axis=1) > 0))
            and (len(reader.values) > 30)
        )

    assert wait_for(recovered, 20.0), "the client never reached the restarted decoder"
    values, stamps = reader.finish()
    seqs, decoded = _decoded_stamps(serve.api, 4000)
    assert np.array_equal(seqs, np.arange(seqs[0], seqs[0] + len(seqs)))  # seq continues
    assert np.all(np.diff(decoded) > 0)  # no bin decoded twice, none out of order
    held = np.abs(values).sum(axis=1) == 0
    gap = np.argmax(np.diff(stamps[~held]))  # the dead time, between two decoded bins
    last_before, first_after = stamps[~held][gap], stamps[~held][gap + 1]
    between = (stamps > last_before) & (stamps < first_after)
    assert between.sum() > 0 and np.all(held[between])  # zero velocity held meanwhile


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie awaiting its reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[1] == "Z" for line in status if line.startswith("State:"))
    except FileNotFoundError:
        return True


def test_children_die_with_a_killed_supervisor(serve: Serve) -> None:
    health = _health(serve.api)
    children = (health["decoder"]["pid"], health["api_pid"])
    assert not any(_gone(pid) for pid in children)
    serve.process.kill()  # SIGKILL: no chance to stop its children
    serve.process.wait()
    assert wait_for(lambda: all(_gone(pid) for pid in children), 10.0), children


@pytest.mark.solo  # a deadline: other tests' load must not decide it
def test_a_start_into_a_running_stream_has_no_deadline_miss(tmp_path: Path) -> None:
    """The stream runs before ``bci serve`` starts (as on a rig): the decoder is warmed up
    (kernels compiled, a step run) before its first bin, so the first 100 bins all meet
    their deadline (one bin width)."""
    name = f"bci-test-warm-{uuid.uuid4().hex[:8]}"
    model = train_checkpoint(tmp_path / "m.safetensors", seed=0)
    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "serve", "--stream", name, "--port", str(port),
            "--model", str(model), "--token", "t", "--output-name", name + "-o"]  # fmt: skip
    player = simulate_stream(
        SyntheticConfig(n_channels=N_CHANNELS, duration_s=60.0, seed=3), name=name, loop=True
    )
    with player, httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10.0) as api:
        errors = tmp_path / "stderr.txt"
        with errors.open("w") as stderr:
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            assert wait_for(lambda: _latency(api).get("bins", 0) >= 100, 90.0), errors.read_text()
            latency = _latency(api)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30.0) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert latency["window"] >= 100 and latency["deadline_misses"] == 0, latency
    assert latency["max_ms"] < latency["deadline_ms"], latency


def _latency(api: httpx.Client) -> dict:
    try:
        response = api.get("/metrics/latency")
    except httpx.TransportError:
        return {}
    return response.json() if response.is_success else {}
