"""An XDF recording of what the daemon decoded: each neural input bin and its decoded output.

Two streams, both stamped on the daemon's local clock (the input bin's timestamp plus the
inlet's clock offset, which is also the stamp of the decoded sample on the outlet):

- stream 1 ``<input name>``: the neural bins as decoded (type Neural, float32, one channel per
  model input, in the model's order), labelled with the model's channel labels (else the
  source's, else ``ch000``, ``ch001``, ...), unit ``counts`` (per bin);
- stream 2 ``<output name>``: the decoded kinematics (type Kinematics, float32).

Headers keep what the live streams declare. The output stream's header is the decoded outlet's
own (``info.as_xml()`` verbatim: labels, units, acquisition, ``created_at``, hostname). The
input stream's header carries the source's ``source_id``, ``created_at`` (its creation time on
the source's clock) and ``hostname``, with the source's full header (``info.as_xml()``: desc,
channel types, acquisition, ...) kept under ``desc/source``, and ``desc/binning`` saying what
changed (``bin_s``, the source's rate and format). Headers are written just before the first
samples (by then the stream is connected), or when the recording closes; a header that is
not known by then is built from the constructor's arguments, without ``created_at``.

The decoding loop only puts ``(timestamp, input, output)`` on a queue; a writer thread
appends them to the file in batches (every ``flush_s``), so disk I/O never delays a bin. The
file is written as ``FILE.part`` and renamed when :meth:`DecodedRecording.close` finishes it.
"""

from __future__ import annotations

import logging
import queue
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from streams.lsl_outlet import KINEMATICS_TYPE, NEURAL_TYPE
from streams.xdf_writer import XdfWriter, format_float

__all__ = ["DecodedRecording", "input_header"]

logger = logging.getLogger(__name__)

_INPUT, _OUTPUT = 1, 2
BIN_UNIT = "counts"  # the input bins: spike or threshold-crossing counts per bin
Header = Callable[[], str | None]
"""Returns a live stream's ``info.as_xml()``, or None while it is not known."""


def _none() -> None:
    return None


class DecodedRecording:
    """Record input bins and decoded outputs to the XDF file ``path``.

    ``rate_hz`` is the bin rate (the streams' nominal rate); ``input_name`` /
    ``output_name`` and ``output_labels`` describe the streams; ``input_labels`` (the
    model's channel labels) and ``output_units`` (the model's ``kinematics_units``) label
    them. ``source_header`` and ``output_header`` return the live input stream's and the
    decoded outlet's ``info.as_xml()`` (None while unknown). Raises FileExistsError when
    ``path`` exists and ``overwrite`` is False.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        input_name: str,
        n_channels: int,
        output_name: str,
        output_labels: Sequence[str],
        rate_hz: float,
        input_labels: Sequence[str] | None = None,
        output_units: Sequence[str] | None = None,
        source_header: Header = _none,
        output_header: Header = _none,
        overwrite: bool = False,
        flush_s: float = 0.25,
    ) -> None:
        self.path = Path(path)
        self.flush_s = float(flush_s)
        self._input = (input_name, int(n_channels), float(rate_hz), input_labels)
        self._output = (output_name, tuple(output_labels), float(rate_hz), output_units)
        self._source_header, self._output_header = source_header, output_header
        self._headers_written = False
        self._writer = XdfWriter(self.path, overwrite=overwrite)
        self._queue: queue.SimpleQueue[tuple[float, np.ndarray, np.ndarray] | None] = (
            queue.SimpleQueue()
        )
        self.bins = 0  # bins written to the file
        self.error = ""  # why recording stopped early, if it did
        self._thread = threading.Thread(target=self._run, name="bci-recording", daemon=True)
        self._thread.start()

    def add(self, timestamp: float, neural: np.ndarray, decoded: np.ndarray) -> None:
        """Queue one bin: ``timestamp`` (local clock, s), input (C,), output (K,)."""
        if not self.error:
            self._queue.put((timestamp, neural, decoded))

    def close(self, timeout: float = 10.0) -> Path:
        """Write what is queued and finish the file; returns its path, or the ``.part``
        file holding what was written when writing failed (safe to call twice)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        if self.error:
            return self._writer.part_path
        return self._writer.close()

    def _run(self) -> None:
        done = False
        while not done and not self.error:
            rows = []
            try:
                item = self._queue.get(timeout=self.flush_s)
                while item is not None:
                    rows.append(item)
                    item = self._queue.get_nowait()
                done = True  # None: the last batch
            except queue.Empty:
                pass
            if rows or (done and not self._headers_written):
                self._write(rows)

    def _write_headers(self) -> None:
        name, n_channels, rate, labels = self._input
        self._writer.add_stream_header(
            _INPUT, input_header(name, n_channels, rate, labels, self._source_header())
        )
        output = self._output_header()
        if output is not None:
            self._writer.add_stream_header(_OUTPUT, output)
        else:
            name, out_labels, rate, units = self._output
            self._writer.add_stream(_OUTPUT, name, KINEMATICS_TYPE, len(out_labels), rate,
                                    "float32", channel_labels=list(out_labels),
                                    channel_units=units)  # fmt: skip
        self._headers_written = True

    def _write(self, rows: list[tuple[float, np.ndarray, np.ndarray]]) -> None:
        try:
            if not self._headers_written:
                self._write_headers()
            if not rows:
                return
            stamps = np.array([r[0] for r in rows], dtype=np.float64)
            self._writer.write_samples(_INPUT, stamps, np.stack([r[1] for r in rows]))
            self._writer.write_samples(_OUTPUT, stamps, np.stack([r[2] for r in rows]))
        except (OSError, ValueError) as error:  # decoding goes on without the recording
            self.error = f"{type(error).__name__}: {error}"
            logger.error("recording to %s failed (%s); nothing more is recorded", self.path,
                         self.error)  # fmt: skip
            self._writer.abort()
            return
        self.bins += len(rows)


