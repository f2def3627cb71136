"""Reading XDF (:mod:`streams.xdf_read`): real files agree with pyxdf; truncated, corrupt
and unknown-stream errors name the file.

pyxdf is the oracle: what we read, inspect or write must agree with ``pyxdf.load_xdf``
called directly. The real files (xdf-modules/example-files) live outside the repository
and are skipped when absent.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from xdf_cases import (
    REAL_FILES,
    REPO_ROOT,
    assert_same_series,
    chunk_starts,
    pyxdf_load,
    real_file,
    regular_times,
)

from streams.xdf import (
    XdfError,
    XdfStreamNotFoundError,
    format_inspection,
    inspect_xdf,
    read_xdf_streams,
    session_from_xdf,
    session_from_xdf_with_report,
)
from streams.xdf_writer import CHANNEL_FORMATS, XdfWriter

# --- real files: reading agrees with pyxdf -------------------------------


@pytest.mark.parametrize("name", REAL_FILES)
def test_read_agrees_with_pyxdf(name: str) -> None:
    path = real_file(name)
    ours = read_xdf_streams(path)
    synced = pyxdf_load(path, dejitter_timestamps=False)
    raw = pyxdf_load(path, synchronize_clocks=False, dejitter_timestamps=False)
    for stream, s, r in zip(ours, synced, raw, strict=True):
        np.testing.assert_array_equal(stream.time_stamps, s["time_stamps"])
        np.testing.assert_array_equal(stream.raw_time_stamps, r["time_stamps"])
        assert_same_series(stream.time_series, s["time_series"], stream.channel_format)
        np.testing.assert_array_equal(stream.clock_times, s["clock_times"])
        np.testing.assert_array_equal(stream.clock_values, s["clock_values"])
        if not stream.is_string:
            assert stream.time_series.dtype == np.dtype(CHANNEL_FORMATS[stream.channel_format])
            assert stream.time_series.shape == (stream.n_samples, stream.channel_count)
    dejittered = read_xdf_streams(path, dejitter=True)
    for stream, s in zip(dejittered, pyxdf_load(path), strict=True):
        np.testing.assert_array_equal(stream.time_stamps, s["time_stamps"])


def test_minimal_file_contents() -> None:
    path = real_file("minimal.xdf")
    data, markers = read_xdf_streams(path)
    assert (data.name, data.stream_id, data.channel_format) == ("SendDataC", 0, "int16")
    np.testing.assert_array_equal(data.time_series[:2], [[192, 255, 238], [12, 22, 32]])
    np.testing.assert_allclose(data.raw_time_stamps, np.arange(51, 60) / 10)
    # two clock offsets of -0.1 s shift the synchronized timestamps by -0.1 s
    np.testing.assert_allclose(data.time_stamps, np.arange(50, 59) / 10, atol=1e-9)
    assert markers.stream_id == 46202862 and markers.n_clock_offsets == 0
    # the first marker of this example file is an XML footer stored as a string sample
    assert markers.markers[0].startswith("<?xml") and markers.markers[1:5] == [
        "Hello",
        "World",
        "from",
        "LSL",
    ]


def test_clock_resets_file() -> None:
    path = real_file("clock_resets.xdf")
    _, eeg = read_xdf_streams(path)
    assert (eeg.name, eeg.n_samples, eeg.n_clock_offsets) == ("BioSemi", 27815, 115)
    assert eeg.time_series.dtype == np.float32 and eeg.time_series.shape == (27815, 8)
    # the raw LSL clock restarted mid-recording: one huge backward step in raw timestamps...
    raw_steps = np.diff(eeg.raw_time_stamps)
    assert (raw_steps < 0).sum() == 1 and raw_steps.min() < -6e5
    assert (np.diff(eeg.clock_times) < 0).sum() == 1
    # ...which clock synchronization (one fit per clock segment) turns into a break
    assert np.all(np.diff(eeg.time_stamps) > 0)
    (summary_markers, summary_eeg) = inspect_xdf(path)
    assert summary_eeg.clock_resets == 1 and summary_markers.clock_resets == 1
    assert summary_eeg.n_backward_steps == 0
    assert summary_eeg.n_gaps == 21
    assert summary_eeg.longest_gap_s == pytest.approx(273.56, abs=0.01)
    assert summary_eeg.effective_srate == pytest.approx(92.94, abs=0.01)  # not 100 Hz
    assert summary_markers.n_gaps is None  # irregular stream
    table = format_inspection([summary_markers, summary_eeg])
    assert "clock reset" in table and "irregular" in table and "21 gap(s)" in table


def test_chunk_stamped_ecg_file() -> None:
    """A wearable pushes ~8 samples per ~62.5 ms, stamped microseconds apart: the stream is
    128 Hz without a single lost sample, not 226 kHz with a gap per chunk."""
    path = real_file("ECG_with_audio.xdf")
    summaries = {s.name: s for s in inspect_xdf(path)}
    ecg = summaries["HeartyPatch"]
    assert (ecg.nominal_srate, ecg.n_samples, ecg.chunk_size) == (128.0, 8720, 8.0)
    assert ecg.n_gaps == 0 and ecg.gap_s == 0.0 and ecg.longest_gap_s is None
    assert ecg.effective_srate == pytest.approx(128.06, abs=0.01)
    assert ecg.n_clock_offsets == 13 and summaries["Keep Talking Stream"].n_samples == 4
    assert ecg.notes == (
        "chunk-stamped: samples arrive in chunks of ~8 sharing one timestamp; rate and gaps "
        "are measured per chunk",
    )
    session, report = session_from_xdf_with_report(path, "HeartyPatch", bin_s=8 / 128)
    assert report.dropped_empty == 0 and report.n_short_bins == 0
    assert 0.05 < report.restamped["HeartyPatch"] < 0.2  # the correction is recorded
    # 8,720 samples span 1,090 bins of 8 on the bin grid; the first is partial (the stream
    # started inside it) and the last still open: both are left out
    assert session.n_bins == 8720 // 8 - 2


def test_empty_streams_file() -> None:
    path = real_file("empty_streams.xdf")
    streams = {s.name: s for s in read_xdf_streams(path)}
    empty = streams["Empty data stream: test stream 0 counter"]
    assert empty.n_samples == 0 and empty.time_series.shape == (0, 1)
    assert empty.time_series.dtype == np.float32  # pyxdf itself gives float64 here
    assert empty.channel_labels == ("ch:00",) and empty.channel_units is None
    assert streams["Empty marker stream: test stream 0 counter"].time_series == []
    assert streams["ctrl"].markers == ['{"state": 2}']
    counter = streams["Data stream: test stream 0 counter"]
    np.testing.assert_array_equal(counter.time_series[:, 0], np.arange(10))
    notes = [n for s in inspect_xdf(path) for n in s.notes]
    assert sum("empty stream" in n for n in notes) == 2


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_round_trip(name: str, tmp_path: Path) -> None:
    """Read a real file, rewrite it with XdfWriter, reload: identical under every pyxdf mode."""
    path = real_file(name)
    streams = read_xdf_streams(path)
    out = tmp_path / name
    with XdfWriter(out) as writer:
        for s in streams:
            writer.add_stream(
                s.stream_id,
                s.name,
                s.type,
                s.channel_count,
                s.nominal_srate,
                s.channel_format,
                s.source_id,
                s.channel_labels,
                s.channel_units,
            )
        for s in streams:
            for start in range(0, s.n_samples, 1000):  # several chunks per stream
                stop = start + 1000
                writer.write_samples(
                    s.stream_id, s.raw_time_stamps[start:stop], s.time_series[start:stop]
                )
                writer.write_boundary()
            for t, v in zip(s.clock_times, s.clock_values, strict=True):
                writer.write_clock_offset(s.stream_id, t, v)
    for options in (
        {},  # synchronized and dejittered: clock offsets made it across too
        {"dejitter_timestamps": False},
        {"synchronize_clocks": False, "dejitter_timestamps": False},
    ):
        original, rewritten = pyxdf_load(path, **options), pyxdf_load(out, **options)
        for a, b in zip(original, rewritten, strict=True):
            assert a["info"]["stream_id"] == b["info"]["stream_id"]
            assert a["info"]["name"] == b["info"]["name"]
            np.testing.assert_array_equal(a["time_stamps"], b["time_stamps"])
            assert_same_series(a["time_series"], b["time_series"], a["info"]["channel_format"][0])
    assert [s.n_samples for s in inspect_xdf(out)] == [s.n_samples for s in streams]


# --- bad input ----------------------------------------------------------------------------


def test_unknown_stream_lists_streams_present(tmp_path: Path) -> None:
    path = tmp_path / "two.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, "amp", "EEG", 1, 10.0, "float32")
        writer.add_stream(2, "cues", "Markers", 1, 0.0, "string")
    with pytest.raises(XdfStreamNotFoundError) as err:
        read_xdf_streams(path, select="ampp")
    message = str(err.value)
    assert "'ampp'" in message and str(path) in message
    assert "'amp' (type 'EEG'" in message and "'cues' (type 'Markers'" in message
    assert "did you mean 'amp'" in message
    assert [s.name for s in read_xdf_streams(path, select="Markers")] == ["cues"]
    assert [s.name for s in read_xdf_streams(path, select=["cues", "amp"])] == ["amp", "cues"]


def test_write_samples_rejects_bad_input(tmp_path: Path) -> None:
    with XdfWriter(tmp_path / "bad.xdf") as writer:
        writer.add_stream(1, "amp", "EEG", 3, 100.0, "int8")
        writer.add_stream(2, "cues", "Markers", 1, 0.0, "string")
        with pytest.raises(XdfError, match=r"expected 3 channels, received 2 channels") as err:
            writer.write_samples(1, [0.0, 0.01], np.zeros((2, 2)))
        assert "'amp'" in str(err.value)
        with pytest.raises(XdfError, match=r"expected 1 channels, received 2 in sample 0"):
            writer.write_samples(2, [0.0], [["a", "b"]])
        with pytest.raises(XdfError, match=r"stream id 9 was not added.*'amp'.*add_stream"):
            writer.write_samples(9, [0.0], [[1, 2, 3]])
        with pytest.raises(XdfError, match=r"stream id 9 was not added"):
            writer.write_clock_offset(9, 0.0, 0.0)
        with pytest.raises(XdfError, match=r"beyond the int8 range"):
            writer.write_samples(1, [0.0], [[1, 2, 300]])
        with pytest.raises(XdfError, match=r"not a whole number"):
            writer.write_samples(1, [0.0], [[1, 2.5, 3]])
        with pytest.raises(XdfError, match=r"2 samples but timestamps have 1"):
            writer.write_samples(1, [0.0], np.zeros((2, 3)))
        with pytest.raises(XdfError, match=r"non-finite value nan at index 1"):
            writer.write_samples(1, [0.0, np.nan], np.zeros((2, 3)))
        with pytest.raises(XdfError, match=r"pass a str per sample"):
            writer.write_samples(2, [0.0], [3])
        with pytest.raises(XdfError, match=r"non-string 3"):
            writer.write_samples(2, [0.0], [[3]])
        with pytest.raises(XdfError, match=r"pass strings"):
            writer.write_samples(2, [0.0], np.zeros(1))
        with pytest.raises(XdfError, match=r"already used"):
            writer.add_stream(1, "again", "EEG", 1, 1.0, "int8")
        with pytest.raises(XdfError) as err:
            writer.add_stream(3, "x", "EEG", 1, 1.0, "float")
        for fmt in CHANNEL_FORMATS:
            assert repr(fmt) in str(err.value)
        with pytest.raises(XdfError, match=r"2 entries for 3 channels"):
            writer.add_stream(4, "x", "EEG", 3, 1.0, "int8", channel_labels=["a", "b"])
        with pytest.raises(XdfError, match=r"nominal_srate"):
            writer.add_stream(5, "x", "EEG", 1, -1.0, "int8")
        writer.write_samples(1, [0.0], [[1, 2, 3]])  # the writer is still usable
    (amp, cues) = read_xdf_streams(tmp_path / "bad.xdf")
    assert amp.n_samples == 1 and cues.n_samples == 0  # rejected writes left no bytes


def _sample_file(path: Path) -> Path:
    with XdfWriter(path) as writer:
        writer.add_stream(1, "amp", "EEG", 2, 100.0, "float32")
        ts = regular_times(40, 100.0)
        writer.write_samples(1, ts[:20], np.ones((20, 2)))
        writer.write_clock_offset(1, 100.0, 0.5)
        writer.write_samples(1, ts[20:], np.ones((20, 2)))
    return path


@pytest.mark.parametrize(
    "where",
    ["stream header", "samples", "clock offset", "before footers", "footer"],
)
def test_truncated_file_raises_naming_the_path(where: str, tmp_path: Path) -> None:
    data = _sample_file(tmp_path / "whole.xdf").read_bytes()
    chunks = chunk_starts(data)
    by_tag = {tag: (start, total) for start, tag, total in chunks}  # last chunk of each tag
    first_samples = next((s, t) for s, tag, t in chunks if tag == 3)
    cut = {
        "stream header": by_tag[2][0] + by_tag[2][1] // 2,
        "samples": first_samples[0] + first_samples[1] // 2,
        "clock offset": by_tag[4][0] + by_tag[4][1] - 5,
        "before footers": by_tag[6][0],
        "footer": by_tag[6][0] + by_tag[6][1] - 10,
    }[where]
    path = tmp_path / "cut.xdf"
    path.write_bytes(data[:cut])
    with pytest.raises(XdfError) as err:
        read_xdf_streams(path)
    assert str(path) in str(err.value) and "truncated" in str(err.value)
    if where == "samples":
        assert "pyxdf: found likely XDF file corruption" in str(err.value)
    with pytest.raises(XdfError, match="truncated"):
        session_from_xdf(path, neural="amp")


def test_corrupt_chunk_is_an_error_even_when_pyxdf_is_silenced(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, "amp", "EEG", 1, 100.0, "int32")
        ts = regular_times(30, 100.0)
        for part in np.split(np.arange(30), 3):
            writer.write_samples(1, ts[part], part[:, None])
            writer.write_boundary()
    data = bytearray(path.read_bytes())
    second_samples = [start for start, tag, _ in chunk_starts(bytes(data)) if tag == 3][1]
    data[second_samples] = 7  # an invalid NumLengthBytes: pyxdf logs, skips to the boundary
    path.write_bytes(bytes(data))
    pyxdf_logger = logging.getLogger("pyxdf.pyxdf")
    level = pyxdf_logger.level
    pyxdf_logger.setLevel(logging.CRITICAL)
    try:
        with pytest.raises(XdfError, match=r"corrupt \(pyxdf: Error reading chunk length") as err:
            read_xdf_streams(path)
        assert str(path) in str(err.value)
        assert pyxdf_logger.level == logging.CRITICAL and pyxdf_logger.propagate
    finally:
        pyxdf_logger.setLevel(level)
    (stream,) = read_xdf_streams(path, allow_truncated=True)
    np.testing.assert_array_equal(stream.time_series[:, 0], np.r_[0:10, 20:30])
    (summary,) = inspect_xdf(path)
    assert "footer declares 30 samples but the file holds 20" in summary.notes


def test_truncated_real_file_wraps_pyxdf_error(tmp_path: Path) -> None:
    data = real_file("minimal.xdf").read_bytes()
    path = tmp_path / "minimal-cut.xdf"
    path.write_bytes(data[:100])  # inside the first StreamHeader's XML
    with pytest.raises(XdfError, match="truncated") as err:
        read_xdf_streams(path)
    assert str(path) in str(err.value) and err.value.__cause__ is not None
    not_xdf = tmp_path / "notes.xdf"
    not_xdf.write_text("hello")
    with pytest.raises(XdfError, match="not XDF"):
        inspect_xdf(not_xdf)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_xdf_streams(tmp_path / "absent.xdf")


def test_streams_package_does_not_import_service_or_calibration() -> None:
    code = (
        "import sys, streams.xdf, streams.xdf_writer; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('service', 'calibration')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=120)
