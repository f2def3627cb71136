"""Shared helpers for the XDF tests: the recorded example files, pyxdf as the oracle, a
test-side chunk parser."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyxdf

REPO_ROOT = Path(__file__).resolve().parents[2]
XDF_DIR = REPO_ROOT / ".." / "shared" / "data" / "xdf"
REAL_FILES = ("minimal.xdf", "clock_resets.xdf", "empty_streams.xdf")

NUMERIC_FORMATS = ("float32", "double64", "int8", "int16", "int32", "int64")


def real_file(name: str) -> Path:
    path = XDF_DIR / name
    if not path.is_file():
        pytest.skip(f"recorded XDF file {path.resolve()} is absent")
    return path


def pyxdf_load(path: Path, **kwargs: Any) -> list[dict[str, Any]]:
    streams, _ = pyxdf.load_xdf(str(path), **kwargs)
    return streams


def assert_same_series(ours: Any, theirs: Any, channel_format: str) -> None:
    if channel_format == "string":
        assert ours == theirs
    else:
        theirs = np.asarray(theirs)
        if theirs.size == 0:  # pyxdf returns float64 (0, C) for empty numeric streams
            assert ours.shape == theirs.shape
        else:
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)


def chunk_starts(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, tag, total length) of every chunk of an XDF byte string (test-side parser)."""
    assert data[:4] == b"XDF:"
    pos, out = 4, []
    while pos < len(data):
        width = data[pos]
        length = {1: "<B", 4: "<I", 8: "<Q"}[width]
        (size,) = struct.unpack_from(length, data, pos + 1)
        (tag,) = struct.unpack_from("<H", data, pos + 1 + width)
        total = 1 + width + size
        out.append((pos, tag, total))
        pos += total
    assert pos == len(data)
    return out


def regular_times(n: int, srate: float, start: float = 100.0) -> np.ndarray:
    return start + np.arange(n) / srate
