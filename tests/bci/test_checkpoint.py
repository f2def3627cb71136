"""Tests for ``bci.checkpoint``: round trips, the manifest contract, every rejected file, and
atomic writes.

Corrupted files are built the way a disk, a copy or a hand edit would break them: by rewriting
bytes of a real checkpoint, or by laying out a safetensors file by hand (8-byte little-endian
header length, JSON header, raw little-endian data). The checksum oracle here is written from
the contract, independently of ``bci.checkpoint.tensor_sha256``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

import bci.atomic as atomic
import bci.checkpoint as ckpt
import bci.rsnn
from bci.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    expected_tensor_shapes,
    load_checkpoint,
    load_decoder,
    read_manifest,
    save_checkpoint,
)
from bci.online import OnlineRSNN
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, TrainResult

N_IN, N_HIDDEN, N_OUT = 6, 20, 2
CONTRACT_FIELDS = {
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
}


# -- helpers ----------------------------------------------------------------------------------


def _trained_model(seed: int = 0, **overrides) -> RSNN:
    """An RSNN whose every tensor differs from its initial value (as after training)."""
    config = RSNNConfig(**{"n_in": N_IN, "n_hidden": N_HIDDEN, "n_out": N_OUT, **overrides})
    model = RSNN(config, seed=seed)
    rng = np.random.default_rng(seed)
    neural = rng.poisson(3.0, size=(200, config.n_in)).astype(np.float64)
    kinematics = rng.normal(size=(200, config.n_out)) * 5.0 + 2.0
    model.fit_normalisation(neural, kinematics)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name in ("raw_tau_mem", "raw_threshold", "b_out"):
            param = getattr(model, name)
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
        model.w_in.mul_(3.0)  # enough drive for spikes
    return model


def _input(n_in: int = N_IN, n_bins: int = 80, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).poisson(3.0, size=(n_bins, n_in)).astype(np.float32)


def _save(tmp_path: Path, model: RSNN | None = None, name: str = "model.safetensors", **kw):
    model = _trained_model() if model is None else model
    labels = kw.pop("kinematics_labels", [f"k{i}" for i in range(model.config.n_out)])
    return save_checkpoint(tmp_path / name, model, kinematics_labels=labels, **kw)


def _oracle_sha(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode("utf-8"))
        digest.update(np.asarray(tensors[name], dtype="<f4").tobytes(order="C"))
    return digest.hexdigest()


def _parse(path: Path) -> tuple[dict, bytes]:
    """Split a safetensors file into its header JSON and its data part."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_header(path: Path, header: dict, data: bytes) -> None:
    """Lay out a safetensors file by hand around ``header`` and ``data``."""
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def _load_parts(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest (as a dict) and the tensors of a checkpoint, read without bci."""
    header, _ = _parse(path)
    return json.loads(header["__metadata__"]["manifest"]), dict(safetensors.numpy.load_file(path))


def _write_raw(path: Path, manifest: dict, tensors: dict[str, np.ndarray], resign: bool = True):
    """Write ``tensors`` + ``manifest`` with safetensors itself; ``resign`` recomputes sha256 and
    the manifest's tensor table so only the intended defect remains."""
    manifest = dict(manifest)
    if resign:
        manifest["sha256"] = _oracle_sha(tensors)
    safetensors.numpy.save_file(tensors, str(path), metadata={"manifest": json.dumps(manifest)})


def _edit_manifest(path: Path, edit) -> None:
    """Apply ``edit(manifest)`` in place, keeping the tensor data byte for byte."""
    header, data = _parse(path)
    manifest = json.loads(header["__metadata__"]["manifest"])
    edit(manifest)
    header["__metadata__"]["manifest"] = json.dumps(manifest)
    _write_header(path, header, data)


def _error(path: Path, *fragments: str, header: bool = False) -> str:
    """Assert load_checkpoint and load_decoder (and read_manifest too when ``header``: defects
    visible without reading tensor values) raise CheckpointError naming the file and each
    fragment; returns the last reader's message."""
    readers = [load_checkpoint, load_decoder] + ([read_manifest] if header else [])
    message = ""
    for reader in readers:
        with pytest.raises(CheckpointError) as info:
            reader(path)
        message = str(info.value)
        assert str(path) in message, message
        for fragment in fragments:
            assert fragment in message, message
    return message


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"alif_fraction": 0.3},  # mixed: 14 LIF then 6 ALIF neurons
        {"alif_fraction": 0.0},
        {"alif_fraction": 1.0, "reset": "zero"},
        {"recurrent": False},
        {"learn_tau": False, "learn_threshold": False, "surrogate_params": {}},
    ],
    ids=["default", "mixed-alif", "all-lif", "all-alif-reset-zero", "feedforward", "frozen"],
)
def test_round_trip_decodes_identically(tmp_path, overrides):
    model = _trained_model(**overrides)
    path = _save(tmp_path, model)
    loaded = load_checkpoint(path)

    assert isinstance(loaded, Checkpoint)
    assert loaded.path == path
    assert loaded.model.config == model.config
    assert not loaded.model.training
    x = _input()
    expected_out, expected_spikes = model.decode(x)
    out, spikes = loaded.model.decode(x)
    assert expected_spikes.any(), "the test model must spike for the comparison to mean much"
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(spikes, expected_spikes)
    original = model.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert tensor.dtype == torch.float32, name
        assert torch.equal(tensor, original[name]), name
    for name, param in loaded.model.named_parameters():
        assert param.requires_grad == getattr(model, name).requires_grad, name


