"""The input front-end: a native-rate neural stream -> causal decoder bins.

One front-end serves live decoding and :func:`streams.xdf.session_from_xdf`, so a model
calibrated from a recording sees the same bins live. Three input kinds:

- ``counts``: per-channel counts per sample (e.g. 1 kHz threshold-crossing counts), summed.
- ``events``: an irregular stream of spike events, one channel index (int) per sample,
  counted per channel. Indices outside ``[0, n_channels)`` are counted (``out_of_range``),
  never binned.
- ``broadband``: continuous voltage turned into threshold crossings by
  :class:`streams.crossings.CrossingDetector` (high-pass, ``-k x RMS`` threshold estimated over
  the first ``calibration_s`` seconds, refractory period); each crossing is an event stamped
  at its sample time. No bin is emitted during the calibration (``calibration_samples``).

The bin grid: bin ``k`` covers ``(t_k - bin_s, t_k]`` with ``t_k = k * bin_s`` on the stream
clock (seconds), for every kind, so front-ends on the same clock agree and the bins do not
depend on how the stream is cut into chunks. A timestamp within ``1e-6`` bins of a bin end
belongs to the bin that ends there (float error in ``t0 + i / rate`` stamps). The exception is
``counts`` at exactly the bin rate (one sample per bin, e.g. the per-bin stream of the
simulator): each sample is its own bin, emitted at once, its end time the sample's timestamp.

A bin closes when a sample stamped at or after its end arrives (a sample stamped at the end
closes its own bin, so a publisher that stamps a bin's last sample at the bin end adds no
latency), or through :meth:`FrontEnd.flush` at its end plus ``grace_s`` when the stream goes
quiet. A sample stamped in a closed bin is *late*: counted, never added. Bins without samples
are emitted too (``n_samples == 0``; zeros for events and broadband, a gap for counts).
Accounting: ``samples_in == samples_binned + late + buffered (+ out_of_range)
(+ calibration_samples)``.

Non-finite values (NaN, Inf) are never hidden: a counts channel with one in a bin sums to a
non-finite value in that bin; an events sample with a non-finite index is ``out_of_range``;
a broadband channel's non-finite voltages are held at its last finite value for the filter
(so its state stays finite) and the channel's count in every bin they fall in is NaN. The
decode loop then repairs or drops the bin (:class:`service.decoding.BinDecoder`).
"""

from __future__ import annotations

import logging
import math
from typing import Literal, NamedTuple, get_args

import numpy as np

from streams.crossings import CrossingDetector

logger = logging.getLogger(__name__)

InputKind = Literal["counts", "events", "broadband"]
INPUT_KINDS: tuple[str, ...] = get_args(InputKind)
INPUT_KIND_KEY = "input_kind"
"""``desc`` key in which our publishers name the input kind of a neural stream."""
NEURAL_CHANNELS_KEY = "neural_channels"
"""``desc`` key giving the population size of an events stream (its one channel is an index)."""

BROADBAND_MIN_RATE_HZ = 5000.0
_EDGE_TOLERANCE = 1e-6  # in bins
_ONE_SAMPLE = np.ones(1, dtype=np.int64)  # n_samples of a one-sample bin (read only)
_ONE_SAMPLE.flags.writeable = False
_MAX_BUFFERED = 8192  # samples held before they are processed anyway


class Bins(NamedTuple):
    """Closed bins, oldest first."""

    data: np.ndarray
    """(n, C) float64 counts per bin and channel."""
    end_times: np.ndarray
    """(n,) float64 bin end times, stream-clock seconds."""
    n_samples: np.ndarray
    """(n,) int64 stream samples (events for ``events``) binned into each bin."""

    @property
    def n_bins(self) -> int:
        """Number of bins in this batch."""
        return int(self.end_times.shape[0])


