"""What an LSL stream advertises, as :class:`LslInlet` vets it on every (re)connect.

:class:`StreamSchema` is the identity and layout of a stream read from its ``StreamInfo``;
``n_channels``, ``channel_format`` and ``nominal_srate`` must not change across reconnects
(:meth:`StreamSchema.differences` says what did). :func:`desc_texts` reads the text elements
of a stream's ``desc`` (e.g. the player's ``session_bin_s``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pylsl

__all__ = ["StreamSchema", "desc_texts"]

# LSL channel formats: name and numpy dtype (None: not supported by the inlet).
_FORMATS: dict[int, tuple[str, Any]] = {
    pylsl.cf_float32: ("float32", np.float32),
    pylsl.cf_double64: ("double64", np.float64),
    pylsl.cf_string: ("string", None),
    pylsl.cf_int32: ("int32", np.int32),
    pylsl.cf_int16: ("int16", np.int16),
    pylsl.cf_int8: ("int8", np.int8),
    pylsl.cf_int64: ("int64", np.int64),
}


@dataclass(frozen=True)
class StreamSchema:
    """What an inlet accepted from a stream; ``n_channels``, ``channel_format`` and
    ``nominal_srate`` must not change across reconnects.

    Attributes:
        name, type, source_id, hostname: stream identity as advertised.
        uid: identifier of one outlet instance (changes when the outlet restarts).
        n_channels: channels per sample.
        channel_format: LSL format name ("float32", "double64", "int16", ...).
        nominal_srate: advertised rate in Hz (0 for irregular streams).
    """

    name: str
    type: str
    source_id: str
    hostname: str
    uid: str
    n_channels: int
    channel_format: str
    nominal_srate: float

    @classmethod
    def from_info(cls, info: pylsl.StreamInfo) -> StreamSchema:
        fmt = info.channel_format()
        return cls(
            name=info.name(),
            type=info.type(),
            source_id=info.source_id(),
            hostname=info.hostname(),
            uid=info.uid(),
            n_channels=int(info.channel_count()),
            channel_format=_FORMATS.get(fmt, (f"unknown({fmt})", None))[0],
            nominal_srate=float(info.nominal_srate()),
        )

    @property
    def dtype(self) -> np.dtype | None:
        """numpy dtype of the samples (None for string streams)."""
        for name, dtype in _FORMATS.values():
            if name == self.channel_format:
                return None if dtype is None else np.dtype(dtype)
        return None

    def differences(self, other: StreamSchema) -> list[str]:
        """Human-readable list of what ``other`` changes (expected = self)."""
        out = []
        if other.n_channels != self.n_channels:
            out.append(f"channel count: expected {self.n_channels}, received {other.n_channels}")
        if other.channel_format != self.channel_format:
            out.append(
                f"channel format: expected {self.channel_format}, received {other.channel_format}"
            )
        if other.nominal_srate != self.nominal_srate:
            out.append(
                f"nominal rate: expected {self.nominal_srate:g} Hz, "
                f"received {other.nominal_srate:g} Hz"
            )
        return out

    def describe(self) -> str:
        return (
            f"'{self.name}' (type '{self.type}', source_id '{self.source_id}', "
            f"{self.n_channels} x {self.channel_format} at {self.nominal_srate:g} Hz, "
            f"host '{self.hostname}')"
        )


def desc_texts(info: pylsl.StreamInfo) -> dict[str, str]:
    """``{name: text}`` of the elements directly under ``info.desc()`` that hold text."""
    texts = {}
    child = info.desc().first_child()
    while not child.empty():
        if child.first_child().is_text():
            texts[child.name()] = child.child_value()
        child = child.next_sibling()
    return texts
