"""``bci.eprop.EpropLearner`` guards: refused groups, rates, configs and shapes; non-finite
inputs, targets and gradients; clipping, weight bounds, reset, pause and fixed memory."""

import math
import re
import tracemalloc
from dataclasses import fields, is_dataclass

import numpy as np
import pytest
from eprop_cases import (
    N_IN,
    cosine_similarity,
    eprop_gradient,
    float64_model,
    learnt_weights,
    one_window,
    recording,
    rel_error,
    run_bins,
    sgd_learner,
)

import bci.eprop as eprop
from bci.eprop import EpropConfig
from bci.online import OnlineRSNN


@pytest.mark.parametrize("call", ["freeze", "unfreeze", "config"])
def test_unknown_group_lists_valid_groups(call: str) -> None:
    with pytest.raises(
        ValueError, match=r"unknown weight group.*'hidden'.*input, recurrent, readout"
    ):
        if call == "config":
            EpropConfig(learn=("input", "hidden"))
        else:
            learner, _ = sgd_learner(float64_model())
            getattr(learner, call)("input", "hidden")


@pytest.mark.parametrize(
    "lr", [0, 0.0, -1e-3, float("nan"), float("inf"), -float("inf"), "0.1", None]
)
def test_bad_learning_rate_is_refused(lr: object) -> None:
    learner, _ = sgd_learner(float64_model(), lr=0.01)
    with pytest.raises(ValueError, match=r"learning rate must be a positive finite number"):
        learner.set_learning_rate(lr)  # type: ignore[arg-type]
    assert learner.status.lr == 0.01
    with pytest.raises(ValueError, match=r"learning rate must be a positive finite number"):
        EpropConfig(lr=lr)  # type: ignore[arg-type]


@pytest.mark.parametrize("lr", [0.5, np.float64(0.5), np.float32(0.5), 1])
def test_set_learning_rate_is_used_by_the_next_update(lr: object) -> None:
    model = float64_model()
    neural, kinematics = recording(8, seed=11)
    learner, state = sgd_learner(model, lr=1e-3)
    learner.set_learning_rate(lr)  # type: ignore[arg-type]
    assert learner.status.lr == float(lr)  # type: ignore[arg-type]
    fresh, fresh_state = sgd_learner(model)
    g = fresh.gradient(neural, kinematics, fresh_state)
    before = learnt_weights(learner)
    run_bins(learner, state, neural, kinematics)
    np.testing.assert_allclose(
        learnt_weights(learner)["w_out"] - before["w_out"],
        -float(lr) * g["w_out"],
        rtol=1e-9,  # type: ignore[arg-type]
    )


def test_numpy_learning_rate_in_config_is_published_as_float() -> None:
    learner, _ = sgd_learner(float64_model(), lr=np.float32(0.25))
    assert type(learner.status.lr) is float and learner.status.lr == 0.25


@pytest.mark.parametrize(
    "bad",
    [{"update_every": 0}, {"update_every": 2.5}, {"optimizer": "rmsprop"},
     {"feedback": "transpose"}, {"max_update_norm": 0.0}, {"weight_bound": float("nan")},
     {"rate_tau_s": -1.0}],
)  # fmt: skip
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        EpropConfig(**bad)


@pytest.mark.parametrize("shape", [(3,), (1, 2), ()])
def test_target_with_wrong_dimension_names_expected_and_received(shape: tuple) -> None:
    learner, state = sgd_learner(float64_model())
    x = recording(1)[0][0]
    with pytest.raises(
        ValueError, match=rf"target has shape {re.escape(str(shape))}.*expected \(2,\)"
    ):
        learner.step(x, np.zeros(shape), state)
    assert learner.status.bins == 0


def test_input_with_wrong_channel_count_is_refused() -> None:
    learner, state = sgd_learner(float64_model())
    with pytest.raises(ValueError, match=rf"neural bin has shape \({N_IN + 1},\).*\({N_IN},\)"):
        learner.step(np.zeros(N_IN + 1), None, state)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_target_skips_that_bin(bad: float) -> None:
    model = float64_model()
    neural, kinematics = recording(30, seed=12)
    with_bad = [y.copy() for y in kinematics]
    with_bad[5][1] = bad
    with_none: list = list(kinematics)
    with_none[5] = None

    learner, state = sgd_learner(model)
    got = learner.gradient(neural, with_bad, state)
    status = learner.status
    assert status.targets_rejected == 1
    assert status.bins == 30 and status.bins_with_target == 29
    assert not status.paused
    fresh, fresh_state = sgd_learner(model)
    expected = fresh.gradient(neural, with_none, fresh_state)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])

    learner, state = sgd_learner(model)  # decoding continues and learning goes on
    outputs = run_bins(learner, state, neural, with_bad)
    assert np.all(np.isfinite(outputs))
    assert learner.status.updates_applied == 3 and not learner.status.paused


