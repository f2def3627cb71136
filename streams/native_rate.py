"""Render binned spike counts as the native-rate signals a rig sends.

Given counts per bin and channel (non-negative integers) and the bins' end times ``t_k``
(seconds), each renderer returns a signal from which :class:`streams.frontend.FrontEnd`
recovers the bins:

- :func:`render_counts`: per-channel counts at ``S = rate_hz * bin_s`` samples per bin
  (e.g. 1 kHz into 50 ms bins), each spike in a sub-sample drawn uniformly. Sub-sample ``j``
  of bin ``k`` is stamped ``t_k - (S - 1 - j) / rate_hz``: the last one exactly at ``t_k``.
  The sub-samples of a bin sum to its counts exactly.
- :func:`render_events`: one event per spike (int32 channel index), stamped uniformly in
  ``(t_k - bin_s, t_k]``, in time order. Each bin holds exactly its counts.
- :func:`render_broadband`: voltage at ``rate_hz`` (e.g. 30 kHz), Gaussian noise plus one
  biphasic spike waveform per spike (trough ``-amplitude_c``), stamped like counts. Spikes of
  a channel sit on distinct slots ``SPIKE_SPACING_S`` apart, at least ``SPIKE_MARGIN_S`` from
  the bin's edges, so every waveform (and its threshold crossing) lies inside its own bin and
  bins render independently. A bin holds at most ``slots`` spikes per channel; counts above
  that are clipped (the returned ``injected`` counts say what was placed).

All randomness comes from the ``rng`` passed in.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

SPIKE_SPACING_S = 0.0017
SPIKE_MARGIN_S = 0.0013
NOISE_UV = 8.0
AMPLITUDE_UV = (70.0, 150.0)  # the 250 Hz high-pass leaves ~0.7 of the trough
# A narrow trough and a later, broader positive phase a quarter as high (as extracellular
# spikes look); a larger positive phase makes the high-pass ring into a second trough.
_TROUGH_SD_S = 0.0001
_PEAK_DELAY_S = 0.0004
_PEAK_SD_S = 0.00025
_PEAK_FRACTION = 0.25
_SUPPORT_S = (-0.0004, 0.0012)  # waveform support around the trough
_EDGE_MARGIN = 0.01  # spike events keep this fraction of a bin clear of its edges


class Broadband(NamedTuple):
    """Rendered broadband voltage."""

    voltage: np.ndarray
    """(T * S, C) float32, µV."""
    stamps: np.ndarray
    """(T * S,) float64 seconds."""
    injected: np.ndarray
    """(T, C) int64 spikes placed per bin and channel."""


def samples_per_bin(rate_hz: float, bin_s: float) -> int:
    """``rate_hz * bin_s`` as a whole number; ValueError when the rate does not divide the bin."""
    ratio = rate_hz * bin_s
    if not math.isfinite(ratio) or ratio < 1 or abs(ratio - round(ratio)) > 1e-6:
        raise ValueError(
            f"{rate_hz:g} Hz does not give a whole number of samples per {bin_s:g} s bin; "
            "choose a rate that is a multiple of the bin rate (e.g. 1000 or 30000 Hz)"
        )
    return round(ratio)


def integer_counts(counts: np.ndarray) -> np.ndarray:
    """``counts`` as int64; ValueError unless every value is a non-negative integer."""
    counts = np.asarray(counts)
    as_int = np.rint(counts).astype(np.int64)
    if counts.ndim != 2 or (as_int < 0).any() or not np.array_equal(as_int, counts):
        raise ValueError(
            "native-rate rendering needs non-negative integer spike counts per bin; this "
            "neural data holds other values (e.g. rates or features), so stream it per bin"
        )
    return as_int


def sub_sample_stamps(end_times: np.ndarray, bin_s: float, per_bin: int) -> np.ndarray:
    """(T * S,) stamps: sample ``j`` of bin ``k`` at ``t_k - (S - 1 - j) * bin_s / S``."""
    steps = (per_bin - 1 - np.arange(per_bin)) * (bin_s / per_bin)
    return (np.asarray(end_times, dtype=np.float64)[:, None] - steps[None, :]).reshape(-1)


def render_counts(
    counts: np.ndarray,
    end_times: np.ndarray,
    bin_s: float,
    rate_hz: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(T * S, C) float32 counts per sub-sample and their stamps (see the module docstring)."""
    counts = integer_counts(counts)
    per_bin = samples_per_bin(rate_hz, bin_s)
    n_bins, n_channels = counts.shape
    cell = np.repeat(np.arange(n_bins * n_channels), counts.reshape(-1))  # one per spike
    sub = rng.integers(per_bin, size=cell.shape[0])
    flat = ((cell // n_channels) * per_bin + sub) * n_channels + cell % n_channels
    out = np.bincount(flat, minlength=n_bins * per_bin * n_channels)
    return (
        out.reshape(n_bins * per_bin, n_channels).astype(np.float32),
        sub_sample_stamps(end_times, bin_s, per_bin),
    )


def render_events(
    counts: np.ndarray, end_times: np.ndarray, bin_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1) int32 channel index per spike and their stamps, in time order."""
    counts = integer_counts(counts)
    n_channels = counts.shape[1]
    cell = np.repeat(np.arange(counts.size), counts.reshape(-1))
    end = np.asarray(end_times, dtype=np.float64)[cell // n_channels]
    # 1% of a bin clear of both edges: a recording's clock-offset correction (tens of µs on
    # one host) cannot move a spike into the neighbouring bin
    stamps = end - bin_s * rng.uniform(_EDGE_MARGIN, 1.0 - _EDGE_MARGIN, size=cell.shape[0])
    order = np.argsort(stamps, kind="stable")
    channels = (cell % n_channels).astype(np.int32)
    return channels[order, None], stamps[order]


def spike_amplitudes(n_channels: int, rng: np.random.Generator) -> np.ndarray:
    """(C,) trough depth per channel, µV, uniform in ``AMPLITUDE_UV``."""
    return rng.uniform(*AMPLITUDE_UV, size=n_channels)


def spike_waveform(rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample offsets from the trough and the unit waveform (trough -1) at ``rate_hz``."""
    lo, hi = (round(s * rate_hz) for s in _SUPPORT_S)
    offsets = np.arange(lo, hi + 1)
    t = offsets / rate_hz
    wave = -np.exp(-0.5 * (t / _TROUGH_SD_S) ** 2) + _PEAK_FRACTION * np.exp(
        -0.5 * ((t - _PEAK_DELAY_S) / _PEAK_SD_S) ** 2
    )
    return offsets, wave


def render_broadband(
    counts: np.ndarray,
    end_times: np.ndarray,
    bin_s: float,
    rate_hz: float,
    amplitudes_uv: np.ndarray,
    rng: np.random.Generator,
    noise_uv: float = NOISE_UV,
) -> Broadband:
    """Noise plus spike waveforms for these bins (see the module docstring)."""
    counts = integer_counts(counts)
    per_bin = samples_per_bin(rate_hz, bin_s)
    n_bins, n_channels = counts.shape
    offsets, wave = spike_waveform(rate_hz)
    margin = round(SPIKE_MARGIN_S * rate_hz)
    spacing = round(SPIKE_SPACING_S * rate_hz)
    n_slots = (per_bin - 1 - 2 * margin) // spacing + 1
    if n_slots < 1 or margin + offsets[0] < 0 or spacing <= offsets[-1] - offsets[0]:
        raise ValueError(
            f"{bin_s:g} s bins at {rate_hz:g} Hz leave no room for spike waveforms; use longer "
            "bins or a higher rate"
        )
    injected = np.minimum(counts, n_slots)
    # each channel's spikes take distinct random slots: slot m is used iff its rank < count
    rank = np.argsort(np.argsort(rng.random((n_bins, n_channels, n_slots)), axis=2), axis=2)
    b, c, m = np.nonzero(rank < injected[:, :, None])
    trough = b * per_bin + margin + m * spacing
    voltage = rng.standard_normal((n_bins * per_bin, n_channels), dtype=np.float32)
    voltage *= np.float32(noise_uv)
    rows = (trough[:, None] + offsets[None, :]).reshape(-1)
    cols = np.repeat(c, offsets.shape[0])
    shapes = (np.asarray(amplitudes_uv)[c, None] * wave[None, :]).reshape(-1)
    np.add.at(voltage, (rows, cols), shapes.astype(np.float32))
    return Broadband(voltage, sub_sample_stamps(end_times, bin_s, per_bin), injected)


class Rendered(NamedTuple):
    """Samples of some bins in a published input kind."""

    data: np.ndarray
    """(n, stream channels): float32 counts or voltage, or int32 channel indices (events)."""
    stamps: np.ndarray
    """(n,) float64 seconds, in time order."""
    push: np.ndarray
    """(n,) bool: push everything up to and including this sample once it is due."""


class Renderer:
    """Render bins one block at a time as a publisher sends them (see the module docstring).

    ``kind="counts"`` at ``rate_hz == 1 / bin_s`` passes each bin's values through as one
    sample (any values: the per-bin stream). Regular kinds push every ``push_interval_s``,
    counted back from each bin's last sample, so a bin's last sample is pushed when due.
    Events push each event when due (a publisher coalesces them to ``push_interval_s``).

    Args:
        kind: ``"counts"``, ``"events"`` or ``"broadband"``.
        bin_s: bin width on the publishing clock, seconds.
        n_channels: neural channels.
        rate_hz: sample rate on the publishing clock (ignored for events).
        seed: seeds the spike times, noise and per-channel spike amplitudes.
    """

    def __init__(
        self,
        kind: str,
        bin_s: float,
        n_channels: int,
        rate_hz: float,
        seed: int = 0,
        push_interval_s: float = 0.001,
    ) -> None:
        self.kind = kind
        self.bin_s = bin_s
        self.rate_hz = rate_hz
        self._rng = np.random.default_rng(seed)
        self.per_bin = kind != "events" and samples_per_bin(rate_hz, bin_s) == 1
        if kind == "broadband":
            self.amplitudes_uv = spike_amplitudes(n_channels, self._rng)
        if kind != "events":
            per_bin = samples_per_bin(rate_hz, bin_s)
            every = max(1, round(push_interval_s * rate_hz))
            self._push_mask = (per_bin - 1 - np.arange(per_bin)) % every == 0

    def render(self, counts: np.ndarray, end_times: np.ndarray) -> Rendered:
        """Samples of the bins ``counts`` (B, C) ending at ``end_times`` (B,) seconds."""
        if self.per_bin:
            data = np.asarray(counts, dtype=np.float32)
            stamps = np.asarray(end_times, dtype=np.float64)
        elif self.kind == "counts":
            data, stamps = render_counts(counts, end_times, self.bin_s, self.rate_hz, self._rng)
        elif self.kind == "events":
            data, stamps = render_events(counts, end_times, self.bin_s, self._rng)
            return Rendered(data, stamps, np.ones(stamps.shape[0], dtype=bool))
        else:
            rendered = render_broadband(
                counts, end_times, self.bin_s, self.rate_hz, self.amplitudes_uv, self._rng
            )
            data, stamps = rendered.voltage, rendered.stamps
        return Rendered(data, stamps, np.tile(self._push_mask, len(end_times)))
