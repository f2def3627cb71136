"""Surrogate gradients for the spike non-linearity.

Every surrogate has the same forward pass, the Heaviside step ``z = H(x)`` with ``H(0) = 0``,
applied to the scaled distance to threshold ``x = (v - threshold) / threshold`` (dimensionless).
They differ only in the pseudo-derivative ``dz/dx`` used in place of the Dirac delta during
learning. ``pseudo_derivative`` is a plain function of ``x`` (NumPy array or torch tensor, no
autograd), so online learners such as e-prop call it directly; :func:`bci.spike.spike` wraps
it in an autograd Function for BPTT.

This module does not import torch (the decoder process runs without it): a tensor argument is
recognised by its ``detach`` method, and its own module (``torch``, already imported since
the tensor exists) does the arithmetic.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

Array = Any  # np.ndarray or torch.Tensor


def _is_tensor(x: Array) -> bool:
    return hasattr(x, "detach")


def _backend(x: Array) -> Any:
    return sys.modules["torch"] if _is_tensor(x) else np


def _cast(mask: Array, like: Array) -> Array:
    """Boolean ``mask`` as numbers in the dtype of ``like``."""
    return mask.to(like.dtype) if _is_tensor(like) else mask.astype(like.dtype)


@dataclass(frozen=True)
class Surrogate:
    """A spike non-linearity: Heaviside forward, named pseudo-derivative backward."""

    name: ClassVar[str] = ""

    def pseudo_derivative(self, x: Array) -> Array:
        """Return the surrogate ``dz/dx`` at ``x`` (same type and shape as ``x``)."""
        raise NotImplementedError

    def heaviside(self, x: Array) -> Array:
        """Return ``H(x)``: 1.0 where ``x > 0``, else 0.0, in the dtype of ``x``."""
        return _cast(x > 0, x)


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike: ``1 / (1 + slope |x|)^2`` (Zenke & Ganguli 2018, Neural Computation)."""

    name: ClassVar[str] = "fast_sigmoid"
    slope: float = 25.0

    def pseudo_derivative(self, x: Array) -> Array:
        return 1.0 / (1.0 + self.slope * abs(x)) ** 2


@dataclass(frozen=True)
class Arctan(Surrogate):
    """``alpha / 2 / (1 + (pi/2 alpha x)^2)`` (Fang et al. 2021, ICCV)."""

    name: ClassVar[str] = "arctan"
    alpha: float = 2.0

    def pseudo_derivative(self, x: Array) -> Array:
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x) ** 2)


@dataclass(frozen=True)
class Triangle(Surrogate):
    """Piecewise linear: ``gamma * max(0, 1 - |x| / width)`` (Bellec et al. 2018, 2020)."""

    name: ClassVar[str] = "triangle"
    gamma: float = 0.3
    width: float = 1.0

    def pseudo_derivative(self, x: Array) -> Array:
        return self.gamma * (1.0 - abs(x) / self.width).clip(min=0.0)


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """Derivative of a logistic: ``slope s(slope x) (1 - s(slope x))`` (Neftci et al. 2019)."""

    name: ClassVar[str] = "sigmoid"
    slope: float = 25.0

    def pseudo_derivative(self, x: Array) -> Array:
        # s(u) (1 - s(u)) = e / (1 + e)^2 with e = exp(-|u|): symmetric in u, never overflows
        # and avoids the cancellation in 1 - s(u) for large u.
        e = _backend(x).exp(-self.slope * abs(x))
        return self.slope * e / (1.0 + e) ** 2


@dataclass(frozen=True)
class Gaussian(Surrogate):
    """Normal density ``exp(-x^2 / 2 sigma^2) / (sqrt(2 pi) sigma)`` (Wu et al. 2018, STBP)."""

    name: ClassVar[str] = "gaussian"
    sigma: float = 0.5

    def pseudo_derivative(self, x: Array) -> Array:
        xp = _backend(x)
        return xp.exp(-(x**2) / (2.0 * self.sigma**2)) / (math.sqrt(2.0 * math.pi) * self.sigma)


@dataclass(frozen=True)
class Boxcar(Surrogate):
    """Rectangular window ``1{|x| < width/2} / width`` (Wu et al. 2018, STBP); with a large
    width this is the straight-through estimator (Bengio et al. 2013)."""

    name: ClassVar[str] = "boxcar"
    width: float = 1.0

    def pseudo_derivative(self, x: Array) -> Array:
        return _cast(abs(x) < self.width / 2.0, x) / self.width


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (FastSigmoid, Arctan, Triangle, Sigmoid, Gaussian, Boxcar)
}


def get_surrogate(name: str, **shape: float) -> Surrogate:
    """Build a surrogate by name, e.g. ``get_surrogate("fast_sigmoid", slope=10)``.

    Raises ``ValueError`` listing the valid names (or parameters) when either is unknown.
    """
    try:
        cls = SURROGATES[name]
    except KeyError:
        raise ValueError(
            f"unknown surrogate {name!r}; valid names: {', '.join(sorted(SURROGATES))}"
        ) from None
    try:
        return cls(**shape)
    except TypeError:
        fields = ", ".join(f for f in cls.__dataclass_fields__)
        raise ValueError(
            f"surrogate {name!r} takes parameters ({fields}); got {sorted(shape)}"
        ) from None
