"""Tests for streams.native_rate: rendered signals give back the session's bins exactly."""

from __future__ import annotations

import numpy as np
import pytest

from streams.frontend import FrontEnd
from streams.native_rate import Renderer, render_counts, render_events, samples_per_bin
from streams.synthetic import SyntheticConfig, simulate_session

BIN_S = 0.02


def _session_counts() -> tuple[np.ndarray, np.ndarray]:
    session = simulate_session(SyntheticConfig(n_channels=16, bin_s=BIN_S, duration_s=2.0))
    # bin k ends at 1234 s + k bins: a whole multiple of the bin width, as publishers choose
    return session.neural, 1234.0 + BIN_S * np.arange(session.n_bins)


def _bins(
    front: FrontEnd, data: np.ndarray, stamps: np.ndarray, last_end: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    cuts = np.sort(np.random.default_rng(seed).choice(stamps.shape[0], 25, replace=False))
    parts = [
        front.feed(data[a:b], stamps[a:b]) for a, b in zip([0, *cuts], [*cuts, None], strict=True)
    ]
    parts.append(front.flush(last_end + front.grace_s))  # events: the last bin, gone quiet
    return np.concatenate([p.data for p in parts]), np.concatenate([p.end_times for p in parts])


@pytest.mark.parametrize("kind", ["counts", "events"])
def test_front_end_recovers_the_session_bins_exactly(kind: str) -> None:
    counts, ends = _session_counts()
    rng = np.random.default_rng(0)
    if kind == "counts":
        data, stamps = render_counts(counts, ends, BIN_S, 1000.0, rng)
        assert data.shape == (counts.shape[0] * 20, 16)
        np.testing.assert_array_equal(data.reshape(-1, 20, 16).sum(axis=1), counts)
        np.testing.assert_allclose(stamps[19::20], ends, rtol=0, atol=1e-9)  # last at the end
    else:
        data, stamps = render_events(counts, ends, BIN_S, rng)
        assert data.dtype == np.int32 and data.shape == (counts.sum(), 1)
        assert (np.diff(stamps) >= 0).all()
    for seed in range(2):
        front = FrontEnd(kind, BIN_S, 16, sample_rate_hz=1000.0 if kind == "counts" else 0.0)
        binned, end_times = _bins(front, data, stamps, ends[-1], seed)
        np.testing.assert_array_equal(binned, counts)
        np.testing.assert_allclose(end_times, ends, rtol=0, atol=1e-9)
        assert front.counters()["late"] == 0


def test_renderer_pushes_each_millisecond_ending_at_the_bin_end() -> None:
    renderer = Renderer("broadband", BIN_S, 4, 30_000.0, seed=1)
    out = renderer.render(np.ones((2, 4)), np.array([10.02, 10.04]))
    assert out.data.shape == (1200, 4) and out.data.dtype == np.float32
    np.testing.assert_allclose(out.stamps[out.push][[19, 39]], [10.02, 10.04])
    assert out.push.sum() == 40  # every 30 samples
    per_bin = Renderer("counts", BIN_S, 4, 50.0)
    assert per_bin.per_bin and per_bin.render(np.full((1, 4), 0.5), np.array([3.0])).push.all()


def test_bad_rates_and_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of the bin rate"):
        samples_per_bin(1500.0, 0.0333)
    with pytest.raises(ValueError, match="integer spike counts"):
        render_counts(
            np.full((2, 2), 0.5), np.array([1.0, 2.0]), 1.0, 10.0, np.random.default_rng()
        )
