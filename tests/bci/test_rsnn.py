"""Oracle tests for ``bci.rsnn``: configuration, parameterisation, hand-computed readout,
state carry, input checks, and gradients against autograd through ``bci.neurons.alif_step``.

The recurrent kernel itself is checked in ``test_recurrent.py``; here the model around it is
compared with a reference written from the module docstring's equations::

    x~[t]  = (x[t] - mu) / sigma
    I[t]   = W_in x~[t] + W_rec z[t-1]
    z[t]   = ALIF(I[t])
    y[t]   = kappa y[t-1] + W_out z[t]
    out[t] = (y[t] + b_out) * s + m
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from bci.neurons import ALIFParams, ALIFState, alif_step
from bci.rsnn import RSNN, TAU_MIN_S, THRESHOLD_MIN, RSNNConfig, RSNNState
from bci.surrogates import get_surrogate


def _counts(n_bins: int, n_in: int, batch: int | None = None, seed: int = 0) -> np.ndarray:
    """Poisson spike counts, time-major (T, C) or (T, B, C)."""
    rng = np.random.default_rng(seed)
    shape = (n_bins, n_in) if batch is None else (n_bins, batch, n_in)
    return rng.poisson(rng.uniform(0.2, 3.0, size=shape[-1]), size=shape).astype(np.float64)


def _model(seed: int = 0, **overrides) -> RSNN:
    """A float64 model with non-trivial normalisation and output bias."""
    cfg = dict(n_in=6, n_hidden=16, n_out=2, alif_fraction=0.5)
    cfg.update(overrides)
    model = RSNN(RSNNConfig(**cfg), seed=seed).double()
    rng = np.random.default_rng(seed + 100)
    neural = _counts(200, cfg["n_in"], seed=seed + 1)
    kinematics = rng.normal(size=(200, cfg["n_out"])) * [3.0, 0.5][: cfg["n_out"]] + 1.5
    model.fit_normalisation(neural, kinematics)
    with torch.no_grad():
        model.b_out.copy_(torch.linspace(-0.3, 0.4, cfg["n_out"], dtype=torch.float64))
    return model


# -- configuration ---------------------------------------------------------------------------


def test_config_unknown_surrogate_lists_valid_names() -> None:
    message = (
        "unknown surrogate 'nope'; valid names: arctan, boxcar, fast_sigmoid, gaussian, "
        "sigmoid, triangle"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        RSNNConfig(n_in=3, surrogate="nope")


def test_config_bad_surrogate_parameter_names_the_parameters() -> None:
    with pytest.raises(ValueError, match=r"surrogate 'triangle' takes parameters .*gamma, width"):
        RSNNConfig(n_in=3, surrogate="triangle", surrogate_params={"slope": 2.0})


def test_config_unknown_reset_lists_valid_modes() -> None:
    with pytest.raises(
        ValueError, match=re.escape("unknown reset mode 'hard'; valid modes: subtract, zero")
    ):
        RSNNConfig(n_in=3, reset="hard")


@pytest.mark.parametrize("name", ["n_in", "n_hidden", "n_out"])
@pytest.mark.parametrize("value", [0, -2])
def test_config_rejects_non_positive_sizes(name: str, value: int) -> None:
    kwargs = {"n_in": 3, name: value}
    with pytest.raises(
        ValueError, match=re.escape(f"{name} must be a positive integer; got {value}")
    ):
        RSNNConfig(**kwargs)


@pytest.mark.parametrize("fraction", [-0.01, 1.01, math.nan])
def test_config_rejects_alif_fraction_outside_unit_interval(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"alif_fraction must lie in \[0, 1\]"):
        RSNNConfig(n_in=3, alif_fraction=fraction)


@pytest.mark.parametrize("name", ["dt_s", "tau_mem_s", "tau_adapt_s", "tau_out_s", "threshold"])
@pytest.mark.parametrize("value", [0.0, -0.1, math.inf, math.nan])
def test_config_rejects_non_positive_time_constants(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be positive and finite; got {value}"):
        RSNNConfig(n_in=3, **{name: value})


def test_config_derived_constants() -> None:
    cfg = RSNNConfig(n_in=3, n_hidden=10, alif_fraction=0.3, dt_s=0.02, tau_out_s=0.08)
    assert cfg.n_alif == 3
    assert cfg.kappa == pytest.approx(math.exp(-0.25), rel=1e-15)
    assert RSNNConfig(n_in=3, n_hidden=10, alif_fraction=0.0).n_alif == 0
    assert RSNNConfig(n_in=3, n_hidden=10, alif_fraction=1.0).n_alif == 10
    assert cfg.to_dict()["alif_fraction"] == 0.3


# -- parameters and their parameterisation ---------------------------------------------------


@pytest.mark.parametrize(("fraction", "n_lif"), [(0.0, 10), (0.3, 7), (0.5, 5), (1.0, 0)])
def test_first_neurons_are_lif_and_the_rest_alif(fraction: float, n_lif: int) -> None:
    cfg = RSNNConfig(n_in=3, n_hidden=10, alif_fraction=fraction, beta_adapt=1.7)
    beta = RSNN(cfg).beta
    assert torch.equal(beta[:n_lif], torch.zeros(n_lif))
    assert torch.equal(beta[n_lif:], torch.full((10 - n_lif,), 1.7))


def test_initial_per_neuron_constants_follow_config() -> None:
    cfg = RSNNConfig(n_in=3, n_hidden=5, dt_s=0.02, tau_mem_s=0.07, tau_adapt_s=0.4, threshold=0.8)
    model = RSNN(cfg)
    torch.testing.assert_close(model.tau_mem_s, torch.full((5,), 0.07), rtol=1e-6, atol=0)
    torch.testing.assert_close(model.alpha, torch.full((5,), math.exp(-0.02 / 0.07)))
    torch.testing.assert_close(model.rho, torch.full((5,), math.exp(-0.02 / 0.4)))
    torch.testing.assert_close(model.threshold, torch.full((5,), 0.8), rtol=1e-6, atol=0)


def _initial_taus(model: RSNN, dt_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-neuron tau_mem and tau_adapt (s) of a fresh model, in float64."""
    tau_mem = model.tau_mem_s.detach().double()
    return tau_mem, -dt_s / torch.log(model.rho.double())


