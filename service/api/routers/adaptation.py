"""``/adaptation``: the e-prop learner's status and controls.

Controls run on the decoding loop between bins (:meth:`Daemon.call_in_loop`), so the learner
is only touched by the loop thread. ``enable`` starts a fresh learner for the current model
(later swaps keep adapting) and ``disable`` stops learning, keeping the weights learned so far;
``pause`` / ``resume`` / ``reset`` / ``learning-rate`` act on a running learner (409 when
adaptation is off).

The learning rate refuses ``NaN``, ``Infinity`` and ``1e999`` with 422 naming ``lr``
(:class:`service.api.finite_errors.FiniteErrorsRoute` keeps that answer valid JSON).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from service.api.deps import Authorized, DaemonDep, EngineDep, problems
from service.api.finite_errors import FiniteErrorsRoute
from service.engine import Engine

router = APIRouter(prefix="/adaptation", tags=["adaptation"], route_class=FiniteErrorsRoute)

_CONTROL = problems(401, 409, 503)


class AdaptationStatus(BaseModel):
    enabled: bool
    target_stream: str | None
    status: dict[str, Any] | None


class LearningRate(BaseModel):
    lr: float = Field(gt=0, allow_inf_nan=False, strict=True, description="step size (> 0)")


def _status(daemon: DaemonDep, engine: Engine) -> AdaptationStatus:
    learner = engine.learner
    return AdaptationStatus(
        enabled=learner is not None,
        target_stream=daemon.settings.target_stream,
        status=None if learner is None else dataclasses.asdict(learner.status),
    )


def _in_loop(daemon: DaemonDep, engine: Engine, action: Callable[[], Any]) -> AdaptationStatus:
    try:
        daemon.call_in_loop(action)
    except (TimeoutError, RuntimeError) as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
    return _status(daemon, engine)


def _control(daemon: DaemonDep, engine: Engine, action: str, *args: Any) -> AdaptationStatus:
    if engine.learner is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "adaptation is off: POST /adaptation/enable first (or start with --adapt)",
        )

    def apply() -> None:
        learner = engine.learner
        if learner is not None:
            getattr(learner, action)(*args)

    return _in_loop(daemon, engine, apply)


@router.get("", response_model=AdaptationStatus)
def get_adaptation(daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    return _status(daemon, engine)


@router.post(
    "/enable",
    response_model=AdaptationStatus,
    dependencies=[Authorized],
    responses=problems(401, 503),
)
def enable(daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    return _in_loop(daemon, engine, lambda: engine.set_adaptation(True))


@router.post(
    "/disable",
    response_model=AdaptationStatus,
    dependencies=[Authorized],
    responses=problems(401, 503),
)
def disable(daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    return _in_loop(daemon, engine, lambda: engine.set_adaptation(False))


@router.post(
    "/pause", response_model=AdaptationStatus, dependencies=[Authorized], responses=_CONTROL
)
def pause(daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    return _control(daemon, engine, "pause", "paused over HTTP")


@router.post(
    "/resume", response_model=AdaptationStatus, dependencies=[Authorized], responses=_CONTROL
)
def resume(daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    return _control(daemon, engine, "resume")


@router.post(
    "/reset", response_model=AdaptationStatus, dependencies=[Authorized], responses=_CONTROL
)
def reset(daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    """Restore the weights the learner started from and clear its traces and optimiser."""
    return _control(daemon, engine, "reset")


@router.post(
    "/learning-rate",
    response_model=AdaptationStatus,
    dependencies=[Authorized],
    responses=problems(400, 401, 409, 503),
)
def learning_rate(body: LearningRate, daemon: DaemonDep, engine: EngineDep) -> AdaptationStatus:
    return _control(daemon, engine, "set_learning_rate", body.lr)
