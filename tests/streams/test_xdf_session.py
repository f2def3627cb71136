"""Sessions from XDF (:mod:`streams.xdf_session`): binning by the live front-end,
interpolation never across gaps or beyond a stream, every dropped bin counted.

pyxdf is the oracle: what we read, inspect or write must agree with ``pyxdf.load_xdf``
called directly. The real files (xdf-modules/example-files) live outside the repository
and are skipped when absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xdf_cases import real_file, regular_times

from streams.frontend import FrontEnd
from streams.native_rate import Renderer
from streams.session import Session
from streams.synthetic import SyntheticConfig, simulate_session
from streams.xdf import (
    XdfError,
    XdfStreamNotFoundError,
    inspect_xdf,
    read_xdf_streams,
    session_from_xdf,
    session_from_xdf_with_report,
)
from streams.xdf_writer import XdfWriter, write_session_xdf

# --- sessions -----------------------------------------------------------------------------


def _session(n: int = 300, bin_s: float = 0.05) -> Session:
    rng = np.random.default_rng(3)
    t = 20.0 + bin_s * np.arange(1, n + 1)
    return Session(
        neural=rng.poisson(2.0, size=(n, 4)).astype(np.float32),
        timestamps=t,
        bin_s=bin_s,
        kinematics=rng.standard_normal((n, 2)).astype(np.float32),
        kinematics_labels=("vx", "vy"),
        targets=rng.uniform(-5, 5, size=(n, 2)).astype(np.float32),
        channel_labels=("e0", "e1", "e2", "e3"),
    )


def test_session_round_trip(tmp_path: Path) -> None:
    session = _session()
    path = write_session_xdf(tmp_path / "session.xdf", session, chunk_bins=64)
    assert [s.n_samples for s in inspect_xdf(path)] == [session.n_bins] * 3
    assert all(s.n_gaps == 0 and not s.notes for s in inspect_xdf(path))
    back, report = session_from_xdf_with_report(
        path, neural="bci-neural", kinematics="bci-kinematics", targets="bci-targets"
    )
    np.testing.assert_array_equal(back.neural, session.neural)
    np.testing.assert_array_equal(back.timestamps, session.timestamps)
    np.testing.assert_array_equal(back.kinematics, session.kinematics)
    np.testing.assert_array_equal(back.targets, session.targets)
    assert back.bin_s == session.bin_s
    assert back.kinematics_labels == ("vx", "vy") and back.channel_labels == session.channel_labels
    assert report.n_bins == session.n_bins and report.dropped_total == 0
    # selecting by type (the types the LSL player uses) works the same
    by_type = session_from_xdf(path, neural="Neural", kinematics="Kinematics")
    np.testing.assert_array_equal(by_type.kinematics, session.kinematics)
    assert by_type.targets is None


def test_session_units_come_from_the_channel_desc(tmp_path: Path) -> None:
    """``desc/channels/channel/unit`` of the kinematics stream: every channel's, or none."""
    session = _session()
    with_units = Session(**{**_fields_of(session), "kinematics_units": ("cm/s", "cm/s")})
    path = write_session_xdf(tmp_path / "units.xdf", with_units)
    (kin,) = read_xdf_streams(path, select="bci-kinematics")
    assert kin.channel_units == ("cm/s", "cm/s")
    back = session_from_xdf(path, neural="bci-neural", kinematics="bci-kinematics")
    assert back.kinematics_units == ("cm/s", "cm/s")
    without = session_from_xdf(write_session_xdf(tmp_path / "plain.xdf", session),
                               neural="bci-neural", kinematics="bci-kinematics")  # fmt: skip
    assert without.kinematics_units is None
    with XdfWriter(tmp_path / "partial.xdf") as writer:  # one channel without a unit
        writer.add_stream(1, "n", "Neural", 4, 20.0, "float32")
        writer.add_stream(2, "k", "Kinematics", 2, 20.0, "float32", channel_labels=["vx", "vy"],
                          channel_units=["cm/s", ""])  # fmt: skip
        writer.write_samples(1, session.timestamps, session.neural)
        writer.write_samples(2, session.timestamps, session.kinematics)
    partial = session_from_xdf(tmp_path / "partial.xdf", neural="n", kinematics="k")
    assert partial.kinematics_units is None  # never completed by guessing


def _fields_of(session: Session) -> dict:
    return {
        "neural": session.neural,
        "timestamps": session.timestamps,
        "bin_s": session.bin_s,
        "kinematics": session.kinematics,
        "kinematics_labels": session.kinematics_labels,
        "targets": session.targets,
        "channel_labels": session.channel_labels,
    }


