"""Spiking neuron dynamics as pure step functions over explicit state.

Discrete time with step ``dt`` (seconds); a time constant ``tau`` (seconds) becomes the
per-step decay ``exp(-dt / tau)``. All neurons share one convention (as snnTorch's ``Leaky``
and Bellec et al. 2020): the spike emitted at step ``t-1`` resets the membrane at step ``t``,
and that reset term is detached from the gradient (the e-prop derivation assumes it).

LIF::

    v[t] = alpha v[t-1] + I[t] - theta z[t-1]           (reset by subtraction)
    v[t] = alpha v[t-1] (1 - z[t-1]) + I[t]              (reset to zero)
    z[t] = H((v[t] - theta) / theta)

ALIF (adaptive threshold, Bellec et al. 2018/2020)::

    A[t]   = theta + beta a[t-1]
    z[t]   = H((v[t] - A[t]) / theta)
    a[t]   = rho a[t-1] + (1 - rho) z[t]

Two-compartment (dendrite integrates synaptic input, soma spikes)::

    d[t] = alpha_d d[t-1] + I[t]
    v[t] = alpha v[t-1] + g d[t] - theta z[t-1]
    z[t] = H((v[t] - theta) / theta)

A neuron that spiked stays silent for ``refractory_steps`` steps (no spike, no gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from bci.config import RESET_MODES, ResetMode
from bci.spike import spike
from bci.surrogates import FastSigmoid, Surrogate

Scalar = float | Tensor


def decay(tau_s: Scalar, dt_s: float) -> Tensor:
    """Per-step decay factor ``exp(-dt / tau)`` (dimensionless, in (0, 1)).

    A plain-number ``tau_s`` is evaluated in float64 (a 0-d tensor, so it takes the dtype of
    the state it multiplies); a tensor ``tau_s`` keeps its dtype and autograd graph.
    """
    if not isinstance(tau_s, Tensor):
        tau_s = torch.as_tensor(tau_s, dtype=torch.float64)
    return torch.exp(-dt_s / tau_s)


class LIFParams(NamedTuple):
    """Leaky integrate-and-fire parameters; tensors broadcast over neurons."""

    tau_mem_s: Scalar = 0.02
    threshold: Scalar = 1.0
    dt_s: float = 0.001
    reset: ResetMode = "subtract"
    refractory_steps: int = 0
    surrogate: Surrogate = FastSigmoid()


class LIFState(NamedTuple):
    v: Tensor  # membrane potential (units of input current)
    z: Tensor  # spikes emitted at the previous step (0/1)
    refractory: Tensor  # steps of refractoriness left (0 = free)


class ALIFParams(NamedTuple):
    """Adaptive LIF parameters: LIF plus threshold adaptation ``beta`` with time constant."""

    tau_mem_s: Scalar = 0.02
    threshold: Scalar = 1.0
    tau_adapt_s: Scalar = 0.2
    beta: Scalar = 1.8
    dt_s: float = 0.001
    reset: ResetMode = "subtract"
    refractory_steps: int = 0
    surrogate: Surrogate = FastSigmoid()


class ALIFState(NamedTuple):
    v: Tensor
    z: Tensor
    a: Tensor  # threshold adaptation variable (dimensionless)
    refractory: Tensor


class TwoCompartmentParams(NamedTuple):
    """Dendrite (time constant ``tau_dend_s``) coupled with strength ``coupling`` to a soma."""

    tau_mem_s: Scalar = 0.02
    tau_dend_s: Scalar = 0.05
    coupling: Scalar = 1.0
    threshold: Scalar = 1.0
    dt_s: float = 0.001
    reset: ResetMode = "subtract"
    refractory_steps: int = 0
    surrogate: Surrogate = FastSigmoid()


class TwoCompartmentState(NamedTuple):
    d: Tensor  # dendritic potential
    v: Tensor  # somatic membrane potential
    z: Tensor
    refractory: Tensor


def _zeros(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    return torch.zeros(shape, dtype=dtype)


def lif_initial_state(batch: int, n: int, dtype: torch.dtype = torch.float32) -> LIFState:
    """Resting state: zero membrane, no previous spike, not refractory."""
    shape = (batch, n)
    return LIFState(_zeros(shape, dtype), _zeros(shape, dtype), _zeros(shape, dtype))


def alif_initial_state(batch: int, n: int, dtype: torch.dtype = torch.float32) -> ALIFState:
    shape = (batch, n)
    return ALIFState(*(_zeros(shape, dtype) for _ in range(4)))


def two_compartment_initial_state(
    batch: int, n: int, dtype: torch.dtype = torch.float32
) -> TwoCompartmentState:
    shape = (batch, n)
    return TwoCompartmentState(*(_zeros(shape, dtype) for _ in range(4)))


def _check_reset(reset: str) -> None:
    if reset not in RESET_MODES:
        raise ValueError(f"unknown reset mode {reset!r}; valid modes: {', '.join(RESET_MODES)}")


def _integrate(
    v: Tensor, alpha: Tensor, drive: Tensor, z_prev: Tensor, threshold: Scalar, reset: str
) -> Tensor:
    """Leaky integration with the previous spike's reset; the reset path is detached here."""
    _check_reset(reset)
    z_reset = z_prev.detach()
    if reset == "subtract":
        return alpha * v + drive - z_reset * threshold
    return alpha * v * (1.0 - z_reset) + drive


