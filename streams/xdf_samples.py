"""Validation and encoding of XDF Samples chunk bodies (the writer's sample half).

:class:`streams.xdf_writer.XdfWriter` checks every batch here before the first byte is written,
then encodes it: numeric samples as ``[TimestampBytes 0|8][float64 timestamp][values]`` in one
vectorised pass, string samples as varlen-prefixed UTF-8 per channel. ``state`` is the writer's
per-stream record (``describe()``, ``channel_count``, ``channel_format``, ``dtype``).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

__all__ = [
    "XdfError",
    "as_channel_array",
    "as_string_rows",
    "as_timestamps",
    "encode_numeric_samples",
    "encode_string_samples",
    "encode_varlen",
]


class XdfError(ValueError):
    """An XDF file or a request to read or write one is invalid; the message says how to fix it."""


def encode_varlen(value: int) -> bytes:
    """Encode a non-negative integer as an XDF variable-length integer (1, 4 or 8 bytes)."""
    if value < 0:
        raise ValueError(f"a variable-length integer must be >= 0, got {value}")
    if value < 2**8:
        return b"\x01" + struct.pack("<B", value)
    if value < 2**32:
        return b"\x04" + struct.pack("<I", value)
    return b"\x08" + struct.pack("<Q", value)


def as_timestamps(timestamps: Any, state: Any) -> np.ndarray:
    ts = np.asarray(timestamps)
    if ts.dtype.kind not in "iuf":
        raise XdfError(
            f"timestamps for {state.describe()} have dtype {ts.dtype}; pass seconds as floats"
        )
    if ts.ndim != 1:
        raise XdfError(
            f"timestamps for {state.describe()} have shape {ts.shape}; pass a 1-D array (n,)"
        )
    ts = ts.astype(np.float64)
    bad = ~np.isfinite(ts)
    if bad.any():
        i = int(np.argmax(bad))
        raise XdfError(
            f"timestamps for {state.describe()} hold a non-finite value {float(ts[i])} at "
            f"index {i}; every sample needs a finite timestamp in seconds"
        )
    return ts


def as_channel_array(data: Any, state: Any, n: int) -> np.ndarray:
    assert state.dtype is not None
    where = state.describe()
    expected = state.channel_count
    try:
        raw = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise XdfError(f"data for {where} cannot be read as an array ({exc})") from None
    if raw.dtype.kind not in "biuf":
        raise XdfError(
            f"data for {where} have dtype {raw.dtype}; a {state.channel_format} stream takes "
            f"numeric data of shape (n, {expected})"
        )
    if raw.ndim == 1 and expected == 1:
        raw = raw.reshape(-1, 1)
    if raw.ndim != 2 or raw.shape[1] != expected:
        received = raw.shape[1] if raw.ndim == 2 else None
        detail = f"{received} channels" if received is not None else f"a {raw.ndim}-D array"
        raise XdfError(
            f"channel count mismatch for {where}: expected {expected} channels, received "
            f"{detail} (data shape {raw.shape}); pass data of shape (n, {expected})"
        )
    if raw.shape[0] != n:
        raise XdfError(
            f"{where}: data have {raw.shape[0]} samples but timestamps have {n}; pass one "
            "timestamp per sample"
        )
    target = state.dtype
    if target.kind == "f":
        with np.errstate(over="ignore"):
            out = raw.astype(target)
        overflow = np.isfinite(raw) & ~np.isfinite(out)
        if overflow.any():
            index = tuple(int(i) for i in np.argwhere(overflow)[0])
            raise XdfError(
                f"{where}: value {raw[index].item()!r} at sample {index[0]}, channel {index[1]} is "
                f"beyond the {state.channel_format} range"
            )
        return out
    if raw.size:
        if raw.dtype.kind == "f":
            bad = ~np.isfinite(raw) | (raw != np.round(raw))
            if bad.any():
                index = tuple(int(i) for i in np.argwhere(bad)[0])
                raise XdfError(
                    f"{where}: value {raw[index].item()!r} at sample {index[0]}, channel "
                    f"{index[1]} is not a whole number; a {state.channel_format} stream stores "
                    "integers"
                )
        info = np.iinfo(target)
        low, high = raw.min(), raw.max()
        if low < info.min or high > info.max:
            raise XdfError(
                f"{where}: values span [{low}, {high}], beyond the {state.channel_format} "
                f"range [{info.min}, {info.max}]"
            )
    return raw.astype(target)


def as_string_rows(data: Any, state: Any, n: int) -> list[list[str]]:
    where = state.describe()
    expected = state.channel_count
    if isinstance(data, (str, bytes)):
        raise XdfError(
            f"data for string {where} is a single string {data!r}; pass a list with one "
            "entry per sample"
        )
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "UO":
            raise XdfError(
                f"data for string {where} have dtype {data.dtype}; pass strings (this stream's "
                "channel_format is 'string')"
            )
        items: list[Any] = data.tolist()
    else:
        try:
            items = list(data)
        except TypeError:
            raise XdfError(
                f"data for string {where} must be a list of strings, got {type(data).__name__}"
            ) from None
    rows: list[list[str]] = []
    for k, item in enumerate(items):
        row = [item] if isinstance(item, str) else item
        if isinstance(row, (bytes, bytearray)) or not isinstance(row, (list, tuple)):
            raise XdfError(
                f"sample {k} for string {where} is {item!r}; pass a str per sample (1 channel) "
                f"or a sequence of {expected} str"
            )
        if len(row) != expected:
            raise XdfError(
                f"channel count mismatch for {where}: expected {expected} channels, received "
                f"{len(row)} in sample {k} ({item!r})"
            )
        bad = [x for x in row if not isinstance(x, str)]
        if bad:
            raise XdfError(f"sample {k} for string {where} holds a non-string {bad[0]!r}")
        rows.append(list(row))
    if len(rows) != n:
        raise XdfError(
            f"{where}: data have {len(rows)} samples but timestamps have {n}; pass one "
            "timestamp per sample"
        )
    return rows


def encode_numeric_samples(ts: np.ndarray, values: np.ndarray, omit: np.ndarray) -> bytes:
    n, channels = values.shape
    record = np.dtype(
        [("nbytes", "u1"), ("ts", "<f8"), ("values", values.dtype.newbyteorder("<"), (channels,))]
    )
    buf = np.empty(n, dtype=record)
    buf["nbytes"] = np.where(omit, 0, 8)
    buf["ts"] = ts
    buf["values"] = values
    if not omit.any():
        return buf.tobytes()
    raw = buf.view(np.uint8).reshape(n, record.itemsize)
    keep = np.ones(raw.shape, dtype=bool)
    keep[omit, 1:9] = False  # drop the 8 timestamp bytes of deduced samples
    return raw[keep].tobytes()


def encode_string_samples(ts: np.ndarray, rows: list[list[str]], omit: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for k, row in enumerate(rows):
        parts.append(b"\x00" if omit[k] else b"\x08" + struct.pack("<d", ts[k]))
        for value in row:
            encoded = value.encode("utf-8")
            parts.append(encode_varlen(len(encoded)))
            parts.append(encoded)
    return b"".join(parts)
