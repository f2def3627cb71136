"""RSNN checkpoints: one ``.safetensors`` file per model, with a JSON manifest.

The file format is a contract shared with other tools:

* the tensors are the model's ``state_dict`` (float32, contiguous, little-endian);
* the safetensors metadata holds exactly one key, ``"manifest"``, a JSON document with

  ==================== ==================================================================
  key                  meaning
  ==================== ==================================================================
  ``format_version``   int, :data:`FORMAT_VERSION`
  ``model``            :meth:`bci.rsnn.RSNNConfig.to_dict`
  ``neurons``          summary of per-neuron constants (informative only)
  ``n_channels``       input channel count (= ``model.n_in``)
  ``channel_labels``   list of ``n_channels`` names, or null
  ``bin_s``            bin width, seconds (= ``model.dt_s``)
  ``kinematics_labels`` list of ``model.n_out`` names
  ``normalisation``    ``input_mean``, ``input_scale``, ``output_mean``, ``output_scale``
                       as lists (copies of the tensors, for readers without torch)
  ``metrics``          free-form JSON object (training and test metrics)
  ``training``         JSON object (e.g. the training config and result) or null
  ``created``          ISO 8601 UTC time of writing
  ``tensors``          name -> ``{"shape": [...], "dtype": "float32"}``
  ``sha256``           hex SHA-256 over the tensors: for each name in sorted order, the
                       name in UTF-8, then the tensor's little-endian bytes
  ``max_speed``        optional: the largest plausible magnitude of any output, in the
                       kinematics' units (e.g. cm/s); see :mod:`bci.plausibility`
  ``kinematics_units`` optional: list of ``model.n_out`` unit strings (e.g. ``"cm/s"``),
                       written when the calibration session had units; absent = unknown
  ==================== ==================================================================

Files are written atomically (temporary file in the same directory, fsync, ``os.replace``,
directory fsync) and read with safetensors and ``json`` only: nothing is ever unpickled.
Loading checks everything above and raises :class:`CheckpointError` naming the file, the
problem and the fix. Before the header is read, its length is checked against
:data:`MAX_HEADER_BYTES`, and before the manifest is parsed its size and nesting against
:data:`MAX_MANIFEST_BYTES` and :data:`MAX_MANIFEST_DEPTH`; after the values are read, the
weights' magnitudes against :data:`bci.plausibility.MAX_ABS_WEIGHT` and the output
normalisation (:func:`bci.plausibility.check_weight_magnitudes`). :func:`load_checkpoint`
builds the torch model (training, calibration, export); :func:`load_decoder` runs the same
checks and builds the online decoder from the NumPy arrays, without importing torch (the
decoder process).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors
import safetensors.numpy

from bci.atomic import write_bytes
from bci.config import RSNNConfig, expected_tensor_shapes
from bci.json_bounds import check_json_bounds
from bci.online import OnlineRSNN
from bci.plausibility import check_weight_magnitudes

if TYPE_CHECKING:
    from bci.rsnn import RSNN

# torch is imported inside the functions that save or build a torch model (save_checkpoint,
# _neuron_summary, load_checkpoint): the decoder process imports this module for load_decoder
# and must not import torch, and splitting those functions into another module would split
# the file format's one home (its writer, its checks and its readers) in two.

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_DEPTH",
    "Checkpoint",
    "CheckpointError",
    "DecoderFile",
    "decoder_of",
    "expected_tensor_shapes",
    "load_checkpoint",
    "load_decoder",
    "model_id",
    "read_manifest",
    "save_checkpoint",
    "tensor_sha256",
]

logger = logging.getLogger(__name__)

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
_DTYPE = "float32"
_HEADER_DTYPE = "F32"  # safetensors' name for float32
_RESAVE = "re-save the model with bci.checkpoint.save_checkpoint"


class CheckpointError(ValueError):
    """A checkpoint file or the model being saved breaks the format; the message says how to fix
    it."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the model (float32, eval mode), its manifest and its file."""

    model: RSNN
    manifest: dict
    path: Path

    @property
    def model_id(self) -> str:
        return model_id(self.manifest)


