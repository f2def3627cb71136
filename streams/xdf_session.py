"""Build a :class:`streams.session.Session` from XDF streams: neural samples binned by the live
input front-end, kinematics and targets interpolated to the bin times, every dropped bin
counted by cause in an :class:`XdfSessionReport`."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from streams.frontend import (
    INPUT_KIND_KEY,
    NEURAL_CHANNELS_KEY,
    FrontEnd,
    InputKind,
    bin_recording,
    input_kind_of,
)
from streams.session import Session, SessionError
from streams.timestamps import restamp
from streams.xdf_read import StreamHeader, XdfStream, existing_xdf, load_chosen, resolve_one
from streams.xdf_writer import XdfError

__all__ = ["XdfSessionReport", "interpolate_at", "session_from_xdf", "session_from_xdf_with_report"]

logger = logging.getLogger(__name__)

# A bin edge closer than this fraction of a bin to a timestamp counts as on the edge.
_EDGE_TOLERANCE = 1e-6
_FEED_CHUNK = 1 << 16  # samples per front-end call when binning a recording


@dataclass(frozen=True)
class XdfSessionReport:
    """How :func:`session_from_xdf` built a Session; every dropped bin is counted by cause.

    Attributes:
        neural_stream, kinematics_stream, targets_stream: names of the streams used.
        bin_s: bin width in seconds.
        n_neural_samples: samples in the neural stream.
        n_bins: bins in the session.
        dropped_empty: bins without any neural sample (gaps in a regular neural stream).
        dropped_incomplete: bins the neural stream ends inside of (the last) or, for a
            regular stream, starts inside of (the first, unless full).
        dropped_outside: bins outside the kinematics or targets stream's time range (never
            extrapolated).
        dropped_in_gaps: bins inside a gap of the kinematics or targets stream longer than
            ``max_gap_s`` (never interpolated across).
        n_short_bins: kept bins with fewer neural samples than ``bin_s`` holds (part of the
            bin fell into a gap; their counts are low).
        restamped: chunk-stamped streams whose timestamps were replaced by even ones
            (:func:`streams.timestamps.restamp`), name -> largest shift in seconds; the
            raw timestamps stay in :attr:`XdfStream.raw_time_stamps`.
    """

    neural_stream: str
    kinematics_stream: str | None
    targets_stream: str | None
    bin_s: float
    n_neural_samples: int
    n_bins: int
    dropped_empty: int
    dropped_incomplete: int
    dropped_outside: int
    dropped_in_gaps: int
    n_short_bins: int
    restamped: dict[str, float] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return (
            self.dropped_empty
            + self.dropped_incomplete
            + self.dropped_outside
            + self.dropped_in_gaps
        )


def session_from_xdf(
    path: str | os.PathLike[str],
    neural: str,
    kinematics: str | None = None,
    targets: str | None = None,
    bin_s: float | None = None,
    *,
    max_gap_s: float | None = None,
    synchronize_clocks: bool = True,
    allow_truncated: bool = False,
    input_kind: InputKind | None = None,
) -> Session:
    """Build a Session from streams of an XDF file (see :func:`session_from_xdf_with_report`)."""
    session, _ = session_from_xdf_with_report(
        path,
        neural,
        kinematics,
        targets,
        bin_s,
        max_gap_s=max_gap_s,
        synchronize_clocks=synchronize_clocks,
        allow_truncated=allow_truncated,
        input_kind=input_kind,
    )
    return session


def session_from_xdf_with_report(
    path: str | os.PathLike[str],
    neural: str,
    kinematics: str | None = None,
    targets: str | None = None,
    bin_s: float | None = None,
    *,
    max_gap_s: float | None = None,
    synchronize_clocks: bool = True,
    allow_truncated: bool = False,
    input_kind: InputKind | None = None,
) -> tuple[Session, XdfSessionReport]:
    """Build a Session from XDF streams chosen by name or type; also say what was dropped.

    Bins come from the numeric ``neural`` stream (clock-synchronized timestamps):

    - ``bin_s=None``: each sample is a bin (timestamps = the sample timestamps, bin width
      1 / nominal rate; the stream must be regular).
    - ``bin_s`` given: the samples go through the live input front-end
      (:class:`streams.frontend.FrontEnd`), so a model calibrated here sees the same bins
      live: causal bins ``(t - bin_s, t]`` ending at whole multiples of ``bin_s``, stamped
      with their end time. ``input_kind`` (default: from the stream's metadata, see
      :func:`streams.frontend.input_kind_of`) says what the samples are: ``counts`` summed,
      ``events`` (one channel index per sample; ``desc/neural_channels`` or the largest
      index + 1 channels) counted, ``broadband`` voltage turned into threshold crossings
      (the first 2 s calibrate the thresholds). The bin the stream ends inside is dropped,
      and for regular streams so are the first bin unless full (the stream started inside
      it) and bins with no sample (data gaps, not silence). A stream at exactly one sample
      per bin is binned one sample per bin, as with ``bin_s=None``.

    ``kinematics`` (K channels) and ``targets`` (2 channels: x, y) are linearly
    interpolated to the bin times. Bins outside their time range are dropped, never
    extrapolated, as are bins inside one of their gaps longer than ``max_gap_s`` (default:
    10 nominal sample periods of that stream; no limit for irregular streams). Kinematics
    labels are the stream's channel labels, else ``ch0``, ``ch1``...; kinematics units are
    the stream's ``desc/channels/channel/unit`` when every channel has one, else unset.

    Raises :class:`XdfStreamNotFoundError` (listing the streams present) for a missing
    stream, :class:`XdfError` for a string-format or empty stream or one with the wrong
    channel count, and SessionError when the data break the Session contract.
    """
    path = existing_xdf(path)
    streams, restamped = _load_streams(
        path,
        {"neural": neural, "kinematics": kinematics, "targets": targets},
        synchronize_clocks=synchronize_clocks,
        allow_truncated=allow_truncated,
    )
    binned = _bin_neural(path, streams["neural"], bin_s, input_kind)
    aligned = _align(path, streams, binned, max_gap_s)
    session = _session(path, streams, binned, aligned)
    report = XdfSessionReport(
        neural_stream=streams["neural"].name,
        kinematics_stream=streams["kinematics"].name if "kinematics" in streams else None,
        targets_stream=streams["targets"].name if "targets" in streams else None,
        bin_s=binned.bin_s,
        n_neural_samples=streams["neural"].n_samples,
        n_bins=session.n_bins,
        dropped_empty=binned.dropped_empty,
        dropped_incomplete=binned.dropped_incomplete,
        dropped_outside=aligned.dropped_outside,
        dropped_in_gaps=aligned.dropped_in_gaps,
        n_short_bins=int((binned.short & aligned.keep).sum()),
        restamped=restamped,
    )
    if report.dropped_total or report.n_short_bins:
        logger.warning(
            "XDF %s: dropped %d bins (%d empty, %d incomplete, %d outside kinematics/targets, "
            "%d in their gaps); %d kept bins are short of samples",
            path,
            report.dropped_total,
            report.dropped_empty,
            report.dropped_incomplete,
            report.dropped_outside,
            report.dropped_in_gaps,
            report.n_short_bins,
        )
    logger.info("XDF %s -> %r", path, session)
    return session, report


def _load_streams(
    path: Path, roles: dict[str, str | None], *, synchronize_clocks: bool, allow_truncated: bool
) -> tuple[dict[str, XdfStream], dict[str, float]]:
    """The stream of each role given (by name or type), checked and re-stamped where
    chunk-stamped; and the re-stamped streams' names with their largest shift, seconds."""
    chosen: dict[str, StreamHeader] = {}

    def choose(headers: list[StreamHeader]) -> set[int]:
        for role, key in roles.items():
            if key is not None:
                chosen[role] = resolve_one(path, headers, key, role)
        return {h.stream_id for h in chosen.values()}

    loaded = {
        s.stream_id: s
        for s in load_chosen(
            path,
            choose,
            synchronize_clocks=synchronize_clocks,
            dejitter=False,
            allow_truncated=allow_truncated,
        )
    }
    streams = {role: loaded[h.stream_id] for role, h in chosen.items()}
    for role, stream in streams.items():
        _check_usable(path, role, stream)
    corrections = {role: _restamped(stream) for role, stream in streams.items()}
    streams = {role: stream for role, (stream, _) in corrections.items()}
    restamped = {
        streams[role].name: shift for role, (_, shift) in corrections.items() if shift is not None
    }
    if "targets" in streams and streams["targets"].channel_count != 2:
        raise XdfError(
            f"targets stream {streams['targets'].describe()} in {path} has "
            f"{streams['targets'].channel_count} channels; targets need 2 (x, y)"
        )
    return streams, restamped


