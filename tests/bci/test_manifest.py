"""Tests for ``bci.manifest``: the manifest contract as written, the typed model and its
``model_id``, and every manifest refused by :func:`bci.manifest.validate_manifest` (format
version, key set, types, agreement with the model config)."""

from __future__ import annotations

import dataclasses
import math
import pickle
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import safetensors.numpy
import torch
from checkpoint_cases import (
    CONTRACT_FIELDS,
    N_HIDDEN,
    N_IN,
    edit_manifest,
    expect_error,
    load_parts,
    oracle_sha,
    parse_file,
    save,
    trained_model,
)
from pydantic import ValidationError

import bci.rsnn
from bci.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    expected_tensor_shapes,
    load_checkpoint,
    load_decoder,
    read_manifest,
)
from bci.online import OnlineRSNN
from bci.training import TrainConfig, TrainResult

# -- the manifest -----------------------------------------------------------------------------


def test_manifest_fields(tmp_path):
    model = trained_model(alif_fraction=0.25)
    channels = [f"ch{i}" for i in range(N_IN)]
    before = datetime.now(timezone.utc).replace(microsecond=0)
    path = save(
        tmp_path,
        model,
        kinematics_labels=("vx", "vy"),
        channel_labels=channels,
        metrics={"test": {"r2": np.float32(0.5), "per_axis": np.array([0.25, 0.75])}},
        training={"epochs": 3, "lr": 1e-3, "history": (1.0, 0.5)},
    )
    after = datetime.now(timezone.utc)
    manifest = read_manifest(path)

    assert set(manifest.to_dict()) == CONTRACT_FIELDS
    assert manifest.format_version == FORMAT_VERSION == 1
    assert manifest.model == model.config.to_dict()
    assert manifest.n_channels == N_IN
    assert manifest.channel_labels == channels
    assert manifest.bin_s == model.config.dt_s
    assert manifest.kinematics_labels == ["vx", "vy"]
    assert manifest.metrics == {"test": {"r2": 0.5, "per_axis": [0.25, 0.75]}}
    assert manifest.training == {"epochs": 3, "lr": 1e-3, "history": [1.0, 0.5]}
    created = datetime.fromisoformat(manifest.created)
    assert created.utcoffset() == timedelta(0)
    assert before <= created <= after

    _, tensors = load_parts(path)
    for key in ("input_mean", "input_scale", "output_mean", "output_scale"):
        listed = np.float32(getattr(manifest.normalisation, key))
        np.testing.assert_array_equal(listed, tensors[key])
    assert manifest.to_dict()["tensors"] == {
        name: {"shape": list(shape), "dtype": "float32"}
        for name, shape in expected_tensor_shapes(model.config).items()
    }
    assert set(tensors) == set(manifest.tensors)
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert manifest.sha256 == oracle_sha(tensors)

    neurons = manifest.neurons
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
    path = save(tmp_path, training={"config": config, "result": result})
    training = load_checkpoint(path).manifest.training
    assert training["config"] == dataclasses.asdict(config)
    assert TrainConfig(**training["config"]) == config
    assert training["result"]["history"] == [{"step": 0, "loss": 2.0}]
    path = save(tmp_path, name="bare.safetensors", training=config)
    assert read_manifest(path).training["max_steps"] == 7


def test_only_the_manifest_key_in_metadata(tmp_path):
    header, _ = parse_file(save(tmp_path))
    assert set(header["__metadata__"]) == {"manifest"}