def test_tau_spread_draws_log_uniform_time_constants_within_bounds() -> None:
    cfg = RSNNConfig(n_in=3, n_hidden=2000, dt_s=0.05, tau_mem_s=0.1, tau_adapt_s=0.5,
                     tau_spread=3.0)  # fmt: skip
    for tau, configured in zip(_initial_taus(RSNN(cfg), 0.05), (0.1, 0.5), strict=True):
        assert configured / 3.0 * (1 - 1e-5) <= tau.min() < configured / 3.0 * 1.05
        assert configured * 3.0 * 0.95 < tau.max() <= configured * 3.0 * (1 + 1e-5)
        # log-uniform: log(tau / configured) is uniform on [-log 3, log 3], mean 0, sd log3/sqrt3
        logs = torch.log(tau / configured)
        assert abs(float(logs.mean())) < 0.05
        assert float(logs.std()) == pytest.approx(math.log(3.0) / math.sqrt(3.0), rel=0.05)


def test_tau_spread_is_seeded_and_leaves_the_weights_alone() -> None:
    cfg = RSNNConfig(n_in=3, n_hidden=50, tau_spread=2.0)
    a, b, c = RSNN(cfg, seed=4), RSNN(cfg, seed=4), RSNN(cfg, seed=5)
    for ta, tb, tc in zip(_initial_taus(a, cfg.dt_s), _initial_taus(b, cfg.dt_s),
                          _initial_taus(c, cfg.dt_s), strict=True):  # fmt: skip
        assert torch.equal(ta, tb)
        assert not torch.equal(ta, tc)
    homogeneous = RSNN(RSNNConfig(n_in=3, n_hidden=50), seed=4)
    for name in ("w_in", "w_rec", "w_out"):
        assert torch.equal(getattr(a, name), getattr(homogeneous, name))


