"""Loader for the Miller lab (limblab) binned-data ``.mat`` files.

These MATLAB v5 files hold one struct (``train_data`` in the ``limblab/bmi`` default data,
``binnedData`` in the lab's analysis files) with, per 50 ms bin, ``timeframe`` (s),
``spikeratedata`` (Hz, one column per channel) and ``velocbin`` (x velocity, y velocity,
speed), among other fields.

Time convention: ``timeframe`` holds bin *start* times (the published file starts at 0.0 and
its last entry is one bin before the recording's end), so session ``timestamps`` are
``timeframe + bin_s``, the bin end times that :class:`streams.session.Session` uses.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from streams.session import Session, SessionError

logger = logging.getLogger(__name__)

_REQUIRED_FIELDS = ("timeframe", "spikeratedata", "velocbin")
_UNIFORM_RTOL = 1e-6  # allowed relative deviation of a bin step from the median step
STRUCT_NAMES = ("train_data", "binnedData")  # the binned-data structs, in the order looked for


def load_limblab_session(path: str | os.PathLike[str], struct_name: str | None = None) -> Session:
    """Load a limblab binned-data file as a :class:`Session`.

    ``struct_name`` names the binned-data struct; by default the first of
    :data:`STRUCT_NAMES` the file holds.

    ``neural`` = ``spikeratedata * bin_s`` (counts per bin, float32); ``bin_s`` = the uniform
    spacing of ``timeframe`` (rounded to 1 ns); ``timestamps`` = ``timeframe + bin_s`` (bin
    end times); ``kinematics`` = ``velocbin[:, :2]`` labelled ``("vx", "vy")``; channel labels
    ``ch000``, ``ch001``, ...; ``kinematics_units`` unset: neither the files (``veloclabels``
    ``x_vel``, ``y_vel``, ``vel_magn``) nor the data's README state the velocity's units, and
    none is invented.

    Raises FileNotFoundError if ``path`` does not exist and SessionError if the file is not a
    readable MATLAB v5 file, lacks the struct or a field, or holds inconsistent data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"limblab file {path} does not exist; check the path")
    struct_name, struct, fields = _binned_struct(_read_mat(path), path, struct_name)
    for field in _REQUIRED_FIELDS:
        if field not in fields:
            raise SessionError(
                f"struct '{struct_name}' in {path} lacks field '{field}' (fields present: {fields})"
            )

    timeframe = _field(struct, "timeframe", path, ndim=1)
    n_bins = timeframe.shape[0]
    bin_s = _uniform_bin_s(timeframe, path)
    rates = _field(struct, "spikeratedata", path, ndim=2, n_rows=n_bins)
    if np.any(rates < 0):
        row, col = np.argwhere(rates < 0)[0]
        raise SessionError(
            f"field 'spikeratedata' in {path} has a negative rate at bin {row}, channel {col}; "
            "firing rates must be >= 0"
        )
    velocity = _field(struct, "velocbin", path, ndim=2, n_rows=n_bins)
    if velocity.shape[1] < 2:
        raise SessionError(
            f"field 'velocbin' in {path} has shape {velocity.shape}; expected at least the x "
            "and y velocity columns"
        )
    _check_velocity_labels(struct, fields, path)

    session = Session(
        neural=(rates.astype(np.float64) * bin_s).astype(np.float32),
        timestamps=timeframe + bin_s,
        bin_s=bin_s,
        kinematics=velocity[:, :2],
        kinematics_labels=("vx", "vy"),
        channel_labels=tuple(f"ch{c:03d}" for c in range(rates.shape[1])),
    )
    logger.info("loaded %s from %s", session, path)
    return session


def _read_mat(path: Path) -> dict[str, Any]:
    """The variables of the MATLAB v5 file ``path``; SessionError when it is not one."""
    try:
        return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise SessionError(
            f"cannot read {path}: {exc}; re-save it in MATLAB with save(..., '-v7')"
        ) from None
    except (
        scipy.io.matlab.MatReadError,
        ValueError,
        TypeError,
        IndexError,
        EOFError,
        OSError,
        zlib.error,
    ) as exc:
        raise SessionError(
            f"cannot read {path} as a MATLAB .mat file ({exc}); the file is corrupt or not a "
            "limblab binned-data file"
        ) from None


