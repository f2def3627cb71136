"""Read XDF recordings (LabRecorder files or our own :class:`streams.xdf_writer.XdfWriter`).

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
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyxdf

from streams.xdf_writer import CHANNEL_FORMATS, XdfError

__all__ = [
    "StreamHeader",
    "XdfStream",
    "XdfStreamNotFoundError",
    "existing_xdf",
    "load_chosen",
    "read_xdf_streams",
    "resolve_one",
]

logger = logging.getLogger(__name__)

# pyxdf keeps a module-level read buffer (_read_varlen_int_buf), so concurrent loads in
# threads would corrupt each other; the lock also keeps the error collector per load.
_PYXDF_LOCK = threading.Lock()
_PYXDF_LOGGER = "pyxdf.pyxdf"


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


class StreamHeader(NamedTuple):
    """A stream's identity from the file's headers (read before any sample is decoded)."""

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
    path = existing_xdf(path)
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

    def choose(headers: list[StreamHeader]) -> set[int]:
        return {h.stream_id for key in keys for h in _match(path, headers, key)}

    return load_chosen(path, choose, **options)


def existing_xdf(path: str | os.PathLike[str]) -> Path:
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


def _read_headers(path: Path) -> list[StreamHeader]:
    with _PYXDF_LOCK:
        try:
            infos = pyxdf.resolve_streams(str(path))
        except Exception as exc:
            raise XdfError(
                f"cannot read the stream headers of XDF file {path} "
                f"({type(exc).__name__}: {exc}); the file is truncated, corrupt or not XDF"
            ) from exc
    return [
        StreamHeader(int(info["stream_id"]), info.get("name") or "", info.get("type") or "")
        for info in infos
    ]


def load_chosen(
    path: Path,
    choose: Callable[[list[StreamHeader]], set[int]],
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
        ids = choose([StreamHeader(s.stream_id, s.name, s.type) for s in streams])
        return [s for s in streams if s.stream_id in ids]
    ids = choose(_read_headers(path))
    return _load(path, sorted(ids), **options)


def _present(headers: Sequence[StreamHeader]) -> str:
    return ", ".join(h.describe() for h in headers) or "none"


def _match(path: Path, headers: Sequence[StreamHeader], key: str) -> list[StreamHeader]:
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


def resolve_one(path: Path, headers: Sequence[StreamHeader], key: str, role: str) -> StreamHeader:
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