def test_non_finite_input_pauses_rolls_back_and_decodes_with_the_channel_mean() -> None:
    model = float64_model()
    neural, kinematics = recording(60, seed=13)
    learner, state = sgd_learner(model, update_every=5, snapshot_every=2, lr=0.05)
    run_bins(learner, state, neural[:10], kinematics[:10])  # 2 updates -> snapshot
    snapshot = learnt_weights(learner)
    run_bins(learner, state, neural[10:17], kinematics[10:17])  # a third update
    assert learner.status.updates_applied == 3
    assert not np.array_equal(learnt_weights(learner)["w_out"], snapshot["w_out"])

    x = neural[17].copy()
    x[3] = np.nan
    before_state = state.copy()
    out = learner.step(x, kinematics[17], state).copy()
    status = learner.status
    assert status.inputs_rejected == 1
    assert status.paused and "non-finite input" in status.pause_reason
    assert status.updates_rejected == 1 and status.rollbacks == 1
    after = learnt_weights(learner)
    for key, value in snapshot.items():
        np.testing.assert_array_equal(after[key], value)
    # the bin is decoded with the rolled-back weights and channel 3 at its training mean
    reference = OnlineRSNN(model, dtype=np.float64)
    reference.weights[:, :N_IN], reference.weights[:, N_IN:] = after["input"], after["recurrent"]
    reference.w_out[...], reference.readout_constants[1] = after["w_out"], after["b_out"]
    substituted = neural[17].copy()
    substituted[3] = model.input_mean[3].item()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, reference.step(substituted, before_state), rtol=1e-12)

    # paused: decoding continues, nothing is learnt
    outputs = run_bins(learner, state, neural[18:40], kinematics[18:40])
    assert np.all(np.isfinite(outputs))
    assert learner.status.updates_applied == 3
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, snapshot[key])
    x = neural[40].copy()
    x[0] = np.inf
    learner.step(x, kinematics[40], state)
    assert learner.status.inputs_rejected == 2 and learner.status.updates_rejected == 1

    learner.resume()
    assert not learner.status.paused and learner.status.pause_reason == ""
    run_bins(learner, state, neural[41:46], kinematics[41:46])
    assert learner.status.updates_applied == 4


def test_non_finite_input_before_any_snapshot_restores_the_initial_weights() -> None:
    model = float64_model()
    neural, kinematics = recording(20, seed=14)
    learner, state = sgd_learner(model, update_every=4)
    initial = learnt_weights(learner)
    run_bins(learner, state, neural[:10], kinematics[:10])
    assert learner.status.updates_applied == 2
    x = neural[10].copy()
    x[:] = np.nan
    assert np.all(np.isfinite(learner.step(x, kinematics[10], state)))
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, initial[key])


def test_non_finite_gradient_is_rejected_with_rollback(monkeypatch: pytest.MonkeyPatch) -> None:
    model = float64_model()
    neural, kinematics = recording(24, seed=15)
    learner, state = sgd_learner(model, update_every=8)
    initial = learnt_weights(learner)
    run_bins(learner, state, neural[:8], kinematics[:8])
    assert learner.status.updates_applied == 1
    original = eprop.window_update

    def poisoned(traces, p, at, c, signal, rho, beta, kappa, grad):
        original(traces, p, at, c, signal, rho, beta, kappa, grad)
        grad[0, 0] = np.nan

    monkeypatch.setattr(eprop, "window_update", poisoned)
    outputs = run_bins(learner, state, neural[8:16], kinematics[8:16])
    status = learner.status
    assert status.updates_rejected == 1 and status.rollbacks == 1
    assert status.updates_applied == 1
    assert status.paused and "non-finite" in status.pause_reason
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, initial[key])
    assert np.all(np.isfinite(outputs))
    monkeypatch.setattr(eprop, "window_update", original)
    outputs = run_bins(learner, state, neural[16:], kinematics[16:])  # decoding continues, paused
    assert np.all(np.isfinite(outputs)) and learner.status.updates_applied == 1


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_absurd_target_is_rejected_not_raised(optimizer: str) -> None:
    """A finite but absurd target (1e300) makes the update overflow: it must be rejected and
    counted like any non-finite update, not surface as an exception in the decode loop."""
    model = float64_model()
    neural, kinematics = recording(16, seed=16)
    learner, state = sgd_learner(model, optimizer=optimizer, lr=1e300, update_every=8)
    initial = learnt_weights(learner)
    outputs = run_bins(learner, state, neural, kinematics * 1e300)
    status = learner.status
    assert status.updates_rejected == 1 and status.updates_applied == 0 and status.paused
    assert "non-finite" in status.pause_reason
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, initial[key])
    assert np.all(np.isfinite(outputs))


def test_update_norm_is_clipped_to_max_update_norm() -> None:
    model = float64_model()
    neural, kinematics = recording(8, seed=17)
    learner, g, before, after = one_window(model, neural, kinematics, lr=1e3, max_update_norm=0.25)
    delta = {k: after[k] - before[k] for k in after}
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in delta.values()))
    assert norm == pytest.approx(0.25, rel=1e-9)
    status = learner.status
    assert status.updates_clipped == 1 and status.updates_applied == 1
    assert status.last_update_norm == pytest.approx(0.25, rel=1e-12)
    flat_delta = np.concatenate([d.ravel() for d in delta.values()])
    flat_grad = np.concatenate([g[k].ravel() for k in delta])
    assert cosine_similarity(flat_delta, -flat_grad) == pytest.approx(1.0, abs=1e-12)