def test_mixed_model_keeps_lif_alif_split(tmp_path):
    model = _trained_model(alif_fraction=0.3)
    loaded = load_checkpoint(_save(tmp_path, model)).model
    n_alif = model.config.n_alif
    assert 0 < n_alif < N_HIDDEN
    assert torch.all(loaded.beta[: N_HIDDEN - n_alif] == 0)
    assert torch.all(loaded.beta[N_HIDDEN - n_alif :] == model.config.beta_adapt)
    manifest = read_manifest(tmp_path / "model.safetensors")
    assert manifest["neurons"]["n_alif"] == n_alif
    assert manifest["neurons"]["n_lif"] == N_HIDDEN - n_alif


def test_float64_model_is_stored_as_float32(tmp_path):
    model = _trained_model().double()
    loaded = load_checkpoint(_save(tmp_path, model)).model
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, model.state_dict()[name].float()), name


def test_expected_tensor_shapes_match_the_model():
    for overrides in ({}, {"recurrent": False}, {"n_in": 3, "n_hidden": 7, "n_out": 4}):
        config = RSNNConfig(**{"n_in": N_IN, "n_hidden": N_HIDDEN, **overrides})
        state = RSNN(config).state_dict()
        assert expected_tensor_shapes(config) == {k: tuple(v.shape) for k, v in state.items()}


# -- the manifest -----------------------------------------------------------------------------


def test_manifest_fields(tmp_path):
    model = _trained_model(alif_fraction=0.25)
    channels = [f"ch{i}" for i in range(N_IN)]
    before = datetime.now(timezone.utc).replace(microsecond=0)
    path = _save(
        tmp_path,
        model,
        kinematics_labels=("vx", "vy"),
        channel_labels=channels,
        metrics={"test": {"r2": np.float32(0.5), "per_axis": np.array([0.25, 0.75])}},
        training={"epochs": 3, "lr": 1e-3, "history": (1.0, 0.5)},
    )
    after = datetime.now(timezone.utc)
    manifest = read_manifest(path)

    assert set(manifest) == CONTRACT_FIELDS
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["model"] == model.config.to_dict()
    assert manifest["n_channels"] == N_IN
    assert manifest["channel_labels"] == channels
    assert manifest["bin_s"] == model.config.dt_s
    assert manifest["kinematics_labels"] == ["vx", "vy"]
    assert manifest["metrics"] == {"test": {"r2": 0.5, "per_axis": [0.25, 0.75]}}
    assert manifest["training"] == {"epochs": 3, "lr": 1e-3, "history": [1.0, 0.5]}
    created = datetime.fromisoformat(manifest["created"])
    assert created.utcoffset() == timedelta(0)
    assert before <= created <= after

    _, tensors = _load_parts(path)
    for key in ("input_mean", "input_scale", "output_mean", "output_scale"):
        np.testing.assert_array_equal(np.float32(manifest["normalisation"][key]), tensors[key])
    assert manifest["tensors"] == {
        name: {"shape": list(shape), "dtype": "float32"}
        for name, shape in expected_tensor_shapes(model.config).items()
    }
    assert set(tensors) == set(manifest["tensors"])
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert manifest["sha256"] == _oracle_sha(tensors)

    neurons = manifest["neurons"]
    tau = model.tau_mem_s.detach().double()
    assert neurons["tau_mem_s"]["mean"] == pytest.approx(float(tau.mean()), rel=1e-6)
    assert neurons["tau_mem_s"]["min"] == pytest.approx(float(tau.min()), rel=1e-6)
    assert neurons["tau_mem_s"]["max"] == pytest.approx(float(tau.max()), rel=1e-6)
    assert neurons["tau_mem_s"]["min"] < neurons["tau_mem_s"]["max"]
    threshold = model.threshold.detach().double()
    assert neurons["threshold"]["mean"] == pytest.approx(float(threshold.mean()), rel=1e-6)
    assert neurons["n_alif"] == 5
    assert neurons["kappa"] == pytest.approx(math.exp(-0.05 / 0.1))

    assert load_checkpoint(path).manifest == manifest