class _Aligned(NamedTuple):
    keep: np.ndarray  # (B,) bins covered by every stream
    resampled: dict[str, np.ndarray]  # role -> (B, K) values at the bin times
    dropped_outside: int
    dropped_in_gaps: int


def _align(
    path: Path, streams: dict[str, XdfStream], binned: _Binned, max_gap_s: float | None
) -> _Aligned:
    """Kinematics and targets at the bin times; bins outside their range or in their gaps
    are dropped (counted by cause)."""
    keep = binned.keep.copy()
    dropped_outside = dropped_in_gaps = 0
    resampled: dict[str, np.ndarray] = {}
    for role in ("kinematics", "targets"):
        if role not in streams:
            continue
        values, inside, in_gap = _resample(path, role, streams[role], binned.times, max_gap_s)
        dropped_outside += int((keep & ~inside).sum())
        keep &= inside
        dropped_in_gaps += int((keep & in_gap).sum())
        keep &= ~in_gap
        resampled[role] = values
    if not keep.any():
        ranges = ", ".join(f"{s.describe()} {_span(s.time_stamps)}" for s in streams.values())
        raise XdfError(
            f"no bin of XDF file {path} is covered by all selected streams ({ranges}); check "
            "that the streams overlap in time"
        )
    return _Aligned(keep, resampled, dropped_outside, dropped_in_gaps)


