"""Inspecting XDF (:mod:`streams.xdf_inspect`): summaries agree with pyxdf and count gaps.

pyxdf is the oracle: what we read, inspect or write must agree with ``pyxdf.load_xdf``
called directly. The real files (xdf-modules/example-files) live outside the repository
and are skipped when absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xdf_cases import REAL_FILES, pyxdf_load, real_file, regular_times

from streams.xdf import format_inspection, inspect_xdf
from streams.xdf_writer import XdfWriter


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
