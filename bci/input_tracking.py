"""Input normalisation that follows the stream: unsupervised adaptation to day-to-day drift.

A decoder z-scores each input channel with the mean and sd of its training data (stored in
the checkpoint). On another day the same electrodes record other units and other rates
(Spike's 07-19 fired at twice 07-18's mean rate), so the stored statistics no longer centre
the input and a frozen decoder's output runs far off. Tracking replaces them, bin by bin, by
exponentially weighted estimates over the stream itself, with time constant ``tau_s``::

    a       = 1 - exp(-dt / tau)
    d       = x[t] - m[t-1]
    m[t]    = m[t-1] + a d                         running mean per channel
    q[t]    = (1 - a) (q[t-1] + a d^2)             running variance (West's recursion)
    x~[t]   = (x[t] - m[t]) / max(sqrt(q[t]), f s)  what the decoder sees

starting from the stored mean ``m[-1] = mu`` and variance ``q[-1] = s^2``, so the first
bins decode as without tracking. The sd is floored at ``f = MIN_SCALE_FRACTION`` of the
stored sd ``s``: a channel that falls silent is not amplified more than ``1 / f`` times. No
label is used: it runs beside a frozen decoder or beside e-prop. Only the normalisation
changes, never a weight, so e-prop's gradients stay exact for the inputs it sees.
"""

from __future__ import annotations

import math

import numpy as np

from bci.jit import MATRIX, VECTOR, as_argument, for_floats, kernel, void

MIN_SCALE_FRACTION = 0.1


@kernel(for_floats(void(VECTOR, "float64", *["float64[::1]"] * 3, MATRIX)))
def _track_kernel(
    x: np.ndarray, a: float, mean: np.ndarray, var: np.ndarray, floor: np.ndarray,
    normalisation: np.ndarray,
) -> None:  # fmt: skip
    """One bin in place: update ``mean`` and ``var`` (C,) with ``x`` (in the decoder's
    dtype, each value widened exactly to float64 here) and write the decoder's
    ``normalisation`` rows (mean, 1 / sd)."""
    for i in range(x.shape[0]):
        d = x[i] - mean[i]
        mean[i] += a * d
        var[i] = (1.0 - a) * (var[i] + a * d * d)
        sd = max(math.sqrt(var[i]), floor[i])
        normalisation[0, i] = mean[i]
        normalisation[1, i] = 1.0 / sd


class InputTracker:
    """Makes an input normalisation follow the stream (see the module docstring).

    ``normalisation`` (2, C) holds the stored mean and ``1 / scale`` per channel (an
    :class:`~bci.online.OnlineRSNN`'s ``normalisation``); ``dt_s`` is the bin width (s). Call
    :meth:`observe` with each bin before the decoder steps on it: it rewrites
    ``normalisation`` in place. :meth:`reset` restores the stored statistics.
    """

    def __init__(self, normalisation: np.ndarray, dt_s: float, tau_s: float) -> None:
        if not (math.isfinite(tau_s) and tau_s > 0):
            raise ValueError(f"input tracking time constant must be positive seconds; got {tau_s}")
        self.normalisation = normalisation
        self.tau_s = float(tau_s)
        self.rate = 1.0 - math.exp(-dt_s / self.tau_s)
        stored = normalisation.astype(np.float64)
        self._stored_mean = stored[0].copy()
        self._stored_sd = 1.0 / stored[1]
        self._floor = MIN_SCALE_FRACTION * self._stored_sd
        self.reset()

    def reset(self) -> None:
        """Back to the stored statistics (the decoder's normalisation too)."""
        self.mean = self._stored_mean.copy()
        self.var = self._stored_sd**2
        self.normalisation[0] = self._stored_mean
        self.normalisation[1] = 1.0 / self._stored_sd

    def observe(self, x: np.ndarray) -> None:
        """Take bin ``x`` (n_in,) of raw counts into the running statistics."""
        x = as_argument(x, self.normalisation.dtype)  # no conversion for the decoder's bins
        _track_kernel(x, self.rate, self.mean, self.var, self._floor, self.normalisation)


def track_recording(
    neural: np.ndarray, stored: np.ndarray, dt_s: float, tau_s: float
) -> np.ndarray:
    """A recording (T, C) as a decoder with the normalisation ``stored`` (2, C: mean and
    ``1 / scale``, left unchanged) sees it under tracking, in the recording's units again:
    ``x~[t] * scale + mean``. For decoders that normalise inside (the GRU, the Wiener
    filter) and were fitted on the same data, so they can be fed the tracked input as raw
    input."""
    normalisation = np.array(stored, dtype=np.float64)
    mean, scale = normalisation[0].copy(), 1.0 / normalisation[1]
    tracker = InputTracker(normalisation, dt_s, tau_s)
    tracked = np.empty(neural.shape, dtype=np.float64)
    for t, x in enumerate(np.asarray(neural, dtype=np.float64)):
        tracker.observe(x)
        tracked[t] = (x - normalisation[0]) * normalisation[1]
    return tracked * scale + mean
