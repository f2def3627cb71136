"""Writing XDF (:mod:`streams.xdf_writer`): pyxdf reads back exactly what we wrote.

pyxdf is the oracle: what we read, inspect or write must agree with ``pyxdf.load_xdf``
called directly. The real files (xdf-modules/example-files) live outside the repository
and are skipped when absent.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyxdf
from xdf_cases import NUMERIC_FORMATS, chunk_starts, pyxdf_load

from streams.xdf import XdfError, inspect_xdf, read_xdf_streams
from streams.xdf_writer import CHANNEL_FORMATS, XdfWriter

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
