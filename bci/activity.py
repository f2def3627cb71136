"""Moving averages of a decoder's activity, for status displays.

Each hidden neuron's firing rate and the rate of input events, as exponential moving
averages over ``tau_s``, with ``d = exp(-dt / tau)``::

    r[t] = d r[t-1] + (1 - d) z[t] / dt        Hz per neuron; z[t] in {0, 1}
    e[t] = d e[t-1] + (1 - d) n[t] / dt        Hz; n[t]: input channels with a non-zero value

The rates take one compiled pass per bin: as NumPy calls on an (H,) vector they cost the
decode loop about 5 µs a bin, several times the arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

from bci.jit import VECTOR, for_floats, kernel, void

__all__ = ["ActivityMeter"]


@kernel(for_floats(void("float64[::1]", VECTOR, "float64", "float64")))
def _leak(rates: np.ndarray, spikes: np.ndarray, decay: float, gain: float) -> None:
    """``rates = decay rates + gain spikes``, in place."""
    for i in range(rates.shape[0]):
        rates[i] = decay * rates[i] + gain * spikes[i]


class ActivityMeter:
    """Firing rates (``rates_hz``, (H,)) and input events (``input_events_hz``) of a
    decoder, moving averages over ``tau_s`` seconds of bins ``dt_s`` seconds wide, from 0."""

    def __init__(self, n_hidden: int, dt_s: float, tau_s: float) -> None:
        if not (dt_s > 0 and tau_s > 0):
            raise ValueError(f"dt_s and tau_s must be positive seconds; got {dt_s!r}, {tau_s!r}")
        self.decay = math.exp(-dt_s / tau_s)
        self.gain = (1.0 - self.decay) / dt_s
        self.rates_hz = np.zeros(n_hidden, dtype=np.float64)
        self.input_events_hz = 0.0

    def observe(self, spikes: np.ndarray, x: np.ndarray) -> None:
        """Take one bin: ``spikes`` (H,) of the decoder's dtype, ``x`` (C,) its input."""
        _leak(self.rates_hz, spikes, self.decay, self.gain)
        self.input_events_hz = self.decay * self.input_events_hz + self.gain * np.count_nonzero(x)
