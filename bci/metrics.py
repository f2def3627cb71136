"""Decoding and efficiency metrics, following the NeuroBench definitions.

Accuracy: the coefficient of determination ``r2_score`` (NeuroBench's primate-reaching R²) and
the Pearson correlation ``pearson_r``. Efficiency: ``activation_sparsity``,
``synaptic_operations`` (per time step) and ``footprint_bytes``.

Reference: Yik et al. (2025), "The NeuroBench framework for benchmarking neuromorphic
computing algorithms and systems", Nature Communications 16, 1545.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bci.validation import check_finite, check_shape, to_numpy

__all__ = [
    "activation_sparsity",
    "footprint_bytes",
    "pearson_r",
    "r2_score",
    "synaptic_operations",
    "windowed_r2",
]


def _as_time_major_2d(name: str, array: Any) -> np.ndarray:
    """Return ``array`` as a float64 ``(T, K)`` array; 1-D input becomes ``(T, 1)``."""
    values = to_numpy(array).astype(np.float64, copy=False)
    if values.ndim == 1:
        values = values[:, None]
    check_shape(name, values, (None, None), axes=("T", "K"))
    if values.shape[0] == 0:
        raise ValueError(f"{name} has no time bins; pass at least one bin")
    check_finite(name, values)
    return values


def _paired(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    true = _as_time_major_2d("y_true", y_true)
    pred = _as_time_major_2d("y_pred", y_pred)
    check_shape("y_pred", pred, true.shape, axes=("T", "K"), owner="y_true")
    return true, pred


def r2_score(y_true: Any, y_pred: Any) -> tuple[float, np.ndarray]:
    """Coefficient of determination per output dimension and its mean over dimensions.

    For dimension ``k`` with ``n`` time bins::

        R²_k = 1 - Σ_t (y_tk - ŷ_tk)² / (n · Var_t(y_tk)),   Var with ddof = 0

    and the score is ``mean_k R²_k`` (NeuroBench averages the x and y velocity R²). A
    dimension whose true values are constant has an undefined R²; as in scikit-learn it is
    1.0 for an exact prediction and 0.0 otherwise. ``y_true`` and ``y_pred`` are ``(T, K)``
    (or ``(T,)``) arrays of equal shape.

    Returns:
        ``(mean R², per-dimension R² of shape (K,))``.
    """
    true, pred = _paired(y_true, y_pred)
    sse = np.sum((true - pred) ** 2, axis=0)
    sst = np.sum((true - true.mean(axis=0)) ** 2, axis=0)  # = n · Var (ddof = 0)
    constant = np.ptp(true, axis=0) == 0
    per_dim = np.where(
        constant,
        np.where(sse == 0, 1.0, 0.0),
        1.0 - sse / np.where(constant, 1.0, sst),
    )
    return float(per_dim.mean()), per_dim


def windowed_r2(
    y_true: Any, y_pred: Any, bin_s: float, window_s: float, start_s: float = 0.0
) -> list[list[float]]:
    """:func:`r2_score` over consecutive full windows of ``window_s`` seconds of (T, K) data.

    Returns ``[[t_start, t_end, r2], ...]`` in seconds, the first bin starting at ``start_s``;
    a final partial window is left out.
    """
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive number of seconds; got {window_s}")
    truth, decoded = _paired(y_true, y_pred)
    n = max(1, round(window_s / bin_s))
    rows = []
    for i in range(0, truth.shape[0] - n + 1, n):
        r2, _ = r2_score(truth[i : i + n], decoded[i : i + n])
        rows.append([start_s + i * bin_s, start_s + (i + n) * bin_s, float(r2)])
    return rows


def pearson_r(y_true: Any, y_pred: Any) -> np.ndarray:
    """Pearson correlation between true and predicted values, per dimension, shape ``(K,)``.

    ``r_k = Σ_t a_tk b_tk / sqrt(Σ_t a_tk² · Σ_t b_tk²)`` with ``a``, ``b`` the mean-removed
    true and predicted values. A dimension in which either column is constant has no
    correlation and gives 0.0 (no warning).
    """
    true, pred = _paired(y_true, y_pred)
    a = true - true.mean(axis=0)
    b = pred - pred.mean(axis=0)
    den = np.sqrt(np.sum(a * a, axis=0) * np.sum(b * b, axis=0))
    defined = (np.ptp(true, axis=0) > 0) & (np.ptp(pred, axis=0) > 0) & (den > 0)
    r = np.zeros(true.shape[1])
    r[defined] = np.sum(a * b, axis=0)[defined] / den[defined]
    return np.clip(r, -1.0, 1.0)


def activation_sparsity(spikes: Any) -> float:
    """Fraction of activations that are exactly zero, over all neurons and time steps.

    ``sparsity = #{a == 0} / #{a}`` for an array (or tensor) of any shape. A sequence of
    arrays (e.g. one per layer) is pooled, as NeuroBench pools all spiking layers.
    """
    parts = (
        [to_numpy(s) for s in spikes] if isinstance(spikes, (list, tuple)) else [to_numpy(spikes)]
    )
    total = sum(p.size for p in parts)
    if total == 0:
        raise ValueError("activation_sparsity needs at least one activation; got an empty array")
    for i, p in enumerate(parts):
        check_finite(f"activations[{i}]" if len(parts) > 1 else "activations", p)
    zeros = sum(p.size - np.count_nonzero(p) for p in parts)
    return float(zeros / total)


def synaptic_operations(activity: Any, fan_out: int | Any) -> float:
    """Mean number of effective synaptic operations per time step (and batch sample).

    For activity ``a`` of shape ``(T, N)`` or ``(T, B, N)`` (time-major, ``N`` presynaptic
    units) and ``fan_out[n]`` outgoing synapses of unit ``n``::

        SynOps = mean_{t, b} Σ_n 1[a_tbn ≠ 0] · fan_out[n]

    For binary spikes this is NeuroBench's effective accumulate count; for graded inputs each
    non-zero value is likewise counted as one operation per outgoing synapse (zeros are
    skipped). NeuroBench reports operations per *sample*: multiply by ``T`` to compare.

    Args:
        activity: presynaptic activity, time-major.
        fan_out: outgoing synapses per unit, an int for all units or an ``(N,)`` array.
    """
    a = to_numpy(activity)
    if a.ndim not in (2, 3):
        raise ValueError(
            f"activity has shape {a.shape} but expected (T, N) or (T, B, N) (time-major); "
            f"got {a.ndim} axes"
        )
    if a.shape[0] == 0 or (a.ndim == 3 and a.shape[1] == 0):
        raise ValueError(f"activity has shape {a.shape}; it needs at least one time step")
    check_finite("activity", a)
    n_units = a.shape[-1]
    fan = to_numpy(fan_out)
    if fan.ndim == 0:
        fan = np.full(n_units, fan)
    check_shape("fan_out", fan, (n_units,), axes=("N",), owner="activity")
    check_finite("fan_out", fan)
    if fan.dtype.kind not in "biuf" or np.any(fan < 0):
        raise ValueError("fan_out must hold non-negative synapse counts")
    active = (a != 0).reshape(-1, n_units)  # (T·B, N)
    ops_per_step = active @ fan.astype(np.float64)
    return float(ops_per_step.mean())


def _nbytes(item: Any) -> int:
    if isinstance(item, torch.nn.Module):
        params = sum(p.numel() * p.element_size() for p in item.parameters())
        buffers = sum(b.numel() * b.element_size() for b in item.buffers())
        return int(params + buffers)
    if isinstance(item, torch.Tensor):
        return int(item.numel() * item.element_size())
    if isinstance(item, np.ndarray):
        return int(item.nbytes)
    if isinstance(item, Mapping):
        return sum(_nbytes(v) for v in item.values())
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
        return sum(_nbytes(v) for v in item)
    raise TypeError(
        f"footprint_bytes cannot size a {type(item).__name__}; pass a torch.nn.Module, an array "
        "or tensor, or a mapping/sequence of them (e.g. a decoder's parameter_arrays())"
    )


def footprint_bytes(obj: Any) -> int:
    """Memory footprint of a model's parameters and buffers, in bytes.

    A ``torch.nn.Module`` counts every parameter and buffer once (shared tensors once); a
    NumPy array or tensor counts its data; a mapping or sequence (nested too) sums its items.
    """
    return _nbytes(obj)
