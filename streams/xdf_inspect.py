"""Inspect XDF recordings: per-stream sample counts, rates, gaps, clock offsets and footers
(backs ``bci replay --inspect FILE``), and a plain-text table of them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streams.timestamps import analyse_timing
from streams.xdf_read import XdfStream, read_xdf_streams

__all__ = ["StreamSummary", "format_inspection", "inspect_xdf", "summarize_stream"]


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
