"""Tests for service.api: a real uvicorn server in a thread, decoding a SessionPlayer stream."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pylsl
import pytest
from factories import tiny_checkpoint
from serving import N_CHANNELS, Served, run_server, train_checkpoint, wait_for

from bci.checkpoint import load_decoder
from service.api import create_app
from service.cli import main
from service.daemon import Daemon
from service.settings import Settings, resolve_token
from streams.player import SessionPlayer, simulate_stream
from streams.synthetic import SyntheticConfig

TOKEN = "test-token-123"
POSTS: tuple[tuple[str, dict | None], ...] = (
    ("/model/swap", {"name": "b.safetensors"}),
    ("/model/rollback", None),
    ("/adaptation/pause", None),
    ("/adaptation/resume", None),
    ("/adaptation/learning-rate", {"lr": 1e-4}),
    ("/adaptation/enable", None),
    ("/adaptation/disable", None),
    ("/adaptation/reset", None),
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    models = tmp_path_factory.mktemp("models")
    paths = {name: train_checkpoint(models / f"{name}.safetensors", s) for name, s in
             (("a", 0), ("b", 1))}  # fmt: skip
    ids = {name: load_decoder(p).model_id for name, p in paths.items()}
    (models / "corrupt.safetensors").write_bytes(b"\x00not a checkpoint" * 10)
    tiny_checkpoint(models / "eight.safetensors", n_in=8, rate=1.0)

    name = f"bci-test-api-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        stream=name,
        source_id=f"bci-player-{name}",
        model=paths["a"],
        models_dir=models,
        token=TOKEN,
        port=0,
        output_name=f"{name}-decoded",  # the player already owns "<name>-kinematics"
    )
    daemon = Daemon(settings)
    app = create_app(settings, daemon)
    player: SessionPlayer = simulate_stream(
        SyntheticConfig(n_channels=N_CHANNELS, duration_s=30.0, seed=3),
        name=name,
        speed=2.0,
        loop=True,
    )
    try:
        with run_server(app) as port:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10.0) as client:
                assert client.get("/health").json()["state"] == "waiting-for-stream"
                player.start()
                yield Served(name, client, daemon, models, ids, port)
    finally:
        player.stop()
    assert daemon.state == "stopped"  # the lifespan stopped the daemon


def test_health_decoding_and_latest_advances(served: Served) -> None:
    client = served.client
    assert wait_for(lambda: client.get("/health").json()["state"] == "decoding")
    health = client.get("/health").json()
    assert health["model_id"] in served.ids.values()  # a, or what another test swapped in
    assert health["stream_state"] == "connected"
    first = client.get("/kinematics/latest").json()
    assert wait_for(lambda: client.get("/kinematics/latest").json()["seq"] >= first["seq"] + 25)
    later = client.get("/kinematics/latest").json()
    assert later["labels"] == ["vx", "vy"] and len(later["values"]) == 2
    assert later["timestamp"] > first["timestamp"]
    recent = client.get("/kinematics/recent", params={"n": 20}).json()["bins"]
    assert len(recent) == 20
    seqs = [b["seq"] for b in recent]
    assert seqs == list(range(seqs[0], seqs[0] + 20))
    assert len({tuple(b["values"]) for b in recent}) > 1  # the output moves
    assert client.get("/kinematics/recent", params={"n": 0}).status_code == 422


def test_outlet_carries_decoded_values(served: Served) -> None:
    infos = pylsl.resolve_byprop("name", f"{served.name}-decoded-kinematics", 1, 15.0)
    assert infos, "decoded kinematics outlet not found"
    inlet = pylsl.StreamInlet(infos[0])
    try:
        inlet.open_stream(10.0)
        got: list[list[float]] = []
        deadline = time.monotonic() + 20.0
        while len(got) < 10 and time.monotonic() < deadline:
            samples, _ = inlet.pull_chunk(timeout=0.5)
            got.extend(samples)
    finally:
        inlet.close_stream()
    assert len(got) >= 10
    bins = served.client.get("/kinematics/recent", params={"n": 1200}).json()["bins"]
    decoded = {tuple(np.float32(b["values"])) for b in bins}
    assert any(tuple(np.float32(s)) in decoded for s in got)


def test_every_post_needs_the_token(served: Served) -> None:
    client = served.client
    assert served.daemon.engine is not None
    applied = served.daemon.engine.status()["swaps"]["applied"]
    upload = {"file": ("a.safetensors", (served.models / "b.safetensors").read_bytes())}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        for path, body in POSTS:
            response = client.post(path, json=body, headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert "bearer token" in response.json()["detail"]
        response = client.post("/model/upload", files=upload, headers=headers)
        assert response.status_code == 401, response.text
    assert served.daemon.engine.status()["swaps"]["applied"] == applied


def test_foreign_host_is_refused(served: Served) -> None:
    response = served.client.get("/health", headers={"Host": "evil.example.com"})
    assert response.status_code == 400
    assert served.client.get("/health", headers={"Host": f"localhost:{served.port}"}).is_success


def test_model_stream_adaptation_and_schema(served: Served) -> None:
    client = served.client
    assert wait_for(lambda: client.get("/health").json()["state"] == "decoding", 30.0)
    model = client.get("/model").json()
    assert model["n_channels"] == N_CHANNELS and model["bin_s"] == 0.05
    assert model["kinematics_labels"] == ["vx", "vy"] and model["config"]["n_hidden"] == 32
    stream = client.get("/stream").json()
    assert stream["info"]["n_channels"] == N_CHANNELS
    assert stream["counters"]["samples_received"] > 0 and "gaps" in stream["counters"]
    assert stream["outlet"] == f"{served.name}-decoded-kinematics"
    assert client.get("/adaptation").json() == {
        "enabled": False,
        "target_stream": None,
        "status": None,
        "track_inputs_s": None,
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = client.post("/adaptation/pause", headers=auth)
    assert response.status_code == 409 and "/adaptation/enable" in response.json()["detail"]
    schemas = client.get(f"http://localhost:{served.port}/openapi.json").json()
    assert {"KinematicsBin", "Health", "ModelInfo", "StreamStatus"} <= set(
        schemas["components"]["schemas"]
    )


def test_bad_swaps_are_refused_and_good_swap_continues_seq(served: Served) -> None:
    client = served.client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert wait_for(lambda: client.get("/health").json()["state"] == "decoding")
    old = client.get("/model").json()["model_id"]  # another test may have swapped
    name = "a" if old == served.ids["b"] else "b"
    for body, reason in (
        ({"path": str(served.models / "corrupt.safetensors")}, "safetensors"),
        ({"name": "eight.safetensors"}, "eight.safetensors expects 8"),
        ({"name": "missing.safetensors"}, "missing.safetensors"),
        ({"name": "../a.safetensors"}, "plain file name"),
    ):
        response = client.post("/model/swap", json=body, headers=auth)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert reason in response.json()["detail"], (reason, response.text)
    assert client.post("/model/swap", json={}, headers=auth).status_code == 422
    seq = client.get("/kinematics/latest").json()["seq"]
    assert wait_for(lambda: client.get("/kinematics/latest").json()["seq"] > seq + 5)
    assert client.get("/kinematics/latest").json()["model_id"] == old
    assert client.get("/model").json()["swaps"]["refused"] >= 3

    response = client.post("/model/swap", json={"name": f"{name}.safetensors"}, headers=auth)
    assert response.status_code == 200, response.text
    new = served.ids[name]
    assert response.json() == {"model_id": new, "previous_model_id": old, "staged": True}
    assert wait_for(lambda: client.get("/kinematics/latest").json()["model_id"] == new)
    assert wait_for(lambda: client.get("/kinematics/latest").json()["seq"] > seq + 20)
    bins = client.get("/kinematics/recent", params={"n": 1200}).json()["bins"]
    seqs = [b["seq"] for b in bins]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no bin lost or repeated
    models = [b["model_id"] for b in bins]
    assert old in models and models[-1] == new
    assert client.get("/model").json()["model_id"] == new

    response = client.post("/model/rollback", headers=auth)
    assert response.status_code == 200 and response.json()["model_id"] == old
    assert wait_for(lambda: client.get("/kinematics/latest").json()["model_id"] == old)
    assert client.get("/health").json()["state"] == "decoding"


def test_settings_read_bci_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCI_STREAM", "amp")
    monkeypatch.setenv("BCI_PORT", "9001")
    monkeypatch.setenv("BCI_ALLOWED_HOSTS", '["decoder.lan"]')
    settings = Settings()
    assert (settings.stream, settings.port, settings.allowed_hosts) == (
        "amp",
        9001,
        ["decoder.lan"],
    )
    assert settings.host == "127.0.0.1" and not settings.adapt
    # the decoded output never takes the name of the input stream's true kinematics
    assert settings.output_base == "bci-decoder"
    settings, generated = resolve_token(settings)
    assert generated and len(settings.token or "") >= 32


def test_serve_token_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    argv = ["serve", "--model", str(tmp_path / "none.safetensors")]
    assert main([*argv, "--token-file", str(empty)]) == 2
    assert f"--token-file {empty} is empty" in capsys.readouterr().err
    assert main([*argv, "--token-file", str(tmp_path / "missing.txt")]) == 2
    assert "--token-file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # one or the other
        main([*argv, "--token", "x", "--token-file", str(empty)])
    assert stop.value.code == 2


def test_serve_never_echoes_a_token_it_was_given(served: Served, tmp_path: Path) -> None:
    secret = tmp_path / "token.txt"
    secret.write_text("a-secret-token-kept-out-of-ps\n")
    argv = [sys.executable, "-m", "service.cli", "serve", "--stream", f"{served.name}-none",
            "--model", str(served.models / "a.safetensors"), "--port", "0",
            "--output-name", f"{served.name}-tokfile", "--token-file", str(secret)]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            url = p.stdout.readline()
            port = int(re.search(r"http://127\.0\.0\.1:(\d+)/api/v1", url).group(1))
            auth = {"Authorization": "Bearer a-secret-token-kept-out-of-ps"}
            # a fresh process on a loaded 2-core machine: a generous deadline, not httpx's 5 s
            response = httpx.post(
                f"http://127.0.0.1:{port}/api/v1/model/rollback", headers=auth, timeout=30.0
            )
            assert response.status_code == 409  # the file's token is the token
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
    assert p.returncode == 0, err
    assert "a-secret-token" not in url + out + err and "token" not in url + out


def test_serve_start_failures_are_one_line_exit_1_before_any_url(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    existing = tmp_path / "run.xdf"
    existing.write_bytes(b"")
    good = str(served.models / "a.safetensors")
    for argv, reason in (
        (["--model", str(corrupt)], "not a valid safetensors file"),
        (["--model", good, "--record", str(existing)], "already exists"),
    ):
        code = main(["serve", *argv, "--port", "0", "--output-name", f"{served.name}-fail"])
        out, err = capsys.readouterr()
        assert code == 1 and reason in err and len(err.strip().splitlines()) == 1, err
        assert "serving" not in out and "token" not in out  # nothing announced
    assert existing.read_bytes() == b""  # the existing recording is untouched


def test_serve_without_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", str(tmp_path / "none.safetensors"), "--token", "x"]) == 2
    assert "none.safetensors does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "rule"),
    [("inf", "a finite number"), ("nan", "a finite number"), ("0", "greater than 0")],
)
def test_serve_bad_track_inputs_exits_2_naming_the_flag(
    served: Served, capsys: pytest.CaptureFixture[str], value: str, rule: str
) -> None:
    model = str(served.models / "a.safetensors")
    with pytest.raises(SystemExit) as info:
        main(["serve", "--model", model, "--token", "x", "--track-inputs", value])
    assert info.value.code == 2
    assert f"argument --track-inputs: input should be {rule}, got '{value}'" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_bci_serve_process_prints_url_and_token_and_stops_cleanly(
    served: Served, tmp_path: Path, stop: signal.Signals
) -> None:
    argv = [sys.executable, "-m", "service.cli", "serve", "--stream", f"{served.name}-none"]
    argv += ["--model", str(served.models / "a.safetensors"), "--port", "0"]
    env = {**os.environ, "BCI_OUTPUT_NAME": f"{served.name}-cli"}
    errors = tmp_path / "stderr.txt"
    with (
        errors.open("w") as stderr,
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        ) as process,
    ):
        try:
            _check_serve_process(process, errors, stop)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _check_serve_process(process: subprocess.Popen, errors: Path, stop: signal.Signals) -> None:
    """``--port 0``: the printed URL names the port the system chose, and it answers."""
    assert process.stdout is not None
    url_line, token_line = process.stdout.readline(), process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/api/v1", url_line)
    assert match and int(match.group(1)) > 0, url_line
    port = int(match.group(1))
    token = token_line.split(": ", 1)[1].strip()
    assert token_line.startswith("token (generated): ") and len(token) >= 32

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v1/health").is_success
        except httpx.TransportError:
            return False

    assert wait_for(healthy, 30.0), errors.read_text()
    health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=30.0).json()
    assert health["state"] == "waiting-for-stream"
    swap = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/model/rollback",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
    )
    assert swap.status_code == 409  # authorised, but nothing to roll back to
    process.send_signal(stop)
    assert process.wait(30.0) == 0, errors.read_text()


def test_adaptation_controls_when_adapt_is_on(served: Served) -> None:
    settings = Settings(
        stream=f"{served.name}-absent",
        model=served.models / "a.safetensors",
        adapt=True,
        track_inputs=30.0,
        token=TOKEN,
        output_name=f"{served.name}-adapt",
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with (
        run_server(create_app(settings)) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1") as client,
    ):
        status = client.get("/adaptation").json()
        assert status["enabled"] is True and status["status"]["paused"] is False
        assert status["track_inputs_s"] == 30.0
        assert client.post("/adaptation/pause").status_code == 401
        paused = client.post("/adaptation/pause", headers=auth).json()["status"]
        assert paused["paused"] is True and paused["pause_reason"] == "paused over HTTP"
        assert client.post("/adaptation/resume", headers=auth).json()["status"]["paused"] is False
        response = client.post("/adaptation/learning-rate", json={"lr": 2e-4}, headers=auth)
        assert response.status_code == 200 and response.json()["status"]["lr"] == 2e-4
        response = client.post("/adaptation/learning-rate", json={"lr": -1.0}, headers=auth)
        assert response.status_code == 422, response.text


def test_latency_metrics(served: Served) -> None:
    client = served.client
    assert wait_for(lambda: client.get("/health").json()["state"] == "decoding")
    assert wait_for(lambda: client.get("/metrics/latency").json()["bins"] >= 20)
    latency = client.get("/metrics/latency").json()
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert 0 < latency["window"] <= latency["window_capacity"] == 10_000
    assert latency["deadline_ms"] == pytest.approx(50.0)
    assert 0 <= latency["deadline_misses"] <= latency["bins"]
    assert latency["timestamp_mapping"] in ("offset", "raw", "mixed")
    schemas = client.get(f"http://localhost:{served.port}/openapi.json").json()
    assert "LatencyMetrics" in schemas["components"]["schemas"]
    assert "/api/v1/metrics/latency" in schemas["paths"]


def test_available_models_and_activity(served: Served) -> None:
    client = served.client
    listing = client.get("/model/available").json()
    assert listing["models_dir"] == str(served.models)
    by_name = {m["name"]: m for m in listing["models"]}
    assert {"a.safetensors", "b.safetensors", "corrupt.safetensors"} <= set(by_name)
    assert by_name["b.safetensors"]["model_id"] == served.ids["b"]
    assert by_name["b.safetensors"]["n_channels"] == N_CHANNELS
    assert by_name["corrupt.safetensors"]["model_id"] is None
    assert "safetensors" in by_name["corrupt.safetensors"]["error"]
    assert wait_for(lambda: client.get("/health").json()["bins_decoded"] > 40)
    activity = client.get("/model/activity").json()
    assert len(activity["firing_rates_hz"]) == 32  # the served models' hidden layer
    assert activity["mean_rate_hz"] == pytest.approx(np.mean(activity["firing_rates_hz"]))
    assert 0 <= activity["silent_fraction"] <= 1 and activity["raster_indices"][0] == 0
    assert set(activity["weight_norms"]) == {"input", "recurrent", "readout"}
    assert all(v > 0 for v in activity["weight_norms"].values())


def test_upload_swaps_and_bad_uploads_are_refused_and_deleted(served: Served) -> None:
    client = served.client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert wait_for(lambda: client.get("/health").json()["state"] == "decoding")
    before = client.get("/model").json()["model_id"]
    before_files = set(served.models.iterdir())
    for name, reason in (
        ("corrupt.safetensors", "safetensors"),
        ("eight.safetensors", "expects 8"),
    ):
        files = {"file": (name, (served.models / name).read_bytes())}
        response = client.post("/model/upload", files=files, headers=auth)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert reason in detail and f"model {before} keeps decoding" in detail
    assert set(served.models.iterdir()) == before_files  # nothing left behind
    seq = client.get("/kinematics/latest").json()["seq"]
    assert wait_for(lambda: client.get("/kinematics/latest").json()["seq"] > seq + 3)
    assert client.get("/kinematics/latest").json()["model_id"] == before
    target = "b" if before == served.ids["a"] else "a"
    files = {"file": ("mine.safetensors", (served.models / f"{target}.safetensors").read_bytes())}
    response = client.post("/model/upload", files=files, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["model_id"] == served.ids[target]
    assert wait_for(
        lambda: client.get("/kinematics/latest").json()["model_id"] == served.ids[target]
    )
    kept = set(served.models.iterdir()) - before_files
    assert [p.name for p in kept] == [f"upload-{p.name[7:19]}.safetensors" for p in kept]
    assert client.get("/model").json()["path"] == str(kept.pop())


def test_adaptation_enable_reset_disable_between_bins(served: Served) -> None:
    client = served.client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        response = client.post("/adaptation/enable", headers=auth)
        assert response.status_code == 200 and response.json()["enabled"] is True
        assert wait_for(lambda: client.get("/adaptation").json()["status"]["bins"] > 5)
        reset = client.post("/adaptation/reset", headers=auth).json()
        assert reset["enabled"] is True and reset["status"]["updates_applied"] == 0
    finally:
        response = client.post("/adaptation/disable", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"enabled": False, "target_stream": None, "status": None,
                               "track_inputs_s": None}  # fmt: skip
    assert client.post("/adaptation/reset", headers=auth).status_code == 409
