"""Tests for streams.timestamp_audit on hand-computed stamps, without liblsl."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streams.timestamp_audit import RATE_WINDOW_S, TimestampAudit

RATE = 100.0  # Hz: one period is 10 ms
GAP_S = 1.5 / RATE  # a step above 15 ms is a gap
ROOT = Path(__file__).resolve().parents[2]


def audit() -> TimestampAudit:
    return TimestampAudit(jump_s=1.0, label="name='amp'")


def stamps(*seconds: float) -> np.ndarray:
    return np.array(seconds, dtype=np.float64)


def test_the_audit_imports_without_pylsl() -> None:
    code = "import sys, streams.timestamp_audit; sys.exit('pylsl' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env).returncode == 0


def test_a_gap_in_a_chunk_counts_its_missing_samples_and_duration() -> None:
    a = audit()
    a.check(stamps(0.00, 0.01, 0.02, 0.05, 0.06), RATE, GAP_S)  # 30 ms step: 2 missing
    c = a.counters
    assert (c.gaps, c.gap_missing_samples, c.jumps) == (1, 2, 0)
    assert c.gap_total_s == pytest.approx(0.02) and c.last_gap_s == pytest.approx(0.02)
    assert c.timestamps_backwards == c.duplicates == 0


def test_a_gap_between_single_samples_and_across_pulls() -> None:
    a = audit()
    a.check(stamps(0.00, 0.01), RATE, GAP_S)
    a.check(stamps(0.05), RATE, GAP_S)  # 40 ms after the previous pull's last: 3 missing
    a.check(stamps(0.06), RATE, GAP_S)
    a.check(stamps(0.08), RATE, GAP_S)  # 20 ms: 1 missing
    c = a.counters
    assert (c.gaps, c.gap_missing_samples) == (2, 4)
    assert c.gap_total_s == pytest.approx(0.03 + 0.01)
    assert c.last_gap_s == pytest.approx(0.01)


def test_a_step_within_gap_s_is_no_gap_and_an_irregular_stream_has_none() -> None:
    a = audit()
    a.check(stamps(0.00, 0.014), RATE, GAP_S)  # 14 ms < 15 ms
    a.check(stamps(0.0, 5.0, 10.0), 0.0, np.inf)  # irregular: back 14 ms, then 5 s steps
    c = a.counters
    assert c.gaps == c.gap_missing_samples == 0
    assert c.jumps == 2 and c.timestamps_backwards == 1


def test_a_jump_is_also_a_gap(caplog: pytest.LogCaptureFixture) -> None:
    a = audit()
    with caplog.at_level(logging.WARNING, logger="streams.timestamp_audit"):
        a.check(stamps(0.00, 2.00), RATE, GAP_S)  # 2 s forward: 199 missing
        a.check(stamps(3.50), RATE, GAP_S)  # a single sample 1.5 s later: 149 missing
    c = a.counters
    assert (c.jumps, c.gaps, c.gap_missing_samples) == (2, 2, 199 + 149)
    assert c.last_gap_s == pytest.approx(1.49)
    assert "timestamp jump(s) of [2.0] s" in caplog.text
    assert "timestamp jump(s) of [1.5] s" in caplog.text


def test_backwards_and_duplicate_stamps_are_counted_not_gaps() -> None:
    a = audit()
    a.check(stamps(1.00, 1.01, 1.005, 1.005), RATE, GAP_S)  # +10 ms, -5 ms, 0
    a.check(stamps(1.00), RATE, GAP_S)  # single sample, 5 ms back
    a.check(stamps(1.00), RATE, GAP_S)  # single sample, the same stamp
    c = a.counters
    assert (c.timestamps_backwards, c.duplicates) == (2, 2)
    assert c.gaps == c.jumps == 0


def test_a_rate_off_by_more_than_the_tolerance_over_a_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = audit()
    with caplog.at_level(logging.WARNING, logger="streams.timestamp_audit"):
        a.check_rate(5, RATE, now=10.0)  # opens the window; these arrivals are not counted
        a.check_rate(80, RATE, now=11.0)  # window not complete yet
        assert a.counters.measured_rate_hz == 0.0
        a.check_rate(80, RATE, now=10.0 + RATE_WINDOW_S)  # 160 in 2 s: 80 Hz, 20% off
        assert a.counters.measured_rate_hz == pytest.approx(80.0)
        assert a.counters.rate_mismatches == 1
        a.check_rate(160, RATE, now=14.0)  # 80 Hz again: counted, warned once only
        a.check_rate(190, RATE, now=16.0)  # 95 Hz: within 10%
        a.check_rate(240, RATE, now=18.0)  # 120 Hz: off again, warned again
    c = a.counters
    assert c.rate_mismatches == 3 and c.measured_rate_hz == pytest.approx(120.0)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "name='amp' declares 100 Hz but delivers 80 Hz" in warnings[0]


def test_a_gap_in_a_pull_that_found_liblsls_buffer_full_is_a_transport_drop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = audit()
    a.transport_capacity = 1000  # samples; 90% of it is 900
    a.check_rate(1, RATE, now=0.0)  # opens a rate window
    a.check(stamps(0.00, 0.01), RATE, GAP_S)
    a.note_backlog(950)
    with caplog.at_level(logging.WARNING, logger="streams.timestamp_audit"):
        a.check(stamps(0.50, 0.51), RATE, GAP_S)  # 490 ms step: 48 dropped by liblsl
    c = a.counters
    assert c.transport_dropped == 48
    assert c.gaps == c.gap_missing_samples == c.jumps == 0
    assert "dropped by the transport: 48 samples" in caplog.text
    a.check_rate(500, RATE, now=RATE_WINDOW_S + 1.0)  # the drop restarted the window
    assert a.counters.measured_rate_hz == 0.0
    a.note_backlog(899)  # the pull after: liblsl may still drop while the burst lands
    a.check(stamps(0.60), RATE, GAP_S)  # 90 ms: 8 dropped
    assert (a.counters.transport_dropped, a.counters.gaps) == (56, 0)
    a.note_backlog(899)  # below 90% and two pulls on: the next step is the source's gap
    a.check(stamps(0.70), RATE, GAP_S)  # 100 ms: 9 missing
    c = a.counters
    assert (c.transport_dropped, c.gaps, c.gap_missing_samples) == (56, 1, 9)