@dataclass(frozen=True)
class DecoderFile:
    """A checkpoint loaded for decoding without torch: its manifest, the online decoder
    (float32) and its file."""

    manifest: dict
    decoder: OnlineRSNN
    path: Path

    @property
    def model_id(self) -> str:
        return model_id(self.manifest)


# -- public helpers -------------------------------------------------------------------------


def model_id(manifest: Mapping[str, Any]) -> str:
    """Short identity of a checkpoint: the first 12 hex digits of its tensors' SHA-256."""
    return str(manifest["sha256"])[:12]


def tensor_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """Hex SHA-256 over ``tensors``: per name in sorted order, the UTF-8 name, then the
    tensor's little-endian bytes (C order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(name.encode("utf-8"))
        digest.update(np.ascontiguousarray(little).tobytes())
    return digest.hexdigest()


# -- saving ---------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike[str],
    model: RSNN,
    *,
    kinematics_labels: Sequence[str],
    channel_labels: Sequence[str] | None = None,
    metrics: dict | None = None,
    training: dict | None = None,
    max_speed: float | None = None,
    kinematics_units: Sequence[str] | None = None,
) -> Path:
    """Write ``model`` and its manifest to ``path`` (exactly that name) atomically.

    Tensors are stored as float32 (a float64 model is rounded). ``metrics`` and ``training``
    must be JSON-serialisable (NumPy scalars and arrays, dataclasses, tuples and paths are
    converted; NaN and infinities are refused, as JSON has none). ``max_speed`` (> 0, the
    kinematics' units) bounds every output (see :mod:`bci.plausibility`); without it the
    bound follows from the output normalisation. ``kinematics_units`` (one non-empty string
    per output, e.g. ``("cm/s", "cm/s")``) go into the manifest when given. Returns the path
    written. Raises :class:`CheckpointError` for a model or labels that would make an invalid
    file and ``FileNotFoundError`` if the directory does not exist.
    """

    from bci.rsnn import RSNN

    path = Path(path)
    if not isinstance(model, RSNN):
        raise TypeError(f"save_checkpoint expects a bci.rsnn.RSNN, got {type(model).__name__}")
    config = model.config
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"cannot save checkpoint to {path}: directory {parent} does not exist; create it first"
        )
    where = f"cannot save checkpoint to {path}"
    kinematics = _labels(where, "kinematics_labels", kinematics_labels, config.n_out, "n_out")
    channels = (
        None
        if channel_labels is None
        else _labels(where, "channel_labels", channel_labels, config.n_in, "n_in")
    )
    if metrics is not None and not isinstance(metrics, Mapping):
        raise CheckpointError(f"{where}: metrics must be a dict, got {type(metrics).__name__}")
    if training is not None and not isinstance(training, Mapping) and not _is_dataclass(training):
        raise CheckpointError(
            f"{where}: training must be a dict (or a dataclass) or None, got "
            f"{type(training).__name__}"
        )

    tensors, manifest = _contents(where, model, kinematics, channels, metrics, training, max_speed)
    if kinematics_units is not None:
        manifest["kinematics_units"] = _units(where, kinematics_units, config.n_out)
    _validate_manifest(path, manifest)  # what we write must be what we accept
    text = json.dumps(manifest, allow_nan=False, sort_keys=False)
    _check_manifest_bounds(where, text, fix="store less in metrics or training")
    write_bytes(path, _serialize(tensors, {MANIFEST_KEY: text}))
    logger.info("saved checkpoint %s (sha256 %s)", path, manifest["sha256"])
    return path


def _contents(
    where: str,
    model: RSNN,
    kinematics: list[str],
    channels: list[str] | None,
    metrics: Mapping | None,
    training: Any,
    max_speed: float | None,
) -> tuple[dict[str, np.ndarray], dict]:
    """The float32 tensors and the manifest of ``model`` (checked as :func:`save_checkpoint`
    writes them)."""
    import torch  # see the note on torch at the imports

    config = model.config
    tensors: dict[str, np.ndarray] = {}
    for name, tensor in model.state_dict().items():
        array = np.ascontiguousarray(tensor.detach().cpu().to(torch.float32).numpy())
        _check_finite_tensor(where, name, array, fix="fix the model before saving it")
        tensors[name] = array
    _check_magnitudes(where, tensors, config, fix="fix the model before saving it")
    expected = expected_tensor_shapes(config)
    if set(tensors) != set(expected):  # pragma: no cover - guards RSNN changing under us
        raise CheckpointError(
            f"{where}: the model's tensors {sorted(tensors)} differ from the checkpoint format's "
            f"{sorted(expected)}; update bci.config.expected_tensor_shapes"
        )

    manifest = {
        "format_version": FORMAT_VERSION,
        "model": config.to_dict(),
        "neurons": _neuron_summary(model),
        "n_channels": config.n_in,
        "channel_labels": channels,
        "bin_s": float(config.dt_s),
        "kinematics_labels": kinematics,
        "normalisation": {key: tensors[key].tolist() for key in NORMALISATION_FIELDS},
        "metrics": _jsonable(where, "metrics", {} if metrics is None else metrics),
        "training": None if training is None else _jsonable(where, "training", training),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tensors": {
            name: {"shape": list(array.shape), "dtype": _DTYPE}
            for name, array in sorted(tensors.items())
        },
        "sha256": tensor_sha256(tensors),
    }
    if max_speed is not None:
        manifest["max_speed"] = max_speed
    return tensors, manifest


def decoder_of(model: RSNN, kinematics_labels: Sequence[str]) -> DecoderFile:
    """``model`` as :func:`load_decoder` would return it after saving it (same tensors,
    manifest and online decoder), without a file: ``path`` is ``<in memory>``."""
    where = "cannot build a decoder"
    config = model.config
    kinematics = _labels(where, "kinematics_labels", kinematics_labels, config.n_out, "n_out")
    tensors, manifest = _contents(where, model, kinematics, None, None, None, None)
    path = Path("<in memory>")
    _validate_manifest(path, manifest)
    return DecoderFile(manifest, _online_decoder(path, config, tensors), path)


def _serialize(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The whole file as bytes (safetensors layout)."""
    return safetensors.numpy.save(tensors, metadata=metadata)


def _neuron_summary(model: RSNN) -> dict[str, Any]:
    import torch

    config = model.config

    def stats(tensor: torch.Tensor) -> dict[str, float]:
        values = tensor.detach().to(torch.float64)
        return {
            "mean": float(values.mean()),
            "min": float(values.min()),
            "max": float(values.max()),
        }

    with torch.no_grad():
        return {
            "n_hidden": config.n_hidden,
            "n_lif": config.n_hidden - config.n_alif,
            "n_alif": config.n_alif,
            "tau_mem_s": stats(model.tau_mem_s),
            "threshold": stats(model.threshold),
            "tau_adapt_s": float(config.tau_adapt_s),
            "beta_adapt": float(config.beta_adapt),
            "tau_out_s": float(config.tau_out_s),
            "kappa": float(config.kappa),
        }


def _is_dataclass(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _jsonable(where: str, key: str, value: Any) -> Any:
    """``value`` as plain JSON types; raises for what JSON cannot hold, naming the location."""
    if _is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CheckpointError(
                f"{where}: {key} is {value}; JSON has no NaN or infinity, store None (or a "
                "string) instead"
            )
        return value
    if isinstance(value, Mapping):
        out = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise CheckpointError(
                    f"{where}: {key} has the non-string key {name!r}; JSON object keys are "
                    "strings, convert it with str()"
                )
            out[name] = _jsonable(where, f"{key}[{name!r}]", item)
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(where, f"{key}[{i}]", item) for i, item in enumerate(value)]
    raise CheckpointError(
        f"{where}: {key} has type {type(value).__name__}, which JSON cannot hold; convert it to a "
        "number, string, list or dict"
    )


# -- loading --------------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike[str]) -> dict:
    """Return the validated manifest of the checkpoint at ``path`` without building the model.

    Checks the safetensors header (not truncated), the manifest and its agreement with the
    tensors' names, shapes and dtypes. Tensor values (checksum, finiteness, normalisation) are
    only checked by :func:`load_checkpoint`.
    """
    path = Path(path)
    _require_file(path)
    try:
        with path.open("rb") as fh:
            _check_header_length(path, fh.read(8), os.fstat(fh.fileno()).st_size)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {path}: {exc}") from None
    try:
        with safetensors.safe_open(path, framework="numpy") as fh:
            metadata = fh.metadata()
            header = {
                name: (fh.get_slice(name).get_dtype(), tuple(fh.get_slice(name).get_shape()))
                for name in fh.keys()
            }
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise _not_safetensors(path, exc) from None
    manifest = _manifest_from_metadata(path, metadata)
    _validate_manifest(path, manifest)
    _check_header(path, manifest, header)
    return manifest


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load and fully validate the checkpoint at ``path``; the model is float32, in eval mode.

    Raises ``CheckpointError`` naming the file, the problem and the fix for any departure
    from the format (see the module docstring).
    """
    import torch  # see the note on torch at the imports

    from bci.rsnn import RSNN

    path = Path(path)
    manifest, config, arrays = _read_checkpoint(path)
    try:
        model = RSNN(config)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint file {path}: cannot build RSNN from manifest model config: {exc}; "
            f"{_RESAVE}"
        ) from None
    state = model.state_dict()
    _check_names(path, set(arrays), set(state), "RSNN(config) expects")
    for name, tensor in state.items():
        if tuple(tensor.shape) != arrays[name].shape:  # pragma: no cover - expected_tensor_shapes
            raise CheckpointError(
                f"checkpoint file {path}: tensor {name!r} has shape {arrays[name].shape}, "
                f"RSNN(config) expects {tuple(tensor.shape)}; {_RESAVE}"
            )
    model.load_state_dict(
        {name: torch.from_numpy(arrays[name].copy()) for name in state}, strict=True
    )
    model.float().eval()  # float32 even under a float64 torch default dtype
    logger.info("loaded checkpoint %s (sha256 %s)", path, manifest["sha256"])
    return Checkpoint(model=model, manifest=manifest, path=path)


def load_decoder(path: str | os.PathLike[str]) -> DecoderFile:
    """Load and fully validate the checkpoint at ``path`` as a float32 online decoder.

    The same checks as :func:`load_checkpoint`, without torch. Also raises
    ``CheckpointError`` when a derived decoder constant is not finite (e.g. a zero
    ``input_scale``).
    """
    path = Path(path)
    manifest, config, arrays = _read_checkpoint(path)
    decoder = _online_decoder(path, config, arrays)
    logger.info("loaded decoder %s (sha256 %s)", path, manifest["sha256"])
    return DecoderFile(manifest=manifest, decoder=decoder, path=path)


def _online_decoder(path: Path, config: RSNNConfig, arrays: dict[str, np.ndarray]) -> OnlineRSNN:
    """The online decoder of ``arrays``; ``CheckpointError`` for a derived constant that is
    not finite (e.g. a zero ``input_scale``)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # checked just below
        decoder = OnlineRSNN.from_arrays(config, arrays)
    for name in ("weights", "w_out", "neuron", "normalisation", "readout"):
        if not np.isfinite(getattr(decoder, name)).all():
            raise CheckpointError(
                f"checkpoint file {path}: decoder constant {name!r} is not finite (e.g. a zero "
                f"input_scale); retrain or {_RESAVE}"
            )
    return decoder


def _read_checkpoint(path: Path) -> tuple[dict, RSNNConfig, dict[str, np.ndarray]]:
    """Read the checkpoint at ``path`` with safetensors' NumPy API and validate everything
    (header, manifest, checksum, finiteness, normalisation); returns the manifest, the model
    config and the float32 arrays by name."""
    _require_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {path}: {exc}") from None
    _check_header_length(path, data[:8], len(data))
    try:
        arrays = safetensors.numpy.load(data)
    except (safetensors.SafetensorError, ValueError, TypeError) as exc:
        raise _not_safetensors(path, exc) from None
    # safetensors has validated the layout; the header is 8 bytes of length, then JSON.
    header_json = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    manifest = _manifest_from_metadata(path, header_json.get("__metadata__"))
    config = _validate_manifest(path, manifest)
    header = {
        name: (spec.get("dtype"), tuple(spec.get("shape", ())))
        for name, spec in header_json.items()
        if name != "__metadata__"
    }
    _check_header(path, manifest, header)

    actual = tensor_sha256(arrays)
    if actual != manifest["sha256"]:
        raise CheckpointError(
            f"checkpoint file {path}: checksum mismatch (manifest sha256 {manifest['sha256']}, "
            f"tensors hash to {actual}); the tensor data changed after the file was written "
            "(corrupted copy or edited file): copy the file again from its source or "
            f"{_RESAVE}"
        )
    for name in sorted(arrays):
        _check_finite_tensor(
            f"checkpoint file {path}", name, arrays[name], fix=f"retrain or {_RESAVE}"
        )
    _check_magnitudes(f"checkpoint file {path}", arrays, config, fix="retrain the model")
    for key in NORMALISATION_FIELDS:
        listed = np.asarray(manifest["normalisation"][key], dtype=np.float32)
        if not np.array_equal(listed, arrays[key]):
            bad = int(np.flatnonzero(listed != arrays[key])[0])
            raise CheckpointError(
                f"checkpoint file {path}: manifest normalisation.{key} disagrees with tensor "
                f"{key!r} at index {bad} (manifest {float(listed[bad])!r}, tensor "
                f"{float(arrays[key][bad])!r}); the manifest was edited by hand: {_RESAVE}"
            )
    return manifest, config, arrays


def _require_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(
            f"checkpoint file {path} does not exist; check the path (or save a model there with "
            "bci.checkpoint.save_checkpoint)"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint path {path} is not a regular file; pass the path of a .safetensors file"
        )


def _not_safetensors(path: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"checkpoint file {path} is not a valid safetensors file (truncated or corrupted?): "
        f"{exc}; copy it again from its source or {_RESAVE}"
    )


def _check_header_length(path: Path, prefix: bytes, file_size: int) -> None:
    """Refuse a safetensors header longer than :data:`MAX_HEADER_BYTES` before reading it (a
    length the file cannot hold is left to the reader: not safetensors at all)."""
    length = int.from_bytes(prefix[:8], "little") if len(prefix) >= 8 else 0
    if MAX_HEADER_BYTES < length <= file_size - 8:
        raise CheckpointError(
            f"checkpoint file {path}: its header is {length:,} bytes, more than the "
            f"{MAX_HEADER_BYTES:,} a checkpoint needs; not read: {_RESAVE}"
        )


def _check_manifest_bounds(where: str, text: str, *, fix: str) -> None:
    try:
        check_json_bounds(
            text, "the manifest", max_bytes=MAX_MANIFEST_BYTES, max_depth=MAX_MANIFEST_DEPTH
        )
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}; {fix}") from None


