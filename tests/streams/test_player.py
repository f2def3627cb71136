"""Tests for streams.player: a session replayed over LSL from another process.

Channel 0 of the neural data is a sample counter, so gaps and reordering are visible.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pylsl
import pytest
from factories import counter_session

from streams.lsl_inlet import LslInlet
from streams.lsl_outlet import KINEMATICS_TYPE, NEURAL_TYPE, TARGETS_TYPE
from streams.player import SessionPlayer, simulate_stream
from streams.session import Session
from streams.synthetic import SyntheticConfig, simulate_session
from streams.xdf import session_from_xdf, write_session_xdf

TIMEOUT = 30.0


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Received:
    data: list[np.ndarray] = field(default_factory=list)
    stamps: list[np.ndarray] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)  # local_clock when each chunk was pulled

    @property
    def n(self) -> int:
        return sum(len(s) for s in self.stamps)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.data), np.concatenate(self.stamps)


def connect(names: tuple[str, ...]) -> dict[str, pylsl.StreamInlet]:
    inlets = {}
    for name in names:
        found = pylsl.resolve_byprop("name", name, minimum=1, timeout=TIMEOUT)
        assert found, f"stream {name} not found"
        inlet = pylsl.StreamInlet(found[0], max_buflen=60)
        inlet.open_stream(timeout=TIMEOUT)
        inlets[name] = inlet
    return inlets


def collect(inlets: dict[str, pylsl.StreamInlet], counts: dict[str, int]) -> dict[str, Received]:
    """Poll every inlet (timeout=0) until each has ``counts[name]`` samples or TIMEOUT."""
    received = {name: Received() for name in inlets}
    deadline = time.monotonic() + TIMEOUT
    while any(received[n].n < counts[n] for n in inlets) and time.monotonic() < deadline:
        for name, inlet in inlets.items():
            data, stamps = inlet.pull_chunk(timeout=0.0, max_samples=1024, as_numpy=True)
            if len(stamps):
                received[name].arrival.append(pylsl.local_clock())
                received[name].data.append(data)
                received[name].stamps.append(stamps)
        time.sleep(0.002)
    return received


def test_player_at_speed_4_delivers_every_bin_in_order_and_paced() -> None:
    session = counter_session(n_channels=8, bin_s=0.01, duration_s=4.0)  # 400 bins, 1 s at 4x
    name = unique_name("player")
    player = SessionPlayer(session, name=name, speed=4.0, wait_for_consumers=TIMEOUT)
    with player:
        assert player.running
        assert player.stream_names == (name, f"{name}-kinematics", f"{name}-targets")
        inlets = connect(player.stream_names)
        infos = {n: inlet.info(timeout=TIMEOUT) for n, inlet in inlets.items()}
        received = collect(inlets, dict.fromkeys(inlets, session.n_bins))
        assert player.wait(TIMEOUT)
        counters = player.counters()
        start_time = player.start_time

    assert not player.running
    assert infos[name].type() == NEURAL_TYPE
    assert infos[name].nominal_srate() == pytest.approx(400.0)  # speed / bin_s
    assert infos[name].get_channel_labels() == list(session.channel_labels)
    assert infos[name].desc().child_value("replay_speed") == "4"
    assert infos[f"{name}-kinematics"].type() == KINEMATICS_TYPE
    assert infos[f"{name}-kinematics"].get_channel_labels() == ["vx", "vy"]
    assert infos[f"{name}-targets"].type() == TARGETS_TYPE
    assert counters["pushed"] == dict.fromkeys(player.stream_names, session.n_bins)

    data, stamps = received[name].arrays()
    np.testing.assert_array_equal(data[:, 0], np.arange(session.n_bins))  # once, in order
    np.testing.assert_array_equal(data, session.neural)
    kin, kin_stamps = received[f"{name}-kinematics"].arrays()
    np.testing.assert_array_equal(kin, session.kinematics)
    np.testing.assert_array_equal(kin_stamps, stamps)
    targets, _ = received[f"{name}-targets"].arrays()
    np.testing.assert_array_equal(targets, session.targets)

    # Timestamps are the schedule: start + (t_k - t_0) / speed, no drift.
    expected = start_time + (session.timestamps - session.timestamps[0]) / 4.0
    np.testing.assert_allclose(stamps, expected, rtol=0, atol=1e-6)
    # Pacing: no chunk arrives before its last sample is due, and the whole session takes
    # about 1 s (generous upper bound for a loaded 2-core machine).
    chunk_last = np.array([s[-1] for s in received[name].stamps])
    assert np.all(np.array(received[name].arrival) >= chunk_last)
    span = received[name].arrival[-1] - start_time
    assert 0.99 <= span < 4.0, span


def test_player_loops_with_increasing_timestamps() -> None:
    session = counter_session(n_channels=3, bin_s=0.02, duration_s=0.4)  # 20 bins, 0.4 s
    name = unique_name("player-loop")
    with SessionPlayer(session, name=name, speed=2.0, loop=True, wait_for_consumers=TIMEOUT) as p:
        inlets = connect(p.stream_names)
        received = collect(inlets, dict.fromkeys(inlets, 50))
        counters = p.counters()
    data, stamps = received[name].arrays()
    n = data.shape[0]
    assert n >= 50
    np.testing.assert_array_equal(data[:, 0], np.arange(n) % 20)  # loops: 0..19, 0..19, ...
    np.testing.assert_allclose(np.diff(stamps), 0.01, atol=1e-6)  # seamless across loops
    assert counters["loops"] >= 2


def test_player_stop_before_the_end() -> None:
    session = counter_session(n_channels=2, bin_s=0.05, duration_s=60.0)
    player = SessionPlayer(session, name=unique_name("player-stop")).start()
    assert player.running and not player.finished
    assert not player.wait(0.2)
    player.stop()
    assert not player.running
    assert not player.finished
    assert player.counters()["pushed"][player.name] < session.n_bins
    player.stop()  # idempotent


def test_simulate_stream_simulates_in_the_player_process() -> None:
    config = SyntheticConfig(n_channels=5, bin_s=0.05, duration_s=2.0, seed=3)
    name = unique_name("player-sim")
    player = simulate_stream(config, name=name, speed=4.0, wait_for_consumers=TIMEOUT)
    assert player.loop
    with player:
        inlets = connect(player.stream_names)
        received = collect(inlets, dict.fromkeys(inlets, 40))
    expected = simulate_session(config)
    data, _ = received[name].arrays()
    np.testing.assert_array_equal(data[:40], expected.neural)
    kin, _ = received[f"{name}-kinematics"].arrays()
    np.testing.assert_array_equal(kin[:40], expected.kinematics)


def test_session_without_kinematics_opens_only_the_neural_stream() -> None:
    session = Session(neural=np.ones((10, 2)), timestamps=np.arange(1, 11) * 0.1, bin_s=0.1)
    player = SessionPlayer(session, name="x")
    assert player.stream_names == ("x",)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"speed": 0.0}, ValueError, "speed"),
        ({"speed": float("inf")}, ValueError, "speed"),
        ({"name": ""}, ValueError, "empty"),
        ({"wait_for_consumers": -1.0}, ValueError, "wait_for_consumers"),
        ({"chunk_max": 0}, ValueError, "chunk_max"),
        ({"wait_for": ("neural", "eeg")}, ValueError, "wait_for"),
        ({"wait_for": ()}, ValueError, "wait_for"),
        ({"kinematics_units": ("cm/s",)}, ValueError, "1 entries for 2 kinematics"),
    ],
)
def test_player_refuses_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    session = Session(
        neural=np.ones((10, 2)),
        timestamps=np.arange(1, 11) * 0.1,
        bin_s=0.1,
        kinematics=np.zeros((10, 2)),
        kinematics_labels=("vx", "vy"),
    )
    with pytest.raises(error, match=message):
        SessionPlayer(session, **kwargs)


def test_player_refuses_a_non_session_and_double_start() -> None:
    with pytest.raises(TypeError, match="load_session"):
        SessionPlayer(np.ones((3, 3)))  # type: ignore[arg-type]
    session = Session(neural=np.ones((10, 2)), timestamps=np.arange(1, 11) * 0.1, bin_s=0.1)
    player = SessionPlayer(session, name=unique_name("player-twice"))
    with pytest.raises(RuntimeError, match="not started"):
        player.wait(0.1)
    with player:
        with pytest.raises(RuntimeError, match="already started"):
            player.start()


def test_round_trip_xdf_player_inlet_ring_1khz_96_channels_30_s(tmp_path: Path) -> None:
    """Acceptance: synthetic session -> XDF -> player process -> LslInlet -> ring.

    96 channels at 1 kHz for 30 s, channel 0 a sample counter: every sample must arrive
    exactly once and in order, bit for bit, with the scheduled timestamps.
    """
    session = counter_session(n_channels=96, bin_s=0.001, duration_s=30.0, seed=11)
    path = write_session_xdf(tmp_path / "session.xdf", session, name_prefix="acceptance")
    replayed = session_from_xdf(path, "acceptance-neural", kinematics="acceptance-kinematics")
    np.testing.assert_array_equal(replayed.neural, session.neural)
    np.testing.assert_array_equal(replayed.timestamps, session.timestamps)
    assert replayed.bin_s == pytest.approx(0.001)
    n = session.n_bins
    assert n == 30_000

    name = unique_name("player-1khz")
    player = SessionPlayer(replayed, name=name, wait_for_consumers=TIMEOUT, wait_for=("neural",))
    data, stamps = [], []
    received = 0
    with player:
        with LslInlet(name=name, source_id=player.source_id, buffer_s=40.0) as inlet:
            assert inlet.wait_connected(TIMEOUT), inlet.state_message
            deadline = time.monotonic() + 30.0 + TIMEOUT
            while received < n and time.monotonic() < deadline:
                chunk, ts = inlet.read_new()
                if len(ts):
                    data.append(chunk)
                    stamps.append(ts)
                    received += len(ts)
                else:
                    time.sleep(0.01)
            counters = inlet.counters()
        assert player.wait(TIMEOUT)
        start_time = player.start_time
        pushed = player.counters()["pushed"][name]

    assert pushed == n
    data_all, stamps_all = np.concatenate(data), np.concatenate(stamps)
    np.testing.assert_array_equal(data_all[:, 0], np.arange(n))  # every sample, once, in order
    np.testing.assert_array_equal(data_all, session.neural)
    expected = start_time + (session.timestamps - session.timestamps[0])
    np.testing.assert_allclose(stamps_all, expected, rtol=0, atol=1e-6)
    assert counters.samples_received == n
    assert counters.samples_written == n
    assert counters.overflowed == 0
    assert counters.gaps == 0 and counters.duplicates == 0
    assert counters.timestamps_backwards == 0
    assert counters.non_finite_rejected == 0 and counters.samples_refused == 0
    assert counters.reconnects == 0 and counters.lost == 0
    assert counters.rate_mismatches == 0 and counters.transport_dropped == 0
    assert counters.measured_rate_hz == pytest.approx(1000.0, rel=0.1)
