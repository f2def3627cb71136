"""``bci.intention``: ReFIT intended velocities and cursor integration, against hand-computed
values (3-4-5 triangles so every number is exact)."""

from __future__ import annotations

import numpy as np
import pytest

from bci.intention import integrate_cursor, intended_velocity, rotation_target


# -- intended_velocity: hand-computed cases --------------------------------------------------
def test_points_at_target_with_decoded_speed() -> None:
    # speed |(3, 4)| = 5; target straight below the cursor -> (0, -5)
    got = intended_velocity(np.array([3.0, 4.0]), np.array([1.0, 1.0]), np.array([1.0, -1.0]), 0.0)
    np.testing.assert_allclose(got, [0.0, -5.0], rtol=0, atol=1e-15)
    # speed |(0, 2)| = 2 toward a target at (3, 4) from the origin: direction (0.6, 0.8)
    got = intended_velocity(np.array([0.0, 2.0]), np.zeros(2), np.array([3.0, 4.0]), 1.0)
    np.testing.assert_allclose(got, [1.2, 1.6], rtol=0, atol=1e-15)


def test_speed_is_kept_and_direction_replaced() -> None:
    rng = np.random.default_rng(0)
    decoded, cursor, target = rng.normal(size=(3, 50, 2))
    got = intended_velocity(decoded, cursor, target, 0.0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(decoded, axis=1))
    to_target = target - cursor
    cosine = np.sum(got * to_target, axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(to_target, axis=1)
    )
    np.testing.assert_allclose(cosine, 1.0, rtol=0, atol=1e-12)


def test_zero_within_hold_radius_and_on_its_edge() -> None:
    decoded, cursor, target = np.array([1.0, 1.0]), np.zeros(2), np.array([0.3, 0.4])  # dist 0.5
    np.testing.assert_array_equal(intended_velocity(decoded, cursor, target, 2.0), [0.0, 0.0])
    # |g - c| > radius is required to move: exactly on the radius the intention is to hold
    np.testing.assert_array_equal(intended_velocity(decoded, cursor, target, 0.5), [0.0, 0.0])
    speed = np.sqrt(2.0)
    np.testing.assert_allclose(
        intended_velocity(decoded, cursor, target, 0.49), [0.6 * speed, 0.8 * speed], rtol=1e-15
    )


def test_exactly_on_target_gives_zero_not_nan() -> None:
    position = np.array([2.0, -3.0])
    with np.errstate(all="raise"):  # no 0/0 anywhere
        got = intended_velocity(np.array([5.0, 1.0]), position, position.copy(), 0.0)
    np.testing.assert_array_equal(got, [0.0, 0.0])


def test_zero_decoded_speed_gives_zero() -> None:
    got = intended_velocity(np.zeros(2), np.zeros(2), np.array([3.0, 4.0]), 0.0)
    np.testing.assert_array_equal(got, [0.0, 0.0])


def test_sequence_is_rowwise_and_hand_computed() -> None:
    decoded = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0], [6.0, 8.0]])
    cursor = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0], [0.0, 0.0]])
    target = np.array([[0.0, 10.0], [1.0, 1.1], [2.0, 1.0], [-3.0, -4.0]])
    got = intended_velocity(decoded, cursor, target, hold_radius=0.5)
    expected = np.array([[0.0, 5.0], [0.0, 0.0], [-1.2, -1.6], [-6.0, -8.0]])
    assert got.shape == (4, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)
    for t in range(4):
        np.testing.assert_array_equal(
            got[t], intended_velocity(decoded[t], cursor[t], target[t], 0.5)
        )


def test_three_dimensional_velocity_and_lists() -> None:
    got = intended_velocity([0.0, 0.0, 3.0], [1.0, 1.0, 1.0], [1.0, 3.0, 1.0], 0.0)
    np.testing.assert_allclose(got, [0.0, 3.0, 0.0], rtol=0, atol=1e-15)


def test_inputs_are_not_modified() -> None:
    decoded, cursor, target = np.array([3.0, 4.0]), np.array([1.0, 1.0]), np.array([1.0, -1.0])
    copies = [a.copy() for a in (decoded, cursor, target)]
    intended_velocity(decoded, cursor, target, 0.0)
    for array, copy in zip((decoded, cursor, target), copies, strict=True):
        np.testing.assert_array_equal(array, copy)


# -- intended_velocity: bad input -------------------------------------------------------------
def test_cursor_shape_mismatch_names_expected_and_received() -> None:
    with pytest.raises(ValueError, match=r"cursor position has shape \(3,\).*\(2,\)"):
        intended_velocity(np.zeros(2), np.zeros(3), np.zeros(2), 0.0)


def test_target_shape_mismatch_names_expected_and_received() -> None:
    with pytest.raises(ValueError, match=r"target position has shape \(4, 2\).*\(5, 2\)"):
        intended_velocity(np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((4, 2)), 0.0)


