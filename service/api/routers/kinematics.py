"""``GET /kinematics/latest`` and ``/kinematics/recent``: decoded bins from the ring."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from service.api.deps import DaemonDep
from service.engine import DecodedBin

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


def _out(decoded: DecodedBin, labels: tuple[str, ...]) -> KinematicsBin:
    return KinematicsBin(
        seq=decoded.seq,
        timestamp=decoded.timestamp,
        values=[float(v) for v in decoded.values],
        labels=list(labels),
        model_id=decoded.model_id,
    )


@router.get("/latest", response_model=KinematicsBin)
def latest(daemon: DaemonDep) -> KinematicsBin:
    decoded = daemon.recent.latest()
    if decoded is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no bin decoded yet")
    out = _out(decoded, daemon.kinematics_labels)
    if daemon.holding:  # no decoded bin is invented: the last one's identity, zero values
        out.values = [0.0] * len(out.values)
        out.holding = True
    return out


@router.get("/recent", response_model=KinematicsList)
def recent(daemon: DaemonDep, n: Annotated[int, Query(ge=1, le=100_000)] = 100) -> KinematicsList:
    bins = daemon.recent.recent(n)
    return KinematicsList(bins=[_out(b, daemon.kinematics_labels) for b in bins])