def test_training_dataclasses_are_stored_as_dicts(tmp_path):
    config = TrainConfig(max_steps=7, lr=1e-2)
    result = TrainResult(
        best_val_r2=0.4, best_step=3, steps=7, seconds=1.5, history=[{"step": 0, "loss": 2.0}]
    )
    path = _save(tmp_path, training={"config": config, "result": result})
    training = load_checkpoint(path).manifest["training"]
    assert training["config"] == dataclasses.asdict(config)
    assert TrainConfig(**training["config"]) == config
    assert training["result"]["history"] == [{"step": 0, "loss": 2.0}]
    path = _save(tmp_path, name="bare.safetensors", training=config)
    assert read_manifest(path)["training"]["max_steps"] == 7


def test_only_the_manifest_key_in_metadata(tmp_path):
    header, _ = _parse(_save(tmp_path))
    assert set(header["__metadata__"]) == {"manifest"}


def test_read_manifest_builds_no_model(tmp_path, monkeypatch):
    path = _save(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("read_manifest built a model")

    monkeypatch.setattr(bci.rsnn, "RSNN", refuse)
    monkeypatch.setattr(OnlineRSNN, "from_arrays", refuse)
    monkeypatch.setattr(safetensors.numpy, "load", refuse)
    assert read_manifest(path)["n_channels"] == N_IN
    assert read_manifest(str(path))["model"]["n_hidden"] == N_HIDDEN


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = _save(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint must never be unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    load_checkpoint(path)


def test_bci_checkpoint_imports_no_service_or_calibration():
    code = (
        "import sys, bci.checkpoint; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('service', 'calibration')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- saving: refused inputs -------------------------------------------------------------------


def test_save_refuses_bad_labels_and_values(tmp_path):
    model = _trained_model()
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match=r"kinematics_labels has 3 names .* n_out=2"):
        save_checkpoint(path, model, kinematics_labels=["a", "b", "c"])
    with pytest.raises(CheckpointError, match="kinematics_labels must be a list of strings"):
        save_checkpoint(path, model, kinematics_labels="vxvy")
    with pytest.raises(CheckpointError, match=r"channel_labels has 2 names .* n_in=6"):
        save_checkpoint(path, model, kinematics_labels=["a", "b"], channel_labels=["x", "y"])
    with pytest.raises(CheckpointError, match=r"kinematics_labels repeats \['a'\]"):
        save_checkpoint(path, model, kinematics_labels=["a", "a"])
    with pytest.raises(CheckpointError, match=r"metrics\['test'\]\['r2'\] is nan.*None"):
        save_checkpoint(
            path, model, kinematics_labels=["a", "b"], metrics={"test": {"r2": float("nan")}}
        )
    with pytest.raises(CheckpointError, match=r"training\['fn'\] has type builtin_function"):
        save_checkpoint(path, model, kinematics_labels=["a", "b"], training={"fn": len})
    with pytest.raises(TypeError, match=r"expects a bci\.rsnn\.RSNN"):
        save_checkpoint(path, torch.nn.Linear(2, 2), kinematics_labels=["a", "b"])
    with torch.no_grad():
        model.w_out[1, 3] = float("inf")
    with pytest.raises(CheckpointError, match=r"tensor 'w_out' holds inf at index \(1, 3\)"):
        save_checkpoint(path, model, kinematics_labels=["a", "b"])
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "m.safetensors", _trained_model(), kinematics_labels="ab")


# -- atomic writes ----------------------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_failed_serialisation_leaves_existing_file_untouched(tmp_path, monkeypatch, exc_type):
    path = _save(tmp_path, _trained_model(seed=1))
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise exc_type("serializer failed")

    monkeypatch.setattr(ckpt, "_serialize", explode)
    with pytest.raises(exc_type, match="serializer failed"):
        _save(tmp_path, _trained_model(seed=2))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]
    load_checkpoint(path)