def test_read_manifest_builds_no_model(tmp_path, monkeypatch):
    path = save(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("read_manifest built a model")

    monkeypatch.setattr(bci.rsnn, "RSNN", refuse)
    monkeypatch.setattr(OnlineRSNN, "from_arrays", refuse)
    monkeypatch.setattr(safetensors.numpy, "load", refuse)
    assert read_manifest(path).n_channels == N_IN
    assert read_manifest(str(path)).model["n_hidden"] == N_HIDDEN


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = save(tmp_path)

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


def test_the_stored_text_is_the_typed_manifest_as_json(tmp_path):
    """The file holds exactly the typed model's JSON; the model is frozen and derives the id."""
    path = save(tmp_path, max_speed=120.0, kinematics_units=("cm/s", "cm/s"))
    header, _ = parse_file(path)
    manifest = read_manifest(path)
    assert manifest.to_json() == header["__metadata__"]["manifest"]
    assert manifest.model_id == manifest.sha256[:12] == load_decoder(path).model_id
    with pytest.raises(ValidationError, match="frozen"):
        manifest.n_channels = N_IN + 1


# -- refused manifests ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, "1", None, True])
def test_unknown_format_version(tmp_path, version):
    path = save(tmp_path)
    edit_manifest(path, lambda m: m.update(format_version=version))
    expect_error(
        path,
        f"unknown format_version {version!r}",
        "this code reads format_version 1",
        header=True,
    )


def test_missing_and_unknown_manifest_keys(tmp_path):
    path = save(tmp_path)
    edit_manifest(path, lambda m: m.pop("bin_s"))
    expect_error(path, "manifest lacks ['bin_s']", header=True)
    path = save(tmp_path, name="b.safetensors")
    edit_manifest(path, lambda m: m.update(metric={}))
    expect_error(path, "manifest has unknown keys ['metric']", header=True)


def test_max_speed_is_optional_and_checked(tmp_path):
    path = save(tmp_path, max_speed=120.0)
    assert read_manifest(path).max_speed == 120.0
    plain = read_manifest(save(tmp_path, name="plain.safetensors"))
    assert plain.max_speed is None and "max_speed" not in plain.to_dict()
    for bad in (0, -1.0, "fast", True):
        edit_manifest(path, lambda m, bad=bad: m.update(max_speed=bad))
        expect_error(path, "max_speed must be a finite number > 0", header=True)


def test_kinematics_units_are_optional_and_checked(tmp_path):
    path = save(tmp_path, kinematics_units=("cm/s", "cm/s"))
    assert read_manifest(path).kinematics_units == ["cm/s", "cm/s"]
    assert load_decoder(path).manifest.kinematics_units == ["cm/s", "cm/s"]
    old = save(tmp_path, name="old.safetensors")  # as written before units existed
    assert "kinematics_units" not in read_manifest(old).to_dict()
    assert load_checkpoint(old).manifest.kinematics_units is None
    with pytest.raises(CheckpointError, match="one non-empty unit string per output"):
        save(tmp_path, name="bad.safetensors", kinematics_units=("cm/s",))
    for bad in (["cm/s"], ["cm/s", ""], "cm/s", [1, 2]):
        edit_manifest(path, lambda m, bad=bad: m.update(kinematics_units=bad))
        expect_error(path, "kinematics_units", header=True)


def test_sha_not_hex(tmp_path):
    path = save(tmp_path)
    edit_manifest(path, lambda m: m.update(sha256="xyz"))
    expect_error(path, "sha256 must be 64 lowercase hex digits", header=True)


def test_n_channels_inconsistent(tmp_path):
    path = save(tmp_path)
    edit_manifest(path, lambda m: m.update(n_channels=N_IN + 1))
    expect_error(path, f"n_channels is {N_IN + 1}", f"n_in={N_IN}", header=True)


def test_bin_s_inconsistent(tmp_path):
    path = save(tmp_path)
    edit_manifest(path, lambda m: m.update(bin_s=0.02))
    expect_error(path, "bin_s is 0.02 s", "dt_s=0.05 s", header=True)


def test_labels_inconsistent(tmp_path):
    path = save(tmp_path)
    edit_manifest(path, lambda m: m.update(kinematics_labels=["vx"]))
    expect_error(path, "kinematics_labels has 1 names", "n_out=2", header=True)
    path = save(tmp_path, name="c.safetensors")
    edit_manifest(path, lambda m: m.update(channel_labels=["a"] * N_IN))
    expect_error(path, "channel_labels repeats ['a']", header=True)


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
    path = save(tmp_path)
    edit_manifest(path, lambda m: m["model"].update(edit))
    expect_error(path, "model config", fragment, header=True)


def test_model_config_missing_field(tmp_path):
    path = save(tmp_path)
    edit_manifest(path, lambda m: m["model"].pop("tau_mem_s"))
    expect_error(path, "missing ['tau_mem_s']", header=True)


def test_created_must_be_utc_iso(tmp_path):
    path = save(tmp_path)
    edit_manifest(path, lambda m: m.update(created="yesterday"))
    expect_error(path, "created must be an ISO 8601 time", header=True)
    edit_manifest(path, lambda m: m.update(created="2024-01-01T00:00:00"))
    expect_error(path, "created must be an ISO 8601 time with a UTC offset", header=True)