def _session(
    path: Path, streams: dict[str, XdfStream], binned: _Binned, aligned: _Aligned
) -> Session:
    """The kept bins as a Session, labelled from the streams' headers."""
    neural_stream, keep, resampled = streams["neural"], aligned.keep, aligned.resampled
    # an events stream's one channel (the channel index) labels no column of the bins
    same_channels = binned.counts.shape[1] == neural_stream.channel_count
    channel_labels = _unique_labels(neural_stream) if same_channels else None
    kinematics_labels = kinematics_units = None
    if "kinematics" in streams:
        kin = streams["kinematics"]
        kinematics_labels = _unique_labels(kin) or tuple(f"ch{i}" for i in range(kin.channel_count))
        if kin.channel_units is not None and all(kin.channel_units):  # every unit, or none
            kinematics_units = kin.channel_units
    try:
        return Session(
            neural=binned.counts[keep],
            timestamps=binned.times[keep],
            bin_s=binned.bin_s,
            kinematics=resampled["kinematics"][keep] if "kinematics" in resampled else None,
            kinematics_labels=kinematics_labels,
            targets=resampled["targets"][keep] if "targets" in resampled else None,
            channel_labels=channel_labels,
            kinematics_units=kinematics_units,
        )
    except SessionError as exc:
        raise SessionError(
            f"XDF file {path}, neural stream {neural_stream.describe()}: {exc}"
        ) from None


def _restamped(stream: XdfStream) -> tuple[XdfStream, float | None]:
    """``stream`` with even timestamps if it is regular and chunk-stamped, and the largest
    shift applied in seconds (None when unchanged)."""
    if not stream.is_regular:
        return stream, None
    fixed = restamp(stream.time_stamps, stream.nominal_srate)
    if not fixed.changed:
        return stream, None
    logger.info(
        "stream %s is chunk-stamped: timestamps re-stamped evenly (largest shift %.4f s)",
        stream.describe(),
        fixed.max_shift_s,
    )
    return replace(stream, time_stamps=fixed.stamps), fixed.max_shift_s


