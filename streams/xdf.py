"""XDF recordings: the public names of reading, inspection, session building and writing.

One import for callers (``from streams.xdf import read_xdf_streams, session_from_xdf``); each
job has its own module:

- :mod:`streams.xdf_read`: reading through pyxdf (clock synchronization, raw timestamps
  kept, strict about damaged files unless told otherwise);
- :mod:`streams.xdf_inspect`: per-stream summaries for ``bci replay --inspect``;
- :mod:`streams.xdf_session`: a :class:`streams.session.Session` from chosen streams,
  binned by the live front-end;
- :mod:`streams.xdf_writer`: writing (:class:`XdfWriter`, :func:`write_session_xdf`).
"""

from __future__ import annotations

from streams.xdf_inspect import StreamSummary, format_inspection, inspect_xdf, summarize_stream
from streams.xdf_read import XdfStream, XdfStreamNotFoundError, read_xdf_streams
from streams.xdf_session import (
    XdfSessionReport,
    interpolate_at,
    session_from_xdf,
    session_from_xdf_with_report,
)
from streams.xdf_writer import CHANNEL_FORMATS, XdfError, XdfWriter, write_session_xdf

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
