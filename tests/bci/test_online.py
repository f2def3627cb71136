"""``bci.online.OnlineRSNN`` (NumPy, one bin at batch 1) against the sequence face
``RSNN.decode`` / ``RSNN.run`` over the same weights: a loop of the step equals the sequence."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from factories import cosine_tuned_counts, smooth_velocity

from bci.online import OnlineRSNN, OnlineState
from bci.rsnn import RSNN, RSNNConfig

N_IN, N_HIDDEN, N_OUT, N_BINS = 12, 32, 2, 200


def _recording(n_bins: int = N_BINS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Poisson counts cosine-tuned to a smooth 2-D velocity; kinematics in 'cm/s' (order 5)."""
    velocity = smooth_velocity(n_bins)
    counts = cosine_tuned_counts(velocity, N_IN, np.random.default_rng(seed), gain=0.6)
    return counts.astype(np.float32), (5.0 * velocity + [2.0, -1.0]).astype(np.float32)


def _model(reset: str = "subtract", alif_fraction: float = 0.5, seed: int = 1) -> RSNN:
    cfg = RSNNConfig(
        n_in=N_IN, n_hidden=N_HIDDEN, n_out=N_OUT, alif_fraction=alif_fraction, reset=reset
    )
    model = RSNN(cfg, seed=seed)
    model.fit_normalisation(*_recording(seed=seed + 10))
    with torch.no_grad():
        model.w_out.mul_(2.0)
        model.b_out.copy_(torch.tensor([0.3, -0.2]))
    return model


def _run_online(online: OnlineRSNN, neural: np.ndarray, state: OnlineState | None = None):
    state = online.initial_state() if state is None else state
    outputs, spikes = [], []
    for x in neural:
        outputs.append(online.step(x, state).copy())
        spikes.append(state.z.copy())
    return np.array(outputs), np.array(spikes), state


@pytest.mark.parametrize("alif_fraction", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_step_loop_equals_sequence_decode(reset: str, alif_fraction: float) -> None:
    model = _model(reset, alif_fraction)
    neural, _ = _recording(seed=2)
    expected, expected_spikes = model.decode(neural)
    rate = expected_spikes.mean()
    assert 0.01 < rate < 0.5, f"spike rate {rate:.3f}: the comparison would be meaningless"
    assert 1.0 < np.abs(expected).max() < 20.0

    online = OnlineRSNN(model)
    outputs, spikes, state = _run_online(online, neural)
    assert outputs.dtype == np.float32
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)
    if alif_fraction > 0:  # adaptation is exercised, not only stored
        assert np.abs(state.a).max() > 0.01


