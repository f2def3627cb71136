"""The checkpoint manifest: its keys, its typed model and every check a manifest must pass.

The manifest is the JSON document in a checkpoint's safetensors metadata (the table of keys
is in :mod:`bci.checkpoint`). :class:`Manifest` is its typed form: pydantic checks each key's
type (strict: no bool for a number, no string for a list), and :func:`validate_manifest`
adds what types cannot say (the format version, the exact key set, agreement with the
model config: channel and output counts, bin width, tensor names and shapes), raising
:class:`CheckpointError` naming the file, the key and the fix. ``model_id`` is derived here
and nowhere else. Torch-free: the decoder process validates manifests too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bci.compatibility import same_bin_width
from bci.config import RSNNConfig, expected_tensor_shapes
from bci.json_bounds import check_json_bounds

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FIELDS",
    "MANIFEST_KEY",
    "MAX_HEADER_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_DEPTH",
    "NORMALISATION_FIELDS",
    "OPTIONAL_FIELDS",
    "RESAVE",
    "CheckpointError",
    "Manifest",
    "check_labels",
    "check_manifest_bounds",
    "check_tensor_names",
    "check_units",
    "manifest_from_metadata",
    "validate_manifest",
]

FORMAT_VERSION = 1
READABLE_VERSIONS: tuple[int, ...] = (1,)
MANIFEST_KEY = "manifest"
MANIFEST_FIELDS: tuple[str, ...] = (
    "format_version",
    "model",
    "neurons",
    "n_channels",
    "channel_labels",
    "bin_s",
    "kinematics_labels",
    "normalisation",
    "metrics",
    "training",
    "created",
    "tensors",
    "sha256",
)
OPTIONAL_FIELDS: tuple[str, ...] = ("max_speed", "kinematics_units")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # a 1,500-step training history is ~0.3 MB
MAX_MANIFEST_DEPTH = 32  # ours is 5 deep (training.history[i].field)
MAX_HEADER_BYTES = MAX_MANIFEST_BYTES + 64 * 1024  # the manifest, escaped, and the tensor table
NORMALISATION_FIELDS: tuple[str, ...] = ("input_mean", "input_scale", "output_mean", "output_scale")
TENSOR_DTYPE = "float32"
RESAVE = "re-save the model with bci.checkpoint.save_checkpoint"

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
_Finite = Annotated[float, Field(allow_inf_nan=False)]


class CheckpointError(ValueError):
    """A checkpoint file or the model being saved breaks the format; the message says how to fix
    it."""


class TensorSpec(BaseModel):
    """One entry of the manifest's ``tensors``: a shape and the dtype (always float32)."""

    model_config = _STRICT
    shape: list[int]
    dtype: str


class Normalisation(BaseModel):
    """Copies of the normalisation tensors, for readers without torch."""

    model_config = _STRICT
    input_mean: list[_Finite]
    input_scale: list[_Finite]
    output_mean: list[_Finite]
    output_scale: list[_Finite]


class Manifest(BaseModel):
    """A checkpoint's manifest, typed; :func:`validate_manifest` makes one from JSON."""

    model_config = _STRICT
    format_version: int
    model: dict[str, Any]
    neurons: dict[str, Any]
    n_channels: int
    channel_labels: list[str] | None
    bin_s: float
    kinematics_labels: list[str]
    normalisation: Normalisation
    metrics: dict[str, Any]
    training: dict[str, Any] | None
    created: str
    tensors: dict[str, TensorSpec]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    max_speed: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    kinematics_units: list[str] | None = None

    @field_validator("created")
    @classmethod
    def _utc_iso(cls, created: str) -> str:
        try:
            stamp = datetime.fromisoformat(created)
        except ValueError:
            stamp = None
        if stamp is None or stamp.utcoffset() is None:
            raise ValueError("not an ISO 8601 time with a UTC offset")
        return created

    @property
    def model_id(self) -> str:
        """Short identity of the checkpoint: the first 12 hex digits of its tensors' SHA-256."""
        return self.sha256[:12]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, key for key as written (absent optional keys stay absent)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def to_json(self) -> str:
        """The JSON text stored in the file (NaN and infinities refused)."""
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=False)


