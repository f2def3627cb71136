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

The manifest is typed (:class:`bci.manifest.Manifest`, which derives ``model_id``) and
checked by :func:`bci.manifest.validate_manifest`. Files are written atomically
(:mod:`bci.atomic`: temporary file in the same directory, fsync, ``os.replace``, directory
fsync) and read with safetensors and ``json`` only: nothing is ever unpickled.
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
from bci.manifest import (
    FORMAT_VERSION,
    MANIFEST_KEY,
    MAX_HEADER_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_DEPTH,
    NORMALISATION_FIELDS,
    RESAVE,
    TENSOR_DTYPE,
    CheckpointError,
    Manifest,
    check_labels,
    check_manifest_bounds,
    check_tensor_names,
    check_units,
    manifest_from_metadata,
    validate_manifest,
)
from bci.online import OnlineRSNN
from bci.plausibility import check_weight_magnitudes

if TYPE_CHECKING:
    from bci.rsnn import RSNN

# torch is imported inside the functions that save or build a torch model (save_checkpoint,
# _neuron_summary, load_checkpoint): the decoder process imports this module for load_decoder
# and must not import torch, and splitting those functions into another module would split
# the file's writer and its readers in two. The manifest's keys and checks are bci.manifest.

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_DEPTH",
    "Checkpoint",
    "CheckpointError",
    "DecoderFile",
    "Manifest",
    "decoder_of",
    "expected_tensor_shapes",
    "load_checkpoint",
    "load_decoder",
    "read_manifest",
    "save_checkpoint",
    "tensor_sha256",
]

logger = logging.getLogger(__name__)

_HEADER_DTYPE = "F32"  # safetensors' name for float32


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the model (float32, eval mode), its manifest and its file."""

    model: RSNN
    manifest: Manifest
    path: Path

    @property
    def model_id(self) -> str:
        return self.manifest.model_id


@dataclass(frozen=True)
class DecoderFile:
    """A checkpoint loaded for decoding without torch: its manifest, the online decoder
    (float32) and its file."""

    manifest: Manifest
    decoder: OnlineRSNN
    path: Path

    @property
    def model_id(self) -> str:
        return self.manifest.model_id


# -- public helpers -------------------------------------------------------------------------


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
    kinematics = check_labels(where, "kinematics_labels", kinematics_labels, config.n_out, "n_out")
    channels = (
        None
        if channel_labels is None
        else check_labels(where, "channel_labels", channel_labels, config.n_in, "n_in")
    )
    if metrics is not None and not isinstance(metrics, Mapping):
        raise CheckpointError(f"{where}: metrics must be a dict, got {type(metrics).__name__}")
    if training is not None and not isinstance(training, Mapping) and not _is_dataclass(training):
        raise CheckpointError(
            f"{where}: training must be a dict (or a dataclass) or None, got "
            f"{type(training).__name__}"
        )

    tensors, contents = _contents(where, model, kinematics, channels, metrics, training, max_speed)
    if kinematics_units is not None:
        contents["kinematics_units"] = check_units(where, kinematics_units, config.n_out)
    manifest, _ = validate_manifest(path, contents)  # what we write must be what we accept
    text = manifest.to_json()
    check_manifest_bounds(where, text, fix="store less in metrics or training")
    write_bytes(path, _serialize(tensors, {MANIFEST_KEY: text}))
    logger.info("saved checkpoint %s (sha256 %s)", path, manifest.sha256)
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
            name: {"shape": list(array.shape), "dtype": TENSOR_DTYPE}
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
    kinematics = check_labels(where, "kinematics_labels", kinematics_labels, config.n_out, "n_out")
    tensors, contents = _contents(where, model, kinematics, None, None, None, None)
    path = Path("<in memory>")
    manifest, _ = validate_manifest(path, contents)
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
            "tau_adapt_s": stats(-config.dt_s / torch.log(model.rho.double())),
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


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
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
    manifest, _ = validate_manifest(path, manifest_from_metadata(path, metadata))
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
            f"checkpoint file {path}: cannot build RSNN from manifest model config: {exc}; {RESAVE}"
        ) from None
    state = model.state_dict()
    check_tensor_names(path, set(arrays), set(state), "RSNN(config) expects")
    for name, tensor in state.items():
        if tuple(tensor.shape) != arrays[name].shape:  # pragma: no cover - expected_tensor_shapes
            raise CheckpointError(
                f"checkpoint file {path}: tensor {name!r} has shape {arrays[name].shape}, "
                f"RSNN(config) expects {tuple(tensor.shape)}; {RESAVE}"
            )
    model.load_state_dict(
        {name: torch.from_numpy(arrays[name].copy()) for name in state}, strict=True
    )
    model.float().eval()  # float32 even under a float64 torch default dtype
    logger.info("loaded checkpoint %s (sha256 %s)", path, manifest.sha256)
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
    logger.info("loaded decoder %s (sha256 %s)", path, manifest.sha256)
    return DecoderFile(manifest=manifest, decoder=decoder, path=path)


def _online_decoder(path: Path, config: RSNNConfig, arrays: dict[str, np.ndarray]) -> OnlineRSNN:
    """The online decoder of ``arrays``; ``CheckpointError`` for a derived constant that is
    not finite (e.g. a zero ``input_scale``)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # checked just below
        decoder = OnlineRSNN.from_arrays(config, arrays)
    for name in ("weights", "w_out", "neuron", "normalisation", "readout_constants"):
        if not np.isfinite(getattr(decoder, name)).all():
            raise CheckpointError(
                f"checkpoint file {path}: decoder constant {name!r} is not finite (e.g. a zero "
                f"input_scale); retrain or {RESAVE}"
            )
    return decoder


