"""Recorded sessions: the validated in-memory record and its NPZ file format.

The file format is a contract shared with other tools; the key names are fixed:

==================== ============ ========= ================================================
key                  shape        dtype     meaning
==================== ============ ========= ================================================
``neural``           (T, C)       float32   spike counts (or features) per bin
``timestamps``       (T,)         float64   bin end times, seconds, strictly increasing
``bin_s``            ()           float64   bin width, seconds
``kinematics``       (T, K)       float32   optional, e.g. cursor velocity (cm/s)
``kinematics_labels`` (K,)        unicode   required with ``kinematics``
``kinematics_units`` (K,)         unicode   optional with ``kinematics``, e.g. ``cm/s``
``targets``          (T, 2)       float32   optional target position per bin (intention)
``channel_labels``   (C,)         unicode   optional
==================== ============ ========= ================================================

Files are written with ``np.savez_compressed`` atomically (temporary file in the same
directory, fsync, ``os.replace``) and read with ``allow_pickle=False``. Unknown keys are
refused on load, so a typo such as ``kinematic`` is never silently dropped.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import math
import operator
import os
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bci.atomic import atomic_write

logger = logging.getLogger(__name__)

REQUIRED_KEYS: tuple[str, ...] = ("neural", "timestamps", "bin_s")
OPTIONAL_KEYS: tuple[str, ...] = (
    "kinematics",
    "kinematics_labels",
    "kinematics_units",
    "targets",
    "channel_labels",
)
ALLOWED_KEYS: tuple[str, ...] = REQUIRED_KEYS + OPTIONAL_KEYS

# dtype kinds accepted for numeric arrays: bool, signed int, unsigned int, float.
_NUMERIC_KINDS = "biuf"


class SessionError(ValueError):
    """A session record or file breaks the format contract; the message says how to fix it."""


@dataclass(frozen=True, eq=False)
class Session:
    """One recorded (or simulated) session of binned neural data.

    Construction validates everything (shapes, dtypes, finiteness, ordering, labels), so every
    ``Session`` is valid. Arrays are copied and converted to the declared dtypes: integer or
    boolean counts become float32 when that is exact; object, string and complex arrays are
    refused. Treat the arrays as read-only: the record is immutable by convention.

    Attributes:
        neural: (T, C) float32 counts or features per bin.
        timestamps: (T,) float64 bin end times in seconds, strictly increasing.
        bin_s: bin width in seconds (> 0).
        kinematics: optional (T, K) float32, e.g. velocity in cm/s.
        kinematics_labels: K names, required exactly when ``kinematics`` is given.
        kinematics_units: optional K units (non-empty strings, e.g. ``("cm/s", "cm/s")``);
            only with ``kinematics``. None means the units are not known.
        targets: optional (T, 2) float32 target position per bin.
        channel_labels: optional C channel names.
    """

    neural: np.ndarray
    timestamps: np.ndarray
    bin_s: float
    kinematics: np.ndarray | None = None
    kinematics_labels: tuple[str, ...] | None = None
    targets: np.ndarray | None = None
    channel_labels: tuple[str, ...] | None = None
    kinematics_units: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        neural = _as_numeric("neural", self.neural, np.float32, ndim=2, what="(T, C)")
        n_bins, n_channels = neural.shape
        if n_bins == 0 or n_channels == 0:
            raise SessionError(
                f"session key 'neural' has shape {neural.shape}; a session needs at least one "
                "bin and one channel"
            )
        _check_finite("neural", neural, column_name="channel")
        timestamps = _as_numeric("timestamps", self.timestamps, np.float64, ndim=1, what="(T,)")
        _check_length("timestamps", timestamps, n_bins)
        _check_finite("timestamps", timestamps)
        _check_increasing(timestamps)
        bin_s = _as_bin_s(self.bin_s)

        kinematics = self.kinematics
        kinematics_labels = self.kinematics_labels
        if kinematics is not None:
            kinematics = _as_numeric("kinematics", kinematics, np.float32, ndim=2, what="(T, K)")
            _check_length("kinematics", kinematics, n_bins)
            if kinematics.shape[1] == 0:
                raise SessionError(
                    "session key 'kinematics' has zero columns; drop the key instead of saving "
                    "an empty array"
                )
            if kinematics_labels is None:
                raise SessionError(
                    "session key 'kinematics' needs 'kinematics_labels' (one name per column, "
                    "e.g. ('vx', 'vy')); pass kinematics_labels"
                )
            kinematics_labels = _as_labels(
                "kinematics_labels", kinematics_labels, kinematics.shape[1], "kinematics columns"
            )
            _check_finite("kinematics", kinematics, labels=kinematics_labels)
        elif kinematics_labels is not None:
            raise SessionError(
                "session key 'kinematics_labels' is given without 'kinematics'; pass the "
                "kinematics array or drop the labels"
            )
        kinematics_units = _as_units(self.kinematics_units, kinematics)

        targets = self.targets
        if targets is not None:
            targets = _as_numeric("targets", targets, np.float32, ndim=2, what="(T, 2)")
            _check_length("targets", targets, n_bins)
            if targets.shape[1] != 2:
                raise SessionError(
                    f"session key 'targets' has shape {targets.shape}; it must be (T, 2) "
                    "(x, y target position per bin)"
                )
            _check_finite("targets", targets, labels=("x", "y"))

        channel_labels = self.channel_labels
        if channel_labels is not None:
            channel_labels = _as_labels("channel_labels", channel_labels, n_channels, "channels")

        object.__setattr__(self, "neural", neural)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "bin_s", bin_s)
        object.__setattr__(self, "kinematics", kinematics)
        object.__setattr__(self, "kinematics_labels", kinematics_labels)
        object.__setattr__(self, "kinematics_units", kinematics_units)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "channel_labels", channel_labels)

    @property
    def n_bins(self) -> int:
        """Number of time bins T."""
        return int(self.neural.shape[0])

    @property
    def n_channels(self) -> int:
        """Number of neural channels C."""
        return int(self.neural.shape[1])

    @property
    def duration_s(self) -> float:
        """Seconds from the start of the first bin to the end of the last (gaps included)."""
        return float(self.timestamps[-1] - self.timestamps[0] + self.bin_s)

    def slice(self, start: int, stop: int) -> Session:
        """Return bins ``start <= k < stop`` as a new session (chronological sub-range)."""
        start, stop = operator.index(start), operator.index(stop)
        if not 0 <= start < stop <= self.n_bins:
            raise SessionError(
                f"cannot slice bins [{start}, {stop}) of a session with {self.n_bins} bins; "
                f"use 0 <= start < stop <= {self.n_bins}"
            )
        return Session(
            neural=self.neural[start:stop],
            timestamps=self.timestamps[start:stop],
            bin_s=self.bin_s,
            kinematics=None if self.kinematics is None else self.kinematics[start:stop],
            kinematics_labels=self.kinematics_labels,
            targets=None if self.targets is None else self.targets[start:stop],
            channel_labels=self.channel_labels,
            kinematics_units=self.kinematics_units,
        )

    def __repr__(self) -> str:
        parts = [
            f"n_bins={self.n_bins}",
            f"n_channels={self.n_channels}",
            f"bin_s={self.bin_s:g}",
            f"duration_s={self.duration_s:.3f}",
        ]
        if self.kinematics_labels is not None:
            parts.append(f"kinematics={self.kinematics_labels}")
        if self.kinematics_units is not None:
            parts.append(f"units={self.kinematics_units}")
        if self.targets is not None:
            parts.append("targets=yes")
        return f"Session({', '.join(parts)})"


def chronological_split(
    session: Session,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    min_bins: int = 10,
) -> tuple[Session, ...]:
    """Split a session into contiguous parts in time order (e.g. train, validation, test).

    Part boundaries are ``round(cumsum(fractions) * T)``, so the parts cover every bin once.
    Raises SessionError if the fractions are not positive and summing to 1, or if any part
    would have fewer than ``min_bins`` bins.
    """
    fracs = [float(f) for f in fractions]
    if not fracs or any(not math.isfinite(f) or f <= 0 for f in fracs):
        raise SessionError(f"split fractions {tuple(fracs)} must be positive finite numbers")
    if abs(sum(fracs) - 1.0) > 1e-6:
        raise SessionError(
            f"split fractions {tuple(fracs)} sum to {sum(fracs):g}; they must sum to 1"
        )
    n = session.n_bins
    bounds = [0] + [round(float(c) * n) for c in np.cumsum(fracs)[:-1]] + [n]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    if min(sizes) < min_bins:
        raise SessionError(
            f"splitting {n} bins by {tuple(fracs)} gives parts of {sizes} bins; every part "
            f"needs at least {min_bins} bins: use a longer session or larger fractions"
        )
    return tuple(session.slice(a, b) for a, b in itertools.pairwise(bounds))


def save_session(path: str | os.PathLike[str], session: Session) -> Path:
    """Write ``session`` to ``path`` (exactly that name) as compressed NPZ, atomically.

    The data go to a temporary file in the same directory, which is flushed, fsynced and then
    renamed over ``path``; readers never see a partial file. Returns the path written.
    """
    path = Path(path)
    if not isinstance(session, Session):
        raise TypeError(f"save_session expects a Session, got {type(session).__name__}")
    # The arrays are mutable; re-validate so a record edited in place cannot be saved broken.
    session = _revalidated(session)
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"cannot save session to {path}: directory {parent} does not exist; create it first"
        )
    arrays: dict[str, np.ndarray] = {
        "neural": session.neural,
        "timestamps": session.timestamps,
        "bin_s": np.asarray(session.bin_s, dtype=np.float64),
    }
    if session.kinematics is not None:
        arrays["kinematics"] = session.kinematics
        arrays["kinematics_labels"] = np.asarray(session.kinematics_labels, dtype=np.str_)
        if session.kinematics_units is not None:
            arrays["kinematics_units"] = np.asarray(session.kinematics_units, dtype=np.str_)
    if session.targets is not None:
        arrays["targets"] = session.targets
    if session.channel_labels is not None:
        arrays["channel_labels"] = np.asarray(session.channel_labels, dtype=np.str_)

    with atomic_write(path) as fh:
        np.savez_compressed(fh, **arrays)
    logger.debug("saved %r to %s", session, path)
    return path


def load_session(path: str | os.PathLike[str]) -> Session:
    """Read and validate a session written by :func:`save_session`.

    Raises FileNotFoundError if ``path`` does not exist, and SessionError if the file is
    unreadable (truncated, not an NPZ, pickled objects), lacks a required key, has an unknown
    key, or holds data that break the format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"session file {path} does not exist")
    data = _read_npz(path)

    present = sorted(data)
    unknown = [k for k in present if k not in ALLOWED_KEYS]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, ALLOWED_KEYS, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise SessionError(
            f"session file {path} has unknown key(s) {', '.join(hints)}; allowed keys are "
            f"{list(ALLOWED_KEYS)}: rename or remove them"
        )
    for key in REQUIRED_KEYS:
        if key not in data:
            raise SessionError(
                f"session file {path} lacks required key '{key}' (keys present: {present}); "
                f"required keys are {list(REQUIRED_KEYS)}"
            )
    try:
        return Session(
            neural=data["neural"],
            timestamps=data["timestamps"],
            bin_s=data["bin_s"],
            kinematics=data.get("kinematics"),
            kinematics_labels=_labels_from_file("kinematics_labels", data),
            targets=data.get("targets"),
            channel_labels=_labels_from_file("channel_labels", data),
            kinematics_units=_labels_from_file("kinematics_units", data),
        )
    except SessionError as exc:
        raise SessionError(f"session file {path}: {exc}") from None


