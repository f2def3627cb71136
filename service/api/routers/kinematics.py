"""``GET /kinematics/latest`` and ``/kinematics/recent``: decoded bins from the ring."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from service.api.deps import LinkDep
from service.shared_state import DecodedBin

router = APIRouter(prefix="/kinematics", tags=["kinematics"])


class KinematicsBin(BaseModel):
    seq: int
    timestamp: float
    values: list[float]
    labels: list[str]
    model_id: str
    holding: bool = Field(
        default=False,
        description="True while the stream is lost: the output holds zero velocity and "
        "values are zeros; seq, timestamp and model_id are those of the last decoded bin",
    )


class KinematicsList(BaseModel):
    bins: list[KinematicsBin]


def _out(decoded: DecodedBin, labels: list[str]) -> KinematicsBin:
    return KinematicsBin(
        seq=decoded.seq,
        timestamp=decoded.timestamp,
        values=[float(v) for v in decoded.values],
        labels=list(labels),
        model_id=decoded.model_id,
    )


@router.get("/latest", response_model=KinematicsBin)
def latest(link: LinkDep) -> KinematicsBin:
    decoded = link.recent.latest()
    if decoded is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no bin decoded yet")
    status_doc = link.status()
    out = _out(decoded, status_doc["labels"])
    if status_doc["holding"]:  # no decoded bin is invented: the last one's identity, zero values
        out.values = [0.0] * len(out.values)
        out.holding = True
    return out


@router.get("/recent", response_model=KinematicsList)
def recent(link: LinkDep, n: Annotated[int, Query(ge=1, le=100_000)] = 100) -> KinematicsList:
    labels = link.status()["labels"]
    return KinematicsList(bins=[_out(b, labels) for b in link.recent.recent(n)])