def test_failed_fsync_or_rename_leaves_existing_file(tmp_path, monkeypatch):
    path = _save(tmp_path, _trained_model(seed=1))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, _trained_model(seed=2))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_save_replaces_existing_file_and_fsyncs_directory(tmp_path, monkeypatch):
    synced: list[Path] = []
    real = atomic.fsync_directory
    monkeypatch.setattr(atomic, "fsync_directory", lambda d: (synced.append(Path(d)), real(d)))
    path = _save(tmp_path, _trained_model(seed=1))
    _save(tmp_path, _trained_model(seed=2))
    assert synced == [tmp_path, tmp_path]
    assert sorted(os.listdir(tmp_path)) == [path.name]
    reloaded = load_checkpoint(path).model
    assert torch.equal(reloaded.w_in, _trained_model(seed=2).w_in)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# -- loading: rejected files ------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "absent.safetensors"
    _error(path, "does not exist", header=True)
    _error(tmp_path, "not a regular file", header=True)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint at all", b"PK\x03\x04" + bytes(100), b'{"a": 1}'],
    ids=["empty", "text", "zip", "json"],
)
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    _error(path, "not a valid safetensors file", header=True)


def test_truncated_files(tmp_path):
    original = _save(tmp_path).read_bytes()
    header_len = int.from_bytes(original[:8], "little")
    data_start = 8 + header_len
    cuts = [
        4,  # inside the length prefix
        8,  # length only
        8 + header_len // 2,  # inside the header JSON
        data_start,  # header complete, no data
        data_start + 3,  # inside the first tensor
        (data_start + len(original)) // 2,  # inside the data
        len(original) - 1,  # one byte short
    ]
    for cut in cuts:
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(original[:cut])
        _error(path, "not a valid safetensors file", header=True)


def test_extra_bytes_after_the_data(tmp_path):
    path = _save(tmp_path)
    path.write_bytes(path.read_bytes() + b"\x00" * 8)
    _error(path, "not a valid safetensors file", header=True)


def test_no_manifest(tmp_path):
    _, tensors = _load_parts(_save(tmp_path))
    bare = tmp_path / "bare.safetensors"
    safetensors.numpy.save_file(tensors, str(bare))
    _error(bare, "no 'manifest'", "not a bci checkpoint", header=True)
    other = tmp_path / "other.safetensors"
    safetensors.numpy.save_file(tensors, str(other), metadata={"format": "pt"})
    _error(other, "no 'manifest'", header=True)


def test_extra_metadata_key(tmp_path):
    path = _save(tmp_path)
    header, data = _parse(path)
    header["__metadata__"]["note"] = "hello"
    _write_header(path, header, data)
    _error(path, "unexpected safetensors metadata keys ['note']", header=True)


def test_manifest_not_json(tmp_path):
    path = _save(tmp_path)
    header, data = _parse(path)
    header["__metadata__"]["manifest"] = header["__metadata__"]["manifest"][:-5]
    _write_header(path, header, data)
    _error(path, "manifest is not valid JSON", header=True)
    header["__metadata__"]["manifest"] = "[1, 2]"
    _write_header(path, header, data)
    _error(path, "manifest must be a JSON object", header=True)


