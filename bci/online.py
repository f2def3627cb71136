"""Online face of the RSNN: one bin at batch 1, preallocated, no autograd.

Same equations as :class:`bci.rsnn.RSNN` (see :mod:`bci.recurrent`). Input and recurrent
weights are packed side by side, ``W = [W_in | W_rec]`` (H, C + H), so each bin costs one
matrix-vector product ``W [x~; z]``; the O(H) neuron updates and the spike-driven readout
(``W_out`` columns of the neurons that spiked are accumulated) run in one compiled Numba
kernel. At batch 1 each NumPy ufunc call costs about half a microsecond and each torch op
several, more than the arithmetic itself: see ``benchmarks/step_latency.py``.

The per-bin constants are derived here, in NumPy, from the stored weights (the state dict of
:class:`bci.rsnn.RSNN`), whether they come from a checkpoint file or a torch model, so the
decoder process needs no torch. The derivation mirrors the RSNN's properties::

    tau_mem = TAU_MIN_S + softplus(raw_tau_mem)        seconds; softplus linear above 20
    alpha   = exp(-dt / tau_mem)
    theta   = THRESHOLD_MIN + softplus(raw_threshold)
    W_rec   = w_rec with its diagonal zeroed           no self-connections
    kappa   = exp(-dt / tau_out)

evaluated in float64 and rounded once to the decoder's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bci.config import TAU_MIN_S, THRESHOLD_MIN, RSNNConfig, expected_tensor_shapes
from bci.jit import MATRIX, VECTOR, as_argument, for_floats, kernel, void
from bci.surrogates import get_surrogate
from bci.validation import check_shape

if TYPE_CHECKING:
    from bci.rsnn import RSNN

_SOFTPLUS_LINEAR_ABOVE = 20.0  # torch.nn.functional.softplus's default threshold


def _positive(raw: np.ndarray, minimum: float) -> np.ndarray:
    """``minimum + softplus(raw)`` in float64, as :func:`bci.neurons.positive` computes it."""
    raw = np.asarray(raw, dtype=np.float64)
    linear = raw > _SOFTPLUS_LINEAR_ABOVE
    soft = np.log1p(np.exp(np.where(linear, 0.0, raw)))
    return minimum + np.where(linear, raw, soft)


@kernel(for_floats(void(VECTOR, MATRIX, *[VECTOR] * 6, *[MATRIX] * 4, "boolean", VECTOR, VECTOR)))
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
    readout_constants: np.ndarray,
    reset_zero: bool,
    scaled: np.ndarray,
    out: np.ndarray,
) -> None:
    """One bin in place. ``neuron`` rows: alpha, theta, beta, rho, 1 - rho (H,);
    ``normalisation`` rows: mean, 1 / scale (C,); ``readout_constants`` rows: kappa, b, s, m (K,).
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
        acc = readout_constants[0, k] * y[k]
        for j in range(n_hidden):
            if z[j] != 0:
                acc += w_out[k, j]
        y[k] = acc
        out[k] = (acc + readout_constants[1, k]) * readout_constants[2, k] + readout_constants[3, k]


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
    """Frozen snapshot of an RSNN's weights for bin-by-bin decoding.

    ``OnlineRSNN(model)`` snapshots a torch :class:`bci.rsnn.RSNN`;
    :meth:`from_arrays` builds the same decoder from NumPy arrays (e.g. a checkpoint file's,
    see :func:`bci.checkpoint.load_decoder`). Both run one derivation, :meth:`_derive`.
    """

    def __init__(self, model: RSNN, dtype: type = np.float32) -> None:
        """Snapshot ``model`` (a copy: later in-place training does not reach it)."""
        arrays = {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}
        self._derive(model.config, arrays, dtype)

    @classmethod
    def from_arrays(
        cls, config: RSNNConfig, arrays: Mapping[str, np.ndarray], dtype: type = np.float32
    ) -> OnlineRSNN:
        """Decoder from the state dict of ``RSNN(config)`` as arrays (names and shapes as
        :func:`bci.config.expected_tensor_shapes`; extra names are ignored). The arrays are
        copied. Raises ``ValueError`` for a missing or misshapen array."""
        decoder = cls.__new__(cls)
        decoder._derive(config, arrays, dtype)
        return decoder

    def _derive(self, config: RSNNConfig, arrays: Mapping[str, np.ndarray], dtype: type) -> None:
        """Pack the per-bin constants (see the module docstring) and allocate the buffers."""
        shapes = expected_tensor_shapes(config)
        missing = sorted(set(shapes) - set(arrays))
        if missing:
            raise ValueError(f"decoder arrays lack {missing}; pass the model's whole state dict")
        for name, shape in shapes.items():
            check_shape(f"decoder array {name!r}", arrays[name], shape)
        f64 = {name: np.asarray(arrays[name], dtype=np.float64) for name in shapes}

        self.config = config
        self.n_in, self.n_hidden, self.n_out = config.n_in, config.n_hidden, config.n_out
        self.dtype = dtype
        self.reset_zero = config.reset == "zero"
        self.dt_s = config.dt_s
        self.recurrent = config.recurrent
        w_rec = f64["w_rec"].copy()
        np.fill_diagonal(w_rec, 0.0)
        self.weights = np.concatenate([f64["w_in"], w_rec], axis=1).astype(dtype)
        self.w_out = f64["w_out"].astype(dtype, order="C")  # astype copies: a snapshot
        alpha = np.exp(-config.dt_s / _positive(f64["raw_tau_mem"], TAU_MIN_S))
        threshold = _positive(f64["raw_threshold"], THRESHOLD_MIN)
        rho = f64["rho"]
        self.neuron = np.stack([alpha, threshold, f64["beta"], rho, 1 - rho]).astype(dtype)
        self.normalisation = np.stack([f64["input_mean"], 1 / f64["input_scale"]]).astype(dtype)
        kappa = np.full(self.n_out, config.kappa)
        self.readout_constants = np.stack(
            [kappa, f64["b_out"], f64["output_scale"], f64["output_mean"]]
        ).astype(dtype)
        self.surrogate = get_surrogate(config.surrogate, **config.surrogate_params)
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
        x = as_argument(x, self.dtype)
        _step_kernel(
            x, self.weights, xz, self._current, state.v, state.z, state.a, state.y,
            self.neuron, self.normalisation, self.w_out, self.readout_constants, self.reset_zero,
            scaled, out,
        )  # fmt: skip