def _span(ts: np.ndarray) -> str:
    return f"[{ts.min():.3f}, {ts.max():.3f}] s" if ts.size else "(empty)"


def _check_usable(path: Path, role: str, stream: XdfStream) -> None:
    if stream.is_string:
        raise XdfError(
            f"{role} stream {stream.describe()} in {path} has channel_format 'string'; a "
            f"{role} stream must be numeric"
        )
    if stream.n_samples == 0:
        raise XdfError(f"{role} stream {stream.describe()} in {path} is empty (no samples)")


def _unique_labels(stream: XdfStream) -> tuple[str, ...] | None:
    labels = stream.channel_labels
    if labels is None:
        return None
    if len(set(labels)) != len(labels) or not all(labels):
        logger.info("stream %s has blank or repeated channel labels; not used", stream.name)
        return None
    return labels


class _Binned(NamedTuple):
    times: np.ndarray  # (B,) bin end times
    counts: np.ndarray  # (B, C) float64 sums
    bin_s: float
    keep: np.ndarray  # (B,) bins kept so far
    short: np.ndarray  # (B,) bins with fewer samples than a full bin
    dropped_empty: int
    dropped_incomplete: int


def _bin_neural(
    path: Path, stream: XdfStream, bin_s: float | None, input_kind: InputKind | None
) -> _Binned:
    """The neural stream as bins: one per sample (``bin_s`` None) or through the front-end."""
    ts = stream.time_stamps
    backward = np.flatnonzero(np.diff(ts) < 0)
    if backward.size:
        i = int(backward[0]) + 1
        raise XdfError(
            f"neural stream {stream.describe()} in {path} goes back in time at sample {i} "
            f"({float(ts[i])!r} s after {float(ts[i - 1])!r} s), e.g. after a clock reset; "
            "read it with synchronize_clocks=True or cut the recording there"
        )
    if bin_s is None:
        return _sample_bins(path, stream, input_kind)
    return _front_end_bins(path, stream, bin_s, input_kind)


def _sample_bins(path: Path, stream: XdfStream, input_kind: InputKind | None) -> _Binned:
    """Each sample of a regular counts stream is a bin, 1 / nominal rate wide."""
    if not stream.is_regular:
        raise XdfError(
            f"neural stream {stream.describe()} in {path} is irregular (nominal_srate 0); "
            "pass bin_s to bin its samples"
        )
    named = input_kind or stream.description.get(INPUT_KIND_KEY, "counts")
    if named != "counts":
        raise XdfError(
            f"neural stream {stream.describe()} in {path} carries {named} input; pass "
            "bin_s to bin it"
        )
    none = np.zeros(stream.n_samples, dtype=bool)
    values = np.asarray(stream.time_series, dtype=np.float64)
    return _Binned(stream.time_stamps, values, 1.0 / stream.nominal_srate, ~none, none, 0, 0)