# --- validation helpers -------------------------------------------------------------------


def _revalidated(session: Session) -> Session:
    return Session(
        neural=session.neural,
        timestamps=session.timestamps,
        bin_s=session.bin_s,
        kinematics=session.kinematics,
        kinematics_labels=session.kinematics_labels,
        targets=session.targets,
        channel_labels=session.channel_labels,
        kinematics_units=session.kinematics_units,
    )


def _as_numeric(key: str, value: Any, dtype: type[np.generic], *, ndim: int, what: str) -> Any:
    """Copy ``value`` into a ``dtype`` array, refusing non-numeric or lossy conversions."""
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested sequences
        raise SessionError(
            f"session key '{key}' cannot be read as an array ({exc}); pass a rectangular "
            f"numeric array of shape {what}"
        ) from None
    if raw.dtype.kind not in _NUMERIC_KINDS:
        raise SessionError(
            f"session key '{key}' has non-numeric dtype {raw.dtype}; pass a numeric array of "
            f"shape {what} (it is stored as {np.dtype(dtype).name})"
        )
    if raw.ndim != ndim:
        raise SessionError(
            f"session key '{key}' has shape {raw.shape} ({raw.ndim}-D); it must be {ndim}-D "
            f"with shape {what}"
        )
    with np.errstate(over="ignore"):  # overflow is reported below with its location
        out = np.array(raw, dtype=dtype, copy=True)
    if raw.dtype.kind in "iu" and raw.size and not np.array_equal(out.astype(raw.dtype), raw):
        raise SessionError(
            f"session key '{key}' holds integers too large for {np.dtype(dtype).name} to store "
            "exactly; rescale them before building the session"
        )
    if raw.dtype.kind == "f" and raw.dtype.itemsize > out.dtype.itemsize:
        overflow = np.isfinite(raw) & ~np.isfinite(out)
        if overflow.any():
            index = np.unravel_index(int(np.argmax(overflow)), overflow.shape)
            raise SessionError(
                f"session key '{key}' has a value at {_where(index)} beyond the "
                f"{np.dtype(dtype).name} range; rescale the data before saving"
            )
    return out


