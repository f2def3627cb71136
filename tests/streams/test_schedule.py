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


def test_run_pushes_every_sample_once_in_due_batches_and_catches_up_after_a_pause() -> None:
    stop = threading.Event()
    schedule = PushSchedule(t0=pylsl.local_clock(), rate=1000.0, total=120)
    batches: list[tuple[int, int, float]] = []
    paused = False

    def push(k: int, n: int) -> int:
        nonlocal paused
        if k >= 40 and not paused:  # stall 30 ms (30 samples fall due), push nothing
            paused = True
            stop.wait(0.03)
            return 0
        batches.append((k, n, pylsl.local_clock()))
        return n

    assert schedule.run(push, stop, chunk_max=8) == 120
    starts = [k for k, _, _ in batches]
    sizes = [n for _, n, _ in batches]
    assert starts == list(np.cumsum([0, *sizes[:-1]])) and sum(sizes) == 120  # once, in order
    assert max(sizes) <= 8
    assert max(n for k, n, _ in batches if k == 40) == 8  # the backlog goes in full chunks
    for k, n, pushed_at in batches:
        assert pushed_at >= float(schedule.stamps(k + n - 1))  # never before it is due


def test_run_pushes_one_by_one_and_stops_when_asked() -> None:
    stop = threading.Event()
    schedule = PushSchedule(t0=pylsl.local_clock(), rate=500.0)  # unbounded
    pushed: list[int] = []

    def push(k: int, n: int) -> int:
        assert n == 1
        pushed.append(k)
        if k == 9:
            stop.set()
        return 1

    assert schedule.run(push, stop, spin_s=0.0005) == 10
    assert pushed == list(range(10))
