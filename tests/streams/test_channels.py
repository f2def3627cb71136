"""Tests for streams.channels: a stream's labels, channel-map files, a session in model order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pylsl
import pytest
from factories import tiny_checkpoint

from bci.checkpoint import load_checkpoint
from streams.channels import in_model_order, labels_of, read_channel_map
from streams.lsl_outlet import stream_info
from streams.session import Session

MODEL = ["a", "b", "c", "d"]


def test_a_channel_map_file_is_a_json_object_of_labels(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"a": "A-3", "b": "A-1"}))
    assert read_channel_map(path) == {"a": "A-3", "b": "A-1"}
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object of model label -> stream"):
        read_channel_map(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="cannot read a JSON object"):
        read_channel_map(path)


def test_labels_of_reads_the_lsl_channel_description() -> None:
    info = stream_info("lab", "Neural", ["e1", "e2"], None, 10.0, "float32", "lab-1")
    assert labels_of(info) == ("e1", "e2")
    assert labels_of(pylsl.StreamInfo("bare", "Neural", 2, 10.0, "float32", "b-1")) is None


def test_a_session_is_checked_and_put_in_the_model_order(tmp_path: Path) -> None:
    manifest = load_checkpoint(tiny_checkpoint(tmp_path / "m.safetensors",
                                               channel_labels=MODEL)).manifest  # fmt: skip
    neural = np.arange(8, dtype=np.float32).reshape(2, 4)
    session = Session(neural=neural, timestamps=np.array([0.05, 0.1]), bin_s=0.05,
                      channel_labels=("d", "c", "b", "a"))  # fmt: skip
    ordered = in_model_order(session, manifest, "model m", "session s.npz")
    np.testing.assert_array_equal(ordered.neural, neural[:, ::-1])
    assert ordered.channel_labels == tuple(MODEL)
    assert in_model_order(ordered, manifest, "model m", "session s.npz") is ordered
    slow = Session(neural=neural, timestamps=np.array([0.1, 0.2]), bin_s=0.1,
                   channel_labels=tuple(MODEL))  # fmt: skip
    with pytest.raises(ValueError) as error:
        in_model_order(slow, manifest, "model m", "session s.npz", bin_fix="rebin it")
    expected = "session s.npz has 100 ms bins but model m decodes 50 ms bins; rebin it"
    assert str(error.value) == expected