def test_weight_bound_clips_learnt_weights() -> None:
    model = float64_model()
    neural, kinematics = recording(8, seed=18)
    lr, bound = 0.2, 0.3
    _, g, before, after = one_window(model, neural, kinematics, lr=lr, weight_bound=bound)
    for key in after:
        np.testing.assert_allclose(
            after[key], np.clip(before[key] - lr * g[key], -bound, bound), rtol=1e-12, atol=1e-15
        )
        assert np.abs(after[key]).max() <= bound
    assert np.sum(np.abs(after["input"]) == bound) > 10  # the bound was active


def test_reset_restores_initial_weights_and_clears_traces() -> None:
    model = float64_model()
    neural, kinematics = recording(50, seed=19)
    learner, state = sgd_learner(model, optimizer="adam", update_every=6)
    initial = learnt_weights(learner)
    run_bins(learner, state, neural[:27], kinematics[:27])  # mid-window: traces are live
    assert not np.array_equal(learnt_weights(learner)["w_out"], initial["w_out"])
    learner.reset()
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, initial[key])
    got = learner.gradient(neural[27:], kinematics[27:], learner.decoder.initial_state())
    fresh, _ = sgd_learner(model, optimizer="adam", update_every=6)
    expected = fresh.gradient(neural[27:], kinematics[27:], fresh.decoder.initial_state())
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    # optimiser state cleared too: the next update equals a fresh learner's first
    a_state, b_state = learner.decoder.initial_state(), fresh.decoder.initial_state()
    run_bins(learner, a_state, neural[:6], kinematics[:6])
    run_bins(fresh, b_state, neural[:6], kinematics[:6])
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, learnt_weights(fresh)[key])


def test_pause_stops_learning_and_status_is_a_copy() -> None:
    model = float64_model()
    neural, kinematics = recording(20, seed=20)
    learner, state = sgd_learner(model)
    learner.pause("operator")
    before = learnt_weights(learner)
    run_bins(learner, state, neural, kinematics)
    assert learner.status.pause_reason == "operator" and learner.status.updates_applied == 0
    for key, value in learnt_weights(learner).items():
        np.testing.assert_array_equal(value, before[key])

    status = learner.status
    status.bins = 12345
    status.paused = False
    status.lr = 99.0
    assert learner.status.bins == 20 and learner.status.paused and learner.status.lr == 1e-2
    assert learner.status is not learner.status


def test_random_feedback_changes_hidden_but_not_readout_gradients() -> None:
    model = float64_model()
    neural, kinematics = recording(60, seed=21)
    symmetric = eprop_gradient(model, neural, list(kinematics))
    random = eprop_gradient(model, neural, list(kinematics), feedback="random", seed=3)
    again = eprop_gradient(model, neural, list(kinematics), feedback="random", seed=3)
    other = eprop_gradient(model, neural, list(kinematics), feedback="random", seed=4)
    for key in ("w_out", "b_out"):
        np.testing.assert_array_equal(random[key], symmetric[key])
    assert rel_error(random["input"], symmetric["input"]) > 0.1
    np.testing.assert_array_equal(random["input"], again["input"])
    assert not np.array_equal(random["input"], other["input"])


def _held_arrays(obj: object, prefix: str = "", seen: set | None = None) -> dict[str, tuple]:
    """Every NumPy array reachable from ``obj`` through attributes, dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return {}
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return {prefix: (obj.shape, obj.nbytes)}
    if isinstance(obj, dict):
        children = {str(k): v for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        children = {str(i): v for i, v in enumerate(obj)}
    elif is_dataclass(obj):
        children = {f.name: getattr(obj, f.name) for f in fields(obj)}
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("bci"):
        children = vars(obj)
    else:
        return {}
    found: dict[str, tuple] = {}
    for name, child in children.items():
        found.update(_held_arrays(child, f"{prefix}.{name}", seen))
    return found


def test_memory_does_not_grow_with_run_length() -> None:
    """Truly online: the same arrays after 100 and after 1000 bins, and no heap growth."""
    model = float64_model()
    neural, kinematics = recording(1000, seed=22)
    learner, state = sgd_learner(model, optimizer="adam", lr=1e-3, update_every=7, rate_reg=0.1)
    run_bins(learner, state, neural[:100], kinematics[:100])
    held = _held_arrays(learner)
    assert len(held) > 10
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for x, y in zip(neural[100:], kinematics[100:], strict=True):
            learner.step(x, y, state)
        growth = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert learner.status.bins == 1000 and learner.status.updates_applied > 100
    assert _held_arrays(learner) == held
    assert growth < 16_000, f"heap grew by {growth} bytes over 900 bins"
