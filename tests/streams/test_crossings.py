"""Tests for streams.crossings: calibration, downward crossings, the refractory period."""

from __future__ import annotations

import numpy as np
import pytest

from streams.crossings import CrossingDetector


def _signal() -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(1300, 1)).clip(-3, 3)
    x[[1100, 1102, 1150], 0] = -40.0  # the high-pass rings: crossings at +0, +2 and +4
    return x


def _crossings(refractory_s: float, cuts: tuple[int, ...] = ()) -> list[int]:
    detector = CrossingDetector(1, 1000.0, calibration_s=1.0, refractory_s=refractory_s)
    x, found = _signal(), []
    for a, b in zip((0, *cuts), (*cuts, 1300), strict=True):
        found.extend((a + detector.process(x[a:b]).sample).tolist())
    return found


def test_refractory_period_keeps_crossings_far_enough_from_the_last_kept_one() -> None:
    assert _crossings(0.0) == [1100, 1102, 1104, 1150, 1152]
    # 1102 is 2 ms after 1100: dropped; 1104 is 4 ms after 1100 (the last kept): kept
    assert _crossings(0.003) == [1100, 1104, 1150]
    assert _crossings(0.005) == [1100, 1150]
    assert _crossings(0.003, cuts=(500, 1000, 1101, 1103, 1151)) == [1100, 1104, 1150]


def test_threshold_is_k_times_the_noise_rms_and_nothing_is_found_while_calibrating() -> None:
    rng = np.random.default_rng(1)
    detector = CrossingDetector(3, 30_000.0, calibration_s=0.5, threshold_k=4.0)
    scale = np.array([1.0, 5.0, 20.0], dtype=np.float32)
    x = rng.normal(size=(15_000, 3)).astype(np.float32) * scale
    x[::300] -= 10 * scale  # 100 Hz of 10-sigma spikes would inflate the plain RMS by 15%
    found = detector.process(x)
    assert found.first_detecting == 15_000 and found.sample.size == 0
    assert detector.calibrated
    np.testing.assert_allclose(detector.thresholds, [-4.0, -20.0, -80.0], rtol=0.03)
    with pytest.raises(ValueError, match="threshold_k"):
        CrossingDetector(1, 30_000.0, threshold_k=0.0)
    with pytest.raises(ValueError, match="Nyquist"):
        CrossingDetector(1, 400.0)
