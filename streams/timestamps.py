"""Timing of a regular stream from its timestamps alone: chunks, effective rate, gaps, re-stamping.

Pure NumPy on a ``(n,)`` float64 array of timestamps (seconds) and the declared nominal
rate (Hz, > 0); no LSL, no files. The XDF inspection and session builder use it, and a live
inlet can run it over its recent timestamps.

**Chunk stamping.** Many devices hand samples over in chunks and stamp every sample of a
chunk with its arrival time: the stamps within a chunk lie microseconds apart, and the
chunks one chunk duration apart (a wearable ECG at 128 Hz: 8 samples per ~62.5 ms). Read
sample by sample, such a stream shows one "gap" per chunk and a rate of hundreds of kHz.
Here a *chunk* is a run of samples whose successive stamps are less than
:data:`CHUNK_FRACTION` nominal periods apart; a stream is *chunk-stamped* when most of its
intervals are that short. Its timing is then measured per chunk, at the stamp of each
chunk's last sample (liblsl's ``push_chunk`` convention: the stamp belongs to the last
sample).

**Gaps.** In a sample-stamped stream a gap is an interval longer than :data:`GAP_PERIODS`
nominal periods; it adds ``interval - period`` seconds. In a chunk-stamped stream the
arrival jitter of a chunk (tens of ms) is far larger than a period, so intervals cannot be
used. Instead the *lag* of chunk ``j`` is ``L_j = rate * T_j - e_j`` (samples; ``T_j`` the
stamp and ``e_j`` the index of its last sample): delivery delays only ever raise it, lost
samples raise it for good. A gap is a boundary where the lowest lag of the next
:data:`ENVELOPE_CHUNKS` chunks exceeds the lowest lag of the previous ones by more than
half a chunk (the median chunk size; at least :data:`GAP_PERIODS` samples): devices lose
whole chunks, and near the ends of a recording fewer chunks bound the lag. Adjacent
flagged boundaries are one gap, placed at its longest interval, with ``round(step)``
missing samples and ``step / rate`` seconds.

**Effective rate.** Samples per second over the intervals that are not gaps (so breaks do
not bias it): for chunk-stamped streams, the samples of each chunk over the interval since
the previous chunk's stamp.

**Re-stamping.** :func:`restamp` replaces the stamps of a chunk-stamped stream by a line
through its chunk stamps, one straight line per run between gaps (least squares against the
sample index, so its slope is the measured period): strictly increasing, one period apart,
and on average at the chunk stamps. The largest shift applied is returned with the stamps.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "CHUNK_FRACTION",
    "ENVELOPE_CHUNKS",
    "GAP_PERIODS",
    "Gaps",
    "LiveChunkStamps",
    "Restamped",
    "StreamTiming",
    "analyse_timing",
    "chunk_starts",
    "effective_rate",
    "find_gaps",
    "is_chunk_stamped",
    "restamp",
]

CHUNK_FRACTION = 0.1  # stamps closer than this many nominal periods share a chunk
GAP_PERIODS = 1.5  # an interval (or lag step) beyond this many periods is a gap
ENVELOPE_CHUNKS = 16  # chunks on each side of a boundary whose lowest lag is compared


class Gaps(NamedTuple):
    """Gaps of a stream: ``index[i]`` is the first sample after gap ``i``."""

    index: np.ndarray  # (G,) int
    missing: np.ndarray  # (G,) int, samples missing (rounded)
    seconds: np.ndarray  # (G,) float, time added beyond the nominal interval
    intervals: np.ndarray  # (G,) float, the stamp interval at each gap, seconds

    @property
    def count(self) -> int:
        return int(self.index.shape[0])


class Restamped(NamedTuple):
    """Stamps after :func:`restamp` and the correction applied."""

    stamps: np.ndarray  # (n,) float64 seconds
    changed: bool  # False when the stream was not chunk-stamped (stamps returned as given)
    max_shift_s: float  # largest |new - old| over all samples


class StreamTiming(NamedTuple):
    """Everything :func:`analyse_timing` measures about one regular stream."""

    chunk_stamped: bool
    n_chunks: int  # chunks found (n for a sample-stamped stream)
    median_chunk: float  # samples per chunk (1 for a sample-stamped stream)
    effective_rate: float | None  # Hz; None without a usable interval
    gaps: Gaps
    n_backward: int  # stamps earlier than their predecessor


def _period(nominal_srate: float) -> float:
    if not nominal_srate > 0:
        raise ValueError(f"nominal_srate must be > 0 Hz for timing analysis, got {nominal_srate}")
    return 1.0 / nominal_srate


def chunk_starts(stamps: np.ndarray, nominal_srate: float) -> np.ndarray:
    """Index of the first sample of every chunk (``[0, ...]``; empty for no samples)."""
    stamps = np.asarray(stamps, dtype=np.float64)
    if stamps.size == 0:
        return np.zeros(0, dtype=np.intp)
    close = np.diff(stamps) < CHUNK_FRACTION * _period(nominal_srate)
    return np.flatnonzero(np.r_[True, ~close])


def is_chunk_stamped(stamps: np.ndarray, nominal_srate: float) -> bool:
    """True when most intervals are shorter than :data:`CHUNK_FRACTION` nominal periods."""
    intervals = np.diff(np.asarray(stamps, dtype=np.float64))
    if intervals.size == 0:
        return False
    return bool(np.mean(intervals < CHUNK_FRACTION * _period(nominal_srate)) > 0.5)


def _chunk_ends(stamps: np.ndarray, nominal_srate: float) -> np.ndarray:
    starts = chunk_starts(stamps, nominal_srate)
    return np.r_[starts[1:] - 1, stamps.shape[0] - 1]


def _ends(stamps: np.ndarray, nominal_srate: float, chunked: bool) -> np.ndarray:
    """Index of the sample whose stamp times each chunk (every sample when not chunked)."""
    return _chunk_ends(stamps, nominal_srate) if chunked else np.arange(stamps.shape[0])


def find_gaps(stamps: np.ndarray, nominal_srate: float, *, chunked: bool | None = None) -> Gaps:
    """Gaps of a regular stream (see the module docstring); ``chunked`` defaults to
    :func:`is_chunk_stamped`."""
    stamps = np.asarray(stamps, dtype=np.float64)
    period = _period(nominal_srate)
    chunked = is_chunk_stamped(stamps, nominal_srate) if chunked is None else chunked
    if not chunked:
        intervals = np.diff(stamps)
        at = np.flatnonzero(intervals > GAP_PERIODS * period)
        seconds = intervals[at] - period
        missing = np.rint(seconds / period).astype(np.int64)
        return Gaps(at + 1, missing, seconds, intervals[at])
    ends = _chunk_ends(stamps, nominal_srate)
    threshold = max(GAP_PERIODS, float(np.median(np.diff(np.r_[-1, ends]))) / 2)
    lag = (stamps[ends] - stamps[0]) / period - ends
    w = ENVELOPE_CHUNKS
    ahead = sliding_window_view(np.r_[lag, np.full(w - 1, np.inf)], w).min(axis=1)
    behind = sliding_window_view(np.r_[np.full(w - 1, np.inf), lag], w).min(axis=1)
    step = ahead[1:] - behind[:-1]  # step[j]: boundary between chunk j and chunk j + 1
    flagged = step > threshold
    runs = np.flatnonzero(np.diff(np.r_[False, flagged, False].astype(np.int8)))
    chunk_intervals = np.diff(stamps[ends])
    index, missing, seconds, intervals = [], [], [], []
    for first, stop in zip(runs[::2], runs[1::2], strict=True):
        at = first + int(np.argmax(chunk_intervals[first:stop]))
        size = float(step[first:stop].max())
        index.append(ends[at] + 1)
        missing.append(round(size))
        seconds.append(size * period)
        intervals.append(chunk_intervals[at])
    return Gaps(
        np.asarray(index, dtype=np.intp),
        np.asarray(missing, dtype=np.int64),
        np.asarray(seconds, dtype=np.float64),
        np.asarray(intervals, dtype=np.float64),
    )


def effective_rate(
    stamps: np.ndarray, nominal_srate: float, *, gaps: Gaps | None = None
) -> float | None:
    """Samples per second over the intervals that are not gaps (Hz); None when no interval
    is positive. ``gaps`` defaults to :func:`find_gaps`."""
    stamps = np.asarray(stamps, dtype=np.float64)
    chunked = is_chunk_stamped(stamps, nominal_srate)
    gaps = find_gaps(stamps, nominal_srate, chunked=chunked) if gaps is None else gaps
    ends = _ends(stamps, nominal_srate, chunked)
    intervals = np.diff(stamps[ends])
    samples = np.diff(ends)
    keep = (intervals > 0) & ~np.isin(ends[:-1] + 1, gaps.index)  # a gap follows ends[k]
    if not keep.any():
        return None
    return float(samples[keep].sum() / intervals[keep].sum())


def restamp(stamps: np.ndarray, nominal_srate: float) -> Restamped:
    """Even stamps for a chunk-stamped stream (see the module docstring); any other stream's
    stamps are returned unchanged."""
    stamps = np.asarray(stamps, dtype=np.float64)
    if not is_chunk_stamped(stamps, nominal_srate):
        return Restamped(stamps, False, 0.0)
    period = _period(nominal_srate)
    ends = _chunk_ends(stamps, nominal_srate)
    bounds = np.r_[0, find_gaps(stamps, nominal_srate, chunked=True).index, stamps.shape[0]]
    out = np.empty_like(stamps)
    for start, stop in itertools.pairwise(bounds):
        mine = ends[(ends >= start) & (ends < stop)]
        index = np.arange(start, stop)
        if mine.size >= 2:
            slope, intercept = np.polyfit(mine - start, stamps[mine] - stamps[mine[0]], 1)
            out[start:stop] = stamps[mine[0]] + intercept + slope * (index - start)
        else:
            out[start:stop] = stamps[stop - 1] - (stop - 1 - index) * period
    return Restamped(out, True, float(np.max(np.abs(out - stamps))))


def analyse_timing(stamps: np.ndarray, nominal_srate: float) -> StreamTiming:
    """Chunking, effective rate, gaps and backward steps of one regular stream."""
    stamps = np.asarray(stamps, dtype=np.float64)
    chunked = is_chunk_stamped(stamps, nominal_srate)
    gaps = find_gaps(stamps, nominal_srate, chunked=chunked)
    sizes = np.diff(np.r_[chunk_starts(stamps, nominal_srate), stamps.shape[0]])
    return StreamTiming(
        chunk_stamped=chunked,
        n_chunks=int(sizes.size) if chunked else int(stamps.shape[0]),
        median_chunk=float(np.median(sizes)) if chunked else 1.0,
        effective_rate=effective_rate(stamps, nominal_srate, gaps=gaps),
        gaps=gaps,
        n_backward=int((np.diff(stamps) < 0).sum()),
    )


DETECT_INTERVALS = 32  # intervals a live stream is watched before it is judged chunk-stamped


class LiveChunkStamps:
    """Causal handling of a live regular stream that may be chunk-stamped.

    The first :data:`DETECT_INTERVALS` intervals decide (:func:`is_chunk_stamped`); after that
    a sample-stamped stream's stamps pass unchanged. In a chunk-stamped stream (and, while
    undecided, in runs of two or more samples) a run of stamps closer than
    :data:`CHUNK_FRACTION` periods is one chunk, stamped at its last sample (liblsl's
    ``push_chunk`` convention). Its samples are spread back from that stamp one nominal period
    apart, as the first samples of a chunk of the median size (or of their own number, if
    larger), so a chunk cut by a pull gets the same stamps; a chunk continued by a later pull
    goes on one period after the previous stamp, and every stamp is at least one period after
    its predecessor. :attr:`gap_s`, the step above which a gap is counted, is infinite while
    judging, ``gap_periods`` periods for a sample-stamped stream, and half the median chunk
    more for a chunk-stamped one, so the arrival jitter of a chunk is not read as a gap; a
    lost chunk still is.

    Args:
        nominal_srate: the stream's declared rate (Hz, > 0).
        gap_periods: a step above this many periods is a gap (sample-stamped streams).
    """

    def __init__(self, nominal_srate: float, gap_periods: float = GAP_PERIODS) -> None:
        self.period = _period(nominal_srate)
        self.rate = float(nominal_srate)
        self.chunked: bool | None = None  # None: not judged yet
        self.gap_s = np.inf  # a step (s) above this is a gap; none while judging
        self._gap_periods = float(gap_periods)
        self._seen: list[np.ndarray] = []  # stamps held for the judgement
        self._chunk = 1  # median chunk size (samples), once judged
        self._prev_raw = -np.inf  # the latest raw stamp
        self._prev = -np.inf  # the latest stamp given out

    def __call__(self, stamps: np.ndarray) -> np.ndarray:
        """The stamps (s) to use for ``stamps`` (the next pull, in arrival order)."""
        if self.chunked is False:
            return stamps
        raw = np.asarray(stamps, dtype=np.float64)
        out = self._spread(raw, singles=bool(self.chunked))
        if self.chunked is None:
            self._judge(raw)
        return out

    def _judge(self, stamps: np.ndarray) -> None:
        self._seen.append(stamps.copy())
        seen = np.concatenate(self._seen)
        if seen.size <= DETECT_INTERVALS:
            return
        self._seen.clear()
        self.chunked = is_chunk_stamped(seen, self.rate)
        self.gap_s = self._gap_periods * self.period
        if self.chunked:
            sizes = np.diff(np.r_[chunk_starts(seen, self.rate), seen.size])
            self._chunk = round(float(np.median(sizes)))
            self.gap_s = (self._gap_periods + 0.5 * self._chunk) * self.period

    def _spread(self, raw: np.ndarray, singles: bool) -> np.ndarray:
        """Chunks spread back from their stamps; a lone sample moved only when ``singles``."""
        limit = CHUNK_FRACTION * self.period
        same = np.diff(raw, prepend=self._prev_raw) < limit  # continues the previous chunk
        out = np.empty_like(raw)
        prev = self._prev
        i, n = 0, raw.shape[0]
        while i < n:
            end = i + 1
            while end < n and same[end]:
                end += 1
            m = end - i
            following = prev + self.period * np.arange(1, m + 1)  # one period after prev
            if same[i]:  # the chunk began in an earlier pull: keep going from there
                stamps = following
            elif m == 1 and not singles:
                stamps = raw[i:end]
            else:  # back from the chunk's stamp, but never before a period after prev
                size = max(m, self._chunk)  # the chunk may go on in the next pull
                back = raw[i] - self.period * np.arange(size - 1, size - 1 - m, -1)
                stamps = np.maximum(back, following)
            out[i:end] = stamps
            prev = float(stamps[-1])
            i = end
        self._prev_raw, self._prev = float(raw[-1]), prev
        return out
