"""``/model``: the decoding model, its activity, the models folder, hot swap (by name, path
or upload) and rollback (POSTs need the bearer token).

Manifests come from files anyone may have put in the models folder: listing reads only the
checkpoints' headers (:func:`bci.checkpoint.read_manifest`, bounded by
:data:`bci.checkpoint.MAX_HEADER_BYTES`), and a manifest's free-form parts (``metrics``,
``config``) are shown only up to :data:`MAX_SHOWN_BYTES` of JSON each; larger ones are
replaced by null and the reason. An upload is written next to the models as a ``.part`` file,
renamed to ``upload-<sha256 prefix>.safetensors``, and removed again if the swap is refused
for any reason (unless that name already held an accepted file).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Request, UploadFile, status
from pydantic import BaseModel, model_validator

from bci.atomic import fsync_directory
from bci.checkpoint import read_manifest
from service.api.deps import Authorized, LinkDep, SettingsDep, StatusDep, problems
from service.api.finite_errors import FiniteErrorsRoute
from service.api.link import ControlRefused, DecoderLink
from service.settings import Settings

MAX_UPLOAD_BYTES = 256 * 1024 * 1024
MAX_SHOWN_BYTES = 64 * 1024  # JSON of one free-form manifest part in a response

router = APIRouter(prefix="/model", tags=["model"], route_class=FiniteErrorsRoute)


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
    omitted: list[str]


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


class AvailableModel(BaseModel):
    name: str
    size_bytes: int
    model_id: str | None
    created: str | None
    n_channels: int | None
    bin_s: float | None
    metrics: dict[str, Any] | None
    error: str | None
    omitted: list[str]


class AvailableModels(BaseModel):
    models_dir: str | None
    current_model_id: str
    models: list[AvailableModel]


class Activity(BaseModel):
    model_id: str
    rate_tau_s: float
    firing_rates_hz: list[float]
    mean_rate_hz: float
    silent_fraction: float
    raster_indices: list[int]
    weight_norms: dict[str, float]


def _shown(manifest: dict[str, Any], key: str, omitted: list[str]) -> Any:
    """``manifest[key]`` if its JSON fits :data:`MAX_SHOWN_BYTES`, else None (and a note in
    ``omitted``)."""
    value = manifest.get(key)
    size = len(json.dumps(value))
    if size <= MAX_SHOWN_BYTES:
        return value
    omitted.append(f"{key}: {size:,} bytes of JSON, more than the {MAX_SHOWN_BYTES:,} shown")
    return None


@router.get("", response_model=ModelInfo)
def get_model(status_doc: StatusDep) -> ModelInfo:
    engine_status = status_doc["engine"]
    manifest = _manifest(engine_status["model_path"], engine_status["model_id"])
    omitted: list[str] = []
    return ModelInfo(
        model_id=engine_status["model_id"],
        path=engine_status["model_path"],
        previous_model_id=engine_status["previous_model_id"],
        n_channels=manifest.get("n_channels"),
        bin_s=manifest.get("bin_s"),
        kinematics_labels=manifest.get("kinematics_labels"),
        created=manifest.get("created"),
        config=_shown(manifest, "model", omitted),
        metrics=_shown(manifest, "metrics", omitted),
        swaps=engine_status["swaps"],
        last_swap=engine_status["last_swap"],
        omitted=omitted,
    )


@router.get("/activity", response_model=Activity)
def get_activity(status_doc: StatusDep) -> Activity:
    """Firing rate of every hidden neuron (Hz, moving average) and weight norms."""
    return Activity(**status_doc["activity"])


@router.get("/available", response_model=AvailableModels)
def available(status_doc: StatusDep, settings: SettingsDep) -> AvailableModels:
    """The checkpoints in the models folder (swap one with ``{"name": ...}``)."""
    folder = settings.models_dir
    found: list[AvailableModel] = []
    if folder is not None and folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            try:
                checked, error = read_manifest(path), None
            except (ValueError, OSError) as exc:  # CheckpointError is a ValueError
                checked, error = None, str(exc)
            manifest = {} if checked is None else checked.to_dict()
            omitted: list[str] = []
            found.append(
                AvailableModel(
                    name=path.name,
                    size_bytes=path.stat().st_size,
                    model_id=None if checked is None else checked.model_id,
                    created=manifest.get("created"),
                    n_channels=manifest.get("n_channels"),
                    bin_s=manifest.get("bin_s"),
                    metrics=_shown(manifest, "metrics", omitted),
                    error=error,
                    omitted=omitted,
                )
            )
    return AvailableModels(
        models_dir=None if folder is None else str(folder),
        current_model_id=status_doc["engine"]["model_id"],
        models=found,
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


def _manifest(path: str, model_id: str) -> dict[str, Any]:
    """The manifest of the decoding model's file, when the file still holds that model."""
    try:
        manifest = read_manifest(path)
    except (ValueError, OSError):  # replaced or removed since: summary only
        return {}
    return manifest.to_dict() if manifest.model_id == model_id else {}


