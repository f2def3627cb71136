"""``bci.input_tracking.InputTracker``: the decoder's input normalisation follows the stream,
checked against a hand-computed trace, the closed-form weighted mean and a drifted stream."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bci.input_tracking import MIN_SCALE_FRACTION, InputTracker, track_recording
from bci.online import OnlineRSNN
from bci.rsnn import RSNN, RSNNConfig

C, DT = 3, 0.05


def _decoder(mean: float = 1.0, scale: float = 2.0) -> OnlineRSNN:
    """A float64 decoder whose stored input statistics are ``mean`` and ``scale``."""
    model = RSNN(RSNNConfig(n_in=C, n_hidden=8, n_out=2, dt_s=DT), seed=0)
    with torch.no_grad():
        model.input_mean.fill_(mean)
        model.input_scale.fill_(scale)
    return OnlineRSNN(model, dtype=np.float64)


def _tau_for(rate: float) -> float:
    """The time constant (s) whose per-bin rate ``1 - exp(-DT / tau)`` is ``rate``."""
    return -DT / math.log(1.0 - rate)


def test_two_bins_by_hand() -> None:
    decoder = _decoder(mean=1.0, scale=2.0)  # stored variance 4
    tracker = InputTracker(decoder.normalisation, DT, _tau_for(0.5))
    assert tracker.rate == pytest.approx(0.5, abs=1e-15)
    tracker.observe(np.full(C, 3.0))  # d = 2: m = 1 + 0.5 * 2 = 2, q = 0.5 (4 + 0.5 * 4) = 3
    np.testing.assert_allclose(decoder.normalisation[0], 2.0, rtol=1e-14)
    np.testing.assert_allclose(decoder.normalisation[1], 1 / math.sqrt(3.0), rtol=1e-14)
    tracker.observe(np.full(C, 2.0))  # d = 0: m = 2, q = 0.5 * 3 = 1.5
    np.testing.assert_allclose(decoder.normalisation[0], 2.0, rtol=1e-14)
    np.testing.assert_allclose(decoder.normalisation[1], 1 / math.sqrt(1.5), rtol=1e-14)
    tracker.reset()
    np.testing.assert_array_equal(decoder.normalisation, [[1.0] * C, [0.5] * C])


def test_a_float32_decoder_tracks_its_bins_as_a_float64_one_does() -> None:
    """The float32 decoder's bins go to the kernel as they are, widened exactly inside: its
    running statistics are the float64 tracker's to the last bit."""
    counts = np.random.default_rng(0).poisson(3.0, size=(200, C))
    trackers = {}
    for dtype in (np.float32, np.float64):
        normalisation = np.array([[1.0] * C, [0.5] * C], dtype=dtype)
        trackers[dtype] = InputTracker(normalisation, DT, 1.0)
        for x in counts.astype(dtype):
            trackers[dtype].observe(x)
    np.testing.assert_array_equal(trackers[np.float32].mean, trackers[np.float64].mean)
    np.testing.assert_array_equal(trackers[np.float32].var, trackers[np.float64].var)
    np.testing.assert_array_equal(
        trackers[np.float32].normalisation,
        trackers[np.float64].normalisation.astype(np.float32),
    )


def test_mean_is_the_exponentially_weighted_mean_from_the_stored_one() -> None:
    decoder = _decoder(mean=4.0, scale=1.5)
    tracker = InputTracker(decoder.normalisation, DT, tau_s=0.4)
    x = np.random.default_rng(0).poisson(6.0, (60, C)).astype(np.float64)
    for row in x:
        tracker.observe(row)
    a, n = tracker.rate, len(x)
    weights = a * (1 - a) ** (n - 1 - np.arange(n))  # bin k's weight in the mean after bin n-1
    expected = (1 - a) ** n * 4.0 + weights @ x
    np.testing.assert_allclose(decoder.normalisation[0], expected, rtol=1e-12)


def test_a_drifted_stream_is_z_scored_by_its_own_statistics() -> None:
    """Rates doubled and shifted, as between two recording days: after ten time constants the
    decoder sees each channel at mean ~0 and sd ~1 again."""
    decoder = _decoder(mean=3.0, scale=math.sqrt(3.0))  # trained on Poisson(3) counts
    tracker = InputTracker(decoder.normalisation, DT, tau_s=5.0)  # 100 bins
    rng = np.random.default_rng(1)
    rates = np.array([6.0, 9.0, 1.0])
    seen = []
    for row in rng.poisson(rates, (3000, C)).astype(np.float64):
        tracker.observe(row)
        seen.append((row - decoder.normalisation[0]) * decoder.normalisation[1])
    late = np.array(seen[1000:])
    np.testing.assert_allclose(late.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(late.std(axis=0), 1.0, atol=0.1)
    np.testing.assert_allclose(1 / decoder.normalisation[1], np.sqrt(rates), rtol=0.25)


def test_a_silent_channel_is_amplified_at_most_by_the_floor() -> None:
    decoder = _decoder(mean=2.0, scale=2.0)
    tracker = InputTracker(decoder.normalisation, DT, tau_s=0.5)
    for _ in range(2000):
        tracker.observe(np.zeros(C))
    np.testing.assert_allclose(decoder.normalisation[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(decoder.normalisation[1], 1 / (MIN_SCALE_FRACTION * 2.0))


@pytest.mark.parametrize("tau_s", [0.0, -1.0, math.nan, math.inf])
def test_bad_time_constants_are_refused(tau_s: float) -> None:
    with pytest.raises(ValueError, match="positive seconds"):
        InputTracker(_decoder().normalisation, DT, tau_s)


def test_a_tracked_recording_z_scores_as_the_tracking_decoder_does() -> None:
    """For decoders that normalise inside: the recording mapped back to the stored units is
    z-scored by the stored statistics exactly as the tracker z-scores the raw bins."""
    decoder = _decoder(mean=3.0, scale=1.5)
    tracker = InputTracker(decoder.normalisation, DT, tau_s=1.0)
    x = np.random.default_rng(2).poisson(7.0, (200, C)).astype(np.float64)
    seen = []
    for row in x:
        tracker.observe(row)
        seen.append((row - decoder.normalisation[0]) * decoder.normalisation[1])
    stored = np.array([[3.0] * C, [1 / 1.5] * C])
    mapped = track_recording(x, stored, DT, tau_s=1.0)
    np.testing.assert_array_equal(stored, [[3.0] * C, [1 / 1.5] * C])  # left unchanged
    np.testing.assert_allclose((mapped - 3.0) / 1.5, np.array(seen), rtol=1e-12, atol=1e-12)
