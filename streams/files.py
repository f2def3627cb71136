"""Session files of any format: NPZ sessions, XDF recordings and NWB files, behind one
interface (chosen by extension: ``.xdf`` / ``.xdfz`` / ``.xdf.part``, ``.nwb``, else NPZ).

An XDF recording still named ``FILE.xdf.part`` is one a recorder did not finish (see
:class:`streams.xdf.XdfWriter`): it is read as far as it goes, without footers. Errors name
the command-line flags (``--neural``, ``--bin-ms`` ...) that choose streams and bins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streams.lsl_outlet import KINEMATICS_TYPE, NEURAL_TYPE, TARGETS_TYPE
from streams.nwb import is_nwb, load_nwb_session, read_nwb
from streams.session import Session, SessionError, load_session
from streams.xdf import StreamSummary, XdfStream, inspect_xdf, session_from_xdf, summarize_stream

__all__ = ["inspect_session_file", "is_nwb", "is_partial", "is_xdf", "load_any_session"]

PARTIAL_SUFFIX = ".part"


def is_partial(path: Path) -> bool:
    """True for an unfinished XDF recording (``FILE.xdf.part``)."""
    return Path(path).suffix.lower() == PARTIAL_SUFFIX and is_xdf(path)


def is_xdf(path: Path) -> bool:
    """True for an XDF recording (by extension, finished or ``.part``), False for an NPZ
    session file."""
    path = Path(path)
    if path.suffix.lower() == PARTIAL_SUFFIX:
        path = path.with_suffix("")
    return path.suffix.lower() in (".xdf", ".xdfz")


def inspect_session_file(path: Path) -> list[StreamSummary]:
    """Per-stream summaries of an XDF recording, an NPZ session (one stream per array) or
    an NWB file (the units' spike events, then each behaviour series)."""
    path = Path(path)
    if is_xdf(path):
        return inspect_xdf(path)
    if is_nwb(path):
        return _inspect_nwb(path)
    session = load_session(path)
    parts = [("neural", NEURAL_TYPE, session.neural, session.channel_labels)]
    if session.kinematics is not None:
        parts.append(("kinematics", KINEMATICS_TYPE, session.kinematics, session.kinematics_labels))
    if session.targets is not None:
        parts.append(("targets", TARGETS_TYPE, session.targets, ("x", "y")))
    return [
        _summary(stream_id, name, kind, session.timestamps, data, labels, 1.0 / session.bin_s)
        for stream_id, (name, kind, data, labels) in enumerate(parts, start=1)
    ]


def _inspect_nwb(path: Path) -> list[StreamSummary]:
    contents = read_nwb(path)
    units = _summary(
        1,
        "units",
        NEURAL_TYPE,
        contents.spike_times,
        contents.spike_units[:, None],
        tuple(f"unit{i}" for i in contents.unit_ids),
        0.0,
        channel_format="int64",
    )
    return [units] + [
        _summary(i, name, "Behavior", s.times, s.values, s.axes, s.rate_hz)
        for i, (name, s) in enumerate(contents.behavior.items(), start=2)
    ]


def _summary(
    stream_id: int,
    name: str,
    kind: str,
    times: np.ndarray,
    data: np.ndarray,
    labels: tuple[str, ...] | None,
    rate_hz: float,
    channel_format: str = "float32",
) -> StreamSummary:
    """Summary of one array as a stream; ``labels`` give its channel count (an events
    stream's one column is the channel index)."""
    stream = XdfStream(
        stream_id=stream_id,
        name=name,
        type=kind,
        source_id="",
        channel_count=int(data.shape[1]) if labels is None else len(labels),
        nominal_srate=rate_hz,
        channel_format=channel_format,
        channel_labels=labels,
        channel_units=None,
        time_stamps=times,
        time_series=data,
        raw_time_stamps=times,
        clock_times=np.zeros(0),
        clock_values=np.zeros(0),
        clock_segments=(),
        has_footer=True,
        footer_sample_count=int(times.shape[0]),
    )
    return summarize_stream(stream)


def _pick_stream(
    summaries: list[StreamSummary], wanted: str | None, kind: str, role: str
) -> str | None:
    """Name of the stream for ``role``: ``wanted`` if given, else the one typed ``kind``."""
    if wanted is not None:
        return wanted
    typed = [
        s for s in summaries if s.type.lower() == kind.lower() and s.channel_format != "string"
    ]
    if len(typed) > 1:
        names = ", ".join(s.name for s in typed)
        raise ValueError(f"several {kind} streams ({names}); choose one with --{role}")
    return typed[0].name if typed else None


def load_any_session(
    path: Path,
    neural: str | None = None,
    kinematics: str | None = None,
    targets: str | None = None,
    bin_s: float | None = None,
) -> Session:
    """A Session from an NPZ file, or from an XDF recording's streams chosen by name or type
    (by default the streams typed Neural, Kinematics and Targets), or from an NWB file (spike
    times binned at ``bin_s``, the behaviour series named by ``kinematics`` and ``targets``;
    see :mod:`streams.nwb`)."""
    path = Path(path)
    if is_nwb(path):
        if neural is not None:
            raise SessionError(
                f"{path} is an NWB file: its neural data are the Units table's spike times; "
                "drop --neural"
            )
        return load_nwb_session(path, bin_s=bin_s, kinematics=kinematics, targets=targets)
    if not is_xdf(path):
        return load_session(path)
    summaries = inspect_xdf(path)
    neural_name = _pick_stream(summaries, neural, NEURAL_TYPE, "neural")
    if neural_name is None:
        present = ", ".join(f"{s.name} ({s.type})" for s in summaries) or "none"
        raise ValueError(
            f"{path} has no stream of type {NEURAL_TYPE!r}; name the neural stream with "
            f"--neural (streams: {present})"
        )
    named = [s for s in summaries if s.name == neural_name]  # by name, else by type
    _check_bins(path, named or [s for s in summaries if s.type == neural_name], bin_s)
    return session_from_xdf(
        path,
        neural_name,
        kinematics=_pick_stream(summaries, kinematics, KINEMATICS_TYPE, "kinematics"),
        targets=_pick_stream(summaries, targets, TARGETS_TYPE, "targets"),
        bin_s=bin_s,
        allow_truncated=is_partial(path),
    )


def _check_bins(path: Path, neural: list[StreamSummary], bin_s: float | None) -> None:
    """A bin width the neural stream can be binned at (``--bin-ms``), before reading it."""
    if len(neural) != 1:
        return  # none or several: session_from_xdf names the streams
    stream = neural[0]
    if stream.nominal_srate <= 0 and bin_s is None:
        raise ValueError(
            f"neural stream '{stream.name}' in {path} is irregular (no nominal rate); give "
            "the bin width to sum its samples into with --bin-ms"
        )
    if stream.nominal_srate > 0 and bin_s is not None:
        period_ms = 1e3 / stream.nominal_srate
        if bin_s * 1e3 < period_ms * (1 - 1e-6):
            raise ValueError(
                f"--bin-ms {bin_s * 1e3:g} is shorter than the {period_ms:g} ms sample period "
                f"of neural stream '{stream.name}' in {path}; use --bin-ms {period_ms:g} or "
                "more, or drop --bin-ms for one bin per sample"
            )