def _fire(
    x: Tensor, refractory: Tensor, refractory_steps: int, surrogate: Surrogate
) -> tuple[Tensor, Tensor]:
    """Spike where ``x > 0`` unless refractory; returns ``(z, refractory_left)``."""
    z = spike(x, surrogate)
    if refractory_steps <= 0:
        return z, refractory
    z = z * (refractory <= 0).to(z.dtype)
    left = torch.where(z.detach() > 0, float(refractory_steps), (refractory - 1.0).clamp(min=0.0))
    return z, left


def lif_step(current: Tensor, state: LIFState, params: LIFParams) -> tuple[Tensor, LIFState]:
    """Advance LIF neurons one step given input ``current`` (B, N)."""
    alpha = decay(params.tau_mem_s, params.dt_s)
    v = _integrate(state.v, alpha, current, state.z, params.threshold, params.reset)
    z, refractory = _fire(
        (v - params.threshold) / params.threshold,
        state.refractory,
        params.refractory_steps,
        params.surrogate,
    )
    return z, LIFState(v, z, refractory)


def alif_step(current: Tensor, state: ALIFState, params: ALIFParams) -> tuple[Tensor, ALIFState]:
    """Advance adaptive-threshold LIF neurons one step given input ``current`` (B, N)."""
    alpha = decay(params.tau_mem_s, params.dt_s)
    rho = decay(params.tau_adapt_s, params.dt_s)
    v = _integrate(state.v, alpha, current, state.z, params.threshold, params.reset)
    adaptive_threshold = params.threshold + params.beta * state.a
    z, refractory = _fire(
        (v - adaptive_threshold) / params.threshold,
        state.refractory,
        params.refractory_steps,
        params.surrogate,
    )
    a = rho * state.a + (1.0 - rho) * z
    return z, ALIFState(v, z, a, refractory)


def two_compartment_step(
    current: Tensor, state: TwoCompartmentState, params: TwoCompartmentParams
) -> tuple[Tensor, TwoCompartmentState]:
    """Advance two-compartment neurons one step; ``current`` (B, N) drives the dendrite."""
    d = decay(params.tau_dend_s, params.dt_s) * state.d + current
    alpha = decay(params.tau_mem_s, params.dt_s)
    v = _integrate(state.v, alpha, params.coupling * d, state.z, params.threshold, params.reset)
    z, refractory = _fire(
        (v - params.threshold) / params.threshold,
        state.refractory,
        params.refractory_steps,
        params.surrogate,
    )
    return z, TwoCompartmentState(d, v, z, refractory)


S = TypeVar("S", bound=tuple)
P = TypeVar("P", bound=tuple)


def run_sequence(
    step: Callable[[Tensor, S, P], tuple[Tensor, S]], currents: Tensor, state: S, params: P
) -> tuple[Tensor, S]:
    """Apply ``step`` over time-major ``currents`` (T, B, N); returns spikes (T, B, N)."""
    spikes = []
    for current in currents:
        z, state = step(current, state, params)
        spikes.append(z)
    return torch.stack(spikes), state


NEURON_MODELS: dict[str, Callable[..., tuple[Tensor, tuple]]] = {
    "lif": lif_step,
    "alif": alif_step,
    "two_compartment": two_compartment_step,
}


def get_neuron_step(name: str) -> Callable[..., tuple[Tensor, tuple]]:
    """Step function by name; ``ValueError`` lists the valid names when unknown."""
    try:
        return NEURON_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown neuron model {name!r}; valid names: {', '.join(sorted(NEURON_MODELS))}"
        ) from None


# -- parameterisation of learnable per-neuron constants -------------------------------------


def positive(raw: Tensor, minimum: float) -> Tensor:
    """Map an unconstrained tensor to ``(minimum, inf)`` with a softplus."""
    return minimum + F.softplus(raw)


def positive_inverse(value: Tensor | float, minimum: float) -> Tensor:
    """Inverse of :func:`positive`: the raw tensor that maps to ``value``."""
    y = torch.as_tensor(value, dtype=torch.float64) - minimum
    if torch.any(y <= 0):
        raise ValueError(f"value must exceed its lower bound {minimum}; got {value}")
    return (y + torch.log(-torch.expm1(-y))).to(torch.get_default_dtype())
