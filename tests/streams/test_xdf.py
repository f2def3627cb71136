"""Tests for XDF reading, inspection, Session conversion and our XDF writer.

pyxdf is the oracle: everything we write must load in pyxdf with identical data and
timestamps, and what we read or inspect must agree with ``pyxdf.load_xdf`` called directly.
The real files (xdf-modules/example-files) live outside the repository and are skipped
when absent.
"""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyxdf

from streams.frontend import FrontEnd
from streams.native_rate import Renderer
from streams.session import Session
from streams.synthetic import SyntheticConfig, simulate_session
from streams.xdf import (
    XdfError,
    XdfStreamNotFoundError,
    format_inspection,
    inspect_xdf,
    read_xdf_streams,
    session_from_xdf,
    session_from_xdf_with_report,
)
from streams.xdf_writer import CHANNEL_FORMATS, XdfWriter, write_session_xdf

REPO_ROOT = Path(__file__).resolve().parents[2]
XDF_DIR = REPO_ROOT / ".." / "shared" / "data" / "xdf"
REAL_FILES = ("minimal.xdf", "clock_resets.xdf", "empty_streams.xdf")

NUMERIC_FORMATS = ("float32", "double64", "int8", "int16", "int32", "int64")


def real_file(name: str) -> Path:
    path = XDF_DIR / name
    if not path.is_file():
        pytest.skip(f"recorded XDF file {path.resolve()} is absent")
    return path


def pyxdf_load(path: Path, **kwargs: Any) -> list[dict[str, Any]]:
    streams, _ = pyxdf.load_xdf(str(path), **kwargs)
    return streams


def assert_same_series(ours: Any, theirs: Any, channel_format: str) -> None:
    if channel_format == "string":
        assert ours == theirs
    else:
        theirs = np.asarray(theirs)
        if theirs.size == 0:  # pyxdf returns float64 (0, C) for empty numeric streams
            assert ours.shape == theirs.shape
        else:
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)