def _check_magnitudes(
    where: str, tensors: dict[str, np.ndarray], config: RSNNConfig, *, fix: str
) -> None:
    try:
        check_weight_magnitudes(tensors, config.kappa)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}; {fix}") from None


def _manifest_from_metadata(path: Path, metadata: Any) -> dict:
    if not isinstance(metadata, dict) or MANIFEST_KEY not in metadata:
        raise CheckpointError(
            f"checkpoint file {path} has no {MANIFEST_KEY!r} in its safetensors metadata; it is "
            f"a safetensors file but not a bci checkpoint: {_RESAVE}"
        )
    extra = sorted(set(metadata) - {MANIFEST_KEY})
    if extra:
        raise CheckpointError(
            f"checkpoint file {path}: unexpected safetensors metadata keys {extra}; the format "
            f"holds only {MANIFEST_KEY!r}: {_RESAVE}"
        )
    text = metadata[MANIFEST_KEY]
    if isinstance(text, str):
        _check_manifest_bounds(f"checkpoint file {path}", text, fix=_RESAVE)
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint file {path}: the manifest is not valid JSON ({exc}); {_RESAVE}"
        ) from None
    if not isinstance(manifest, dict):
        raise CheckpointError(
            f"checkpoint file {path}: the manifest must be a JSON object, got "
            f"{type(manifest).__name__}; {_RESAVE}"
        )
    return manifest


