"""Tests for service.shared_state: one writer, lock-free readers in another process."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from service.shared_state import DecodedBin, SharedState

_CTX = multiprocessing.get_context("spawn")


def _bin(seq: int, n_out: int = 3) -> DecodedBin:
    """A bin whose every field encodes its seq, so a torn read is visible."""
    return DecodedBin(seq, seq * 0.05, np.full(n_out, seq, np.float32), f"m{seq % 7}",
                      None, np.full(4, seq % 2, np.uint8))  # fmt: skip


def _write(name: str, layout: dict[str, int], n: int) -> None:
    state = SharedState.attach(name, layout)
    for seq in range(n):
        state.write_bin(_bin(seq))
        if seq % 50 == 0:
            state.publish_status({"seq": seq, "pad": "x" * (seq % 997)})
    state.close()


def test_recent_since_latest_and_late_targets() -> None:
    state = SharedState.create(3, 4, bins_capacity=5)
    assert state.latest() is None and state.recent() == [] and state.since(None) == []
    for seq in range(8):
        state.write_bin(_bin(seq))
    assert [b.seq for b in state.since(None)] == [3, 4, 5, 6, 7]
    assert [b.seq for b in state.since(5)] == [6, 7]
    assert [b.seq for b in state.since(0)] == [3, 4, 5, 6, 7]  # older than held: all held
    assert state.since(7) == [] and state.recent(2)[0].seq == 6 and len(state) == 5
    assert state.latest().model_id == "m0" and state.last_stamp == pytest.approx(0.35)
    assert state.set_target(6, np.ones(3)) and not state.set_target(1, np.ones(3))
    np.testing.assert_array_equal(state.recent(2)[0].target, np.ones(3))
    assert state.recent(2)[1].target is None
    with pytest.raises(ValueError, match="zero or more"):
        state.recent(-1)
    state.close()


def test_status_latency_and_sizes() -> None:
    state = SharedState.create(2, latency_capacity=3, status_bytes=64)
    assert state.status() == {}
    state.publish_status({"state": "decoding", "x": float("nan")})
    assert state.status() == {"state": "decoding", "x": None}
    with pytest.raises(ValueError, match="exceeds 64"):
        state.publish_status({"big": "y" * 100})
    assert state.status()["state"] == "decoding"  # the refused document changed nothing
    for k in range(5):
        state.record_latency(k / 1000, k > 2, with_offset=k % 2 == 0)
    total, misses, offset, window = state.latency_window()
    assert (total, misses, offset) == (5, 2, 3)
    np.testing.assert_array_equal(window, [0.002, 0.003, 0.004])  # oldest first
    with pytest.raises(ValueError, match="positive"):
        SharedState.create(0)
    state.close()


def test_reader_never_sees_a_torn_bin_while_another_process_writes() -> None:
    state = SharedState.create(3, 4, bins_capacity=16, status_bytes=4096)
    writer = _CTX.Process(target=_write, args=(state.name, state.layout, 20_000))
    writer.start()
    checked = 0
    while writer.is_alive() or checked == 0:
        for decoded in state.recent():
            np.testing.assert_array_equal(decoded.values, np.full(3, decoded.seq))
            assert decoded.model_id == f"m{decoded.seq % 7}"
            assert decoded.timestamp == pytest.approx(decoded.seq * 0.05)
            checked += 1
        status = state.status()
        if status:
            assert status["pad"] == "x" * (status["seq"] % 997)
    writer.join(30)
    assert writer.exitcode == 0 and checked > 0
    assert state.bins_written == 20_000
    state.close()
