"""A spec-conformant XDF 1.0 writer (https://github.com/sccn/xdf/wiki/Specifications).

File layout: the magic bytes ``XDF:`` followed by chunks. Every chunk is
``[NumLengthBytes: 1 byte, 1|4|8][Length: uint of that width][Tag: uint16][Content]`` where
``Length`` counts the tag and the content. All integers and floats are little-endian.

===  ============  ============================================================================
tag  chunk         content
===  ============  ============================================================================
1    FileHeader    XML ``<info><version>1.0</version>...</info>``
2    StreamHeader  uint32 StreamID, XML ``<info>`` (name, type, channel_count, nominal_srate,
                   channel_format, source_id, created_at, uid, desc/channels/channel/label,
                   unit,type); a live stream's ``info.as_xml()`` verbatim (hostname,
                   acquisition, ... included), as LabRecorder writes it
3    Samples       uint32 StreamID, varlen NumSamples, then per sample: TimestampBytes (0 or 8),
                   optional float64 timestamp, values (numeric: the channel format; strings:
                   varlen byte length + UTF-8 bytes per channel)
4    ClockOffset   uint32 StreamID, float64 CollectionTime, float64 OffsetValue
5    Boundary      16 fixed bytes (a UUID readers scan for to resynchronise after corruption)
6    StreamFooter  uint32 StreamID, XML ``<info>`` (first_timestamp, last_timestamp,
                   sample_count, clock_offsets/offset/time,value)
===  ============  ============================================================================

A sample's timestamp is omitted (TimestampBytes 0) exactly when a reader reconstructs it
bit for bit as ``previous timestamp + 1.0 / nominal_srate`` (the rule every XDF reader
applies, starting from 0.0), as LabRecorder does; all other timestamps are stored.

The recording goes to ``<path>.part`` and is renamed to ``path`` by :meth:`XdfWriter.close`
after the footers are written and the file is fsynced, so an interrupted recording never
leaves a half file under the final name (the ``.part`` file is still readable XDF up to
the last complete chunk).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import struct
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from bci.atomic import fsync_directory
from streams.lsl_outlet import KINEMATICS_TYPE, NEURAL_TYPE, TARGETS_TYPE
from streams.session import Session
from streams.xdf_samples import (
    XdfError,
    as_channel_array,
    as_string_rows,
    as_timestamps,
    encode_numeric_samples,
    encode_string_samples,
    encode_varlen,
)

logger = logging.getLogger(__name__)

# channel_format -> little-endian numpy dtype (None: variable-length UTF-8 strings)
CHANNEL_FORMATS: dict[str, str | None] = {
    "float32": "<f4",
    "double64": "<f8",
    "int8": "<i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "string": None,
}

TAG_FILE_HEADER = 1
TAG_STREAM_HEADER = 2
TAG_SAMPLES = 3
TAG_CLOCK_OFFSET = 4
TAG_BOUNDARY = 5
TAG_STREAM_FOOTER = 6

# The fixed Boundary chunk content defined by the specification (and scanned for by readers).
BOUNDARY_UUID = bytes.fromhex("43a546dccbf5410fb30ed5467383cbe4")

_MAX_STREAM_ID = 2**32 - 1
_HEADER_FIELDS = ("name", "channel_count", "nominal_srate", "channel_format")


def _chunk(tag: int, content: bytes) -> bytes:
    return encode_varlen(len(content) + 2) + struct.pack("<H", tag) + content


def format_float(value: float) -> str:
    """Shortest text that reads back as exactly ``value`` (``20`` rather than ``20.0``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _xml(element: ET.Element) -> bytes:
    return b'<?xml version="1.0"?>' + ET.tostring(element, encoding="utf-8", xml_declaration=False)


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = text
    return child


@dataclass
class _StreamState:
    stream_id: int
    name: str
    channel_count: int
    channel_format: str
    nominal_srate: float
    dtype: np.dtype | None
    # 1.0 / float(<nominal_srate text>): what a reader adds to deduce an omitted timestamp
    tdiff: float
    last_timestamp: float = 0.0
    first_timestamp: float | None = None
    sample_count: int = 0
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)

    def describe(self) -> str:
        return f"stream {self.stream_id} ('{self.name}')"


