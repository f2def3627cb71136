"""``bci.eprop.EpropLearner``: decode then update, ``-lr * gradient`` per window, freezing,
learning rates, and learning sanity (a rotated mapping is learnt back)."""

import math

import numpy as np
import pytest
import torch
from eprop_cases import (
    N_HIDDEN,
    N_IN,
    float64_model,
    learnt_weights,
    one_window,
    recording,
    run_bins,
    sgd_learner,
)

from bci.eprop import GROUPS, EpropConfig, EpropLearner
from bci.online import OnlineRSNN
from bci.rsnn import RSNN, RSNNConfig


# -- learner behaviour ---
def test_decode_then_deferred_update_equals_step() -> None:
    """The real-time split (decode, publish, then update when due) is ``step`` exactly; a
    caller that skips ``update`` gets the window closed at its next ``decode``."""
    neural, kinematics = recording(56)
    stepped, s_state = sgd_learner(float64_model(), optimizer="adam", lr=1e-3)
    split, p_state = sgd_learner(float64_model(), optimizer="adam", lr=1e-3)
    lazy, l_state = sgd_learner(float64_model(), optimizer="adam", lr=1e-3)
    want = run_bins(stepped, s_state, neural, kinematics)
    got, got_lazy = [], []
    for x, y in zip(neural, kinematics, strict=True):
        got.append(split.step(x, y, p_state, update=False).copy())
        got_lazy.append(lazy.step(x, y, l_state, update=False).copy())
        if split.update_due:
            split.update()
    np.testing.assert_array_equal(np.array(got), want)
    np.testing.assert_array_equal(np.array(got_lazy), want)
    assert split.status.updates_applied == stepped.status.updates_applied == 56 // 8
    assert lazy.status.updates_applied == 56 // 8 - 1 and lazy.update_due  # the last window waits
    for name, value in learnt_weights(stepped).items():
        np.testing.assert_array_equal(learnt_weights(split)[name], value, err_msg=name)


def test_targets_given_late_within_the_window_learn_as_given_on_time() -> None:
    """A target stream that lags the neural one: each target set after its bin was decoded
    (before the window closes) gives the same weights as targets given with the bins."""
    neural, kinematics = recording(48)
    on_time, o_state = sgd_learner(float64_model(), optimizer="adam", lr=1e-3)
    late, l_state = sgd_learner(float64_model(), optimizer="adam", lr=1e-3)
    want = run_bins(on_time, o_state, neural, kinematics)
    got = []
    for t, x in enumerate(neural):
        index = late.bins_seen
        got.append(late.step(x, None, l_state, update=False).copy())
        assert late.set_target(index, kinematics[t])
        assert not late.set_target(index, kinematics[t])  # already has one
        if late.update_due:
            assert late.set_target(index - 1, kinematics[t]) is False  # had one too
            late.update()
            assert not late.set_target(index, kinematics[t])  # its window is closed
    np.testing.assert_array_equal(np.array(got), want)
    assert late.status.bins_with_target == on_time.status.bins_with_target == 48
    for name, value in learnt_weights(on_time).items():
        np.testing.assert_array_equal(learnt_weights(late)[name], value, err_msg=name)
    assert not late.set_target(late.bins_seen + 3, kinematics[0])  # never decoded
    index = late.bins_seen
    late.step(neural[0], None, l_state, update=False)
    assert not late.set_target(index, np.array([np.nan, 0.0]))
    assert late.status.targets_rejected == 1
    with pytest.raises(ValueError, match="expected \\(2,\\)"):
        late.set_target(index, np.zeros(3))


