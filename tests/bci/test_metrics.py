"""Tests for ``bci.metrics`` against hand-computed values and independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bci.metrics import (
    activation_sparsity,
    footprint_bytes,
    pearson_r,
    r2_score,
    synaptic_operations,
    windowed_r2,
)

# ----------------------------------------------------------------------------- R²


def test_r2_perfect_prediction_is_one_and_mean_prediction_is_zero() -> None:
    rng = np.random.default_rng(0)
    y = rng.standard_normal((50, 3))
    assert r2_score(y, y)[0] == pytest.approx(1.0)
    mean, per_dim = r2_score(y, np.tile(y.mean(axis=0), (50, 1)))
    assert mean == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(per_dim, 0.0, atol=1e-12)


def test_r2_small_hand_computed_case() -> None:
    # dim 0: y = [1, 2, 3, 4], mean 2.5, n·var = 2.25 + 0.25 + 0.25 + 2.25 = 5
    #        ŷ = [1, 2, 3, 5], SSE = 1            -> R² = 1 - 1/5 = 0.8
    # dim 1: y = [0, 0, 2, 2], mean 1, n·var = 4
    #        ŷ = [1, 1, 1, 1], SSE = 4            -> R² = 0
    y = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 2.0], [4.0, 2.0]])
    p = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [5.0, 1.0]])
    mean, per_dim = r2_score(y, p)
    np.testing.assert_allclose(per_dim, [0.8, 0.0])
    assert mean == pytest.approx(0.4)


def test_r2_matches_sklearn_formula_by_hand() -> None:
    # sklearn.metrics.r2_score(y, p, multioutput="uniform_average"):
    #   1 - Σ(y-p)² / Σ(y-ȳ)² per output, then the plain mean.
    rng = np.random.default_rng(1)
    y = rng.standard_normal((200, 4)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 1.0, -2.0, 5.0]
    p = y + rng.standard_normal((200, 4)) * 0.7
    sk = 1 - ((y - p) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    mean, per_dim = r2_score(y, p)
    np.testing.assert_allclose(per_dim, sk, rtol=1e-12)
    assert mean == pytest.approx(sk.mean(), rel=1e-12)
    # and the ddof = 0 variance form used by NeuroBench
    np.testing.assert_allclose(per_dim, 1 - ((y - p) ** 2).sum(0) / (200 * y.var(0)), rtol=1e-12)


def test_r2_can_be_negative_and_accepts_1d_and_tensors() -> None:
    y = np.array([0.0, 1.0, 2.0])
    mean, per_dim = r2_score(torch.tensor(y), -y)  # SSE = 0 + 4 + 16 = 20, n·var = 2
    assert mean == pytest.approx(1 - 20 / 2)
    assert per_dim.shape == (1,)


def test_r2_constant_target_follows_sklearn_convention() -> None:
    y = np.column_stack([np.full(5, 0.1), np.arange(5.0)])
    _, exact = r2_score(y, y)
    np.testing.assert_array_equal(exact, [1.0, 1.0])
    _, off = r2_score(y, y + 0.5)
    assert off[0] == 0.0
    assert np.isfinite(off).all()


def test_r2_shape_mismatch_and_nan_raise() -> None:
    with pytest.raises(
        ValueError, match=r"y_pred has shape \(10, 2\) but y_true expects \(10, 3\)"
    ):
        r2_score(np.zeros((10, 3)), np.zeros((10, 2)))
    p = np.zeros((10, 3))
    p[4, 1] = np.nan
    with pytest.raises(
        ValueError, match="y_pred has a non-finite value \\(nan\\) at bin 4, channel 1"
    ):
        r2_score(np.ones((10, 3)), p)


# ----------------------------------------------------------------------------- Pearson


def test_pearson_matches_corrcoef_per_dimension() -> None:
    rng = np.random.default_rng(2)
    y = rng.standard_normal((300, 3))
    p = 0.5 * y + rng.standard_normal((300, 3)) * [0.1, 1.0, 3.0]
    r = pearson_r(y, p)
    expected = [np.corrcoef(y[:, k], p[:, k])[0, 1] for k in range(3)]
    np.testing.assert_allclose(r, expected, rtol=1e-12)
    np.testing.assert_allclose(pearson_r(y, -2 * y + 1), -1.0)


def test_pearson_constant_column_is_zero_without_warning() -> None:
    y = np.column_stack([np.arange(6.0), np.arange(6.0), np.full(6, 0.1)])
    p = np.column_stack([np.full(6, 3.3), np.arange(6.0) ** 2, np.arange(6.0)])
    r = pearson_r(y, p)  # pytest turns any RuntimeWarning into an error
    assert r[0] == 0.0
    assert r[2] == 0.0
    assert r[1] == pytest.approx(np.corrcoef(y[:, 1], p[:, 1])[0, 1])


# ----------------------------------------------------------------------------- sparsity


def test_activation_sparsity_counts_zeros_over_everything() -> None:
    spikes = np.array([[[0, 1, 0], [0, 0, 0]], [[1, 1, 0], [0, 0.5, 0]]])  # 12 values, 4 non-zero
    assert activation_sparsity(spikes) == pytest.approx(8 / 12)
    assert activation_sparsity(torch.tensor(spikes)) == pytest.approx(8 / 12)
    assert activation_sparsity(np.zeros(7)) == 1.0
    assert activation_sparsity(np.ones((2, 2))) == 0.0


def test_activation_sparsity_pools_layers() -> None:
    layer1 = np.array([[1, 0], [0, 0]])  # 3 zeros of 4
    layer2 = np.array([[1, 1, 1, 0, 0, 0]])  # 3 zeros of 6
    assert activation_sparsity([layer1, layer2]) == pytest.approx(6 / 10)


def test_activation_sparsity_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        activation_sparsity(np.zeros((0, 4)))


# ----------------------------------------------------------------------------- SynOps


def test_synaptic_operations_hand_computed_2d() -> None:
    # 3 steps, 3 units with fan-out [2, 5, 10]
    activity = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]])
    fan_out = np.array([2, 5, 10])
    # step ops: 2 + 10 = 12; 0; 2 + 5 + 10 = 17 -> mean 29 / 3
    assert synaptic_operations(activity, fan_out) == pytest.approx(29 / 3)
    # scalar fan-out: 5 non-zero inputs × 4 synapses / 3 steps
    assert synaptic_operations(activity, 4) == pytest.approx(20 / 3)


def test_synaptic_operations_graded_inputs_and_batch() -> None:
    # (T=2, B=2, N=2); graded values count like spikes, zeros are skipped
    activity = np.array([[[0.3, 0.0], [0.0, -2.0]], [[0.0, 0.0], [1.0, 1.0]]])
    fan_out = np.array([3, 7])
    # (t, b) ops: 3, 7, 0, 10 -> mean 20 / 4
    assert synaptic_operations(activity, fan_out) == pytest.approx(5.0)
    assert synaptic_operations(torch.tensor(activity), torch.tensor(fan_out)) == pytest.approx(5.0)


def test_synaptic_operations_validates() -> None:
    with pytest.raises(ValueError, match=r"fan_out has shape \(2,\) but activity expects \(3,\)"):
        synaptic_operations(np.ones((4, 3)), np.array([1, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        synaptic_operations(np.ones((4, 3)), -1)
    with pytest.raises(ValueError, match=r"fan_out has a non-finite value \(nan\) at bin 1"):
        synaptic_operations(np.ones((4, 3)), np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match=r"expected \(T, N\) or \(T, B, N\)"):
        synaptic_operations(np.ones(4), 1)


# ----------------------------------------------------------------------------- footprint


def test_footprint_of_module_counts_parameters_and_buffers() -> None:
    net = nn.Sequential(nn.Linear(10, 4), nn.BatchNorm1d(4))
    # Linear: 40 + 4 float32; BatchNorm: weight 4 + bias 4 float32,
    # buffers running_mean 4 + running_var 4 float32 + num_batches_tracked int64
    expected = (44 + 8 + 8) * 4 + 8
    assert footprint_bytes(net) == expected


def test_footprint_counts_shared_parameters_once() -> None:
    lin = nn.Linear(3, 3, bias=False)
    net = nn.Sequential(lin, lin)
    assert footprint_bytes(net) == 9 * 4


def test_footprint_of_arrays_and_tensors() -> None:
    arrays = {"w": np.zeros((3, 4)), "b": np.zeros(4, dtype=np.float32), "m": torch.zeros(2, 2)}
    assert footprint_bytes(arrays) == 12 * 8 + 4 * 4 + 4 * 4
    assert footprint_bytes([np.zeros(2), [torch.zeros(3, dtype=torch.float64)]]) == 16 + 24
    with pytest.raises(TypeError, match="cannot size a"):
        footprint_bytes(3.0)


def test_windowed_r2_scores_full_windows_only() -> None:
    """Windows of 2 bins at 0.5 s bins, starting at 10 s; the odd last bin is left out."""
    truth = np.array([[0.0], [2.0], [0.0], [2.0], [9.0]])
    decoded = np.array([[0.0], [2.0], [1.0], [1.0], [0.0]])
    rows = windowed_r2(truth, decoded, bin_s=0.5, window_s=1.0, start_s=10.0)
    # window 1 is perfect; window 2: SSE = 1 + 1 = 2, n var = 2 * 1 = 2 -> R² = 0
    assert rows == [[10.0, 11.0, 1.0], [11.0, 12.0, 0.0]]
    with pytest.raises(ValueError, match="window_s must be a positive number of seconds"):
        windowed_r2(truth, decoded, bin_s=0.5, window_s=0.0)