def _front_end_bins(
    path: Path, stream: XdfStream, bin_s: float, input_kind: InputKind | None
) -> _Binned:
    """Bins ``(t - bin_s, t]`` from the live front-end; for a regular stream, empty bins and
    a partial first bin are dropped, and the bin the stream ends inside always is."""
    width = float(bin_s)
    if not math.isfinite(width) or width <= 0:
        raise XdfError(f"bin_s must be a finite number of seconds > 0, got {bin_s!r}")
    ratio = width * stream.nominal_srate  # samples per bin (0 for irregular streams)
    if stream.is_regular and ratio < 1 - _EDGE_TOLERANCE:
        period = 1.0 / stream.nominal_srate
        raise XdfError(
            f"bin_s={width:g} s is shorter than the {period:g} s sample period of neural "
            f"stream {stream.describe()}; use bin_s >= {period:g} or bin_s=None"
        )
    try:
        kind = input_kind or input_kind_of(
            stream.nominal_srate,
            stream.channel_format,
            stream.channel_count,
            stream.description,
            width,
        )
    except ValueError as exc:
        raise XdfError(f"neural stream {stream.describe()} in {path}: {exc}") from None
    front = FrontEnd(
        kind,
        width,
        _model_channels(path, stream, kind),
        sample_rate_hz=stream.nominal_srate,
        grace_s=0.0,
    )
    bins = bin_recording(
        front, np.asarray(stream.time_series), stream.time_stamps, chunk=_FEED_CHUNK
    )
    # The open bin the stream ends inside is incomplete (a sample at a bin end closes it).
    dropped_incomplete = int(front.counters()["samples_binned"] > bins.n_samples.sum())
    keep = np.ones(bins.n_bins, dtype=bool)
    if kind == "events" or not stream.is_regular or front.per_sample_bins:
        # events and irregular counts: a bin without samples is a true zero
        return _Binned(bins.end_times, bins.data, width, keep, ~keep, 0, dropped_incomplete)
    if abs(ratio - round(ratio)) > _EDGE_TOLERANCE:
        logger.warning(
            "bin_s=%g s is not a multiple of the %g s sample period of %s; bins hold "
            "unequal numbers of samples",
            width,
            1.0 / stream.nominal_srate,
            stream.name,
        )
    # A regular stream: a bin without samples is missing data, and the first bin (the stream
    # started inside it) is incomplete unless full.
    full = math.floor(ratio + _EDGE_TOLERANCE)
    empty = bins.n_samples == 0
    keep &= ~empty
    if bins.n_bins and bins.n_samples[0] < full:
        keep[0] = False
        dropped_incomplete += 1
    return _Binned(
        times=bins.end_times,
        counts=bins.data,
        bin_s=width,
        keep=keep,
        short=keep & (bins.n_samples < full),
        dropped_empty=int(empty.sum()),
        dropped_incomplete=dropped_incomplete,
    )


def _model_channels(path: Path, stream: XdfStream, kind: InputKind) -> int:
    """Channels of the binned data: the stream's, or for events the population's (the desc
    key ``neural_channels``, else the largest channel index + 1)."""
    if kind != "events":
        return stream.channel_count
    if stream.channel_count != 1:
        raise XdfError(
            f"neural stream {stream.describe()} in {path} has {stream.channel_count} channels; "
            "an events stream has one (the channel index of each spike)"
        )
    named = stream.description.get(NEURAL_CHANNELS_KEY, "")
    if named.isdigit() and int(named) > 0:
        return int(named)
    return max(int(np.max(stream.time_series, initial=0)) + 1, 1)


def _resample(
    path: Path, role: str, stream: XdfStream, times: np.ndarray, max_gap_s: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation of ``stream`` at ``times``; masks of times inside its range and
    of times inside a gap longer than ``max_gap_s``."""
    kt = stream.time_stamps
    steps = np.diff(kt)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise XdfError(
            f"{role} stream {stream.describe()} in {path} has timestamps that do not increase "
            f"(sample {i} at {float(kt[i])!r} s follows {float(kt[i - 1])!r} s); cannot "
            "interpolate it"
        )
    if max_gap_s is None:
        limit = 10.0 / stream.nominal_srate if stream.is_regular else math.inf
    else:
        limit = float(max_gap_s)
        if not limit > 0:
            raise XdfError(f"max_gap_s must be > 0 seconds, got {max_gap_s!r}")
    return interpolate_at(times, kt, np.asarray(stream.time_series, dtype=np.float64), limit)


def interpolate_at(
    times: np.ndarray, sample_times: np.ndarray, values: np.ndarray, max_gap_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``values`` (n, K) sampled at increasing ``sample_times`` (n,), linearly interpolated
    at ``times`` (B,); also the masks of times inside the sampled range and of times inside
    a gap between samples longer than ``max_gap_s`` (never trusted)."""
    kt = sample_times
    out = np.column_stack([np.interp(times, kt, values[:, c]) for c in range(values.shape[1])])
    inside = (times >= kt[0]) & (times <= kt[-1])
    right = np.clip(np.searchsorted(kt, times, side="left"), 0, kt.size - 1)
    left = np.clip(right - 1, 0, kt.size - 1)
    exact = kt[right] == times
    in_gap = inside & ~exact & ((kt[right] - kt[left]) > max_gap_s)
    return out, inside, in_gap