# What to say when a key has the wrong type (the value shown is the key's whole value).
_TYPE_ERRORS: dict[str, str] = {
    "model": "manifest model must be an object (RSNNConfig fields)",
    "neurons": "neurons must be an object; " + RESAVE,
    "n_channels": "n_channels must be an integer, got {value!r}",
    "channel_labels": "channel_labels must be a list of strings, got {value!r:.200}",
    "bin_s": "bin_s must be a number of seconds, got {value!r}",
    "kinematics_labels": "kinematics_labels must be a list of strings, got {value!r:.200}",
    "normalisation": "normalisation must be an object with keys "
    f"{list(NORMALISATION_FIELDS)}, got {{value!r:.200}}; {RESAVE}",
    "metrics": "metrics must be an object; " + RESAVE,
    "training": "training must be an object or null; " + RESAVE,
    "created": "created must be an ISO 8601 time with a UTC offset, got {value!r}; " + RESAVE,
    "tensors": "tensors must be an object; " + RESAVE,
    "sha256": "sha256 must be 64 lowercase hex digits, got {value!r}; " + RESAVE,
    "max_speed": "max_speed must be a finite number > 0 (the kinematics' units), got "
    "{value!r:.50}; " + RESAVE,
    "kinematics_units": "kinematics_units must be a list of unit strings, got {value!r:.200}",
}


_KEY_SET = ("missing", "extra_forbidden")  # a normalisation key absent or unknown


def validate_manifest(path: Path, data: dict[str, Any]) -> tuple[Manifest, RSNNConfig]:
    """The typed manifest of ``data`` and its model config, or :class:`CheckpointError`."""
    where = f"checkpoint file {path}"
    version = data.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise CheckpointError(
            f"{where}: unknown format_version {version!r}; this code reads format_version "
            f"{readable}: load it with the bci version that wrote it, or {RESAVE}"
        )
    missing = [key for key in MANIFEST_FIELDS if key not in data]
    if missing:
        raise CheckpointError(f"{where}: manifest lacks {missing}; {RESAVE}")
    extra = sorted(set(data) - set(MANIFEST_FIELDS) - set(OPTIONAL_FIELDS))
    if extra:
        raise CheckpointError(
            f"{where}: manifest has unknown keys {extra} (format_version {version} has exactly "
            f"{list(MANIFEST_FIELDS)}, and optionally {list(OPTIONAL_FIELDS)}); {RESAVE}"
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise _type_error(where, data, exc) from None
    config = _config_from_manifest(where, manifest.model)
    _check_consistency(path, manifest, config)
    return manifest, config


def _type_error(where: str, data: dict[str, Any], exc: ValidationError) -> CheckpointError:
    """The first pydantic error as our message for its key."""
    error = exc.errors()[0]
    key = str(error["loc"][0])
    if key == "normalisation" and len(error["loc"]) > 1 and error["type"] not in _KEY_SET:
        name = str(error["loc"][1])
        values = data[key].get(name) if isinstance(data[key], dict) else None
        return CheckpointError(
            f"{where}: normalisation.{name} must be a list of finite numbers, got "
            f"{values!r:.200}; {RESAVE}"
        )
    if key == "tensors" and len(error["loc"]) > 1:
        name = str(error["loc"][1])
        return CheckpointError(
            f"{where}: manifest tensors[{name!r}] must be {{'shape': [ints], 'dtype': "
            f"'float32'}}, got {data[key][name]!r}; {RESAVE}"
        )
    return CheckpointError(f"{where}: " + _TYPE_ERRORS[key].format(value=data[key]))


def _check_consistency(path: Path, manifest: Manifest, config: RSNNConfig) -> None:
    """What the types cannot say: agreement with the model config."""
    where = f"checkpoint file {path}"
    if manifest.kinematics_units is not None:
        check_units(where, manifest.kinematics_units, config.n_out)
    if manifest.n_channels != config.n_in:
        raise CheckpointError(
            f"{where}: n_channels is {manifest.n_channels} but the model config has "
            f"n_in={config.n_in}; the two must agree: {RESAVE}"
        )
    if not same_bin_width(manifest.bin_s, config.dt_s):
        raise CheckpointError(
            f"{where}: bin_s is {manifest.bin_s} s but the model config has dt_s={config.dt_s} "
            f"s; the model must be run at the bin width it was trained with: {RESAVE}"
        )
    check_labels(where, "kinematics_labels", manifest.kinematics_labels, config.n_out, "n_out")
    if manifest.channel_labels is not None:
        check_labels(where, "channel_labels", manifest.channel_labels, config.n_in, "n_in")
    for key in NORMALISATION_FIELDS:
        size = config.n_in if key.startswith("input") else config.n_out
        values = getattr(manifest.normalisation, key)
        if len(values) != size:
            raise CheckpointError(
                f"{where}: normalisation.{key} must be a list of {size} finite numbers, got "
                f"{values!r:.200}; {RESAVE}"
            )
    expected = expected_tensor_shapes(config)
    check_tensor_names(
        path, set(manifest.tensors), set(expected), "the manifest's model config needs"
    )
    for name in sorted(expected):
        spec = manifest.tensors[name]
        if spec.dtype != TENSOR_DTYPE:
            raise CheckpointError(
                f"{where}: tensor {name!r} has dtype {spec.dtype!r} in the manifest; "
                f"checkpoints hold float32 only: {RESAVE}"
            )
        if tuple(spec.shape) != expected[name]:
            raise CheckpointError(
                f"{where}: tensor {name!r} shape mismatch with the model config: expected "
                f"{expected[name]}, received {tuple(spec.shape)} (manifest); {RESAVE}"
            )


def _config_from_manifest(where: str, model: dict[str, Any]) -> RSNNConfig:
    fields = [f.name for f in dataclasses.fields(RSNNConfig)]
    missing = [name for name in fields if name not in model]
    extra = sorted(set(model) - set(fields))
    if missing or extra:
        raise CheckpointError(
            f"{where}: manifest model config does not match RSNNConfig (missing {missing}, "
            f"unknown {extra}); it was written by another bci version: {RESAVE}"
        )
    for name in ("n_in", "n_hidden", "n_out"):
        value = model[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise CheckpointError(
                f"{where}: invalid model config: {name} must be an integer, got {value!r}"
            )
    try:
        return RSNNConfig(**model)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{where}: invalid model config: {exc}; fix the manifest's model section or {RESAVE}"
        ) from None


def manifest_from_metadata(path: Path, metadata: Any) -> dict[str, Any]:
    """The manifest's JSON object from a file's safetensors metadata, size- and depth-checked
    before it is parsed."""
    if not isinstance(metadata, dict) or MANIFEST_KEY not in metadata:
        raise CheckpointError(
            f"checkpoint file {path} has no {MANIFEST_KEY!r} in its safetensors metadata; it is "
            f"a safetensors file but not a bci checkpoint: {RESAVE}"
        )
    extra = sorted(set(metadata) - {MANIFEST_KEY})
    if extra:
        raise CheckpointError(
            f"checkpoint file {path}: unexpected safetensors metadata keys {extra}; the format "
            f"holds only {MANIFEST_KEY!r}: {RESAVE}"
        )
    text = metadata[MANIFEST_KEY]
    if isinstance(text, str):
        check_manifest_bounds(f"checkpoint file {path}", text, fix=RESAVE)
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint file {path}: the manifest is not valid JSON ({exc}); {RESAVE}"
        ) from None
    if not isinstance(manifest, dict):
        raise CheckpointError(
            f"checkpoint file {path}: the manifest must be a JSON object, got "
            f"{type(manifest).__name__}; {RESAVE}"
        )
    return manifest