def _read_checkpoint(path: Path) -> tuple[Manifest, RSNNConfig, dict[str, np.ndarray]]:
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
    metadata = header_json.get("__metadata__")
    manifest, config = validate_manifest(path, manifest_from_metadata(path, metadata))
    header = {
        name: (spec.get("dtype"), tuple(spec.get("shape", ())))
        for name, spec in header_json.items()
        if name != "__metadata__"
    }
    _check_header(path, manifest, header)

    actual = tensor_sha256(arrays)
    if actual != manifest.sha256:
        raise CheckpointError(
            f"checkpoint file {path}: checksum mismatch (manifest sha256 {manifest.sha256}, "
            f"tensors hash to {actual}); the tensor data changed after the file was written "
            "(corrupted copy or edited file): copy the file again from its source or "
            f"{RESAVE}"
        )
    for name in sorted(arrays):
        _check_finite_tensor(
            f"checkpoint file {path}", name, arrays[name], fix=f"retrain or {RESAVE}"
        )
    _check_magnitudes(f"checkpoint file {path}", arrays, config, fix="retrain the model")
    for key in NORMALISATION_FIELDS:
        listed = np.asarray(getattr(manifest.normalisation, key), dtype=np.float32)
        if not np.array_equal(listed, arrays[key]):
            bad = int(np.flatnonzero(listed != arrays[key])[0])
            raise CheckpointError(
                f"checkpoint file {path}: manifest normalisation.{key} disagrees with tensor "
                f"{key!r} at index {bad} (manifest {float(listed[bad])!r}, tensor "
                f"{float(arrays[key][bad])!r}); the manifest was edited by hand: {RESAVE}"
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
        f"{exc}; copy it again from its source or {RESAVE}"
    )


def _check_header_length(path: Path, prefix: bytes, file_size: int) -> None:
    """Refuse a safetensors header longer than :data:`MAX_HEADER_BYTES` before reading it (a
    length the file cannot hold is left to the reader: not safetensors at all)."""
    length = int.from_bytes(prefix[:8], "little") if len(prefix) >= 8 else 0
    if MAX_HEADER_BYTES < length <= file_size - 8:
        raise CheckpointError(
            f"checkpoint file {path}: its header is {length:,} bytes, more than the "
            f"{MAX_HEADER_BYTES:,} a checkpoint needs; not read: {RESAVE}"
        )


def _check_magnitudes(
    where: str, tensors: dict[str, np.ndarray], config: RSNNConfig, *, fix: str
) -> None:
    try:
        check_weight_magnitudes(tensors, config.kappa)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}; {fix}") from None


def _check_header(
    path: Path, manifest: Manifest, header: Mapping[str, tuple[str, tuple[int, ...]]]
) -> None:
    """The safetensors header (what the file holds) must match the manifest's ``tensors``."""
    check_tensor_names(path, set(header), set(manifest.tensors), "the manifest lists")
    for name in sorted(header):
        dtype, shape = header[name]
        if dtype != _HEADER_DTYPE:
            raise CheckpointError(
                f"checkpoint file {path}: tensor {name!r} is stored as {dtype}, expected "
                f"{_HEADER_DTYPE} (float32); {RESAVE}"
            )
        listed = tuple(manifest.tensors[name].shape)
        if shape != listed:
            raise CheckpointError(
                f"checkpoint file {path}: tensor {name!r} shape mismatch with the manifest: "
                f"expected {listed}, received {shape} (file); {RESAVE}"
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
