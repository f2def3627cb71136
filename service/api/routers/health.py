"""``GET /health``: the daemon's lifecycle state."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import DaemonDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    state: str
    message: str
    model_id: str | None
    bins_decoded: int
    stream_state: str | None


@router.get("/health", response_model=Health)
def get_health(daemon: DaemonDep) -> Health:
    engine, inlet = daemon.engine, daemon.inlet
    return Health(
        state=daemon.state,
        message=daemon.state_message,
        model_id=None if engine is None else engine.model_id,
        bins_decoded=0 if engine is None else engine.bins_decoded,
        stream_state=None if inlet is None else inlet.state,
    )
