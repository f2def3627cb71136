"""Tests for ``bci.baselines``: decoding quality against a shuffled control, online == offline,
causality, oracles (explicit ridge design, textbook Kalman recursion, parameter recovery),
determinism and input validation."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from factories import cosine_tuned_counts
from scipy.ndimage import gaussian_filter1d

from bci.baselines import CausalDecoder, KalmanFilter, WienerFilter
from bci.metrics import footprint_bytes, r2_score
from bci.rnn_baselines import GRUDecoder, LSTMDecoder

N_BINS, N_CH, N_KIN, N_TRAIN = 3000, 40, 2, 2400


def synthetic(
    n_bins: int = N_BINS, n_ch: int = N_CH, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth unit-variance velocity ``v`` and cosine-tuned counts (rate ``3 exp(0.5 v · d_i)``)."""
    rng = np.random.default_rng(seed)
    v = gaussian_filter1d(rng.standard_normal((n_bins, N_KIN)), sigma=6.0, axis=0)
    v /= v.std(axis=0)
    return cosine_tuned_counts(v, n_ch, rng, gain=3.0, depth=0.5), v


def small_gru(**kwargs: float) -> GRUDecoder:
    params = {"hidden": 32, "window": 60, "burn_in": 10, "batch_size": 16, "epochs": 25}
    params.update(kwargs)
    return GRUDecoder(**params)


FACTORIES: dict[str, Callable[[], CausalDecoder]] = {
    "wiener": lambda: WienerFilter(lags=5, ridge=1.0),
    "kalman": lambda: KalmanFilter(),
    "gru": small_gru,
}
# Minimum held-out R² per model; the shuffled control is asserted to stay below 0.1.
MIN_R2 = {"wiener": 0.9, "kalman": 0.85, "gru": 0.9}
STEP_ATOL = {"wiener": 1e-9, "kalman": 1e-9, "gru": 1e-5}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return synthetic()


