"""``decode_online``: frozen decoding equals the sequence forward; e-prop learns as it goes."""

from __future__ import annotations

import numpy as np
import pytest

from bci.eprop import EpropConfig
from bci.rsnn import RSNN, RSNNConfig
from calibration.adaptation import decode_online

T, C, K = 120, 6, 2


@pytest.fixture(scope="module")
def model_and_data() -> tuple[RSNN, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    neural = rng.poisson(3.0, size=(T, C)).astype(np.float32)
    kinematics = rng.normal(size=(T, K)).astype(np.float32)
    model = RSNN(RSNNConfig(n_in=C, n_hidden=16, n_out=K), seed=1)
    model.fit_normalisation(neural, kinematics)
    return model, neural, kinematics


def test_frozen_equals_sequence_decode(model_and_data) -> None:
    model, neural, _ = model_and_data
    decoded, status = decode_online(model, neural)
    expected, spikes = model.decode(neural)
    assert status is None
    assert 0.01 < spikes.mean() < 0.6
    np.testing.assert_allclose(decoded, expected, atol=1e-5)


def test_eprop_applies_one_update_per_window_and_changes_outputs(model_and_data) -> None:
    model, neural, kinematics = model_and_data
    frozen, _ = decode_online(model, neural)
    adapted, status = decode_online(
        model, neural, kinematics, EpropConfig(update_every=10, optimizer="sgd", lr=1e-2)
    )
    assert status.updates_applied == T // 10
    assert status.bins == status.bins_with_target == T
    np.testing.assert_allclose(adapted[:10], frozen[:10], atol=1e-5)  # before the first update
    assert np.abs(adapted[10:] - frozen[10:]).max() > 1e-3
    before = model.w_in.detach().clone()
    decode_online(model, neural, kinematics, EpropConfig())
    assert np.array_equal(model.w_in.detach().numpy(), before.numpy()), "model left untouched"


def test_nan_rows_mean_no_target(model_and_data) -> None:
    model, neural, kinematics = model_and_data
    targets = kinematics.copy()
    targets[::2] = np.nan
    _, status = decode_online(model, neural, targets, EpropConfig(update_every=10))
    assert status.bins_with_target == T // 2
    assert status.targets_rejected == 0  # no target is not a bad target


def test_callable_target_sees_the_previous_bins_output(model_and_data) -> None:
    model, neural, _ = model_and_data
    seen: list[tuple[int, np.ndarray]] = []

    def target(t: int, previous: np.ndarray) -> np.ndarray:
        seen.append((t, previous.copy()))
        return np.zeros(K)

    decoded, status = decode_online(model, neural, target, EpropConfig(update_every=5))
    assert [t for t, _ in seen] == list(range(T))
    np.testing.assert_array_equal(seen[0][1], np.zeros(K))
    for t in range(1, T):
        np.testing.assert_array_equal(seen[t][1], decoded[t - 1])
    assert status.bins_with_target == T
