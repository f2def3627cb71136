"""Recurrent spiking decoder: input weights -> recurrent LIF/ALIF layer -> leaky readout.

Per bin ``t`` (``dt`` = bin width, seconds)::

    x~[t] = (x[t] - mu) / sigma                             stored input normalisation
    I[t]  = W_in x~[t] + W_rec z[t-1]
    z[t]  = ALIF(I[t])                                      see :mod:`bci.recurrent`
    y[t]  = kappa y[t-1] + W_out z[t]                       kappa = exp(-dt / tau_out)
    out[t] = (y[t] + b_out) * s + m                         kinematics in their own units

The first ``n_hidden - n_alif`` hidden neurons are LIF (``beta = 0``), the rest ALIF.
Membrane time constants and thresholds are learnable per neuron, kept positive by a softplus;
``RSNNConfig.tau_spread`` spreads the initial membrane and adaptation time constants around
the configured ones (the adaptation decay ``rho`` stays fixed).
The module holds weights only; the caller owns the :class:`RSNNState`. The online face over the
same weights is :class:`bci.online.OnlineRSNN`. :class:`RSNNConfig` and the softplus bounds
live in the torch-free :mod:`bci.config` and are re-exported here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bci.config import TAU_MIN_S, THRESHOLD_MIN, RSNNConfig
from bci.neurons import positive, positive_inverse
from bci.recurrent import RecurrentState, leaky_readout, recurrent_alif
from bci.surrogates import Surrogate, get_surrogate
from bci.validation import check_finite, check_shape


class RSNNState(NamedTuple):
    v: Tensor  # (B, H) membrane potentials
    z: Tensor  # (B, H) spikes of the last bin
    a: Tensor  # (B, H) threshold adaptation
    y: Tensor  # (B, K) readout integrator (normalised units, before bias)


class RSNNTrace(NamedTuple):
    outputs: Tensor  # (T, B, K) kinematics
    spikes: Tensor  # (T, B, H)
    state: RSNNState


class RSNN(nn.Module):
    """Recurrent spiking decoder over time-major input (T, B, n_in)."""

    def __init__(self, config: RSNNConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.surrogate: Surrogate = get_surrogate(config.surrogate, **config.surrogate_params)
        gen = torch.Generator().manual_seed(seed)
        c, h, k = config.n_in, config.n_hidden, config.n_out

        def normal(*shape: int, scale: float) -> Tensor:
            return torch.randn(*shape, generator=gen) * scale

        self.w_in = nn.Parameter(normal(h, c, scale=1.0 / math.sqrt(c)))
        self.w_rec = nn.Parameter(
            normal(h, h, scale=0.5 / math.sqrt(h)) if config.recurrent else torch.zeros(h, h),
            requires_grad=config.recurrent,
        )
        self.w_out = nn.Parameter(normal(k, h, scale=1.0 / math.sqrt(h)))
        self.b_out = nn.Parameter(torch.zeros(k))

        def spread(tau_s: float) -> Tensor:
            """``h`` time constants log-uniform in ``[tau_s / spread, tau_s * spread]`` (s)."""
            exponent = 2.0 * torch.rand(h, generator=gen, dtype=torch.float64) - 1.0
            return tau_s * config.tau_spread**exponent

        self.raw_tau_mem = nn.Parameter(
            positive_inverse(spread(config.tau_mem_s), TAU_MIN_S),
            requires_grad=config.learn_tau,
        )
        self.raw_threshold = nn.Parameter(
            positive_inverse(torch.full((h,), config.threshold), THRESHOLD_MIN),
            requires_grad=config.learn_threshold,
        )
        beta = torch.zeros(h)
        beta[h - config.n_alif :] = config.beta_adapt
        self.register_buffer("beta", beta)
        rho = torch.exp(-config.dt_s / spread(config.tau_adapt_s))
        self.register_buffer("rho", rho.to(torch.get_default_dtype()))
        self.register_buffer("input_mean", torch.zeros(c))
        self.register_buffer("input_scale", torch.ones(c))
        self.register_buffer("output_mean", torch.zeros(k))
        self.register_buffer("output_scale", torch.ones(k))

    # -- derived per-neuron constants -------------------------------------------------------
    @property
    def tau_mem_s(self) -> Tensor:
        return positive(self.raw_tau_mem, TAU_MIN_S)

    @property
    def alpha(self) -> Tensor:
        """Membrane decay per bin, ``exp(-dt / tau_mem)`` (H,)."""
        return torch.exp(-self.config.dt_s / self.tau_mem_s)

    @property
    def threshold(self) -> Tensor:
        return positive(self.raw_threshold, THRESHOLD_MIN)

    @property
    def recurrent_weights(self) -> Tensor:
        """``W_rec`` with its diagonal held at zero (no self-connections)."""
        return self.w_rec - torch.diag_embed(torch.diagonal(self.w_rec))

    # -- normalisation ----------------------------------------------------------------------
    def fit_normalisation(self, neural: np.ndarray, kinematics: np.ndarray) -> None:
        """Store z-scoring statistics of training data (T, n_in) and (T, n_out)."""
        self.check_input(neural)
        check_shape("training kinematics", kinematics, (neural.shape[0], self.config.n_out))
        check_finite("training kinematics", kinematics)

        dtype = self.w_in.dtype  # keep the buffers in the model's dtype (float64 after .double())

        def stats(a: np.ndarray) -> tuple[Tensor, Tensor]:
            mean = a.mean(axis=0)
            scale = a.std(axis=0)
            scale = np.where(scale > 1e-8, scale, 1.0)
            return torch.as_tensor(mean, dtype=dtype), torch.as_tensor(scale, dtype=dtype)

        self.input_mean, self.input_scale = stats(np.asarray(neural, dtype=np.float64))
        self.output_mean, self.output_scale = stats(np.asarray(kinematics, dtype=np.float64))

    def check_input(self, neural: np.ndarray | Tensor) -> None:
        """Raise ``ValueError`` for a wrong channel count or non-finite values (T, n_in)."""
        check_shape("neural input", neural, (None, self.config.n_in))
        check_finite("neural input", np.asarray(neural))

    # -- sequence face ----------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> RSNNState:
        h, k = self.config.n_hidden, self.config.n_out
        dtype = self.w_in.dtype
        zeros = torch.zeros(batch, h, dtype=dtype)
        return RSNNState(zeros, zeros.clone(), zeros.clone(), torch.zeros(batch, k, dtype=dtype))

    def run(self, x: Tensor, state: RSNNState | None = None) -> RSNNTrace:
        """Decode raw input ``x`` (T, B, n_in); returns outputs, hidden spikes, final state."""
        if state is None:
            state = self.initial_state(x.shape[1])
        x_norm = (x - self.input_mean) / self.input_scale
        currents = x_norm @ self.w_in.t()  # one matmul for the whole window
        spikes, hidden = recurrent_alif(
            currents,
            self.recurrent_weights,
            self.alpha,
            self.rho,
            self.threshold,
            self.beta,
            RecurrentState(state.v, state.z, state.a),
            self.config.reset,
            self.surrogate,
        )
        y = leaky_readout(spikes @ self.w_out.t(), self.config.kappa, state.y)
        outputs = (y + self.b_out) * self.output_scale + self.output_mean
        return RSNNTrace(outputs, spikes, RSNNState(hidden.v, hidden.z, hidden.a, y[-1].detach()))

    def forward(self, x: Tensor, state: RSNNState | None = None) -> tuple[Tensor, RSNNState]:
        trace = self.run(x, state)
        return trace.outputs, trace.state

    @torch.no_grad()
    def decode(self, neural: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode a whole recording (T, n_in) from rest; returns kinematics and spikes (T, ·)."""
        self.check_input(neural)
        # Straight to the model's dtype: a float32 detour would round a float64 model's input.
        x = torch.as_tensor(np.asarray(neural), dtype=self.w_in.dtype)[:, None, :]
        trace = self.run(x)
        return trace.outputs[:, 0].numpy(), trace.spikes[:, 0].numpy()

    def fan_out(self) -> tuple[np.ndarray, np.ndarray]:
        """Synapses leaving each input channel (n_in,) and each hidden neuron (H,)."""
        w_rec = self.recurrent_weights.detach()
        hidden = (w_rec != 0).sum(0) + (self.w_out.detach() != 0).sum(0)
        return (self.w_in.detach() != 0).sum(0).numpy(), hidden.numpy()
