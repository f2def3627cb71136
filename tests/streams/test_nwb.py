"""NWB sessions: files written by pynwb in the Neural Latents Benchmark / DANDI layout, read
back through the live front-end's bins."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.behavior import Position, SpatialSeries

from streams.files import inspect_session_file, load_any_session
from streams.frontend import FrontEnd
from streams.nwb import load_nwb_session, read_nwb
from streams.session import Session, SessionError
from streams.synthetic import SyntheticConfig, simulate_session

BIN_S = 0.05


def spike_times(session: Session, rng: np.random.Generator) -> list[np.ndarray]:
    """Per channel, ``neural[k, c]`` spike times inside bin k, away from its edges."""
    starts = session.timestamps - session.bin_s
    out = []
    for c in range(session.n_channels):
        counts = session.neural[:, c].astype(np.int64)
        t0 = np.repeat(starts, counts)
        out.append(np.sort(t0 + rng.uniform(0.05, 0.95, t0.size) * session.bin_s))
    return out


def write_nwb(
    path: Path,
    spikes: list[np.ndarray],
    behavior: list[TimeSeries] = (),
    obs_intervals: list[list[float]] | None = None,
    position: SpatialSeries | None = None,
) -> Path:
    """An NWB file as the NLB files are laid out: Units (spike_times, obs_intervals,
    heldout), processing/behavior series, a trials table."""
    nwbfile = NWBFile(
        session_description="test session",
        identifier=path.stem,
        session_start_time=datetime(2021, 1, 1, tzinfo=timezone.utc),
    )
    if spikes:  # no units: no Units table
        nwbfile.add_unit_column(name="heldout", description="held-out unit (NLB)")
    for unit_id, times in enumerate(spikes):
        extra = {} if obs_intervals is None else {"obs_intervals": obs_intervals}
        nwbfile.add_unit(spike_times=times, heldout=unit_id % 5 == 0, id=100 + unit_id, **extra)
    module = nwbfile.create_processing_module("behavior", "behavioural data")
    for series in behavior:
        module.add(series)
    if position is not None:
        module.add(Position(name="Position", spatial_series=[position]))
    nwbfile.add_trial(start_time=0.0, stop_time=1.0)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


@pytest.fixture(scope="module")
def simulated() -> Session:
    return simulate_session(SyntheticConfig(duration_s=12.0, seed=3))


@pytest.fixture(scope="module")
def nlb_file(simulated: Session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hand_vel at the bin ends, cursor_pos at 1 kHz, and a target series."""
    rng = np.random.default_rng(0)
    ms = np.arange(0, 12001) / 1000.0
    behavior = [
        TimeSeries(
            name="hand_vel",
            data=simulated.kinematics,
            timestamps=simulated.timestamps,
            unit="cm/s",
            comments="columns=[x,y]",
        ),
        SpatialSeries(
            name="cursor_pos",
            data=np.column_stack([np.sin(ms), ms**2]),
            reference_frame="screen centre",
            rate=1000.0,
            starting_time=0.0,
            unit="cm",
        ),
        TimeSeries(
            name="target_pos", data=simulated.targets, timestamps=simulated.timestamps, unit="cm"
        ),
    ]
    path = tmp_path_factory.mktemp("nwb") / "nlb.nwb"
    return write_nwb(path, spike_times(simulated, rng), behavior)


