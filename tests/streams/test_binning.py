"""Tests for streams.binning: hand-computed bins, causality, late samples, float edges."""

from __future__ import annotations

import numpy as np
import pytest

from streams.binning import Binner, Bins


def _concat(parts: list[Bins], n_channels: int) -> Bins:
    if not parts:
        return Bins(np.zeros((0, n_channels)), np.zeros(0), np.zeros(0, dtype=np.int64))
    return Bins(
        np.concatenate([p.data for p in parts]),
        np.concatenate([p.end_times for p in parts]),
        np.concatenate([p.n_samples for p in parts]),
    )


def test_hand_computed_bins_with_origin() -> None:
    binner = Binner(bin_s=0.1, n_channels=2, origin=10.0)
    t = np.array([10.02, 10.05, 10.10, 10.13, 10.35])
    x = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [5, 50]], dtype=float)
    out = binner.feed(x, t)
    # (10.0, 10.1]: samples 1, 2, 3 (10.10 is the end of the first bin, inclusive);
    # (10.1, 10.2]: sample 4; (10.2, 10.3]: empty; (10.3, 10.4] is still open.
    np.testing.assert_allclose(out.end_times, [10.1, 10.2, 10.3])
    np.testing.assert_array_equal(out.data, [[6, 60], [4, 40], [0, 0]])
    np.testing.assert_array_equal(out.n_samples, [3, 1, 0])
    assert out.n_bins == 3
    assert binner.next_bin_end == pytest.approx(10.4)

    # A sample of an emitted bin is late: counted, not added anywhere.
    late = binner.feed(np.array([[100.0, 100.0]]), np.array([10.15]))
    assert late.n_bins == 0
    # Another sample in the open bin does not close it.
    assert binner.feed(np.array([[6.0, 60.0]]), np.array([10.40])).n_bins == 0
    flushed = binner.flush(10.4)
    np.testing.assert_allclose(flushed.end_times, [10.4])
    np.testing.assert_array_equal(flushed.data, [[11, 110]])
    np.testing.assert_array_equal(flushed.n_samples, [2])
    assert binner.flush(10.45).n_bins == 0  # (10.4, 10.5] has not ended yet

    binner.feed(np.array([[7.0, 70.0]]), np.array([9.99]))  # before the origin
    assert binner.counters() == {
        "samples_in": 8,
        "samples_binned": 6,
        "late": 1,
        "before_origin": 1,
        "bins_emitted": 4,
        "empty_bins": 1,
        "pending_bins": 0,
    }


def test_bins_are_emitted_only_when_complete() -> None:
    binner = Binner(bin_s=1.0, n_channels=1, origin=0.0)
    assert binner.feed(np.ones((3, 1)), np.array([0.2, 0.5, 1.0])).n_bins == 0  # (0, 1] open
    out = binner.feed(np.ones((1, 1)), np.array([1.01]))
    np.testing.assert_array_equal(out.end_times, [1.0])
    np.testing.assert_array_equal(out.data, [[3.0]])
    # flush before the end of the open bin emits nothing; at its end it emits it
    assert binner.flush(1.99).n_bins == 0
    assert binner.flush(2.0).data.tolist() == [[1.0]]


def test_origin_at_leading_gap_emits_empty_bins() -> None:
    binner = Binner(bin_s=0.5, n_channels=1, origin=0.0)
    out = binner.feed(np.array([[2.0]]), np.array([1.7]))
    np.testing.assert_allclose(out.end_times, [0.5, 1.0, 1.5])
    np.testing.assert_array_equal(out.n_samples, [0, 0, 0])
    assert binner.counters()["empty_bins"] == 3


def test_without_origin_grid_is_multiples_of_bin_and_starts_at_first_sample() -> None:
    binner = Binner(bin_s=0.05, n_channels=1)
    assert binner.flush(1e9).n_bins == 0  # nothing before the first sample
    out = binner.feed(np.ones((2, 1)), np.array([3.21, 3.26]))
    np.testing.assert_allclose(out.end_times, [3.25])  # first bin (3.20, 3.25], partial
    np.testing.assert_array_equal(out.n_samples, [1])