@pytest.mark.parametrize("value", [0.5, 0.0, math.nan])
def test_config_rejects_tau_spread_below_one(value: float) -> None:
    with pytest.raises(ValueError, match=rf"tau_spread must be 1 or more; got {value}"):
        RSNNConfig(n_in=3, tau_spread=value)


def test_recurrent_diagonal_is_zero_and_stays_zero_after_an_optimiser_step() -> None:
    model = _model()
    h = model.config.n_hidden
    assert torch.all(model.recurrent_weights.diagonal() == 0)
    assert torch.count_nonzero(model.recurrent_weights) == h * h - h  # only the diagonal masked

    x = torch.as_tensor(_counts(30, 6, batch=2, seed=3))
    trace = model.run(x)
    assert 0.02 < trace.spikes.mean().item() < 0.6
    loss = trace.outputs.square().mean() + trace.spikes.mean()
    loss.backward()
    assert torch.all(model.w_rec.grad.diagonal() == 0)
    assert model.w_rec.grad.abs().sum() > 0
    before = model.w_rec.detach().clone()
    torch.optim.Adam(model.parameters(), lr=0.1).step()
    assert not torch.equal(model.w_rec, before)
    assert torch.all(model.recurrent_weights.diagonal() == 0)


def test_raw_recurrent_diagonal_has_no_effect_on_the_output() -> None:
    model = _model()
    x = torch.as_tensor(_counts(40, 6, batch=2, seed=4))
    with torch.no_grad():
        reference = model.run(x)
        model.w_rec.diagonal().fill_(50.0)  # would make every neuron excite itself
        changed = model.run(x)
    assert torch.equal(changed.spikes, reference.spikes)
    assert torch.equal(changed.outputs, reference.outputs)


def test_no_recurrence_option_has_zero_frozen_recurrent_weights() -> None:
    model = RSNN(RSNNConfig(n_in=3, n_hidden=6, recurrent=False))
    assert not model.w_rec.requires_grad
    assert torch.count_nonzero(model.recurrent_weights) == 0


def test_tau_and_threshold_stay_positive_when_pushed_negative() -> None:
    model = _model()
    optimiser = torch.optim.SGD([model.raw_tau_mem, model.raw_threshold], lr=1e4)
    for _ in range(3):
        optimiser.zero_grad()
        # d/d(raw) of the sum is softplus' = sigmoid(raw) > 0, so SGD drives raw to -inf.
        (model.tau_mem_s.sum() + model.threshold.sum()).backward()
        optimiser.step()
    assert torch.all(model.raw_tau_mem < -100) and torch.all(model.raw_threshold < -100)
    assert torch.all(model.tau_mem_s >= TAU_MIN_S) and torch.all(model.threshold >= THRESHOLD_MIN)
    assert torch.all((model.alpha > 0) & (model.alpha < 1))
    with torch.no_grad():
        trace = model.run(torch.as_tensor(_counts(20, 6, batch=1)))
    assert torch.isfinite(trace.outputs).all()


def test_learn_flags_freeze_tau_and_threshold() -> None:
    model = RSNN(RSNNConfig(n_in=3, n_hidden=4, learn_tau=False, learn_threshold=False))
    assert not model.raw_tau_mem.requires_grad
    assert not model.raw_threshold.requires_grad
    assert model.w_in.requires_grad and model.w_rec.requires_grad


# -- forward pass against hand computation ---------------------------------------------------


