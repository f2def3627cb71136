"""Tests for streams.channels: matching a stream's (or a session's) channels to a model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pylsl
import pytest

from streams.channels import in_model_order, labels_of, match_channels, read_channel_map
from streams.lsl_outlet import stream_info
from streams.session import Session

MODEL = ["a", "b", "c", "d"]


def test_equal_labels_feed_in_order_and_a_permutation_is_mapped_by_label() -> None:
    same = match_channels(MODEL, 4, MODEL, 4, where="stream 'x'")
    assert same.index is None and same.note == ""
    permuted = match_channels(MODEL, 4, ["c", "a", "d", "b"], 4, where="stream 'x'")
    assert permuted.index.tolist() == [1, 3, 0, 2]
    data = np.array([[30.0, 10.0, 40.0, 20.0]])  # the stream's columns c, a, d, b
    np.testing.assert_array_equal(permuted.select(data), [[10.0, 20.0, 30.0, 40.0]])
    assert "another order" in permuted.note


def test_other_labels_are_refused_naming_them_and_the_fix() -> None:
    with pytest.raises(ValueError) as error:
        match_channels(MODEL, 4, ["a", "b", "x", "y"], 4, where="stream 'amp'")
    message = str(error.value)
    assert "stream 'amp''s channel labels differ from the model's" in message
    assert "['c', 'd'] are not in it, it has ['x', 'y'] instead" in message
    assert "--channel-map FILE" in message and "\n" not in message


def test_missing_labels_are_taken_in_order_with_a_note_when_the_counts_agree() -> None:
    unlabelled = match_channels(MODEL, 4, None, 4, where="stream 'x'")
    assert unlabelled.index is None and "stream 'x' has no channel labels" in unlabelled.note
    assert "the model has no" in match_channels(None, 4, MODEL, 4, where="s").note
    with pytest.raises(ValueError, match="has 5 channels but the model expects 4"):
        match_channels(MODEL, 4, None, 5, where="stream 'x'")


def test_an_explicit_map_selects_from_a_wider_stream(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"a": "A-3", "b": "A-1", "c": "A-4", "d": "A-0"}))
    mapping = read_channel_map(path)
    stream = ["A-0", "A-1", "A-2", "A-3", "A-4"]
    match = match_channels(MODEL, 4, stream, 5, where="stream 'x'", explicit=mapping)
    assert match.index.tolist() == [3, 1, 4, 0]
    with pytest.raises(ValueError, match=r"no stream channel for model labels \['d'\]"):
        match_channels(
            MODEL, 4, stream, 5, where="s", explicit={"a": "A-0", "b": "A-1", "c": "A-2"}
        )
    with pytest.raises(ValueError, match=r"names \['Z'\], which stream 'x' does not have"):
        match_channels(MODEL, 4, stream, 5, where="stream 'x'", explicit={**mapping, "d": "Z"})
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object of model label -> stream"):
        read_channel_map(path)


def test_labels_of_reads_the_lsl_channel_description() -> None:
    info = stream_info("lab", "Neural", ["e1", "e2"], None, 10.0, "float32", "lab-1")
    assert labels_of(info) == ("e1", "e2")
    assert labels_of(pylsl.StreamInfo("bare", "Neural", 2, 10.0, "float32", "b-1")) is None


def test_a_session_is_put_in_the_model_order() -> None:
    neural = np.arange(8, dtype=np.float32).reshape(2, 4)
    session = Session(neural=neural, timestamps=np.array([0.05, 0.1]), bin_s=0.05,
                      channel_labels=("d", "c", "b", "a"))  # fmt: skip
    ordered = in_model_order(session, MODEL, 4, where="session s.npz")
    np.testing.assert_array_equal(ordered.neural, neural[:, ::-1])
    assert ordered.channel_labels == tuple(MODEL)
    assert in_model_order(ordered, MODEL, 4, where="session s.npz") is ordered