def _binned_struct(
    contents: dict[str, Any], path: Path, struct_name: str | None
) -> tuple[str, Any, list[str]]:
    """The binned-data struct's name, the struct and its field names: ``struct_name``, or
    the first of :data:`STRUCT_NAMES` in ``contents``; SessionError when there is none."""
    variables = sorted(k for k in contents if not k.startswith("__"))
    wanted = STRUCT_NAMES if struct_name is None else (struct_name,)
    found = [name for name in wanted if name in contents]
    if not found:
        names = " or ".join(f"'{name}'" for name in wanted)
        raise SessionError(
            f"{path} has no struct {names} (variables present: {variables}); it is not a "
            "limblab binned-data file"
        )
    struct_name = found[0]
    struct = contents[struct_name]
    fields = list(getattr(struct, "_fieldnames", None) or [])
    if not fields:
        raise SessionError(
            f"'{struct_name}' in {path} is not a MATLAB struct (got {type(struct).__name__}); "
            "it is not a limblab binned-data file"
        )
    return struct_name, struct, fields


def _field(
    struct: Any, name: str, path: Path, *, ndim: int, n_rows: int | None = None
) -> np.ndarray:
    value = np.asarray(getattr(struct, name))
    if value.dtype.kind not in "biuf":
        raise SessionError(
            f"field '{name}' in {path} has non-numeric dtype {value.dtype}; expected numbers"
        )
    if value.ndim != ndim:
        raise SessionError(f"field '{name}' in {path} has shape {value.shape}; expected {ndim}-D")
    if n_rows is not None and value.shape[0] != n_rows:
        raise SessionError(
            f"field '{name}' in {path} has {value.shape[0]} rows but 'timeframe' has {n_rows} bins"
        )
    return value


def _uniform_bin_s(timeframe: np.ndarray, path: Path) -> float:
    if timeframe.shape[0] < 2:
        raise SessionError(
            f"field 'timeframe' in {path} has {timeframe.shape[0]} entries; at least 2 are "
            "needed to infer the bin width"
        )
    if not np.all(np.isfinite(timeframe)):
        raise SessionError(f"field 'timeframe' in {path} has non-finite times")
    steps = np.diff(timeframe.astype(np.float64))
    typical = float(np.median(steps))
    if typical <= 0:
        raise SessionError(f"field 'timeframe' in {path} is not increasing")
    # float32 times (the Spike files) are rounded to their storage precision: a step may be
    # off by one unit in the last place at either end
    stored = (
        2.0 * float(np.spacing(np.abs(timeframe).max())) if timeframe.dtype.kind == "f" else 0.0
    )
    off = np.flatnonzero(np.abs(steps - typical) > _UNIFORM_RTOL * typical + stored)
    if off.size:
        i = int(off[0])
        raise SessionError(
            f"field 'timeframe' in {path} is not uniformly spaced: step {i} -> {i + 1} is "
            f"{steps[i]:.9g} s against a typical {typical:.9g} s ({off.size} irregular "
            "steps); the file has gaps, so split it at the gaps or re-bin it"
        )
    n_steps = len(timeframe) - 1
    mean_step = (float(timeframe[-1]) - float(timeframe[0])) / n_steps
    # rounded to 1 ns, or to what the stored times determine (float32: ~10 ns over 20 min)
    decimals = 9 if stored == 0 else min(9, int(-np.log10(stored / n_steps)))
    return float(round(mean_step, decimals))


def _check_velocity_labels(struct: Any, fields: list[str], path: Path) -> None:
    """Refuse files whose ``veloclabels`` say the first two columns are not x and y velocity."""
    if "veloclabels" not in fields:
        return
    labels = [str(x).strip().lower() for x in np.atleast_1d(struct.veloclabels)]
    if len(labels) < 2 or not (labels[0].startswith("x") and labels[1].startswith("y")):
        raise SessionError(
            f"field 'veloclabels' in {path} is {labels}; expected the first two columns of "
            "'velocbin' to be x and y velocity"
        )