def chunk_starts(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, tag, total length) of every chunk of an XDF byte string (test-side parser)."""
    assert data[:4] == b"XDF:"
    pos, out = 4, []
    while pos < len(data):
        width = data[pos]
        length = {1: "<B", 4: "<I", 8: "<Q"}[width]
        (size,) = struct.unpack_from(length, data, pos + 1)
        (tag,) = struct.unpack_from("<H", data, pos + 1 + width)
        total = 1 + width + size
        out.append((pos, tag, total))
        pos += total
    assert pos == len(data)
    return out


def regular_times(n: int, srate: float, start: float = 100.0) -> np.ndarray:
    return start + np.arange(n) / srate


# --- real files: reading and inspection agree with pyxdf -------------------------------


@pytest.mark.parametrize("name", REAL_FILES)
def test_inspect_agrees_with_pyxdf(name: str) -> None:
    path = real_file(name)
    summaries = inspect_xdf(path)
    theirs = pyxdf_load(path, dejitter_timestamps=False)
    assert [s.stream_id for s in summaries] == [t["info"]["stream_id"] for t in theirs]
    for ours, t in zip(summaries, theirs, strict=True):
        info = t["info"]
        assert ours.name == info["name"][0]
        assert ours.type == info["type"][0]
        assert ours.channel_count == int(info["channel_count"][0])
        assert ours.channel_format == info["channel_format"][0]
        assert ours.nominal_srate == float(info["nominal_srate"][0])
        assert ours.n_samples == len(t["time_stamps"])
        assert ours.n_clock_offsets == len(t["clock_times"])
        assert ours.has_footer and ours.footer_sample_count == ours.n_samples
        if ours.n_samples:
            assert ours.first_timestamp == t["time_stamps"][0]
            assert ours.last_timestamp == t["time_stamps"][-1]
        else:
            assert ours.first_timestamp is None and ours.last_timestamp is None
    table = format_inspection(summaries)
    for ours in summaries:
        assert ours.name in table and str(ours.n_samples) in table


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


# --- writer: pyxdf reads back exactly what we wrote ------------------------------------


def _extremes(channel_format: str, n: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(CHANNEL_FORMATS[channel_format])
    if dtype.kind == "i":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=(n, channels), endpoint=True, dtype=dtype)
        values[0, 0], values[1, 0] = info.min, info.max
    else:
        values = rng.standard_normal((n, channels)).astype(dtype) * 1e3
        values[0, 0], values[1, 0] = np.finfo(dtype).max, np.finfo(dtype).tiny
    return values


def test_writer_formats_markers_chunks_offsets_and_empty_stream(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "formats.xdf"
    expected: dict[int, tuple[np.ndarray, Any]] = {}
    offsets = {}
    with XdfWriter(path) as writer:
        for i, fmt in enumerate(NUMERIC_FORMATS, start=1):
            channels = i  # 1..6 channels
            labels = [f"{fmt}-{c}" for c in range(channels)]
            writer.add_stream(
                i,
                f"data-{fmt}",
                "test",
                channels,
                250.0,
                fmt,
                f"src-{fmt}",
                labels,
                ["uV"] * channels,
            )
            n = 120
            ts = 1000.0 + np.arange(n) / 250.0 + rng.normal(0, 1e-4, n)  # jittered
            values = _extremes(fmt, n, channels, rng)
            for part in np.array_split(np.arange(n), 3):  # three chunks
                writer.write_samples(i, ts[part], values[part])
            expected[i] = (ts, values)
            offsets[i] = [(1000.0 + k, -0.25 + 1e-6 * k) for k in range(3)]
            for t, v in offsets[i]:
                writer.write_clock_offset(i, t, v)
        writer.add_stream(20, "markers", "Markers", 1, 0.0, "string", "src-markers")
        marker_ts = np.array([1000.5, 1000.75, 1001.0, 1001.0])
        words = ["start", "", "Grüße ✓ <xml> & \x7f", "x" * 300]  # empty, unicode, long
        writer.write_samples(20, marker_ts[:2], words[:2])
        writer.write_boundary()
        writer.write_samples(20, marker_ts[2:], words[2:])
        writer.add_stream(21, "pairs", "Markers", 2, 0.0, "string")
        writer.write_samples(21, [5.0, 6.0], [("a", "b"), ["c", "d"]])
        writer.add_stream(22, "silent", "EEG", 4, 100.0, "float32")  # never gets samples
        writer.write_samples(22, np.zeros(0), np.zeros((0, 4)))

    loaded = {
        s["info"]["stream_id"]: s
        for s in pyxdf_load(path, synchronize_clocks=False, dejitter_timestamps=False)
    }
    assert set(loaded) == {*expected, 20, 21, 22}
    for i, (ts, values) in expected.items():
        s = loaded[i]
        np.testing.assert_array_equal(s["time_stamps"], ts)
        assert s["time_series"].dtype == values.dtype
        np.testing.assert_array_equal(s["time_series"], values)
        np.testing.assert_array_equal(s["clock_times"], [t for t, _ in offsets[i]])
        np.testing.assert_array_equal(s["clock_values"], [v for _, v in offsets[i]])
        assert s["footer"]["info"]["sample_count"] == ["120"]
    np.testing.assert_array_equal(loaded[20]["time_stamps"], marker_ts)
    assert loaded[20]["time_series"] == [[w] for w in words]
    assert loaded[21]["time_series"] == [["a", "b"], ["c", "d"]]
    assert len(loaded[22]["time_stamps"]) == 0 and loaded[22]["footer"]["info"]["sample_count"] == [
        "0"
    ]

    ours = {s.stream_id: s for s in read_xdf_streams(path)}
    assert ours[3].channel_labels == ("int8-0", "int8-1", "int8-2")
    assert ours[3].channel_units == ("uV",) * 3
    assert (ours[3].source_id, ours[3].type, ours[3].nominal_srate) == ("src-int8", "test", 250.0)
    assert ours[20].markers == words
    assert ours[22].time_series.shape == (0, 4) and ours[22].time_series.dtype == np.float32
    summaries = {s.stream_id: s for s in inspect_xdf(path)}
    assert summaries[1].n_samples == 120 and summaries[1].n_clock_offsets == 3
    assert summaries[22].n_samples == 0 and summaries[20].n_samples == 4


def test_deduced_timestamps_are_omitted_and_exact(tmp_path: Path) -> None:
    srate = 30.0
    n = 30  # three chunks of 10 samples: every chunk stays below 256 bytes in both files
    exact = np.empty(n)
    exact[0] = 12.5
    for k in range(1, n):  # the reader's rule: previous + 1.0 / nominal_srate
        exact[k] = exact[k - 1] + 1.0 / srate
    jittered = exact.copy()
    jittered[1::2] += 1e-7  # breaks previous + 1 / srate for every sample
    values = np.arange(n * 2, dtype=np.int16).reshape(n, 2)
    sizes: dict[str, int] = {}  # bytes of the Samples chunks
    for label, ts in (("exact", exact), ("jittered", jittered)):
        path = tmp_path / f"{label}.xdf"
        with XdfWriter(path) as writer:
            writer.add_stream(1, "s", "EEG", 2, srate, "int16")
            for part in np.split(np.arange(n), 3):  # deduction continues across chunks
                writer.write_samples(1, ts[part], values[part])
        (s,) = pyxdf_load(path, synchronize_clocks=False, dejitter_timestamps=False)
        np.testing.assert_array_equal(s["time_stamps"], ts)
        np.testing.assert_array_equal(s["time_series"], values)
        sizes[label] = sum(total for _, tag, total in chunk_starts(path.read_bytes()) if tag == 3)
    # every timestamp but the first was deduced, so its 8 bytes were left out
    assert sizes["jittered"] - sizes["exact"] == 8 * (n - 1)


def test_part_file_until_close_and_abort_keeps_part(tmp_path: Path) -> None:
    path = tmp_path / "rec.xdf"
    writer = XdfWriter(path)
    writer.add_stream(1, "s", "EEG", 1, 10.0, "double64")
    writer.write_samples(1, [1.0, 1.1], [[1.0], [2.0]])
    assert writer.part_path == tmp_path / "rec.xdf.part"
    assert writer.part_path.exists() and not path.exists()
    assert writer.close() == path
    assert path.exists() and not writer.part_path.exists()
    assert writer.close() == path  # idempotent
    with pytest.raises(XdfError, match="closed"):
        writer.write_samples(1, [2.0], [[3.0]])

    aborted = tmp_path / "aborted.xdf"
    with pytest.raises(RuntimeError, match="amplifier lost"), XdfWriter(aborted) as w:
        w.add_stream(1, "s", "EEG", 1, 10.0, "double64")
        w.write_samples(1, [1.0, 1.1], [[1.0], [2.0]])
        raise RuntimeError("amplifier lost")
    part = tmp_path / "aborted.xdf.part"
    assert part.exists() and not aborted.exists()
    with pytest.raises(XdfError, match=r"no StreamFooter") as err:
        read_xdf_streams(part)
    assert str(part) in str(err.value)
    (partial,) = read_xdf_streams(part, allow_truncated=True)
    np.testing.assert_array_equal(partial.time_series[:, 0], [1.0, 2.0])
    (summary,) = inspect_xdf(part)
    assert not summary.has_footer and any("truncated" in n for n in summary.notes)


def test_writer_refuses_to_clobber(tmp_path: Path) -> None:
    path = tmp_path / "rec.xdf"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists; choose another name"):
        XdfWriter(path)
    with XdfWriter(path, overwrite=True) as writer:
        writer.add_stream(1, "s", "EEG", 1, 10.0, "float32")
    assert path.read_bytes()[:4] == b"XDF:"
    Path(f"{path}.part").write_bytes(b"interrupted recording")
    with pytest.raises(FileExistsError, match="interrupted"):
        XdfWriter(path, overwrite=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        XdfWriter(tmp_path / "missing-dir" / "rec.xdf")


def test_concurrent_writers_produce_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "threads.xdf"
    n_chunks, chunk = 200, 5

    def produce(writer: XdfWriter, stream_id: int) -> None:
        for k in range(n_chunks):
            counter = np.arange(k * chunk, (k + 1) * chunk)
            writer.write_samples(stream_id, counter / 100.0, counter[:, None] * [1, stream_id])

    with XdfWriter(path) as writer:
        writer.add_stream(1, "a", "EEG", 2, 100.0, "int32")
        writer.add_stream(2, "b", "EEG", 2, 100.0, "int32")
        threads = [threading.Thread(target=produce, args=(writer, i)) for i in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for s in pyxdf_load(path, synchronize_clocks=False, dejitter_timestamps=False):
        sid = s["info"]["stream_id"]
        counter = np.arange(n_chunks * chunk)
        np.testing.assert_array_equal(s["time_series"], counter[:, None] * [1, sid])


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


# --- inspection of files with known defects -----------------------------------------------


def test_inspect_counts_gaps_and_rate(tmp_path: Path) -> None:
    srate = 100.0
    keep = np.ones(1000, dtype=bool)
    keep[200:210] = False  # 10 samples lost: one interval of 11 periods
    keep[600:650] = False  # 50 samples lost
    ts = regular_times(1000, srate)[keep]
    path = tmp_path / "gaps.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, "amp", "EEG", 1, srate, "int32")
        writer.write_samples(1, ts, np.flatnonzero(keep)[:, None])  # sample counter
        writer.add_stream(2, "cues", "Markers", 1, 0.0, "string")
        writer.write_samples(2, [100.0, 102.0, 104.0], ["a", "b", "c"])
    amp, cues = inspect_xdf(path)
    assert amp.n_samples == 940 and amp.n_gaps == 2
    assert amp.gap_s == pytest.approx(0.10 + 0.50)
    assert amp.longest_gap_s == pytest.approx(0.51)
    assert amp.effective_srate == pytest.approx(srate)
    assert amp.first_timestamp == ts[0] and amp.last_timestamp == ts[-1]
    assert cues.n_gaps is None and cues.effective_srate == pytest.approx(1 / 2.0)
    table = format_inspection([amp, cues])
    assert "2 gap(s) adding 0.600 s" in table and "irregular" in table
    assert format_inspection([]) == "no streams"


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


def test_streams_package_does_not_import_service_or_calibration() -> None:
    code = (
        "import sys, streams.xdf, streams.xdf_writer; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('service', 'calibration')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=120)


def test_stream_headers_kept_verbatim_and_checked(tmp_path: Path) -> None:
    """``add_stream_header`` writes a live stream's ``as_xml()`` as is; a header the writer
    cannot encode samples for is refused, naming what is wrong."""
    header = (
        '<?xml version="1.0"?>\n<info><name>amp</name><type>EEG</type><channel_count>2'
        "</channel_count><nominal_srate>100.0000000000</nominal_srate><channel_format>int16"
        "</channel_format><source_id>amp-1</source_id><created_at>1234.5</created_at>"
        "<hostname>rig-pc</hostname><desc><reference>Cz</reference></desc></info>"
    )
    with XdfWriter(tmp_path / "kept.xdf") as writer:
        writer.add_stream_header(1, header)
        writer.add_stream(2, "plain", "Markers", 1, 0.0, "string")
        writer.write_samples(1, [1300.0, 1300.01], [[1, 2], [3, 4]])
        for bad, message in (
            ("<info><name>x", "is not XML"),
            ("<stream><name>x</name></stream>", "root element is <stream>"),
            (header.replace("int16", "float16"), "unknown channel_format 'float16'"),
            (header.replace(">2<", ">0<"), "channel_count must be >= 1"),
        ):
            with pytest.raises(XdfError, match=message):
                writer.add_stream_header(3, bad)
    streams = {s["info"]["name"][0]: s for s in pyxdf.load_xdf(str(tmp_path / "kept.xdf"))[0]}
    amp = streams["amp"]["info"]
    assert amp["created_at"] == ["1234.5"] and amp["hostname"] == ["rig-pc"]
    assert amp["desc"][0]["reference"] == ["Cz"]
    assert streams["amp"]["time_series"].tolist() == [[1, 2], [3, 4]]
    assert "created_at" not in streams["plain"]["info"]  # no stream, so no creation time
