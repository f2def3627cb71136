"""Online face of the RSNN: one bin at batch 1, preallocated, no autograd.

Same equations as :class:`bci.rsnn.RSNN` (see :mod:`bci.recurrent`). Input and recurrent
weights are packed side by side, ``W = [W_in | W_rec]`` (H, C + H), so each bin costs one
matrix-vector product ``W [x~; z]``; the O(H) neuron updates and the spike-driven readout
(``W_out`` columns of the neurons that spiked are accumulated) run in one compiled Numba
kernel. At batch 1 each NumPy ufunc call costs about half a microsecond and each torch op
several, more than the arithmetic itself: see ``benchmarks/step_latency.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from bci.rsnn import RSNN
from bci.validation import check_shape


@numba.njit(cache=True, nogil=True)
def _step_kernel(
    x: np.ndarray,
    weights: np.ndarray,
    xz: np.ndarray,
    current: np.ndarray,
    v: np.ndarray,
    z: np.ndarray,
    a: np.ndarray,
    y: np.ndarray,
    neuron: np.ndarray,
    normalisation: np.ndarray,
    w_out: np.ndarray,
    readout: np.ndarray,
    reset_zero: bool,
    scaled: np.ndarray,
    out: np.ndarray,
) -> None:
    """One bin in place. ``neuron`` rows: alpha, theta, beta, rho, 1 - rho (H,);
    ``normalisation`` rows: mean, 1 / scale (C,); ``readout`` rows: kappa, b, s, m (K,).
    Also writes ``scaled`` = (v - theta - beta a_prev) / theta, the surrogate's argument."""
    n_in = x.shape[0]
    n_hidden = v.shape[0]
    for i in range(n_in):
        xz[i] = (x[i] - normalisation[0, i]) * normalisation[1, i]
    for j in range(n_hidden):
        xz[n_in + j] = z[j]
    np.dot(weights, xz, current)
    for j in range(n_hidden):
        alpha, theta, beta, rho, one_minus_rho = (
            neuron[0, j],
            neuron[1, j],
            neuron[2, j],
            neuron[3, j],
            neuron[4, j],
        )
        if reset_zero:
            v[j] = current[j] if z[j] != 0 else alpha * v[j] + current[j]
        else:
            v[j] = alpha * v[j] + (current[j] - theta * z[j])
        scaled[j] = (v[j] - (theta + beta * a[j])) / theta
        z[j] = 1 if v[j] > theta + beta * a[j] else 0
        a[j] = rho * a[j] + one_minus_rho * z[j]
    for k in range(y.shape[0]):
        acc = readout[0, k] * y[k]
        for j in range(n_hidden):
            if z[j] != 0:
                acc += w_out[k, j]
        y[k] = acc
        out[k] = (acc + readout[1, k]) * readout[2, k] + readout[3, k]


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
            # Always a copy: later in-place training of ``model`` must not reach the snapshot.
            return np.array(t.detach().cpu().numpy(), dtype=dtype, order="C", copy=True)

        cfg = model.config
        self.n_in, self.n_hidden, self.n_out = cfg.n_in, cfg.n_hidden, cfg.n_out
        self.dtype = dtype
        self.reset_zero = cfg.reset == "zero"
        self.dt_s = cfg.dt_s
        self.recurrent = cfg.recurrent
        self.weights = np.concatenate([arr(model.w_in), arr(model.recurrent_weights)], axis=1)
        self.w_out = arr(model.w_out)
        rho = arr(model.rho)
        self.neuron = np.stack(
            [arr(model.alpha), arr(model.threshold), arr(model.beta), rho, 1 - rho]
        )
        self.normalisation = np.stack([arr(model.input_mean), 1 / arr(model.input_scale)])
        kappa = np.full(self.n_out, cfg.kappa, dtype=dtype)
        self.readout = np.stack(
            [kappa, arr(model.b_out), arr(model.output_scale), arr(model.output_mean)]
        )
        self.surrogate = model.surrogate
        self._xz = np.zeros(self.n_in + self.n_hidden, dtype=dtype)  # [x~; z] of the matvec
        self._current = np.zeros(self.n_hidden, dtype=dtype)
        self._scaled = np.zeros(self.n_hidden, dtype=dtype)
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
        self.advance(x, state, self._xz, self._scaled, self._out)
        return self._out

    def advance(
        self,
        x: np.ndarray,
        state: OnlineState,
        xz: np.ndarray,
        scaled: np.ndarray,
        out: np.ndarray,
    ) -> None:
        """:meth:`step` writing into caller buffers: ``xz`` (n_in + H,) receives
        ``[x~; z_prev]``, ``scaled`` (H,) the surrogate argument, ``out`` (n_out,) the output.
        Learners pass rows of their window buffers here, so nothing is copied per bin."""
        if x.shape != (self.n_in,):
            check_shape("neural bin", x, (self.n_in,))
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        _step_kernel(
            x, self.weights, xz, self._current, state.v, state.z, state.a, state.y,
            self.neuron, self.normalisation, self.w_out, self.readout, self.reset_zero,
            scaled, out,
        )  # fmt: skip
