"""``/adaptation``: the e-prop learner's status and controls (409 when adapt is off).

Controls run on the decoding loop between bins (:meth:`Daemon.call_in_loop`), so the learner
is only touched by the loop thread.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from service.api.deps import Authorized, DaemonDep, EngineDep
from service.engine import Engine

router = APIRouter(prefix="/adaptation", tags=["adaptation"])


class AdaptationStatus(BaseModel):
    enabled: bool
    status: dict[str, Any] | None


class LearningRate(BaseModel):
    lr: float


def _status(engine: Engine) -> AdaptationStatus:
    learner = engine.learner
    return AdaptationStatus(
        enabled=learner is not None,
        status=None if learner is None else dataclasses.asdict(learner.status),
    )


def _control(daemon: DaemonDep, engine: Engine, action: str, *args: Any) -> AdaptationStatus:
    if engine.learner is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "adaptation is off: restart the daemon with --adapt"
        )

    def apply() -> None:
        learner = engine.learner
        if learner is not None:
            getattr(learner, action)(*args)

    try:
        daemon.call_in_loop(apply)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    except (TimeoutError, RuntimeError) as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
    return _status(engine)


@router.get("", response_model=AdaptationStatus)
def get_adaptation(engine: EngineDep) -> AdaptationStatus:
    return _status(engine)


@router.post("/pause", response_model=AdaptationStatus, dependencies=[Authorized])
def pause(daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    return _control(daemon, engine, "pause", "paused over HTTP")


@router.post("/resume", response_model=AdaptationStatus, dependencies=[Authorized])
def resume(daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    return _control(daemon, engine, "resume")


@router.post("/learning-rate", response_model=AdaptationStatus, dependencies=[Authorized])
def learning_rate(body: LearningRate, daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    return _control(daemon, engine, "set_learning_rate", body.lr)
