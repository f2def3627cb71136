"""What ``bci`` checks about its file arguments before any work, and its two kinds of error.

Exit status 2 is a usage error (:class:`UsageError`, or argparse's): the command line itself
is wrong, and the message names the flag that fixes it. Exit status 1 is a runtime failure
(:class:`CommandFailed`): the command line was fine but the work failed (a damaged file, a
stream that never appeared). :func:`runtime_failures` turns the expected errors of the work
(``ValueError``, ``OSError``, ``TimeoutError``) into :class:`CommandFailed`;
:func:`damaged_inputs` does so only for a damaged session or checkpoint file and OS errors, so
that an input that does not fit the others (a model for another channel count) stays a usage
error. ``bci.main`` prints either as one line.

Number arguments are checked by argparse with the ``type=`` functions here (a usage error
naming the flag): :func:`positive_int`, :func:`nonnegative_int`, :func:`positive_float`,
:func:`nonnegative_float`, :func:`fraction`; NaN and infinities are refused.

File arguments: an input session must be a file (not a directory), and a ``.mat`` file
points to ``bci convert-limblab``; an output must not be a directory, its folder must exist,
and an existing file is only replaced with ``--force``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "CommandFailed",
    "UsageError",
    "damaged_inputs",
    "fraction",
    "nonnegative_float",
    "nonnegative_int",
    "out_path",
    "positive_float",
    "positive_int",
    "runtime_failures",
    "session_path",
]

SESSION_KINDS = "a session file (.npz), an XDF recording (.xdf, .xdf.part) or an NWB file (.nwb)"


class UsageError(ValueError):
    """The command line is wrong: a flag missing, invalid or in conflict (exit status 2)."""


class CommandFailed(Exception):
    """The work itself failed, e.g. a damaged input file (exit status 1)."""


@contextmanager
def runtime_failures() -> Iterator[None]:
    """Report the expected errors of the work inside as :class:`CommandFailed`; usage errors
    pass unchanged."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, OSError, TimeoutError) as error:
        raise CommandFailed(str(error)) from error


@contextmanager
def damaged_inputs() -> Iterator[None]:
    """Report a damaged session or checkpoint file, and OS errors of the work, as
    :class:`CommandFailed`; other errors pass unchanged."""
    from bci.checkpoint import CheckpointError
    from streams.session import SessionError

    try:
        yield
    except UsageError:
        raise
    except (CheckpointError, SessionError, OSError) as error:
        raise CommandFailed(str(error)) from error


def session_path(text: str, what: str = "session") -> Path:
    """The input session file ``text``; :class:`UsageError` for a missing file, a directory
    or a MATLAB file."""
    path = Path(text)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give {SESSION_KINDS}")
    if path.suffix.lower() == ".mat":
        raise UsageError(
            f"{what} {path} is a MATLAB file, not a session: convert it first with "
            f"'bci convert-limblab {path} SESSION.npz'"
        )
    if not path.is_file():
        raise UsageError(f"{what} file {path} does not exist; give {SESSION_KINDS}")
    return path


def out_path(text: str, force: bool, flag: str = "--out") -> Path:
    """The output file ``text`` of ``flag``; :class:`UsageError` for a directory, a missing
    folder, or an existing file without ``--force``."""
    path = Path(text)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; give a file name (inside it)")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: directory {path.parent} does not exist; create it first")
    if path.exists() and not force:
        raise UsageError(f"{flag} {path} exists; pass --force to replace it")
    return path


def _number(
    parse: Callable[[str], float], accept: Callable[[float], bool], what: str
) -> Callable[[str], float]:
    """An argparse ``type=``: ``parse(text)``, refused unless finite and ``accept``-ed."""

    def check(text: str) -> float:
        try:
            value = parse(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return check


positive_int = _number(int, lambda v: v > 0, "an integer > 0")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a finite number > 0")
nonnegative_float = _number(float, lambda v: v >= 0, "a finite number >= 0")
fraction = _number(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")