@pytest.mark.parametrize("version", [0, 2, "1", None, True])
def test_unknown_format_version(tmp_path, version):
    path = _save(tmp_path)
    _edit_manifest(path, lambda m: m.update(format_version=version))
    _error(
        path,
        f"unknown format_version {version!r}",
        "this code reads format_version 1",
        header=True,
    )


def test_missing_and_unknown_manifest_keys(tmp_path):
    path = _save(tmp_path)
    _edit_manifest(path, lambda m: m.pop("bin_s"))
    _error(path, "manifest lacks ['bin_s']", header=True)
    path = _save(tmp_path, name="b.safetensors")
    _edit_manifest(path, lambda m: m.update(metric={}))
    _error(path, "manifest has unknown keys ['metric']", header=True)


def test_missing_tensor(tmp_path):
    manifest, tensors = _load_parts(_save(tmp_path))
    del tensors["w_rec"]
    # The file lacks the tensor the manifest lists.
    file_only = tmp_path / "file_only.safetensors"
    _write_raw(file_only, manifest, tensors)
    _error(file_only, "missing tensors ['w_rec']", "the manifest lists", header=True)
    # File and manifest agree, but the model config needs the tensor.
    both = tmp_path / "both.safetensors"
    del manifest["tensors"]["w_rec"]
    _write_raw(both, manifest, tensors)
    _error(both, "missing tensors ['w_rec']", "model config needs", header=True)


def test_extra_tensor(tmp_path):
    path = _save(tmp_path)
    header, data = _parse(path)
    header["bias_hidden"] = {"dtype": "F32", "shape": [N_HIDDEN], "data_offsets": [0, 0]}
    extra = np.arange(N_HIDDEN, dtype="<f4").tobytes()
    header["bias_hidden"]["data_offsets"] = [len(data), len(data) + len(extra)]
    _write_header(path, header, data + extra)
    _error(path, "extra tensors ['bias_hidden']", header=True)

    manifest, tensors = _load_parts(path)
    manifest["tensors"]["bias_hidden"] = {"shape": [N_HIDDEN], "dtype": "float32"}
    both = tmp_path / "both.safetensors"
    _write_raw(both, manifest, tensors)
    _error(both, "extra tensors ['bias_hidden']", "model config needs", header=True)


def test_shape_mismatch_with_manifest(tmp_path):
    path = _save(tmp_path)
    header, data = _parse(path)
    assert header["w_in"]["shape"] == [N_HIDDEN, N_IN]
    header["w_in"]["shape"] = [N_IN, N_HIDDEN]  # same bytes, transposed claim
    _write_header(path, header, data)
    _error(
        path,
        "tensor 'w_in' shape mismatch with the manifest",
        f"expected ({N_HIDDEN}, {N_IN}), received ({N_IN}, {N_HIDDEN})",
        header=True,
    )


def test_shape_mismatch_with_model_config(tmp_path):
    manifest, tensors = _load_parts(_save(tmp_path))
    tensors["w_out"] = np.zeros((N_OUT, N_HIDDEN + 1), dtype=np.float32)
    manifest["tensors"]["w_out"]["shape"] = [N_OUT, N_HIDDEN + 1]
    path = tmp_path / "wide.safetensors"
    _write_raw(path, manifest, tensors)
    _error(
        path,
        "tensor 'w_out' shape mismatch with the model config",
        f"expected ({N_OUT}, {N_HIDDEN}), received ({N_OUT}, {N_HIDDEN + 1})",
        header=True,
    )