def input_kind_of(
    nominal_srate: float,
    channel_format: str,
    n_stream_channels: int,
    description: dict[str, str],
    bin_s: float,
) -> InputKind:
    """The input kind a stream's metadata implies.

    The ``desc`` key ``input_kind`` (written by our publishers) wins. Otherwise: nominal rate
    0 with one integer channel -> ``events``; a float stream at >= 5 kHz -> ``broadband``;
    anything else -> ``counts``. Raises ValueError for an unknown ``input_kind`` or a regular
    counts stream slower than the bin rate.
    """
    named = description.get(INPUT_KIND_KEY)
    if named is not None:
        if named not in INPUT_KINDS:
            raise ValueError(
                f"stream desc says {INPUT_KIND_KEY}={named!r}; expected one of "
                f"{', '.join(INPUT_KINDS)} (or pass --input)"
            )
        return named  # type: ignore[return-value]
    integer = channel_format.startswith("int")
    if nominal_srate == 0:
        return "events" if n_stream_channels == 1 and integer else "counts"
    if nominal_srate >= BROADBAND_MIN_RATE_HZ and not integer:
        return "broadband"
    if nominal_srate * bin_s < 1 - _EDGE_TOLERANCE:
        raise ValueError(
            f"a {nominal_srate:g} Hz counts stream is slower than the {1 / bin_s:g} Hz bin "
            f"rate; use bins of at least {1 / nominal_srate:g} s"
        )
    return "counts"


