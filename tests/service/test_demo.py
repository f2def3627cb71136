"""Tests for service.demo: the cached demo model and the live demo process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from factories import tiny_checkpoint
from serving import free_port, wait_for

from bci.checkpoint import read_manifest
from service.cli import main
from service.demo import DEMO_MODEL, demo_model


def test_demo_model_is_trained_once_then_cached(tmp_path: Path) -> None:
    said: list[str] = []
    model = demo_model(tmp_path, minutes=1.0, steps=5, progress=said.append)
    assert model == tmp_path / DEMO_MODEL and model.is_file()
    assert "training the demo decoder" in said[0] and "test R²" in said[1]
    manifest = read_manifest(model)
    assert manifest.n_channels == 96 and manifest.bin_s == 0.05
    assert "r2" in manifest.metrics["test"]["snn"]
    stamp = model.stat().st_mtime_ns
    said.clear()
    assert demo_model(tmp_path, minutes=1.0, steps=5, progress=said.append) == model
    assert said == [] and model.stat().st_mtime_ns == stamp


def test_demo_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--live", "--minutes", "3"]) == 2
    assert "--minutes only apply without --live" in capsys.readouterr().err
    assert main(["demo", "--seconds", "3"]) == 2
    assert "--seconds only applies with --live" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_live_demo_decodes_the_simulator_and_serves_the_dashboard(tmp_path: Path) -> None:
    """With a cached model the live demo starts at once: the simulator streams, the daemon
    decodes and adapts, the dashboard is served, and it stops by itself after --seconds."""
    tiny_checkpoint(tmp_path / DEMO_MODEL, n_in=96, n_hidden=32, rate=3.0)
    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "demo", "--live", "--cache", str(tmp_path)]
    argv += ["--port", str(port), "--seconds", "20"]
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        base = f"http://127.0.0.1:{port}"

        def decoding() -> bool:
            try:
                return httpx.get(f"{base}/api/v1/health").json()["state"] == "decoding"
            except httpx.TransportError:
                return False

        assert wait_for(decoding, 60.0), errors.read_text()
        adaptation = httpx.get(f"{base}/api/v1/adaptation").json()
        assert adaptation["enabled"] and adaptation["target_stream"] == "bci-sim-kinematics"
        assert wait_for(
            lambda: httpx.get(f"{base}/api/v1/adaptation").json()["status"]["bins_with_target"] > 0
        )
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert process.wait(60.0) == 0, errors.read_text()
        out = process.stdout.read()
        assert f"dashboard: http://127.0.0.1:{port}/" in out and "token (generated): " in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
