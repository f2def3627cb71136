"""Tests for bci.compatibility: the one check of data (stream or session) against a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import tiny_checkpoint

from bci.checkpoint import load_checkpoint
from bci.compatibility import BIN_WIDTH_RTOL, check_fits, match_channels, same_bin_width
from bci.manifest import Manifest

MODEL = ["a", "b", "c", "d"]


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    """A 4-channel model (labels a-d), 50 ms bins, decoding vx and vy."""
    path = tiny_checkpoint(tmp_path / "m.safetensors", channel_labels=MODEL)
    return load_checkpoint(path).manifest


def test_bin_widths_agree_within_one_relative_tolerance() -> None:
    assert BIN_WIDTH_RTOL == 1e-6
    assert same_bin_width(0.05, 0.05 * (1 + 0.9e-6)) and same_bin_width(0.02, 1 / 50)
    assert not same_bin_width(0.05, 0.05 * (1 + 1.1e-6))
    assert not same_bin_width(0.05, 0.02)


def test_data_that_fit_return_the_channel_match(manifest: Manifest) -> None:
    match = check_fits(manifest, "model m", "stream 'x'", bin_s=0.05, n_channels=4,
                       channel_labels=["c", "a", "d", "b"], n_kinematics=2)  # fmt: skip
    assert match.index.tolist() == [1, 3, 0, 2]
    assert check_fits(manifest, "model m", "the stream", bin_s=0.05, n_channels=4).index is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bin_s": 0.02}, "stream 'x' has 20 ms bins but model m decodes 50 ms bins; fix bins"),
        (
            {"n_kinematics": 3},
            "stream 'x' has 3 kinematics but model m decodes 2 (vx, vy); fix kinematics",
        ),
        ({"n_channels": 5}, "stream 'x' has 5 channels but model m expects 4"),
        ({"channel_labels": ["a", "b", "c", "x"]}, "stream 'x''s channel labels differ"),
    ],
)
def test_each_mismatch_is_refused_in_one_line_naming_it_and_the_fix(
    manifest: Manifest, data: dict, message: str
) -> None:
    fits = {"bin_s": 0.05, "n_channels": 4, "n_kinematics": 2, "channel_labels": None}
    with pytest.raises(ValueError) as error:
        check_fits(manifest, "model m", "stream 'x'", **{**fits, **data},
                   bin_fix="fix bins", kinematics_fix="fix kinematics")  # fmt: skip
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


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


def test_an_explicit_map_selects_from_a_wider_stream() -> None:
    mapping = {"a": "A-3", "b": "A-1", "c": "A-4", "d": "A-0"}
    stream = ["A-0", "A-1", "A-2", "A-3", "A-4"]
    match = match_channels(MODEL, 4, stream, 5, where="stream 'x'", explicit=mapping)
    assert match.index.tolist() == [3, 1, 4, 0]
    with pytest.raises(ValueError, match=r"no stream channel for model labels \['d'\]"):
        match_channels(
            MODEL, 4, stream, 5, where="s", explicit={"a": "A-0", "b": "A-1", "c": "A-2"}
        )
    with pytest.raises(ValueError, match=r"names \['Z'\], which stream 'x' does not have"):
        match_channels(MODEL, 4, stream, 5, where="stream 'x'", explicit={**mapping, "d": "Z"})
