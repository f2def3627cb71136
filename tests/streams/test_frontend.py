"""Tests for streams.frontend: hand-computed bins per input kind, closing, late samples, grace
flush, chunking independence, broadband detection and the input kind from metadata."""

from __future__ import annotations

import numpy as np
import pytest

from streams.frontend import Bins, FrontEnd, input_kind_of
from streams.native_rate import render_broadband, spike_amplitudes


def _concat(parts: list[Bins], n_channels: int) -> Bins:
    if not parts:
        return Bins(np.zeros((0, n_channels)), np.zeros(0), np.zeros(0, dtype=np.int64))
    return Bins(
        np.concatenate([p.data for p in parts]),
        np.concatenate([p.end_times for p in parts]),
        np.concatenate([p.n_samples for p in parts]),
    )


def _feed_in_chunks(front: FrontEnd, data: np.ndarray, t: np.ndarray, cuts: np.ndarray) -> Bins:
    edges = zip([0, *cuts], [*cuts, len(t)], strict=True)
    return _concat([front.feed(data[a:b], t[a:b]) for a, b in edges], front.n_channels)


def test_counts_hand_computed_late_and_grace_flush() -> None:
    front = FrontEnd("counts", 0.1, 2, sample_rate_hz=40.0, grace_s=0.02)
    assert front.next_close is None and front.flush(1e9).n_bins == 0  # nothing before data
    t = np.array([10.02, 10.05, 10.10, 10.13, 10.35])
    x = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [5, 50]], dtype=float)
    out = front.feed(x, t)
    # (10.0, 10.1]: samples 1-3, closed by its own last sample at 10.10; (10.1, 10.2]: 4;
    # (10.2, 10.3]: empty; (10.3, 10.4] stays open.
    np.testing.assert_allclose(out.end_times, [10.1, 10.2, 10.3])
    np.testing.assert_array_equal(out.data, [[6, 60], [4, 40], [0, 0]])
    np.testing.assert_array_equal(out.n_samples, [3, 1, 0])
    assert front.next_close == pytest.approx(10.42)
    # a sample of a closed bin is late: counted, added nowhere
    assert front.feed(np.array([[100.0, 100.0]]), np.array([10.15])).n_bins == 0
    assert front.flush(10.419).n_bins == 0  # grace not over
    flushed = front.flush(10.42)
    np.testing.assert_allclose(flushed.end_times, [10.4])
    np.testing.assert_array_equal(flushed.data, [[5, 50]])
    # a sample of the bin the quiet stream's flush closed is late too
    assert front.feed(np.array([[1.0, 1.0]]), np.array([10.38])).n_bins == 0
    assert front.counters() == {
        "samples_in": 7,
        "samples_binned": 5,
        "late": 2,
        "bins_emitted": 4,
        "empty_bins": 1,
        "buffered": 0,
    }


def test_a_sample_at_the_bin_end_closes_its_bin_at_once() -> None:
    front = FrontEnd("counts", 1.0, 1, sample_rate_hz=4.0)
    assert front.feed(np.ones((1, 1)), np.array([0.25])).n_bins == 0
    assert front.feed(np.ones((2, 1)), np.array([0.5, 0.75])).n_bins == 0
    assert front.counters()["buffered"] == 0  # counts are summed as they come
    out = front.feed(np.ones((1, 1)), np.array([1.0]))
    np.testing.assert_array_equal(out.end_times, [1.0])
    np.testing.assert_array_equal(out.data, [[4.0]])
    assert front.next_close == pytest.approx(2.0 + front.grace_s)


