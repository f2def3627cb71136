"""Tests for ``bci.checkpoint``: round trips, refused saves, atomic writes, and every file
rejected for its bytes (truncated, not safetensors, tensors that disagree with the manifest,
non-finite or implausible values, checksum). Files are broken the way a disk, a copy or a hand
edit would break them (see ``checkpoint_cases``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
from checkpoint_cases import (
    N_HIDDEN,
    N_IN,
    N_OUT,
    edit_manifest,
    expect_error,
    input_bins,
    load_parts,
    parse_file,
    save,
    trained_model,
    write_header,
    write_raw,
)

import bci.atomic as atomic
import bci.checkpoint as ckpt
from bci.checkpoint import (
    Checkpoint,
    CheckpointError,
    expected_tensor_shapes,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
)
from bci.rsnn import RSNN, RSNNConfig

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
    model = trained_model(**overrides)
    path = save(tmp_path, model)
    loaded = load_checkpoint(path)

    assert isinstance(loaded, Checkpoint)
    assert loaded.path == path
    assert loaded.model.config == model.config
    assert not loaded.model.training
    x = input_bins()
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
    model = trained_model(alif_fraction=0.3)
    loaded = load_checkpoint(save(tmp_path, model)).model
    n_alif = model.config.n_alif
    assert 0 < n_alif < N_HIDDEN
    assert torch.all(loaded.beta[: N_HIDDEN - n_alif] == 0)
    assert torch.all(loaded.beta[N_HIDDEN - n_alif :] == model.config.beta_adapt)
    manifest = read_manifest(tmp_path / "model.safetensors")
    assert manifest.neurons["n_alif"] == n_alif
    assert manifest.neurons["n_lif"] == N_HIDDEN - n_alif


def test_float64_model_is_stored_as_float32(tmp_path):
    model = trained_model().double()
    loaded = load_checkpoint(save(tmp_path, model)).model
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, model.state_dict()[name].float()), name


def test_expected_tensor_shapes_match_the_model():
    for overrides in ({}, {"recurrent": False}, {"n_in": 3, "n_hidden": 7, "n_out": 4}):
        config = RSNNConfig(**{"n_in": N_IN, "n_hidden": N_HIDDEN, **overrides})
        state = RSNN(config).state_dict()
        assert expected_tensor_shapes(config) == {k: tuple(v.shape) for k, v in state.items()}


# -- saving: refused inputs -------------------------------------------------------------------


def test_save_refuses_bad_labels_and_values(tmp_path):
    model = trained_model()
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
        save_checkpoint(tmp_path / "no" / "m.safetensors", trained_model(), kinematics_labels="ab")


# -- atomic writes ----------------------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_failed_serialisation_leaves_existing_file_untouched(tmp_path, monkeypatch, exc_type):
    path = save(tmp_path, trained_model(seed=1))
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise exc_type("serializer failed")

    monkeypatch.setattr(ckpt, "_serialize", explode)
    with pytest.raises(exc_type, match="serializer failed"):
        save(tmp_path, trained_model(seed=2))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]
    load_checkpoint(path)


def test_failed_fsync_or_rename_leaves_existing_file(tmp_path, monkeypatch):
    path = save(tmp_path, trained_model(seed=1))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, trained_model(seed=2))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_save_replaces_existing_file_and_fsyncs_directory(tmp_path, monkeypatch):
    synced: list[Path] = []
    real = atomic.fsync_directory
    monkeypatch.setattr(atomic, "fsync_directory", lambda d: (synced.append(Path(d)), real(d)))
    path = save(tmp_path, trained_model(seed=1))
    save(tmp_path, trained_model(seed=2))
    assert synced == [tmp_path, tmp_path]
    assert sorted(os.listdir(tmp_path)) == [path.name]
    reloaded = load_checkpoint(path).model
    assert torch.equal(reloaded.w_in, trained_model(seed=2).w_in)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# -- loading: rejected files ------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "absent.safetensors"
    expect_error(path, "does not exist", header=True)
    expect_error(tmp_path, "not a regular file", header=True)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint at all", b"PK\x03\x04" + bytes(100), b'{"a": 1}'],
    ids=["empty", "text", "zip", "json"],
)
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    expect_error(path, "not a valid safetensors file", header=True)


def test_truncated_files(tmp_path):
    original = save(tmp_path).read_bytes()
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
        expect_error(path, "not a valid safetensors file", header=True)


def test_extra_bytes_after_the_data(tmp_path):
    path = save(tmp_path)
    path.write_bytes(path.read_bytes() + b"\x00" * 8)
    expect_error(path, "not a valid safetensors file", header=True)


def test_no_manifest(tmp_path):
    _, tensors = load_parts(save(tmp_path))
    bare = tmp_path / "bare.safetensors"
    safetensors.numpy.save_file(tensors, str(bare))
    expect_error(bare, "no 'manifest'", "not a bci checkpoint", header=True)
    other = tmp_path / "other.safetensors"
    safetensors.numpy.save_file(tensors, str(other), metadata={"format": "pt"})
    expect_error(other, "no 'manifest'", header=True)


def test_extra_metadata_key(tmp_path):
    path = save(tmp_path)
    header, data = parse_file(path)
    header["__metadata__"]["note"] = "hello"
    write_header(path, header, data)
    expect_error(path, "unexpected safetensors metadata keys ['note']", header=True)


def test_manifest_not_json(tmp_path):
    path = save(tmp_path)
    header, data = parse_file(path)
    header["__metadata__"]["manifest"] = header["__metadata__"]["manifest"][:-5]
    write_header(path, header, data)
    expect_error(path, "manifest is not valid JSON", header=True)
    header["__metadata__"]["manifest"] = "[1, 2]"
    write_header(path, header, data)
    expect_error(path, "manifest must be a JSON object", header=True)


def test_missing_tensor(tmp_path):
    manifest, tensors = load_parts(save(tmp_path))
    del tensors["w_rec"]
    # The file lacks the tensor the manifest lists.
    file_only = tmp_path / "file_only.safetensors"
    write_raw(file_only, manifest, tensors)
    expect_error(file_only, "missing tensors ['w_rec']", "the manifest lists", header=True)
    # File and manifest agree, but the model config needs the tensor.
    both = tmp_path / "both.safetensors"
    del manifest["tensors"]["w_rec"]
    write_raw(both, manifest, tensors)
    expect_error(both, "missing tensors ['w_rec']", "model config needs", header=True)


def test_extra_tensor(tmp_path):
    path = save(tmp_path)
    header, data = parse_file(path)
    header["bias_hidden"] = {"dtype": "F32", "shape": [N_HIDDEN], "data_offsets": [0, 0]}
    extra = np.arange(N_HIDDEN, dtype="<f4").tobytes()
    header["bias_hidden"]["data_offsets"] = [len(data), len(data) + len(extra)]
    write_header(path, header, data + extra)
    expect_error(path, "extra tensors ['bias_hidden']", header=True)

    manifest, tensors = load_parts(path)
    manifest["tensors"]["bias_hidden"] = {"shape": [N_HIDDEN], "dtype": "float32"}
    both = tmp_path / "both.safetensors"
    write_raw(both, manifest, tensors)
    expect_error(both, "extra tensors ['bias_hidden']", "model config needs", header=True)


def test_shape_mismatch_with_manifest(tmp_path):
    path = save(tmp_path)
    header, data = parse_file(path)
    assert header["w_in"]["shape"] == [N_HIDDEN, N_IN]
    header["w_in"]["shape"] = [N_IN, N_HIDDEN]  # same bytes, transposed claim
    write_header(path, header, data)
    expect_error(
        path,
        "tensor 'w_in' shape mismatch with the manifest",
        f"expected ({N_HIDDEN}, {N_IN}), received ({N_IN}, {N_HIDDEN})",
        header=True,
    )


def test_shape_mismatch_with_model_config(tmp_path):
    manifest, tensors = load_parts(save(tmp_path))
    tensors["w_out"] = np.zeros((N_OUT, N_HIDDEN + 1), dtype=np.float32)
    manifest["tensors"]["w_out"]["shape"] = [N_OUT, N_HIDDEN + 1]
    path = tmp_path / "wide.safetensors"
    write_raw(path, manifest, tensors)
    expect_error(
        path,
        "tensor 'w_out' shape mismatch with the model config",
        f"expected ({N_OUT}, {N_HIDDEN}), received ({N_OUT}, {N_HIDDEN + 1})",
        header=True,
    )


def test_wrong_dtype(tmp_path):
    manifest, tensors = load_parts(save(tmp_path))
    tensors["b_out"] = tensors["b_out"].astype(np.float64)
    path = tmp_path / "f64.safetensors"
    write_raw(path, manifest, tensors)
    expect_error(path, "tensor 'b_out' is stored as F64", header=True)
    manifest["tensors"]["b_out"]["dtype"] = "float64"
    write_raw(path, manifest, tensors)
    expect_error(path, "tensor 'b_out' has dtype 'float64'", "float32 only", header=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights(tmp_path, bad):
    manifest, tensors = load_parts(save(tmp_path))
    tensors["w_rec"][4, 7] = bad
    tensors["w_rec"][9, 1] = bad
    path = tmp_path / "nan.safetensors"
    write_raw(path, manifest, tensors)  # valid checksum: the finiteness check must fire
    message = expect_error(path, "tensor 'w_rec'", "index (4, 7)", "2 non-finite values")
    assert repr(np.float32(bad)).split("(")[-1].rstrip(")") in message
    assert "checksum" not in message
    read_manifest(path)  # values are not read by the cheap reader


def test_huge_finite_weights_are_refused(tmp_path):
    manifest, tensors = load_parts(save(tmp_path))
    tensors["w_out"][1, 3] = 1e38
    path = tmp_path / "huge.safetensors"
    write_raw(path, manifest, tensors)
    expect_error(path, "weight w_out[1, 3] is 1e+38", "beyond the 10000")
    read_manifest(path)  # values are not read by the cheap reader
    model = trained_model()
    with torch.no_grad():
        model.w_in[0, 0] = -2e4
    with pytest.raises(CheckpointError, match=r"weight w_in\[0, 0\] is 2e\+04"):
        save(tmp_path, model, name="saved.safetensors")
    assert not (tmp_path / "saved.safetensors").exists()


def test_output_normalisation_that_overflows_is_refused(tmp_path):
    manifest, tensors = load_parts(save(tmp_path))
    tensors["output_scale"][0] = 3e38
    manifest["normalisation"]["output_scale"][0] = float(tensors["output_scale"][0])
    path = tmp_path / "scale.safetensors"
    write_raw(path, manifest, tensors)
    expect_error(path, "output 0 can reach", "beyond float32")


def test_deep_or_large_manifest_is_refused_before_parsing(tmp_path):
    path = save(tmp_path)
    deep = "[" * 100_000 + "]" * 100_000
    header, data = parse_file(path)
    header["__metadata__"]["manifest"] = deep
    write_header(path, header, data)
    expect_error(path, "the manifest is nested 100,000 levels deep, more than the 32", header=True)

    path = save(tmp_path, name="large.safetensors")
    edit_manifest(path, lambda m: m["metrics"].update(blob="x" * ckpt.MAX_MANIFEST_BYTES))
    expect_error(
        path, "the manifest is 4,19", "bytes, more than the 4,194,304 allowed", header=True
    )
    with pytest.raises(CheckpointError, match="the manifest is 4,19"):
        save(tmp_path, name="c.safetensors", metrics={"blob": "x" * ckpt.MAX_MANIFEST_BYTES})


def test_oversized_header_is_not_read(tmp_path, monkeypatch):
    path = save(tmp_path)
    header, data = parse_file(path)
    header["__metadata__"]["manifest"] += " " * ckpt.MAX_HEADER_BYTES
    write_header(path, header, data)
    calls = []
    monkeypatch.setattr(ckpt.safetensors, "safe_open", lambda *a, **k: calls.append(a))
    expect_error(path, "its header is", "more than the 4,259,840 a checkpoint needs", header=True)
    assert calls == []


def test_checksum_mismatch(tmp_path):
    path = save(tmp_path)
    original = path.read_bytes()
    header_len = int.from_bytes(original[:8], "little")
    for offset in (8 + header_len, len(original) - 1, (8 + header_len + len(original)) // 2):
        corrupted = bytearray(original)
        corrupted[offset] ^= 0x01  # lowest mantissa bit: still a finite float
        path.write_bytes(bytes(corrupted))
        expect_error(path, "checksum mismatch", "data changed after the file was written")
        read_manifest(path)  # header intact: the cheap reader does not hash
    path.write_bytes(original)
    load_checkpoint(path)


def test_normalisation_disagrees_with_tensors(tmp_path):
    path = save(tmp_path)

    def nudge(manifest):
        manifest["normalisation"]["output_scale"][1] *= 1.5

    edit_manifest(path, nudge)
    expect_error(path, "normalisation.output_scale disagrees with tensor 'output_scale' at index 1")

    path = save(tmp_path, name="short.safetensors")
    edit_manifest(path, lambda m: m["normalisation"]["input_mean"].pop())
    expect_error(path, f"normalisation.input_mean must be a list of {N_IN} finite numbers")