def test_session_rebinning_sums_pairs(tmp_path: Path) -> None:
    session = _session(n=301)
    path = write_session_xdf(tmp_path / "s.xdf", session)
    coarse, report = session_from_xdf_with_report(
        path, "bci-neural", kinematics="bci-kinematics", bin_s=0.1
    )
    pairs = session.neural[:300].reshape(150, 2, 4).sum(axis=1)
    np.testing.assert_allclose(coarse.neural, pairs)
    np.testing.assert_allclose(coarse.timestamps, session.timestamps[1:300:2], atol=1e-9)
    # bins end on kinematics samples, so interpolation returns them
    np.testing.assert_allclose(coarse.kinematics, session.kinematics[1:300:2], atol=1e-6)
    assert coarse.bin_s == 0.1 and report.dropped_incomplete == 1 and report.n_bins == 150


def _counter_stream_file(path: Path, keep: np.ndarray, srate: float = 100.0) -> np.ndarray:
    # the first sample right after 100.00 s, a bin start, as a publisher on the bin grid has it
    ts = regular_times(keep.size, srate, start=100.01)[keep]
    counter = np.flatnonzero(keep)
    with XdfWriter(path) as writer:
        writer.add_stream(1, "spikes", "neural", 2, srate, "int16")
        writer.write_samples(1, ts, np.column_stack([counter, np.ones_like(counter)]))
    return ts


def test_binning_is_causal_and_counts_gaps(tmp_path: Path) -> None:
    keep = np.ones(1003, dtype=bool)  # 100 Hz, 5 samples per 50 ms bin, 3 left over
    keep[250:350] = False  # a gap of exactly 20 bins
    ts = _counter_stream_file(tmp_path / "n.xdf", keep)
    session, report = session_from_xdf_with_report(tmp_path / "n.xdf", "spikes", bin_s=0.05)
    assert report.dropped_empty == 20 and report.dropped_incomplete == 1
    assert report.n_bins == session.n_bins == 180 and report.n_short_bins == 0
    np.testing.assert_array_equal(session.neural[:, 1], 5)  # five samples in every bin
    # bin k sums samples 5k .. 5k+4 and ends at the time of its last sample
    starts = np.r_[np.arange(0, 250, 5), np.arange(350, 1000, 5)]
    np.testing.assert_array_equal(session.neural[:, 0], 5 * starts + 10)
    np.testing.assert_allclose(session.timestamps, regular_times(1003, 100.0, 100.01)[starts + 4])
    assert session.timestamps[0] == pytest.approx(ts[4], abs=1e-9)


def test_binning_reports_short_bins(tmp_path: Path) -> None:
    keep = np.ones(1000, dtype=bool)
    keep[252:352] = False  # gap not aligned to bins: two bins keep only part of their samples
    _counter_stream_file(tmp_path / "n.xdf", keep)
    session, report = session_from_xdf_with_report(tmp_path / "n.xdf", "spikes", bin_s=0.05)
    assert report.n_short_bins == 2 and report.dropped_empty == 19
    assert sorted(session.neural[session.neural[:, 1] < 5, 1]) == [2, 3]
    assert session.neural[:, 1].sum() == keep.sum()


def test_binning_drops_a_first_bin_the_stream_starts_inside(tmp_path: Path) -> None:
    path = tmp_path / "n.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, "spikes", "neural", 1, 100.0, "int16")
        writer.write_samples(1, regular_times(23, 100.0, start=100.03), np.ones((23, 1)))
    session, report = session_from_xdf_with_report(path, "spikes", bin_s=0.05)
    # (100.0, 100.05] holds 100.03 and 100.04 only; (100.05, 100.1], (100.1, 100.15] are full;
    # the stream ends inside (100.2, 100.25] after 100.21 .. 100.25: that bin is complete
    np.testing.assert_allclose(session.timestamps, [100.1, 100.15, 100.2, 100.25])
    np.testing.assert_array_equal(session.neural[:, 0], [5, 5, 5, 5])
    assert report.dropped_incomplete == 1 and report.n_short_bins == 0


