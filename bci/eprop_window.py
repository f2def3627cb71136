"""E-prop's eligibility traces and their windowed update (pure numerics, no state).

The traces ``ev``, ``ea``, ``eb`` follow the recursion in :mod:`bci.eprop`; a window adds
``sum_t L[t] eb[t]`` to the gradient. :func:`reference_step` does it bin by bin, the direct
way; :func:`window_update` a window at a time.

Windowed formulation. Per neuron that recursion is linear with time-varying scalar
coefficients, so over a window of ``K`` bins both the window's gradient and the new traces are

    G      = diag(g_v) ev0 + diag(g_a) ea0 + diag(g_b) eb0 + N P
    ev_new = diag(f_vv) ev0 + ...          (a 3 x 3 per-neuron map of the old traces)

with ``P`` the window's presynaptic signals (K, I + H) and ``N`` (H, K) per-neuron
coefficients. All coefficients come from four reverse-time adjoint recursions over the
window, O(K H) (compiled with Numba); the (H x K)(K x I+H) products run as one BLAS call and
one pass over the (H, I + H) traces carries them over. This equals per-bin accumulation
(:func:`reference_step`) to rounding error (tested for K in {1, 7, 50}), at ``4 / K`` of
its memory traffic per bin.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from bci.jit import CUBE, MATRIX, as_argument, for_floats, kernel, void

__all__ = ["Traces", "leaky_filter", "reference_step", "window_update"]


@dataclass
class Traces:
    """Eligibility vectors ``ev``, ``ea`` and filtered traces ``eb``, each (H, P)."""

    ev: np.ndarray
    ea: np.ndarray
    eb: np.ndarray

    @classmethod
    def zeros(cls, n_hidden: int, n_pre: int, dtype: type = np.float64) -> Traces:
        return cls(*(np.zeros((n_hidden, n_pre), dtype=dtype) for _ in range(3)))

    def clear(self) -> None:
        for array in (self.ev, self.ea, self.eb):
            array.fill(0.0)


def reference_step(
    traces: Traces,
    p: np.ndarray,
    at: np.ndarray,
    c: np.ndarray,
    learning_signal: np.ndarray,
    rho: np.ndarray,
    beta: np.ndarray,
    kappa: float,
    grad: np.ndarray,
) -> None:
    """Advance the traces one bin and add ``L[t] eb[t]`` to ``grad``, the direct way.

    ``p`` (P,) presynaptic signals; ``at``, ``c``, ``learning_signal``, ``rho``, ``beta``
    (H,). Reads and writes every (H, P) array each bin: the oracle for :func:`window_update`.
    """
    ea_prev = traces.ea.copy()
    traces.ev *= at[:, None]
    traces.ev += p[None, :]
    e = c[:, None] * (traces.ev - beta[:, None] * ea_prev)
    traces.ea *= rho[:, None]
    traces.ea += (1.0 - rho)[:, None] * e
    traces.eb *= kappa
    traces.eb += e
    grad += learning_signal[:, None] * traces.eb


@kernel(
    [void(*["float64[:, ::1]"] * 3, *["float64[::1]"] * 2, "float64", *["float64[:, :, ::1]"] * 2)]
)
def _window_coefficients(
    at: np.ndarray,
    c: np.ndarray,
    learning_signal: np.ndarray,
    rho: np.ndarray,
    beta: np.ndarray,
    kappa: float,
    coef_p: np.ndarray,
    coef_0: np.ndarray,
) -> None:
    """Reverse-time adjoints of four linear functionals of one window.

    Functional 0 is the gradient ``sum_t L[t] eb[t]``; 1, 2, 3 are the final ``ev``, ``ea``,
    ``eb``. ``coef_p[r, j, k]`` is d(functional r)/d p[k] for neuron j; ``coef_0[r, s, j]``
    its derivative with respect to the initial trace s (ev, ea, eb). With adjoints
    ``nu = d/d ev``, ``eta = d/d ea``, ``zeta = d/d eb``, ``mu = d/d e``::

        zeta[t] = d_b[t] + kappa zeta[t+1]
        eta[t]  = d_a[t] + rho eta[t+1] - beta c[t+1] mu[t+1]
        mu[t]   = zeta[t] + (1 - rho) eta[t]
        nu[t]   = d_v[t] + c[t] mu[t] + at[t+1] nu[t+1]
    """
    n_steps, n_hidden = at.shape
    last = n_steps - 1
    for r in range(4):
        for j in range(n_hidden):
            zeta = 0.0
            eta = 0.0
            mu = 0.0
            nu = 0.0
            c_next = 0.0
            at_next = 0.0
            for k in range(last, -1, -1):
                d_b = learning_signal[k, j] if r == 0 else (1.0 if (r == 3 and k == last) else 0.0)
                d_a = 1.0 if (r == 2 and k == last) else 0.0
                d_v = 1.0 if (r == 1 and k == last) else 0.0
                zeta = d_b + kappa * zeta
                eta = d_a + rho[j] * eta - beta[j] * c_next * mu
                mu = zeta + (1.0 - rho[j]) * eta
                nu = d_v + c[k, j] * mu + at_next * nu
                coef_p[r, j, k] = nu
                c_next = c[k, j]
                at_next = at[k, j]
            coef_0[r, 0, j] = at_next * nu
            coef_0[r, 1, j] = rho[j] * eta - beta[j] * c_next * mu
            coef_0[r, 2, j] = kappa * zeta


@kernel(for_floats(void(*[MATRIX] * 4, CUBE, CUBE)))
def _carry(
    ev: np.ndarray,
    ea: np.ndarray,
    eb: np.ndarray,
    grad: np.ndarray,
    coef_0: np.ndarray,
    products: np.ndarray,
) -> None:
    """One pass over the (H, P) traces: ``grad += ...`` and the new traces, in place."""
    n_hidden, n_pre = ev.shape
    for j in range(n_hidden):
        g0, g1, g2 = coef_0[0, 0, j], coef_0[0, 1, j], coef_0[0, 2, j]
        v0, v1, v2 = coef_0[1, 0, j], coef_0[1, 1, j], coef_0[1, 2, j]
        a0, a1, a2 = coef_0[2, 0, j], coef_0[2, 1, j], coef_0[2, 2, j]
        b0, b1, b2 = coef_0[3, 0, j], coef_0[3, 1, j], coef_0[3, 2, j]
        for i in range(n_pre):
            old_v, old_a, old_b = ev[j, i], ea[j, i], eb[j, i]
            grad[j, i] += g0 * old_v + g1 * old_a + g2 * old_b + products[0, j, i]
            ev[j, i] = v0 * old_v + v1 * old_a + v2 * old_b + products[1, j, i]
            ea[j, i] = a0 * old_v + a1 * old_a + a2 * old_b + products[2, j, i]
            eb[j, i] = b0 * old_v + b1 * old_a + b2 * old_b + products[3, j, i]


def window_update(
    traces: Traces,
    presynaptic: np.ndarray,
    at: np.ndarray,
    c: np.ndarray,
    learning_signal: np.ndarray,
    rho: np.ndarray,
    beta: np.ndarray,
    kappa: float,
    grad: np.ndarray,
) -> None:
    """Advance the traces over a window of K bins and add its gradient to ``grad``.

    ``presynaptic`` (K, P); ``at``, ``c``, ``learning_signal`` (K, H); ``rho``, ``beta`` (H,).
    Equal to K calls of :func:`reference_step`.
    """
    n_steps, n_hidden = at.shape
    dtype = traces.ev.dtype
    coef_p = np.empty((4, n_hidden, n_steps), dtype=np.float64)
    coef_0 = np.empty((4, 3, n_hidden), dtype=np.float64)
    _window_coefficients(
        as_argument(at, np.float64),
        as_argument(c, np.float64),
        as_argument(learning_signal, np.float64),
        as_argument(rho, np.float64),
        as_argument(beta, np.float64),
        float(kappa),
        coef_p,
        coef_0,
    )
    products = coef_p.astype(dtype, copy=False).reshape(4 * n_hidden, n_steps) @ presynaptic
    _carry(traces.ev, traces.ea, traces.eb, grad, coef_0.astype(dtype, copy=False),
           products.reshape(4, n_hidden, -1))  # fmt: skip


def leaky_filter(x: np.ndarray, decay: float, initial: np.ndarray) -> np.ndarray:
    """``y[t] = decay y[t-1] + x[t]`` over (n, H) ``x`` from ``initial``, as one matmul."""
    matrix, powers = _filter_matrices(x.shape[0], float(decay), x.dtype)
    return matrix @ x + powers * initial


@functools.lru_cache(maxsize=8)
def _filter_matrices(n: int, decay: float, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """:func:`leaky_filter`'s (n, n) lower-triangular ``decay ** (t - s)`` and (n, 1)
    ``decay ** (t + 1)``, built once per window length and decay (read-only)."""
    lag = np.arange(n)[:, None] - np.arange(n)[None, :]
    matrix = np.where(lag >= 0, decay ** np.maximum(lag, 0), 0.0).astype(dtype)
    powers = (decay ** np.arange(1, n + 1, dtype=dtype))[:, None]
    matrix.flags.writeable = powers.flags.writeable = False
    return matrix, powers