def _validate_manifest(path: Path, manifest: dict) -> RSNNConfig:
    """Check the manifest's structure and internal consistency; returns the model config."""
    where = f"checkpoint file {path}"
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise CheckpointError(
            f"{where}: unknown format_version {version!r}; this code reads format_version "
            f"{readable}: load it with the bci version that wrote it, or {_RESAVE}"
        )
    missing = [key for key in MANIFEST_FIELDS if key not in manifest]
    if missing:
        raise CheckpointError(f"{where}: manifest lacks {missing}; {_RESAVE}")
    extra = sorted(set(manifest) - set(MANIFEST_FIELDS) - set(OPTIONAL_FIELDS))
    if extra:
        raise CheckpointError(
            f"{where}: manifest has unknown keys {extra} (format_version {version} has exactly "
            f"{list(MANIFEST_FIELDS)}, and optionally {list(OPTIONAL_FIELDS)}); {_RESAVE}"
        )
    max_speed = manifest.get("max_speed")
    if max_speed is not None and (
        isinstance(max_speed, bool)
        or not isinstance(max_speed, (int, float))
        or not math.isfinite(max_speed)
        or max_speed <= 0
    ):
        raise CheckpointError(
            f"{where}: max_speed must be a finite number > 0 (the kinematics' units), got "
            f"{max_speed!r:.50}; {_RESAVE}"
        )

    config = _config_from_manifest(where, manifest["model"])
    if manifest.get("kinematics_units") is not None:
        _units(where, manifest["kinematics_units"], config.n_out)
    n_channels = manifest["n_channels"]
    if isinstance(n_channels, bool) or not isinstance(n_channels, int):
        raise CheckpointError(f"{where}: n_channels must be an integer, got {n_channels!r}")
    if n_channels != config.n_in:
        raise CheckpointError(
            f"{where}: n_channels is {n_channels} but the model config has n_in={config.n_in}; "
            f"the two must agree: {_RESAVE}"
        )
    bin_s = manifest["bin_s"]
    if isinstance(bin_s, bool) or not isinstance(bin_s, (int, float)):
        raise CheckpointError(f"{where}: bin_s must be a number of seconds, got {bin_s!r}")
    if not math.isclose(bin_s, config.dt_s, rel_tol=1e-9, abs_tol=0.0):
        raise CheckpointError(
            f"{where}: bin_s is {bin_s} s but the model config has dt_s={config.dt_s} s; the "
            f"model must be run at the bin width it was trained with: {_RESAVE}"
        )
    _labels(where, "kinematics_labels", manifest["kinematics_labels"], config.n_out, "n_out")
    if manifest["channel_labels"] is not None:
        _labels(where, "channel_labels", manifest["channel_labels"], config.n_in, "n_in")

    norm = manifest["normalisation"]
    if not isinstance(norm, dict) or set(norm) != set(NORMALISATION_FIELDS):
        raise CheckpointError(
            f"{where}: normalisation must be an object with keys {list(NORMALISATION_FIELDS)}, "
            f"got {norm!r:.200}; {_RESAVE}"
        )
    for key in NORMALISATION_FIELDS:
        size = config.n_in if key.startswith("input") else config.n_out
        values = norm[key]
        if (
            not isinstance(values, list)
            or len(values) != size
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in values
            )
        ):
            raise CheckpointError(
                f"{where}: normalisation.{key} must be a list of {size} finite numbers, got "
                f"{values!r:.200}; {_RESAVE}"
            )
    if not isinstance(manifest["neurons"], dict):
        raise CheckpointError(f"{where}: neurons must be an object; {_RESAVE}")
    if not isinstance(manifest["metrics"], dict):
        raise CheckpointError(f"{where}: metrics must be an object; {_RESAVE}")
    if manifest["training"] is not None and not isinstance(manifest["training"], dict):
        raise CheckpointError(f"{where}: training must be an object or null; {_RESAVE}")
    created = manifest["created"]
    try:
        stamp = datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError:
        stamp = None
    if stamp is None or stamp.utcoffset() is None:
        raise CheckpointError(
            f"{where}: created must be an ISO 8601 time with a UTC offset, got {created!r}; "
            f"{_RESAVE}"
        )
    sha = manifest["sha256"]
    if (
        not isinstance(sha, str)
        or len(sha) != 64
        or any(ch not in "0123456789abcdef" for ch in sha)
    ):
        raise CheckpointError(
            f"{where}: sha256 must be 64 lowercase hex digits, got {sha!r}; {_RESAVE}"
        )

    tensors = manifest["tensors"]
    if not isinstance(tensors, dict):
        raise CheckpointError(f"{where}: tensors must be an object; {_RESAVE}")
    expected = expected_tensor_shapes(config)
    _check_names(path, set(tensors), set(expected), "the manifest's model config needs")
    for name in sorted(expected):
        spec = tensors[name]
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if (
            not isinstance(spec, dict)
            or set(spec) != {"shape", "dtype"}
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        ):
            raise CheckpointError(
                f"{where}: manifest tensors[{name!r}] must be {{'shape': [ints], 'dtype': "
                f"'float32'}}, got {spec!r}; {_RESAVE}"
            )
        if spec["dtype"] != _DTYPE:
            raise CheckpointError(
                f"{where}: tensor {name!r} has dtype {spec['dtype']!r} in the manifest; "
                f"checkpoints hold float32 only: {_RESAVE}"
            )
        if tuple(shape) != expected[name]:
            raise CheckpointError(
                f"{where}: tensor {name!r} shape mismatch with the model config: expected "
                f"{expected[name]}, received {tuple(shape)} (manifest); {_RESAVE}"
            )
    return config


