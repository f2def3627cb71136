"""The LSL streams visible on the network now: ``bci streams``, and the list every "stream not
found" error ends with.

:func:`visible_streams` asks liblsl for every outlet it can reach within ``wait_s`` seconds
(multicast and broadcast, as any resolve) and returns one :class:`StreamListing` per outlet
instance, sorted by name. :func:`visible_summary` is the same list as one line for an error
message, so a misspelt name or a changed source_id shows beside the streams that do exist.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pylsl

__all__ = ["StreamListing", "visible_streams", "visible_summary"]

SUMMARY_WAIT_S = 0.5  # how long an error message waits for the outlets to answer
_SUMMARY_MAX = 8  # streams named in one error line; the rest are counted


@dataclass(frozen=True)
class StreamListing:
    """One visible outlet: ``rate_hz`` is the nominal rate (0: irregular)."""

    name: str
    type: str
    channels: int
    rate_hz: float
    source_id: str
    host: str

    @classmethod
    def from_info(cls, info: pylsl.StreamInfo) -> StreamListing:
        return cls(
            name=info.name(),
            type=info.type(),
            channels=info.channel_count(),
            rate_hz=info.nominal_srate(),
            source_id=info.source_id(),
            host=info.hostname(),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``'bci-sim' (Neural, 96 ch, 20 Hz, source_id 'x', host 'h')``."""
        return (
            f"{self.name!r} ({self.type or 'no type'}, {self.channels} ch, {self.rate_hz:g} Hz, "
            f"source_id {self.source_id!r}, host {self.host!r})"
        )


def visible_streams(wait_s: float = 1.0) -> list[StreamListing]:
    """Every outlet that answers within ``wait_s`` seconds, one per outlet instance (uid),
    sorted by name, type and source_id."""
    unique = {info.uid(): info for info in pylsl.resolve_streams(wait_s)}
    listings = (StreamListing.from_info(info) for info in unique.values())
    return sorted(listings, key=lambda s: (s.name, s.type, s.source_id, s.host))


def visible_summary(wait_s: float = SUMMARY_WAIT_S) -> str:
    """The visible streams as one line for an error message: ``visible LSL streams: ...``,
    or that none answered."""
    listings = visible_streams(wait_s)
    if not listings:
        return f"no LSL stream is visible from here (none answered within {wait_s:g} s)"
    shown = "; ".join(s.describe() for s in listings[:_SUMMARY_MAX])
    more = len(listings) - _SUMMARY_MAX
    tail = f"; and {more} more ('bci streams' lists them all)" if more > 0 else ""
    return f"visible LSL streams: {shown}{tail}"
