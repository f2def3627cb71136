"""E-prop's optimiser kernels: a gradient turned into a parameter change (SGD or Adam),
then applied with a bound on every weight (flat arrays, in place, compiled with Numba)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bci.jit import VECTOR, for_floats, kernel, void

__all__ = ["AdamMoments", "apply_step", "optimizer_step"]


@dataclass
class AdamMoments:
    """Adam's first and second moments of one parameter array, and its step count ``t``
    (empty arrays for SGD)."""

    m: np.ndarray
    v: np.ndarray
    t: int = 0


# error_model="numpy": no division-by-zero check (the divisor is >= eps > 0), which would keep
# the loop from being vectorised (6x slower for a 256 x 256 float32 matrix).
@kernel(
    for_floats(void(VECTOR, VECTOR, VECTOR, "float64", "boolean", *["float64"] * 3, "int64")),
    fastmath=True,
    error_model="numpy",
)
def optimizer_step(
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr: float,
    adam: bool,
    beta1: float,
    beta2: float,
    eps: float,
    t: int,
) -> None:
    """Turn ``grad`` (flat) into the parameter change, in place: ``-lr g`` (SGD) or Adam's
    ``-lr m^ / (sqrt(v^) + eps)`` with bias-corrected moments ``m``, ``v``."""
    if not adam:
        for i in range(grad.shape[0]):
            grad[i] = -lr * grad[i]
        return
    # Constants in the arrays' dtype keep the loop in float32 (and vectorised) for float32.
    one = grad.dtype.type(1.0)
    b1 = grad.dtype.type(beta1)
    b2 = grad.dtype.type(beta2)
    step_size = grad.dtype.type(-lr / (1.0 - beta1**t))
    inv_correction2 = grad.dtype.type(1.0 / (1.0 - beta2**t))
    epsilon = grad.dtype.type(eps)
    for i in range(grad.shape[0]):
        g = grad[i]
        m[i] = b1 * m[i] + (one - b1) * g
        v[i] = b2 * v[i] + (one - b2) * g * g
        grad[i] = step_size * m[i] / (np.sqrt(v[i] * inv_correction2) + epsilon)


@kernel(for_floats(void(VECTOR, VECTOR, "float64", "float64")))
def apply_step(param: np.ndarray, step: np.ndarray, scale: float, bound: float) -> None:
    """``param += scale step``, clipped to ``[-bound, bound]`` (flat arrays), in place."""
    for i in range(param.shape[0]):
        value = param[i] + scale * step[i]
        param[i] = min(max(value, -bound), bound)
