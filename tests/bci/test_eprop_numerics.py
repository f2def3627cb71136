"""``bci.eprop`` numerics against oracles.

* Without recurrent weights e-prop is exact: equal to autograd BPTT through ``RSNN.run``, to
  1e-12 relative in float64.
* With recurrence it approximates BPTT: cosine similarity 0.98 (printed and asserted).
* The windowed update equals per-bin accumulation (:func:`reference_step`) to 1e-12, for any
  window.
"""

import math

import numpy as np
import pytest
import torch
from eprop_cases import (
    N_HIDDEN,
    bptt_gradient,
    cosine_similarity,
    eprop_gradient,
    float64_model,
    recording,
    rel_error,
    targets_with_gaps,
)

import bci.eprop as eprop
from bci.eprop import EpropConfig, EpropLearner, Traces, reference_step, window_update
from bci.online import OnlineRSNN

EXACT = 1e-12  # relative error in float64 where theory says equal (the README's figure)
QUOTED_COSINE = 0.98  # README: e-prop vs BPTT with recurrence, input weights


# -- 1. exactness without recurrence ----------------------------------------------------------
@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "triangle"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("alif_fraction", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("gaps", [False, True], ids=["all-targets", "some-none"])
def test_eprop_equals_bptt_without_recurrence(
    surrogate: str, reset: str, alif_fraction: float, gaps: bool
) -> None:
    model = float64_model(
        alif_fraction=alif_fraction, reset=reset, surrogate=surrogate, recurrent=False
    )
    neural, kinematics = recording(150, seed=2)
    if gaps:
        targets, has_target = targets_with_gaps(kinematics)
    else:
        targets, has_target = list(kinematics), np.ones(len(kinematics), dtype=bool)
    expected, spikes = bptt_gradient(model, neural, kinematics, has_target)
    rate = spikes.mean()
    assert 0.05 < rate < 0.5, f"spike rate {rate:.3f}: the comparison would be vacuous"
    assert spikes.mean(axis=(0, 1)).min() > 0, "a silent neuron has a zero gradient row"

    got = eprop_gradient(model, neural, targets)
    for key in ("input", "w_out", "b_out"):
        assert np.linalg.norm(expected[key]) > 1e-3
        assert rel_error(got[key], expected[key]) < EXACT, key


@pytest.mark.parametrize("alif_fraction", [0.5, 1.0])
def test_adaptation_matters_for_the_exact_gradient(
    alif_fraction: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not vacuous for ALIF: adaptation changes the spikes, and dropping the adaptation
    eligibility (``beta`` = 0 in the traces only) no longer matches BPTT."""
    model = float64_model(alif_fraction=alif_fraction, recurrent=False, surrogate="fast_sigmoid")
    neural, kinematics = recording(150, seed=2)
    has_target = np.ones(len(kinematics), dtype=bool)
    expected, spikes = bptt_gradient(model, neural, kinematics, has_target)

    without = float64_model(alif_fraction=alif_fraction, recurrent=False, surrogate="fast_sigmoid")
    without.beta.zero_()
    assert not np.array_equal(bptt_gradient(without, neural, kinematics, has_target)[1], spikes)

    exact = eprop_gradient(model, neural, list(kinematics))
    assert rel_error(exact["input"], expected["input"]) < EXACT
    original = eprop.window_update

    def no_adaptation_trace(traces, p, at, c, signal, rho, beta, kappa, grad):
        original(traces, p, at, c, signal, rho, np.zeros_like(beta), kappa, grad)

    monkeypatch.setattr(eprop, "window_update", no_adaptation_trace)
    truncated = eprop_gradient(model, neural, list(kinematics))
    assert rel_error(truncated["input"], expected["input"]) > 1e-2


@pytest.mark.parametrize("alif_fraction", [0.0, 0.5])
def test_recurrent_gradient_is_exact_at_zero_recurrent_weights(alif_fraction: float) -> None:
    """At W_rec = 0 a recurrent weight W_ji only feeds neuron j, so e-prop's recurrent
    gradient is the exact derivative too (off the diagonal, which the model masks)."""
    model = float64_model(alif_fraction=alif_fraction, recurrent=True)
    with torch.no_grad():
        model.w_rec.zero_()
    neural, kinematics = recording(150, seed=3)
    expected, spikes = bptt_gradient(
        model, neural, kinematics, np.ones(len(kinematics), dtype=bool)
    )
    assert 0.05 < spikes.mean() < 0.5
    got = eprop_gradient(model, neural, list(kinematics))
    off_diagonal = 1.0 - np.eye(N_HIDDEN)
    assert np.linalg.norm(expected["recurrent"]) > 1e-3
    assert rel_error(got["recurrent"] * off_diagonal, expected["recurrent"]) < EXACT


# -- 2. approximation with recurrence ---------------------------------------------------------
def test_eprop_approximates_bptt_with_recurrence() -> None:
    """With W_rec != 0 e-prop drops the paths through other neurons: an approximation.
    Cosine similarity to BPTT with W_rec doubled from its initial scale: the README's 0.98 to
    two digits (measured 0.980 input, 0.987 recurrent on this float64 model and recording;
    0.98-0.99 over seeds 0-3, 0.99+ at the initial scale). The readout gradient stays exact."""
    model = float64_model(alif_fraction=0.5, recurrent=True, seed=0)
    with torch.no_grad():
        model.w_rec.mul_(2.0)
    neural, kinematics = recording(150, seed=2)
    expected, spikes = bptt_gradient(
        model, neural, kinematics, np.ones(len(kinematics), dtype=bool)
    )
    assert 0.05 < spikes.mean() < 0.5
    got = eprop_gradient(model, neural, list(kinematics))
    cosine = cosine_similarity(got["input"], expected["input"])
    cosine_rec = cosine_similarity(
        got["recurrent"] * (1.0 - np.eye(N_HIDDEN)), expected["recurrent"]
    )
    print(
        f"\ne-prop vs BPTT with recurrence: cosine similarity input weights {cosine:.4f}, "
        f"recurrent weights {cosine_rec:.4f}, relative error input "
        f"{rel_error(got['input'], expected['input']):.3f}"
    )
    assert round(cosine, 2) >= QUOTED_COSINE
    assert round(cosine_rec, 2) >= QUOTED_COSINE
    assert rel_error(got["input"], expected["input"]) > 1e-4, "recurrence should make a difference"
    for key in ("w_out", "b_out"):
        assert rel_error(got[key], expected[key]) < EXACT, key


# -- 3. windowed update == per-bin update -----------------------------------------------------
@pytest.mark.parametrize("window", [1, 7, 50])
def test_window_update_equals_reference_steps(window: int) -> None:
    rng = np.random.default_rng(window)
    n_steps, n_hidden, n_pre = 120, 6, 9
    presynaptic = rng.normal(size=(n_steps, n_pre))
    presynaptic[:, 5:] = rng.random((n_steps, 4)) < 0.3  # spike-like presynaptic signals
    at = rng.uniform(0.3, 0.99, (n_steps, n_hidden)) * (rng.random((n_steps, n_hidden)) > 0.1)
    c = rng.uniform(0.0, 0.5, (n_steps, n_hidden)) * (rng.random((n_steps, n_hidden)) > 0.3)
    signal = rng.normal(size=(n_steps, n_hidden))
    rho = rng.uniform(0.8, 0.99, n_hidden)
    beta = np.where(np.arange(n_hidden) % 2 == 0, 0.0, rng.uniform(0.5, 2.0, n_hidden))
    kappa = 0.6

    initial = [rng.normal(size=(n_hidden, n_pre)) for _ in range(3)]
    ref = Traces(*(a.copy() for a in initial))
    ref_grad = rng.normal(size=(n_hidden, n_pre))
    win = Traces(*(a.copy() for a in initial))
    win_grad = ref_grad.copy()
    for t in range(n_steps):
        reference_step(ref, presynaptic[t], at[t], c[t], signal[t], rho, beta, kappa, ref_grad)
    n_windows = 0
    for start in range(0, n_steps, window):
        sl = slice(start, start + window)
        window_update(win, presynaptic[sl], at[sl], c[sl], signal[sl], rho, beta, kappa, win_grad)
        n_windows += 1
    assert n_windows == math.ceil(n_steps / window)
    assert np.linalg.norm(ref_grad) > 1.0
    assert rel_error(win_grad, ref_grad) < EXACT
    for name in ("ev", "ea", "eb"):
        want = getattr(ref, name)
        assert np.linalg.norm(want) > 1e-3
        assert rel_error(getattr(win, name), want) < EXACT, name


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("rate_reg", [0.0, 0.5])
def test_learner_gradient_does_not_depend_on_the_window(reset: str, rate_reg: float) -> None:
    model = float64_model(alif_fraction=0.5, reset=reset, recurrent=True)
    neural, kinematics = recording(120, seed=4)
    targets, _ = targets_with_gaps(kinematics)
    grads = {
        k: eprop_gradient(model, neural, targets, update_every=k, rate_reg=rate_reg)
        for k in (1, 7, 50)
    }
    for k in (7, 50):
        for key in ("input", "recurrent", "w_out", "b_out"):
            assert np.linalg.norm(grads[1][key]) > 1e-3
            assert rel_error(grads[k][key], grads[1][key]) < EXACT, (k, key)


def test_gradient_leaves_weights_and_advances_state_like_the_decoder() -> None:
    model = float64_model()
    neural, kinematics = recording(60, seed=5)
    decoder = OnlineRSNN(model, dtype=np.float64)
    before = decoder.weights.copy(), decoder.w_out.copy(), decoder.readout_constants.copy()
    state = decoder.initial_state()
    EpropLearner(decoder, EpropConfig(update_every=7)).gradient(neural, kinematics, state)
    after = decoder.weights, decoder.w_out, decoder.readout_constants
    for got, want in zip(after, before, strict=True):
        np.testing.assert_array_equal(got, want)
    plain = OnlineRSNN(model, dtype=np.float64)
    plain_state = plain.initial_state()
    for x in neural:
        plain.step(x, plain_state)
    for name in ("v", "z", "a", "y"):
        np.testing.assert_array_equal(getattr(state, name), getattr(plain_state, name))
