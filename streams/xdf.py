"""Read, inspect and convert XDF recordings (LabRecorder files or our own :class:`XdfWriter`).

Reading uses ``pyxdf.load_xdf`` with these choices:

- ``synchronize_clocks=True`` by default: timestamps are mapped onto the recording
  computer's clock with the stored ClockOffset chunks (pyxdf's robust fit, one fit per
  clock segment, so a clock reset during the recording is handled). Streams from different
  machines are only comparable after this.
- ``dejitter_timestamps=False`` by default: pyxdf's dejittering replaces timestamps by a
  linear fit, which hides the gaps and late samples that :func:`inspect_xdf` reports.
  Pass ``dejitter=True`` to :func:`read_xdf_streams` to get it.
- The timestamps exactly as stored in the file are always kept too
  (:attr:`XdfStream.raw_time_stamps`, captured from pyxdf's ``on_chunk`` hook in the same
  pass), so any correction stays visible.

pyxdf is lenient with damaged files: it logs an error and skips a corrupt chunk, and reads
a file cut before its StreamFooters without complaint. Here both raise :class:`XdfError`
naming the file, unless ``allow_truncated=True`` (then they are logged as warnings and the
samples that could be read are returned; :func:`inspect_xdf` always reads this way and
reports a missing footer as a note).
"""

from __future__ import annotations

import difflib
import gzip
import logging
import math
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyxdf

from streams.frontend import (
    INPUT_KIND_KEY,
    NEURAL_CHANNELS_KEY,
    FrontEnd,
    InputKind,
    bin_recording,
    input_kind_of,
)
from streams.session import Session, SessionError
from streams.timestamps import analyse_timing, restamp
from streams.xdf_writer import (
    CHANNEL_FORMATS,
    XdfError,
    XdfWriter,
    write_session_xdf,
)

__all__ = [
    "CHANNEL_FORMATS",
    "StreamSummary",
    "XdfError",
    "XdfSessionReport",
    "XdfStream",
    "XdfStreamNotFoundError",
    "XdfWriter",
    "format_inspection",
    "inspect_xdf",
    "interpolate_at",
    "read_xdf_streams",
    "session_from_xdf",
    "session_from_xdf_with_report",
    "summarize_stream",
    "write_session_xdf",
]

logger = logging.getLogger(__name__)

# pyxdf keeps a module-level read buffer (_read_varlen_int_buf), so concurrent loads in
# threads would corrupt each other; the lock also keeps the error collector per load.
_PYXDF_LOCK = threading.Lock()
_PYXDF_LOGGER = "pyxdf.pyxdf"

# A bin edge closer than this fraction of a bin to a timestamp counts as on the edge.
_EDGE_TOLERANCE = 1e-6
_FEED_CHUNK = 1 << 16  # samples per front-end call when binning a recording


class XdfStreamNotFoundError(XdfError):
    """No stream in the file matches the requested name or type."""


