"""Reader for NWB files (Neurodata Without Borders, read with pynwb) as a :class:`Session`.

The layout read is the one the Neural Latents Benchmark and most DANDI datasets use:

- **neural**: the Units table's ``spike_times``, one channel per unit (labelled
  ``unit<id>``), binned by the live input front-end (:class:`streams.frontend.FrontEnd`,
  ``events`` kind): causal bins ``(t_k - bin_s, t_k]`` with ``t_k = k * bin_s`` on the
  file's clock (seconds from ``session_start_time``), so a model calibrated here sees the
  bins a live spike-event stream gives. Default bin width :data:`DEFAULT_BIN_S`.
- **kinematics**: a TimeSeries or SpatialSeries of the ``processing/behavior`` module,
  directly in it (NLB: ``hand_vel``, ``cursor_pos``, ``finger_vel`` ...) or inside a
  container such as ``Position`` or ``BehavioralTimeSeries`` (named ``Position/hand``).
  Chosen by name, or by default the first of :data:`VELOCITY_SERIES`, else the only series
  named ``*vel*``, else the first of :data:`POSITION_SERIES`, else the only position series.
  Values are in the series' unit (``data * conversion + offset``). A velocity (or any other
  non-position) series is linearly interpolated at the bin end times. A **position** series
  (named ``*pos*`` / ``*position*``, or inside a ``Position`` container) is differentiated:
  ``v_k = (p(t_k) - p(t_k - bin_s)) / bin_s``, the mean velocity over the bin, in the
  position unit per second (``p`` linearly interpolated).
- **targets** (optional, by name only): a 2-column series (e.g. NLB MC_RTT ``target_pos``),
  interpolated at the bin end times.

A bin is kept when the kinematics (and targets) cover it: inside the series' time range,
not across a gap between samples longer than 10 median sample periods, finite (NLB fills
inter-trial gaps with NaN), and, when the Units table has ``obs_intervals``, inside an
observation interval of every unit. Dropped bins leave gaps in the session's timestamps;
the counts are logged. The trials table is not needed (and not read).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streams.frontend import FrontEnd, bin_recording
from streams.session import Session, SessionError
from streams.xdf import interpolate_at

__all__ = [
    "DEFAULT_BIN_S",
    "POSITION_SERIES",
    "VELOCITY_SERIES",
    "NwbContents",
    "NwbSeries",
    "is_nwb",
    "load_nwb_session",
    "read_nwb",
    "session_from_nwb",
]

logger = logging.getLogger(__name__)

DEFAULT_BIN_S = 0.05
BEHAVIOR_MODULE = "behavior"
VELOCITY_SERIES: tuple[str, ...] = ("hand_vel", "cursor_vel", "finger_vel")
POSITION_SERIES: tuple[str, ...] = ("hand_pos", "cursor_pos", "finger_pos")
_MAX_GAP_PERIODS = 10.0  # a longer gap between behaviour samples is never interpolated across
_EDGE = 1e-9  # seconds of float slack at bin edges


@dataclass(frozen=True, eq=False)
class NwbSeries:
    """One behaviour series: ``values`` (n, K) in ``unit`` at ``times`` (n,) seconds."""

    name: str
    times: np.ndarray
    values: np.ndarray
    unit: str
    rate_hz: float  # the series' declared rate; 0 when it has explicit timestamps
    position: bool  # differentiated to velocity when used as kinematics
    axes: tuple[str, ...]  # column names (x, y, z, or the NLB ``columns=[...]`` comment)


@dataclass(frozen=True, eq=False)
class NwbContents:
    """What :func:`read_nwb` found: spikes (sorted by time) and behaviour series."""

    spike_times: np.ndarray  # (S,) float64 seconds, sorted
    spike_units: np.ndarray  # (S,) int64 unit index (row of the Units table) per spike
    unit_ids: tuple[int, ...]
    obs_intervals: list[np.ndarray] | None  # per unit (m, 2) seconds, or None
    behavior: dict[str, NwbSeries]


def is_nwb(path: str | os.PathLike[str]) -> bool:
    """True for an NWB file (by extension)."""
    return Path(path).suffix.lower() == ".nwb"


def read_nwb(path: str | os.PathLike[str]) -> NwbContents:
    """Read the Units table and the behaviour series of the NWB file at ``path``.

    Raises FileNotFoundError for a missing file and SessionError for a file pynwb cannot
    read or one without spike times.
    """
    from pynwb import NWBHDF5IO  # imported here: pynwb takes seconds to import

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NWB file {path} does not exist; check the path")
    try:
        with NWBHDF5IO(str(path), mode="r") as io:
            nwbfile = io.read()
            spikes = _read_units(path, nwbfile.units)
            module = nwbfile.processing.get(BEHAVIOR_MODULE)
            behavior = {} if module is None else _read_behavior(module)
    except SessionError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SessionError(
            f"cannot read {path} as an NWB file ({exc}); the file is damaged or not NWB 2"
        ) from None
    return NwbContents(*spikes, behavior=behavior)


def _read_units(
    path: Path, units: Any
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], list[np.ndarray] | None]:
    if units is None or len(units) == 0 or "spike_times" not in units.colnames:
        raise SessionError(
            f"NWB file {path} has no Units table with spike_times; the neural data of a "
            "session are the sorted units' spike times"
        )
    flat = np.asarray(units["spike_times"].target.data[:], dtype=np.float64)
    ends = np.asarray(units["spike_times_index"].data[:], dtype=np.int64)
    unit = np.repeat(np.arange(ends.size), np.diff(ends, prepend=0))
    if not np.isfinite(flat).all():
        raise SessionError(f"NWB file {path}: the Units table holds non-finite spike times")
    order = np.argsort(flat, kind="stable")
    intervals = None
    if "obs_intervals" in units.colnames:
        pairs = np.asarray(units["obs_intervals"].target.data[:], dtype=np.float64)
        bounds = np.asarray(units["obs_intervals_index"].data[:], dtype=np.int64)
        intervals = np.split(pairs.reshape(-1, 2), bounds[:-1])
    ids = tuple(int(i) for i in units.id[:])
    return flat[order], unit[order], ids, intervals


def _read_behavior(module: Any) -> dict[str, NwbSeries]:
    from pynwb import TimeSeries
    from pynwb.behavior import Position

    found: dict[str, NwbSeries] = {}
    for name, item in module.data_interfaces.items():
        if isinstance(item, TimeSeries):
            found[name] = _series(name, item, in_position=False)
            continue
        for child in getattr(item, "children", ()):
            if isinstance(child, TimeSeries):
                full = f"{name}/{child.name}"
                found[full] = _series(full, child, in_position=isinstance(item, Position))
    return found


def _series(name: str, series: Any, in_position: bool) -> NwbSeries:
    values = np.asarray(series.get_data_in_units(), dtype=np.float64)
    values = values.reshape(values.shape[0], -1)
    leaf = name.rsplit("/", 1)[-1].lower()
    named = re.search(r"columns=\[([^\]]*)\]", series.comments or "")
    axes = tuple(a.strip() for a in named.group(1).split(",")) if named else ()
    if len(axes) != values.shape[1] or len(set(axes)) != len(axes):
        axes = ("x", "y", "z")[: values.shape[1]] if values.shape[1] <= 3 else ()
        axes = axes or tuple(str(i) for i in range(values.shape[1]))
    return NwbSeries(
        name=name,
        times=np.asarray(series.get_timestamps(), dtype=np.float64),
        values=values,
        unit=str(series.unit),
        rate_hz=float(series.rate) if series.rate is not None else 0.0,
        position=in_position or leaf.endswith(("pos", "position")),
        axes=axes,
    )


def load_nwb_session(
    path: str | os.PathLike[str],
    bin_s: float | None = None,
    kinematics: str | None = None,
    targets: str | None = None,
) -> Session:
    """The NWB file at ``path`` as a Session (see the module docstring): spikes binned at
    ``bin_s`` (default :data:`DEFAULT_BIN_S`), the ``kinematics`` series (default: chosen
    as described there; none when the file has no behaviour) and the ``targets`` series."""
    return session_from_nwb(read_nwb(path), Path(path), bin_s, kinematics, targets)


def session_from_nwb(
    contents: NwbContents,
    path: Path,
    bin_s: float | None = None,
    kinematics: str | None = None,
    targets: str | None = None,
) -> Session:
    """Bin and align what :func:`read_nwb` read from ``path`` (named in errors)."""
    bin_s = DEFAULT_BIN_S if bin_s is None else float(bin_s)
    if not (np.isfinite(bin_s) and bin_s > 0):
        raise SessionError(f"the bin width must be a positive number of seconds; got {bin_s}")
    kin = _choose_kinematics(path, contents.behavior, kinematics)
    tgt = None if targets is None else _named(path, contents.behavior, targets, "--targets")
    if tgt is not None and tgt.values.shape[1] != 2:
        raise SessionError(
            f"behaviour series '{tgt.name}' in {path} has {tgt.values.shape[1]} columns; "
            "--targets needs a 2-column (x, y) position series"
        )
    k = _bin_indices(contents, kin, bin_s)
    times = k * bin_s
    keep = np.ones(times.shape, dtype=bool)
    columns: dict[str, np.ndarray] = {}
    for role, series in (("kinematics", kin), ("targets", tgt)):
        if series is not None:
            differentiate = role == "kinematics" and series.position
            columns[role], ok = _at_bins(series, times, bin_s, differentiate)
            keep &= ok
    if contents.obs_intervals is not None:
        keep &= _observed(contents.obs_intervals, times, bin_s)
    if not keep.any():
        raise SessionError(
            f"no {bin_s * 1e3:g} ms bin of NWB file {path} is covered by the spike "
            "observation intervals and the behaviour series; check the file's time ranges"
        )
    counts = _spike_counts(contents, bin_s, int(k[0]), int(k[-1]))
    dropped = int((~keep).sum())
    if dropped:
        logger.warning("NWB %s: dropped %d of %d bins not covered", path, dropped, keep.size)
    session = Session(
        neural=counts[keep],
        timestamps=times[keep],
        bin_s=bin_s,
        kinematics=columns["kinematics"][keep] if kin is not None else None,
        kinematics_labels=_labels(kin) if kin is not None else None,
        targets=columns["targets"][keep] if tgt is not None else None,
        channel_labels=tuple(f"unit{i}" for i in contents.unit_ids),
    )
    logger.info("NWB %s -> %r (kinematics: %s)", path, session, kin and kin.name)
    return session


def _choose_kinematics(
    path: Path, behavior: dict[str, NwbSeries], wanted: str | None
) -> NwbSeries | None:
    if wanted is not None:
        return _named(path, behavior, wanted, "--kinematics")
    leaf = {name: name.rsplit("/", 1)[-1].lower() for name in behavior}
    velocity = [n for n in behavior if "vel" in leaf[n] and not behavior[n].position]
    position = [n for n in behavior if behavior[n].position]
    for preferred, found in ((VELOCITY_SERIES, velocity), (POSITION_SERIES, position)):
        for name in preferred:
            if name in behavior:
                return behavior[name]
        if len(found) == 1:
            return behavior[found[0]]
        if len(found) > 1:
            raise SessionError(
                f"NWB file {path} has several behaviour series that could be the kinematics "
                f"({', '.join(found)}); choose one with --kinematics"
            )
    if behavior:
        logger.info("NWB %s: no velocity or position series among %s", path, list(behavior))
    return None


def _named(path: Path, behavior: dict[str, NwbSeries], name: str, flag: str) -> NwbSeries:
    if name in behavior:
        return behavior[name]
    present = ", ".join(behavior) or "none"
    raise SessionError(
        f"NWB file {path} has no behaviour series '{name}' in processing/{BEHAVIOR_MODULE} "
        f"(series present: {present}); give one of them with {flag}"
    )


def _bin_indices(contents: NwbContents, kin: NwbSeries | None, bin_s: float) -> np.ndarray:
    """Indices k of the bins ``(t_k - bin_s, t_k]`` inside the time range of the session:
    the kinematics series if any, else the observation intervals, else the spikes."""
    if kin is not None:
        start, stop = float(kin.times[0]), float(kin.times[-1])
    elif contents.obs_intervals is not None and any(i.size for i in contents.obs_intervals):
        joined = np.concatenate(contents.obs_intervals)
        start, stop = float(joined[:, 0].min()), float(joined[:, 1].max())
    elif contents.spike_times.size:
        start, stop = float(contents.spike_times[0]), float(contents.spike_times[-1])
    else:
        raise SessionError("the NWB Units table has no spikes and no observation intervals")
    first = int(np.ceil((start - _EDGE) / bin_s))
    last = int(np.floor((stop + _EDGE) / bin_s))
    if last < first:
        raise SessionError(
            f"the session spans {start:.3f}-{stop:.3f} s, less than one {bin_s * 1e3:g} ms bin"
        )
    return np.arange(first, last + 1)


def _spike_counts(contents: NwbContents, bin_s: float, first: int, last: int) -> np.ndarray:
    """(last - first + 1, units) spike counts of bins ``first..last``, from the live
    front-end fed the spikes as an events stream (one unit index per spike)."""
    n_units = len(contents.unit_ids)
    times = contents.spike_times
    lo, hi = np.searchsorted(times, [(first - 2) * bin_s, (last + 1) * bin_s])
    front = FrontEnd("events", bin_s, n_units, sample_rate_hz=0.0, grace_s=0.0)
    bins = bin_recording(front, contents.spike_units[lo:hi, None], times[lo:hi], until=last * bin_s)
    counts = np.zeros((last - first + 1, n_units), dtype=np.float64)
    k = np.rint(bins.end_times / bin_s).astype(np.int64)
    inside = (k >= first) & (k <= last)
    counts[k[inside] - first] = bins.data[inside]
    return counts


def _at_bins(
    series: NwbSeries, times: np.ndarray, bin_s: float, differentiate: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The series at the bin end times (or its mean velocity over each bin) and the mask of
    bins it covers."""
    steps = np.diff(series.times)
    if steps.size and not (steps > 0).all():
        raise SessionError(f"behaviour series '{series.name}' has timestamps that do not increase")
    period = float(np.median(steps)) if steps.size else np.inf
    max_gap = _MAX_GAP_PERIODS * period
    end, inside, in_gap = interpolate_at(times, series.times, series.values, max_gap)
    ok = inside & ~in_gap
    if differentiate:
        begin, inside0, in_gap0 = interpolate_at(
            times - bin_s, series.times, series.values, max_gap
        )
        end = (end - begin) / bin_s
        ok &= inside0 & ~in_gap0
    ok &= np.isfinite(end).all(axis=1)
    return np.where(ok[:, None], end, 0.0), ok


def _observed(intervals: list[np.ndarray], times: np.ndarray, bin_s: float) -> np.ndarray:
    """Bins ``(t - bin_s, t]`` inside an observation interval of every unit."""
    keep = np.ones(times.shape, dtype=bool)
    for unit in intervals:
        if unit.size == 0:
            return np.zeros(times.shape, dtype=bool)
        unit = unit[np.argsort(unit[:, 0])]
        i = np.searchsorted(unit[:, 0], times - bin_s + _EDGE, side="right") - 1
        found = i >= 0
        keep &= found & (unit[np.maximum(i, 0), 1] >= times - _EDGE)
    return keep


def _labels(series: NwbSeries) -> tuple[str, ...]:
    leaf = series.name.rsplit("/", 1)[-1]
    prefix = "v" if series.position else ""
    return tuple(f"{leaf}_{prefix}{axis}" for axis in series.axes)
