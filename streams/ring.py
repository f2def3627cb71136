"""Preallocated ring buffer for one single-producer / single-consumer sample stream.

Rows are samples: a ``(capacity, n_channels)`` data array plus a float64 timestamp per row,
both allocated once. The producer (an acquisition thread) calls :meth:`RingBuffer.write`;
the consumer (a decode loop) calls :meth:`RingBuffer.read_new` or :meth:`RingBuffer.read_last`.
One ``threading.Lock`` guards the read/write positions and the copies in and out; readers
always get copies, never views into the ring.

Nothing is lost silently. When the consumer falls behind, a write that does not fit drops the
*oldest unread* rows and counts them in ``overflowed`` (the newest data matter most for
real-time decoding); a single write larger than the ring keeps its newest ``capacity`` rows
and counts the rest the same way. At every moment::

    written == read + overflowed + available
"""

from __future__ import annotations

import operator
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RingBuffer", "RingCounters"]


@dataclass(frozen=True)
class RingCounters:
    """One consistent snapshot of a ring's counters (rows, i.e. samples).

    Attributes:
        capacity: rows the ring holds.
        written: rows passed to ``write`` since creation (including rows later overwritten).
        read: rows returned by ``read_new``.
        overflowed: unread rows dropped because the consumer fell behind.
        available: unread rows now in the ring.
    """

    capacity: int
    written: int
    read: int
    overflowed: int
    available: int


class RingBuffer:
    """Fixed-capacity FIFO of timestamped samples that overwrites its oldest unread rows.

    Args:
        capacity: number of rows (samples) kept, >= 1.
        n_channels: columns per row, >= 1.
        dtype: numpy dtype of the data (timestamps are always float64).

    Raises ValueError for a non-positive capacity or channel count.
    """

    def __init__(self, capacity: int, n_channels: int, dtype: Any = np.float32) -> None:
        capacity = _positive_int("capacity", capacity)
        n_channels = _positive_int("n_channels", n_channels)
        self._data = np.zeros((capacity, n_channels), dtype=dtype)
        self._timestamps = np.zeros(capacity, dtype=np.float64)
        self._lock = threading.Lock()
        # Absolute row positions since creation; the slot of row i is i % capacity.
        self._head = 0  # next row to write == rows written so far
        self._tail = 0  # oldest unread row
        self._read = 0
        self._overflowed = 0

    @property
    def capacity(self) -> int:
        """Rows the ring holds."""
        return int(self._data.shape[0])

    @property
    def n_channels(self) -> int:
        """Columns per row."""
        return int(self._data.shape[1])

    @property
    def dtype(self) -> np.dtype:
        """dtype of the data rows."""
        return self._data.dtype

    @property
    def available(self) -> int:
        """Unread rows now in the ring."""
        with self._lock:
            return self._head - self._tail

    @property
    def overflowed(self) -> int:
        """Unread rows dropped so far because the consumer fell behind."""
        with self._lock:
            return self._overflowed

    def counters(self) -> RingCounters:
        """A consistent snapshot of all counters."""
        with self._lock:
            return RingCounters(
                capacity=self.capacity,
                written=self._head,
                read=self._read,
                overflowed=self._overflowed,
                available=self._head - self._tail,
            )

    def write(self, data: Any, timestamps: Any) -> int:
        """Append ``data`` (n, n_channels) with ``timestamps`` (n,); returns n.

        Values are cast to the ring's dtype. If the unread rows would exceed the capacity, the
        oldest unread rows are dropped and counted in ``overflowed``.

        Raises ValueError if the shapes do not match the ring (the message names the expected
        and received shapes).
        """
        data = np.asarray(data)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        shape = data.shape
        n = shape[0] if len(shape) == 2 else -1
        if n < 0 or shape[1] != self._data.shape[1] or timestamps.shape != (n,):
            self._refuse_shapes(data, timestamps)
        if n == 0:
            return 0
        capacity = self._data.shape[0]
        keep = n
        if n > capacity:  # only the newest rows survive this write
            keep = capacity
            data, timestamps = data[n - keep :], timestamps[n - keep :]
        with self._lock:
            new_head = self._head + n
            start = (new_head - keep) % capacity
            first = min(keep, capacity - start)
            self._data[start : start + first] = data[:first]
            self._timestamps[start : start + first] = timestamps[:first]
            if first < keep:  # wrap around to the start of the storage
                self._data[: keep - first] = data[first:]
                self._timestamps[: keep - first] = timestamps[first:]
            self._head = new_head
            unread = self._head - self._tail
            if unread > capacity:
                self._overflowed += unread - capacity
                self._tail = self._head - capacity
        return n

    def _refuse_shapes(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        """ValueError naming what does not fit: the rank, the channels, the timestamps."""
        if data.ndim != 2:
            raise ValueError(
                f"ring buffer expects a 2-D array of shape (n, {self.n_channels}), received "
                f"shape {data.shape}; pass one row per sample and one column per channel"
            )
        if data.shape[1] != self.n_channels:
            raise ValueError(
                f"ring buffer expects {self.n_channels} channels, received {data.shape[1]} "
                f"(data shape {data.shape})"
            )
        raise ValueError(
            f"ring buffer expects one timestamp per row: shape ({data.shape[0]},), received "
            f"{timestamps.shape}"
        )

    def read_new(self, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the unread rows, oldest first (at most ``max_rows``), marked as read.

        Returns ``(data (k, n_channels), timestamps (k,))``; ``k`` is 0 when nothing is new.
        """
        if max_rows is not None:
            max_rows = operator.index(max_rows)
            if max_rows < 0:
                raise ValueError(f"max_rows must be >= 0 or None, got {max_rows}")
        with self._lock:
            k = self._head - self._tail
            if max_rows is not None:
                k = min(k, max_rows)
            data, timestamps = self._copy_rows(self._tail, k)
            self._tail += k
            self._read += k
        return data, timestamps

    def read_last(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the newest ``n`` rows, oldest first, whether read or not.

        Fewer rows come back while fewer than ``n`` were ever written. The read position is
        unchanged. Raises ValueError if ``n`` is negative or exceeds the capacity.
        """
        n = operator.index(n)
        if not 0 <= n <= self.capacity:
            raise ValueError(
                f"read_last(n) needs 0 <= n <= capacity ({self.capacity}), got {n}; "
                "make the ring larger to look further back"
            )
        with self._lock:
            k = min(n, self._head)
            return self._copy_rows(self._head - k, k)

    def _copy_rows(self, first_row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Copy ``k`` rows starting at absolute row ``first_row`` (caller holds the lock)."""
        capacity = self.capacity
        start = first_row % capacity
        if start + k <= capacity:
            return self._data[start : start + k].copy(), self._timestamps[start : start + k].copy()
        split = capacity - start
        data = np.concatenate((self._data[start:], self._data[: k - split]))
        timestamps = np.concatenate((self._timestamps[start:], self._timestamps[: k - split]))
        return data, timestamps

    def __repr__(self) -> str:
        c = self.counters()
        return (
            f"RingBuffer(capacity={c.capacity}, n_channels={self.n_channels}, "
            f"dtype={self.dtype}, available={c.available}, overflowed={c.overflowed})"
        )


def _positive_int(name: str, value: Any) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
