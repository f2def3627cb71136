"""Tests for the single-producer / single-consumer ring buffer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streams.ring import RingBuffer, RingCounters


def _rows(first: int, n: int, n_channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose channel 0 is a counter; channel c is counter + 100 c; timestamp = counter/10."""
    counter = np.arange(first, first + n, dtype=np.float64)
    data = counter[:, None] + 100.0 * np.arange(n_channels)
    return data, counter / 10.0


def _assert_invariant(c: RingCounters) -> None:
    assert c.written == c.read + c.overflowed + c.available, c


def test_wrap_around_hand_checked() -> None:
    ring = RingBuffer(capacity=5, n_channels=2)
    assert ring.write(*_rows(0, 3)) == 3
    data, ts = ring.read_new()
    np.testing.assert_array_equal(data, [[0, 100], [1, 101], [2, 102]])
    np.testing.assert_array_equal(ts, [0.0, 0.1, 0.2])
    # Rows 3..6 land in slots 3, 4, 0, 1: the write wraps around the end of the storage.
    assert ring.write(*_rows(3, 4)) == 4
    assert ring.available == 4
    np.testing.assert_array_equal(ring._data[:, 0], [5, 6, 2, 3, 4])  # the slots, by hand
    data, ts = ring.read_new()
    np.testing.assert_array_equal(data, [[3, 103], [4, 104], [5, 105], [6, 106]])
    np.testing.assert_allclose(ts, [0.3, 0.4, 0.5, 0.6])
    assert data.dtype == np.float32 and ts.dtype == np.float64
    empty, empty_ts = ring.read_new()
    assert empty.shape == (0, 2) and empty_ts.shape == (0,)
    assert ring.counters() == RingCounters(capacity=5, written=7, read=7, overflowed=0, available=0)


def test_read_new_max_rows_reads_in_order() -> None:
    ring = RingBuffer(capacity=8, n_channels=1, dtype=np.int64)
    ring.write(np.arange(6)[:, None], np.arange(6.0))
    first, _ = ring.read_new(max_rows=4)
    second, _ = ring.read_new(max_rows=4)
    assert first[:, 0].tolist() == [0, 1, 2, 3]
    assert second[:, 0].tolist() == [4, 5]
    assert ring.read_new(max_rows=0)[0].shape == (0, 1)
    with pytest.raises(ValueError, match="max_rows"):
        ring.read_new(max_rows=-1)


def test_overflow_drops_oldest_unread_and_counts_them() -> None:
    ring = RingBuffer(capacity=4, n_channels=2)
    ring.write(*_rows(0, 3))
    ring.write(*_rows(3, 3))  # 6 unread rows in a 4-row ring: rows 0 and 1 are dropped
    c = ring.counters()
    assert (c.written, c.read, c.overflowed, c.available) == (6, 0, 2, 4)
    _assert_invariant(c)
    data, ts = ring.read_new()
    assert data[:, 0].tolist() == [2, 3, 4, 5]
    np.testing.assert_allclose(ts, [0.2, 0.3, 0.4, 0.5])
    _assert_invariant(ring.counters())

    # Only unread rows count as overflow: reading first makes room.
    ring.write(*_rows(6, 4))
    ring.read_new(max_rows=1)
    ring.write(*_rows(10, 1))
    assert ring.overflowed == 2
    _assert_invariant(ring.counters())


def test_write_larger_than_capacity_keeps_newest_rows() -> None:
    ring = RingBuffer(capacity=4, n_channels=2)
    ring.write(*_rows(0, 1))
    assert ring.write(*_rows(1, 10)) == 10  # 11 unread rows for 4 slots: 7 dropped
    c = ring.counters()
    assert (c.written, c.overflowed, c.available) == (11, 7, 4)
    _assert_invariant(c)
    data, _ = ring.read_new()
    assert data[:, 0].tolist() == [7, 8, 9, 10]
    _assert_invariant(ring.counters())