def _swap(link: DecoderLink, previous: str, path: Path, what: str) -> SwapResult:
    try:
        model_id = link.control("swap", str(path))
    except ControlRefused as error:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"swap to {what} refused, model {previous} keeps decoding: {error}",
        ) from error
    except TimeoutError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
    return SwapResult(model_id=model_id, previous_model_id=previous, staged=True)


@router.post(
    "/swap",
    response_model=SwapResult,
    dependencies=[Authorized],
    responses=problems(400, 401, 409, 422),
)
def swap(
    request: SwapRequest, link: LinkDep, status_doc: StatusDep, settings: SettingsDep
) -> SwapResult:
    path = _resolve(request, settings)
    return _swap(link, status_doc["engine"]["model_id"], path, str(path))


@router.post(
    "/upload",
    response_model=SwapResult,
    dependencies=[Authorized],
    responses=problems(400, 401, 413, 422),
)
def upload(
    file: Annotated[UploadFile, File(description="checkpoint (.safetensors)")],
    request: Request,
    link: LinkDep,
    status_doc: StatusDep,
    settings: SettingsDep,
) -> SwapResult:
    """Upload a checkpoint and swap to it. It is kept as ``upload-<sha256 prefix>.safetensors``
    in the models folder (or a folder of the daemon's when none is configured); a refused
    file is deleted."""
    folder = settings.models_dir
    if folder is None:  # a private folder, removed when the app stops
        state = request.app.state
        if getattr(state, "uploads_dir", None) is None:
            state.uploads_dir = tempfile.mkdtemp(prefix="bci-uploads-")
        folder = Path(state.uploads_dir)
    part = tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False)
    digest = hashlib.sha256()
    size = 0
    try:
        with part:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        f"upload exceeds {MAX_UPLOAD_BYTES >> 20} MiB; a checkpoint is far "
                        "smaller: check the file",
                    )
                digest.update(chunk)
                part.write(chunk)
            part.flush()
            os.fsync(part.fileno())
        path = folder / f"upload-{digest.hexdigest()[:12]}.safetensors"
        known = path.is_file()  # the same bytes were uploaded (and accepted) before
        if not known:
            os.replace(part.name, path)
            fsync_directory(folder)
    finally:
        Path(part.name).unlink(missing_ok=True)
    try:
        previous = status_doc["engine"]["model_id"]
        return _swap(link, previous, path, f"uploaded file {file.filename!r}")
    except BaseException:  # refused, or failed in any way: nothing new stays behind
        if not known:
            path.unlink(missing_ok=True)
        raise


@router.post(
    "/rollback",
    response_model=SwapResult,
    dependencies=[Authorized],
    responses=problems(401, 409),
)
def rollback(link: LinkDep, status_doc: StatusDep) -> SwapResult:
    current = status_doc["engine"]["model_id"]
    try:
        model_id = link.control("rollback")
    except ControlRefused as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
    except TimeoutError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
    return SwapResult(model_id=model_id, previous_model_id=current, staged=True)