def test_binning_irregular_counts_keep_empty_bins(tmp_path: Path) -> None:
    path = tmp_path / "irregular.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, "counts", "neural", 1, 0.0, "int32")
        writer.write_samples(1, [100.01, 100.02, 100.13, 100.5, 100.52], [[1], [2], [3], [4], [5]])
    session, report = session_from_xdf_with_report(path, "counts", bin_s=0.1, input_kind="counts")
    # irregular counts are summed; a bin without samples is a true zero; the sample at 100.5
    # closes (100.4, 100.5]; the stream ends inside (100.5, 100.6]: dropped as incomplete
    np.testing.assert_array_equal(session.neural[:, 0], [3, 3, 0, 0, 4])
    np.testing.assert_allclose(session.timestamps, 100.1 + 0.1 * np.arange(5), atol=1e-9)
    assert report.dropped_incomplete == 1 and report.dropped_empty == 0


def test_binning_spike_events_counts_them_per_channel(tmp_path: Path) -> None:
    path = tmp_path / "events.xdf"
    with XdfWriter(path) as writer:  # nominal rate 0, one int32 channel: events by default
        writer.add_stream(1, "spikes", "neural", 1, 0.0, "int32")
        writer.write_samples(1, [100.01, 100.02, 100.13, 100.2], [[2], [0], [2], [2]])
    session = session_from_xdf(path, "spikes", bin_s=0.1)
    # three channels (largest index + 1); the event at 100.2 closes (100.1, 100.2]
    np.testing.assert_array_equal(session.neural, [[1, 0, 1], [0, 0, 2]])
    np.testing.assert_allclose(session.timestamps, [100.1, 100.2])
    assert session.channel_labels is None


@pytest.mark.parametrize("kind", ["counts", "events", "broadband"])
def test_recording_bins_equal_the_live_front_ends_bins(tmp_path: Path, kind: str) -> None:
    """A recording binned by session_from_xdf gives the bins a live front-end fed the same
    samples in chunks gives, bin for bin (and for counts and events the simulated counts)."""
    bin_s, n_channels = 0.02, 6
    sim = simulate_session(SyntheticConfig(n_channels=n_channels, bin_s=bin_s, duration_s=3.0))
    renderer = Renderer(kind, bin_s, n_channels, 30_000.0 if kind == "broadband" else 1000.0)
    ends = 700.0 + bin_s * np.arange(1, sim.n_bins + 1)
    data, stamps, _ = renderer.render(sim.neural, ends)
    rate = {"counts": 1000.0, "events": 0.0, "broadband": 30_000.0}[kind]
    path = tmp_path / f"{kind}.xdf"
    with XdfWriter(path) as writer:
        fmt = "int32" if kind == "events" else "float32"
        writer.add_stream(1, "rig", "neural", data.shape[1], rate, fmt)
        writer.write_samples(1, stamps, data)
    session, report = session_from_xdf_with_report(path, "rig", bin_s=bin_s)
    live = FrontEnd(kind, bin_s, n_channels, sample_rate_hz=rate)
    parts = [live.feed(data[a : a + 333], stamps[a : a + 333]) for a in range(0, len(stamps), 333)]
    end_times = np.concatenate([p.end_times for p in parts])
    np.testing.assert_array_equal(session.neural, np.concatenate([p.data for p in parts]))
    np.testing.assert_allclose(session.timestamps, end_times, rtol=0, atol=1e-9)
    # events: the recording ends inside the last bin (live, the grace period closes it)
    assert report.dropped_total == (kind == "events") and report.n_short_bins == 0
    if kind != "broadband":  # events: from the bin of the first event on
        k = np.rint((session.timestamps - 700.0) / bin_s).astype(int) - 1
        np.testing.assert_array_equal(session.neural, sim.neural[k])


def test_kinematics_interpolated_never_extrapolated(tmp_path: Path) -> None:
    path = tmp_path / "k.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, "spikes", "neural", 1, 20.0, "int16")
        t_neural = regular_times(200, 20.0)  # 100.0 .. 109.95
        writer.write_samples(1, t_neural, np.ones((200, 1)))
        writer.add_stream(2, "cursor", "kinematics", 2, 60.0, "double64", channel_labels=["x", "y"])
        t_kin = 102.0 + np.arange(300) / 60.0  # 102.0 .. 106.98
        t_kin = t_kin[(t_kin < 104.0) | (t_kin > 104.5)]  # a 0.5 s gap
        writer.write_samples(2, t_kin, np.column_stack([2 * t_kin + 1, -t_kin]))
    session, report = session_from_xdf_with_report(path, "spikes", kinematics="cursor")
    t = session.timestamps
    assert t.min() >= t_kin[0] and t.max() <= t_kin[-1]
    np.testing.assert_allclose(session.kinematics[:, 0], 2 * t + 1, rtol=1e-6)
    np.testing.assert_allclose(session.kinematics[:, 1], -t, rtol=1e-6)
    outside = (t_neural < t_kin[0]) | (t_neural > t_kin[-1])
    hole = (t_neural > t_kin[t_kin < 104.0][-1]) & (t_neural < t_kin[t_kin > 104.5][0])
    assert report.dropped_outside == outside.sum()
    assert report.dropped_in_gaps == hole.sum() > 0
    assert session.n_bins == 200 - outside.sum() - hole.sum()
    assert session.kinematics_labels == ("x", "y")
    # a longer allowed gap interpolates across it instead
    bridged = session_from_xdf(path, "spikes", kinematics="cursor", max_gap_s=1.0)
    assert bridged.n_bins == session.n_bins + hole.sum()