def test_sgd_applies_minus_lr_times_the_window_gradient_once_per_window() -> None:
    model = float64_model()
    neural, kinematics = recording(30, seed=6)
    window, lr = 8, 0.05
    learner, state = sgd_learner(model, lr=lr, update_every=window)
    fresh, fresh_state = sgd_learner(model, lr=lr, update_every=window)
    expected = fresh.gradient(neural[:window], kinematics[:window], fresh_state)
    before = learnt_weights(learner)

    plain = OnlineRSNN(model, dtype=np.float64)
    plain_state = plain.initial_state()
    for t in range(window - 1):
        out = learner.step(neural[t], kinematics[t], state)
        np.testing.assert_array_equal(out, plain.step(neural[t], plain_state))
        assert learner.status.updates_applied == 0
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, before[key])
    learner.step(neural[window - 1], kinematics[window - 1], state)
    assert learner.status.updates_applied == 1
    after = learnt_weights(learner)
    expected["recurrent"][np.diag_indices(N_HIDDEN)] = 0.0  # no self-connections
    for key in ("input", "recurrent", "w_out", "b_out"):
        assert np.linalg.norm(expected[key]) > 1e-3
        np.testing.assert_allclose(
            after[key] - before[key], -lr * expected[key], rtol=1e-9, atol=1e-14
        )
    assert not np.diag(after["recurrent"]).any()
    status = learner.status
    assert status.bins == window and status.bins_with_target == window
    assert status.updates_clipped == 0 and status.updates_rejected == 0
    norm = math.sqrt(sum(float(np.sum((after[k] - before[k]) ** 2)) for k in after))
    assert status.last_update_norm == pytest.approx(norm, rel=1e-9)

    for t in range(window, 2 * window - 1):  # next window not complete: no second update
        learner.step(neural[t], kinematics[t], state)
    assert learner.status.updates_applied == 1
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, after[key])
    learner.step(neural[2 * window - 1], kinematics[2 * window - 1], state)
    assert learner.status.updates_applied == 2
    assert not np.diag(learnt_weights(learner)["recurrent"]).any()


def test_adam_first_step_is_lr_times_sign() -> None:
    """Bias-corrected Adam's first step is ``-lr g / (|g| + eps)``."""
    model = float64_model()
    neural, kinematics = recording(8, seed=7)
    lr, eps = 1e-3, 1e-8
    _, g, before, after = one_window(
        model, neural, kinematics, optimizer="adam", lr=lr, adam_eps=eps
    )
    for key in g:
        expected = -lr * g[key] / (np.abs(g[key]) + eps)
        np.testing.assert_allclose(after[key] - before[key], expected, rtol=1e-9, atol=1e-15)


def test_freeze_input_keeps_input_weights_while_the_rest_learns() -> None:
    model = float64_model()
    neural, kinematics = recording(40, seed=8)
    learner, state = sgd_learner(model)
    learner.freeze("input")
    assert learner.status.frozen == ("input",)
    before = learnt_weights(learner)
    run_bins(learner, state, neural, kinematics)
    after = learnt_weights(learner)
    assert learner.status.updates_applied == 5
    np.testing.assert_array_equal(after["input"], before["input"])
    for key in ("recurrent", "w_out", "b_out"):
        assert not np.array_equal(after[key], before[key]), key
    learner.unfreeze("input")
    assert learner.status.frozen == ()
    run_bins(learner, state, neural[:8], kinematics[:8])
    assert not np.array_equal(learnt_weights(learner)["input"], before["input"])


def test_frozen_group_is_not_touched_by_the_weight_bound() -> None:
    """Frozen means unchanged: the bound applies to what is learnt, not to frozen weights
    that happen to lie outside it."""
    model = float64_model()
    with torch.no_grad():
        model.w_in.mul_(4.0)
    neural, kinematics = recording(16, seed=9)
    learner, state = sgd_learner(model, weight_bound=1.0)
    before = learnt_weights(learner)
    assert np.abs(before["input"]).max() > 1.0
    learner.freeze("input")
    run_bins(learner, state, neural, kinematics)
    np.testing.assert_array_equal(learnt_weights(learner)["input"], before["input"])