def test_wrong_dtype(tmp_path):
    manifest, tensors = _load_parts(_save(tmp_path))
    tensors["b_out"] = tensors["b_out"].astype(np.float64)
    path = tmp_path / "f64.safetensors"
    _write_raw(path, manifest, tensors)
    _error(path, "tensor 'b_out' is stored as F64", header=True)
    manifest["tensors"]["b_out"]["dtype"] = "float64"
    _write_raw(path, manifest, tensors)
    _error(path, "tensor 'b_out' has dtype 'float64'", "float32 only", header=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights(tmp_path, bad):
    manifest, tensors = _load_parts(_save(tmp_path))
    tensors["w_rec"][4, 7] = bad
    tensors["w_rec"][9, 1] = bad
    path = tmp_path / "nan.safetensors"
    _write_raw(path, manifest, tensors)  # valid checksum: the finiteness check must fire
    message = _error(path, "tensor 'w_rec'", "index (4, 7)", "2 non-finite values")
    assert repr(np.float32(bad)).split("(")[-1].rstrip(")") in message
    assert "checksum" not in message
    read_manifest(path)  # values are not read by the cheap reader


def test_huge_finite_weights_are_refused(tmp_path):
    manifest, tensors = _load_parts(_save(tmp_path))
    tensors["w_out"][1, 3] = 1e38
    path = tmp_path / "huge.safetensors"
    _write_raw(path, manifest, tensors)
    _error(path, "weight w_out[1, 3] is 1e+38", "beyond the 10000")
    read_manifest(path)  # values are not read by the cheap reader
    model = _trained_model()
    with torch.no_grad():
        model.w_in[0, 0] = -2e4
    with pytest.raises(CheckpointError, match=r"weight w_in\[0, 0\] is 2e\+04"):
        _save(tmp_path, model, name="saved.safetensors")
    assert not (tmp_path / "saved.safetensors").exists()


def test_output_normalisation_that_overflows_is_refused(tmp_path):
    manifest, tensors = _load_parts(_save(tmp_path))
    tensors["output_scale"][0] = 3e38
    manifest["normalisation"]["output_scale"][0] = float(tensors["output_scale"][0])
    path = tmp_path / "scale.safetensors"
    _write_raw(path, manifest, tensors)
    _error(path, "output 0 can reach", "beyond float32")


def test_deep_or_large_manifest_is_refused_before_parsing(tmp_path):
    path = _save(tmp_path)
    deep = "[" * 100_000 + "]" * 100_000
    header, data = _parse(path)
    header["__metadata__"]["manifest"] = deep
    _write_header(path, header, data)
    _error(path, "the manifest is nested 100,000 levels deep, more than the 32", header=True)

    path = _save(tmp_path, name="large.safetensors")
    _edit_manifest(path, lambda m: m["metrics"].update(blob="x" * ckpt.MAX_MANIFEST_BYTES))
    _error(path, "the manifest is 4,19", "bytes, more than the 4,194,304 allowed", header=True)
    with pytest.raises(CheckpointError, match="the manifest is 4,19"):
        _save(tmp_path, name="c.safetensors", metrics={"blob": "x" * ckpt.MAX_MANIFEST_BYTES})


def test_oversized_header_is_not_read(tmp_path, monkeypatch):
    path = _save(tmp_path)
    header, data = _parse(path)
    header["__metadata__"]["manifest"] += " " * ckpt.MAX_HEADER_BYTES
    _write_header(path, header, data)
    calls = []
    monkeypatch.setattr(ckpt.safetensors, "safe_open", lambda *a, **k: calls.append(a))
    _error(path, "its header is", "more than the 4,259,840 a checkpoint needs", header=True)
    assert calls == []


def test_max_speed_is_optional_and_checked(tmp_path):
    path = _save(tmp_path, max_speed=120.0)
    assert read_manifest(path)["max_speed"] == 120.0
    assert "max_speed" not in read_manifest(_save(tmp_path, name="plain.safetensors"))
    for bad in (0, -1.0, "fast", True):
        _edit_manifest(path, lambda m, bad=bad: m.update(max_speed=bad))
        _error(path, "max_speed must be a finite number > 0", header=True)


def test_kinematics_units_are_optional_and_checked(tmp_path):
    path = _save(tmp_path, kinematics_units=("cm/s", "cm/s"))
    assert read_manifest(path)["kinematics_units"] == ["cm/s", "cm/s"]
    assert load_decoder(path).manifest["kinematics_units"] == ["cm/s", "cm/s"]
    old = _save(tmp_path, name="old.safetensors")  # as written before units existed
    assert "kinematics_units" not in read_manifest(old)
    assert "kinematics_units" not in load_checkpoint(old).manifest
    with pytest.raises(CheckpointError, match="one non-empty unit string per output"):
        _save(tmp_path, name="bad.safetensors", kinematics_units=("cm/s",))
    for bad in (["cm/s"], ["cm/s", ""], "cm/s", [1, 2]):
        _edit_manifest(path, lambda m, bad=bad: m.update(kinematics_units=bad))
        _error(path, "kinematics_units", header=True)


def test_checksum_mismatch(tmp_path):
    path = _save(tmp_path)
    original = path.read_bytes()
    header_len = int.from_bytes(original[:8], "little")
    for offset in (8 + header_len, len(original) - 1, (8 + header_len + len(original)) // 2):
        corrupted = bytearray(original)
        corrupted[offset] ^= 0x01  # lowest mantissa bit: still a finite float
        path.write_bytes(bytes(corrupted))
        _error(path, "checksum mismatch", "data changed after the file was written")
        read_manifest(path)  # header intact: the cheap reader does not hash
    path.write_bytes(original)
    load_checkpoint(path)


def test_sha_not_hex(tmp_path):
    path = _save(tmp_path)
    _edit_manifest(path, lambda m: m.update(sha256="xyz"))
    _error(path, "sha256 must be 64 lowercase hex digits", header=True)


def test_normalisation_disagrees_with_tensors(tmp_path):
    path = _save(tmp_path)

    def nudge(manifest):
        manifest["normalisation"]["output_scale"][1] *= 1.5

    _edit_manifest(path, nudge)
    _error(path, "normalisation.output_scale disagrees with tensor 'output_scale' at index 1")

    path = _save(tmp_path, name="short.safetensors")
    _edit_manifest(path, lambda m: m["normalisation"]["input_mean"].pop())
    _error(path, f"normalisation.input_mean must be a list of {N_IN} finite numbers")


def test_n_channels_inconsistent(tmp_path):
    path = _save(tmp_path)
    _edit_manifest(path, lambda m: m.update(n_channels=N_IN + 1))
    _error(path, f"n_channels is {N_IN + 1}", f"n_in={N_IN}", header=True)


def test_bin_s_inconsistent(tmp_path):
    path = _save(tmp_path)
    _edit_manifest(path, lambda m: m.update(bin_s=0.02))
    _error(path, "bin_s is 0.02 s", "dt_s=0.05 s", header=True)


def test_labels_inconsistent(tmp_path):
    path = _save(tmp_path)
    _edit_manifest(path, lambda m: m.update(kinematics_labels=["vx"]))
    _error(path, "kinematics_labels has 1 names", "n_out=2", header=True)
    path = _save(tmp_path, name="c.safetensors")
    _edit_manifest(path, lambda m: m.update(channel_labels=["a"] * N_IN))
    _error(path, "channel_labels repeats ['a']", header=True)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"alif_fraction": 1.5}, "alif_fraction must lie in [0, 1]"),
        ({"reset": "bogus"}, "unknown reset mode 'bogus'"),
        ({"tau_out_s": -0.1}, "tau_out_s must be positive and finite"),
        ({"surrogate": "nope"}, "nope"),
        ({"n_hidden": 2.5}, "n_hidden must be an integer"),
        ({"dropout": 0.1}, "unknown ['dropout']"),
    ],
)
def test_invalid_model_config(tmp_path, edit, fragment):
    path = _save(tmp_path)
    _edit_manifest(path, lambda m: m["model"].update(edit))
    _error(path, "model config", fragment, header=True)


def test_model_config_missing_field(tmp_path):
    path = _save(tmp_path)
    _edit_manifest(path, lambda m: m["model"].pop("tau_mem_s"))
    _error(path, "missing ['tau_mem_s']", header=True)


def test_created_must_be_utc_iso(tmp_path):
    path = _save(tmp_path)
    _edit_manifest(path, lambda m: m.update(created="yesterday"))
    _error(path, "created must be an ISO 8601 time", header=True)
    _edit_manifest(path, lambda m: m.update(created="2024-01-01T00:00:00"))
    _error(path, "created must be an ISO 8601 time with a UTC offset", header=True)
