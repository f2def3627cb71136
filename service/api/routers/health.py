"""``GET /health``: the decoder's lifecycle state, and its process."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import LinkDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    state: str
    message: str
    model_id: str | None
    bins_decoded: int
    stream_state: str | None
    decoder: dict[str, Any] | None = None


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
    )
