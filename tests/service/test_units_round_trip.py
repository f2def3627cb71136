"""Units travel from the session to the checkpoint, the decoded outlet's desc and the recordings.

A session in mm/s (the simulator's cm/s times 10, so no default can pass for it) is
calibrated; the daemon decodes the player's streams with that checkpoint and records with
``--record``; a real pylsl inlet reads the outlet's desc; ``streams.recorder.Recorder`` (as
``bci record``) records the decoded stream; pyxdf reads both files back.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pylsl
import pytest
import pyxdf
from serving import wait_for

from bci.checkpoint import read_manifest
from calibration.calibrate import CalibrationOptions, run_calibration
from service.daemon import Daemon
from service.settings import Settings
from streams.player import SessionPlayer
from streams.recorder import Recorder
from streams.session import Session, load_session, save_session
from streams.synthetic import SyntheticConfig, simulate_session

UNITS = ("mm/s", "mm/s")
TIMEOUT = 30.0


def _session_in_mm_per_s() -> Session:
    cm = simulate_session(SyntheticConfig(n_channels=8, duration_s=60.0, seed=4))
    return Session(
        neural=cm.neural,
        timestamps=cm.timestamps,
        bin_s=cm.bin_s,
        kinematics=cm.kinematics * 10.0,
        kinematics_labels=cm.kinematics_labels,
        kinematics_units=UNITS,
        channel_labels=tuple(f"e{c:02d}" for c in range(8)),
    )


def _units(stream: dict) -> list[str]:
    channels = stream["info"]["desc"][0]["channels"][0]["channel"]
    return [c["unit"][0] for c in channels]


def _labels(stream: dict) -> list[str]:
    channels = stream["info"]["desc"][0]["channels"][0]["channel"]
    return [c["label"][0] for c in channels]


@pytest.mark.usefixtures("one_torch_thread")  # training: see conftest
@pytest.mark.timeout(180)
def test_units_round_trip_session_checkpoint_outlet_recordings(tmp_path: Path) -> None:
    session_path = save_session(tmp_path / "mm.npz", _session_in_mm_per_s())
    assert load_session(session_path).kinematics_units == UNITS
    model = run_calibration(
        session_path,
        tmp_path / "model.safetensors",
        tmp_path / "report",
        CalibrationOptions(steps=20, hidden=16),
    ).checkpoint
    assert read_manifest(model).kinematics_units == list(UNITS)

    name = f"units-{uuid.uuid4().hex[:10]}"
    settings = Settings(stream=name, source_id=f"bci-player-{name}", model=model,
                        output_name=f"{name}-decoded", token="t",
                        record=tmp_path / "serve.xdf")  # fmt: skip
    output = f"{name}-decoded-kinematics"
    player = SessionPlayer(load_session(session_path), name=name, speed=2.0, loop=True)
    daemon = Daemon(settings)
    with player, daemon:
        (found,) = pylsl.resolve_byprop("name", output, minimum=1, timeout=TIMEOUT)
        inlet = pylsl.StreamInlet(found)
        info = inlet.info(timeout=TIMEOUT)
        assert info.get_channel_units() == list(UNITS)
        assert info.desc().child("channels").child("channel").child_value("unit") == "mm/s"
        (played,) = pylsl.resolve_byprop("name", f"{name}-kinematics", minimum=1, timeout=TIMEOUT)
        played_info = pylsl.StreamInlet(played).info(timeout=TIMEOUT)
        assert played_info.get_channel_units() == list(UNITS)  # the player: the session's units
        with Recorder(tmp_path / "record.xdf", [output], resolve_timeout=TIMEOUT) as recorder:
            assert recorder.wait_samples({output: 10}, TIMEOUT), daemon.state_message
        assert wait_for(lambda: daemon.engine.bins_decoded >= 20, TIMEOUT)
        source_xml = daemon.inlet.header_xml
        inlet.close_stream()

    recorded = {s["info"]["name"][0]: s for s in pyxdf.load_xdf(str(tmp_path / "record.xdf"))[0]}
    assert _units(recorded[output]) == list(UNITS)

    served = {s["info"]["name"][0]: s for s in pyxdf.load_xdf(str(tmp_path / "serve.xdf"))[0]}
    decoded, inputs = served[output], served[name]
    assert _units(decoded) == list(UNITS) and _labels(decoded) == ["vx", "vy"]
    assert decoded["info"]["created_at"] == recorded[output]["info"]["created_at"]
    assert decoded["info"]["uid"] == recorded[output]["info"]["uid"]  # the outlet's own header
    # the input bins: labelled with the model's channel labels, counts per bin, and the
    # player's header kept under desc/source (its creation time and host among it)
    assert _labels(inputs) == [f"e{c:02d}" for c in range(8)]
    assert _units(inputs) == ["counts"] * 8
    assert source_xml is not None
    source = inputs["info"]["desc"][0]["source"][0]
    assert source["source_id"] == [f"bci-player-{name}"] == inputs["info"]["source_id"]
    assert source["created_at"] == inputs["info"]["created_at"]
    assert f"<created_at>{source['created_at'][0]}</created_at>" in source_xml
    assert source["desc"][0]["acquisition"][0]["model"] == ["session player"]
    assert inputs["info"]["desc"][0]["binning"][0]["bin_s"] == ["0.05"]
