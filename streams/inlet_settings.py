"""The validated settings of one :class:`streams.lsl_inlet.LslInlet` (its constructor's
arguments; :class:`~streams.lsl_inlet.LslInlet` documents each)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["InletSettings"]

# seconds (and the gap factor, in sample periods): finite and > 0
_POSITIVE = (
    "resolve_timeout_s",
    "buffer_s",
    "watchdog_s",
    "lost_after_s",
    "gap_factor",
    "jump_s",
    "poll_interval_s",
    "clock_refresh_s",
)
_FLAGS = ("wake_on_sample", "pull_in_caller", "keep_non_finite")


@dataclass(frozen=True)
class InletSettings:
    """An inlet's arguments, checked on construction (ValueError for inconsistent ones);
    times are in seconds, stored as floats, flags as bools."""

    name: str | None
    type: str | None
    source_id: str | None
    resolve_timeout_s: float
    buffer_s: float
    capacity: int | None
    watchdog_s: float
    lost_after_s: float
    max_chunk: int
    gap_factor: float
    jump_s: float
    poll_interval_s: float
    wake_on_sample: bool
    coalesce_s: float
    clock_refresh_s: float
    pull_in_caller: bool
    irregular_capacity: int | None
    keep_non_finite: bool

    @property
    def props(self) -> dict[str, str]:
        """The stream properties to match: the given ones of name, type and source_id."""
        props = {"name": self.name, "type": self.type, "source_id": self.source_id}
        return {k: v for k, v in props.items() if v is not None}

    def __post_init__(self) -> None:
        self._check_props()
        self._check_numbers()
        for key in (*_POSITIVE, "coalesce_s"):
            object.__setattr__(self, key, float(getattr(self, key)))
        for key in _FLAGS:
            object.__setattr__(self, key, bool(getattr(self, key)))

    def _check_props(self) -> None:
        props = self.props
        if not props:
            raise ValueError(
                "LslInlet needs at least one of name, type or source_id to find the stream, "
                "e.g. LslInlet(name='amp', source_id='amp-serial-1234')"
            )
        for key, value in props.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key} must be a non-empty string, got {value!r}")
            if "'" in value:
                raise ValueError(
                    f"{key} {value!r} contains a single quote, which LSL queries "
                    "cannot match; rename the stream"
                )

    def _check_numbers(self) -> None:
        for key in _POSITIVE:
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a finite number > 0, got {value!r}")
        if self.lost_after_s <= self.watchdog_s:
            raise ValueError(
                f"lost_after_s ({self.lost_after_s}) must exceed watchdog_s "
                f"({self.watchdog_s}): a stream is declared stalled first, lost later"
            )
        if self.gap_factor <= 1:
            raise ValueError(f"gap_factor must be > 1 sample period, got {self.gap_factor}")
        capacity = self.capacity
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be a positive integer or None, got {capacity!r}")
        if not isinstance(self.max_chunk, int) or self.max_chunk < 1:
            raise ValueError(f"max_chunk must be a positive integer, got {self.max_chunk!r}")
        if not (math.isfinite(self.coalesce_s) and self.coalesce_s >= 0):
            raise ValueError(f"coalesce_s must be >= 0 seconds, got {self.coalesce_s!r}")
        if self.irregular_capacity is not None and int(self.irregular_capacity) < 1:
            raise ValueError(
                f"irregular_capacity must be positive, got {self.irregular_capacity!r}"
            )
