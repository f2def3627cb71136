"""``/model``: the decoding model, hot swap and rollback (POSTs need the bearer token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, model_validator

from service.api.deps import Authorized, DaemonDep, EngineDep, SettingsDep
from service.settings import Settings

router = APIRouter(prefix="/model", tags=["model"])


class ModelInfo(BaseModel):
    model_id: str
    path: str
    previous_model_id: str | None
    n_channels: int | None
    bin_s: float | None
    kinematics_labels: list[str] | None
    created: str | None
    config: dict[str, Any] | None
    metrics: dict[str, Any] | None
    swaps: dict[str, Any]
    last_swap: dict[str, Any] | None


class SwapRequest(BaseModel):
    """Either ``path`` (any checkpoint file) or ``name`` (a file in the models folder)."""

    path: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SwapRequest:
        if (self.path is None) == (self.name is None):
            raise ValueError("give exactly one of 'path' or 'name'")
        return self


class SwapResult(BaseModel):
    model_id: str
    previous_model_id: str
    staged: bool


@router.get("", response_model=ModelInfo)
def get_model(daemon: DaemonDep, engine: EngineDep) -> ModelInfo:
    engine_status = engine.status()
    manifest = daemon.manifest(engine_status["model_id"]) or {}
    return ModelInfo(
        model_id=engine_status["model_id"],
        path=engine_status["model_path"],
        previous_model_id=engine_status["previous_model_id"],
        n_channels=manifest.get("n_channels"),
        bin_s=manifest.get("bin_s"),
        kinematics_labels=manifest.get("kinematics_labels"),
        created=manifest.get("created"),
        config=manifest.get("model"),
        metrics=manifest.get("metrics"),
        swaps=engine_status["swaps"],
        last_swap=engine_status["last_swap"],
    )


def _resolve(request: SwapRequest, settings: Settings) -> Path:
    if request.path is not None:
        return Path(request.path)
    if settings.models_dir is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "no models folder configured: start with --models-dir DIR or swap by 'path'",
        )
    name = str(request.name)
    if not name or Path(name).name != name or name in (".", ".."):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"name {name!r} must be a plain file name inside the models folder",
        )
    return settings.models_dir / name


@router.post("/swap", response_model=SwapResult, dependencies=[Authorized])
def swap(
    request: SwapRequest, daemon: DaemonDep, engine: EngineDep, settings: SettingsDep
) -> SwapResult:
    path = _resolve(request, settings)
    previous = engine.model_id
    try:
        model_id = daemon.swap(path)
    except (ValueError, OSError) as error:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"swap to {path} refused, model {previous} keeps decoding: {error}",
        ) from error
    return SwapResult(model_id=model_id, previous_model_id=previous, staged=True)


@router.post("/rollback", response_model=SwapResult, dependencies=[Authorized])
def rollback(daemon: DaemonDep, engine: EngineDep) -> SwapResult:
    current = engine.model_id
    try:
        model_id = daemon.rollback()
    except ValueError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
    return SwapResult(model_id=model_id, previous_model_id=current, staged=True)
