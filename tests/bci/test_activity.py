"""Moving averages of a decoder's activity (bci.activity) against the recursion by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bci.activity import ActivityMeter


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rates_and_input_events_follow_the_moving_average(dtype: type) -> None:
    rng = np.random.default_rng(0)
    spikes = (rng.random((50, 8)) < 0.3).astype(dtype)
    inputs = rng.poisson(0.5, size=(50, 5)).astype(np.float32)
    meter = ActivityMeter(8, dt_s=0.02, tau_s=0.5)
    decay = math.exp(-0.02 / 0.5)
    rates, events = np.zeros(8), 0.0
    for z, x in zip(spikes, inputs, strict=True):
        meter.observe(z, x)
        rates = decay * rates + (1 - decay) / 0.02 * z.astype(np.float64)
        events = decay * events + (1 - decay) / 0.02 * int(np.sum(x != 0))
    np.testing.assert_allclose(meter.rates_hz, rates, rtol=1e-12)
    assert meter.input_events_hz == pytest.approx(events, rel=1e-12)


def test_a_neuron_spiking_every_bin_tends_to_the_bin_rate() -> None:
    meter = ActivityMeter(2, dt_s=0.05, tau_s=0.2)
    for _ in range(200):  # 50 time constants
        meter.observe(np.array([1.0, 0.0], dtype=np.float32), np.zeros(3, np.float32))
    np.testing.assert_allclose(meter.rates_hz, [20.0, 0.0], atol=1e-9)
    assert meter.input_events_hz == 0.0


def test_non_positive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="positive seconds"):
        ActivityMeter(4, dt_s=0.0, tau_s=1.0)
