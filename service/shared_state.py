"""Decoder state in shared memory: one writer (the decoder loop), readers that never block it.

One :class:`multiprocessing.shared_memory.SharedMemory` block, created by the supervisor
(``bci serve``) and kept across restarts of the decoder and API processes, holds:

* a header of int64 / float64 words (see ``_H_*``): bins written, latency counts, the decoder's
  heartbeat and pid, restarts, the supervisor's word on the decoder, the last decoded bin's
  end time (so a restarted decoder never decodes a bin twice);
* the recent decoded bins, a ring of ``bins_capacity`` slots (seq, timestamp, values, target,
  raster spikes, model id);
* the latency ring (seconds, push time minus bin close on the local clock);
* the status document, JSON, rewritten by the loop between bins (a few times a second).

Consistency without locks: each bin slot carries its sequence number, set to -1 while the slot
is rewritten and to the bin's seq last, and a reader keeps a copy only when the number read
before and after copying agree. The status document sits behind a sequence counter that is
odd while it is written (a seqlock); readers retry. Neither path ever makes the writer wait.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from service.lifecycle import SupervisorState

__all__ = ["DecodedBin", "SharedState"]

_MAGIC = 0x42434953484D0001  # "BCISHM" v1
# header words
_H_MAGIC, _H_STATUS_SEQ, _H_STATUS_LEN, _H_BINS = 0, 1, 2, 3
_H_LAT_TOTAL, _H_LAT_MISSES, _H_LAT_OFFSET, _H_HEARTBEAT_NS = 4, 5, 6, 7
_H_PID, _H_RESTARTS, _H_SUPERVISOR, _H_LAST_STAMP = 8, 9, 10, 11
_H_LAT_ARRIVAL = 12
_H_WORDS = 16
_MODEL_ID_BYTES = 12
_RETRIES = 100

_SUPERVISOR_STATES = tuple(SupervisorState)  # header word _H_SUPERVISOR holds the position


@dataclass(frozen=True)
class DecodedBin:
    """One decoded bin: ``seq`` counts bins from 0 across model swaps and decoder restarts;
    ``timestamp`` is the bin's end on the input stream's clock (seconds); ``values`` (K,) the
    output; ``model_id`` the model that decoded it; ``target`` (K,) its learning target (None
    when it had none); ``spikes`` (R,) uint8 spikes of the raster sample of hidden neurons."""

    seq: int
    timestamp: float
    values: np.ndarray
    model_id: str
    target: np.ndarray | None = None
    spikes: np.ndarray | None = None


class SharedState:
    """The shared block, as its creator (:meth:`create`) or as a reader (:meth:`attach`).

    ``n_out`` outputs and ``n_raster`` raster neurons per bin are fixed for the block's life.
    Writer methods (``write_bin``, ``set_target``, ``record_latency``, ``publish_status``,
    ``beat``) belong to one process at a time, the decoder's.
    """

    def __init__(self, memory: shared_memory.SharedMemory, layout: dict[str, int], owner: bool):
        self._memory, self.layout, self._owner = memory, dict(layout), owner
        n, k, r = layout["bins_capacity"], layout["n_out"], layout["n_raster"]
        w, s = layout["latency_capacity"], layout["status_bytes"]
        self.n_out, self.n_raster, self.bins_capacity = k, r, n
        buf, at = memory.buf, 0

        def take(dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
            nonlocal at
            array = np.ndarray(shape, dtype=dtype, buffer=buf, offset=at)
            at += array.nbytes
            at += -at % 8  # keep every array 8-byte aligned
            return array

        self._words = take(np.int64, (_H_WORDS,))
        self._floats = self._words.view(np.float64)
        self._seq = take(np.int64, (n,))
        self._stamp = take(np.float64, (n,))
        self._values = take(np.float32, (n, k))
        self._target = take(np.float32, (n, k))
        self._spikes = take(np.uint8, (n, r))
        self._model = take(f"S{_MODEL_ID_BYTES}", (n,))
        self._latency = take(np.float64, (w,))
        self._status = take(np.uint8, (s,))

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        n_out: int,
        n_raster: int = 32,
        *,
        bins_capacity: int = 4096,
        latency_capacity: int = 10_000,
        status_bytes: int = 1 << 20,
    ) -> SharedState:
        """A new zeroed block (``name`` tells readers where it is); the creator unlinks it."""
        layout = {
            "n_out": int(n_out),
            "n_raster": int(n_raster),
            "bins_capacity": int(bins_capacity),
            "latency_capacity": int(latency_capacity),
            "status_bytes": int(status_bytes),
        }
        if layout["n_raster"] < 0 or min(v for k, v in layout.items() if k != "n_raster") < 1:
            raise ValueError(f"shared state sizes must be positive; got {layout}")
        size = _size(layout)
        memory = shared_memory.SharedMemory(create=True, size=size)
        state = cls(memory, layout, owner=True)
        state._seq[:] = -1
        state._words[_H_MAGIC] = _MAGIC
        state._floats[_H_LAST_STAMP] = -np.inf
        return state

    @classmethod
    def attach(cls, name: str, layout: dict[str, int]) -> SharedState:
        """Open the block ``name`` made by :meth:`create` with ``layout`` (in a process started
        by the creator, which shares its resource tracker: the block outlives the reader)."""
        memory = shared_memory.SharedMemory(name=name)
        state = cls(memory, layout, owner=False)
        if int(state._words[_H_MAGIC]) != _MAGIC:
            memory.close()
            raise ValueError(f"shared memory {name!r} is not a decoder state block")
        return state

    @property
    def name(self) -> str:
        return self._memory.name

    def close(self) -> None:
        """Release this process's mapping (and the block itself, for its creator)."""
        for attr in list(vars(self)):
            if isinstance(getattr(self, attr), np.ndarray):
                setattr(self, attr, None)
        self._memory.close()
        if self._owner:
            self._memory.unlink()

    # -- writer --------------------------------------------------------------------------------
    def write_bin(self, decoded: DecodedBin) -> None:
        """Publish a decoded bin (seqs must follow each other)."""
        slot = decoded.seq % self.bins_capacity
        self._seq[slot] = -1  # invalid while rewritten
        self._stamp[slot] = decoded.timestamp
        self._values[slot] = decoded.values
        self._target[slot] = np.nan if decoded.target is None else decoded.target
        if decoded.spikes is not None and self.n_raster:
            self._spikes[slot, : len(decoded.spikes)] = decoded.spikes[: self.n_raster]
        self._model[slot] = decoded.model_id.encode()[:_MODEL_ID_BYTES]
        self._seq[slot] = decoded.seq
        self._words[_H_BINS] = decoded.seq + 1
        self._floats[_H_LAST_STAMP] = decoded.timestamp

    def set_target(self, seq: int, target: np.ndarray) -> bool:
        """Attach a late learning target to bin ``seq``; False when it left the ring."""
        slot = seq % self.bins_capacity
        if self._seq[slot] != seq:
            return False
        self._target[slot] = target
        return True

    def record_latency(
        self, seconds: float, miss: bool, with_offset: bool, from_arrival: bool = False
    ) -> None:
        """One bin's latency; ``with_offset``: its input time was mapped to the local clock
        with the inlet's clock offset (else the raw timestamp was used); ``from_arrival``: the
        input was stamped ahead of the local clock, so it was measured from the arrival."""
        total = int(self._words[_H_LAT_TOTAL])
        self._latency[total % len(self._latency)] = seconds
        self._words[_H_LAT_MISSES] += bool(miss)
        self._words[_H_LAT_OFFSET] += bool(with_offset)
        self._words[_H_LAT_ARRIVAL] += bool(from_arrival)
        self._words[_H_LAT_TOTAL] = total + 1

    def publish_status(self, status: dict[str, Any]) -> None:
        """Replace the status document (JSON; NaN and infinities written as null)."""
        data = json.dumps(_finite(status), separators=(",", ":")).encode()
        if len(data) > len(self._status):
            raise ValueError(f"status of {len(data)} bytes exceeds {len(self._status)}")
        self._words[_H_STATUS_SEQ] += 1  # odd: being written
        self._status[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        self._words[_H_STATUS_LEN] = len(data)
        self._words[_H_STATUS_SEQ] += 1

    def beat(self, pid: int) -> None:
        """The decoder's heartbeat: its pid and the monotonic time now."""
        self._words[_H_PID] = pid
        self._words[_H_HEARTBEAT_NS] = time.monotonic_ns()

    # -- supervisor ----------------------------------------------------------------------------
    def set_supervisor(self, state: SupervisorState, restarts: int | None = None) -> None:
        self._words[_H_SUPERVISOR] = _SUPERVISOR_STATES.index(state)
        if restarts is not None:
            self._words[_H_RESTARTS] = restarts

    # -- readers -------------------------------------------------------------------------------
    @property
    def bins_written(self) -> int:
        """Bins decoded in total (the next bin's seq)."""
        return int(self._words[_H_BINS])

    @property
    def last_stamp(self) -> float:
        """End time of the last decoded bin (input stream clock; -inf before the first)."""
        return float(self._floats[_H_LAST_STAMP])

    def decoder(self) -> dict[str, Any]:
        """The decoder process as the header tells it: pid, seconds since its heartbeat,
        restarts, and the supervisor's word (running / restarting / stopped)."""
        beat = int(self._words[_H_HEARTBEAT_NS])
        return {
            "pid": int(self._words[_H_PID]) or None,
            "heartbeat_age_s": None if not beat else (time.monotonic_ns() - beat) / 1e9,
            "restarts": int(self._words[_H_RESTARTS]),
            "supervisor": _SUPERVISOR_STATES[int(self._words[_H_SUPERVISOR])],
        }

    def since(self, seq: int | None) -> list[DecodedBin]:
        """Held bins after ``seq`` (all held when None), oldest first."""
        end = self.bins_written
        start = max(0, end - self.bins_capacity, -1 if seq is None else seq + 1)
        return [b for b in (self._read(s) for s in range(start, end)) if b is not None]

    def recent(self, n: int | None = None) -> list[DecodedBin]:
        """The newest ``n`` bins (all held when None), oldest first."""
        if n is not None and n < 0:
            raise ValueError(f"n must be zero or more; got {n}")
        end = self.bins_written
        count = self.bins_capacity if n is None else min(n, self.bins_capacity)
        return self.since(end - count - 1)

    def latest(self) -> DecodedBin | None:
        """The newest bin, or None before the first."""
        bins = self.recent(1)
        return bins[-1] if bins else None

    def __len__(self) -> int:
        return min(self.bins_written, self.bins_capacity)

    def latency_from_arrival(self) -> int:
        """Bins whose latency was measured from their input's arrival (future-stamped)."""
        return int(self._words[_H_LAT_ARRIVAL])

    def latency_window(self) -> tuple[int, int, int, np.ndarray]:
        """``(bins measured, deadline misses, bins mapped with the clock offset, latencies in
        seconds of the last ring-full bins, oldest first)``."""
        total = int(self._words[_H_LAT_TOTAL])
        misses = int(self._words[_H_LAT_MISSES])
        with_offset = int(self._words[_H_LAT_OFFSET])
        ring = self._latency.copy()
        if total <= len(ring):
            return total, misses, with_offset, ring[:total]
        return total, misses, with_offset, np.roll(ring, -(total % len(ring)))

    def status(self) -> dict[str, Any]:
        """The latest status document ({} before the first)."""
        for _ in range(_RETRIES):
            before = int(self._words[_H_STATUS_SEQ])
            if before % 2:
                time.sleep(0)
                continue
            length = int(self._words[_H_STATUS_LEN])
            data = self._status[:length].tobytes()
            if int(self._words[_H_STATUS_SEQ]) == before:
                return json.loads(data) if data else {}
        raise TimeoutError("the status document kept changing while read")

    def _read(self, seq: int) -> DecodedBin | None:
        slot = seq % self.bins_capacity
        if self._seq[slot] != seq:
            return None
        target = self._target[slot].copy()
        decoded = DecodedBin(
            seq,
            float(self._stamp[slot]),
            self._values[slot].copy(),
            self._model[slot].decode(),
            None if np.isnan(target).any() else target,
            self._spikes[slot].copy(),
        )
        return decoded if self._seq[slot] == seq else None


def _size(layout: dict[str, int]) -> int:
    n, k, r = layout["bins_capacity"], layout["n_out"], layout["n_raster"]
    parts = [
        _H_WORDS * 8,
        n * 8,
        n * 8,
        n * k * 4,
        n * k * 4,
        n * r,
        n * _MODEL_ID_BYTES,
        layout["latency_capacity"] * 8,
        layout["status_bytes"],
    ]
    return sum(p + (-p % 8) for p in parts)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
