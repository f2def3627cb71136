"""Tests for streams.timestamps on synthetic stamps: sample- and chunk-stamped streams."""

from __future__ import annotations

import numpy as np
import pytest

from streams.timestamps import (
    LiveChunkStamps,
    analyse_timing,
    chunk_starts,
    effective_rate,
    find_gaps,
    is_chunk_stamped,
    restamp,
)

RATE = 128.0


def chunk_stamped(
    n_chunks: int, size: int = 8, jitter_s: float = 0.02, lost: tuple[int, ...] = (), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stamps of a device delivering ``size`` samples per chunk, each stamped on arrival
    (microseconds apart) with a random delivery delay up to ``jitter_s``; the chunks in
    ``lost`` never arrive. Returns (stamps, true acquisition times of the kept samples)."""
    rng = np.random.default_rng(seed)
    true = 100.0 + np.arange(n_chunks * size) / RATE
    stamps = []
    kept = []
    for c in range(n_chunks):
        if c in lost:
            continue
        block = true[c * size : (c + 1) * size]
        arrival = block[-1] + 0.005 + rng.uniform(0, jitter_s)
        stamps.append(arrival + np.arange(size) * 3e-6)
        kept.append(block)
    return np.concatenate(stamps), np.concatenate(kept)


def test_sample_stamped_stream_gaps_and_rate() -> None:
    stamps = np.r_[np.arange(100), np.arange(105, 200)] / RATE
    assert not is_chunk_stamped(stamps, RATE)
    gaps = find_gaps(stamps, RATE)
    assert gaps.index.tolist() == [100] and gaps.missing.tolist() == [5]
    assert gaps.seconds[0] == pytest.approx(5 / RATE)
    assert effective_rate(stamps, RATE) == pytest.approx(RATE)
    assert restamp(stamps, RATE).changed is False


def test_chunk_stamped_stream_has_no_false_gaps() -> None:
    stamps, _ = chunk_stamped(400)
    assert is_chunk_stamped(stamps, RATE)
    assert chunk_starts(stamps, RATE).tolist() == list(range(0, stamps.size, 8))
    timing = analyse_timing(stamps, RATE)
    assert timing.chunk_stamped and timing.n_chunks == 400 and timing.median_chunk == 8
    assert timing.gaps.count == 0 and timing.n_backward == 0
    assert timing.effective_rate == pytest.approx(RATE, rel=0.01)
    # read sample by sample the same stamps give one gap per chunk and a rate of ~300 kHz
    assert find_gaps(stamps, RATE, chunked=False).count == 399


@pytest.mark.parametrize("lost", [(100,), (100, 101, 102), (50, 300)])
def test_lost_chunks_are_real_gaps(lost: tuple[int, ...]) -> None:
    stamps, true = chunk_stamped(400, lost=lost)
    gaps = find_gaps(stamps, RATE)
    runs = np.split(np.array(lost), np.flatnonzero(np.diff(lost) > 1) + 1)
    assert gaps.count == len(runs)
    assert gaps.missing.tolist() == pytest.approx([8 * len(r) for r in runs], abs=2)
    expected_index = [int(np.searchsorted(true, 100.0 + (r[-1] + 1) * 8 / RATE)) for r in runs]
    assert gaps.index.tolist() == expected_index


def test_restamp_is_even_increasing_and_close_to_acquisition() -> None:
    stamps, true = chunk_stamped(400, lost=(200,))
    fixed = restamp(stamps, RATE)
    assert fixed.changed and np.all(np.diff(fixed.stamps) > 0)
    steps = np.diff(fixed.stamps)
    within = np.delete(steps, find_gaps(stamps, RATE).index - 1)
    assert within == pytest.approx(1 / RATE, rel=1e-3)
    # off the acquisition times by the constant delivery delay only (5-25 ms), not a chunk
    offset = fixed.stamps - true
    assert offset.max() - offset.min() < 0.01
    assert fixed.max_shift_s == pytest.approx(np.abs(fixed.stamps - stamps).max())


def test_bad_nominal_rate_and_empty_input() -> None:
    with pytest.raises(ValueError, match="nominal_srate must be > 0"):
        find_gaps(np.arange(5.0), 0.0)
    empty = analyse_timing(np.zeros(0), RATE)
    assert empty.effective_rate is None and empty.gaps.count == 0


def _live(stamps: np.ndarray, pieces: int) -> tuple[np.ndarray, LiveChunkStamps]:
    live = LiveChunkStamps(RATE)
    cuts = np.sort(np.random.default_rng(pieces).choice(len(stamps), pieces, replace=False))
    return np.concatenate([live(part) for part in np.split(stamps, cuts)]), live


@pytest.mark.parametrize("pieces", [50, 700])
def test_live_chunk_stamps_spread_chunks_and_count_only_lost_chunks(pieces: int) -> None:
    stamps, true = chunk_stamped(400, lost=(150, 151, 300))
    out, live = _live(stamps, pieces)
    assert live.chunked
    steps = np.diff(out)
    assert (steps > 0).all() and np.median(steps) == pytest.approx(1 / RATE)
    assert live.gap_s == pytest.approx((1.5 + 4) / RATE)  # half a chunk of 8 more
    gaps = np.flatnonzero(steps > live.gap_s)
    assert len(gaps) == 2  # the two losses, not the arrival jitter
    assert np.abs(out - true).max() < 0.02 + 8 / RATE  # within the jitter and one chunk


def test_live_chunk_stamps_leave_a_sample_stamped_stream_alone() -> None:
    stamps = 5.0 + np.arange(2000) / RATE + np.random.default_rng(0).normal(0, 1e-4, 2000)
    out, live = _live(stamps, 300)
    assert live.chunked is False
    np.testing.assert_array_equal(out, stamps)
    assert live.gap_s == pytest.approx(1.5 / RATE)
