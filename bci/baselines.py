"""Causal baseline decoders: Wiener and Kalman filters, and their common interface.

The recurrent baselines (GRU, LSTM) share the interface and live in :mod:`bci.rnn_baselines`.

Every decoder maps neural data ``(T, C)`` (counts per bin, time-major) to kinematics
``(T, K)``, and the output at bin ``t`` depends only on bins ``<= t``. The interface:

- ``fit(neural, kinematics)`` learns the parameters, including a per-channel z-score of the
  inputs. Channels that are constant in the training data carry no information; they are
  dropped from the model (and ignored at run time) instead of being divided by zero.
- ``predict(neural)`` decodes a whole sequence from the initial state.
- ``initial_state()`` and ``step_state(x, state) -> (y, new_state)`` are the pure online form:
  the caller owns the state (nothing is mutated), so a daemon can swap model and state
  together.
- ``reset()`` and ``step(x)`` are the same thing with the state kept on the decoder, for
  scripts. ``step`` over a sequence after ``reset()`` equals ``predict``.
- ``parameter_arrays()`` returns every fitted array (for ``bci.metrics.footprint_bytes``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg

from bci.metrics import r2_score
from bci.validation import check_finite, check_shape, to_numpy

__all__ = [
    "CausalDecoder",
    "KalmanFilter",
    "KalmanState",
    "WienerFilter",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Standardizer:
    """Per-channel z-score ``z = (x[kept] - mean[kept]) / std[kept]`` (stats from training)."""

    mean: np.ndarray  # (C,) training mean per channel, counts per bin
    scale: np.ndarray  # (C,) training standard deviation (ddof = 0); 1.0 for dropped channels
    kept: np.ndarray  # (C,) bool, False for channels that are constant in the training data

    @classmethod
    def from_data(cls, x: np.ndarray) -> _Standardizer:
        kept = np.ptp(x, axis=0) > 0
        scale = np.where(kept, x.std(axis=0), 1.0)
        return cls(mean=x.mean(axis=0), scale=scale, kept=kept)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Z-score the kept channels of ``(..., C)`` data; returns ``(..., C_kept)``."""
        return (x[..., self.kept] - self.mean[self.kept]) / self.scale[self.kept]


def _float_array(array: Any) -> np.ndarray:
    return to_numpy(array).astype(np.float64, copy=False)


