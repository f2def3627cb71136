"""Online face of the RSNN: one bin at batch 1, NumPy, preallocated, no autograd.

Same equations as :class:`bci.rsnn.RSNN` (see :mod:`bci.recurrent`). Input and recurrent
weights are packed side by side, ``W = [W_in | W_rec]`` (H, C + H), so each bin costs one
matrix-vector product ``W [x~; z]`` plus O(H) element-wise updates, all written into
preallocated buffers. NumPy beats torch here: at batch 1 torch's per-call dispatch (a few
microseconds an op) costs more than the arithmetic (see ``benchmarks/step_latency.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bci.rsnn import RSNN
from bci.validation import check_shape


@dataclass
class OnlineState:
    """Decoder state for one stream; :meth:`OnlineRSNN.step` updates it in place."""

    v: np.ndarray  # (H,) membrane potentials
    z: np.ndarray  # (H,) spikes of the last bin
    a: np.ndarray  # (H,) threshold adaptation
    y: np.ndarray  # (K,) readout integrator

    def copy(self) -> OnlineState:
        return OnlineState(self.v.copy(), self.z.copy(), self.a.copy(), self.y.copy())


class OnlineRSNN:
    """Frozen snapshot of an :class:`RSNN`'s weights for bin-by-bin decoding."""

    def __init__(self, model: RSNN, dtype: type = np.float32) -> None:
        def arr(t) -> np.ndarray:
            # Always copy: a same-dtype view would alias the model's tensors, so later training
            # (in-place optimiser steps, load_state_dict) would leak into this "frozen" snapshot.
            return np.array(t.detach().cpu().numpy(), dtype=dtype, order="C", copy=True)

        cfg = model.config
        self.n_in, self.n_hidden, self.n_out = cfg.n_in, cfg.n_hidden, cfg.n_out
        self.dtype = dtype
        self.weights = np.concatenate([arr(model.w_in), arr(model.recurrent_weights)], axis=1)
        self.w_out = arr(model.w_out)
        self.input_mean = arr(model.input_mean)
        self.input_inv_scale = (1.0 / arr(model.input_scale)).astype(dtype)
        self.alpha = arr(model.alpha)
        self.threshold = arr(model.threshold)
        self.beta = arr(model.beta)
        self.rho = arr(model.rho)
        self.one_minus_rho = (1.0 - self.rho).astype(dtype)
        self.kappa = dtype(cfg.kappa)
        self.reset_zero = cfg.reset == "zero"
        self.b_out = arr(model.b_out)
        self.output_scale = arr(model.output_scale)
        self.output_mean = arr(model.output_mean)
        h = self.n_hidden
        self._xz = np.zeros(self.n_in + h, dtype=dtype)  # [x~; z] input of the packed matvec
        self._current = np.zeros(h, dtype=dtype)
        self._tmp = np.zeros(h, dtype=dtype)
        self._readout = np.zeros(self.n_out, dtype=dtype)
        self._out = np.zeros(self.n_out, dtype=dtype)

    def initial_state(self) -> OnlineState:
        h = self.n_hidden
        zeros = np.zeros(h, dtype=self.dtype)
        return OnlineState(zeros, zeros.copy(), zeros.copy(), np.zeros(self.n_out, self.dtype))

    def step(self, x: np.ndarray, state: OnlineState) -> np.ndarray:
        """Decode one bin ``x`` (n_in,) of raw counts; returns kinematics (n_out,).

        ``state`` is advanced in place. The returned array is reused by the next call: copy it
        to keep it.
        """
        if x.shape != (self.n_in,):
            check_shape("neural bin", x, (self.n_in,))
        xz, cur, tmp = self._xz, self._current, self._tmp
        xin = xz[: self.n_in]
        np.subtract(x, self.input_mean, out=xin)
        xin *= self.input_inv_scale
        xz[self.n_in :] = state.z
        np.matmul(self.weights, xz, out=cur)
        # v = alpha v + I - theta z_prev   (or alpha v (1 - z_prev) + I)
        state.v *= self.alpha
        if self.reset_zero:
            np.subtract(1.0, state.z, out=tmp)
            state.v *= tmp
        else:
            np.multiply(self.threshold, state.z, out=tmp)
            state.v -= tmp
        state.v += cur
        # z = H(v - theta - beta a)
        np.multiply(self.beta, state.a, out=tmp)
        tmp += self.threshold
        np.greater(state.v, tmp, out=tmp, casting="unsafe")
        state.z[:] = tmp
        # a = rho a + (1 - rho) z
        state.a *= self.rho
        tmp *= self.one_minus_rho
        state.a += tmp
        # y = kappa y + W_out z ; out = (y + b) s + m
        np.matmul(self.w_out, state.z, out=self._readout)
        state.y *= self.kappa
        state.y += self._readout
        np.add(state.y, self.b_out, out=self._out)
        self._out *= self.output_scale
        self._out += self.output_mean
        return self._out
