"""Architecture and neuron constants of the RSNN decoder, without torch.

Shared by the training side (:mod:`bci.rsnn`) and the decoder process (:mod:`bci.online`,
:mod:`bci.checkpoint`), which must not import torch. Learnable per-neuron constants are
stored raw and mapped to ``(minimum, inf)`` by a softplus: ``tau_mem = TAU_MIN_S +
softplus(raw_tau_mem)`` (seconds), ``threshold = THRESHOLD_MIN + softplus(raw_threshold)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from bci.surrogates import get_surrogate

ResetMode = Literal["subtract", "zero"]
RESET_MODES: tuple[str, ...] = ("subtract", "zero")
TAU_MIN_S = 1e-3
THRESHOLD_MIN = 1e-2


@dataclass(frozen=True)
class RSNNConfig:
    """Architecture and neuron constants of the decoder (times in seconds).

    ``tau_spread`` (dimensionless, >= 1): each neuron's initial ``tau_mem`` and ``tau_adapt``
    are drawn log-uniformly from ``[tau / tau_spread, tau * tau_spread]`` around the
    configured value (1: every neuron starts at the configured value).
    """

    n_in: int
    n_hidden: int = 256
    n_out: int = 2
    alif_fraction: float = 0.5
    dt_s: float = 0.05
    tau_mem_s: float = 0.1
    tau_adapt_s: float = 0.5
    tau_spread: float = 1.0
    beta_adapt: float = 1.0
    tau_out_s: float = 0.1
    threshold: float = 1.0
    reset: str = "subtract"
    surrogate: str = "triangle"
    surrogate_params: dict[str, float] = field(default_factory=dict)
    recurrent: bool = True
    learn_tau: bool = True
    learn_threshold: bool = True

    def __post_init__(self) -> None:
        for name in ("n_in", "n_hidden", "n_out"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}")
        if not 0.0 <= self.alif_fraction <= 1.0:
            raise ValueError(f"alif_fraction must lie in [0, 1]; got {self.alif_fraction}")
        for name in ("dt_s", "tau_mem_s", "tau_adapt_s", "tau_out_s", "threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite; got {value}")
        if not self.tau_spread >= 1.0:  # also rejects NaN
            raise ValueError(f"tau_spread must be 1 or more; got {self.tau_spread}")
        if self.reset not in RESET_MODES:
            raise ValueError(
                f"unknown reset mode {self.reset!r}; valid modes: {', '.join(RESET_MODES)}"
            )
        get_surrogate(self.surrogate, **self.surrogate_params)

    @property
    def n_alif(self) -> int:
        return round(self.alif_fraction * self.n_hidden)

    @property
    def kappa(self) -> float:
        """Readout decay per bin, ``exp(-dt / tau_out)``."""
        return math.exp(-self.dt_s / self.tau_out_s)

    def to_dict(self) -> dict:
        return asdict(self)


def expected_tensor_shapes(config: RSNNConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors ``RSNN(config).state_dict()`` holds, without building it."""
    c, h, k = config.n_in, config.n_hidden, config.n_out
    return {
        "w_in": (h, c),
        "w_rec": (h, h),
        "w_out": (k, h),
        "b_out": (k,),
        "raw_tau_mem": (h,),
        "raw_threshold": (h,),
        "beta": (h,),
        "rho": (h,),
        "input_mean": (c,),
        "input_scale": (c,),
        "output_mean": (k,),
        "output_scale": (k,),
    }
