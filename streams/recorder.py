"""Record LSL streams to an XDF file, as LabRecorder does.

For each selected stream the recorder opens one inlet (large buffer, automatic recovery),
writes the stream's full header as its outlet declares it (``info.as_xml()``, verbatim as
LabRecorder does: name, type, source_id, created_at on the source's clock, hostname, uid and
the whole ``desc``: channel labels, units and types, acquisition, ...), and starts one
thread that pulls chunks with ``timeout=0`` and writes them, with their raw LSL timestamps,
as Samples chunks through :class:`streams.xdf_writer.XdfWriter`. A clock thread
measures ``inlet.time_correction()`` for every stream when recording starts, then every
``offset_interval_s`` seconds and once more at the end, and writes ClockOffset chunks as
LabRecorder does (collection time ``now - offset``, in the stream's clock); it also writes a
Boundary chunk every ``boundary_interval_s``. :meth:`Recorder.stop` drains what the inlets
still hold and closes the writer, which writes the stream footers and renames
``<path>.part`` to ``path``. XDF readers (pyxdf) apply the clock offsets on load.

Streams are chosen by selectors: ``"NAME"`` or ``"name=NAME"``, ``"type=TYPE"``,
``"source_id=ID"``. Every selector must match at least one stream within
``resolve_timeout``; a selector that matches several streams records all of them.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pylsl

from streams.discovery import visible_summary
from streams.xdf_writer import XdfWriter

logger = logging.getLogger(__name__)

_FORMAT_NAMES = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_string: "string",
    pylsl.cf_int8: "int8",
    pylsl.cf_int16: "int16",
    pylsl.cf_int32: "int32",
    pylsl.cf_int64: "int64",
}
_SELECTOR_KEYS = ("name", "type", "source_id")


class RecordingState(str, Enum):
    """Where a recording, or one stream of it, stands: a recording goes new -> recording ->
    stopped; a stream's track ends stopped, lost (its outlet gone for good) or in error."""

    NEW = "new"
    RECORDING = "recording"
    STOPPED = "stopped"
    LOST = "lost"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StreamSelector:
    """Which LSL stream(s) to record: ``key`` is name, type or source_id."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str | StreamSelector) -> StreamSelector:
        """``"NAME"``, ``"name=NAME"``, ``"type=TYPE"`` or ``"source_id=ID"``."""
        if isinstance(text, StreamSelector):
            return text
        key, sep, value = str(text).partition("=")
        if not sep:
            key, value = "name", str(text)
        key = key.strip()
        if key not in _SELECTOR_KEYS or not value:
            raise ValueError(
                f"stream selector {text!r} is not understood; use NAME, name=NAME, type=TYPE "
                "or source_id=ID"
            )
        return cls(key, value)

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


def resolve(selector: str | StreamSelector, timeout: float = 10.0) -> list[pylsl.StreamInfo]:
    """Streams matching ``selector`` (at least one, else TimeoutError), one per uid."""
    sel = StreamSelector.parse(selector)
    found = pylsl.resolve_byprop(sel.key, sel.value, minimum=1, timeout=timeout)
    if not found:
        raise TimeoutError(
            f"no LSL stream with {sel} found within {timeout:g} s; check that the outlet runs "
            "(and its exact name: 'bci-sim' opens 'bci-sim', 'bci-sim-kinematics', ...); "
            + visible_summary()
        )
    unique: dict[str, pylsl.StreamInfo] = {}
    for info in found:
        unique.setdefault(info.uid(), info)
    return list(unique.values())


@dataclass
class _Track:
    """One recorded stream: its inlet, thread and counters."""

    stream_id: int
    name: str
    type: str
    channel_format: str
    inlet: Any
    thread: threading.Thread | None = None
    samples: int = 0
    chunks: int = 0
    clock_offsets: int = 0
    first_timestamp: float = math.nan
    last_timestamp: float = math.nan
    state: RecordingState = RecordingState.RECORDING  # -> stopped | lost | error


class Recorder:
    """Record the selected LSL streams to ``path`` (XDF) until :meth:`stop`.

    Args:
        path: output file; written as ``<path>.part`` and renamed on stop.
        streams: selectors (see the module docstring), e.g. ``["bci-sim", "type=Kinematics"]``.
        resolve_timeout: seconds to wait for each selector's stream(s) on :meth:`start`.
        offset_interval_s: seconds between clock-offset measurements (LabRecorder: 5).
        boundary_interval_s: seconds between Boundary chunks (LabRecorder: 10).
        overwrite: replace an existing ``path``.
        max_buflen_s: seconds of data each inlet buffers while the writer is busy.

    Lifecycle: :meth:`start`, :meth:`stop` (returns the file path), context manager;
    ``running`` while recording, :meth:`counters` per stream.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        streams: Sequence[str | StreamSelector],
        *,
        resolve_timeout: float = 10.0,
        offset_interval_s: float = 5.0,
        boundary_interval_s: float = 10.0,
        overwrite: bool = False,
        max_buflen_s: int = 360,
    ) -> None:
        if isinstance(streams, (str, StreamSelector)):
            streams = [streams]
        if not streams:
            raise ValueError("Recorder needs at least one stream selector, e.g. ['bci-sim']")
        self.selectors = tuple(StreamSelector.parse(s) for s in streams)
        self.path = Path(path)
        for name, value in (
            ("resolve_timeout", resolve_timeout),
            ("offset_interval_s", offset_interval_s),
            ("boundary_interval_s", boundary_interval_s),
        ):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a number of seconds > 0")
        self.resolve_timeout = float(resolve_timeout)
        self.offset_interval_s = float(offset_interval_s)
        self.boundary_interval_s = float(boundary_interval_s)
        self.overwrite = overwrite
        self.max_buflen_s = int(max_buflen_s)
        self._writer: XdfWriter | None = None
        self._tracks: list[_Track] = []
        self._stop = threading.Event()
        self._clock_thread: threading.Thread | None = None
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._state = RecordingState.NEW  # new -> recording -> stopped

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Recorder:
        """Resolve the streams, open the file and the inlets, start recording.

        Raises TimeoutError if a selector matches no stream, FileExistsError if ``path``
        exists (and not ``overwrite``), FileNotFoundError if its directory is missing.
        """
        if self._state != RecordingState.NEW:
            raise RuntimeError(
                f"recorder for {self.path} was already started; create a new Recorder"
            )
        infos: dict[str, pylsl.StreamInfo] = {}
        for selector in self.selectors:
            for info in resolve(selector, self.resolve_timeout):
                infos.setdefault(info.uid(), info)
        writer = XdfWriter(self.path, overwrite=self.overwrite)
        try:
            for stream_id, info in enumerate(infos.values(), start=1):
                self._tracks.append(self._open_track(writer, stream_id, info))
        except BaseException:
            writer.abort()
            Path(writer.part_path).unlink(missing_ok=True)
            self._tracks.clear()
            raise
        self._writer = writer
        self._state = RecordingState.RECORDING
        for track in self._tracks:
            track.thread = threading.Thread(
                target=self._record, args=(track,), name=f"record-{track.name}", daemon=True
            )
            track.thread.start()
        self._clock_thread = threading.Thread(target=self._clock, name="record-clock", daemon=True)
        self._clock_thread.start()
        logger.info(
            "recording %s to %s",
            ", ".join(f"{t.name!r} ({t.type})" for t in self._tracks),
            writer.part_path,
        )
        return self

    def stop(self, timeout: float = 10.0) -> Path:
        """Drain the inlets, write the last clock offsets and the footers; return the path.

        Raises RuntimeError if a recording thread failed (the data are kept in ``.part``).
        """
        if self._state == RecordingState.STOPPED:
            return self.path
        if self._state == RecordingState.NEW:
            raise RuntimeError("recorder was not started; call start() first")
        self._stop.set()
        for track in self._tracks:
            assert track.thread is not None
            track.thread.join(timeout)
            if track.thread.is_alive():
                self._errors.append(f"{track.name}: recording thread did not stop in {timeout} s")
        if self._clock_thread is not None:
            self._clock_thread.join(timeout)
        assert self._writer is not None
        self._state = RecordingState.STOPPED
        if self._errors:
            part = self._writer.abort()
            self._close_inlets()
            raise RuntimeError(
                f"recording to {self.path} failed ({'; '.join(self._errors)}); the data written "
                f"so far are in {part}"
            )
        self._measure_offsets()
        path = self._writer.close()
        self._close_inlets()
        logger.info(
            "recorded %s",
            ", ".join(f"{t.name}: {t.samples} samples" for t in self._tracks),
        )
        return path

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != RecordingState.RECORDING:
            return
        if exc_type is None:
            self.stop()
            return
        self._stop.set()  # an error propagates: keep what was written in .part
        for track in self._tracks:
            if track.thread is not None:
                track.thread.join(5.0)
        if self._clock_thread is not None:
            self._clock_thread.join(5.0)
        self._state = RecordingState.STOPPED
        assert self._writer is not None
        self._writer.abort()
        self._close_inlets()

    # --- state ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._state == RecordingState.RECORDING

    @property
    def stream_names(self) -> tuple[str, ...]:
        """Names of the streams being recorded (after :meth:`start`)."""
        return tuple(t.name for t in self._tracks)

    def counters(self) -> dict[str, dict[str, object]]:
        """Per stream: samples and chunks written, clock offsets, first/last timestamp, state."""
        with self._lock:
            return {
                t.name: {
                    "stream_id": t.stream_id,
                    "type": t.type,
                    "samples": t.samples,
                    "chunks": t.chunks,
                    "clock_offsets": t.clock_offsets,
                    "first_timestamp": t.first_timestamp,
                    "last_timestamp": t.last_timestamp,
                    "state": t.state,
                }
                for t in self._tracks
            }

    def wait_samples(self, counts: dict[str, int], timeout: float) -> bool:
        """Wait until each named stream has at least ``counts[name]`` samples written."""
        deadline = time.monotonic() + timeout
        while True:
            current = {name: c["samples"] for name, c in self.counters().items()}
            if all(current.get(name, 0) >= n for name, n in counts.items()):
                return True
            if time.monotonic() > deadline or self._errors:
                return False
            time.sleep(0.02)

    # --- internals ------------------------------------------------------------------------

    def _open_track(self, writer: XdfWriter, stream_id: int, info: pylsl.StreamInfo) -> _Track:
        fmt = _FORMAT_NAMES.get(info.channel_format())
        if fmt is None:
            raise ValueError(
                f"stream {info.name()!r} has an unsupported channel format {info.channel_format()}"
            )
        inlet = pylsl.StreamInlet(info, max_buflen=self.max_buflen_s, recover=True)
        full = inlet.info(timeout=self.resolve_timeout)  # with the desc (labels, units)
        inlet.open_stream(timeout=self.resolve_timeout)
        # the header exactly as the outlet declares it, as LabRecorder keeps it
        writer.add_stream_header(stream_id, full.as_xml())
        return _Track(stream_id, full.name(), full.type(), fmt, inlet)

    def _record(self, track: _Track) -> None:
        """One stream's thread: pull with timeout=0 until stopped, then drain and return."""
        assert self._writer is not None
        numeric = track.channel_format != "string"
        try:
            while True:
                stopping = self._stop.is_set()
                data, stamps = track.inlet.pull_chunk(
                    timeout=0.0, max_samples=4096, as_numpy=numeric
                )
                n = len(stamps)
                if n:
                    self._writer.write_samples(track.stream_id, np.asarray(stamps), data)
                    with self._lock:
                        if track.samples == 0:
                            track.first_timestamp = float(stamps[0])
                        track.last_timestamp = float(stamps[-1])
                        track.samples += n
                        track.chunks += 1
                    continue  # more may be waiting
                if stopping:  # stop was asked before this empty pull: drained
                    break
                time.sleep(0.005)
            track.state = RecordingState.STOPPED
        except pylsl.LostError:
            track.state = RecordingState.LOST
            logger.warning("stream %r was lost (its outlet is gone for good)", track.name)
        except Exception as error:  # reported by stop()
            track.state = RecordingState.ERROR
            self._errors.append(f"{track.name}: {type(error).__name__}: {error}")
            logger.exception("recording stream %r failed", track.name)

    def _clock(self) -> None:
        next_offset = time.monotonic()  # measure at once, then every offset_interval_s
        next_boundary = time.monotonic() + self.boundary_interval_s
        while True:
            now = time.monotonic()
            try:
                if now >= next_offset:
                    self._measure_offsets()
                    next_offset = now + self.offset_interval_s
                if now >= next_boundary:
                    assert self._writer is not None
                    self._writer.write_boundary()
                    next_boundary = now + self.boundary_interval_s
            except Exception as error:
                self._errors.append(f"clock offsets: {type(error).__name__}: {error}")
                logger.exception("clock offset thread failed")
                return
            if self._stop.wait(0.1):
                return

    def _measure_offsets(self) -> None:
        assert self._writer is not None
        for track in self._tracks:
            if track.state not in (RecordingState.RECORDING, RecordingState.STOPPED):
                continue
            try:
                offset = track.inlet.time_correction(timeout=2.5)
            except pylsl.TimeoutError:
                logger.warning("no clock offset for %r within 2.5 s", track.name)
                continue
            except pylsl.LostError:
                continue
            now = pylsl.local_clock()
            self._writer.write_clock_offset(track.stream_id, now - offset, offset)
            with self._lock:
                track.clock_offsets += 1

    def _close_inlets(self) -> None:
        for track in self._tracks:
            try:
                track.inlet.close_stream()
            except Exception:  # the outlet may be gone already
                logger.debug("closing inlet of %r failed", track.name, exc_info=True)