@dataclass(frozen=True, eq=False)
class XdfStream:
    """One stream of an XDF file, as read by :func:`read_xdf_streams`.

    Attributes:
        stream_id: the StreamID of the stream's chunks.
        name, type, source_id: from the StreamHeader ("" when absent).
        channel_count: channels per sample C.
        nominal_srate: declared rate in Hz; 0 for irregular streams (markers).
        channel_format: float32, double64, int8, int16, int32, int64 or string.
        channel_labels, channel_units: from ``desc/channels/channel/label`` and ``unit``
            when every channel has one, else None.
        time_stamps: (n,) float64 seconds, clock-synchronized (and dejittered) as requested.
        time_series: (n, C) array of the channel format; for string streams a list of n
            lists of C strings.
        raw_time_stamps: (n,) float64 seconds exactly as stored in the file.
        clock_times, clock_values: the ClockOffset chunks (collection time, offset), seconds.
        clock_segments: inclusive sample-index ranges between clock resets found by pyxdf
            (empty when clocks were not synchronized or the stream has no offsets).
        has_footer: whether the file holds the stream's StreamFooter.
        footer_sample_count: the footer's sample_count, None without footer.
        description: text elements directly under ``desc`` (e.g. our publishers'
            ``input_kind`` and ``session_bin_s``).
    """

    stream_id: int
    name: str
    type: str
    source_id: str
    channel_count: int
    nominal_srate: float
    channel_format: str
    channel_labels: tuple[str, ...] | None
    channel_units: tuple[str, ...] | None
    time_stamps: np.ndarray
    time_series: Any
    raw_time_stamps: np.ndarray
    clock_times: np.ndarray
    clock_values: np.ndarray
    clock_segments: tuple[tuple[int, int], ...]
    has_footer: bool
    footer_sample_count: int | None
    description: dict[str, str] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.time_stamps.shape[0])

    @property
    def n_clock_offsets(self) -> int:
        return int(self.clock_times.shape[0])

    @property
    def is_string(self) -> bool:
        return self.channel_format == "string"

    @property
    def is_regular(self) -> bool:
        """True for streams with a nominal rate (> 0 Hz)."""
        return self.nominal_srate > 0

    @property
    def markers(self) -> list[str]:
        """The samples of a single-channel string stream as a flat list."""
        if not self.is_string or self.channel_count != 1:
            raise XdfError(
                f"stream '{self.name}' is a {self.channel_count}-channel {self.channel_format} "
                "stream; markers are only defined for single-channel string streams"
            )
        return [row[0] for row in self.time_series]

    def describe(self) -> str:
        return f"'{self.name}' (type '{self.type}', id {self.stream_id})"


class _Header(NamedTuple):
    stream_id: int
    name: str
    type: str

    def describe(self) -> str:
        return f"'{self.name}' (type '{self.type}', id {self.stream_id})"


# --- reading ------------------------------------------------------------------------------


def read_xdf_streams(
    path: str | os.PathLike[str],
    select: str | Sequence[str] | None = None,
    *,
    synchronize_clocks: bool = True,
    dejitter: bool = False,
    allow_truncated: bool = False,
) -> list[XdfStream]:
    """Read the streams of an XDF file (all, or those selected), in file order.

    ``select`` holds stream names or types: a key selects the streams with that exact name,
    or if none has it, those with that type. A key matching nothing raises
    :class:`XdfStreamNotFoundError` listing the streams present. Only selected streams are
    decoded. See the module docstring for ``synchronize_clocks``, ``dejitter`` and
    ``allow_truncated``.

    Raises FileNotFoundError for a missing file and :class:`XdfError` (naming the file) for
    one that is not XDF, is corrupt, or is truncated.
    """
    path = _existing(path)
    options = {
        "synchronize_clocks": synchronize_clocks,
        "dejitter": dejitter,
        "allow_truncated": allow_truncated,
    }
    if select is None:
        return _load(path, None, **options)
    keys = [select] if isinstance(select, str) else list(select)
    if not keys:
        raise XdfError("select is empty; pass stream names or types, or None for all")

    def choose(headers: list[_Header]) -> set[int]:
        return {h.stream_id for key in keys for h in _match(path, headers, key)}

    return _load_chosen(path, choose, **options)


def _existing(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is a file starting with the XDF magic bytes.

    (pyxdf leaks its file handle when the magic bytes are wrong, so check here first.)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"XDF file {path} does not exist")
    compressed = path.suffix == ".xdfz" or path.suffixes[-2:] == [".xdf", ".gz"]
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as fh:
            magic = fh.read(4)
    except (OSError, EOFError) as exc:
        raise XdfError(f"cannot read XDF file {path}: {exc}") from exc
    if magic != b"XDF:":
        raise XdfError(f"{path} is not XDF: it starts with {magic!r}, not the magic bytes b'XDF:'")
    return path


def _read_headers(path: Path) -> list[_Header]:
    with _PYXDF_LOCK:
        try:
            infos = pyxdf.resolve_streams(str(path))
        except Exception as exc:
            raise XdfError(
                f"cannot read the stream headers of XDF file {path} "
                f"({type(exc).__name__}: {exc}); the file is truncated, corrupt or not XDF"
            ) from exc
    return [
        _Header(int(info["stream_id"]), info.get("name") or "", info.get("type") or "")
        for info in infos
    ]


