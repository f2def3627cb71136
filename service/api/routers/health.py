"""``GET /health``: the decoder's lifecycle state, and its process."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import LinkDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    state: str
    message: str
    model_id: str | None
    bins_decoded: int
    stream_state: str | None
    decoder: dict[str, Any] | None = Field(
        None,
        description="the decoder process: pid, heartbeat_age_s, restarts, supervisor "
        "(running / restarting / stopped)",
    )
    api_pid: int = Field(description="pid of the process serving this answer")
    realtime: str | None = Field(
        None, description="the decoder process's scheduling: off, or what --realtime got"
    )


@router.get("/health", response_model=Health)
def get_health(link: LinkDep) -> Health:
    """Answers while the decoder process is being restarted (state ``restarting``)."""
    status = link.status()
    engine = status.get("engine") or {}
    return Health(
        state=status["state"],
        message=status["message"],
        model_id=engine.get("model_id"),
        bins_decoded=link.shared.bins_written,
        stream_state=(status.get("stream") or {}).get("state"),
        decoder=status["decoder"],
        api_pid=os.getpid(),
        realtime=status.get("realtime"),
    )
