"""``GET /stream``: the neural inlet's state, schema and every counter."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import DaemonDep

router = APIRouter(tags=["stream"])


class StreamStatus(BaseModel):
    name: str
    state: str | None
    message: str | None
    info: dict[str, Any] | None = None
    counters: dict[str, Any] | None
    clock_offset: float | None
    outlet: str | None
    pushed: int
    push_errors: int


@router.get("/stream", response_model=StreamStatus)
def get_stream(daemon: DaemonDep) -> StreamStatus:
    inlet, outlet = daemon.inlet, daemon.outlet
    info = None if inlet is None else inlet.info
    return StreamStatus(
        name=daemon.settings.stream,
        state=None if inlet is None else inlet.state,
        message=None if inlet is None else inlet.state_message,
        info=None if info is None else dataclasses.asdict(info),
        counters=None if inlet is None else dataclasses.asdict(inlet.counters()),
        clock_offset=None if inlet is None else inlet.clock_offset,
        outlet=None if outlet is None else outlet.name,
        pushed=0 if outlet is None else outlet.pushed,
        push_errors=daemon.push_errors,
    )