def _where(index: tuple[int, ...], column_name: str = "column", labels: Any = None) -> str:
    if len(index) == 1:
        return f"bin {index[0]}"
    col = index[1]
    label = f" ('{labels[col]}')" if labels is not None else ""
    return f"bin {index[0]}, {column_name} {col}{label}"


def _check_finite(
    key: str, array: np.ndarray, *, column_name: str = "column", labels: Any = None
) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise SessionError(
            f"session key '{key}' has a non-finite value at {_where(index, column_name, labels)} "
            f"({int(bad.sum())} non-finite in all); clean or drop that bin before saving"
        )


def _check_length(key: str, array: np.ndarray, n_bins: int) -> None:
    if array.shape[0] != n_bins:
        raise SessionError(
            f"session key '{key}' has {array.shape[0]} rows but 'neural' has {n_bins} bins; "
            "every per-bin array needs one row per bin"
        )


def _check_increasing(timestamps: np.ndarray) -> None:
    bad = np.flatnonzero(np.diff(timestamps) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise SessionError(
            f"session key 'timestamps' is not strictly increasing: timestamps[{i}] = "
            f"{timestamps[i]!r} s follows timestamps[{i - 1}] = {timestamps[i - 1]!r} s; "
            "sort the bins by time and drop duplicates"
        )


def _as_bin_s(value: Any) -> float:
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "iuf":
            raise SessionError(
                f"session key 'bin_s' has shape {value.shape} and dtype {value.dtype}; it must "
                "be a single number of seconds, e.g. 0.05"
            )
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise SessionError(
            f"session key 'bin_s' must be a number of seconds, got {value!r}; pass e.g. 0.05"
        )
    bin_s = float(value)
    if not math.isfinite(bin_s) or bin_s <= 0:
        raise SessionError(
            f"session key 'bin_s' is {bin_s!r}; the bin width must be a finite number of "
            "seconds > 0, e.g. 0.05"
        )
    return bin_s


def _as_labels(key: str, labels: Any, expected: int, what: str) -> tuple[str, ...]:
    if isinstance(labels, (str, bytes)):
        raise SessionError(
            f"session key '{key}' is a single string {labels!r}; pass a sequence with one "
            f"name per {what[:-1]}"
        )
    if not isinstance(labels, Iterable):
        raise SessionError(f"session key '{key}' must be a sequence of strings, got {labels!r}")
    items = list(labels)
    not_str = [x for x in items if not isinstance(x, str)]
    if not_str:
        raise SessionError(
            f"session key '{key}' holds non-string entries such as {not_str[0]!r}; labels must "
            "be strings"
        )
    if len(items) != expected:
        raise SessionError(
            f"session key '{key}' has {len(items)} labels for {expected} {what}; give exactly "
            "one label per column"
        )
    out = tuple(str(x) for x in items)
    duplicates = sorted({x for x in out if out.count(x) > 1})
    if duplicates:
        raise SessionError(f"session key '{key}' repeats {duplicates}; labels must be unique")
    return out


def _as_units(units: Any, kinematics: np.ndarray | None) -> tuple[str, ...] | None:
    """``kinematics_units`` checked: one non-empty string per kinematics column, or None."""
    if units is None:
        return None
    if kinematics is None:
        raise SessionError(
            "session key 'kinematics_units' is given without 'kinematics'; pass the "
            "kinematics array or drop the units"
        )
    if isinstance(units, (str, bytes)) or not isinstance(units, Iterable):
        raise SessionError(
            f"session key 'kinematics_units' must be a sequence with one unit per kinematics "
            f"column, e.g. ('cm/s', 'cm/s'); got {units!r}"
        )
    items = list(units)
    if len(items) != kinematics.shape[1] or not all(isinstance(u, str) and u for u in items):
        raise SessionError(
            f"session key 'kinematics_units' is {items!r}; give one non-empty unit string per "
            f"kinematics column ({kinematics.shape[1]}), e.g. 'cm/s', or leave the units unset"
        )
    return tuple(items)


# --- file helpers -------------------------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    fix = "the file is truncated or corrupt, or was not written by save_session; re-export it"
    try:
        # Open the file here: np.load leaks its own handle when the zip directory is corrupt.
        with path.open("rb") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise SessionError(
                    f"session file {path} holds a single .npy array, not an NPZ; {fix}"
                )
            with loaded as npz:
                return {key: npz[key] for key in npz.files}
    except SessionError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise SessionError(  # numpy's own text names a Python argument: not shown
                f"session file {path} is not an NPZ archive, or holds pickled objects, which are "
                f"refused for safety; {fix}"
            ) from None
        raise SessionError(f"cannot read session file {path}: {exc}; {fix}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise SessionError(f"cannot read session file {path}: {exc}; {fix}") from None


def _labels_from_file(key: str, data: dict[str, np.ndarray]) -> tuple[str, ...] | None:
    if key not in data:
        return None
    value = data[key]
    if value.dtype.kind != "U" or value.ndim != 1:
        raise SessionError(
            f"session key '{key}' has dtype {value.dtype} and shape {value.shape}; it must be a "
            "1-D unicode array of names"
        )
    return tuple(str(x) for x in value)
