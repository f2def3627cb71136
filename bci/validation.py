"""Input checks shared by the decoders and metrics.

Each check raises ``ValueError`` with a message that names the offending input, what was
expected, what was received and how to fix it. Arrays are time-major: axis 0 is the time bin,
the last axis the channel, and a middle axis (3-D arrays) the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_finite", "check_shape", "to_numpy"]


def to_numpy(array: Any) -> np.ndarray:
    """Return ``array`` as a NumPy array without copying where possible (torch tensors too)."""
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # torch.Tensor, without importing torch
        array = array.detach().cpu()
        try:
            array = array.numpy()
        except TypeError:  # dtypes NumPy lacks, e.g. bfloat16
            array = array.float().numpy()
    return np.asarray(array)


def _describe_index(index: tuple[int, ...]) -> str:
    """Name an index of a time-major array: ``bin 17, channel 3`` for a ``(T, C)`` array."""
    if len(index) == 0:
        return "the scalar"
    if len(index) == 1:
        return f"bin {index[0]}"
    if len(index) == 2:
        return f"bin {index[0]}, channel {index[1]}"
    if len(index) == 3:
        return f"bin {index[0]}, batch {index[1]}, channel {index[2]}"
    return f"index {index} (axis 0 is the bin)"


def check_finite(name: str, array: Any) -> None:
    """Raise ``ValueError`` if ``array`` holds a NaN or an infinity.

    The message names the kind of value and the first offending position in C order, read as
    ``bin`` (1-D), ``bin, channel`` (2-D ``(T, C)``) or ``bin, batch, channel`` (3-D
    ``(T, B, C)``), plus the total count when there is more than one. Integer and boolean
    arrays are always finite. Accepts NumPy arrays, torch tensors and nested sequences.
    """
    values = to_numpy(array)
    if values.dtype.kind in "biu":
        return
    if values.dtype.kind not in "fc":
        raise TypeError(f"{name} must be numeric, got an array of dtype {values.dtype}")
    finite = np.isfinite(values)
    if finite.all():
        return
    bad = np.flatnonzero(~finite.ravel())
    index = tuple(int(i) for i in np.unravel_index(bad[0], values.shape))
    value = values[index]
    kind = "nan" if np.isnan(value) else ("inf" if np.real(value) > 0 else "-inf")
    total = f" ({bad.size} non-finite values in total)" if bad.size > 1 else ""
    raise ValueError(
        f"{name} has a non-finite value ({kind}) at {_describe_index(index)}{total}; "
        "remove or interpolate that bin"
    )


def _format_shape(shape: Sequence[int | str | None]) -> str:
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def check_shape(
    name: str,
    array: Any,
    expected: tuple[int | None, ...],
    *,
    axes: Sequence[str] | None = None,
    owner: str | None = None,
) -> None:
    """Raise ``ValueError`` unless ``array.shape`` matches ``expected``.

    ``None`` in ``expected`` matches any length. ``axes`` optionally names every axis (e.g.
    ``("T", "C")``); the names stand in for ``None`` entries and label mismatches. ``owner``
    names who expects the shape, e.g. ``"the decoder"``. Example message::

        neural input has shape (100, 95) but the decoder expects (T, 96): axis 1 (C) must be 96,
        got 95
    """
    if axes is not None and len(axes) != len(expected):
        raise ValueError(f"axes {tuple(axes)} must name each of the {len(expected)} axes")
    received = tuple(int(d) for d in np.shape(array))
    labels = list(axes) if axes is not None else ["any"] * len(expected)
    shown = _format_shape([labels[i] if d is None else d for i, d in enumerate(expected)])
    who = f"{owner} expects" if owner else "expected"
    head = f"{name} has shape {_format_shape(received)} but {who} {shown}"
    if len(received) != len(expected):
        raise ValueError(f"{head}: {len(expected)} axes, got {len(received)}")
    wrong = [
        f"axis {i}{f' ({axes[i]})' if axes is not None else ''} must be {d}, got {received[i]}"
        for i, d in enumerate(expected)
        if d is not None and received[i] != d
    ]
    if wrong:
        raise ValueError(f"{head}: {'; '.join(wrong)}")
