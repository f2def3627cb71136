"""Tests for streams.channels: a stream's labels, channel-map files, a session in model order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pylsl
import pytest

from bci.compatibility import match_channels
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


def test_a_session_is_put_in_the_model_order() -> None:
    neural = np.arange(8, dtype=np.float32).reshape(2, 4)
    session = Session(neural=neural, timestamps=np.array([0.05, 0.1]), bin_s=0.05,
                      channel_labels=("d", "c", "b", "a"))  # fmt: skip
    match = match_channels(MODEL, 4, session.channel_labels, 4, where="session s.npz")
    ordered = in_model_order(session, match, MODEL)
    np.testing.assert_array_equal(ordered.neural, neural[:, ::-1])
    assert ordered.channel_labels == tuple(MODEL)
    same = match_channels(MODEL, 4, ordered.channel_labels, 4, where="session s.npz")
    assert in_model_order(ordered, same, MODEL) is ordered
