"""Efficiency figures under NeuroBench's names and definitions (Yik et al. 2025, Nature
Communications 16, 1545; package ``neurobench`` 2.3, ``neurobench.metrics``).

- ``ActivationSparsity``: zero activations / all activations of the spiking layers, over
  every neuron and time step (:func:`bci.metrics.activation_sparsity`).
- ``SynapticOperations``: per sample (here one bin), a dict of ``Effective_MACs``,
  ``Effective_ACs`` and ``Dense``. For a connection layer with weights ``W (M, N)`` and
  input ``a (N,)``, the effective operations are ``Σ_n 1[a_n ≠ 0] · #{m: W_mn ≠ 0}`` (zero
  inputs and zero weights skipped; bias not counted); they are ACs for a sample whose
  inputs to the layer are all in {-1, 0, 1} (spikes) and MACs otherwise (NeuroBench decides
  per forward call; here per bin, i.e. NeuroBench run bin by bin at batch 1, as the decoder
  runs online). ``Dense`` counts ``M · N`` per layer per sample, zeros and all. Recurrent
  cells (GRU, LSTM) add NeuroBench's element-wise gate products.
- ``Footprint``: bytes of parameters and buffers (:func:`bci.metrics.footprint_bytes`).
- ``ConnectionSparsity``: zero weights / all weights of the connection layers (biases of
  linear layers excluded; recurrent layers count ``weight_ih``, ``weight_hh`` and biases).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bci.metrics import activation_sparsity, footprint_bytes
from bci.validation import to_numpy

__all__ = [
    "connection_sparsity",
    "recurrent_dense_ops",
    "recurrent_efficiency",
    "snn_efficiency",
    "synaptic_operations_nb",
]

_GATES = {"gru": 3, "lstm": 4}
# NeuroBench's element-wise products per hidden unit and step, with every value non-zero:
# GRU r*(W_hn h + b_hn), (1 - z)*n, z*h; LSTM f*c, i*g, o*tanh(c).
_ELEMENTWISE = {"gru": 3, "lstm": 3}


def synaptic_operations_nb(layers: Sequence[tuple[Any, Any]]) -> dict[str, float]:
    """NeuroBench ``SynapticOperations`` per bin of a stack of connection layers.

    ``layers`` holds ``(activity, weight)`` pairs: presynaptic activity ``(T, N)`` or
    ``(T, B, N)`` (time-major) and the layer's weight ``(M, N)``. Returns the mean per bin
    (and batch sample) of ``Effective_MACs``, ``Effective_ACs`` and ``Dense``.
    """
    totals = {"Effective_MACs": 0.0, "Effective_ACs": 0.0, "Dense": 0.0}
    for activity, weight in layers:
        a, w = to_numpy(activity), to_numpy(weight)
        if w.ndim != 2 or a.shape[-1] != w.shape[1]:
            raise ValueError(f"activity (..., {a.shape[-1]}) does not feed weight {w.shape}")
        rows = a.reshape(-1, w.shape[1])
        ops = (rows != 0).astype(np.float64) @ (w != 0).sum(axis=0)  # per sample
        spiking = np.all((rows == 0) | (rows == 1) | (rows == -1), axis=1)
        totals["Effective_ACs"] += float(ops[spiking].sum() / rows.shape[0])
        totals["Effective_MACs"] += float(ops[~spiking].sum() / rows.shape[0])
        totals["Dense"] += float(w.size)
    return totals


def recurrent_dense_ops(cell: str, n_in: int, hidden: int, layers: int, n_out: int) -> float:
    """NeuroBench ``Dense`` synaptic operations per bin of a GRU or LSTM stack plus its
    linear readout: per layer ``gates · H · (I + H)`` weight products and the cell's
    element-wise gate products, then ``K · H`` for the readout. With z-scored inputs and
    tanh states no value is exactly zero, so this is also its ``Effective_MACs``."""
    if cell not in _GATES:
        raise ValueError(f"unknown cell {cell!r}; valid: {', '.join(_GATES)}")
    total, width = 0, n_in
    for _ in range(layers):
        total += _GATES[cell] * hidden * (width + hidden) + _ELEMENTWISE[cell] * hidden
        width = hidden
    return float(total + n_out * hidden)


def connection_sparsity(weights: Sequence[Any]) -> float:
    """NeuroBench ``ConnectionSparsity``: zeros / entries over the given weight arrays."""
    arrays = [to_numpy(w) for w in weights]
    total = sum(a.size for a in arrays)
    if total == 0:
        raise ValueError("connection_sparsity needs at least one weight")
    return float(sum(a.size - np.count_nonzero(a) for a in arrays) / total)


def snn_efficiency(model: Any, neural: np.ndarray, spikes: np.ndarray) -> dict[str, Any]:
    """The four NeuroBench figures of a :class:`bci.rsnn.RSNN` that decoded ``neural``
    ``(T, C)`` (raw counts) into hidden ``spikes`` ``(T, H)``.

    The input layer is counted on the raw counts: the input z-score folds into ``W_in`` and
    a constant bias, which NeuroBench does not count, so a silent channel costs nothing.
    Connection layers: ``W_in``, ``W_rec`` (diagonal held at zero) and ``W_out``.
    """
    w_in = model.w_in.detach()
    w_rec = model.recurrent_weights.detach()
    w_out = model.w_out.detach()
    return {
        "ActivationSparsity": activation_sparsity(spikes),
        "SynapticOperations": synaptic_operations_nb(
            [(neural, w_in), (spikes, w_rec), (spikes, w_out)]
        ),
        "Footprint": footprint_bytes(model),
        "ConnectionSparsity": connection_sparsity([w_in, w_rec, w_out]),
    }


def recurrent_efficiency(decoder: Any) -> dict[str, Any]:
    """NeuroBench figures of a fitted :class:`bci.rnn_baselines.RecurrentDecoder` (no
    ``ActivationSparsity``: its activations are not spikes and are never exactly zero).
    ``ConnectionSparsity`` counts the recurrent layer's weights and biases and the readout's
    weight, as NeuroBench does."""
    net = decoder.network_
    recurrent = [p.detach() for name, p in net.rnn.named_parameters() if "_l" in name]
    dense = recurrent_dense_ops(
        decoder.cell, net.rnn.input_size, decoder.hidden, decoder.layers, decoder.n_outputs
    )
    return {
        "SynapticOperations": {"Effective_MACs": dense, "Effective_ACs": 0.0, "Dense": dense},
        "Footprint": footprint_bytes(decoder.parameter_arrays()),
        "ConnectionSparsity": connection_sparsity([*recurrent, net.readout.weight.detach()]),
    }