def test_one_khz_stamps_on_bin_edges_give_exact_bins() -> None:
    # t0 + i / 1000 stamps land on the 50 ms edges up to rounding error; each bin must still
    # hold exactly 50 samples (the edge sample in the bin it ends).
    t0 = 86_400.0 * 3 + 0.0  # a large local_clock value, like days of uptime
    i = np.arange(1, 1001)
    t = t0 + i * 0.001
    counts = np.column_stack([i, np.ones_like(i)]).astype(float)
    binner = Binner(bin_s=0.05, n_channels=2, origin=t0)
    parts = [binner.feed(counts[a : a + 7], t[a : a + 7]) for a in range(0, 1000, 7)]
    parts.append(binner.flush(t[-1]))
    out = _concat(parts, 2)
    assert out.n_bins == 20
    np.testing.assert_array_equal(out.n_samples, np.full(20, 50))
    np.testing.assert_array_equal(out.data[:, 1], np.full(20, 50.0))
    expected_sums = [i[50 * b : 50 * (b + 1)].sum() for b in range(20)]
    np.testing.assert_array_equal(out.data[:, 0], expected_sums)
    np.testing.assert_allclose(out.end_times, t0 + 0.05 * np.arange(1, 21), atol=1e-9)
    assert binner.counters()["late"] == 0


def test_chunking_does_not_change_the_result_and_matches_a_loop_oracle() -> None:
    rng = np.random.default_rng(0)
    n, c, bin_s, origin = 500, 3, 0.037, 5.0
    t = origin + np.sort(rng.uniform(0.0, 3.0, size=n))
    t[100:110] = t[100:110][::-1]  # out of order inside open bins is fine if not late
    x = rng.poisson(1.0, size=(n, c)).astype(float)

    # Oracle: process one sample at a time with plain Python.
    sums: dict[int, np.ndarray] = {}
    next_k, late, emitted = 1, 0, []
    for ti, xi in zip(t, x, strict=True):
        k = int(np.ceil((ti - origin) / bin_s - 1e-6))
        if k < next_k:
            late += 1
            continue
        sums[k] = sums.get(k, np.zeros(c)) + xi
        while next_k < k:
            emitted.append((next_k, sums.pop(next_k, np.zeros(c))))
            next_k += 1

    for split_seed in range(3):
        cuts = np.sort(np.random.default_rng(split_seed).choice(n, size=20, replace=False))
        binner = Binner(bin_s, c, origin=origin)
        parts = [binner.feed(x[a:b], t[a:b]) for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
        out = _concat(parts, c)
        assert out.n_bins == len(emitted)
        np.testing.assert_allclose(out.end_times, [origin + k * bin_s for k, _ in emitted])
        np.testing.assert_array_equal(out.data, np.array([s for _, s in emitted]))
        # every sample is either binned (emitted or pending), late, or before the origin
        counters = binner.counters()
        assert counters["samples_in"] == n
        assert counters["late"] == late
        assert counters["samples_binned"] + counters["late"] == n


def test_single_sample_feed() -> None:
    binner = Binner(bin_s=1.0, n_channels=2, origin=0.0)
    binner.feed(np.array([1.0, 2.0]), np.float64(0.5))
    out = binner.feed(np.array([1.0, 1.0]), np.float64(1.5))
    np.testing.assert_array_equal(out.data, [[1.0, 2.0]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bin_s": 0.0, "n_channels": 1}, "bin_s"),
        ({"bin_s": float("nan"), "n_channels": 1}, "bin_s"),
        ({"bin_s": 0.05, "n_channels": 0}, "n_channels"),
        ({"bin_s": 0.05, "n_channels": 1, "origin": float("inf")}, "origin"),
    ],
)
def test_invalid_configuration(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Binner(**kwargs)


def test_invalid_chunks_are_refused() -> None:
    binner = Binner(0.05, 2)
    with pytest.raises(ValueError, match=r"expects \(n, 2\)"):
        binner.feed(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="one per sample"):
        binner.feed(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        binner.feed(np.zeros((1, 2)), np.array([np.nan]))
    with pytest.raises(ValueError, match="finite"):
        binner.flush(float("nan"))
    assert binner.feed(np.zeros((0, 2)), np.zeros(0)).n_bins == 0
    assert binner.counters()["samples_in"] == 0