@pytest.fixture(scope="module")
def fitted(data: tuple[np.ndarray, np.ndarray]) -> dict[str, CausalDecoder]:
    neural, v = data
    return {name: make().fit(neural[:N_TRAIN], v[:N_TRAIN]) for name, make in FACTORIES.items()}


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", list(FACTORIES))
def test_decodes_well_above_shuffled_control(
    name: str, data: tuple[np.ndarray, np.ndarray], fitted: dict[str, CausalDecoder]
) -> None:
    neural, v = data
    r2, _ = r2_score(v[N_TRAIN:], fitted[name].predict(neural[N_TRAIN:]))
    # Control: the same model trained with kinematics circularly shifted far beyond the
    # smoothing time scale, so neural data carry no information about the targets.
    shuffled = np.roll(v[:N_TRAIN], N_TRAIN // 2, axis=0)
    control = FACTORIES[name]().fit(neural[:N_TRAIN], shuffled)
    r2_control, _ = r2_score(v[N_TRAIN:], control.predict(neural[N_TRAIN:]))
    assert r2_control < 0.1
    assert r2 > MIN_R2[name]
    assert r2 > r2_control + 0.6


@pytest.mark.parametrize("name", list(FACTORIES))
def test_step_after_reset_equals_predict(
    name: str, data: tuple[np.ndarray, np.ndarray], fitted: dict[str, CausalDecoder]
) -> None:
    model = fitted[name]
    neural = data[0][N_TRAIN : N_TRAIN + 300]
    offline = model.predict(neural)
    model.step(neural[0])  # leave the held state somewhere else first
    model.reset()
    online = np.stack([model.step(x) for x in neural])
    assert online.shape == offline.shape == (300, N_KIN)
    np.testing.assert_allclose(online, offline, rtol=0, atol=STEP_ATOL[name])


@pytest.mark.parametrize("name", list(FACTORIES))
def test_step_state_is_pure(
    name: str, data: tuple[np.ndarray, np.ndarray], fitted: dict[str, CausalDecoder]
) -> None:
    model = fitted[name]
    neural = data[0][N_TRAIN : N_TRAIN + 5]
    state = model.initial_state()
    y1, s1 = model.step_state(neural[0], state)
    y2, s2 = model.step_state(neural[1], s1)
    y3, _ = model.step_state(neural[2], s2)
    # Replaying from the earlier states gives the same outputs: nothing was mutated.
    y1b, _ = model.step_state(neural[0], state)
    y2b, _ = model.step_state(neural[1], s1)
    np.testing.assert_array_equal(y1, y1b)
    np.testing.assert_array_equal(y2, y2b)
    expected = model.predict(neural[:3])
    np.testing.assert_allclose(np.stack([y1, y2, y3]), expected, atol=STEP_ATOL[name])


@pytest.mark.parametrize("name", list(FACTORIES))
def test_causal(
    name: str, data: tuple[np.ndarray, np.ndarray], fitted: dict[str, CausalDecoder]
) -> None:
    model = fitted[name]
    neural = data[0][N_TRAIN : N_TRAIN + 300].copy()
    changed = neural.copy()
    changed[150:] = np.random.default_rng(5).poisson(8.0, changed[150:].shape)
    a, b = model.predict(neural), model.predict(changed)
    np.testing.assert_allclose(a[:150], b[:150], rtol=0, atol=1e-6)
    assert np.abs(a[150:] - b[150:]).max() > 0.1  # the change does reach later outputs


@pytest.mark.parametrize("name", list(FACTORIES))
def test_constant_channel_is_ignored_without_nan(
    name: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    neural, v = data
    train = neural[:N_TRAIN].copy()
    train[:, 7] = 2.0
    model = FACTORIES[name]()
    if name == "gru":
        model = small_gru(epochs=2)
    model.fit(train, v[:N_TRAIN])
    assert not model.channels_kept[7]
    assert model.channels_kept.sum() == N_CH - 1
    test = neural[N_TRAIN:].copy()
    other = test.copy()
    other[:, 7] = 50.0
    pred = model.predict(test)
    assert np.isfinite(pred).all()
    np.testing.assert_allclose(model.predict(other), pred, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- Wiener


def test_wiener_matches_explicit_ridge_design() -> None:
    neural, v = synthetic(n_bins=200, n_ch=5, seed=3)
    lags, ridge = 3, 2.5
    model = WienerFilter(lags=lags, ridge=ridge).fit(neural[:150], v[:150])

    z = (neural - neural[:150].mean(0)) / neural[:150].std(0)

    def row(t: int) -> np.ndarray:  # [z_t, z_{t-1}, z_{t-2}, 1], zeros before bin 0
        return np.concatenate(
            [z[t - k] if t - k >= 0 else np.zeros(5) for k in range(lags)] + [[1.0]]
        )

    x = np.stack([row(t) for t in range(lags - 1, 150)])
    penalty = np.diag([ridge] * (lags * 5) + [0.0])
    coef = np.linalg.solve(x.T @ x + penalty, x.T @ v[lags - 1 : 150])
    np.testing.assert_allclose(model.bias_, coef[-1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.weights_.reshape(-1, N_KIN), coef[:-1], rtol=1e-9, atol=1e-12)

    z_test = z[150:]  # predictions start from a zero (training-mean) history
    expected = (
        np.stack(
            [
                np.concatenate(
                    [z_test[t - k] if t - k >= 0 else np.zeros(5) for k in range(lags)] + [[1.0]]
                )
                for t in range(50)
            ]
        )
        @ coef
    )
    np.testing.assert_allclose(model.predict(neural[150:]), expected, rtol=1e-9, atol=1e-12)


def test_wiener_ridge_candidates_chosen_on_chronological_holdout(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    neural, v = data
    model = WienerFilter(lags=5, ridge=[1e-2, 1e9]).fit(neural[:N_TRAIN], v[:N_TRAIN])
    # A ridge of 1e9 shrinks every weight to ~0 (R² ~ 0 on the hold-out), so 1e-2 must win.
    assert set(model.ridge_scores_) == {1e-2, 1e9}
    assert model.ridge_scores_[1e-2] > 0.8 > 0.05 > model.ridge_scores_[1e9]
    assert model.ridge_ == 1e-2
    # The final weights are a refit on all training bins with the chosen ridge.
    single = WienerFilter(lags=5, ridge=1e-2).fit(neural[:N_TRAIN], v[:N_TRAIN])
    np.testing.assert_allclose(model.weights_, single.weights_, rtol=1e-9, atol=1e-12)


def test_wiener_footprint_counts_all_arrays(fitted: dict[str, CausalDecoder]) -> None:
    # weights (5, 40, 2) + bias (2,) float64, mean and scale (40,) float64, kept (40,) bool
    expected = (5 * N_CH * N_KIN + N_KIN + 2 * N_CH) * 8 + N_CH
    assert footprint_bytes(fitted["wiener"].parameter_arrays()) == expected


def test_wiener_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="lags"):
        WienerFilter(lags=0)
    with pytest.raises(ValueError, match="ridge"):
        WienerFilter(ridge=-1.0)
    with pytest.raises(ValueError, match="needs at least 11"):
        WienerFilter(lags=10).fit(np.random.default_rng(0).poisson(3.0, (8, 4)), np.zeros((8, 2)))


# ----------------------------------------------------------------------------- Kalman


def _kalman_model_data(
    n_bins: int, seed: int = 7
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Data drawn exactly from ``x_t = A x_{t-1} + w``, ``y_t = H x_t + c + q``."""
    rng = np.random.default_rng(seed)
    a = np.array([[0.95, 0.10], [-0.10, 0.90]])
    w = np.array([[0.05, 0.01], [0.01, 0.04]])
    h = rng.standard_normal((12, 2))
    q_std = rng.uniform(0.5, 1.5, 12)
    x = np.zeros((n_bins, 2))
    noise = rng.multivariate_normal(np.zeros(2), w, n_bins)
    for t in range(1, n_bins):
        x[t] = a @ x[t - 1] + noise[t]
    y = x @ h.T + 5.0 + rng.standard_normal((n_bins, 12)) * q_std
    return y, x, {"A": a, "W": w, "H": h, "Q": np.diag(q_std**2)}


def test_kalman_recovers_its_generative_model() -> None:
    y, x, truth = _kalman_model_data(20000)
    kf = KalmanFilter(offset=True).fit(y, x)
    np.testing.assert_allclose(kf.A_[:2, :2], truth["A"], atol=0.02)
    np.testing.assert_allclose(kf.A_[2], [0.0, 0.0, 1.0])  # the constant state stays constant
    np.testing.assert_allclose(kf.W_[:2, :2], truth["W"], atol=0.005)
    assert np.all(kf.W_[2] == 0.0)
    scale = kf.parameter_arrays()["channel_scale"]
    np.testing.assert_allclose(kf.H_[:, :2] * scale[:, None], truth["H"], atol=0.05)
    q_counts = kf.Q_ * np.outer(scale, scale)
    np.testing.assert_allclose(np.diag(q_counts), np.diag(truth["Q"]), rtol=0.05)


def test_kalman_equals_textbook_recursion() -> None:
    y, x, _ = _kalman_model_data(600, seed=11)
    kf = KalmanFilter(offset=True).fit(y[:400], x[:400])
    params = kf.parameter_arrays()
    z = (y[400:] - params["channel_mean"]) / params["channel_scale"]
    a, w, h, q = kf.A_, kf.W_, kf.H_, kf.Q_
    state = kf.initial_state()  # posterior at t = -1: training mean and covariance of the state
    np.testing.assert_allclose(state.mean, [*x[:400].mean(0), 1.0], rtol=1e-12)
    np.testing.assert_allclose(state.cov[:2, :2], np.cov(x[:400].T, ddof=0), rtol=1e-12)
    np.testing.assert_array_equal(state.cov[2], 0.0)
    mean, cov = state.mean.copy(), state.cov.copy()
    expected = []
    for t in range(z.shape[0]):
        mean, cov = a @ mean, a @ cov @ a.T + w
        gain = cov @ h.T @ np.linalg.inv(h @ cov @ h.T + q)  # Wu et al. (2003), eq. 4-6
        mean = mean + gain @ (z[t] - h @ mean)
        cov = (np.eye(3) - gain @ h) @ cov
        expected.append(mean[:2])
    np.testing.assert_allclose(kf.predict(y[400:]), np.array(expected), rtol=1e-8, atol=1e-9)


# ----------------------------------------------------------------------------- GRU


def test_gru_same_seed_same_weights_and_global_rng_untouched(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    neural, v = data
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a = small_gru(epochs=3, seed=4).fit(neural[:1000], v[:1000])
    assert torch.equal(torch.rand(3), expected_draw)  # fit used its own torch RNG stream
    b = small_gru(epochs=3, seed=4).fit(neural[:1000], v[:1000])
    c = small_gru(epochs=3, seed=5).fit(neural[:1000], v[:1000])
    for key, value in a.network_.state_dict().items():
        assert torch.equal(value, b.network_.state_dict()[key]), key
    assert not torch.equal(a.network_.readout.weight, c.network_.readout.weight)


def test_gru_early_stopping_keeps_best_validation_weights(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    neural, v = data
    val = (neural[N_TRAIN:], v[N_TRAIN:])
    model = small_gru(epochs=12, patience=3, lr=2e-2).fit(neural[:N_TRAIN], v[:N_TRAIN], val=val)
    scores = [h["val_r2"] for h in model.history_]
    final, _ = r2_score(val[1], model.predict(val[0]))
    assert final == pytest.approx(max(scores), abs=1e-9)
    best = int(np.argmax(scores))
    assert len(scores) == 12 or len(scores) == best + 1 + 3  # stopped after `patience` epochs


def test_gru_rejects_validation_with_other_channel_count(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    neural, v = data
    with pytest.raises(ValueError, match=re.escape("validation data 'neural' has shape (600, 39)")):
        small_gru().fit(neural[:N_TRAIN], v[:N_TRAIN], val=(neural[N_TRAIN:, 1:], v[N_TRAIN:]))


def test_lstm_decodes_steps_as_it_predicts_and_reports_each_epoch(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    neural, v = data
    records: list[dict[str, float]] = []
    model = LSTMDecoder(hidden=16, window=60, burn_in=10, batch_size=16, epochs=6)
    model.fit(
        neural[:N_TRAIN], v[:N_TRAIN], val=(neural[N_TRAIN:], v[N_TRAIN:]), callback=records.append
    )
    assert [r["epoch"] for r in records] == [float(e) for e in range(len(model.history_))]
    assert r2_score(v[N_TRAIN:], model.predict(neural[N_TRAIN:]))[0] > 0.4  # 6 epochs
    assert isinstance(model.initial_state(), tuple)  # (h, c)
    offline = model.predict(neural[N_TRAIN : N_TRAIN + 50])
    model.reset()
    online = np.stack([model.step(x) for x in neural[N_TRAIN : N_TRAIN + 50]])
    np.testing.assert_allclose(online, offline, rtol=0, atol=1e-5)
    assert "rnn.weight_hh_l0" in model.parameter_arrays()


def test_recurrent_fit_callback_can_stop_training(data: tuple[np.ndarray, np.ndarray]) -> None:
    neural, v = data

    def stop(record: dict[str, float]) -> None:
        raise KeyboardInterrupt

    model = small_gru(epochs=5)
    with pytest.raises(KeyboardInterrupt):
        model.fit(neural[:600], v[:600], callback=stop)
    assert not model.is_fitted


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", list(FACTORIES))
def test_predict_and_step_before_fit_raise(name: str) -> None:
    model = FACTORIES[name]()
    with pytest.raises(RuntimeError, match=r"not fitted; call fit\(neural, kinematics\) first"):
        model.predict(np.zeros((10, N_CH)))
    with pytest.raises(RuntimeError, match="call fit"):
        model.step(np.zeros(N_CH))
    with pytest.raises(RuntimeError, match="call fit"):
        model.reset()


@pytest.mark.parametrize("name", list(FACTORIES))
def test_wrong_channel_count_names_expected_and_received(
    name: str, fitted: dict[str, CausalDecoder]
) -> None:
    model = fitted[name]
    msg = "neural input has shape (10, 39) but the decoder expects (T, 40): axis 1 (C) must be 40"
    with pytest.raises(ValueError, match=re.escape(msg)):
        model.predict(np.zeros((10, N_CH - 1)))
    with pytest.raises(
        ValueError, match=re.escape("has shape (41,) but the decoder expects (40,)")
    ):
        model.step(np.zeros(N_CH + 1))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_nan_in_training_data_names_bin_and_channel(
    name: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    neural, v = data
    bad = neural[:500].copy()
    bad[17, 3] = np.nan
    msg = "training data 'neural' has a non-finite value (nan) at bin 17, channel 3"
    with pytest.raises(ValueError, match=re.escape(msg)):
        FACTORIES[name]().fit(bad, v[:500])
    bad_kin = v[:500].copy()
    bad_kin[42, 1] = np.inf
    with pytest.raises(
        ValueError,
        match=re.escape("'kinematics' has a non-finite value (inf) at bin 42, channel 1"),
    ):
        FACTORIES[name]().fit(neural[:500], bad_kin)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_mismatched_lengths_and_nan_input_rejected(
    name: str, data: tuple[np.ndarray, np.ndarray], fitted: dict[str, CausalDecoder]
) -> None:
    neural, v = data
    with pytest.raises(ValueError, match=re.escape("'kinematics' has shape (499, 2)")):
        FACTORIES[name]().fit(neural[:500], v[:499])
    x = neural[:20].copy()
    x[5, 0] = np.nan
    with pytest.raises(ValueError, match="neural input has a non-finite value \\(nan\\) at bin 5"):
        fitted[name].predict(x)
