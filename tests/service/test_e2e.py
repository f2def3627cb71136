"""End to end: ``bci serve`` in its own process decodes a held-out synthetic session played
by a SessionPlayer process; a pylsl client reads the decoded stream while 50 hot swaps go
over HTTP. Every bin must be decoded once (sequence numbers), reach the client stamped as the
session bin it decodes, with the values an offline decode of that bin gives (each model from
its own initial state at the bin it was swapped in), and the decoded velocity must follow the
true one (R² >= 0.5)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import OutputReader, free_port, wait_for

from bci.checkpoint import load_decoder, save_checkpoint
from bci.metrics import r2_score
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, train_rsnn
from service.decoding import decode_recording
from streams.player import SessionPlayer
from streams.session import Session, chronological_split
from streams.synthetic import SyntheticConfig, simulate_session

N_CHANNELS = 48
N_SWAPS = 50
SPEED = 2.0  # 50 ms bins at 40 bins/s: 30 s of playback, twice what the 50 swaps need unloaded
TOKEN = "e2e-token"

pytestmark = pytest.mark.timeout(240)


@dataclass
class Setup:
    models: Path
    test: Session


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """Two decoders trained (different seeds) on the first 70% of a 5-minute session; the
    last 20% is played live."""
    session = simulate_session(SyntheticConfig(n_channels=N_CHANNELS, duration_s=300.0, seed=11))
    train, validation, test = chronological_split(session)
    models = tmp_path_factory.mktemp("models")
    for name, seed in (("a", 0), ("b", 1)):
        model = RSNN(RSNNConfig(n_in=N_CHANNELS, n_hidden=64, n_out=2, dt_s=0.05), seed=seed)
        config = TrainConfig(window=100, burn_in=20, batch_size=16, max_steps=150, eval_every=50)
        train_rsnn(
            model, (train.neural, train.kinematics), (validation.neural, validation.kinematics),
            config,
        )  # fmt: skip
        save_checkpoint(models / f"{name}.safetensors", model, kinematics_labels=("vx", "vy"))
    return Setup(models, test)


@dataclass
class Server:
    process: subprocess.Popen
    api: httpx.Client
    output: str


@pytest.fixture
def server(setup: Setup, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    name = f"bci-test-e2e-{uuid.uuid4().hex[:8]}"
    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "serve", "--stream", name, "--port", str(port)]
    argv += ["--model", str(setup.models / "a.safetensors"), "--models-dir", str(setup.models)]
    argv += ["--token", TOKEN, "--output-name", f"{name}-decoded"]
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=os.environ)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        with httpx.Client(base_url=base, timeout=10.0) as api:

            def up() -> bool:
                try:
                    return api.get("/health").is_success
                except httpx.TransportError:
                    return False

            assert wait_for(up, 60.0), errors.read_text()
            yield Server(process, api, f"{name}-decoded-kinematics"), name
            process.send_signal(signal.SIGINT)
            assert process.wait(30.0) == 0, errors.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_live_decoding_with_50_hot_swaps_loses_and_repeats_no_bin(
    setup: Setup, server: tuple[Server, str]
) -> None:
    srv, name = server
    api, auth = srv.api, {"Authorization": f"Bearer {TOKEN}"}
    ids = {m["name"]: m["model_id"] for m in api.get("/model/available").json()["models"]}
    reader = OutputReader(srv.output)
    reader.start()
    player = SessionPlayer(setup.test, name=name, speed=SPEED, wait_for_consumers=30.0,
                           wait_for=("neural",))  # fmt: skip
    n_bins = setup.test.n_bins
    seen: dict[int, dict] = {}
    statuses: list[int] = []

    def collect() -> None:
        for b in api.get("/kinematics/recent", params={"n": 1200}).json()["bins"]:
            seen.setdefault(b["seq"], b)

    with player:
        assert wait_for(lambda: api.get("/health").json()["state"] == "decoding", 60.0)
        for k in range(N_SWAPS):
            body = {"name": "b.safetensors" if k % 2 == 0 else "a.safetensors"}
            response = api.post("/model/swap", json=body, headers=auth)
            statuses.append(response.status_code)
            staged = response.json().get("model_id")
            # the next swap goes once this one decodes: each falls between two bins, and
            # all are applied well before the last bin (no race with the playback)
            assert wait_for(lambda m=staged: api.get("/model").json()["model_id"] == m, 10.0)
            collect()
            time.sleep(0.05)
        assert api.get("/health").json()["bins_decoded"] < n_bins, "swaps outlasted playback"
        assert wait_for(lambda: api.get("/health").json()["bins_decoded"] >= n_bins, 60.0)
        collect()
    assert wait_for(lambda: len(reader.values) >= n_bins, 10.0)
    time.sleep(0.5)  # nothing more may come, but the zero-velocity hold of a quiet stream
    received_all, stamps_all = reader.finish()
    received, stamps = received_all[:n_bins], stamps_all[:n_bins]
    holds = received_all[n_bins:]
    assert not holds.any() and (stamps_all[n_bins:] > stamps[-1]).all(), "a bin came twice"

    assert statuses == [200] * N_SWAPS
    swaps = api.get("/model").json()["swaps"]
    assert swaps["applied"] == N_SWAPS and swaps["superseded"] == swaps["refused"] == 0
    assert sorted(seen) == list(range(n_bins))  # every bin decoded, once, in order
    model_ids = [seen[s]["model_id"] for s in range(n_bins)]
    changes = sum(a != b for a, b in itertools.pairwise(model_ids))
    assert changes == swaps["applied"] and set(model_ids) == set(ids.values())
    assert received.shape == (n_bins, 2)  # the client got each bin once
    # ... stamped as the session's bin it decodes (the player compresses time by SPEED)
    played = player.start_time + (setup.test.timestamps - setup.test.timestamps[0]) / SPEED
    np.testing.assert_allclose(stamps, played, rtol=0, atol=1e-3)
    http_stamps = np.asarray([seen[s]["timestamp"] for s in range(n_bins)])
    np.testing.assert_allclose(http_stamps, played, rtol=0, atol=1e-3)
    http_values = np.asarray([seen[s]["values"] for s in range(n_bins)], dtype=np.float32)
    np.testing.assert_array_equal(received, http_values)
    np.testing.assert_array_equal(received, _decoded_offline(setup, model_ids, ids))
    r2, per_dim = r2_score(setup.test.kinematics, received)
    print(f"live R² {r2:.3f} {np.round(per_dim, 3)} over {n_bins} bins, {changes} swaps")
    assert r2 >= 0.5


def _decoded_offline(setup: Setup, model_ids: list[str], ids: dict[str, str]) -> np.ndarray:
    """The session's bins decoded offline: each run of bins by the model that decoded it live,
    from that model's initial state (a swapped-in model starts afresh)."""
    paths = {model_id: setup.models / name for name, model_id in ids.items()}
    out, start = [], 0
    for model_id, run in itertools.groupby(model_ids):
        stop = start + len(list(run))
        decoded, _ = decode_recording(load_decoder(paths[model_id]), setup.test.neural[start:stop])
        out.append(decoded)
        start = stop
    return np.concatenate(out)