@pytest.mark.parametrize("alif_fraction", [0.5, 1.0])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_online_state_equals_sequence_final_state(reset: str, alif_fraction: float) -> None:
    model = _model(reset, alif_fraction)
    neural, _ = _recording(seed=3)
    with torch.no_grad():
        final = model.run(torch.as_tensor(neural)[:, None, :]).state
    _, _, state = _run_online(OnlineRSNN(model), neural)
    np.testing.assert_allclose(state.v, final.v[0].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(state.z, final.z[0].numpy())
    np.testing.assert_allclose(state.a, final.a[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(state.y, final.y[0].numpy(), rtol=0, atol=1e-5)
    assert state.z.any() and np.abs(state.a).max() > 0


@pytest.mark.parametrize("alif_fraction", [0.0, 0.5])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_float64_online_matches_float64_model(reset: str, alif_fraction: float) -> None:
    model = _model(reset, alif_fraction).double()
    neural, kinematics = _recording(seed=4)
    model.fit_normalisation(neural, kinematics)
    # non-integer input (smoothed rates): a float32 detour anywhere would show at ~1e-7
    rates = neural.astype(np.float64) + np.random.default_rng(5).uniform(0, 1, neural.shape) / 3
    expected, expected_spikes = model.decode(rates)
    assert 0.01 < expected_spikes.mean() < 0.5

    online = OnlineRSNN(model, dtype=np.float64)
    assert online.weights.dtype == np.float64
    outputs, spikes, state = _run_online(online, rates)
    assert outputs.dtype == np.float64
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-9)
    with torch.no_grad():
        final = model.run(torch.as_tensor(rates)[:, None, :]).state
    for got, want in zip((state.v, state.z, state.y), (final.v, final.z, final.y), strict=True):
        np.testing.assert_allclose(got, want[0].numpy(), rtol=0, atol=1e-9)
    # With every beta zero the fused sequence layer skips the (unused) adaptation variable and
    # leaves a = 0, while the online face tracks it for all neurons: compare where it matters.
    adaptive = model.beta.numpy() != 0
    np.testing.assert_allclose(state.a[adaptive], final.a[0].numpy()[adaptive], rtol=0, atol=1e-9)


@pytest.mark.parametrize("alif_fraction", [0.0, 0.5])
def test_online_continues_from_a_sequence_state(alif_fraction: float) -> None:
    """State is interchangeable: warm up with ``run``, hand the state over, continue online."""
    model = _model(alif_fraction=alif_fraction)
    neural, _ = _recording(seed=13)
    with torch.no_grad():
        warm = model.run(torch.as_tensor(neural[:80])[:, None, :]).state
    online = OnlineRSNN(model)
    state = OnlineState(*(t[0].numpy().copy() for t in warm))
    outputs, _, _ = _run_online(online, neural[80:], state)
    np.testing.assert_allclose(outputs, model.decode(neural)[0][80:], rtol=0, atol=1e-5)


def test_integer_counts_are_accepted() -> None:
    model = _model()
    neural, _ = _recording(seed=6)
    online = OnlineRSNN(model)
    from_float, _, _ = _run_online(online, neural)
    from_int, _, _ = _run_online(online, neural.astype(np.int64))
    np.testing.assert_array_equal(from_int, from_float)


def test_snapshot_is_frozen_against_later_training() -> None:
    """The online face copies the weights: in-place updates of the model (optimiser steps,
    ``load_state_dict``) must not leak into a decoder that is already running."""
    model = _model()
    neural, _ = _recording(seed=7)
    expected, _ = model.decode(neural)
    online = OnlineRSNN(model)
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.mul_(1.5)
    outputs, _, _ = _run_online(online, neural)
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)


def test_streams_with_separate_states_do_not_interfere() -> None:
    """No hidden state on the decoder: two interleaved streams each equal their own decode."""
    model = _model()
    first, _ = _recording(seed=8)
    second, _ = _recording(seed=9)
    online = OnlineRSNN(model)
    s1, s2 = online.initial_state(), online.initial_state()
    out1, out2 = [], []
    for x1, x2 in zip(first, second, strict=True):
        out1.append(online.step(x1, s1).copy())
        out2.append(online.step(x2, s2).copy())
    np.testing.assert_allclose(out1, model.decode(first)[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out2, model.decode(second)[0], rtol=0, atol=1e-5)


def test_fresh_state_restarts_from_rest() -> None:
    model = _model()
    neural, _ = _recording(seed=10)
    online = OnlineRSNN(model)
    _run_online(online, neural[:50])
    outputs, _, _ = _run_online(online, neural[50:], online.initial_state())
    np.testing.assert_allclose(outputs, model.decode(neural[50:])[0], rtol=0, atol=1e-5)


def test_initial_state_is_rest() -> None:
    online = OnlineRSNN(_model(), dtype=np.float64)
    state = online.initial_state()
    for array, size in zip((state.v, state.z, state.a, state.y), (32, 32, 32, 2), strict=True):
        assert array.shape == (size,) and array.dtype == np.float64
        assert not array.any()
    assert not np.shares_memory(state.v, state.z)


def test_state_copy_is_independent() -> None:
    online = OnlineRSNN(_model())
    neural, _ = _recording(seed=11)
    state = online.initial_state()
    for x in neural[:20]:
        online.step(x, state)
    saved = state.copy()
    snapshot = [a.copy() for a in (state.v, state.z, state.a, state.y)]
    online.step(neural[20], state)
    for kept, original in zip((saved.v, saved.z, saved.a, saved.y), snapshot, strict=True):
        np.testing.assert_array_equal(kept, original)
    assert not np.array_equal(state.v, saved.v)


def test_step_returns_a_buffer_reused_by_the_next_call() -> None:
    """Documented behaviour: the returned array is overwritten by the next step, copy to keep."""
    online = OnlineRSNN(_model())
    neural, _ = _recording(seed=12)
    state = online.initial_state()
    first = online.step(neural[0], state)
    kept = first.copy()
    second = online.step(neural[1], state)
    assert second is first
    assert not np.array_equal(kept, second)
    np.testing.assert_array_equal(first, second)  # the earlier result was overwritten


def test_wrong_channel_count_names_expected_and_received() -> None:
    online = OnlineRSNN(_model())
    state = online.initial_state()
    message = "neural bin has shape (11,) but expected (12,): axis 0 must be 12, got 11"
    with pytest.raises(ValueError, match=re.escape(message)):
        online.step(np.zeros(11, dtype=np.float32), state)
    with pytest.raises(ValueError, match=re.escape("has shape (1, 12) but expected (12,)")):
        online.step(np.zeros((1, 12), dtype=np.float32), state)
    # a rejected bin leaves the state untouched
    assert not state.v.any() and not state.y.any()