class FrontEnd:
    """Turn a native-rate stream into causal bins (see the module docstring).

    Args:
        kind: ``"counts"``, ``"events"`` or ``"broadband"``.
        bin_s: bin width, seconds.
        n_channels: the model's channel count (the width of the bins).
        sample_rate_hz: the stream's nominal rate (0 for irregular streams); broadband needs
            it, and counts at exactly ``1 / bin_s`` are binned one sample per bin.
        grace_s: how long after its end a bin waits for late samples when the stream is quiet.
        threshold_k, refractory_s, calibration_s: broadband threshold crossing (see
            :class:`streams.crossings.CrossingDetector`).
    """

    def __init__(
        self,
        kind: InputKind,
        bin_s: float,
        n_channels: int,
        *,
        sample_rate_hz: float,
        grace_s: float = 0.005,
        threshold_k: float = 4.5,
        refractory_s: float = 0.001,
        calibration_s: float = 2.0,
    ) -> None:
        if kind not in INPUT_KINDS:
            raise ValueError(f"input kind {kind!r} is unknown; use one of {INPUT_KINDS}")
        bin_s, rate, grace_s = float(bin_s), float(sample_rate_hz), float(grace_s)
        if not math.isfinite(bin_s) or bin_s <= 0:
            raise ValueError(f"bin_s={bin_s!r} must be a finite number of seconds > 0")
        if int(n_channels) != n_channels or n_channels < 1:
            raise ValueError(f"n_channels={n_channels!r} must be a positive integer")
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"sample_rate_hz={rate!r} must be >= 0 (0: irregular stream)")
        if not math.isfinite(grace_s) or grace_s < 0:
            raise ValueError(f"grace_s={grace_s!r} must be >= 0 seconds")
        self.kind: InputKind = kind
        self.bin_s = bin_s
        self.n_channels = int(n_channels)
        self.sample_rate_hz = rate
        self.grace_s = grace_s
        self.per_sample_bins = kind == "counts" and abs(rate * bin_s - 1) <= _EDGE_TOLERANCE
        self._detector: CrossingDetector | None = None
        if kind == "broadband":
            if rate <= 0:
                raise ValueError("a broadband stream needs its sample_rate_hz (> 0)")
            self._detector = CrossingDetector(
                self.n_channels,
                rate,
                threshold_k=threshold_k,
                refractory_s=refractory_s,
                calibration_s=calibration_s,
            )
        self._width = 1 if kind == "events" else self.n_channels  # stream channels
        self._held = np.zeros(self.n_channels)  # broadband: last finite voltage per channel
        self._next_k: int | None = None  # oldest open bin; None before the first sample
        self._sums = np.zeros((0, self.n_channels))  # open bins _next_k, _next_k + 1, ...
        self._counts = np.zeros(0, dtype=np.int64)
        self._last_stamp = -math.inf  # per-sample bins: newest emitted
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []  # chunks not yet processed
        self._buffered = 0
        self._counters = dict.fromkeys(
            ("samples_in", "samples_binned", "late", "bins_emitted", "empty_bins"), 0
        )
        if kind == "events":
            self._counters["out_of_range"] = 0
        if kind == "broadband":
            self._counters.update(crossings=0, calibration_samples=0)

    # --- public ---------------------------------------------------------------------------

    @property
    def thresholds(self) -> np.ndarray | None:
        """Broadband: (C,) crossing thresholds once calibrated, else None."""
        return None if self._detector is None else self._detector.thresholds

    @property
    def next_close(self) -> float | None:
        """Stream time at which :meth:`flush` closes the oldest open bin (end + grace); None
        when no bin is open (before the first binned sample, or one sample per bin)."""
        if self._next_k is None:
            return None
        return self._next_k * self.bin_s + self.grace_s

    def counters(self) -> dict[str, int]:
        """Samples in, binned, late and ``buffered`` (not yet processed, see :meth:`feed`);
        bins emitted and empty; per kind ``out_of_range`` (events), ``crossings`` and
        ``calibration_samples`` (broadband)."""
        return {**self._counters, "buffered": self._buffered}

    def feed(self, data: np.ndarray, timestamps: np.ndarray) -> Bins:
        """Add a chunk (``data`` (n, stream channels), ``timestamps`` (n,) seconds, arrival
        order); return the bins it closed, oldest first.

        The chunk is copied. Counts and events are summed as they come, so a bin's closing
        sample costs one addition. Broadband samples are processed once a bin can close (a
        sample stamped at or after the oldest open bin's end), a sample is late, at
        :meth:`flush`, or every ``_MAX_BUFFERED`` samples: no bin closes later, and small
        chunks (e.g. 1 ms of 30 kHz) cost one filter call per bin, not one per chunk. The
        bins do not depend on the chunking.
        """
        data, stamps = self._checked(data, timestamps)
        n = stamps.shape[0]
        self._counters["samples_in"] += n
        if n == 0:
            return self._no_bins()
        if self.per_sample_bins:
            return self._feed_per_sample(data, stamps)
        if n == 1 and self._detector is None and self._next_k is not None:
            return self._feed_one(data[0], float(stamps[0]))
        self._buffer.append((data.copy(), stamps.copy()))
        self._buffered += n
        if self._detector is None or self._next_k is None:
            ready = self._detector is None  # summed at once; broadband: the first sample
        else:  # a bin can close, or a sample is late (counted at once)
            newest, oldest = stamps.max() / self.bin_s, stamps.min() / self.bin_s
            ready = newest >= self._next_k - _EDGE_TOLERANCE
            ready |= oldest <= self._next_k - 1 + _EDGE_TOLERANCE
        if ready or self._buffered >= _MAX_BUFFERED:
            return self._process_buffer()
        return self._no_bins()

    def flush(self, now: float) -> Bins:
        """Close every open bin whose end + ``grace_s`` <= ``now`` (stream-clock seconds)."""
        now = float(now)
        if not math.isfinite(now):
            raise ValueError(f"now={now!r} must be a finite time in seconds")
        closed = self._process_buffer()
        if self._next_k is None:
            return closed
        last = math.floor((now - self.grace_s) / self.bin_s + _EDGE_TOLERANCE)
        return _joined(closed, self._emit_before(last + 1))

    # --- internals ------------------------------------------------------------------------

    def _checked(self, data: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        data = np.asarray(data)
        stamps = np.asarray(timestamps, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self._width:
            raise ValueError(
                f"data has shape {data.shape}; a {self.kind} front-end expects (n, {self._width})"
            )
        if stamps.shape != (data.shape[0],):
            raise ValueError(
                f"timestamps has shape {stamps.shape}; expected ({data.shape[0]},), one per sample"
            )
        if not np.isfinite(stamps).all():
            raise ValueError("timestamps must be finite (got NaN or inf)")
        return data, stamps

    def _process_buffer(self) -> Bins:
        """Bin the buffered samples; return the bins they closed."""
        if not self._buffer:
            return self._no_bins()
        if len(self._buffer) == 1:
            data, stamps = self._buffer[0]
        else:
            data = np.concatenate([d for d, _ in self._buffer])
            stamps = np.concatenate([t for _, t in self._buffer])
        self._buffer.clear()
        self._buffered = 0
        bad = None
        if self._detector is not None:
            data, bad = self._held_finite(data)
            found = self._detector.process(data)
            start = found.first_detecting
            self._counters["calibration_samples"] += start
            stamps = stamps[start:]
            if stamps.shape[0] == 0:
                return self._no_bins()
            rows, channels = found.sample - start, found.channel
            bad = None if bad is None else bad[start:]
        else:
            rows, channels = None, None
        k, closes = self._bin_index(stamps)
        if self._next_k is None:
            self._next_k = int(k[0])
        reached = np.maximum.accumulate(np.concatenate([[self._next_k], closes[:-1]]))
        late = k < reached
        n_late = int(late.sum())
        if n_late:
            self._counters["late"] += n_late
            logger.debug("%d late samples (bins up to %d closed)", n_late, self._next_k - 1)
        self._add(k, late, data, rows, channels)
        if bad is not None:  # broadband channels with non-finite voltage: NaN in their bins
            hit = bad & ~late[:, None]
            sample, channel = np.nonzero(hit)
            if sample.size:
                offsets = k[sample] - self._next_k
                self._grow(int(offsets.max()) + 1)
                self._sums[offsets, channel] = np.nan
        return self._emit_before(max(self._next_k, int(closes.max())))

    def _feed_one(self, sample: np.ndarray, stamp: float) -> Bins:
        """One counts or events sample (the live case: a 1 kHz inlet takes them one by one),
        binned as :meth:`_process_buffer` would, in scalar arithmetic: the same bins and
        counters, far fewer array passes on the path from a bin's closing sample to its
        decode."""
        assert self._next_k is not None
        k, closes = self._bin_index_one(stamp)
        if k < self._next_k:
            self._counters["late"] += 1
            logger.debug("1 late sample (bins up to %d closed)", self._next_k - 1)
        else:
            self._add_one(k - self._next_k, sample)
        return self._emit_before(max(self._next_k, closes))

    def _add_one(self, offset: int, sample: np.ndarray) -> None:
        """:meth:`_add` for one sample that is not late, ``offset`` bins after the oldest open
        one: its counts, or its event (an index truncated as the array path does)."""
        if self.kind == "counts":
            self._grow(offset + 1)
            self._sums[offset] += sample
        else:
            index = sample[0]
            channel = int(index) if math.isfinite(index) else -1
            if not 0 <= channel < self.n_channels:
                self._counters["out_of_range"] += 1
                return
            self._grow(offset + 1)
            self._sums[offset, channel] += 1
        self._counts[offset] += 1
        self._counters["samples_binned"] += 1

    def _held_finite(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Broadband ``data`` with each non-finite value replaced by its channel's last finite
        one, and the mask of those values (None when all are finite)."""
        if math.isfinite(data.sum()):
            self._held = data[-1].astype(np.float64)
            return data, None
        bad = ~np.isfinite(data)
        filled = data.astype(np.float64)
        index = np.arange(data.shape[0])
        for c in np.flatnonzero(bad.any(axis=0)):
            last_good = np.maximum.accumulate(np.where(bad[:, c], -1, index))
            held = filled[np.maximum(last_good, 0), c]
            filled[:, c] = np.where(last_good >= 0, held, self._held[c])
        self._held = filled[-1].copy()
        return filled, bad

    def _bin_index(self, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bin ``k`` of each stamp (``t`` in ``(t_k - bin_s, t_k]``) and the first bin still
        open after it (``k + 1`` for a stamp at the bin end, else ``k``)."""
        x = stamps / self.bin_s
        k = np.ceil(x - _EDGE_TOLERANCE).astype(np.int64)
        return k, k + (x >= k - _EDGE_TOLERANCE)

    def _bin_index_one(self, stamp: float) -> tuple[int, int]:
        """:meth:`_bin_index` of one stamp, in Python arithmetic (numpy on a scalar costs
        ten times more, on the live path)."""
        x = stamp / self.bin_s
        k = math.ceil(x - _EDGE_TOLERANCE)
        return k, k + (x >= k - _EDGE_TOLERANCE)

    def _add(
        self,
        k: np.ndarray,
        late: np.ndarray,
        data: np.ndarray,
        rows: np.ndarray | None,
        channels: np.ndarray | None,
    ) -> None:
        """Add the samples not ``late``: their values (counts) or their events (events: the
        sample itself, broadband: the crossings at ``rows``, ``channels``)."""
        assert self._next_k is not None
        offsets = k - self._next_k  # >= 0 where not late
        keep = ~late
        if self.kind == "events":
            index = data[:, 0]
            valid = np.isfinite(index) if index.dtype.kind == "f" else np.ones(len(index), bool)
            channels = np.where(valid, index, -1).astype(np.int64)
            inside = (channels >= 0) & (channels < self.n_channels)
            self._counters["out_of_range"] += int((keep & ~inside).sum())
            keep &= inside
        if not keep.any():
            return
        needed = int(offsets[keep].max()) + 1
        self._grow(needed)
        self._counts[:needed] += np.bincount(offsets[keep], minlength=needed)
        self._counters["samples_binned"] += int(keep.sum())
        if self.kind == "counts":
            np.add.at(self._sums, offsets[keep], data[keep])
            return
        assert channels is not None
        if rows is None:  # events: one event per sample
            event_bins, event_channels = offsets[keep], channels[keep]
        else:  # broadband: the crossings of the samples kept
            ok = keep[rows]
            event_bins, event_channels = offsets[rows[ok]], channels[ok]
            self._counters["crossings"] += int(ok.sum())
        flat = event_bins * self.n_channels + event_channels
        counts = np.bincount(flat, minlength=needed * self.n_channels)
        self._sums[:needed] += counts.reshape(needed, self.n_channels)

    def _grow(self, n: int) -> None:
        have = self._counts.shape[0]
        if n > have:
            self._sums = np.concatenate([self._sums, np.zeros((n - have, self.n_channels))])
            self._counts = np.concatenate([self._counts, np.zeros(n - have, np.int64)])

    def _emit_before(self, stop_k: int) -> Bins:
        """Emit bins ``_next_k <= k < stop_k`` (empty ones too) and advance."""
        assert self._next_k is not None
        n = stop_k - self._next_k
        if n <= 0:
            return self._no_bins()
        self._grow(n)
        out = Bins(
            data=self._sums[:n].copy(),
            end_times=np.arange(self._next_k, stop_k) * self.bin_s,
            n_samples=self._counts[:n].copy(),
        )
        self._sums = self._sums[n:]
        self._counts = self._counts[n:]
        self._next_k = stop_k
        self._counters["bins_emitted"] += n
        self._counters["empty_bins"] += int((out.n_samples == 0).sum())
        return out

    def _feed_per_sample(self, data: np.ndarray, stamps: np.ndarray) -> Bins:
        """One sample per bin: emit each at once; a stamp not after the newest is late."""
        if stamps.shape[0] == 1 and stamps[0] > self._last_stamp:  # the live case, in order
            self._last_stamp = float(stamps[0])
            self._counters["samples_binned"] += 1
            self._counters["bins_emitted"] += 1
            return Bins(data.astype(np.float64), stamps, _ONE_SAMPLE)
        newest = np.maximum.accumulate(np.concatenate([[self._last_stamp], stamps[:-1]]))
        keep = stamps > newest
        n_late = int((~keep).sum())
        if n_late:
            self._counters["late"] += n_late
            logger.debug("%d late samples (not after %.6f)", n_late, self._last_stamp)
        self._last_stamp = max(self._last_stamp, float(stamps.max()))
        out = Bins(
            data=data[keep].astype(np.float64),
            end_times=stamps[keep],
            n_samples=np.ones(int(keep.sum()), dtype=np.int64),
        )
        self._counters["samples_binned"] += out.n_bins
        self._counters["bins_emitted"] += out.n_bins
        return out

    def _no_bins(self) -> Bins:
        return Bins(
            data=np.zeros((0, self.n_channels)),
            end_times=np.zeros(0),
            n_samples=np.zeros(0, dtype=np.int64),
        )


def _joined(first: Bins, second: Bins) -> Bins:
    """``first`` then ``second`` as one batch."""
    if not first.n_bins:
        return second
    if not second.n_bins:
        return first
    return Bins(*(np.concatenate(pair) for pair in zip(first, second, strict=True)))


# --- offline ------------------------------------------------------------------------------


def bin_recording(
    front: FrontEnd,
    data: np.ndarray,
    timestamps: np.ndarray,
    *,
    until: float | None = None,
    chunk: int = 1 << 16,
) -> Bins:
    """Every bin ``front`` closes on a whole recording (``data`` (n, stream channels),
    ``timestamps`` (n,) seconds, arrival order), fed ``chunk`` samples at a time; with
    ``until``, then flushed at that stream time (:meth:`FrontEnd.flush`). The offline path
    of the live bins: :func:`streams.xdf.session_from_xdf` and :mod:`streams.nwb` use it."""
    n = int(np.shape(timestamps)[0])
    parts = [front.feed(data[a : a + chunk], timestamps[a : a + chunk]) for a in range(0, n, chunk)]
    if until is not None:
        parts.append(front.flush(until))
    if not parts:
        return front._no_bins()
    return Bins(*(np.concatenate([getattr(p, f) for p in parts]) for f in Bins._fields))
