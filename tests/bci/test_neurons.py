"""Oracle tests for ``bci.neurons``.

Membrane traces are computed by hand (the arithmetic is in the comments), not by a second
implementation of the update equations. Shared constants, dt = 1 ms:

    alpha   = exp(-1/20)  = 0.951229424500714     (tau_mem = 20 ms)
    rho     = exp(-1/10)  = 0.9048374180359595    (tau_adapt = 10 ms)
    1 - rho               = 0.09516258196404048
    alpha_d = exp(-1/50)  = 0.9801986733067553    (tau_dend = 50 ms)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import snntorch
import snntorch.surrogate
import torch

import bci.neurons as neurons
from bci.neurons import (
    ALIFParams,
    ALIFState,
    LIFParams,
    LIFState,
    TwoCompartmentParams,
    TwoCompartmentState,
    alif_initial_state,
    alif_step,
    decay,
    get_neuron_step,
    lif_initial_state,
    lif_step,
    positive,
    positive_inverse,
    run_sequence,
    two_compartment_initial_state,
    two_compartment_step,
)
from bci.surrogates import FastSigmoid

F64 = torch.float64
ALPHA = 0.951229424500714
RHO = 0.9048374180359595
ALPHA_D = 0.9801986733067553

# name -> (step, params factory(**overrides), initial state factory)
MODELS: dict[str, tuple[Callable, Callable[..., tuple], Callable[..., tuple]]] = {
    "lif": (lif_step, LIFParams, lif_initial_state),
    "alif": (alif_step, ALIFParams, alif_initial_state),
    "two_compartment": (
        two_compartment_step,
        TwoCompartmentParams,
        two_compartment_initial_state,
    ),
}


def _scalar(x: torch.Tensor) -> float:
    return float(x.detach().reshape(()))


def _drive(step: Callable, params: tuple, state: tuple, currents: list[float]) -> list[tuple]:
    """Run a (1, 1) neuron on the given currents; return the state after every step."""
    out = []
    for c in currents:
        _, state = step(torch.tensor([[c]], dtype=F64), state, params)
        out.append(state)
    return out


def test_decay_constants_used_in_this_file() -> None:
    assert float(decay(0.02, 0.001)) == pytest.approx(ALPHA, rel=1e-15)
    assert float(decay(0.01, 0.001)) == pytest.approx(RHO, rel=1e-15)
    assert float(decay(0.05, 0.001)) == pytest.approx(ALPHA_D, rel=1e-15)
    assert ALPHA == pytest.approx(math.exp(-0.05), rel=1e-15)


def test_decay_of_a_plain_number_is_float64_and_does_not_promote_the_state() -> None:
    """A float tau is evaluated in float64 (not float32-rounded) yet leaves float32 states
    float32."""
    assert decay(0.02, 0.001).dtype == F64
    assert float(decay(0.02, 0.001)) == pytest.approx(math.exp(-0.05), rel=1e-15)
    s = lif_initial_state(2, 3, torch.float32)
    _, s = lif_step(torch.ones(2, 3), s, LIFParams())
    assert s.v.dtype == torch.float32
    s = alif_initial_state(2, 3, torch.float32)
    _, s = alif_step(torch.full((2, 3), 2.0), s, ALIFParams())
    assert s.v.dtype == s.a.dtype == s.z.dtype == torch.float32


# -- hand-computed traces ---------------------------------------------------------------------


def test_lif_trace_reset_by_subtraction() -> None:
    # I = 0.6, theta = 1:
    # v1 = 0.6                                  < 1 -> z1 = 0
    # v2 = alpha * 0.6 + 0.6 = 0.5707376547 + 0.6 = 1.1707376547004285   -> z2 = 1
    # v3 = alpha * v2 + 0.6 - 1 (reset of z2) = 1.1136401055 - 0.4 = 0.7136401055220043
    # v4 = alpha * v3 + 0.6 = 0.6788354669 + 0.6 = 1.278835466876325     -> z4 = 1
    # v5 = alpha * v4 + 0.6 - 1 = 1.2164659252 - 0.4 = 0.8164659251878685
    # v6 = alpha * v5 + 0.6 = 0.7766464121 + 0.6 = 1.3766464121408992    -> z6 = 1
    params = LIFParams(tau_mem_s=0.02, threshold=1.0, dt_s=0.001, reset="subtract")
    states = _drive(lif_step, params, lif_initial_state(1, 1, F64), [0.6] * 6)
    v = [_scalar(s.v) for s in states]
    z = [_scalar(s.z) for s in states]
    expected_v = [
        0.6,
        1.1707376547004285,
        0.7136401055220043,
        1.278835466876325,
        0.8164659251878685,
        1.3766464121408992,
    ]
    assert v == pytest.approx(expected_v, rel=1e-14)
    assert z == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]


def test_lif_trace_reset_to_zero_and_threshold_scaling() -> None:
    # Reset to zero, I = 0.6: the spike at step 2 zeroes the leak term at step 3, so
    # v3 = alpha * v2 * (1 - 1) + 0.6 = 0.6 exactly and the trace repeats with period 2.
    params = LIFParams(reset="zero")
    states = _drive(lif_step, params, lif_initial_state(1, 1, F64), [0.6] * 5)
    v = [_scalar(s.v) for s in states]
    assert v == pytest.approx([0.6, 1.1707376547004285, 0.6, 1.1707376547004285, 0.6], rel=1e-14)
    assert v[2] == 0.6
    assert [_scalar(s.z) for s in states] == [0.0, 1.0, 0.0, 1.0, 0.0]

    # The same trace with every potential scaled by theta = 0.5 (I = 0.3): identical spikes.
    params = LIFParams(threshold=0.5, reset="zero")
    states = _drive(lif_step, params, lif_initial_state(1, 1, F64), [0.3] * 5)
    assert [_scalar(s.v) for s in states] == pytest.approx(
        [0.3, 0.5853688273502142, 0.3, 0.5853688273502142, 0.3], rel=1e-14
    )
    assert [_scalar(s.z) for s in states] == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_lif_spike_argument_is_scaled_by_threshold() -> None:
    # theta = 2, v1 = I = 2.1: x = (2.1 - 2) / 2 = 0.05, FastSigmoid(25): 1 / (1 + 1.25)^2
    # = 1 / 5.0625 = 0.19753086419753085; dz/dI = dz/dx * dx/dv = 0.19753... / 2
    current = torch.tensor([[2.1]], dtype=F64, requires_grad=True)
    z, _ = lif_step(current, lif_initial_state(1, 1, F64), LIFParams(threshold=2.0))
    assert _scalar(z) == 1.0
    (g,) = torch.autograd.grad(z.sum(), current)
    assert _scalar(g) == pytest.approx(0.09876543209876543, rel=1e-12)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_refractory_blocks_exactly_two_steps(reset: str) -> None:
    # I = 1.5 > theta: without refractoriness the neuron would spike on every step.
    # refractory_steps = 2, reset to zero:
    # t1: v = 1.5 -> spike, refractory left 2
    # t2: v = alpha*1.5*(1-1) + 1.5 = 1.5          blocked (left 2 -> 1)
    # t3: v = alpha*1.5 + 1.5 = 2.926844136751071  blocked (left 1 -> 0)
    # t4: v = alpha*2.926844... + 1.5 = 4.28410026380501 -> spike (free again), left 2
    # t5: v = 1.5 (reset) blocked; t6 blocked; t7 spike.
    # Reset by subtraction gives different potentials but the same spike pattern (the
    # neuron is driven far above threshold at t4: v4 = 4.67 > 1).
    free = LIFParams(reset=reset)
    states = _drive(lif_step, free, lif_initial_state(1, 1, F64), [1.5] * 7)
    assert [_scalar(s.z) for s in states] == [1.0] * 7

    params = LIFParams(reset=reset, refractory_steps=2)
    states = _drive(lif_step, params, lif_initial_state(1, 1, F64), [1.5] * 7)
    assert [_scalar(s.z) for s in states] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert [_scalar(s.refractory) for s in states] == [2.0, 1.0, 0.0, 2.0, 1.0, 0.0, 2.0]
    if reset == "zero":
        v = [_scalar(s.v) for s in states[:5]]
        assert v == pytest.approx([1.5, 1.5, 2.926844136751071, 4.28410026380501, 1.5], rel=1e-14)

    # A refractory neuron gets no surrogate gradient either.
    state = states[0]  # just spiked
    current = torch.tensor([[1.5]], dtype=F64, requires_grad=True)
    z, _ = lif_step(current, state, params)
    (g,) = torch.autograd.grad(z.sum(), current, allow_unused=True)
    assert _scalar(z) == 0.0
    assert g is not None and _scalar(g) == 0.0


@pytest.mark.parametrize("name", list(MODELS))
def test_refractory_blocks_exactly_two_steps_in_every_model(name: str) -> None:
    step, make_params, make_state = MODELS[name]
    # Huge drive: spikes whenever allowed (ALIF threshold rises by at most beta = 1.8).
    params = make_params(refractory_steps=2, reset="zero")
    states = _drive(step, params, make_state(1, 1, F64), [50.0] * 7)
    assert [_scalar(s.z) for s in states] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]


def test_alif_threshold_rises_after_a_spike() -> None:
    # theta = 1, beta = 1.8, tau_adapt = 10 ms, I = 1.05, reset by subtraction.
    # t1: A1 = 1 + 1.8 * 0 = 1;  v1 = 1.05 > A1 -> z1 = 1
    #     a1 = rho * 0 + (1 - rho) * 1 = 0.09516258196404048
    # t2: A2 = 1 + 1.8 * a1 = 1.171292647535273
    #     v2 = alpha * 1.05 + 1.05 - 1 = 0.9987909 + 0.05 = 1.04879089572575
    #     v2 > theta (a LIF would spike) but v2 < A2 -> z2 = 0
    #     a2 = rho * a1 = 0.08610666495797777
    # t3: A3 = 1 + 1.8 * a2 = 1.15499199692436
    #     v3 = alpha * v2 + 1.05 = 0.9976407602 + 1.05 = 2.0476407601627935 -> z3 = 1
    #     a3 = rho * a2 + (1 - rho) = 0.0779125324 + 0.0951625820 = 0.1730751143603045
    # t4: A4 = 1 + 1.8 * a3 = 1.311535205848548
    #     v4 = alpha * v3 + 1.05 - 1 = 1.9477761419 + 0.05 = 1.9977761418738584 -> z4 = 1
    params = ALIFParams(tau_adapt_s=0.01, beta=1.8, threshold=1.0)
    state = alif_initial_state(1, 1, F64)
    expected = [
        # (A[t] = theta + beta a[t-1], v[t], z[t], a[t])
        (1.0, 1.05, 1.0, 0.09516258196404048),
        (1.171292647535273, 1.04879089572575, 0.0, 0.08610666495797777),
        (1.15499199692436, 2.0476407601627935, 1.0, 0.1730751143603045),
        (1.311535205848548, 1.9977761418738584, 1.0, None),
    ]
    for t, (thr_eff, v, z, a) in enumerate(expected, start=1):
        assert _scalar(params.threshold + params.beta * state.a) == pytest.approx(
            thr_eff, rel=1e-14
        )
        current = torch.tensor([[1.05]], dtype=F64, requires_grad=True)
        spikes, state = alif_step(current, state, params)
        assert _scalar(state.v) == pytest.approx(v, rel=1e-14), t
        assert _scalar(spikes) == z, t
        if a is not None:
            assert _scalar(state.a) == pytest.approx(a, rel=1e-13), t
        if t == 2:
            # The spike is taken against A2: x = (v2 - A2) / theta = -0.122501751809523,
            # FastSigmoid(25): 1 / (1 + 3.062543795)^2 = 1 / 16.50426 = 0.06059040959567087
            (g,) = torch.autograd.grad(spikes.sum(), current)
            assert _scalar(g) == pytest.approx(0.06059040959567087, rel=1e-11)

    # The same input to a plain LIF spikes at step 2 (v2 = 1.0488 > 1): adaptation matters.
    lif_states = _drive(lif_step, LIFParams(), lif_initial_state(1, 1, F64), [1.05] * 2)
    assert _scalar(lif_states[1].z) == 1.0


def test_two_compartment_dendrite_filters_and_only_the_soma_spikes() -> None:
    # tau_dend = 50 ms, coupling g = 0.5, theta = 1, I = 1 constant:
    # d1 = 1;                        v1 = g d1 = 0.5                       -> z1 = 0
    # d2 = alpha_d + 1 = 1.9801986733067554
    #                                v2 = alpha 0.5 + 0.5 d2
    #                                   = 0.4756147123 + 0.9900993367 = 1.4657140489037346 -> z2=1
    # d3 = alpha_d d2 + 1 = 2.9409881124590784 (dendrite is not reset by the somatic spike)
    #                                v3 = alpha v2 + 0.5 d3 - 1
    #                                   = 1.3942314312 + 1.4704940562 - 1 = 1.86472438745085
    params = TwoCompartmentParams(tau_dend_s=0.05, coupling=0.5, threshold=1.0)
    states = _drive(
        two_compartment_step, params, two_compartment_initial_state(1, 1, F64), [1.0] * 3
    )
    assert [_scalar(s.d) for s in states] == pytest.approx(
        [1.0, 1.9801986733067554, 2.9409881124590784], rel=1e-14
    )
    assert [_scalar(s.v) for s in states] == pytest.approx(
        [0.5, 1.4657140489037346, 1.86472438745085], rel=1e-14
    )
    assert [_scalar(s.z) for s in states] == [0.0, 1.0, 1.0]

    # A unit pulse: the dendrite decays as alpha_d^k, d[t] = alpha_d d[t-1] + I[t], and is
    # not reset when the soma spikes (at step 3):
    # d = 1, alpha_d = 0.9801986733067553, alpha_d^2 = 0.9607894391523231,
    #     alpha_d^3 = 0.9417645335842486
    # v1 = 0.5 d1 = 0.5
    # v2 = alpha 0.5 + 0.5 alpha_d = 0.4756147123 + 0.4900993367 = 0.9657140489037346  z2 = 0
    # v3 = alpha v2 + 0.5 alpha_d^2 = 0.9186156190 + 0.4803947196 = 1.3990103385471153 z3 = 1
    # v4 = alpha v3 + 0.5 alpha_d^3 - 1 = 1.3307797992 + 0.4708822668 - 1
    #    = 0.8016620659988458                                                          z4 = 0
    states = _drive(
        two_compartment_step,
        params,
        two_compartment_initial_state(1, 1, F64),
        [1.0, 0.0, 0.0, 0.0],
    )
    assert [_scalar(s.d) for s in states] == pytest.approx(
        [1.0, 0.9801986733067553, 0.9607894391523231, 0.9417645335842486], rel=1e-14
    )
    assert [_scalar(s.v) for s in states] == pytest.approx(
        [0.5, 0.9657140489037346, 1.3990103385471153, 0.8016620659988458], rel=1e-14
    )
    assert [_scalar(s.z) for s in states] == [0.0, 0.0, 1.0, 0.0]


# -- sequence == loop -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_run_sequence_equals_manual_loop(name: str, reset: str) -> None:
    step, make_params, make_state = MODELS[name]
    params = make_params(reset=reset, refractory_steps=1)
    gen = torch.Generator().manual_seed(3)
    currents = 0.4 * torch.rand(30, 3, 5, generator=gen, dtype=F64)

    spikes, final = run_sequence(step, currents, make_state(3, 5, F64), params)

    state = make_state(3, 5, F64)
    manual = []
    for t in range(currents.shape[0]):
        z, state = step(currents[t], state, params)
        manual.append(z)
    assert spikes.shape == currents.shape
    assert torch.equal(spikes, torch.stack(manual))
    assert type(final) is type(state)
    for got, want in zip(final, state, strict=True):
        assert torch.equal(got, want)
    assert 0 < spikes.sum() < spikes.numel()  # the comparison covers spikes and resets


# -- the reset path is detached ---------------------------------------------------------------


def _attached_integrate(v, alpha, drive, z_prev, threshold, reset):
    """``neurons._integrate`` with the ``detach`` removed (the bug the test must catch)."""
    if reset == "subtract":
        return alpha * v + drive - z_prev * threshold
    return alpha * v * (1.0 - z_prev) + drive


def _dv_next_dv(name: str) -> tuple[float, float]:
    """d v[2] / d v[1] for a neuron that spiked at step 1 just above threshold.

    Returns the autograd gradient and the surrogate derivative at the spike."""
    step, make_params, make_state = MODELS[name]
    params = make_params(reset="subtract")
    state = make_state(1, 1, F64)
    # Drive v1 to 1.02 (x = 0.02; FastSigmoid(25): 1 / (1 + 0.5)^2 = 0.4444 != 0)
    first = 1.02 if name != "two_compartment" else 1.02 / params.coupling
    # The first current needs a graph so that v[1] is a node autograd can differentiate to.
    _, s1 = step(torch.tensor([[first]], dtype=F64, requires_grad=True), state, params)
    assert _scalar(s1.z) == 1.0
    assert _scalar(s1.v) == pytest.approx(1.02, rel=1e-14)
    _, s2 = step(torch.tensor([[0.1]], dtype=F64), s1, params)
    (g,) = torch.autograd.grad(s2.v.sum(), s1.v)
    return _scalar(g), 1.0 / (1.0 + 25.0 * 0.02) ** 2


@pytest.mark.parametrize("name", list(MODELS))
def test_reset_path_is_detached(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    grad, pd = _dv_next_dv(name)
    assert pd == pytest.approx(0.4444444444444444)
    assert grad == pytest.approx(ALPHA, rel=1e-14)  # alpha only: no -theta dz/dv term

    # The same check on an implementation with the reset attached sees the extra term
    # -theta * pd / theta, so the assertion above would fail.
    monkeypatch.setattr(neurons, "_integrate", _attached_integrate)
    grad_attached, _ = _dv_next_dv(name)
    assert grad_attached == pytest.approx(ALPHA - pd, rel=1e-12)
    assert grad_attached != pytest.approx(ALPHA, rel=1e-3)


# -- learnable tau and threshold --------------------------------------------------------------


def test_gradient_through_per_neuron_tau_matches_closed_form() -> None:
    # One step from v0 = 1 with no input: v1 = exp(-dt/tau) v0, so
    # d v1 / d tau = exp(-dt/tau) dt / tau^2:
    #   tau = 10 ms: 0.904837418 * 0.001 / 1e-4  = 9.048374180359595
    #   tau = 20 ms: 0.951229425 * 0.001 / 4e-4  = 2.378073561251785
    #   tau = 50 ms: 0.980198673 * 0.001 / 25e-4 = 0.3920794693227021
    tau = torch.tensor([0.01, 0.02, 0.05], dtype=F64, requires_grad=True)
    state = LIFState(torch.ones(1, 3, dtype=F64), torch.zeros(1, 3, dtype=F64), torch.zeros(1, 3))
    _, s1 = lif_step(torch.zeros(1, 3, dtype=F64), state, LIFParams(tau_mem_s=tau))
    (g,) = torch.autograd.grad(s1.v.sum(), tau)
    torch.testing.assert_close(
        g,
        torch.tensor([9.048374180359595, 2.378073561251785, 0.3920794693227021], dtype=F64),
        rtol=1e-12,
        atol=0.0,
    )


def test_gradient_through_threshold_matches_closed_form() -> None:
    # theta = 1 (learnable), I1 = 1.2, I2 = 0:
    # z1 = H((v1 - theta) / theta), x = 0.2:
    #   dz1/dtheta = pd(x) * d/dtheta[(v - theta) / theta] = pd(0.2) * (-v / theta^2)
    #              = 1 / (1 + 5)^2 * (-1.2) = -1.2 / 36 = -0.03333333333333333
    # v2 = alpha v1 + 0 - theta z1 (z1 detached, theta is not): dv2/dtheta = -z1 = -1
    theta = torch.tensor([1.0], dtype=F64, requires_grad=True)
    params = LIFParams(threshold=theta)
    z1, s1 = lif_step(torch.tensor([[1.2]], dtype=F64), lif_initial_state(1, 1, F64), params)
    (g_z,) = torch.autograd.grad(z1.sum(), theta, retain_graph=True)
    assert _scalar(g_z) == pytest.approx(-1.2 / 36.0, rel=1e-12)
    _, s2 = lif_step(torch.zeros(1, 1, dtype=F64), s1, params)
    (g_v,) = torch.autograd.grad(s2.v.sum(), theta)
    assert _scalar(g_v) == pytest.approx(-1.0, rel=1e-14)


@pytest.mark.parametrize("name", list(MODELS))
def test_membrane_gradients_wrt_learnable_tau_and_threshold_match_finite_differences(
    name: str,
) -> None:
    """With spikes held fixed (the reset is detached) the membrane trace is smooth in tau and
    theta, so autograd must agree with finite differences (``gradcheck``)."""
    step, make_params, make_state = MODELS[name]
    gen = torch.Generator().manual_seed(7)
    currents = 0.3 * torch.rand(25, 2, 3, generator=gen, dtype=F64)
    raw_tau = positive_inverse(torch.tensor([0.01, 0.02, 0.04]), 0.002).to(F64)

    def membrane(raw: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        params = make_params(tau_mem_s=positive(raw, 0.002), threshold=theta)
        state = make_state(2, 3, F64)
        vs = []
        for current in currents:
            _, state = step(current, state, params)
            vs.append(state.v)
        return torch.stack(vs)

    theta = torch.tensor([0.8, 1.0, 1.3], dtype=F64)
    raw = raw_tau.clone().requires_grad_(True)
    theta = theta.clone().requires_grad_(True)
    with torch.no_grad():
        spikes = run_sequence(
            step, currents, make_state(2, 3, F64), make_params(tau_mem_s=positive(raw, 0.002))
        )[0]
    assert spikes.sum() > 0  # resets happen, so theta enters the trace
    assert torch.autograd.gradcheck(membrane, (raw, theta), eps=1e-7, atol=1e-6, rtol=1e-5)

    # Spike outputs carry (surrogate) gradients to both, finite and non-zero.
    params = make_params(tau_mem_s=positive(raw, 0.002), threshold=theta)
    out, _ = run_sequence(step, currents, make_state(2, 3, F64), params)
    g_raw, g_theta = torch.autograd.grad(out.sum(), (raw, theta))
    for g in (g_raw, g_theta):
        assert torch.isfinite(g).all()
        assert (g != 0).all()


# -- snnTorch Leaky ---------------------------------------------------------------------------


def _snntorch_run(
    currents: torch.Tensor, beta: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    leaky = snntorch.Leaky(
        beta=torch.tensor(beta, dtype=currents.dtype),
        threshold=torch.tensor(threshold, dtype=currents.dtype),
        spike_grad=snntorch.surrogate.fast_sigmoid(slope=25),
        reset_mechanism="subtract",
    )
    mem = torch.zeros_like(currents[0])
    spikes, mems = [], []
    for current in currents:
        spk, mem = leaky(current, mem)
        spikes.append(spk.to(currents.dtype))
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def _our_run(
    currents: torch.Tensor, tau_s: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    params = LIFParams(
        tau_mem_s=tau_s, threshold=threshold, reset="subtract", surrogate=FastSigmoid(25.0)
    )
    state = lif_initial_state(currents.shape[1], currents.shape[2], currents.dtype)
    spikes, mems = [], []
    for current in currents:
        z, state = lif_step(current, state, params)
        spikes.append(z)
        mems.append(state.v)
    return torch.stack(spikes), torch.stack(mems)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("threshold", [1.0, 0.7])
def test_lif_matches_snntorch_leaky(dtype: torch.dtype, threshold: float) -> None:
    """Our LIF (reset by subtraction) equals ``snntorch.Leaky(reset_mechanism="subtract")``.

    snnTorch 0.9/1.0 ``Leaky.forward`` with the default ``reset_delay=True``:
    ``reset = H(mem[t-1] - threshold)`` (detached, from the *previous* membrane, i.e. the
    previous step's spike), ``mem[t] = beta.clamp(0, 1) mem[t-1] + I[t] - reset threshold``,
    ``spk[t] = H(mem[t] - threshold)``; ``mem`` starts at zero when we pass zeros (or no
    ``mem`` of the right shape). That is exactly our convention with ``beta = exp(-dt/tau)``
    and ``z[t-1]`` detached. Differences handled here: snnTorch turns a float ``beta`` into a
    float32 tensor (the same holds for ``threshold``), so we hand it tensors of the test's
    dtype; its spikes are always float32
    (``(x > 0).float()``), so they are cast before comparing, and in float64 its reset term
    ``reset * threshold`` is therefore float32 (threshold 0.7 subtracts float32(0.7): the
    float64 membranes differ by ~1e-8 per reset, inside the 1e-6 tolerance).

    Gradients: snnTorch feeds ``mem - threshold`` to its surrogate, we feed
    ``(v - threshold) / threshold``; the two agree only for threshold = 1, so the gradient
    check uses threshold = 1.0.
    """
    dt, tau = 0.001, 0.02
    beta = math.exp(-dt / tau)
    gen = torch.Generator().manual_seed(11)
    # Per-neuron mean drive from 0 to 0.12 * threshold (steady state v ~ I / (1 - beta), from
    # 0 to ~2.5 threshold) plus noise: low-drive neurons stay silent (noise std of v ~ 0.16
    # threshold), high-drive ones fire regularly.
    bias = torch.linspace(0.0, 0.12, 50, dtype=dtype)
    noise = 0.05 * torch.randn(200, 4, 50, generator=gen, dtype=dtype)
    currents = threshold * (bias + noise)

    x_ours = currents.clone().requires_grad_(True)
    x_snn = currents.clone().requires_grad_(True)
    z_ours, v_ours = _our_run(x_ours, tau, threshold)
    z_snn, v_snn = _snntorch_run(x_snn, beta, threshold)

    rate = z_ours.detach().mean().item()
    assert 0.01 < rate < 0.5, rate
    per_neuron = z_ours.detach().sum(dim=0)
    assert (per_neuron == 0).any() and (per_neuron > 1).any()

    assert torch.equal(z_ours.detach(), z_snn.detach())
    torch.testing.assert_close(v_ours.detach(), v_snn.detach(), rtol=1e-6, atol=1e-6)

    if threshold == 1.0:
        w = torch.randn(currents.shape, generator=gen, dtype=dtype)
        u = torch.randn(currents.shape, generator=gen, dtype=dtype)
        (g_ours,) = torch.autograd.grad((w * z_ours).sum() + (u * v_ours).sum(), x_ours)
        (g_snn,) = torch.autograd.grad((w * z_snn).sum() + (u * v_snn).sum(), x_snn)
        assert g_ours.dtype == dtype
        # The surrogates are evaluated in a different order (g * 1/(1+k|x|)^2 vs
        # g / (k|x|+1)^2) and summed over 200 steps of BPTT: in float32 that costs ~100 ulp.
        # In float64 snnTorch's float32 spikes round the upstream gradient to float32.
        tol = 1e-5 if dtype == torch.float32 else 1e-6
        torch.testing.assert_close(g_ours, g_snn.to(dtype), rtol=tol, atol=tol)


# -- parameterisation and errors --------------------------------------------------------------


@pytest.mark.parametrize("minimum", [0.0, 0.002, 1.0])
def test_positive_round_trip_and_range(minimum: float) -> None:
    values = minimum + torch.tensor([1e-3, 0.01, 0.5, 1.0, 7.0, 30.0, 100.0])
    raw = positive_inverse(values, minimum)
    assert raw.dtype == torch.get_default_dtype()
    torch.testing.assert_close(positive(raw, minimum), values, rtol=1e-5, atol=1e-7)
    # softplus^-1(y) = log(e^y - 1): log(e - 1) = 0.5413248546129181 for y = 1
    assert float(positive_inverse(minimum + 1.0, minimum)) == pytest.approx(0.5413248546129181)
    assert float(positive_inverse(minimum + math.log(2.0), minimum)) == pytest.approx(0.0, abs=1e-7)

    raw = torch.linspace(-30.0, 30.0, 121, dtype=F64)
    out = positive(raw, minimum)
    assert (out > minimum).all()
    assert (out[1:] > out[:-1]).all()  # strictly increasing, so invertible

    for bad in (minimum, minimum - 1.0):
        with pytest.raises(ValueError, match="must exceed its lower bound"):
            positive_inverse(bad, minimum)
    with pytest.raises(ValueError, match="must exceed its lower bound"):
        positive_inverse(torch.tensor([minimum + 1.0, minimum], dtype=F64), minimum)


def test_unknown_neuron_name_lists_valid_names() -> None:
    for name, (step, _, _) in MODELS.items():
        assert get_neuron_step(name) is step
    with pytest.raises(ValueError, match="unknown neuron model 'nope'") as info:
        get_neuron_step("nope")
    for name in ("lif", "alif", "two_compartment"):
        assert name in str(info.value)


@pytest.mark.parametrize("name", list(MODELS))
def test_unknown_reset_mode_lists_valid_modes(name: str) -> None:
    step, make_params, make_state = MODELS[name]
    with pytest.raises(ValueError, match="unknown reset mode 'bogus'") as info:
        step(torch.ones(1, 2), make_state(1, 2), make_params(reset="bogus"))
    assert "subtract" in str(info.value)
    assert "zero" in str(info.value)


def test_initial_states_are_resting() -> None:
    for state, cls in (
        (lif_initial_state(2, 3, F64), LIFState),
        (alif_initial_state(2, 3, F64), ALIFState),
        (two_compartment_initial_state(2, 3, F64), TwoCompartmentState),
    ):
        assert isinstance(state, cls)
        for field in state:
            assert field.shape == (2, 3)
            assert field.dtype == F64
            assert not field.any()