def test_readout_is_kappa_filtered_spikes_plus_bias_then_denormalised() -> None:
    """Two LIF neurons, one input channel each, driven by +-100: neuron j spikes exactly in the
    bins where channel j is 1 (reset to zero wipes the membrane, a -100 current keeps it below
    threshold), so ``z[t] = x[t]`` and the readout can be computed by hand."""
    cfg = RSNNConfig(
        n_in=2, n_hidden=2, n_out=2, alif_fraction=0.0, reset="zero", dt_s=0.05, tau_out_s=0.1
    )
    model = RSNN(cfg).double()
    w_out = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64)
    b_out = torch.tensor([0.1, -0.2], dtype=torch.float64)
    scale = torch.tensor([3.0, 0.5], dtype=torch.float64)
    mean = torch.tensor([-1.0, 4.0], dtype=torch.float64)
    with torch.no_grad():
        model.w_in.copy_(100.0 * torch.eye(2))
        model.w_rec.zero_()
        model.w_out.copy_(w_out)
        model.b_out.copy_(b_out)
        model.input_mean.fill_(0.5)  # x~ = (x - 0.5) / 0.5 = +-1
        model.input_scale.fill_(0.5)
        model.output_scale.copy_(scale)
        model.output_mean.copy_(mean)
    x = np.array([[1, 0], [0, 0], [1, 1], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=np.float64)
    outputs, spikes = model.decode(x)
    np.testing.assert_array_equal(spikes, x)

    kappa = math.exp(-0.05 / 0.1)
    y = np.zeros(2)
    expected = []
    for z in x:
        y = kappa * y + w_out.numpy() @ z
        expected.append((y + b_out.numpy()) * scale.numpy() + mean.numpy())
    np.testing.assert_allclose(outputs, np.array(expected), rtol=1e-13, atol=1e-13)
    # one value by hand: t = 1 has no spikes, so y[1] = kappa * W_out [1, 0] = kappa * (0.5, 2)
    assert outputs[1, 0] == pytest.approx((kappa * 0.5 + 0.1) * 3.0 - 1.0, rel=1e-13)


@pytest.mark.parametrize(("offset", "spikes"), [(1e-9, 1.0), (0.0, 0.0), (-1e-9, 0.0)])
def test_float64_decode_keeps_input_precision(offset: float, spikes: float) -> None:
    """One neuron with ``I = x``: it spikes iff ``x > theta`` (``H(0) = 0``). An input 1e-9
    above threshold must spike in a float64 model (a float32 detour would round it away)."""
    cfg = RSNNConfig(n_in=1, n_hidden=1, n_out=1, alif_fraction=0.0, recurrent=False)
    model = RSNN(cfg).double()
    with torch.no_grad():
        model.w_in.fill_(1.0)
        model.w_out.fill_(1.0)
    theta = model.threshold.item()
    outputs, z = model.decode(np.array([[theta + offset]]))
    assert z[0, 0] == spikes and outputs[0, 0] == spikes
    assert outputs.dtype == np.float64


def test_forward_run_and_decode_agree() -> None:
    model = _model()
    neural = _counts(25, 6, seed=5)
    outputs, spikes = model.decode(neural)
    with torch.no_grad():
        trace = model.run(torch.as_tensor(neural)[:, None, :])
        out, state = model(torch.as_tensor(neural)[:, None, :])
    np.testing.assert_array_equal(outputs, trace.outputs[:, 0].numpy())
    np.testing.assert_array_equal(spikes, trace.spikes[:, 0].numpy())
    assert torch.equal(out, trace.outputs)
    for got, want in zip(state, trace.state, strict=True):
        assert torch.equal(got, want)


def test_initial_state_is_rest_in_model_dtype() -> None:
    state = _model().initial_state(batch=3)
    assert isinstance(state, RSNNState)
    for tensor, width in zip(state, (16, 16, 16, 2), strict=True):
        assert tensor.shape == (3, width) and tensor.dtype == torch.float64
        assert torch.count_nonzero(tensor) == 0
    assert state.v.data_ptr() != state.z.data_ptr()  # independent buffers


def test_fit_normalisation_stores_mean_and_std_in_model_dtype() -> None:
    model = RSNN(RSNNConfig(n_in=3, n_hidden=4)).double()
    neural = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    kinematics = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 4.0]])
    model.fit_normalisation(neural, kinematics)
    for buffer in (model.input_mean, model.input_scale, model.output_mean, model.output_scale):
        assert buffer.dtype == torch.float64
    torch.testing.assert_close(model.input_mean, torch.tensor([3.0, 5.0, 5.0], dtype=torch.float64))
    # a constant channel keeps scale 1 instead of dividing by zero
    expected_scale = [math.sqrt(8 / 3), 1.0, math.sqrt(26 / 3)]
    torch.testing.assert_close(model.input_scale, torch.tensor(expected_scale, dtype=torch.float64))
    torch.testing.assert_close(model.output_mean, torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(
        model.output_scale, torch.tensor([math.sqrt(2 / 3), math.sqrt(2.0)], dtype=torch.float64)
    )


# -- state carry -----------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_run_with_carried_state_equals_one_run(reset: str) -> None:
    model = _model(reset=reset)
    x = torch.as_tensor(_counts(60, 6, batch=3, seed=6))
    with torch.no_grad():
        whole = model.run(x)
        first = model.run(x[:27])
        second = model.run(x[27:], first.state)
        cold = model.run(x[27:])
    assert 0.02 < whole.spikes.mean().item() < 0.6
    assert torch.equal(torch.cat([first.spikes, second.spikes]), whole.spikes)
    torch.testing.assert_close(
        torch.cat([first.outputs, second.outputs]), whole.outputs, rtol=0, atol=1e-12
    )
    for got, want in zip(second.state, whole.state, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # the test is meaningful: starting the second half from rest gives something else
    assert not torch.allclose(cold.outputs, second.outputs)


def test_final_state_is_detached() -> None:
    model = _model()
    trace = model.run(torch.as_tensor(_counts(10, 6, batch=2)))
    assert trace.outputs.requires_grad
    assert not any(t.requires_grad for t in trace.state)


# -- input checks ----------------------------------------------------------------------------


def test_decode_wrong_channel_count_names_expected_and_received() -> None:
    model = _model()
    message = "neural input has shape (10, 5) but expected (any, 6): axis 1 must be 6, got 5"
    with pytest.raises(ValueError, match=re.escape(message)):
        model.decode(np.zeros((10, 5)))


def test_decode_rejects_one_dimensional_input() -> None:
    with pytest.raises(ValueError, match=re.escape("has shape (6,) but expected (any, 6)")):
        _model().decode(np.zeros(6))


def test_decode_nan_names_bin_and_channel() -> None:
    neural = _counts(20, 6)
    neural[7, 2] = np.nan
    neural[9, 0] = np.inf
    with pytest.raises(ValueError, match=r"neural input has a non-finite value \(nan\) at bin 7, "):
        _model().decode(neural)
    with pytest.raises(ValueError, match=r"at bin 7, channel 2 \(2 non-finite values in total\)"):
        _model().decode(neural)


def test_fit_normalisation_checks_its_inputs() -> None:
    model = RSNN(RSNNConfig(n_in=3, n_hidden=4))
    with pytest.raises(ValueError, match=re.escape("training kinematics has shape (9, 2)")):
        model.fit_normalisation(np.zeros((10, 3)), np.zeros((9, 2)))
    bad = np.zeros((10, 2))
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"training kinematics .* at bin 4, channel 1"):
        model.fit_normalisation(np.zeros((10, 3)), bad)
    with pytest.raises(ValueError, match=re.escape("axis 1 must be 3, got 4")):
        model.fit_normalisation(np.zeros((10, 4)), np.zeros((10, 2)))


# -- fan-out ---------------------------------------------------------------------------------


def test_fan_out_counts_outgoing_synapses() -> None:
    model = RSNN(RSNNConfig(n_in=3, n_hidden=3, n_out=2))
    with torch.no_grad():
        # w[post, pre]: column j lists the synapses leaving presynaptic unit j
        model.w_in.copy_(torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 3.0], [4.0, 0.0, 5.0]]))
        model.w_rec.copy_(torch.tensor([[9.0, 1.0, 0.0], [1.0, 9.0, 0.0], [1.0, 1.0, 9.0]]))
        model.w_out.copy_(torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
    inputs, hidden = model.fan_out()
    # channels: 3 targets, none, 2 targets
    np.testing.assert_array_equal(inputs, [3, 0, 2])
    # hidden 0 -> 1, 2 (diagonal 9 is masked) and no readout; hidden 1 -> 0, 2 and one output;
    # hidden 2 -> nobody recurrent (its column is 0 off the diagonal) and two outputs
    np.testing.assert_array_equal(hidden, [2, 3, 2])


# -- gradients against a reference built from alif_step --------------------------------------


def _reference_outputs(model: RSNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's equations as a Python loop of ``alif_step`` plus the readout recursion."""
    cfg = model.config
    rho = model.rho
    params = ALIFParams(
        tau_mem_s=model.tau_mem_s,
        threshold=model.threshold,
        tau_adapt_s=-cfg.dt_s / torch.log(rho),  # recovers the stored rho to ~1 ulp
        beta=model.beta,
        dt_s=cfg.dt_s,
        reset=cfg.reset,
        surrogate=model.surrogate,
    )
    batch, h = x.shape[1], cfg.n_hidden
    zeros = torch.zeros(batch, h, dtype=torch.float64)
    state = ALIFState(zeros, zeros, zeros, zeros)
    y = torch.zeros(batch, cfg.n_out, dtype=torch.float64)
    w_rec = model.w_rec * (1.0 - torch.eye(h, dtype=torch.float64))
    outputs, spikes = [], []
    for x_t in x:
        x_norm = (x_t - model.input_mean) / model.input_scale
        current = x_norm @ model.w_in.t() + state.z @ w_rec.t()
        z, state = alif_step(current, state, params)
        y = cfg.kappa * y + z @ model.w_out.t()
        outputs.append((y + model.b_out) * model.output_scale + model.output_mean)
        spikes.append(z)
    return torch.stack(outputs), torch.stack(spikes)


PARAMETER_NAMES = ("w_in", "w_rec", "w_out", "b_out", "raw_tau_mem", "raw_threshold")


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "triangle"])
def test_run_gradients_equal_autograd_through_alif_step(reset: str, surrogate: str) -> None:
    model = _model(n_hidden=10, reset=reset, surrogate=surrogate, alif_fraction=0.5)
    with torch.no_grad():  # varied per-neuron constants, so a mixed-up index would show
        model.raw_tau_mem.add_(torch.linspace(-0.05, 0.05, 10, dtype=torch.float64))
        model.raw_threshold.add_(torch.linspace(-0.3, 0.2, 10, dtype=torch.float64))
    x = torch.as_tensor(_counts(25, 6, batch=2, seed=7))
    weights = torch.randn(25, 2, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    trace = model.run(x)
    ref_out, ref_spikes = _reference_outputs(model, x)
    rate = trace.spikes.mean().item()
    assert 0.05 < rate < 0.6, f"spike rate {rate} makes the comparison vacuous"
    assert torch.equal(trace.spikes, ref_spikes)
    torch.testing.assert_close(trace.outputs, ref_out, rtol=0, atol=1e-12)

    params = [getattr(model, name) for name in PARAMETER_NAMES]
    # a loss through both the kinematics and the spikes (as the rate regulariser does)
    readout = torch.linspace(-1.0, 1.0, 10, dtype=torch.float64)
    loss = (trace.outputs * weights).sum() + (trace.spikes * readout).sum()
    ref_loss = (ref_out * weights).sum() + (ref_spikes * readout).sum()
    grads = torch.autograd.grad(loss, params)
    ref_grads = torch.autograd.grad(ref_loss, params)
    for name, got, want in zip(PARAMETER_NAMES, grads, ref_grads, strict=True):
        assert want.abs().sum() > 0, f"reference gradient of {name} is zero"
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=name)
    # no self-connections: the masked diagonal gets no gradient
    assert torch.all(grads[1].diagonal() == 0)


def test_surrogate_is_built_from_config() -> None:
    model = RSNN(RSNNConfig(n_in=2, surrogate="sigmoid", surrogate_params={"slope": 7.0}))
    assert model.surrogate == get_surrogate("sigmoid", slope=7.0)
