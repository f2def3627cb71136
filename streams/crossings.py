"""Threshold crossings of broadband voltage (e.g. 30 kHz x 96 channels), chunk by chunk.

Per channel ``c`` and sample ``i`` (``x`` in the stream's units, e.g. µV):

    y = highpass(x)                        causal Butterworth (2nd order, 250 Hz), state
                                           carried across chunks; primed with the first
                                           sample so a DC offset causes no start transient
    theta_c = -k * rms_c,   rms_c = median(|y_c|) / 0.6745
                                           over the first ``calibration_s`` seconds of y
    crossing at i  <=>  y[i] < theta_c <= y[i-1]   (a downward crossing)

``rms_c`` is the noise RMS estimated from the median absolute value (Quiroga, Nadasdy &
Ben-Shaul 2004, Neural Comput. 16:1661): it equals the RMS for Gaussian noise and, unlike the
plain RMS, is not inflated by the spikes themselves (on a channel firing 80 Hz with 10-sigma
spikes the plain RMS is ~1.7x the noise and the threshold would miss most spikes). Every
``_CALIBRATION_STRIDE``-th sample enters the median (a deterministic subset, so the
threshold does not depend on chunking either).

A crossing less than ``refractory_s`` after the previous accepted crossing of the same channel
is dropped. Samples before the threshold is known (the calibration) yield no crossing. All
state (filter memory, last filtered sample, last accepted crossing, calibration sums) is
carried, so the crossings do not depend on how the stream is cut into chunks.

Everything is vectorised over the (n, C) chunk; only chains of candidate crossings closer than
the refractory period to each other (noise around the threshold) are resolved one by one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

_CALIBRATION_STRIDE = 4  # every 4th calibration sample enters the median
_MAD_TO_SD = 0.6745  # median(|x|) of a unit Gaussian


class Crossings(NamedTuple):
    """Crossings found in one chunk, in sample order."""

    sample: np.ndarray
    """(m,) int64 row of the chunk at which each crossing happened."""
    channel: np.ndarray
    """(m,) int64 channel of each crossing."""
    first_detecting: int
    """First row after the calibration (``n`` when the whole chunk was calibration)."""


class CrossingDetector:
    """Causal high-pass, -k x RMS threshold and refractory period (see the module docstring).

    Args:
        n_channels: channels per sample.
        sample_rate_hz: sampling rate of the voltage (e.g. 30000).
        threshold_k: threshold in multiples of the RMS (> 0).
        refractory_s: dead time after a crossing, seconds (>= 0).
        calibration_s: seconds of signal the RMS is estimated over (> 0).
        highpass_hz: high-pass corner frequency in Hz (below the Nyquist frequency).
        order: Butterworth order of the high-pass.
    """

    def __init__(
        self,
        n_channels: int,
        sample_rate_hz: float,
        *,
        threshold_k: float = 4.5,
        refractory_s: float = 0.001,
        calibration_s: float = 2.0,
        highpass_hz: float = 250.0,
        order: int = 2,
    ) -> None:
        from scipy import signal  # only the broadband path needs scipy

        if not math.isfinite(threshold_k) or threshold_k <= 0:
            raise ValueError(f"threshold_k={threshold_k!r} must be > 0 (multiples of the RMS)")
        if not math.isfinite(refractory_s) or refractory_s < 0:
            raise ValueError(f"refractory_s={refractory_s!r} must be >= 0 seconds")
        if not math.isfinite(calibration_s) or calibration_s <= 0:
            raise ValueError(f"calibration_s={calibration_s!r} must be > 0 seconds")
        if not 0 < highpass_hz < sample_rate_hz / 2:
            raise ValueError(
                f"highpass_hz={highpass_hz!r} must lie between 0 and the Nyquist frequency "
                f"({sample_rate_hz / 2:g} Hz)"
            )
        self.n_channels = int(n_channels)
        self.threshold_k = float(threshold_k)
        self.refractory = round(refractory_s * sample_rate_hz)  # samples
        self.calibration_samples = max(1, round(calibration_s * sample_rate_hz))
        sos = signal.butter(order, highpass_hz, "highpass", fs=sample_rate_hz, output="sos")
        self._sos = sos.astype(np.float32)  # float32 throughout: half the memory traffic
        self._sosfilt = signal.sosfilt
        # (sections, 2): the steady state for a constant input of 1
        self._zi_unit = signal.sosfilt_zi(sos).astype(np.float32)
        self._zi: np.ndarray | None = None  # (sections, 2, C)
        self._seen = 0  # samples filtered so far
        self._calibration = np.empty(
            (-(-self.calibration_samples // _CALIBRATION_STRIDE), self.n_channels), np.float32
        )
        self._last_y = np.zeros(self.n_channels, dtype=np.float32)
        self._last_crossing = np.full(self.n_channels, np.iinfo(np.int64).min // 2)
        self.thresholds: np.ndarray | None = None
        """(C,) float32 thresholds (negative), None until calibrated."""

    @property
    def calibrated(self) -> bool:
        """True once the thresholds are known."""
        return self.thresholds is not None

    def process(self, x: np.ndarray) -> Crossings:
        """Filter a chunk ``x`` (n, C) and return its crossings (see :class:`Crossings`)."""
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        if n == 0:
            return Crossings(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
        if self._zi is None:
            self._zi = self._zi_unit[:, :, None] * x[0][None, None, :]
        y, self._zi = self._sosfilt(self._sos, x, axis=0, zi=self._zi)
        start = 0
        if self.thresholds is None:
            start = min(n, self.calibration_samples - self._seen)
            first = -(-self._seen // _CALIBRATION_STRIDE)  # next stored absolute index / stride
            part = y[first * _CALIBRATION_STRIDE - self._seen : start : _CALIBRATION_STRIDE]
            self._calibration[first : first + part.shape[0]] = part
            if self._seen + start == self.calibration_samples:
                rms = np.median(np.abs(self._calibration), axis=0) / _MAD_TO_SD
                self.thresholds = (-self.threshold_k * rms).astype(np.float32)
                self._calibration = np.empty((0, self.n_channels), np.float32)  # free it
        offset = self._seen
        self._seen += n
        if start == n:
            self._last_y = y[-1].copy()
            return Crossings(np.zeros(0, np.int64), np.zeros(0, np.int64), n)
        assert self.thresholds is not None
        below = y[start:] < self.thresholds
        was_below = np.empty_like(below)
        was_below[0] = (y[start - 1] if start else self._last_y) < self.thresholds
        was_below[1:] = below[:-1]
        self._last_y = y[-1].copy()
        row, channel = np.nonzero(below & ~was_below)
        row += start
        return Crossings(*self._refractory(row, channel, offset), first_detecting=start)

    def _refractory(
        self, row: np.ndarray, channel: np.ndarray, offset: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Keep crossings at least ``refractory`` samples after the last kept one (per channel).

        A candidate far enough from the previous *candidate* of its channel is kept whatever
        happened before it; the rest (rare) are resolved in order.
        """
        if row.size == 0 or self.refractory == 0:
            return row, channel
        order = np.lexsort((row, channel))  # by channel, then time
        r, c = row[order] + offset, channel[order]
        first = np.r_[True, c[1:] != c[:-1]]
        previous = np.where(first, self._last_crossing[c], np.r_[0, r[:-1]])
        keep = r - previous >= self.refractory
        for i in np.flatnonzero(~keep & ~first):
            # the previous candidate may itself have been dropped: walk back to the last kept
            j = i - 1
            while j >= 0 and c[j] == c[i] and not keep[j]:
                j -= 1
            last = r[j] if j >= 0 and c[j] == c[i] else self._last_crossing[c[i]]
            keep[i] = r[i] - last >= self.refractory
        r, c = r[keep], c[keep]
        if r.size:
            ends = np.r_[c[1:] != c[:-1], True]  # the last kept crossing of each channel
            self._last_crossing[c[ends]] = r[ends]
        back = np.argsort(r, kind="stable")  # sample order again
        return r[back] - offset, c[back]