@pytest.mark.parametrize("which", ["decoded velocity", "cursor", "target"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_refused(which: str, bad: float) -> None:
    arrays = {
        "decoded velocity": np.ones((3, 2)),
        "cursor": np.zeros((3, 2)),
        "target": np.ones((3, 2)) * 2,
    }
    arrays[which][1, 0] = bad
    kind = "nan" if np.isnan(bad) else "inf"
    with pytest.raises(ValueError, match=rf"{which} has a non-finite value \({kind}\)"):
        intended_velocity(arrays["decoded velocity"], arrays["cursor"], arrays["target"], 0.0)


@pytest.mark.parametrize("radius", [-0.1, float("nan"), -np.inf])
def test_bad_hold_radius_is_refused(radius: float) -> None:
    with pytest.raises(ValueError, match="hold_radius must be zero or positive"):
        intended_velocity(np.ones(2), np.zeros(2), np.ones(2), radius)


# -- integrate_cursor --------------------------------------------------------------------------
def test_integrate_cursor_hand_computed() -> None:
    start = np.array([1.0, 2.0])
    velocity = np.array([[2.0, 0.0], [0.0, -4.0], [1.0, 1.0]])
    got = integrate_cursor(start, velocity, dt_s=0.5)
    np.testing.assert_allclose(got, [[2.0, 2.0], [2.0, 0.0], [2.5, 0.5]], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(start, [1.0, 2.0])  # the start is not modified


def test_integrate_cursor_equals_cumulative_sum_without_radius() -> None:
    rng = np.random.default_rng(1)
    velocity = rng.normal(size=(40, 2))
    start = np.array([0.5, -0.5])
    got = integrate_cursor(start, velocity, dt_s=0.05)
    np.testing.assert_allclose(got, start + np.cumsum(velocity * 0.05, axis=0), rtol=0, atol=1e-12)


def test_integrate_cursor_radius_clamp() -> None:
    velocity = np.array([[30.0, 40.0], [10.0, 0.0], [-6.0, -8.0], [1.0, 0.0]])
    got = integrate_cursor(np.zeros(2), velocity, dt_s=1.0, radius=10.0)
    # (30, 40) has norm 50 -> scaled onto the circle: (6, 8)
    np.testing.assert_allclose(got[0], [6.0, 8.0], rtol=0, atol=1e-14)
    # (6, 8) + (10, 0) = (16, 8), norm sqrt(320) -> 10 (16, 8) / sqrt(320)
    np.testing.assert_allclose(got[1], np.array([16.0, 8.0]) * 10 / np.sqrt(320), atol=1e-14)
    # back inside the disc: no clamping
    np.testing.assert_allclose(got[2], got[1] + [-6.0, -8.0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(got[3], got[2] + [1.0, 0.0], rtol=0, atol=1e-14)
    assert np.all(np.linalg.norm(got, axis=1) <= 10.0 + 1e-12)


def test_integrate_cursor_radius_inactive_inside_disc() -> None:
    velocity = np.array([[1.0, 0.0], [0.0, 1.0]])
    free = integrate_cursor(np.zeros(2), velocity, 1.0)
    np.testing.assert_array_equal(integrate_cursor(np.zeros(2), velocity, 1.0, radius=5.0), free)


def test_integrate_cursor_empty_sequence() -> None:
    got = integrate_cursor(np.zeros(2), np.zeros((0, 2)), 0.05)
    assert got.shape == (0, 2)


class TestRotationTarget:
    """``v - rotation_target(v, v*)`` is the part of ``v - |v| d`` perpendicular to ``v``."""

    def test_error_is_perpendicular_and_keeps_speed(self) -> None:
        decoded = np.array([3.0, 4.0])  # speed 5
        intended = np.array([0.0, 2.0])  # direction +y
        target = rotation_target(decoded, intended)
        error = decoded - target
        # v - |v| d = (3, -1); its part perpendicular to v^ = (0.6, 0.8):
        # (3, -1) - ((3*0.6 - 0.8) (0.6, 0.8)) = (3, -1) - (0.6, 0.8) = (2.4, -1.8)
        np.testing.assert_allclose(error, [2.4, -1.8], atol=1e-12)
        assert abs(np.dot(error, decoded)) < 1e-12
        np.testing.assert_allclose(np.dot(target, decoded / 5.0), 5.0, atol=1e-12)

    def test_aligned_decoding_is_its_own_target(self) -> None:
        decoded = np.array([[1.0, 1.0], [-2.0, 0.0]])
        intended = np.array([[3.0, 3.0], [-0.5, 0.0]])
        np.testing.assert_allclose(rotation_target(decoded, intended), decoded, atol=1e-12)

    def test_zero_when_holding_or_not_moving(self) -> None:
        decoded = np.array([[2.0, 0.0], [0.0, 0.0]])
        intended = np.array([[0.0, 0.0], [1.0, 0.0]])
        np.testing.assert_array_equal(rotation_target(decoded, intended), np.zeros((2, 2)))

    def test_shape_mismatch_names_both_shapes(self) -> None:
        with pytest.raises(ValueError, match=r"\(3,\)") as info:
            rotation_target(np.zeros(2), np.zeros(3))
        assert "(2,)" in str(info.value)
