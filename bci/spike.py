"""Differentiable spike for BPTT: Heaviside forward, a surrogate's pseudo-derivative backward.

The autograd face of :mod:`bci.surrogates`, kept apart so that the surrogates (and the
decoder process that uses their NumPy pseudo-derivatives) need no torch.
"""

from __future__ import annotations

from typing import Any

import torch

from bci.surrogates import Surrogate


class SpikeFunction(torch.autograd.Function):
    """``z = H(x)`` forward; ``dL/dx = dL/dz * surrogate.pseudo_derivative(x)`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return surrogate.heaviside(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.pseudo_derivative(x), None


def spike(x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """Spikes ``H(x)`` (same dtype as ``x``) whose gradient is ``surrogate``'s."""
    return SpikeFunction.apply(x, surrogate)