def _config_from_manifest(where: str, model: Any) -> RSNNConfig:
    if not isinstance(model, dict):
        raise CheckpointError(f"{where}: manifest model must be an object (RSNNConfig fields)")
    fields = [f.name for f in dataclasses.fields(RSNNConfig)]
    missing = [name for name in fields if name not in model]
    extra = sorted(set(model) - set(fields))
    if missing or extra:
        raise CheckpointError(
            f"{where}: manifest model config does not match RSNNConfig (missing {missing}, "
            f"unknown {extra}); it was written by another bci version: {_RESAVE}"
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
            f"{where}: invalid model config: {exc}; fix the manifest's model section or {_RESAVE}"
        ) from None


def _check_names(path: Path, found: set[str], expected: set[str], what: str) -> None:
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if extra:
            parts.append(f"extra tensors {extra}")
        raise CheckpointError(
            f"checkpoint file {path}: {' and '.join(parts)} compared with what {what}; the file "
            f"was written for another model: {_RESAVE}"
        )


def _check_header(
    path: Path, manifest: dict, header: Mapping[str, tuple[str, tuple[int, ...]]]
) -> None:
    """The safetensors header (what the file holds) must match the manifest's ``tensors``."""
    _check_names(path, set(header), set(manifest["tensors"]), "the manifest lists")
    for name in sorted(header):
        dtype, shape = header[name]
        if dtype != _HEADER_DTYPE:
            raise CheckpointError(
                f"checkpoint file {path}: tensor {name!r} is stored as {dtype}, expected "
                f"{_HEADER_DTYPE} (float32); {_RESAVE}"
            )
        listed = tuple(manifest["tensors"][name]["shape"])
        if shape != listed:
            raise CheckpointError(
                f"checkpoint file {path}: tensor {name!r} shape mismatch with the manifest: "
                f"expected {listed}, received {shape} (file); {_RESAVE}"
            )


def _check_finite_tensor(where: str, name: str, array: np.ndarray, *, fix: str) -> None:
    finite = np.isfinite(array)
    if finite.all():
        return
    flat = int(np.flatnonzero(~finite.ravel())[0])
    index = tuple(int(i) for i in np.unravel_index(flat, array.shape))
    count = int(array.size - finite.sum())
    raise CheckpointError(
        f"{where}: tensor {name!r} holds {array[index]} at index {index} ({count} non-finite "
        f"value{'s' if count > 1 else ''}); {fix}"
    )


def _labels(where: str, key: str, labels: Any, expected: int, what: str) -> list[str]:
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


def _units(where: str, units: Any, expected: int) -> list[str]:
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
