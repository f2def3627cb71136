"""Tests for streams.recorder: a player's streams recorded to XDF and read back with pyxdf."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf
from factories import counter_session

from streams.player import SessionPlayer
from streams.recorder import Recorder, StreamSelector

TIMEOUT = 30.0


def by_name(streams: list[dict]) -> dict[str, dict]:
    return {s["info"]["name"][0]: s for s in streams}


def test_record_a_player_to_xdf_and_read_it_back(tmp_path: Path) -> None:
    session = counter_session(n_channels=16, bin_s=0.01, duration_s=3.0, seed=5)  # 300 bins
    name = f"rec-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "rec.xdf"
    player = SessionPlayer(session, name=name, speed=2.0, wait_for_consumers=TIMEOUT)
    with player:
        source_id = player.source_id
        recorder = Recorder(
            path,
            [name, f"name={name}-kinematics", f"source_id={source_id}-targets"],
            resolve_timeout=TIMEOUT,
            offset_interval_s=0.5,
        )
        with recorder:
            assert recorder.running
            assert set(recorder.stream_names) == set(player.stream_names)
            assert not path.exists()  # written as .part until stop
            assert Path(f"{path}.part").exists()
            assert player.wait(TIMEOUT)
            pushed = player.counters()["pushed"]
            assert recorder.wait_samples(pushed, TIMEOUT), recorder.counters()
            time.sleep(0.6)  # let the clock thread take another offset
            start_time = player.start_time
        assert not recorder.running
        counters = recorder.counters()
    assert path.exists() and not Path(f"{path}.part").exists()
    assert pushed == dict.fromkeys(player.stream_names, session.n_bins)

    # raw timestamps as recorded: no clock synchronisation, no dejittering
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    streams = by_name(streams)
    assert set(streams) == set(player.stream_names)
    expected_stamps = start_time + (session.timestamps - session.timestamps[0]) / 2.0
    for stream_name, array in (
        (name, session.neural),
        (f"{name}-kinematics", session.kinematics),
        (f"{name}-targets", session.targets),
    ):
        stream = streams[stream_name]
        assert stream["time_series"].dtype == np.float32
        assert stream["time_series"].shape == array.shape  # every pushed sample, once
        np.testing.assert_array_equal(stream["time_series"], array)  # bit for bit
        np.testing.assert_allclose(stream["time_stamps"], expected_stamps, rtol=0, atol=1e-6)
        assert int(stream["footer"]["info"]["sample_count"][0]) == session.n_bins
        assert len(stream["clock_times"]) >= 2  # at start, periodic, at stop
        assert np.all(np.abs(stream["clock_values"]) < 0.01)  # same machine, same clock
        assert counters[stream_name]["samples"] == session.n_bins
        assert counters[stream_name]["state"] == "stopped"
    neural = streams[name]
    np.testing.assert_array_equal(neural["time_series"][:, 0], np.arange(session.n_bins))
    assert neural["info"]["type"][0] == "Neural"
    assert float(neural["info"]["nominal_srate"][0]) == pytest.approx(200.0)
    channels = neural["info"]["desc"][0]["channels"][0]["channel"]
    assert [c["label"][0] for c in channels] == list(session.channel_labels)
    assert {c["unit"][0] for c in channels} == {"counts"}


def test_record_a_string_marker_stream(tmp_path: Path) -> None:
    name = f"rec-markers-{uuid.uuid4().hex[:12]}"
    info = pylsl.StreamInfo(name, "Markers", 1, 0.0, "string", f"{name}-src")
    outlet = pylsl.StreamOutlet(info)
    path = tmp_path / "markers.xdf"
    with Recorder(path, [name], resolve_timeout=TIMEOUT) as recorder:
        deadline = time.monotonic() + TIMEOUT
        while not outlet.have_consumers():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = pylsl.local_clock()
        for k, marker in enumerate(["start", "reach ü", "stop"]):
            outlet.push_sample([marker], t0 + k)
        assert recorder.wait_samples({name: 3}, TIMEOUT)
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False)
    (stream,) = streams
    assert stream["time_series"] == [["start"], ["reach ü"], ["stop"]]
    np.testing.assert_allclose(stream["time_stamps"], t0 + np.arange(3), atol=1e-9)


def test_missing_stream_times_out_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "never.xdf"
    recorder = Recorder(path, [f"absent-{uuid.uuid4().hex}"], resolve_timeout=0.3)
    with pytest.raises(TimeoutError, match="no LSL stream with name=absent-"):
        recorder.start()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bci-sim", StreamSelector("name", "bci-sim")),
        ("name=a=b", StreamSelector("name", "a=b")),
        ("type=Neural", StreamSelector("type", "Neural")),
        ("source_id=xyz", StreamSelector("source_id", "xyz")),
    ],
)
def test_selector_parsing(text: str, expected: StreamSelector) -> None:
    assert StreamSelector.parse(text) == expected
    assert StreamSelector.parse(expected) is expected


@pytest.mark.parametrize("text", ["hostname=vm", "type=", "=x"])
def test_bad_selectors_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not understood"):
        StreamSelector.parse(text)


def test_recorder_misuse(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one stream"):
        Recorder(tmp_path / "x.xdf", [])
    with pytest.raises(ValueError, match="offset_interval_s"):
        Recorder(tmp_path / "x.xdf", ["a"], offset_interval_s=0.0)
    recorder = Recorder(tmp_path / "x.xdf", "a")
    assert recorder.selectors == (StreamSelector("name", "a"),)
    with pytest.raises(RuntimeError, match="not started"):
        recorder.stop()
