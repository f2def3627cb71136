"""``GET /stream``: the neural inlet's state, schema, input front-end and every counter."""

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
    outlet: str | None
    pushed: int
    push_errors: int
    last_refusal: str | None = None


@router.get("/stream", response_model=StreamStatus)
def get_stream(link: LinkDep) -> StreamStatus:
    status = link.status()
    stream = status.get("stream") or {"name": link.settings.stream}
    outlet = status.get("outlet") or {}
    return StreamStatus(
        name=stream.get("name", link.settings.stream),
        state=stream.get("state"),
        message=stream.get("message"),
        info=stream.get("info"),
        counters=stream.get("counters"),
        clock_offset=stream.get("clock_offset"),
        input=stream.get("input"),
        frontend=stream.get("frontend"),
        outlet=outlet.get("name"),
        pushed=outlet.get("pushed", 0),
        push_errors=outlet.get("push_errors", 0),
        last_refusal=outlet.get("last_refusal"),
    )