class XdfWriter:
    """Write an XDF file chunk by chunk; safe to call from several acquisition threads.

    Example::

        with XdfWriter("rec.xdf") as xdf:
            xdf.add_stream(1, "amp", "EEG", 8, 500.0, "float32", channel_labels=labels)
            xdf.write_samples(1, timestamps, data)          # (n,), (n, 8)
            xdf.write_clock_offset(1, collection_time, offset)
        # rec.xdf exists only now, complete with stream footers

    The file is written to ``<path>.part`` and renamed to ``path`` by :meth:`close`. Leaving
    the ``with`` block through an exception keeps the ``.part`` file (readable XDF without
    footers) and does not rename it. An existing ``path`` is refused unless ``overwrite``;
    an existing ``.part`` file (an earlier interrupted recording) is always refused.
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self._path = Path(path)
        self._part_path = Path(f"{self._path}.part")
        self._overwrite = overwrite
        parent = self._path.parent
        if not parent.is_dir():
            raise FileNotFoundError(
                f"cannot write XDF file {self._path}: directory {parent} does not exist; "
                "create it first"
            )
        if self._path.exists() and not overwrite:
            raise FileExistsError(
                f"XDF file {self._path} already exists; choose another name or remove it first"
            )
        try:
            self._file = open(self._part_path, "xb")  # closed by close() or abort()
        except FileExistsError:
            raise FileExistsError(
                f"partial recording {self._part_path} already exists (an interrupted "
                "recording?); move or delete it before recording to "
                f"{self._path}"
            ) from None
        self._lock = threading.Lock()
        self._streams: dict[int, _StreamState] = {}
        self._state = "open"  # open -> closed | aborted
        header = ET.Element("info")
        _sub(header, "version", "1.0")
        _sub(header, "datetime", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        self._file.write(b"XDF:" + _chunk(TAG_FILE_HEADER, _xml(header)))
        logger.debug("recording XDF to %s", self._part_path)

    # --- properties ----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """Final file name (exists once :meth:`close` returned)."""
        return self._path

    @property
    def part_path(self) -> Path:
        """File being written (``<path>.part``)."""
        return self._part_path

    @property
    def closed(self) -> bool:
        """True after :meth:`close` or after an aborted ``with`` block."""
        return self._state != "open"

    # --- writing -------------------------------------------------------------------------

    def add_stream(
        self,
        stream_id: int,
        name: str,
        type: str,
        channel_count: int,
        nominal_srate: float,
        channel_format: str,
        source_id: str = "",
        channel_labels: Sequence[str] | None = None,
        channel_units: Sequence[str] | None = None,
        description: Mapping[str, str] | None = None,
        *,
        channel_types: Sequence[str] | None = None,
        created_at: float | None = None,
    ) -> None:
        """Declare a stream and write its StreamHeader chunk.

        ``nominal_srate`` is in Hz (0 for irregular streams such as markers);
        ``channel_format`` is one of :data:`CHANNEL_FORMATS`; ``description`` adds text
        elements ``desc/<key>`` (e.g. a publisher's ``input_kind``); ``channel_labels``,
        ``channel_units`` and ``channel_types`` fill ``desc/channels/channel/{label,unit,type}``
        (an empty unit is left out). ``created_at`` is the stream's creation time on its
        clock (LSL's ``created_at``), written only when known. To keep a live stream's header
        exactly as its outlet declares it, use :meth:`add_stream_header` instead.
        """
        if isinstance(channel_count, bool) or not isinstance(channel_count, (int, np.integer)):
            raise TypeError(f"channel_count must be an int, got {channel_count!r}")
        srate = float(nominal_srate)
        if not math.isfinite(srate) or srate < 0:
            raise XdfError(
                f"nominal_srate must be a finite rate in Hz >= 0 (0 = irregular), got "
                f"{nominal_srate!r}"
            )
        count = int(channel_count)
        labels = _check_names("channel_labels", channel_labels, count)
        units = _check_names("channel_units", channel_units, count)
        types = _check_names("channel_types", channel_types, count)

        info = ET.Element("info")
        _sub(info, "name", str(name))
        _sub(info, "type", str(type))
        _sub(info, "channel_count", str(count))
        _sub(info, "nominal_srate", format_float(srate))
        _sub(info, "channel_format", str(channel_format))
        _sub(info, "source_id", str(source_id))
        if created_at is not None:
            _sub(info, "created_at", format_float(created_at))
        _sub(info, "uid", str(uuid.uuid4()))
        desc = ET.SubElement(info, "desc")
        for key, text in (description or {}).items():
            _sub(desc, str(key), str(text))
        if labels is not None or units is not None or types is not None:
            channels = ET.SubElement(desc, "channels")
            for i in range(count):
                channel = ET.SubElement(channels, "channel")
                for tag, values in (("label", labels), ("unit", units), ("type", types)):
                    if values is not None and values[i]:
                        _sub(channel, tag, values[i])
        self._declare(stream_id, info, _xml(info))

    def add_stream_header(self, stream_id: int, header_xml: str | bytes) -> None:
        """Declare a stream with a header kept verbatim: an LSL ``info.as_xml()`` (desc,
        channel types, acquisition, hostname, created_at), as LabRecorder writes it.

        The header must be an ``<info>`` document whose ``name``, ``channel_count``,
        ``nominal_srate`` and ``channel_format`` are valid; they set how samples are checked
        and encoded.
        """
        raw = header_xml.encode("utf-8") if isinstance(header_xml, str) else bytes(header_xml)
        try:
            info = ET.fromstring(raw)
        except ET.ParseError as exc:
            raise XdfError(f"stream header for stream id {stream_id} is not XML ({exc})") from None
        self._declare(stream_id, info, raw)

    def _declare(self, stream_id: int, info: ET.Element, header: bytes) -> None:
        """Check a stream's ``<info>`` header, record its state and write the header chunk."""
        if isinstance(stream_id, bool) or not isinstance(stream_id, (int, np.integer)):
            raise TypeError(f"stream_id must be an int, got {stream_id!r}")
        stream_id = int(stream_id)
        if not 0 <= stream_id <= _MAX_STREAM_ID:
            raise XdfError(f"stream_id {stream_id} is outside the uint32 range 0..{_MAX_STREAM_ID}")
        fields = {tag: (info.findtext(tag) or "").strip() for tag in _HEADER_FIELDS}
        where = f"stream header of stream {stream_id} ({fields['name']!r})"
        if info.tag != "info":
            raise XdfError(f"{where}: the root element is <{info.tag}>; expected <info>")
        channel_format = fields["channel_format"]
        if channel_format not in CHANNEL_FORMATS:
            raise XdfError(
                f"{where}: unknown channel_format {channel_format!r}; valid formats are "
                f"{list(CHANNEL_FORMATS)}"
            )
        try:
            channel_count = int(fields["channel_count"])
            srate = float(fields["nominal_srate"])
        except ValueError:
            raise XdfError(
                f"{where}: channel_count {fields['channel_count']!r} and nominal_srate "
                f"{fields['nominal_srate']!r} must be numbers"
            ) from None
        if channel_count < 1:
            raise XdfError(f"{where}: channel_count must be >= 1, got {channel_count}")
        if not math.isfinite(srate) or srate < 0:
            raise XdfError(f"{where}: nominal_srate must be a finite rate >= 0, got {srate!r}")
        dtype_name = CHANNEL_FORMATS[channel_format]
        state = _StreamState(
            stream_id=stream_id,
            name=fields["name"],
            channel_count=channel_count,
            channel_format=channel_format,
            nominal_srate=srate,
            dtype=None if dtype_name is None else np.dtype(dtype_name),
            # what a reader adds to deduce an omitted timestamp: 1 / float(<nominal_srate>)
            tdiff=1.0 / srate if srate > 0 else 0.0,
        )
        content = struct.pack("<I", stream_id) + header
        with self._lock:
            self._check_open("add_stream")
            if stream_id in self._streams:
                raise XdfError(
                    f"stream id {stream_id} is already used by "
                    f"{self._streams[stream_id].describe()}; give each stream its own id"
                )
            self._streams[stream_id] = state
            self._file.write(_chunk(TAG_STREAM_HEADER, content))

    def write_samples(self, stream_id: int, timestamps: Any, data: Any) -> None:
        """Write one Samples chunk: ``timestamps`` (n,) seconds and ``data`` of n samples.

        Numeric streams take an (n, C) array (or (n,) when C == 1) whose values the channel
        format stores exactly (float32 streams accept any finite float in range; integers
        must be whole and in range). String streams take n strings (C == 1) or n sequences
        of C strings. Timestamps need not increase (raw LSL clocks can reset); they must be
        finite.
        """
        with self._lock:
            self._check_open("write_samples")
            state = self._stream(stream_id)
            ts = as_timestamps(timestamps, state)
            n = ts.shape[0]
            # validate everything before the first byte is written
            if state.dtype is None:
                rows = as_string_rows(data, state, n)
            else:
                values = as_channel_array(data, state, n)
            if n == 0:
                return
            prev = np.empty(n, dtype=np.float64)
            prev[0] = state.last_timestamp
            prev[1:] = ts[:-1]
            omit = (prev + state.tdiff == ts) if state.tdiff > 0 else np.zeros(n, dtype=bool)
            body = (
                encode_string_samples(ts, rows, omit)
                if state.dtype is None
                else encode_numeric_samples(ts, values, omit)
            )
            content = struct.pack("<I", state.stream_id) + encode_varlen(n) + body
            self._file.write(_chunk(TAG_SAMPLES, content))
            if state.first_timestamp is None:
                state.first_timestamp = float(ts[0])
            state.last_timestamp = float(ts[-1])
            state.sample_count += n

    def write_clock_offset(
        self, stream_id: int, collection_time: float, offset_value: float
    ) -> None:
        """Write a ClockOffset chunk: at ``collection_time`` (the stream's clock, seconds)
        the recorder's clock minus the stream's clock was ``offset_value`` seconds."""
        collection_time = float(collection_time)
        offset_value = float(offset_value)
        if not (math.isfinite(collection_time) and math.isfinite(offset_value)):
            raise XdfError(
                f"clock offset ({collection_time!r}, {offset_value!r}) must be finite numbers "
                "of seconds"
            )
        with self._lock:
            self._check_open("write_clock_offset")
            state = self._stream(stream_id)
            content = struct.pack("<Idd", state.stream_id, collection_time, offset_value)
            self._file.write(_chunk(TAG_CLOCK_OFFSET, content))
            state.clock_offsets.append((collection_time, offset_value))

    def write_boundary(self) -> None:
        """Write a Boundary chunk (lets readers resynchronise after a corrupt region)."""
        with self._lock:
            self._check_open("write_boundary")
            self._file.write(_chunk(TAG_BOUNDARY, BOUNDARY_UUID))

    def close(self) -> Path:
        """Write every stream's footer, fsync, rename ``.part`` to the final name; return it.

        Calling ``close`` again returns the same path. Raises FileExistsError (keeping the
        ``.part`` file) if the final name appeared meanwhile and ``overwrite`` is False.
        """
        with self._lock:
            if self._state == "closed":
                return self._path
            if self._state == "aborted":
                raise XdfError(
                    f"the recording to {self._path} was aborted; its data are in {self._part_path}"
                )
            for state in self._streams.values():
                self._file.write(_chunk(TAG_STREAM_FOOTER, _footer(state)))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._state = "closed"
            if self._path.exists() and not self._overwrite:
                raise FileExistsError(
                    f"{self._path} appeared while recording; the complete recording is in "
                    f"{self._part_path}: rename it yourself"
                )
            os.replace(self._part_path, self._path)
            fsync_directory(self._path.parent)
        logger.info(
            "wrote XDF file %s (%s)",
            self._path,
            ", ".join(f"{s.name}: {s.sample_count} samples" for s in self._streams.values())
            or "no streams",
        )
        return self._path

    def abort(self) -> Path:
        """Stop writing without footers or rename; the data so far stay in ``.part``."""
        with self._lock:
            if self._state == "open":
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._state = "aborted"
                logger.warning(
                    "XDF recording to %s aborted; the data written so far are in %s",
                    self._path,
                    self._part_path,
                )
        return self._part_path

    def __enter__(self) -> XdfWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # --- helpers -------------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._state != "open":
            raise XdfError(
                f"cannot {what}: the XDF writer for {self._path} is {self._state}; open a new "
                "XdfWriter"
            )

    def _stream(self, stream_id: int) -> _StreamState:
        try:
            return self._streams[int(stream_id)]
        except (KeyError, TypeError, ValueError):
            added = ", ".join(s.describe() for s in self._streams.values()) or "none"
            raise XdfError(
                f"stream id {stream_id!r} was not added (streams added: {added}); call "
                "add_stream first"
            ) from None


def write_session_xdf(
    path: str | os.PathLike[str],
    session: Session,
    name_prefix: str = "bci",
    *,
    overwrite: bool = False,
    chunk_bins: int = 1000,
) -> Path:
    """Write a Session as XDF: streams ``<prefix>-neural`` (id 1, type ``neural``),
    ``<prefix>-kinematics`` (id 2, type ``kinematics``) and ``<prefix>-targets`` (id 3, type
    ``targets``, channels ``x``, ``y``) when present (kinematics with their units when the
    session has them), all float32 at ``1 / bin_s`` Hz with
    the bin end times as timestamps, interleaved in chunks of ``chunk_bins`` bins.

    :func:`streams.xdf.session_from_xdf` with the default stream names reads it back.
    """
    if not isinstance(session, Session):
        raise TypeError(f"write_session_xdf expects a Session, got {type(session).__name__}")
    if chunk_bins < 1:
        raise ValueError(f"chunk_bins must be >= 1, got {chunk_bins}")
    srate = 1.0 / session.bin_s
    parts: list[tuple[int, np.ndarray]] = [(1, session.neural)]
    with XdfWriter(path, overwrite=overwrite) as writer:
        writer.add_stream(
            1,
            f"{name_prefix}-neural",
            NEURAL_TYPE,
            session.n_channels,
            srate,
            "float32",
            source_id=f"{name_prefix}-neural",
            channel_labels=session.channel_labels,
        )
        if session.kinematics is not None:
            writer.add_stream(
                2,
                f"{name_prefix}-kinematics",
                KINEMATICS_TYPE,
                session.kinematics.shape[1],
                srate,
                "float32",
                source_id=f"{name_prefix}-kinematics",
                channel_labels=session.kinematics_labels,
                channel_units=session.kinematics_units,
            )
            parts.append((2, session.kinematics))
        if session.targets is not None:
            writer.add_stream(
                3,
                f"{name_prefix}-targets",
                TARGETS_TYPE,
                2,
                srate,
                "float32",
                source_id=f"{name_prefix}-targets",
                channel_labels=("x", "y"),
            )
            parts.append((3, session.targets))
        for start in range(0, session.n_bins, chunk_bins):
            stop = min(start + chunk_bins, session.n_bins)
            for stream_id, array in parts:
                writer.write_samples(stream_id, session.timestamps[start:stop], array[start:stop])
    return writer.path


# --- validation and encoding --------------------------------------------------------------


def _check_names(key: str, names: Sequence[str] | None, count: int) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, (str, bytes)):
        raise XdfError(f"{key} is a single string {names!r}; pass one name per channel")
    items = list(names)
    if len(items) != count:
        raise XdfError(f"{key} has {len(items)} entries for {count} channels; give one each")
    bad = [x for x in items if not isinstance(x, str)]
    if bad:
        raise XdfError(f"{key} holds non-string entries such as {bad[0]!r}")
    return tuple(items)


def _footer(state: _StreamState) -> bytes:
    info = ET.Element("info")
    empty = state.sample_count == 0
    _sub(info, "first_timestamp", "0" if empty else format_float(state.first_timestamp or 0.0))
    _sub(info, "last_timestamp", "0" if empty else format_float(state.last_timestamp))
    _sub(info, "sample_count", str(state.sample_count))
    offsets = ET.SubElement(info, "clock_offsets")
    for collection_time, offset_value in state.clock_offsets:
        offset = ET.SubElement(offsets, "offset")
        _sub(offset, "time", format_float(collection_time))
        _sub(offset, "value", format_float(offset_value))
    return struct.pack("<I", state.stream_id) + _xml(info)