def test_session_errors(tmp_path: Path) -> None:
    path = tmp_path / "e.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, "spikes", "neural", 2, 20.0, "int16")
        writer.write_samples(1, regular_times(10, 20.0), np.ones((10, 2)))
        writer.add_stream(2, "cues", "Markers", 1, 0.0, "string")
        writer.write_samples(2, [100.0], ["go"])
        writer.add_stream(3, "silent", "neural", 2, 20.0, "float32")
        writer.add_stream(4, "xyz", "targets", 3, 20.0, "float32")
        writer.write_samples(4, regular_times(10, 20.0), np.ones((10, 3)))
        writer.add_stream(5, "events", "Events", 1, 0.0, "int32")
        writer.write_samples(5, [100.0, 100.2], [[1], [2]])
        writer.add_stream(6, "late", "kinematics", 1, 20.0, "float32")
        writer.write_samples(6, regular_times(10, 20.0, start=200.0), np.ones((10, 1)))
    with pytest.raises(XdfStreamNotFoundError, match=r"'cursor'.*'spikes' \(type 'neural'"):
        session_from_xdf(path, neural="spikes", kinematics="cursor")
    with pytest.raises(XdfError, match=r"channel_format 'string'"):
        session_from_xdf(path, neural="cues", bin_s=0.1)
    with pytest.raises(XdfError, match=r"'silent'.*is empty"):
        session_from_xdf(path, neural="silent")
    with pytest.raises(XdfError, match=r"matches 2 streams.*select it by name"):
        session_from_xdf(path, neural="neural")
    with pytest.raises(XdfError, match=r"has 3 channels; targets need 2"):
        session_from_xdf(path, neural="spikes", targets="xyz")
    with pytest.raises(XdfError, match=r"irregular.*pass bin_s"):
        session_from_xdf(path, neural="events")
    with pytest.raises(XdfError, match=r"shorter than the 0.05 s sample period"):
        session_from_xdf(path, neural="spikes", bin_s=0.01)
    with pytest.raises(XdfError, match=r"not covered|no bin"):
        session_from_xdf(path, neural="spikes", kinematics="late")


def test_real_recording_to_session() -> None:
    path = real_file("clock_resets.xdf")
    (eeg,) = read_xdf_streams(path, select="BioSemi")
    session, report = session_from_xdf_with_report(path, neural="EEG", bin_s=0.05)
    assert report.neural_stream == "BioSemi" and report.n_neural_samples == 27815
    assert np.all(np.diff(session.timestamps) > 0)
    # the 273.6 s break across the clock reset is dropped, not filled with zeros
    assert report.dropped_empty == pytest.approx(273.5 / 0.05, rel=0.01)
    # every sample lands in exactly one kept bin, except those of the incomplete first and
    # last bins
    head = eeg.time_stamps <= session.timestamps[0] - 0.05 + 1e-9
    tail = eeg.time_stamps > session.timestamps[-1]
    np.testing.assert_allclose(
        session.neural.sum(axis=0),
        eeg.time_series[~head & ~tail].astype(np.float64).sum(axis=0),
        rtol=1e-5,
    )
    assert report.dropped_incomplete == int(head.any()) + int(tail.any())
    with pytest.raises(XdfError, match="channel_format 'string'"):
        session_from_xdf(path, neural="MyMarkerStream", bin_s=0.05)
    # unsynchronized, the raw clock jumps back by ~653,000 s at the reset
    with pytest.raises(XdfError, match=r"goes back in time at sample 12876.*clock reset"):
        session_from_xdf(path, neural="BioSemi", bin_s=0.05, synchronize_clocks=False)