def check_manifest_bounds(where: str, text: str, *, fix: str) -> None:
    """Refuse manifest JSON over :data:`MAX_MANIFEST_BYTES` or :data:`MAX_MANIFEST_DEPTH`."""
    try:
        check_json_bounds(
            text, "the manifest", max_bytes=MAX_MANIFEST_BYTES, max_depth=MAX_MANIFEST_DEPTH
        )
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}; {fix}") from None


def check_tensor_names(path: Path, found: set[str], expected: set[str], what: str) -> None:
    """Refuse missing or extra tensor names, compared with ``what`` (e.g. the manifest)."""
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if extra:
            parts.append(f"extra tensors {extra}")
        raise CheckpointError(
            f"checkpoint file {path}: {' and '.join(parts)} compared with what {what}; the file "
            f"was written for another model: {RESAVE}"
        )


def check_labels(where: str, key: str, labels: Any, expected: int, what: str) -> list[str]:
    """``labels`` as a list of ``expected`` unique strings (one name per column)."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise CheckpointError(f"{where}: {key} must be a list of strings, got {labels!r:.200}")
    labels = list(labels)
    if not all(isinstance(label, str) for label in labels):
        raise CheckpointError(f"{where}: {key} must hold strings only, got {labels!r:.200}")
    if len(labels) != expected:
        raise CheckpointError(
            f"{where}: {key} has {len(labels)} names but the model has {what}={expected}; give "
            "one name per column"
        )
    if len(set(labels)) != len(labels):
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        raise CheckpointError(f"{where}: {key} repeats {dupes}; labels must be unique")
    return labels


def check_units(where: str, units: Any, expected: int) -> list[str]:
    """``kinematics_units``: one non-empty string per output (units may repeat)."""
    if isinstance(units, (str, bytes)) or not isinstance(units, Sequence):
        raise CheckpointError(
            f"{where}: kinematics_units must be a list of unit strings, got {units!r:.200}"
        )
    units = list(units)
    if len(units) != expected or not all(isinstance(u, str) and u for u in units):
        raise CheckpointError(
            f"{where}: kinematics_units {units!r:.200} must hold one non-empty unit string per "
            f"output (n_out={expected}), e.g. 'cm/s'"
        )
    return units