def input_header(
    name: str,
    n_channels: int,
    rate_hz: float,
    labels: Sequence[str] | None,
    source_xml: str | None,
) -> str:
    """The ``<info>`` header of the recorded input bins (see the module docstring).

    Labels: ``labels`` (the model's), else the source's when it has one per bin channel, else
    ``ch000``, ``ch001``, ...; ``source_xml`` (the source's ``info.as_xml()``) is kept whole
    under ``desc/source`` and lends its ``source_id``, ``created_at`` and ``hostname``.
    """
    source = ET.fromstring(source_xml.encode("utf-8")) if source_xml else None
    if labels is None and source is not None:
        found = [c.findtext("label") or "" for c in source.iterfind("desc/channels/channel")]
        labels = found if len(found) == n_channels and all(found) else None
    if labels is None:
        labels = [f"ch{c:03d}" for c in range(n_channels)]
    info = ET.Element("info")
    fields = {
        "name": name,
        "type": NEURAL_TYPE,
        "channel_count": str(n_channels),
        "nominal_srate": format_float(rate_hz),
        "channel_format": "float32",
    }
    for tag in ("source_id", "created_at", "hostname"):
        if source is not None and source.findtext(tag) is not None:
            fields[tag] = (source.findtext(tag) or "").strip()
    for tag, text in fields.items():
        ET.SubElement(info, tag).text = text
    desc = ET.SubElement(info, "desc")
    channels = ET.SubElement(desc, "channels")
    for label in labels:
        channel = ET.SubElement(channels, "channel")
        for tag, text in (("label", label), ("unit", BIN_UNIT), ("type", NEURAL_TYPE)):
            ET.SubElement(channel, tag).text = text
    binning = ET.SubElement(desc, "binning")
    ET.SubElement(binning, "bin_s").text = format_float(1.0 / rate_hz)
    if source is not None:
        for tag in ("nominal_srate", "channel_format", "channel_count"):
            ET.SubElement(binning, f"source_{tag}").text = (source.findtext(tag) or "").strip()
        source.tag = "source"
        desc.append(source)
    return ET.tostring(info, encoding="unicode")
