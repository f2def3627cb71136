"""``/adaptation``: the e-prop learner's status and controls.

Controls travel to the decoder loop, which applies them between bins, so the learner is only
touched by the loop. ``enable`` starts a fresh learner for the current model (later swaps keep
adapting) and ``disable`` stops learning, keeping the weights learned so far; ``pause`` /
``resume`` / ``reset`` / ``learning-rate`` act on a running learner (409 when adaptation is
off). ``track_inputs_s`` says whether the input normalisation follows the stream
(:mod:`bci.input_tracking`), with or without e-prop.

The learning rate refuses ``NaN``, ``Infinity`` and ``1e999`` with 422 naming ``lr``
(:class:`service.api.finite_errors.FiniteErrorsRoute` keeps that answer valid JSON).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from service.api.deps import Authorized, LinkDep, StatusDep, problems
from service.api.finite_errors import FiniteErrorsRoute
from service.api.link import ControlRefused, DecoderLink

router = APIRouter(prefix="/adaptation", tags=["adaptation"], route_class=FiniteErrorsRoute)

_CONTROL = problems(401, 409, 503)


class AdaptationStatus(BaseModel):
    enabled: bool
    target_stream: str | None
    status: dict[str, Any] | None
    track_inputs_s: float | None = Field(
        description="time constant (s) of the input normalisation following the stream "
        "(bci serve --track-inputs); null: the model's stored statistics"
    )


class LearningRate(BaseModel):
    lr: float = Field(gt=0, allow_inf_nan=False, strict=True, description="step size (> 0)")


def _status(link: DecoderLink, status_doc: dict[str, Any] | None = None) -> AdaptationStatus:
    status_doc = link.status() if status_doc is None else status_doc
    learner = (status_doc.get("engine") or {}).get("adaptation")
    return AdaptationStatus(
        enabled=learner is not None,
        target_stream=link.settings.target_stream,
        status=learner,
        track_inputs_s=link.settings.track_inputs,
    )


def _control(link: DecoderLink, *args: Any) -> AdaptationStatus:
    """Run ``adaptation <args>`` on the decoder loop; 409 when it is refused (adaptation
    off), 503 when the decoder does not answer."""
    try:
        link.control("adaptation", *args)
    except ControlRefused as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
    except TimeoutError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
    return _status(link)


@router.get("", response_model=AdaptationStatus)
def get_adaptation(link: LinkDep, status_doc: StatusDep) -> AdaptationStatus:
    return _status(link, status_doc)


@router.post(
    "/enable",
    response_model=AdaptationStatus,
    dependencies=[Authorized],
    responses=problems(401, 503),
)
def enable(link: LinkDep, status_doc: StatusDep) -> AdaptationStatus:
    return _control(link, "enable")


@router.post(
    "/disable",
    response_model=AdaptationStatus,
    dependencies=[Authorized],
    responses=problems(401, 503),
)
def disable(link: LinkDep, status_doc: StatusDep) -> AdaptationStatus:
    return _control(link, "disable")


@router.post(
    "/pause", response_model=AdaptationStatus, dependencies=[Authorized], responses=_CONTROL
)
def pause(link: LinkDep, status_doc: StatusDep) -> AdaptationStatus:
    return _control(link, "pause", "paused over HTTP")


@router.post(
    "/resume", response_model=AdaptationStatus, dependencies=[Authorized], responses=_CONTROL
)
def resume(link: LinkDep, status_doc: StatusDep) -> AdaptationStatus:
    return _control(link, "resume")


@router.post(
    "/reset", response_model=AdaptationStatus, dependencies=[Authorized], responses=_CONTROL
)
def reset(link: LinkDep, status_doc: StatusDep) -> AdaptationStatus:
    """Restore the weights the learner started from and clear its traces and optimiser."""
    return _control(link, "reset")


@router.post(
    "/learning-rate",
    response_model=AdaptationStatus,
    dependencies=[Authorized],
    responses=problems(400, 401, 409, 503),
)
def learning_rate(body: LearningRate, link: LinkDep, status_doc: StatusDep) -> AdaptationStatus:
    return _control(link, "set_learning_rate", body.lr)
