"""``GET /metrics/latency``: end-to-end decoding latency over the daemon's recent bins."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import LinkDep

router = APIRouter(prefix="/metrics", tags=["metrics"])


class LatencyMetrics(BaseModel):
    """Latency = ``local_clock()`` right after the output push minus the input sample's
    timestamp on the local clock, over the last ``window`` decoded bins. Input stamped ahead
    of the local clock (a player that stamps before it pushes) would give a negative
    latency: for those bins (``from_arrival``) it runs from the input's arrival instead."""

    p50_ms: float | None = Field(description="median latency (ms); None before the first bin")
    p99_ms: float | None = Field(description="99th percentile latency (ms)")
    max_ms: float | None = Field(description="largest latency in the window (ms)")
    bins: int = Field(description="decoded bins measured since start")
    window: int = Field(description="bins the percentiles are computed over")
    window_capacity: int
    deadline_ms: float | None = Field(description="latency above this counts as a miss")
    deadline_misses: int = Field(description="bins over the deadline since start")
    from_arrival: int = Field(
        0,
        description="bins whose input was stamped ahead of the local clock (future-stamped): "
        "their latency runs from the input's arrival, never negative",
    )
    timestamp_mapping: Literal["offset", "raw", "mixed", "none"] = Field(
        description="'offset': input timestamps + the inlet's clock offset; 'raw': raw "
        "timestamps (no offset known yet); 'mixed': both occurred; 'none': no bins yet"
    )


@router.get("/latency", response_model=LatencyMetrics)
def get_latency(link: LinkDep) -> LatencyMetrics:
    return LatencyMetrics(**link.latency())
