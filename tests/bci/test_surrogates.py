"""Oracle tests for ``bci.surrogates``: autograd vs. the named pseudo-derivative, closed forms,
integrals, backend agreement and error messages."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from bci.spike import spike
from bci.surrogates import (
    SURROGATES,
    Arctan,
    Boxcar,
    FastSigmoid,
    Gaussian,
    Sigmoid,
    Surrogate,
    Triangle,
    get_surrogate,
)

# A non-default shape for every registered surrogate; the registry test below fails if a new
# surrogate is added without one, so the parametrised tests never silently skip it.
NON_DEFAULT_SHAPE: dict[str, dict[str, float]] = {
    "fast_sigmoid": {"slope": 5.0},
    "arctan": {"alpha": 4.0},
    "triangle": {"gamma": 0.5, "width": 0.5},
    "sigmoid": {"slope": 4.0},
    "gaussian": {"sigma": 0.2},
    "boxcar": {"width": 0.3},
}

CASES = [(name, {}) for name in SURROGATES] + list(NON_DEFAULT_SHAPE.items())
CASE_IDS = [f"{name}-default" for name in SURROGATES] + [
    f"{name}-{'-'.join(f'{k}{v}' for k, v in shape.items())}"
    for name, shape in NON_DEFAULT_SHAPE.items()
]


def _build(name: str, shape: dict[str, float]) -> Surrogate:
    return get_surrogate(name, **shape)


def _probe_points(surrogate: Surrogate, seed: int = 0) -> torch.Tensor:
    """Random float64 points plus exact 0 and points at and just around +-width edges."""
    gen = torch.Generator().manual_seed(seed)
    edges = [0.5, 1.0]  # default width and width / 2
    if hasattr(surrogate, "width"):
        w = float(surrogate.width)
        edges += [w, w / 2.0]
    special = [0.0, -0.0, 1e-300, -1e-300]
    for e in edges:
        for d in (0.0, 1e-9, -1e-9):
            special += [e + d, -(e + d)]
    rand = 2.0 * torch.randn(400, generator=gen, dtype=torch.float64)
    return torch.cat([rand, torch.tensor(special, dtype=torch.float64)]).reshape(2, -1)


def test_registry_names_match_classes_and_every_surrogate_has_a_non_default_case() -> None:
    assert set(NON_DEFAULT_SHAPE) == set(SURROGATES)
    for name, cls in SURROGATES.items():
        assert cls.name == name
        assert isinstance(get_surrogate(name), cls)
        assert get_surrogate(name) == cls()
    assert get_surrogate("fast_sigmoid", slope=10.0) == FastSigmoid(slope=10.0)
    assert get_surrogate("triangle", gamma=0.5, width=2.0) == Triangle(gamma=0.5, width=2.0)


@pytest.mark.parametrize(("name", "shape"), CASES, ids=CASE_IDS)
def test_autograd_backward_equals_pseudo_derivative_times_upstream(
    name: str, shape: dict[str, float]
) -> None:
    surrogate = _build(name, shape)
    x = _probe_points(surrogate).requires_grad_(True)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)

    z = spike(x, surrogate)
    (grad,) = torch.autograd.grad(z, x, grad_outputs=upstream)

    expected = upstream * surrogate.pseudo_derivative(x.detach())
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=0.0)
    # The probe points include values where the pseudo-derivative is non-zero, so this
    # is not vacuous for the compact-support surrogates either.
    assert (expected != 0).sum() > 10


@pytest.mark.parametrize(("name", "shape"), CASES, ids=CASE_IDS)
def test_forward_is_exact_heaviside_with_h0_equal_0(name: str, shape: dict[str, float]) -> None:
    surrogate = _build(name, shape)
    x = _probe_points(surrogate)
    z = spike(x.clone().requires_grad_(True), surrogate)
    assert z.dtype == torch.float64
    assert z.shape == x.shape
    assert torch.equal(z.detach(), (x > 0).to(torch.float64))
    zero = torch.tensor([0.0, -0.0, 1e-300, -1e-300], dtype=torch.float64)
    assert spike(zero, surrogate).tolist() == [0.0, 0.0, 1.0, 0.0]
    # heaviside on NumPy, too
    h = surrogate.heaviside(zero.numpy())
    assert isinstance(h, np.ndarray)
    assert h.tolist() == [0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize(("name", "shape"), CASES, ids=CASE_IDS)
def test_pseudo_derivative_numpy_equals_torch(name: str, shape: dict[str, float]) -> None:
    surrogate = _build(name, shape)
    x = _probe_points(surrogate)
    out_np = surrogate.pseudo_derivative(x.numpy().copy())
    out_torch = surrogate.pseudo_derivative(x)
    assert isinstance(out_np, np.ndarray)
    assert isinstance(out_torch, torch.Tensor)
    assert out_np.dtype == np.float64
    assert out_np.shape == tuple(x.shape)
    np.testing.assert_allclose(out_np, out_torch.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("name", "shape"), CASES, ids=CASE_IDS)
def test_pseudo_derivative_is_symmetric_peaked_at_zero_and_keeps_float32(
    name: str, shape: dict[str, float]
) -> None:
    surrogate = _build(name, shape)
    x = _probe_points(surrogate)
    pd = surrogate.pseudo_derivative(x)
    # All registered surrogates are even functions: exactly symmetric.
    assert torch.equal(pd, surrogate.pseudo_derivative(-x))
    assert bool((pd >= 0).all())
    # Non-increasing in |x|, maximal at 0.
    order = torch.argsort(x.abs().flatten())
    sorted_pd = pd.flatten()[order]
    assert bool((sorted_pd[1:] <= sorted_pd[:-1]).all())
    # dtype and shape are kept for float32 inputs on both backends.
    x32 = x.to(torch.float32)
    assert surrogate.pseudo_derivative(x32).dtype == torch.float32
    assert surrogate.pseudo_derivative(x32.numpy()).dtype == np.float32
    assert surrogate.pseudo_derivative(x32.numpy()).shape == tuple(x.shape)


@pytest.mark.parametrize(("name", "shape"), CASES, ids=CASE_IDS)
def test_pseudo_derivative_far_from_threshold_is_finite_without_warnings(
    name: str, shape: dict[str, float]
) -> None:
    """A neuron far below threshold (float32 NumPy, as an online learner may pass) must not
    overflow: ``exp(slope * 10)`` exceeds float32 for the logistic surrogate."""
    surrogate = _build(name, shape)
    x = np.array([-1e4, -40.0, -10.0, -4.0, 4.0, 10.0, 40.0, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = surrogate.pseudo_derivative(x)
        out64 = surrogate.pseudo_derivative(x.astype(np.float64))
    assert np.all(np.isfinite(out))
    assert np.all(out >= 0)
    assert np.all(np.isfinite(out64))
    np.testing.assert_array_equal(out, out[::-1])


# (surrogate, x, expected) with the arithmetic done by hand.
CLOSED_FORM = [
    # 1 / (1 + 25 * 0.04)^2 = 1 / 2^2
    (FastSigmoid(slope=25.0), 0.04, 0.25),
    (FastSigmoid(slope=25.0), -0.04, 0.25),
    (FastSigmoid(slope=25.0), 0.0, 1.0),
    # 1 / (1 + 5 * 0.6)^2 = 1 / 16
    (FastSigmoid(slope=5.0), 0.6, 0.0625),
    # alpha / 2 / (1 + (pi/2 * 2 * 0)^2) = 1
    (Arctan(alpha=2.0), 0.0, 1.0),
    # (pi/2 * 2 * 1/pi)^2 = 1  ->  1 / (1 + 1) = 0.5
    (Arctan(alpha=2.0), 1.0 / math.pi, 0.5),
    # alpha = 4: 2 / (1 + (2 pi * 1/(2 pi))^2) = 1
    (Arctan(alpha=4.0), -1.0 / (2.0 * math.pi), 1.0),
    # 0.3 * (1 - 0.5 / 1) = 0.15
    (Triangle(gamma=0.3, width=1.0), 0.5, 0.15),
    (Triangle(gamma=0.3, width=1.0), -0.5, 0.15),
    (Triangle(gamma=0.3, width=1.0), 0.0, 0.3),
    (Triangle(gamma=0.3, width=1.0), 1.0, 0.0),
    (Triangle(gamma=0.3, width=1.0), -1.0, 0.0),
    (Triangle(gamma=0.3, width=1.0), 1.7, 0.0),
    # width 2: 0.3 * (1 - 1/2) = 0.15; at |x| = 2 zero
    (Triangle(gamma=0.3, width=2.0), 1.0, 0.15),
    (Triangle(gamma=0.3, width=2.0), 2.0, 0.0),
    # 1{|x| < 1/2} / 1
    (Boxcar(width=1.0), 0.49, 1.0),
    (Boxcar(width=1.0), -0.49, 1.0),
    (Boxcar(width=1.0), 0.51, 0.0),
    (Boxcar(width=1.0), 0.5, 0.0),  # open interval
    # 1{|x| < 1/4} / 0.5 = 2
    (Boxcar(width=0.5), 0.2, 2.0),
    (Boxcar(width=0.5), 0.3, 0.0),
    # 1 / (sqrt(2 pi) * 0.5)
    (Gaussian(sigma=0.5), 0.0, 1.0 / (math.sqrt(2.0 * math.pi) * 0.5)),
    # one sigma away: exp(-1/2) / (sqrt(2 pi) * 0.5)
    (Gaussian(sigma=0.5), 0.5, math.exp(-0.5) / (math.sqrt(2.0 * math.pi) * 0.5)),
    # 25 * 1/2 * 1/2
    (Sigmoid(slope=25.0), 0.0, 6.25),
    # s(ln 3) = 3/4  ->  25 * 3/4 * 1/4 = 4.6875
    (Sigmoid(slope=25.0), math.log(3.0) / 25.0, 4.6875),
    (Sigmoid(slope=25.0), -math.log(3.0) / 25.0, 4.6875),
]


@pytest.mark.parametrize(("surrogate", "x", "expected"), CLOSED_FORM)
def test_pseudo_derivative_closed_form_values(
    surrogate: Surrogate, x: float, expected: float
) -> None:
    got_t = surrogate.pseudo_derivative(torch.tensor([x], dtype=torch.float64))
    got_n = surrogate.pseudo_derivative(np.array([x], dtype=np.float64))
    assert got_t.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert got_n.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def _integral_on(surrogate: Surrogate, half_range: float, step: float) -> float:
    """Trapezoid rule on [-half_range, half_range]: ``step`` on [-1, 1] (the peak and any cusp
    at 0, which is a grid point), 1e-3 on the tails beyond."""
    core = np.linspace(-1.0, 1.0, round(2.0 / step) + 1)
    if half_range > 1.0:
        tail = np.linspace(1.0, half_range, round((half_range - 1.0) / 1e-3) + 1)[1:]
        core = np.concatenate([-tail[::-1], core, tail])
    return float(np.trapezoid(surrogate.pseudo_derivative(core), core))


@pytest.mark.parametrize(("name", "shape"), CASES, ids=CASE_IDS)
def test_pseudo_derivative_integral(name: str, shape: dict[str, float]) -> None:
    """Area under the pseudo-derivative, against its closed form.

    Gaussian, logistic, boxcar: 1 (a density). Arctan: 1 over the real line; its 1/x^2 tail
    is checked on [-L, L] against ``(2/pi) arctan(pi alpha L / 2)``. Triangle:
    ``gamma * width``. Fast sigmoid: ``2 / slope`` on the real line, truncated to
    ``(2 / slope) (1 - 1 / (1 + slope L))``.
    """
    s = _build(name, shape)
    if isinstance(s, Gaussian | Sigmoid):
        assert _integral_on(s, 20.0, 1e-4) == pytest.approx(1.0, abs=1e-6)
    elif isinstance(s, Boxcar):
        # trapezoid on a discontinuity errs by at most one grid step
        assert _integral_on(s, 2.0, 1e-5) == pytest.approx(1.0, abs=2e-5)
    elif isinstance(s, Triangle):
        assert _integral_on(s, 5.0, 1e-4) == pytest.approx(s.gamma * s.width, rel=1e-7)
    elif isinstance(s, Arctan):
        half = 1000.0
        truncated = 2.0 / math.pi * math.atan(math.pi * s.alpha * half / 2.0)
        assert _integral_on(s, half, 1e-5) == pytest.approx(truncated, rel=1e-6)
        assert truncated == pytest.approx(1.0, abs=1e-3)
    elif isinstance(s, FastSigmoid):
        half = 1000.0
        truncated = 2.0 / s.slope * (1.0 - 1.0 / (1.0 + s.slope * half))
        assert _integral_on(s, half, 1e-5) == pytest.approx(truncated, rel=1e-6)
    else:  # pragma: no cover - guards against an unhandled new surrogate
        pytest.fail(f"no integral oracle for {name}")


def test_unknown_surrogate_name_lists_all_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown surrogate 'nope'") as info:
        get_surrogate("nope")
    message = str(info.value)
    for name in SURROGATES:
        assert name in message


@pytest.mark.parametrize(
    ("name", "bad", "accepted"),
    [
        ("triangle", {"slope": 3.0}, ("gamma", "width")),
        ("fast_sigmoid", {"alpha": 3.0}, ("slope",)),
        ("gaussian", {"sigma": 0.5, "width": 1.0}, ("sigma",)),
        ("boxcar", {"gamma": 1.0}, ("width",)),
    ],
)
def test_wrong_parameter_name_lists_accepted_parameters(
    name: str, bad: dict[str, float], accepted: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match=f"surrogate '{name}' takes parameters") as info:
        get_surrogate(name, **bad)
    message = str(info.value)
    for field in accepted:
        assert field in message
    for key in bad:
        assert key in message  # what was passed is echoed back