def test_one_khz_stamps_on_bin_edges_give_exact_bins() -> None:
    # t0 + i / 1000 stamps hit the 50 ms edges up to rounding error; every bin holds exactly
    # its 50 samples and closes on its last one, whatever the chunking
    t0 = 86_400.0 * 3  # a large local_clock value, like days of uptime
    i = np.arange(1, 1001)
    t = t0 + i * 0.001
    counts = np.column_stack([i, np.ones_like(i)]).astype(float)
    for cuts in (np.arange(7, 1000, 7), np.arange(1, 1000)):  # 7 samples a chunk, or 1
        front = FrontEnd("counts", 0.05, 2, sample_rate_hz=1000.0)
        out = _feed_in_chunks(front, counts, t, cuts)
        assert out.n_bins == 20
        assert front.next_close == pytest.approx(t0 + 1.05 + front.grace_s)
        np.testing.assert_array_equal(out.n_samples, np.full(20, 50))
        np.testing.assert_array_equal(out.data[:, 0], i.reshape(20, 50).sum(axis=1))
        np.testing.assert_allclose(out.end_times, t0 + 0.05 * np.arange(1, 21), atol=1e-9)
        assert front.counters()["late"] == 0


def test_counts_at_the_bin_rate_are_one_bin_per_sample() -> None:
    front = FrontEnd("counts", 0.05, 2, sample_rate_hz=20.0)
    t = np.array([3.013, 3.063, 3.113, 3.1, 3.163])  # stamps off the grid; one out of order
    out = front.feed(np.arange(10.0).reshape(5, 2), t)
    np.testing.assert_array_equal(out.end_times, t[[0, 1, 2, 4]])
    np.testing.assert_array_equal(out.data, [[0, 1], [2, 3], [4, 5], [8, 9]])
    assert front.next_close is None and front.counters()["late"] == 1


def test_chunking_does_not_change_counts_and_matches_a_loop_oracle() -> None:
    rng = np.random.default_rng(0)
    n, c, bin_s = 500, 3, 0.037
    t = 5.0 + np.sort(rng.uniform(0.0, 3.0, size=n))
    t[100:110] = t[100:110][::-1]  # out of order: late only where a later bin was seen
    x = rng.poisson(1.0, size=(n, c)).astype(float)
    # oracle: one sample at a time in plain Python
    sums: dict[int, np.ndarray] = {}
    next_k, late, emitted = None, 0, []
    for ti, xi in zip(t, x, strict=True):
        k = int(np.ceil(ti / bin_s - 1e-6))
        next_k = k if next_k is None else next_k
        if k < next_k:
            late += 1
            continue
        sums[k] = sums.get(k, np.zeros(c)) + xi
        while next_k < k:
            emitted.append((next_k, sums.pop(next_k, np.zeros(c))))
            next_k += 1
    one_by_one = np.arange(1, n)  # the live case: one sample per call
    for cuts in [*(np.sort(np.random.default_rng(seed).choice(n, size=20, replace=False))
                   for seed in range(3)), one_by_one]:  # fmt: skip
        front = FrontEnd("counts", bin_s, c, sample_rate_hz=0.0)
        out = _feed_in_chunks(front, x, t, cuts)
        np.testing.assert_allclose(out.end_times, [k * bin_s for k, _ in emitted])
        np.testing.assert_array_equal(out.data, np.array([s for _, s in emitted]))
        counters = front.counters()
        assert counters["late"] == late and counters["samples_binned"] + late == n


