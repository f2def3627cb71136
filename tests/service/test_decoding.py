"""``decode_recording``, the one decode loop over a recording: frozen it equals the sequence
forward; with e-prop it learns as it goes from an array, a function or ReFIT intention."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from bci.checkpoint import DecoderFile, decoder_of
from bci.eprop import EpropConfig
from bci.input_tracking import InputTracker
from bci.intention import intended_velocity, rotation_target
from bci.rsnn import RSNN, RSNNConfig
from service.decoding import ArrayTargets, FunctionTargets, IntentionArrays, decode_recording

T, C, K = 120, 6, 2


@pytest.fixture(scope="module")
def model_and_data() -> tuple[RSNN, DecoderFile, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    neural = rng.poisson(3.0, size=(T, C)).astype(np.float32)
    kinematics = rng.normal(size=(T, K)).astype(np.float32)
    model = RSNN(RSNNConfig(n_in=C, n_hidden=16, n_out=K), seed=1)
    model.fit_normalisation(neural, kinematics)
    return model, decoder_of(model, ("vx", "vy")), neural, kinematics


def test_frozen_equals_sequence_decode(model_and_data) -> None:
    model, file, neural, _ = model_and_data
    decoded, status = decode_recording(file, neural)
    expected, spikes = model.decode(neural)
    assert status is None
    assert 0.01 < spikes.mean() < 0.6
    np.testing.assert_allclose(decoded, expected, atol=1e-5)


def test_eprop_applies_one_update_per_window_and_leaves_the_model(model_and_data) -> None:
    _, file, neural, kinematics = model_and_data
    frozen, _ = decode_recording(file, neural)
    config = EpropConfig(update_every=10, optimizer="sgd", lr=1e-2)
    adapted, status = decode_recording(file, neural, ArrayTargets(kinematics), config)
    assert status.updates_applied == T // 10
    assert status.bins == status.bins_with_target == T
    np.testing.assert_array_equal(adapted[:10], frozen[:10])  # before the first update
    assert np.abs(adapted[10:] - frozen[10:]).max() > 1e-3
    again, _ = decode_recording(file, neural)
    np.testing.assert_array_equal(again, frozen)  # the given decoder was not changed


def test_nan_rows_mean_no_target(model_and_data) -> None:
    _, file, neural, kinematics = model_and_data
    targets = kinematics.copy()
    targets[::2] = np.nan
    _, status = decode_recording(file, neural, ArrayTargets(targets), EpropConfig())
    assert status.bins_with_target == T // 2
    assert status.targets_rejected == 0  # no target is not a bad target


def test_a_function_target_sees_its_own_bins_output(model_and_data) -> None:
    """Output-dependent targets (ReFIT) are computed from the bin's own decoded output and
    attached after the bin was published, as live."""
    _, file, neural, _ = model_and_data
    seen: list[tuple[int, np.ndarray]] = []

    def target(t: int, decoded: np.ndarray) -> np.ndarray:
        seen.append((t, decoded.copy()))
        return np.zeros(K, np.float32)

    decoded, status = decode_recording(file, neural, FunctionTargets(target), EpropConfig())
    assert [t for t, _ in seen] == list(range(T))
    for t, values in seen:
        np.testing.assert_array_equal(values, decoded[t])
    assert status.bins_with_target == T


def test_intention_targets_rotate_each_bins_output_toward_the_goal(model_and_data) -> None:
    _, file, neural, _ = model_and_data
    rng = np.random.default_rng(3)
    goal, cursor = rng.normal(size=(T, K)) * 5, rng.normal(size=(T, K))
    refit = IntentionArrays(goal, cursor, hold_radius=1.0)
    config = EpropConfig(update_every=5)

    def by_hand(t: int, decoded: np.ndarray) -> np.ndarray:
        intended = intended_velocity(decoded, cursor[t], goal[t], 1.0)
        return rotation_target(decoded, intended).astype(np.float32)

    a, status_a = decode_recording(file, neural, refit, config)
    b, status_b = decode_recording(file, neural, FunctionTargets(by_hand), config)
    np.testing.assert_array_equal(a, b)
    assert status_a == status_b and status_a.updates_applied == T // 5


def test_tracked_inputs_decode_as_a_tracker_beside_the_step(model_and_data) -> None:
    """The loop observes each bin before decoding it; the given decoder keeps its stored
    statistics."""
    _, file, neural, _ = model_and_data
    stored = file.decoder.normalisation.copy()
    drifted = 2.0 * neural + 1.0
    tracked, _ = decode_recording(file, drifted, track_inputs_s=1.0)
    np.testing.assert_array_equal(file.decoder.normalisation, stored)
    decoder = copy.deepcopy(file.decoder)
    tracker, state = InputTracker(decoder.normalisation, decoder.dt_s, 1.0), decoder.initial_state()
    expected = []
    for x in drifted:
        tracker.observe(x)
        expected.append(decoder.step(x, state).copy())
    np.testing.assert_array_equal(tracked, np.array(expected))
    frozen, _ = decode_recording(file, drifted)
    assert np.abs(tracked - frozen).max() > 1e-3
    adapted, status = decode_recording(
        file, drifted, ArrayTargets(np.zeros((T, K), np.float32)), EpropConfig(), track_inputs_s=1.0
    )
    assert status.updates_applied > 0 and np.isfinite(adapted).all()
