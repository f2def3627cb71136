"""``GET /stream``: the neural inlet's state, schema, input front-end and every counter, and
the decoder's input repairs (``non_finite_inputs``: bins whose channel had a NaN or Inf,
replaced by the model's normalisation mean, per channel; ``bins_dropped``: bins with no
finite channel, not decoded). ``future_stamped``: bins whose input was stamped ahead of the
local clock, and the largest lead (ms); their latency is measured from the input's arrival."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import LinkDep

router = APIRouter(tags=["stream"])


class StreamStatus(BaseModel):
    name: str
    state: str | None
    message: str | None
    info: dict[str, Any] | None = None
    counters: dict[str, Any] | None
    clock_offset: float | None
    input: str | None = None
    frontend: dict[str, Any] | None = None
    future_stamped: dict[str, float] | None = None
    outlet: str | None
    pushed: int
    push_errors: int
    last_refusal: str | None = None
    non_finite_inputs: list[int] | None = None
    bins_dropped: int = 0


@router.get("/stream", response_model=StreamStatus)
def get_stream(link: LinkDep) -> StreamStatus:
    status = link.status()
    stream = status.get("stream") or {"name": link.settings.stream}
    outlet = status.get("outlet") or {}
    engine = status.get("engine") or {}
    return StreamStatus(
        name=stream.get("name", link.settings.stream),
        state=stream.get("state"),
        message=stream.get("message"),
        info=stream.get("info"),
        counters=stream.get("counters"),
        clock_offset=stream.get("clock_offset"),
        input=stream.get("input"),
        frontend=stream.get("frontend"),
        future_stamped=stream.get("future_stamped"),
        outlet=outlet.get("name"),
        pushed=outlet.get("pushed", 0),
        push_errors=outlet.get("push_errors", 0),
        last_refusal=outlet.get("last_refusal"),
        non_finite_inputs=engine.get("non_finite_inputs"),
        bins_dropped=engine.get("bins_dropped", 0),
    )