@pytest.mark.parametrize("one_by_one", [False, True])
def test_events_are_counted_per_channel(one_by_one: bool) -> None:
    front = FrontEnd("events", 0.1, 3, sample_rate_hz=0.0, grace_s=0.01)
    t = np.array([1.01, 1.02, 1.05, 1.05, 1.15, 1.31, 1.32])
    ch = np.array([[0], [2], [2], [7], [1], [-1], [0]], dtype=np.int32)
    out = _feed_in_chunks(front, ch, t, np.arange(1, len(t)) if one_by_one else np.array([]))
    # (1.0, 1.1]: ch 0, 2, 2 (7 is out of range); (1.1, 1.2]: ch 1; (1.2, 1.3]: none
    np.testing.assert_allclose(out.end_times, [1.1, 1.2, 1.3])
    np.testing.assert_array_equal(out.data, [[1, 0, 2], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out.n_samples, [3, 1, 0])
    quiet = front.flush(1.41)  # the open bin (1.3, 1.4] closes at its end + grace
    np.testing.assert_array_equal(quiet.data, [[1, 0, 0]])
    assert front.feed(np.array([[1]], dtype=np.int32), np.array([1.39])).n_bins == 0
    assert front.counters() == {
        "samples_in": 8,
        "samples_binned": 5,
        "late": 1,
        "bins_emitted": 4,
        "empty_bins": 1,
        "out_of_range": 2,
        "buffered": 0,
    }


def _broadband(seconds: float, n_channels: int = 8, bin_s: float = 0.02):
    rng = np.random.default_rng(3)
    n_bins = round(seconds / bin_s)
    counts = rng.poisson(20.0 * bin_s, size=(n_bins, n_channels))
    end_times = 500.0 + bin_s * np.arange(1, n_bins + 1)
    amplitudes = spike_amplitudes(n_channels, rng)
    return render_broadband(counts, end_times, bin_s, 30_000.0, amplitudes, rng), end_times


def test_broadband_finds_the_injected_spikes_whatever_the_chunking() -> None:
    signal, end_times = _broadband(4.0)
    n = signal.stamps.shape[0]
    results = []
    for cuts in (np.arange(300, n, 300), np.sort(np.random.default_rng(1).choice(n, 40))):
        front = FrontEnd("broadband", 0.02, 8, sample_rate_hz=30_000.0, calibration_s=1.0)
        results.append(_feed_in_chunks(front, signal.voltage, signal.stamps, cuts))
    np.testing.assert_array_equal(results[0].data, results[1].data)
    np.testing.assert_array_equal(results[0].end_times, results[1].end_times)
    out = results[0]
    counters = front.counters()
    assert counters["calibration_samples"] == 30_000
    assert n == counters["samples_in"] == 30_000 + counters["samples_binned"]
    # bins from the first full bin after the calibration second line up with the truth
    assert out.end_times[0] == pytest.approx(501.02)
    injected = signal.injected[np.searchsorted(end_times, out.end_times - 1e-9)]
    found = np.minimum(out.data, injected).sum() / injected.sum()
    false = np.maximum(out.data - injected, 0).sum() / out.data.sum()
    assert found >= 0.95 and false <= 0.05
    assert (front.thresholds < 0).all()


def test_input_kind_of() -> None:
    assert input_kind_of(1000.0, "float32", 96, {"input_kind": "events"}, 0.05) == "events"
    assert input_kind_of(0.0, "int32", 1, {}, 0.05) == "events"
    assert input_kind_of(0.0, "float32", 96, {}, 0.05) == "counts"
    assert input_kind_of(30_000.0, "float32", 96, {}, 0.05) == "broadband"
    assert input_kind_of(30_000.0, "int16", 96, {}, 0.05) == "counts"
    assert input_kind_of(20.0, "float32", 96, {}, 0.05) == "counts"
    with pytest.raises(ValueError, match="slower than the 20 Hz bin rate"):
        input_kind_of(10.0, "float32", 96, {}, 0.05)
    with pytest.raises(ValueError, match="--input"):
        input_kind_of(1000.0, "float32", 96, {"input_kind": "spikes"}, 0.05)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("counts", 0.0, 1), {"sample_rate_hz": 1000.0}, "bin_s"),
        (("counts", float("nan"), 1), {"sample_rate_hz": 1000.0}, "bin_s"),
        (("counts", 0.05, 0), {"sample_rate_hz": 1000.0}, "n_channels"),
        (("lfp", 0.05, 2), {"sample_rate_hz": 1000.0}, "unknown"),
        (("broadband", 0.05, 2), {"sample_rate_hz": 0.0}, "sample_rate_hz"),
        (("counts", 0.05, 2), {"sample_rate_hz": 1000.0, "grace_s": -1.0}, "grace_s"),
    ],
)
def test_invalid_configuration(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrontEnd(*args, **kwargs)


def test_invalid_chunks_are_refused() -> None:
    front = FrontEnd("counts", 0.05, 2, sample_rate_hz=1000.0)
    with pytest.raises(ValueError, match=r"expects \(n, 2\)"):
        front.feed(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="one per sample"):
        front.feed(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        front.feed(np.zeros((1, 2)), np.array([np.nan]))
    with pytest.raises(ValueError, match="finite"):
        front.flush(float("nan"))
    with pytest.raises(ValueError, match=r"expects \(n, 1\)"):
        FrontEnd("events", 0.05, 2, sample_rate_hz=0.0).feed(np.zeros((1, 2)), np.zeros(1))
    assert front.feed(np.zeros((0, 2)), np.zeros(0)).n_bins == 0
    assert front.counters()["samples_in"] == 0


def test_non_finite_broadband_voltage_marks_only_its_channel_and_bins() -> None:
    signal, _ = _broadband(3.0)
    voltage = signal.voltage.astype(np.float64)
    bad_rows = slice(45_000, 45_300)  # 10 ms of channel 2, after the calibration second
    broken = voltage.copy()
    broken[bad_rows, 2] = np.nan
    broken[50_000, 5] = np.inf
    outs = []
    for data in (voltage, broken):
        front = FrontEnd("broadband", 0.02, 8, sample_rate_hz=30_000.0, calibration_s=1.0)
        outs.append(_feed_in_chunks(front, data, signal.stamps, np.arange(300, len(data), 300)))
    clean, out = outs
    stamps = signal.stamps
    hit = {
        2: np.unique(np.ceil(stamps[bad_rows] / 0.02 - 1e-6)),
        5: [np.ceil(stamps[50_000] / 0.02 - 1e-6)],
    }
    expected = np.zeros_like(out.data, dtype=bool)
    for channel, ks in hit.items():
        rows = np.searchsorted(np.round(out.end_times / 0.02), ks)
        expected[rows, channel] = True
    np.testing.assert_array_equal(~np.isfinite(out.data), expected)
    assert 1 <= expected[:, 2].sum() <= 2 and expected[:, 5].sum() == 1
    # every other channel, and the marked channels' later bins, as without the bad values
    later = out.end_times > stamps[50_000] + 0.1
    np.testing.assert_array_equal(
        out.data[:, [0, 1, 3, 4, 6, 7]], clean.data[:, [0, 1, 3, 4, 6, 7]]
    )
    np.testing.assert_array_equal(out.data[later], clean.data[later])


def test_events_one_by_one_match_one_chunk() -> None:
    # the live case (one event per pull) against the array path: random channels, some out of
    # range or not finite, some stamps out of order (late where a later bin was seen)
    rng = np.random.default_rng(1)
    n, c, bin_s = 600, 4, 0.02
    t = 2.0 + np.sort(rng.uniform(0.0, 1.0, size=n))
    t[200:215] = t[200:215][::-1]
    index = rng.integers(-1, c + 1, size=(n, 1)).astype(float)
    index[rng.choice(n, size=10, replace=False)] = np.nan
    fronts = [FrontEnd("events", bin_s, c, sample_rate_hz=0.0) for _ in range(2)]
    whole = fronts[0].feed(index, t)
    single = _feed_in_chunks(fronts[1], index, t, np.arange(1, n))
    for field in Bins._fields:
        np.testing.assert_array_equal(getattr(single, field), getattr(whole, field))
    assert fronts[1].counters() == fronts[0].counters()
    assert fronts[0].counters()["late"] > 0 and fronts[0].counters()["out_of_range"] > 10


@pytest.mark.parametrize("one_by_one", [False, True])
def test_non_finite_event_indices_are_out_of_range(one_by_one: bool) -> None:
    front = FrontEnd("events", 0.1, 3, sample_rate_hz=0.0)
    index, t = np.array([[0.0], [np.nan], [np.inf], [2.0]]), np.array([1.01, 1.02, 1.03, 1.11])
    out = _feed_in_chunks(front, index, t, np.arange(1, 4) if one_by_one else np.array([]))
    np.testing.assert_array_equal(out.data, [[1, 0, 0]])
    assert front.counters()["out_of_range"] == 2