def _load_chosen(
    path: Path,
    choose: Callable[[list[_Header]], set[int]],
    *,
    synchronize_clocks: bool,
    dejitter: bool,
    allow_truncated: bool,
) -> list[XdfStream]:
    """Load the streams ``choose`` picks from the file's headers.

    Strict reads resolve the headers first (a cheap pass) and decode only the chosen
    streams; tolerant reads decode everything, since a damaged file may defeat the header
    pass, and pick afterwards.
    """
    options = {
        "synchronize_clocks": synchronize_clocks,
        "dejitter": dejitter,
        "allow_truncated": allow_truncated,
    }
    if allow_truncated:
        streams = _load(path, None, **options)
        ids = choose([_Header(s.stream_id, s.name, s.type) for s in streams])
        return [s for s in streams if s.stream_id in ids]
    ids = choose(_read_headers(path))
    return _load(path, sorted(ids), **options)


def _present(headers: Sequence[_Header]) -> str:
    return ", ".join(h.describe() for h in headers) or "none"


def _match(path: Path, headers: Sequence[_Header], key: str) -> list[_Header]:
    by_name = [h for h in headers if h.name == key]
    if by_name:
        return by_name
    by_type = [h for h in headers if h.type == key]
    if by_type:
        return by_type
    candidates = sorted({h.name for h in headers} | {h.type for h in headers})
    close = difflib.get_close_matches(key, candidates, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise XdfStreamNotFoundError(
        f"XDF file {path} has no stream named or typed {key!r}{hint}; streams present "
        f"(name, type): {_present(headers)}"
    )


def _resolve_one(path: Path, headers: Sequence[_Header], key: str, role: str) -> _Header:
    if not isinstance(key, str):
        raise TypeError(f"the {role} stream must be given by name or type, got {key!r}")
    matches = _match(path, headers, key)
    if len(matches) > 1:
        raise XdfError(
            f"{role} stream {key!r} matches {len(matches)} streams of XDF file {path}: "
            f"{_present(matches)}; select it by name"
        )
    return matches[0]


class _ErrorCollector(logging.Handler):
    """Collects the errors pyxdf logs (instead of raising) while it skips corrupt data."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _load(
    path: Path,
    ids: list[int] | None,
    *,
    synchronize_clocks: bool,
    dejitter: bool,
    allow_truncated: bool,
) -> list[XdfStream]:
    raw_chunks: dict[int, list[np.ndarray]] = defaultdict(list)

    def keep_raw_stamps(values: Any, stamps: np.ndarray, header: Any, stream_id: int) -> Any:
        raw_chunks[int(stream_id)].append(np.array(stamps, dtype=np.float64))
        return values, stamps, header

    collector = _ErrorCollector()
    pyxdf_logger = logging.getLogger(_PYXDF_LOGGER)
    with _PYXDF_LOCK:
        level, propagate = pyxdf_logger.level, pyxdf_logger.propagate
        if not pyxdf_logger.isEnabledFor(logging.ERROR):
            # pyxdf was silenced: still collect its errors, but show them to nobody else
            pyxdf_logger.setLevel(logging.ERROR)
            pyxdf_logger.propagate = False
        pyxdf_logger.addHandler(collector)
        try:
            loaded, _ = pyxdf.load_xdf(
                str(path),
                select_streams=ids,
                on_chunk=keep_raw_stamps,
                synchronize_clocks=synchronize_clocks,
                dejitter_timestamps=dejitter,
            )
        except Exception as exc:
            raise XdfError(
                f"cannot read XDF file {path} ({type(exc).__name__}: {exc}); the file is "
                "truncated, corrupt or not XDF"
            ) from exc
        finally:
            pyxdf_logger.removeHandler(collector)
            pyxdf_logger.setLevel(level)
            pyxdf_logger.propagate = propagate

    streams = [_to_stream(s, raw_chunks.get(int(s["info"]["stream_id"]), [])) for s in loaded]
    problems = [f"pyxdf: {m}" for m in collector.messages]
    unfinished = [s for s in streams if not s.has_footer]
    if unfinished:
        problems.append("no StreamFooter for " + ", ".join(s.describe() for s in unfinished))
    if problems:
        detail = "; ".join(problems)
        if not allow_truncated:
            raise XdfError(
                f"XDF file {path} is truncated or corrupt ({detail}): the recording was "
                "interrupted or the file damaged"
            )
        logger.warning("XDF file %s is truncated or corrupt: %s", path, detail)
    return streams


def _text(info: dict[str, Any], key: str) -> str:
    values = info.get(key)
    if not values or not isinstance(values[0], str):
        return ""
    return values[0]


def _channel_field(info: dict[str, Any], key: str, count: int) -> tuple[str, ...] | None:
    desc = (info.get("desc") or [None])[0]
    if not isinstance(desc, dict):
        return None
    channels = (desc.get("channels") or [None])[0]
    if not isinstance(channels, dict):
        return None
    entries = channels.get("channel") or []
    if len(entries) != count:
        return None
    out: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict) or key not in entry:
            return None
        value = entry[key][0]
        if value is None:
            value = ""
        if not isinstance(value, str):
            return None
        out.append(value)
    return tuple(out)


def _to_stream(raw: dict[str, Any], stamp_chunks: list[np.ndarray]) -> XdfStream:
    info = raw["info"]
    channel_count = int(info["channel_count"][0])
    channel_format = _text(info, "channel_format")
    time_stamps = np.asarray(raw["time_stamps"], dtype=np.float64).reshape(-1)
    n = time_stamps.shape[0]
    if channel_format == "string":
        time_series: Any = [[str(v) for v in row] for row in raw["time_series"]]
    else:
        dtype = np.dtype(CHANNEL_FORMATS[channel_format] or "<f8").newbyteorder("=")
        time_series = np.asarray(raw["time_series"])
        if time_series.size == 0:  # pyxdf returns float64 (0, C) for empty streams
            time_series = np.zeros((0, channel_count), dtype=dtype)
        time_series = time_series.astype(dtype, copy=False)
    raw_stamps = np.concatenate(stamp_chunks)[:n] if stamp_chunks else np.zeros(0, dtype=np.float64)
    footer = raw.get("footer")
    footer_count: int | None = None
    if isinstance(footer, dict) and isinstance(footer.get("info"), dict):
        try:
            footer_count = int(footer["info"]["sample_count"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            footer_count = None
    return XdfStream(
        stream_id=int(info["stream_id"]),
        name=_text(info, "name"),
        type=_text(info, "type"),
        source_id=_text(info, "source_id"),
        channel_count=channel_count,
        nominal_srate=float(info["nominal_srate"][0]),
        channel_format=channel_format,
        channel_labels=_channel_field(info, "label", channel_count),
        channel_units=_channel_field(info, "unit", channel_count),
        time_stamps=time_stamps,
        time_series=time_series,
        raw_time_stamps=raw_stamps,
        clock_times=np.asarray(raw.get("clock_times", []), dtype=np.float64),
        clock_values=np.asarray(raw.get("clock_values", []), dtype=np.float64),
        clock_segments=tuple((int(a), int(b)) for a, b in info.get("clock_segments", [])),
        has_footer=isinstance(footer, dict),
        footer_sample_count=footer_count,
        description=_desc_texts(info),
    )


def _desc_texts(info: dict[str, Any]) -> dict[str, str]:
    desc = (info.get("desc") or [None])[0]
    if not isinstance(desc, dict):
        return {}
    return {
        key: values[0]
        for key, values in desc.items()
        if isinstance(values, list) and values and isinstance(values[0], str)
    }


# --- inspection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSummary:
    """What :func:`inspect_xdf` reports for one stream (clock-synchronized timestamps).

    Gaps, effective rate and chunking of regular streams come from
    :func:`streams.timestamps.analyse_timing`: gaps are inter-sample intervals longer than
    1.5 nominal periods, or for a chunk-stamped stream (``chunk_size``: median samples per
    chunk, else None) lasting steps of its per-chunk lag; ``gap_s`` is the time they add
    beyond the nominal interval. The effective rate is measured over the other intervals,
    so breaks do not bias it. Irregular streams have no gaps (None) and an effective rate
    of (n - 1) / (last - first), the mean event rate.
    """

    stream_id: int
    name: str
    type: str
    channel_count: int
    channel_format: str
    nominal_srate: float
    n_samples: int
    effective_srate: float | None
    n_gaps: int | None
    gap_s: float | None
    longest_gap_s: float | None
    first_timestamp: float | None
    last_timestamp: float | None
    n_backward_steps: int
    n_clock_offsets: int
    clock_resets: int
    has_footer: bool
    footer_sample_count: int | None
    chunk_size: float | None = None

    @property
    def duration_s(self) -> float:
        if self.first_timestamp is None or self.last_timestamp is None:
            return 0.0
        return self.last_timestamp - self.first_timestamp

    @property
    def notes(self) -> tuple[str, ...]:
        """Anomalies worth a look, in words."""
        out: list[str] = []
        if not self.has_footer:
            out.append("no StreamFooter: the file is truncated or the recording was interrupted")
        elif self.footer_sample_count is not None and self.footer_sample_count != self.n_samples:
            out.append(
                f"footer declares {self.footer_sample_count} samples but the file holds "
                f"{self.n_samples}"
            )
        if self.n_samples == 0:
            out.append("empty stream (no samples)")
        if self.chunk_size is not None:
            out.append(
                f"chunk-stamped: samples arrive in chunks of ~{self.chunk_size:g} sharing one "
                "timestamp; rate and gaps are measured per chunk"
            )
        if self.n_gaps:
            out.append(
                f"{self.n_gaps} gap(s) adding {self.gap_s:.3f} s beyond the nominal interval "
                f"(longest interval {self.longest_gap_s:.3f} s)"
            )
        if self.n_backward_steps:
            out.append(f"{self.n_backward_steps} backward timestamp step(s)")
        if self.clock_resets:
            out.append(
                f"{self.clock_resets} clock reset(s) in the clock offsets; timestamps were "
                "synchronized per clock segment"
            )
        if self.nominal_srate > 0 and self.effective_srate is not None:
            deviation = self.effective_srate / self.nominal_srate - 1.0
            if abs(deviation) > 0.01:
                out.append(
                    f"effective rate {self.effective_srate:.3f} Hz is {deviation:+.1%} off the "
                    f"nominal {self.nominal_srate:g} Hz"
                )
        return tuple(out)


def summarize_stream(stream: XdfStream) -> StreamSummary:
    """Sample counts, rates, gaps and timing of one stream (see :class:`StreamSummary`)."""
    ts = stream.time_stamps
    n = ts.shape[0]
    timing = analyse_timing(ts, stream.nominal_srate) if stream.is_regular else None
    effective: float | None = None
    if timing is not None:
        effective = timing.effective_rate
    elif n >= 2 and ts[-1] > ts[0]:
        effective = float((n - 1) / (ts[-1] - ts[0]))
    gaps = None if timing is None else timing.gaps
    return StreamSummary(
        stream_id=stream.stream_id,
        name=stream.name,
        type=stream.type,
        channel_count=stream.channel_count,
        channel_format=stream.channel_format,
        nominal_srate=stream.nominal_srate,
        n_samples=n,
        effective_srate=effective,
        n_gaps=None if gaps is None else gaps.count,
        gap_s=None if gaps is None else float(gaps.seconds.sum()),
        longest_gap_s=float(gaps.intervals.max()) if gaps is not None and gaps.count else None,
        first_timestamp=float(ts[0]) if n else None,
        last_timestamp=float(ts[-1]) if n else None,
        n_backward_steps=int((np.diff(ts) < 0).sum()),
        chunk_size=None if timing is None or not timing.chunk_stamped else timing.median_chunk,
        n_clock_offsets=stream.n_clock_offsets,
        clock_resets=max(len(stream.clock_segments) - 1, 0),
        has_footer=stream.has_footer,
        footer_sample_count=stream.footer_sample_count,
    )


def inspect_xdf(path: str | os.PathLike[str]) -> list[StreamSummary]:
    """Summarize every stream of an XDF file (backs ``bci replay --inspect FILE``).

    Timestamps are clock-synchronized, not dejittered. A truncated file is read as far as
    possible (a warning is logged, and a missing footer shows as a note) so it can be
    diagnosed; a file pyxdf cannot parse at all raises :class:`XdfError`.
    """
    streams = read_xdf_streams(path, allow_truncated=True)
    return [summarize_stream(s) for s in streams]


def format_inspection(summaries: Sequence[StreamSummary]) -> str:
    """A plain-text table of :func:`inspect_xdf` results, followed by per-stream notes."""
    if not summaries:
        return "no streams"
    header = (
        "id", "name", "type", "format", "ch", "nominal Hz", "effective Hz", "samples",
        "gaps", "gap s", "first s", "last s", "clock offsets",
    )  # fmt: skip
    right = {0, 4, 5, 6, 7, 8, 9, 10, 11, 12}
    rows = [header]
    for s in summaries:
        rows.append(
            (
                str(s.stream_id),
                s.name,
                s.type,
                s.channel_format,
                str(s.channel_count),
                f"{s.nominal_srate:g}" if s.nominal_srate > 0 else "irregular",
                "-" if s.effective_srate is None else f"{s.effective_srate:.3f}",
                str(s.n_samples),
                "-" if s.n_gaps is None else str(s.n_gaps),
                "-" if s.gap_s is None else f"{s.gap_s:.3f}",
                "-" if s.first_timestamp is None else f"{s.first_timestamp:.3f}",
                "-" if s.last_timestamp is None else f"{s.last_timestamp:.3f}",
                str(s.n_clock_offsets),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    out = [line(rows[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in rows[1:])
    notes = [f"  [{s.stream_id}] {s.name}: {note}" for s in summaries for note in s.notes]
    if notes:
        out.append("")
        out.append("notes:")
        out.extend(notes)
    return "\n".join(out)


# --- sessions -----------------------------------------------------------------------------


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
    path = _existing(path)
    roles = {"neural": neural, "kinematics": kinematics, "targets": targets}
    chosen: dict[str, _Header] = {}

    def choose(headers: list[_Header]) -> set[int]:
        for role, key in roles.items():
            if key is not None:
                chosen[role] = _resolve_one(path, headers, key, role)
        return {h.stream_id for h in chosen.values()}

    loaded = {
        s.stream_id: s
        for s in _load_chosen(
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
    neural_stream = streams["neural"]
    if "targets" in streams and streams["targets"].channel_count != 2:
        raise XdfError(
            f"targets stream {streams['targets'].describe()} in {path} has "
            f"{streams['targets'].channel_count} channels; targets need 2 (x, y)"
        )

    binned = _bin_neural(path, neural_stream, bin_s, input_kind)
    bin_t = binned.times
    keep = binned.keep.copy()
    dropped_outside = 0
    dropped_in_gaps = 0
    resampled: dict[str, np.ndarray] = {}
    for role in ("kinematics", "targets"):
        if role not in streams:
            continue
        values, inside, in_gap = _resample(path, role, streams[role], bin_t, max_gap_s)
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
        session = Session(
            neural=binned.counts[keep],
            timestamps=bin_t[keep],
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

    report = XdfSessionReport(
        neural_stream=neural_stream.name,
        kinematics_stream=streams["kinematics"].name if "kinematics" in streams else None,
        targets_stream=streams["targets"].name if "targets" in streams else None,
        bin_s=binned.bin_s,
        n_neural_samples=neural_stream.n_samples,
        n_bins=session.n_bins,
        dropped_empty=binned.dropped_empty,
        dropped_incomplete=binned.dropped_incomplete,
        dropped_outside=dropped_outside,
        dropped_in_gaps=dropped_in_gaps,
        n_short_bins=int((binned.short & keep).sum()),
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
    ts = stream.time_stamps
    n = ts.shape[0]
    backward = np.flatnonzero(np.diff(ts) < 0)
    if backward.size:
        i = int(backward[0]) + 1
        raise XdfError(
            f"neural stream {stream.describe()} in {path} goes back in time at sample {i} "
            f"({float(ts[i])!r} s after {float(ts[i - 1])!r} s), e.g. after a clock reset; "
            "read it with synchronize_clocks=True or cut the recording there"
        )
    if bin_s is None:
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
        none = np.zeros(n, dtype=bool)
        values = np.asarray(stream.time_series, dtype=np.float64)
        return _Binned(ts, values, 1.0 / stream.nominal_srate, ~none, none, 0, 0)

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
    bins = bin_recording(front, np.asarray(stream.time_series), ts, chunk=_FEED_CHUNK)
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
