"""Causal binning of a fast input stream (e.g. 1 kHz spike counts) into decoder bins.

Bin ``k`` covers the half-open interval ``(t_k - bin_s, t_k]`` with end time
``t_k = origin + k * bin_s`` (seconds, the stream's clock). A bin's value is the sum of the
samples whose timestamp lies in it. A bin is emitted once it is known to be complete: when a
sample past its end arrives, or when :meth:`Binner.flush` is told that time has passed its
end. Samples that belong to a bin already emitted are *late*: they are counted (and not
added), never dropped silently. A timestamp within ``1e-6 * bin_s`` of a bin end belongs to
the bin that ends there, which absorbs floating-point error in ``t0 + i / rate`` stamps.

Two ways to place the bins:

- ``origin`` given: the first bin is ``(origin, origin + bin_s]``; samples at or before
  ``origin`` are counted as ``before_origin``. Bins without samples are emitted with
  ``n_samples == 0``, so the output is a gap-free grid from the origin on.
- ``origin=None``: bin ends are whole multiples of ``bin_s`` on the stream clock (so binners
  on the same clock agree); the first bin emitted is the one holding the first sample, which
  is usually partial: ``n_samples`` tells.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

_EDGE_TOLERANCE = 1e-6  # in bins


class Bins(NamedTuple):
    """Completed bins, oldest first."""

    data: np.ndarray
    """(n, C) float64 sums of the samples in each bin."""
    end_times: np.ndarray
    """(n,) float64 bin end times ``t_k`` (seconds)."""
    n_samples: np.ndarray
    """(n,) int64 number of samples summed into each bin (0 for an empty bin)."""

    @property
    def n_bins(self) -> int:
        """Number of bins in this batch."""
        return int(self.end_times.shape[0])


class Binner:
    """Sum timestamped samples into fixed-width bins, causally (see the module docstring).

    Args:
        bin_s: bin width in seconds (> 0).
        n_channels: channels per sample.
        origin: start time of the first bin (seconds), or None for a grid on multiples of
            ``bin_s`` starting at the first sample's bin.
    """

    def __init__(self, bin_s: float, n_channels: int, origin: float | None = None) -> None:
        bin_s = float(bin_s)
        if not math.isfinite(bin_s) or bin_s <= 0:
            raise ValueError(f"bin_s={bin_s!r} must be a finite number of seconds > 0")
        if int(n_channels) != n_channels or n_channels < 1:
            raise ValueError(f"n_channels={n_channels!r} must be a positive integer")
        if origin is not None and not math.isfinite(float(origin)):
            raise ValueError(f"origin={origin!r} must be a finite time in seconds or None")
        self.bin_s = bin_s
        self.n_channels = int(n_channels)
        self.origin = 0.0 if origin is None else float(origin)
        self._explicit_origin = origin is not None
        # Index of the first bin not yet emitted; None until the first sample (origin=None).
        self._next_k: int | None = 1 if origin is not None else None
        self._sums = np.zeros((0, self.n_channels))  # bins _next_k, _next_k + 1, ...
        self._counts = np.zeros(0, dtype=np.int64)
        self._samples_in = 0
        self._samples_binned = 0
        self._late = 0
        self._before_origin = 0
        self._bins_emitted = 0
        self._empty_bins = 0

    # --- public ---------------------------------------------------------------------------

    def feed(self, data: np.ndarray, timestamps: np.ndarray) -> Bins:
        """Add a chunk (``data`` (n, C), ``timestamps`` (n,) seconds); return completed bins.

        Samples may arrive out of order within bins that are still open. A sample is late
        when a sample of a later bin arrived before it, in this chunk or an earlier one, so
        the result does not depend on how the stream is cut into chunks.
        """
        data = np.asarray(data, dtype=np.float64)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if data.ndim == 1 and timestamps.ndim == 0:  # one sample
            data, timestamps = data[None, :], timestamps[None]
        if data.ndim != 2 or data.shape[1] != self.n_channels:
            raise ValueError(
                f"data has shape {data.shape}; the binner expects (n, {self.n_channels})"
            )
        if timestamps.shape != (data.shape[0],):
            raise ValueError(
                f"timestamps has shape {timestamps.shape}; expected ({data.shape[0]},), one "
                "per sample"
            )
        if not np.all(np.isfinite(timestamps)):
            raise ValueError("timestamps must be finite (got NaN or inf)")
        n = data.shape[0]
        if n == 0:
            return self._empty()
        self._samples_in += n
        k = self._bin_index(timestamps)
        if self._next_k is None:
            self._next_k = int(k[0])  # the bin of the first sample to arrive
        if self._explicit_origin:
            early = k <= 0
            n_early = int(early.sum())
            if n_early:
                self._before_origin += n_early
                logger.debug("%d samples at or before the origin %.6f", n_early, self.origin)
        else:
            early = np.zeros(n, dtype=bool)
        # Late: behind the newest bin seen before it, in arrival order (so the result does
        # not depend on how the stream was cut into chunks).
        seen_before = np.maximum.accumulate(np.concatenate([[self._next_k], k[:-1]]))
        late = (k < seen_before) & ~early
        n_late = int(late.sum())
        if n_late:
            self._late += n_late
            logger.debug(
                "%d late samples (bins up to %.6f already emitted)",
                n_late,
                self._end_time(self._next_k - 1),
            )
        keep = ~(late | early)
        if keep.any():
            self._accumulate(k[keep], data[keep])
        # A sample in bin K proves every bin before K complete.
        return self._emit_before(int(k[keep].max()) if keep.any() else self._next_k)

    def flush(self, until: float) -> Bins:
        """Emit every bin that ends at or before ``until`` (no later samples are expected).

        Use it when the input has gone quiet, e.g. ``flush(local_clock() - max_latency)``.
        With ``origin=None`` nothing is emitted before the first sample.
        """
        until = float(until)
        if not math.isfinite(until):
            raise ValueError(f"until={until!r} must be a finite time in seconds")
        if self._next_k is None:
            return self._empty()
        last = math.floor((until - self.origin) / self.bin_s + _EDGE_TOLERANCE)
        return self._emit_before(last + 1)

    def counters(self) -> dict[str, int]:
        """Samples in, binned, late and before the origin; bins emitted and empty ones."""
        return {
            "samples_in": self._samples_in,
            "samples_binned": self._samples_binned,
            "late": self._late,
            "before_origin": self._before_origin,
            "bins_emitted": self._bins_emitted,
            "empty_bins": self._empty_bins,
            "pending_bins": int(self._counts.shape[0]),
        }

    @property
    def next_bin_end(self) -> float | None:
        """End time of the oldest bin not yet emitted (None before the first sample)."""
        return None if self._next_k is None else self._end_time(self._next_k)

    # --- internals ------------------------------------------------------------------------

    def _bin_index(self, timestamps: np.ndarray) -> np.ndarray:
        # t in (t_k - bin_s, t_k]  <=>  k = ceil((t - origin) / bin_s), with a small tolerance
        # so that a stamp a rounding error past t_k still counts as t_k.
        x = (timestamps - self.origin) / self.bin_s
        return np.ceil(x - _EDGE_TOLERANCE).astype(np.int64)

    def _end_time(self, k: int | np.ndarray) -> float | np.ndarray:
        return self.origin + np.asarray(k, dtype=np.float64) * self.bin_s

    def _accumulate(self, k: np.ndarray, data: np.ndarray) -> None:
        assert self._next_k is not None
        offsets = k - self._next_k
        needed = int(offsets.max()) + 1
        have = self._counts.shape[0]
        if needed > have:
            self._sums = np.concatenate([self._sums, np.zeros((needed - have, self.n_channels))])
            self._counts = np.concatenate([self._counts, np.zeros(needed - have, np.int64)])
        np.add.at(self._sums, offsets, data)
        np.add.at(self._counts, offsets, 1)
        self._samples_binned += int(k.shape[0])

    def _emit_before(self, stop_k: int) -> Bins:
        """Emit bins ``_next_k <= k < stop_k`` (including empty ones) and advance."""
        assert self._next_k is not None
        n = stop_k - self._next_k
        if n <= 0:
            return self._empty()
        have = self._counts.shape[0]
        if n > have:  # bins with no sample at all
            self._sums = np.concatenate([self._sums, np.zeros((n - have, self.n_channels))])
            self._counts = np.concatenate([self._counts, np.zeros(n - have, np.int64)])
        out = Bins(
            data=self._sums[:n].copy(),
            end_times=self._end_time(np.arange(self._next_k, stop_k)),
            n_samples=self._counts[:n].copy(),
        )
        self._sums = self._sums[n:]
        self._counts = self._counts[n:]
        self._next_k = stop_k
        self._bins_emitted += n
        self._empty_bins += int((out.n_samples == 0).sum())
        return out

    def _empty(self) -> Bins:
        return Bins(
            data=np.zeros((0, self.n_channels)),
            end_times=np.zeros(0),
            n_samples=np.zeros(0, dtype=np.int64),
        )
