"""Shared builders for the checkpoint tests: trained models, files laid out or edited by hand
(8-byte little-endian header length, JSON header, raw data), a checksum oracle written from
the contract (independent of ``bci.checkpoint.tensor_sha256``), and the rejection check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from bci.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_decoder,
    read_manifest,
    save_checkpoint,
)
from bci.rsnn import RSNN, RSNNConfig

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


def trained_model(seed: int = 0, **overrides) -> RSNN:
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


def input_bins(n_in: int = N_IN, n_bins: int = 80, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).poisson(3.0, size=(n_bins, n_in)).astype(np.float32)


def save(tmp_path: Path, model: RSNN | None = None, name: str = "model.safetensors", **kw):
    model = trained_model() if model is None else model
    labels = kw.pop("kinematics_labels", [f"k{i}" for i in range(model.config.n_out)])
    return save_checkpoint(tmp_path / name, model, kinematics_labels=labels, **kw)


def oracle_sha(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode("utf-8"))
        digest.update(np.asarray(tensors[name], dtype="<f4").tobytes(order="C"))
    return digest.hexdigest()


def parse_file(path: Path) -> tuple[dict, bytes]:
    """Split a safetensors file into its header JSON and its data part."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_header(path: Path, header: dict, data: bytes) -> None:
    """Lay out a safetensors file by hand around ``header`` and ``data``."""
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def load_parts(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest (as a dict) and the tensors of a checkpoint, read without bci."""
    header, _ = parse_file(path)
    return json.loads(header["__metadata__"]["manifest"]), dict(safetensors.numpy.load_file(path))


def write_raw(path: Path, manifest: dict, tensors: dict[str, np.ndarray], resign: bool = True):
    """Write ``tensors`` + ``manifest`` with safetensors itself; ``resign`` recomputes sha256 and
    the manifest's tensor table so only the intended defect remains."""
    manifest = dict(manifest)
    if resign:
        manifest["sha256"] = oracle_sha(tensors)
    safetensors.numpy.save_file(tensors, str(path), metadata={"manifest": json.dumps(manifest)})


def edit_manifest(path: Path, edit) -> None:
    """Apply ``edit(manifest)`` in place, keeping the tensor data byte for byte."""
    header, data = parse_file(path)
    manifest = json.loads(header["__metadata__"]["manifest"])
    edit(manifest)
    header["__metadata__"]["manifest"] = json.dumps(manifest)
    write_header(path, header, data)


def expect_error(path: Path, *fragments: str, header: bool = False) -> str:
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
