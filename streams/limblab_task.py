"""Task state per bin of a limblab wrist-flexion (WF) ``binnedData`` file: the goal the
monkey was asked to reach and where the cursor was, for ReFIT intention targets.

``trialtable`` (one row per trial) has the lab's WF layout (``wf_trial_table.m``), checked on
the seven Spike files: column 1 trial start (s), 2-5 the outer target's upper-left x, y and
lower-right x, y corners (cursor units), 6 outer target on (s), 7 go cue (s), 8 trial end (s),
9 result (``R`` = 82 reward, ``F`` = 70 fail, ``A`` abort, ``I`` incomplete), 10 target id.
The outer targets are 3 x 3 squares 8 units from the centre in 8 directions.

Goal of a bin (its start time ``t`` from ``timeframe``): the outer target's centre while
``go cue <= t < trial end`` (whatever the trial's result: the instruction was to go there);
otherwise the centre target at the origin (holding before the go cue, returning after the
trial). A trial without a go cue (the table's -1: Spike 07-18's trial at 670 s, for one) or
whose times are out of order has no outward goal: taking its -1 as a time would make the
outer target the goal of every bin from the session's start to that trial's end. The hold
radius is half the outer target's side (1.5 units): inside it the intended velocity is zero.
``cursor`` is ``cursorposbin``, the cursor the monkey saw (it followed his wrist, not a
decoder; ReFIT's assumption that he aimed it at the goal holds there too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from streams.limblab import STRUCT_NAMES
from streams.session import SessionError

__all__ = ["LimblabTask", "load_limblab_task"]

_START, _UL_X, _UL_Y, _LR_X, _LR_Y, _TARGET_ON, _GO, _END = range(8)


@dataclass(frozen=True, eq=False)
class LimblabTask:
    """Per-bin task state: ``goal`` and ``cursor`` (T, 2) positions (cursor units) and the
    ``hold_radius`` (same units) within which the goal counts as reached."""

    goal: np.ndarray
    cursor: np.ndarray
    hold_radius: float


def load_limblab_task(path: str | os.PathLike[str]) -> LimblabTask:
    """Goal and cursor per bin of the limblab file at ``path`` (rules in the module doc).

    Raises SessionError when the file lacks ``trialtable`` or ``cursorposbin``, or the trial
    table does not have the WF layout's 10 columns.
    """
    path = Path(path)
    contents = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    struct = next((contents[n] for n in STRUCT_NAMES if n in contents), None)
    fields = list(getattr(struct, "_fieldnames", None) or [])
    missing = [f for f in ("timeframe", "trialtable", "cursorposbin") if f not in fields]
    if struct is None or missing:
        raise SessionError(f"{path} has no binned-data struct with {missing or 'a trialtable'}")
    table = np.atleast_2d(np.asarray(struct.trialtable, dtype=np.float64))
    if table.shape[1] != 10:
        raise SessionError(
            f"'trialtable' in {path} has {table.shape[1]} columns; the wrist-flexion layout "
            "has 10 (start, target corners x4, target on, go cue, end, result, target id)"
        )
    start = np.asarray(struct.timeframe, dtype=np.float64)
    cursor = np.asarray(struct.cursorposbin, dtype=np.float64)[:, :2]
    goal = np.zeros_like(cursor)
    centres = np.c_[table[:, _UL_X] + table[:, _LR_X], table[:, _UL_Y] + table[:, _LR_Y]] / 2
    for row, centre in zip(table, centres, strict=True):
        if not row[_START] <= row[_GO] < row[_END]:  # no go cue (-1), or NaN: no outward goal
            continue
        goal[(start >= row[_GO]) & (start < row[_END])] = centre
    side = np.median(np.abs(table[:, _LR_X] - table[:, _UL_X]))
    return LimblabTask(goal=goal, cursor=cursor, hold_radius=float(side / 2))