def test_read_last_across_the_wrap_and_before_full() -> None:
    ring = RingBuffer(capacity=5, n_channels=2)
    ring.write(*_rows(0, 2))
    data, ts = ring.read_last(5)  # fewer rows than asked while the ring is filling
    assert data[:, 0].tolist() == [0, 1]
    ring.write(*_rows(2, 5))  # rows 0..6 written; slots hold 5, 6, 2, 3, 4
    data, ts = ring.read_last(3)
    assert data[:, 0].tolist() == [4, 5, 6]
    np.testing.assert_allclose(ts, [0.4, 0.5, 0.6])
    data, _ = ring.read_last(5)
    assert data[:, 0].tolist() == [2, 3, 4, 5, 6]
    assert ring.read_last(0)[0].shape == (0, 2)
    # read_last never moves the read position (and overflow already dropped rows 0, 1).
    assert ring.available == 5
    assert ring.read_new()[0][:, 0].tolist() == [2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="capacity"):
        ring.read_last(6)


def test_reads_are_copies() -> None:
    ring = RingBuffer(capacity=4, n_channels=2)
    ring.write(*_rows(0, 2))
    last, _ = ring.read_last(2)
    last[:] = -1
    data, ts = ring.read_new()
    data[:] = -1
    ts[:] = -1
    again, again_ts = ring.read_last(2)
    assert again[:, 0].tolist() == [0, 1]
    np.testing.assert_allclose(again_ts, [0.0, 0.1])


def test_wrong_shapes_name_expected_and_received() -> None:
    ring = RingBuffer(capacity=4, n_channels=3)
    with pytest.raises(ValueError, match=r"expects 3 channels, received 2"):
        ring.write(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"2-D array of shape \(n, 3\), received shape \(3,\)"):
        ring.write(np.zeros(3), np.zeros(1))
    with pytest.raises(ValueError, match=r"one timestamp per row: shape \(2,\), received \(3,\)"):
        ring.write(np.zeros((2, 3)), np.zeros(3))
    assert ring.counters().written == 0
    assert ring.write(np.zeros((0, 3)), np.zeros(0)) == 0


@pytest.mark.parametrize(("capacity", "n_channels"), [(0, 1), (4, 0), (-1, 2)])
def test_bad_sizes_are_refused(capacity: int, n_channels: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        RingBuffer(capacity, n_channels)
    with pytest.raises(TypeError, match="integer"):
        RingBuffer(2.5, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("capacity", [64, 100_000])
def test_concurrent_producer_consumer_keeps_order_without_duplicates(capacity: int) -> None:
    """A producer thread writes a counter channel while a consumer reads concurrently."""
    n_total = 60_000
    rng = np.random.default_rng(capacity)
    chunk_sizes = rng.integers(1, 40, size=n_total)  # more than enough chunks
    ring = RingBuffer(capacity=capacity, n_channels=3, dtype=np.float64)
    done = threading.Event()
    errors: list[BaseException] = []
    snapshots: list[RingCounters] = []

    def produce() -> None:
        try:
            k = 0
            for size in chunk_sizes:
                size = int(min(size, n_total - k))
                if size == 0:
                    break
                ring.write(*_rows(k, size, n_channels=3))
                k += size
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    received: list[np.ndarray] = []
    received_ts: list[np.ndarray] = []
    producer = threading.Thread(target=produce)
    producer.start()
    reads = 0
    while True:
        finished = done.is_set()  # checked before reading so the final read drains everything
        data, ts = ring.read_new(max_rows=int(rng.integers(1, 200)))
        received.append(data)
        received_ts.append(ts)
        reads += 1
        if reads % 50 == 0:
            snapshots.append(ring.counters())
        if capacity < n_total and reads % 20 == 0:
            time.sleep(0.002)  # fall behind now and then: the producer overruns the ring
        if finished and ring.available == 0:
            break
    producer.join(timeout=30)
    assert not producer.is_alive() and not errors

    data = np.concatenate(received)
    ts = np.concatenate(received_ts)
    counter = data[:, 0]
    assert np.all(np.diff(counter) > 0), "rows out of order or duplicated"
    np.testing.assert_array_equal(data[:, 1], counter + 100.0)  # rows never torn apart
    np.testing.assert_array_equal(data[:, 2], counter + 200.0)
    np.testing.assert_array_equal(ts, counter / 10.0)
    final = ring.counters()
    assert final.written == n_total
    assert final.read == len(counter)
    assert final.available == 0
    assert final.read + final.overflowed == n_total  # every missing row was counted
    assert len(np.setdiff1d(np.arange(n_total), counter)) == final.overflowed
    for snap in snapshots:
        _assert_invariant(snap)
    if capacity < n_total:
        assert final.overflowed > 0
    else:
        assert final.overflowed == 0
        np.testing.assert_array_equal(counter, np.arange(n_total))