class CausalDecoder(ABC):
    """Common validation, normalisation and online-state handling of the baseline decoders."""

    def __init__(self) -> None:
        self._norm: _Standardizer | None = None
        self._n_outputs = 0
        self._state: Any = None

    # ----------------------------------------------------------------- public interface
    @property
    def is_fitted(self) -> bool:
        return self._norm is not None

    @property
    def n_channels(self) -> int:
        """Number of input channels ``C`` the fitted decoder expects."""
        return int(self._require_fitted().mean.size)

    @property
    def n_outputs(self) -> int:
        """Number of decoded kinematic dimensions ``K``."""
        self._require_fitted()
        return self._n_outputs

    @property
    def channels_kept(self) -> np.ndarray:
        """``(C,)`` bool mask of the channels the model uses (non-constant in training)."""
        return self._require_fitted().kept.copy()

    def fit(self, neural: Any, kinematics: Any) -> CausalDecoder:
        """Fit to training data: ``neural`` ``(T, C)`` counts per bin, ``kinematics`` ``(T, K)``."""
        x, y = self._training_arrays(neural, kinematics, "training data")
        self._fit_normalised(x, y)
        return self

    def predict(self, neural: Any) -> np.ndarray:
        """Decode ``neural`` ``(T, C)`` from the initial state; returns ``(T, K)`` float64."""
        norm = self._require_fitted()
        x = _float_array(neural)
        check_shape("neural input", x, (None, norm.mean.size), axes=("T", "C"), owner="the decoder")
        check_finite("neural input", x)
        return self._predict_normalised(norm.transform(x))

    def initial_state(self) -> Any:
        """State before the first bin (what ``predict`` starts from)."""
        self._require_fitted()
        return self._initial_state()

    def step_state(self, x: Any, state: Any) -> tuple[np.ndarray, Any]:
        """Decode one bin ``x`` ``(C,)`` given ``state``; returns ``(y (K,), new_state)``."""
        norm = self._require_fitted()
        values = _float_array(x)
        check_shape("neural input", values, (norm.mean.size,), axes=("C",), owner="the decoder")
        check_finite("neural input", values)
        return self._step_normalised(norm.transform(values), state)

    def reset(self) -> None:
        """Reset the decoder-held online state to ``initial_state()``."""
        self._state = self.initial_state()

    def step(self, x: Any) -> np.ndarray:
        """Decode one bin ``x`` ``(C,)`` with the decoder-held state; returns ``(K,)``."""
        if self._state is None:
            self.reset()
        y, self._state = self.step_state(x, self._state)
        return y

    def parameter_arrays(self) -> dict[str, np.ndarray]:
        """All fitted arrays by name, including the input normalisation."""
        norm = self._require_fitted()
        return {
            "channel_mean": norm.mean,
            "channel_scale": norm.scale,
            "channels_kept": norm.kept,
            **self._model_arrays(),
        }

    # ----------------------------------------------------------------- subclass hooks
    @abstractmethod
    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        """Fit on z-scored inputs ``z`` ``(T, C_kept)`` and kinematics ``y`` ``(T, K)``."""

    @abstractmethod
    def _predict_normalised(self, z: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _initial_state(self) -> Any: ...

    @abstractmethod
    def _step_normalised(self, z: np.ndarray, state: Any) -> tuple[np.ndarray, Any]: ...

    @abstractmethod
    def _model_arrays(self) -> dict[str, np.ndarray]: ...

    # ----------------------------------------------------------------- helpers
    def _require_fitted(self) -> _Standardizer:
        if self._norm is None:
            raise RuntimeError(
                f"{type(self).__name__} is not fitted; call fit(neural, kinematics) first"
            )
        return self._norm

    @staticmethod
    def _training_arrays(neural: Any, kinematics: Any, label: str) -> tuple[np.ndarray, np.ndarray]:
        x = _float_array(neural)
        y = _float_array(kinematics)
        check_shape(f"{label} 'neural'", x, (None, None), axes=("T", "C"))
        check_shape(
            f"{label} 'kinematics'", y, (x.shape[0], None), axes=("T", "K"), owner="the neural data"
        )
        check_finite(f"{label} 'neural'", x)
        check_finite(f"{label} 'kinematics'", y)
        if x.shape[0] < 2 or x.shape[1] == 0 or y.shape[1] == 0:
            raise ValueError(
                f"{label} has shape neural {x.shape}, kinematics {y.shape}; "
                "need at least 2 bins, 1 channel and 1 kinematic dimension"
            )
        return x, y

    def _fit_normalised(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fit the normalisation, then the model; a failed fit leaves the decoder unfitted."""
        norm = _Standardizer.from_data(x)
        if not norm.kept.any():
            raise ValueError(
                "every neural channel is constant in the training data; nothing to decode from"
            )
        if not norm.kept.all():
            logger.info(
                "%s ignores %d constant channel(s): %s",
                type(self).__name__,
                int((~norm.kept).sum()),
                np.flatnonzero(~norm.kept).tolist(),
            )
        self._norm, self._n_outputs, self._state = norm, y.shape[1], None
        try:
            self._fit(norm.transform(x), y)
        except BaseException:
            self._norm = None
            raise
        self.reset()


# ====================================================================== Wiener filter
class WienerFilter(CausalDecoder):
    """Linear decoder on the last ``lags`` bins of every channel (a discrete Wiener filter).

    ``y_t = b + Σ_{l=0}^{L-1} W_l z_{t-l}`` with ``z`` the z-scored inputs (zero, i.e. the
    training mean, before the first bin). ``(W, b)`` minimise the ridge objective
    ``Σ_t ||y_t - ŷ_t||² + λ Σ_l ||W_l||²_F`` (bias unpenalised) over the bins ``t >= L-1``
    that have a full history; ``λ`` is in units of z-scored input², absolute (not per bin).

    ``ridge`` may be a sequence of candidates: each is fitted on the first 90 % of the
    training bins and scored by mean R² on the last 10 % (chronological hold-out); the best
    is refitted on all bins. The choice is in ``ridge_`` and the scores in ``ridge_scores_``.
    """

    def __init__(self, lags: int = 10, ridge: float | Sequence[float] = 1.0) -> None:
        super().__init__()
        if int(lags) != lags or lags < 1:
            raise ValueError(f"lags must be a positive integer, got {lags!r}")
        candidates = np.atleast_1d(np.asarray(ridge, dtype=np.float64))
        if candidates.ndim != 1 or candidates.size == 0 or not np.all(candidates >= 0):
            raise ValueError(f"ridge must be >= 0 or a non-empty sequence of such, got {ridge!r}")
        self.lags = int(lags)
        self.ridge = ridge
        self._candidates = candidates
        self.ridge_: float | None = None
        self.ridge_scores_: dict[float, float] = {}
        self.weights_: np.ndarray | None = None  # (L, C_kept, K), W_l applies to z_{t-l}
        self.bias_: np.ndarray | None = None  # (K,)

    def _gram(
        self, z: np.ndarray, y: np.ndarray, start: int, stop: int, chunk: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(XᵀX, XᵀY)`` of the lagged design over target bins ``start..stop-1``.

        Row ``t`` of ``X`` is ``[z_t, z_{t-1}, ..., z_{t-L+1}, 1]``; ``start >= L-1``. Built
        in chunks of bins (one slice per lag) so memory stays ``O(chunk · L · C)``.
        """
        n_in = self.lags * z.shape[1] + 1
        xtx = np.zeros((n_in, n_in))
        xty = np.zeros((n_in, y.shape[1]))
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            design = np.empty((b - a, n_in))
            for lag in range(self.lags):
                design[:, lag * z.shape[1] : (lag + 1) * z.shape[1]] = z[a - lag : b - lag]
            design[:, -1] = 1.0
            xtx += design.T @ design
            xty += design.T @ y[a:b]
        return xtx, xty

    def _solve(self, xtx: np.ndarray, xty: np.ndarray, ridge: float) -> tuple[np.ndarray, ...]:
        if ridge > 0:
            penalty = np.full(xtx.shape[0], ridge)
            penalty[-1] = 0.0  # the bias is not penalised
            coef = np.linalg.solve(xtx + np.diag(penalty), xty)
        else:
            coef = np.linalg.lstsq(xtx, xty, rcond=None)[0]
        return coef[:-1].reshape(self.lags, -1, xty.shape[1]), coef[-1]

    def _apply(self, z: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
        out = np.tile(bias, (z.shape[0], 1))
        for lag in range(min(self.lags, z.shape[0])):
            out[lag:] += z[: z.shape[0] - lag] @ weights[lag]
        return out

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        n_bins, first = z.shape[0], self.lags - 1
        rows = n_bins - first
        if rows < 2:
            raise ValueError(
                f"training data has {n_bins} bins; WienerFilter(lags={self.lags}) needs at least "
                f"{self.lags + 1}"
            )
        if self._candidates.size == 1:
            self.ridge_ = float(self._candidates[0])
            self.weights_, self.bias_ = self._solve(*self._gram(z, y, first, n_bins), self.ridge_)
            return
        n_val = rows // 10
        if n_val < 2 or rows - n_val < 2:
            raise ValueError(
                f"training data has {n_bins} bins: too few to hold out the last 10 % for choosing "
                f"among {self._candidates.size} ridge values; pass a single ridge value"
            )
        split = n_bins - n_val
        train = self._gram(z, y, first, split)
        val = self._gram(z, y, split, n_bins)
        history = z[split - first :]  # validation bins with their causal history
        scores: dict[float, float] = {}
        for ridge in self._candidates:
            weights, bias = self._solve(*train, float(ridge))
            pred = self._apply(history, weights, bias)[first:]
            scores[float(ridge)] = r2_score(y[split:], pred)[0]
        self.ridge_ = max(scores, key=lambda r: scores[r])
        self.ridge_scores_ = scores
        logger.info("WienerFilter hold-out R² by ridge %s; chose %g", scores, self.ridge_)
        self.weights_, self.bias_ = self._solve(train[0] + val[0], train[1] + val[1], self.ridge_)

    def _predict_normalised(self, z: np.ndarray) -> np.ndarray:
        return self._apply(z, self.weights_, self.bias_)

    def _initial_state(self) -> np.ndarray:
        """``(L, C_kept)`` z-scored history, newest first; zeros (= training mean) at start."""
        return np.zeros((self.lags, self.weights_.shape[1]))

    def _step_normalised(self, z: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, Any]:
        history = np.concatenate([z[None, :], state[:-1]], axis=0)
        return self.bias_ + np.einsum("lc,lck->k", history, self.weights_), history

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights_, "bias": self.bias_}


# ====================================================================== Kalman filter
class KalmanState(NamedTuple):
    """Posterior of the Kalman filter after the last bin."""

    mean: np.ndarray  # (S,) state estimate (kinematics, then 1.0 if offset)
    cov: np.ndarray  # (S, S) state covariance


class KalmanFilter(CausalDecoder):
    """Kalman filter decoder (Wu et al. 2003, "Neural decoding of cursor motion using a
    Kalman filter", NIPS 15).

    State ``x_t`` = kinematics (plus a constant 1 if ``offset``, so that kinematics and the
    z-scored rates may have non-zero means); observation ``z_t`` = z-scored neural data::

        x_t = A x_{t-1} + w_t,  w ~ N(0, W);      z_t = H x_t + q_t,  q ~ N(0, Q)

    ``A, W, H, Q`` are least-squares fits on the training data (``W, Q`` are the residual
    covariances); ``Q`` gets ``noise_floor · mean(diag Q)`` added to its diagonal so it stays
    invertible when channels are collinear. The constant state has ``A`` row ``[0 … 0 1]`` and
    zero noise. The filter starts from the posterior ``(mean of training x, covariance of
    training x)`` at ``t = -1`` and runs the exact (not steady-state) recursion::

        x⁻ = A x,  P⁻ = A P Aᵀ + W
        P  = (P⁻⁻¹ + HᵀQ⁻¹H)⁻¹ = (I + P⁻ HᵀQ⁻¹H)⁻¹ P⁻
        x  = x⁻ + P (HᵀQ⁻¹ z_t - HᵀQ⁻¹H x⁻)

    which is the standard gain ``K = P⁻Hᵀ(HP⁻Hᵀ + Q)⁻¹`` rewritten (Woodbury) so that each
    bin solves an ``S × S`` system instead of a ``C × C`` one.
    """

    def __init__(self, offset: bool = True, noise_floor: float = 1e-6) -> None:
        super().__init__()
        if not noise_floor >= 0:
            raise ValueError(f"noise_floor must be >= 0, got {noise_floor!r}")
        self.offset = bool(offset)
        self.noise_floor = float(noise_floor)
        self.A_: np.ndarray | None = None  # (S, S)
        self.W_: np.ndarray | None = None  # (S, S)
        self.H_: np.ndarray | None = None  # (C_kept, S), z-scored units per state unit
        self.Q_: np.ndarray | None = None  # (C_kept, C_kept), z-scored units²
        self._info_gain: np.ndarray | None = None  # (S, C_kept) = HᵀQ⁻¹
        self._info: np.ndarray | None = None  # (S, S) = HᵀQ⁻¹H
        self._x0: np.ndarray | None = None
        self._p0: np.ndarray | None = None

    def _states(self, y: np.ndarray) -> np.ndarray:
        return np.hstack([y, np.ones((y.shape[0], 1))]) if self.offset else y

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        x = self._states(y)
        n_bins, n_state = x.shape
        n_kin = y.shape[1]
        # State model: kinematic rows by least squares, the constant row is exact.
        a_kin = np.linalg.lstsq(x[:-1], x[1:, :n_kin], rcond=None)[0].T  # (K, S)
        resid = x[1:, :n_kin] - x[:-1] @ a_kin.T
        a = np.eye(n_state)
        a[:n_kin] = a_kin
        w = np.zeros((n_state, n_state))
        w[:n_kin, :n_kin] = resid.T @ resid / (n_bins - 1)
        # Observation model.
        h = np.linalg.lstsq(x, z, rcond=None)[0].T  # (C, S)
        resid_z = z - x @ h.T
        q = resid_z.T @ resid_z / n_bins
        q[np.diag_indices_from(q)] += self.noise_floor * max(float(np.mean(np.diag(q))), 1e-12)
        q_factor = scipy.linalg.cho_factor(q, lower=True)
        self._info_gain = scipy.linalg.cho_solve(q_factor, h).T  # HᵀQ⁻¹ (S, C)
        info = self._info_gain @ h
        self._info = 0.5 * (info + info.T)
        self.A_, self.W_, self.H_, self.Q_ = a, w, h, q
        self._x0 = x.mean(axis=0)
        self._p0 = np.cov(x, rowvar=False, ddof=0).reshape(n_state, n_state)

    def _update(self, projected: np.ndarray, state: KalmanState) -> KalmanState:
        """One predict/update step; ``projected`` = ``HᵀQ⁻¹ z_t`` ``(S,)``."""
        x_prior = self.A_ @ state.mean
        p_prior = self.A_ @ state.cov @ self.A_.T + self.W_
        eye = np.eye(p_prior.shape[0])
        p_post = np.linalg.solve(eye + p_prior @ self._info, p_prior)
        p_post = 0.5 * (p_post + p_post.T)
        x_post = x_prior + p_post @ (projected - self._info @ x_prior)
        return KalmanState(x_post, p_post)

    def _predict_normalised(self, z: np.ndarray) -> np.ndarray:
        projected = z @ self._info_gain.T  # (T, S)
        n_kin = self._n_outputs
        out = np.empty((z.shape[0], n_kin))
        state = self._initial_state()
        for t in range(z.shape[0]):
            state = self._update(projected[t], state)
            out[t] = state.mean[:n_kin]
        return out

    def _initial_state(self) -> KalmanState:
        return KalmanState(self._x0.copy(), self._p0.copy())

    def _step_normalised(self, z: np.ndarray, state: KalmanState) -> tuple[np.ndarray, Any]:
        new = self._update(self._info_gain @ z, state)
        return new.mean[: self._n_outputs].copy(), new

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"A": self.A_, "W": self.W_, "H": self.H_, "Q": self.Q_}
