"""Tests for streams.schedule: when each sample of a pushed stream is due."""

from __future__ import annotations

import threading

import numpy as np
import pylsl

from streams.schedule import PushSchedule


def test_samples_are_due_at_their_stamps_and_capped_at_the_total() -> None:
    schedule = PushSchedule(t0=100.0, rate=1000.0, total=50)
    np.testing.assert_allclose(schedule.stamps(np.array([0, 1, 49])), [100.0, 100.001, 100.049])
    assert schedule.due(99.0) == 0  # before the first stamp
    assert schedule.due(100.0) == 1  # sample 0 is due at t0
    assert schedule.due(100.0105) == 11  # samples 0..10
    assert schedule.due(200.0) == 50
    assert PushSchedule(t0=100.0, rate=1000.0).due(200.0) == 100_001  # unbounded


def test_wait_for_returns_once_the_sample_is_due_or_false_when_stopped() -> None:
    stop = threading.Event()
    schedule = PushSchedule(t0=pylsl.local_clock(), rate=100.0)
    for spin_s in (0.0, 0.002):
        assert schedule.wait_for(5, stop, spin_s)
        assert pylsl.local_clock() >= float(schedule.stamps(5))
    stop.set()
    assert not schedule.wait_for(1000, stop)  # 10 s away: returns at once
