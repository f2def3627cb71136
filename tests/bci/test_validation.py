"""Tests for ``bci.validation``: the messages name the input, position, expected and received."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from bci.validation import check_finite, check_shape, to_numpy


def test_check_finite_accepts_finite_float_int_and_bool() -> None:
    check_finite("x", np.zeros((5, 3)))
    check_finite("x", np.arange(10))
    check_finite("x", np.ones(4, dtype=bool))
    check_finite("x", torch.ones(3, 2))
    check_finite("x", [[1.0, 2.0], [3.0, 4.0]])


def test_check_finite_names_bin_and_channel_for_2d() -> None:
    x = np.zeros((40, 8))
    x[17, 3] = np.nan
    expected = (
        "training data 'neural' has a non-finite value (nan) at bin 17, channel 3; "
        "remove or interpolate that bin"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_finite("training data 'neural'", x)


def test_check_finite_reports_first_value_in_time_order_and_total_count() -> None:
    x = np.zeros((40, 8))
    x[30, 0] = np.nan
    x[12, 5] = np.inf
    x[12, 6] = -np.inf
    with pytest.raises(ValueError, match=r"\(inf\) at bin 12, channel 5 \(3 non-finite values"):
        check_finite("x", x)


@pytest.mark.parametrize(
    ("shape", "index", "where"),
    [
        ((20,), (4,), "bin 4"),
        ((20, 3, 5), (4, 2, 1), "bin 4, batch 2, channel 1"),
        ((6, 2, 3, 4), (1, 0, 2, 3), "index (1, 0, 2, 3)"),
        ((), (), "the scalar"),
    ],
)
def test_check_finite_names_index_for_other_ranks(
    shape: tuple[int, ...], index: tuple[int, ...], where: str
) -> None:
    x = np.zeros(shape)
    x[index] = -np.inf
    with pytest.raises(ValueError, match=re.escape(f"(-inf) at {where}")):
        check_finite("x", x)


def test_check_finite_on_torch_tensor_with_grad() -> None:
    x = torch.zeros(5, 2, requires_grad=True)
    y = x + torch.tensor([[0.0, float("nan")]])
    with pytest.raises(ValueError, match="at bin 0, channel 1"):
        check_finite("t", y)


def test_check_finite_rejects_non_numeric() -> None:
    with pytest.raises(TypeError, match="must be numeric"):
        check_finite("labels", np.array(["a", "b"]))


def test_check_shape_accepts_matching_and_wildcards() -> None:
    check_shape("x", np.zeros((100, 96)), (None, 96))
    check_shape("x", np.zeros((100, 96)), (100, 96))
    check_shape("x", torch.zeros(3, 4, 5), (None, None, 5))
    check_shape("x", np.zeros(7), (7,))


def test_check_shape_message_names_expected_and_received() -> None:
    expected = (
        "neural input has shape (100, 95) but the decoder expects (T, 96): "
        "axis 1 (C) must be 96, got 95"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_shape(
            "neural input", np.zeros((100, 95)), (None, 96), axes=("T", "C"), owner="the decoder"
        )


def test_check_shape_without_axis_names_and_wrong_rank() -> None:
    with pytest.raises(
        ValueError, match=re.escape("has shape (96,) but expected (any, 96): 2 axes, got 1")
    ):
        check_shape("x", np.zeros(96), (None, 96))
    with pytest.raises(
        ValueError, match=re.escape("axis 0 must be 5, got 4; axis 1 must be 2, got 3")
    ):
        check_shape("x", np.zeros((4, 3)), (5, 2))


def test_check_shape_rejects_mismatched_axis_names() -> None:
    with pytest.raises(ValueError, match="must name each"):
        check_shape("x", np.zeros((4, 3)), (4, 3), axes=("T",))


def test_to_numpy_shares_memory_with_numpy_input() -> None:
    x = np.arange(6.0)
    assert np.shares_memory(to_numpy(x), x)
    np.testing.assert_array_equal(to_numpy(torch.arange(3)), [0, 1, 2])
    np.testing.assert_array_equal(to_numpy(torch.ones(2, dtype=torch.bfloat16)), [1.0, 1.0])
