"""What a neuromorphic chip budgets for an RSNN decoder, and the decoder on quantized weights.

Counts are of the three weight matrices a chip stores: ``w_in`` (inputs to hidden), the
recurrent ``W_rec`` without its diagonal, and ``w_out`` (hidden to readout); a synapse is a
nonzero entry. The input normalisation, the readout bias and the output scaling are per
channel constants a host applies (or a chip holds as biases), not synapses.

Quantization is symmetric, uniform and per matrix, the usual form of on-chip integer
weights: with ``b`` bits the levels are ``k * step`` for integers ``|k| <= 2^(b-1) - 1`` and
``step = max|W| / (2^(b-1) - 1)``; each weight is rounded to the nearest level.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from bci.rsnn import RSNN

__all__ = ["HardwareBudget", "hardware_budget", "quantize", "quantized_model"]


@dataclass(frozen=True)
class HardwareBudget:
    """Sizes of one decoder: neurons, synapses per matrix, hidden fan-in, weight ranges."""

    hidden_neurons: int
    readout_neurons: int
    synapses: dict[str, int]  # w_in, w_rec, w_out: nonzero weights
    fan_in_max: int  # synapses into one hidden neuron (inputs + recurrent), largest
    fan_in_mean: float
    weight_range: dict[str, tuple[float, float]]  # (min, max) per matrix

    @property
    def total_synapses(self) -> int:
        return sum(self.synapses.values())


def _matrices(model: RSNN) -> dict[str, np.ndarray]:
    return {
        "w_in": model.w_in.detach().double().numpy(),
        "w_rec": model.recurrent_weights.detach().double().numpy(),
        "w_out": model.w_out.detach().double().numpy(),
    }


def hardware_budget(model: RSNN) -> HardwareBudget:
    """Neurons, synapses, fan-in and weight ranges of ``model`` (see the module docstring)."""
    weights = _matrices(model)
    nonzero = {name: w != 0 for name, w in weights.items()}
    fan_in = nonzero["w_in"].sum(axis=1) + nonzero["w_rec"].sum(axis=1)
    return HardwareBudget(
        hidden_neurons=model.config.n_hidden,
        readout_neurons=model.config.n_out,
        synapses={name: int(mask.sum()) for name, mask in nonzero.items()},
        fan_in_max=int(fan_in.max()),
        fan_in_mean=float(fan_in.mean()),
        weight_range={
            name: (float(w[mask].min()), float(w[mask].max())) if mask.any() else (0.0, 0.0)
            for (name, w), mask in zip(weights.items(), nonzero.values(), strict=True)
        },
    )


def quantize(weights: torch.Tensor, bits: int) -> torch.Tensor:
    """``weights`` rounded to ``bits``-bit symmetric levels (same dtype; all-zero stays zero)."""
    if bits < 2:
        raise ValueError(f"bits must be 2 or more (a sign and a magnitude); got {bits}")
    levels = 2 ** (bits - 1) - 1
    peak = weights.abs().max()
    if peak == 0:
        return weights.clone()
    step = peak / levels
    return torch.round(weights / step) * step


@torch.no_grad()
def quantized_model(model: RSNN, bits: int) -> RSNN:
    """A copy of ``model`` whose ``w_in``, ``W_rec`` and ``w_out`` are quantized to ``bits``."""
    copied = copy.deepcopy(model)
    copied.w_in.copy_(quantize(model.w_in, bits))
    copied.w_rec.copy_(quantize(model.recurrent_weights, bits))  # diagonal dropped: unused
    copied.w_out.copy_(quantize(model.w_out, bits))
    return copied