def test_freezing_everything_changes_nothing_and_decodes_as_the_decoder() -> None:
    model = float64_model()
    neural, kinematics = recording(40, seed=10)
    learner, state = sgd_learner(model, lr=1.0)
    learner.freeze(*GROUPS)
    assert learner.status.frozen == tuple(sorted(GROUPS))
    before = learnt_weights(learner)
    outputs = run_bins(learner, state, neural, kinematics)
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, before[key])
    assert learner.status.updates_applied == 0
    plain = OnlineRSNN(model, dtype=np.float64)
    plain_state = plain.initial_state()
    expected = np.array([plain.step(x, plain_state).copy() for x in neural])
    np.testing.assert_array_equal(outputs, expected)


def test_config_learn_freezes_the_rest() -> None:
    learner, _ = sgd_learner(float64_model(), learn=("readout",))
    assert learner.status.frozen == ("input", "recurrent")


# -- 5. learning sanity -----------------------------------------------------------------------
def test_eprop_recovers_from_a_rotated_mapping() -> None:
    """Train briefly with BPTT, then rotate the kinematics by 60 degrees: online e-prop with
    the true targets ends with a much lower error than the frozen decoder."""
    from bci.training import TrainConfig, train_rsnn
    from streams.synthetic import SyntheticConfig, simulate_session

    session = simulate_session(SyntheticConfig(duration_s=300.0, n_channels=20, seed=0))
    neural = session.neural.astype(np.float64)
    kinematics = session.kinematics.astype(np.float64)
    model = RSNN(RSNNConfig(n_in=20, n_hidden=48, n_out=2), seed=0)
    result = train_rsnn(
        model,
        (neural[:2400], kinematics[:2400]),
        (neural[2400:3000], kinematics[2400:3000]),
        TrainConfig(max_steps=40, batch_size=16, window=60, burn_in=10, eval_every=20),
    )
    assert result.best_val_r2 > 0.3, "the decoder should decode something before the change"

    angle = np.deg2rad(60.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    test_neural, test_kinematics = neural[3000:], kinematics[3000:] @ rotation.T
    scale = model.output_scale.numpy().astype(np.float64)

    def error(outputs: np.ndarray) -> np.ndarray:
        return np.sum(((outputs - test_kinematics) / scale) ** 2, axis=1)

    frozen = OnlineRSNN(model, dtype=np.float64)
    frozen_state = frozen.initial_state()
    frozen_err = error(np.array([frozen.step(x, frozen_state).copy() for x in test_neural]))
    learner, state = sgd_learner(model, optimizer="adam", lr=3e-3, update_every=10,
                              max_update_norm=1.0, weight_bound=10.0)  # fmt: skip
    learnt_err = error(run_bins(learner, state, test_neural, test_kinematics))
    assert learner.status.updates_applied == len(test_neural) // 10
    last = slice(-len(test_neural) // 3, None)
    print(
        f"\nrotated mapping, MSE on the last third: frozen {frozen_err[last].mean():.3f}, "
        f"e-prop {learnt_err[last].mean():.3f}"
    )
    assert learnt_err[last].mean() < 0.6 * frozen_err[last].mean()
    assert learnt_err[last].mean() < 0.8 * learnt_err[: len(test_neural) // 3].mean()


def test_feed_forward_model_stays_feed_forward() -> None:
    """A model built without recurrence gets no recurrent weights from online learning."""
    model = float64_model(recurrent=False)
    decoder = OnlineRSNN(model, dtype=np.float64)
    learner = EpropLearner(decoder, EpropConfig(update_every=5, optimizer="sgd", lr=1e-2))
    neural, kinematics = recording(50, seed=3)
    state = decoder.initial_state()
    input_before = decoder.weights[:, :N_IN].copy()
    for x, y in zip(neural, kinematics, strict=True):
        learner.step(x, y, state)
    assert learner.status.updates_applied == 10
    assert "recurrent" in learner.status.frozen
    assert not np.any(decoder.weights[:, N_IN:])
    assert not np.array_equal(decoder.weights[:, :N_IN], input_before)