def test_nlb_layout_round_trip(nlb_file: Path, simulated: Session) -> None:
    session = load_any_session(nlb_file, bin_s=BIN_S, targets="target_pos")
    np.testing.assert_array_equal(session.neural, simulated.neural)
    np.testing.assert_allclose(session.timestamps, simulated.timestamps, rtol=0, atol=1e-9)
    np.testing.assert_allclose(session.kinematics, simulated.kinematics, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(session.targets, simulated.targets, rtol=1e-6, atol=1e-5)
    assert session.bin_s == BIN_S
    assert session.kinematics_labels == ("hand_vel_x", "hand_vel_y")  # from columns=[x,y]
    assert session.channel_labels == tuple(f"unit{100 + c}" for c in range(96))


def test_spike_bins_are_the_live_front_ends(nlb_file: Path) -> None:
    """The same spikes pushed one by one into a live events front-end give the same bins."""
    contents = read_nwb(nlb_file)
    session = load_nwb_session(nlb_file, bin_s=0.02)
    live = FrontEnd("events", 0.02, 96, sample_rate_hz=0.0, grace_s=0.0)
    bins = [
        live.feed(np.array([[unit]]), np.array([t]))
        for t, unit in zip(contents.spike_times, contents.spike_units, strict=True)
    ]
    data = np.concatenate([b.data for b in bins])
    ends = np.concatenate([b.end_times for b in bins])
    for k in (5, 100, 300):  # bins both sides hold: same counts at the same end time
        row = int(np.argmin(np.abs(ends - session.timestamps[k])))
        assert ends[row] == pytest.approx(session.timestamps[k])
        np.testing.assert_array_equal(session.neural[k], data[row])


def test_position_is_differentiated_over_each_bin(nlb_file: Path) -> None:
    session = load_any_session(nlb_file, bin_s=0.1, kinematics="cursor_pos")
    t = session.timestamps
    expected = np.column_stack([(np.sin(t) - np.sin(t - 0.1)) / 0.1, (t**2 - (t - 0.1) ** 2) / 0.1])
    np.testing.assert_allclose(session.kinematics, expected, atol=1e-3)
    assert session.kinematics_labels == ("cursor_pos_vx", "cursor_pos_vy")
    assert t[0] == pytest.approx(0.1)  # the first bin needs the position at its start


def test_nan_gaps_and_observation_intervals_drop_bins(simulated: Session, tmp_path) -> None:
    """NLB fills the behaviour between trials with NaN; spikes outside obs_intervals were
    not observed. Bins in either are dropped, never filled."""
    velocity = simulated.kinematics.astype(np.float64)
    velocity[100:120] = np.nan
    series = TimeSeries(name="hand_vel", data=velocity, timestamps=simulated.timestamps, unit="u")
    spikes = spike_times(simulated, np.random.default_rng(1))
    path = write_nwb(tmp_path / "gaps.nwb", spikes, [series], obs_intervals=[[0.0, 10.0]])
    session = load_nwb_session(path)
    k_all = np.rint(simulated.timestamps / BIN_S).astype(np.int64)
    k = np.rint(session.timestamps / BIN_S).astype(np.int64)
    assert not np.isin(k_all[100:120], k).any()  # NaN kinematics
    assert np.isin(k_all[:99], k).all() and np.isin(k_all[121:200], k).all()
    assert k.max() == 200  # the bin ending at 10 s is the last one observed
    np.testing.assert_array_equal(session.neural, simulated.neural[np.isin(k_all, k)])


def test_position_container_and_default_choice(simulated: Session, tmp_path) -> None:
    """A SpatialSeries in a Position container (the NWB convention) is a position."""
    position = SpatialSeries(
        name="hand",
        data=np.cumsum(simulated.kinematics, axis=0) * BIN_S,
        timestamps=simulated.timestamps,
        reference_frame="origin",
    )
    spikes = spike_times(simulated, np.random.default_rng(2))
    path = write_nwb(tmp_path / "position.nwb", spikes, position=position)
    session = load_nwb_session(path)
    assert session.kinematics_labels == ("hand_vx", "hand_vy")
    np.testing.assert_allclose(session.kinematics, simulated.kinematics[1:], atol=1e-4)


def test_inspect_lists_units_and_series(nlb_file: Path, simulated: Session) -> None:
    summaries = inspect_session_file(nlb_file)
    assert [(s.name, s.type, s.channel_count) for s in summaries] == [
        ("units", "Neural", 96),
        ("cursor_pos", "Behavior", 2),
        ("hand_vel", "Behavior", 2),
        ("target_pos", "Behavior", 2),
    ]
    assert summaries[0].n_samples == int(simulated.neural.sum())
    assert summaries[1].nominal_srate == 1000.0 and summaries[1].n_samples == 12001


def test_bad_files_are_named(nlb_file: Path, simulated: Session, tmp_path) -> None:
    with pytest.raises(SessionError, match=r"no behaviour series 'hand_velocity'.*hand_vel, "):
        load_nwb_session(nlb_file, kinematics="hand_velocity")
    with pytest.raises(SessionError, match="drop --neural"):
        load_any_session(nlb_file, neural="units")
    with pytest.raises(SessionError, match="--targets needs a 2-column"):
        load_nwb_session(
            write_nwb(
                tmp_path / "t1.nwb",
                [np.array([0.5])],
                [TimeSeries(name="tgt", data=np.zeros((5, 3)), rate=1.0, unit="cm")],
            ),
            targets="tgt",
        )
    with pytest.raises(SessionError, match=r"no\.nwb has no Units table with spike_times;"):
        load_nwb_session(write_nwb(tmp_path / "no.nwb", []))
    garbage = tmp_path / "garbage.nwb"
    garbage.write_bytes(b"not an HDF5 file" * 10)
    with pytest.raises(SessionError, match=r"cannot read .* as an NWB file"):
        load_nwb_session(garbage)
    two = [
        TimeSeries(name=n, data=np.zeros((5, 2)), rate=1.0, unit="u")
        for n in ("joint_vel", "muscle_vel")
    ]
    ambiguous = write_nwb(tmp_path / "two.nwb", [np.array([0.5])], two)
    with pytest.raises(SessionError, match=r"several .*joint_vel, muscle_vel.*--kinematics"):
        load_nwb_session(ambiguous)


def test_cli_calibrates_and_replays_an_nwb_file(nlb_file: Path, tmp_path, capsys) -> None:
    from bci.checkpoint import load_checkpoint
    from service.cli import main

    model = tmp_path / "m.safetensors"
    argv = ["calibrate", str(nlb_file), "--out", str(model), "--bin-ms", "50"]
    assert main([*argv, "--steps", "20", "--hidden", "16"]) == 0
    manifest = load_checkpoint(model).manifest
    assert manifest.kinematics_labels == ["hand_vel_x", "hand_vel_y"]
    assert manifest.channel_labels[:2] == ["unit100", "unit101"]
    assert manifest.bin_s == BIN_S
    result = tmp_path / "replay.json"
    argv = ["replay", str(nlb_file), "--model", str(model), "--fast", "--out", str(result)]
    assert main(argv) == 0  # binned at the model's bin width
    assert '"bins": 240' in result.read_text()
    capsys.readouterr()
    assert main(["replay", "--inspect", str(nlb_file)]) == 0
    out = capsys.readouterr().out
    assert "4 stream(s)" in out and "units" in out and "hand_vel" in out
