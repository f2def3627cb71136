"""Online e-prop for the RSNN decoder (Bellec et al. 2020, Nature Communications 11:3625).

For a weight ``W_ji`` from presynaptic signal ``p_i`` (normalised input ``x~_i[t]`` or the
previous spike ``z_i[t-1]``) onto hidden neuron ``j``, the eligibility vectors follow the
neuron's own dynamics (:mod:`bci.recurrent`; the reset path is detached)::

    ev[t] = at[t] ev[t-1] + p[t]          at = alpha (reset "subtract"), alpha (1 - z[t-1]) ("zero")
    e[t]  = c[t] (ev[t] - beta ea[t-1])    c = psi(x[t]) / theta, psi the surrogate derivative
    ea[t] = rho ea[t-1] + (1 - rho) e[t]
    eb[t] = kappa eb[t-1] + e[t]           eligibility trace filtered like the readout

and the gradient of ``E = 1/2 sum_t |out~[t] - y~*[t]|^2`` (z-scored outputs) is estimated as
``dE/dW_ji = sum_t L_j[t] eb_ji[t]`` with the learning signal ``L[t] = B (out~[t] - y~*[t])``
(``B = W_out^T``, symmetric, or fixed random feedback). With ``W_rec = 0`` this is exactly
the BPTT gradient (tested against autograd). The readout's own gradient is exact:
``dE/dW_out = sum_t err[t] zb[t]^T`` with ``zb[t] = kappa zb[t-1] + z[t]``.
Firing-rate regularisation adds ``rate_reg (r_j[t] - r*)`` to ``L_j[t]``, with ``r_j`` an
exponential running rate (spikes per bin, time constant ``rate_tau_s``) and ``r*`` the
target; it acts through the same filtered trace (a simplification: the exact gradient of a
rate penalty would use the unfiltered ``e``).

The traces advance a window at a time (:mod:`bci.eprop_window`: the windowed formulation,
equal to per-bin accumulation to rounding error); the gradient becomes a bounded weight
change in :mod:`bci.eprop_optimizer` (SGD or Adam).
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from bci.eprop_optimizer import AdamMoments, apply_step, optimizer_step
from bci.eprop_window import Traces, leaky_filter, reference_step, window_update
from bci.online import OnlineRSNN, OnlineState
from bci.validation import check_shape

logger = logging.getLogger(__name__)

GROUPS: tuple[str, ...] = ("input", "recurrent", "readout")


# -- learner -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpropConfig:
    """Online learning settings (rates in Hz, times in seconds)."""

    lr: float = 1e-4
    optimizer: Literal["sgd", "adam"] = "adam"
    update_every: int = 10
    feedback: Literal["symmetric", "random"] = "symmetric"
    learn: tuple[str, ...] = GROUPS
    rate_reg: float = 0.0
    target_rate_hz: float = 1.0
    rate_tau_s: float = 10.0
    max_update_norm: float = 1.0
    weight_bound: float = 10.0
    snapshot_every: int = 50
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    seed: int = 0

    def __post_init__(self) -> None:
        _check_learning_rate(self.lr)
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: sgd, adam")
        if self.feedback not in ("symmetric", "random"):
            raise ValueError(f"unknown feedback {self.feedback!r}; valid: symmetric, random")
        unknown = sorted(set(self.learn) - set(GROUPS))
        if unknown:
            raise ValueError(f"unknown weight group(s) {unknown}; valid: {', '.join(GROUPS)}")
        if int(self.update_every) != self.update_every or self.update_every < 1:
            raise ValueError(f"update_every must be a positive integer; got {self.update_every}")
        for name in ("max_update_norm", "weight_bound", "rate_tau_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite; got {value}")


def _check_learning_rate(lr: float) -> None:
    # numbers.Real: NumPy scalars too (np.float32 is no subclass of float); bool is no rate
    if not (isinstance(lr, numbers.Real) and not isinstance(lr, bool)
            and math.isfinite(lr) and lr > 0):  # fmt: skip
        raise ValueError(f"learning rate must be a positive finite number; got {lr!r} (e.g. 1e-3)")


@dataclass
class EpropStatus:
    """What the learner has done; a snapshot safe to publish."""

    bins: int = 0
    bins_with_target: int = 0
    targets_rejected: int = 0
    inputs_rejected: int = 0
    updates_applied: int = 0
    updates_rejected: int = 0
    updates_clipped: int = 0
    rollbacks: int = 0
    last_update_norm: float = 0.0
    lr: float = 0.0
    paused: bool = False
    pause_reason: str = ""
    frozen: tuple[str, ...] = ()


@dataclass
class _Window:
    """Per-bin records of the current window, preallocated (K rows each)."""

    presynaptic: np.ndarray  # (K, I + H): [x~; z_prev], written by the decoder kernel
    scaled: np.ndarray  # (K, H) surrogate argument
    spikes: np.ndarray  # (K, H)
    outputs: np.ndarray  # (K, n_out) decoded kinematics
    targets: np.ndarray  # (K, n_out) true or intended kinematics, NaN = none
    integrator: np.ndarray  # (K, n_out) the readout's integrator y (normalised, before bias)
    bins: np.ndarray  # (K,) int64: the learner's bin index (see EpropLearner.bins_seen)
    length: int = 0


class EpropLearner:
    """Decode bin by bin with an :class:`OnlineRSNN` and adapt its weights by e-prop.

    The learner owns the decoder's weight arrays (it updates them in place); the caller
    owns the :class:`OnlineState`. Every ``update_every`` bins the accumulated gradient is
    checked and applied; non-finite inputs, targets or updates are rejected and counted, and
    a non-finite update pauses learning and rolls the weights back to the last snapshot.
    """

    def __init__(self, decoder: OnlineRSNN, config: EpropConfig = EpropConfig()) -> None:
        self.decoder = decoder
        self.config = config
        h, c, k = decoder.n_hidden, decoder.n_in, decoder.n_out
        dtype = decoder.dtype
        self._dtype = dtype
        self._status = EpropStatus(lr=float(config.lr))
        self._frozen: set[str] = set(GROUPS) - set(config.learn)
        if not decoder.recurrent:  # a feed-forward model stays feed-forward
            self._frozen.add("recurrent")
        self._traces = Traces.zeros(h, c + h, dtype)
        self._readout_trace = np.zeros(h, dtype=dtype)
        self._rate = np.full(h, config.target_rate_hz * decoder.dt_s, dtype=dtype)
        self._grad = np.zeros((h, c + h), dtype=dtype)
        self._grad_out = np.zeros((k, h), dtype=dtype)
        self._grad_bias = np.zeros(k, dtype=dtype)
        n = config.update_every
        self._window = _Window(
            presynaptic=np.zeros((n, c + h), dtype=dtype),
            scaled=np.zeros((n, h), dtype=dtype),
            spikes=np.zeros((n, h), dtype=dtype),
            outputs=np.zeros((n, k), dtype=dtype),
            targets=np.full((n, k), np.nan, dtype=dtype),
            integrator=np.zeros((n, k), dtype=dtype),
            bins=np.full(n, -1, dtype=np.int64),
        )
        rng = np.random.default_rng(config.seed)
        self._random_feedback = (rng.standard_normal((h, k)) / math.sqrt(h)).astype(dtype)
        moments = (
            (lambda a: np.zeros_like(a))
            if config.optimizer == "adam"
            else (lambda a: np.zeros(0, dtype=a.dtype))
        )
        self._adam = {
            name: AdamMoments(moments(a), moments(a)) for name, a in self._params().items()
        }
        self._initial = self._copy_params()
        self._snapshot = self._copy_params()
        self._updates_since_snapshot = 0
        self._apply_updates = True

    # -- public control ------------------------------------------------------------------
    @property
    def status(self) -> EpropStatus:
        """A copy of the counters and state (safe to hand to another thread)."""
        return replace(self._status, frozen=tuple(sorted(self._frozen)))

    @property
    def rollbacks(self) -> int:
        """Updates rejected and rolled back so far (cheap: no status copy)."""
        return self._status.rollbacks

    def set_learning_rate(self, lr: float) -> None:
        _check_learning_rate(lr)
        self._status.lr = float(lr)

    def pause(self, reason: str = "paused by user") -> None:
        self._status.paused, self._status.pause_reason = True, reason
        logger.info("e-prop paused: %s", reason)

    def resume(self) -> None:
        """Resume learning with fresh traces (those from before the pause are stale)."""
        self._clear_window_and_traces()
        self._status.paused, self._status.pause_reason = False, ""

    def freeze(self, *groups: str) -> None:
        """Stop learning the named weight groups (input, recurrent, readout)."""
        self._frozen |= set(self._check_groups(groups))

    def unfreeze(self, *groups: str) -> None:
        self._frozen -= set(self._check_groups(groups))

    def reset(self) -> None:
        """Restore the weights the learner started from; clear traces, optimiser state and
        the update counters (``updates_*``, ``last_update_norm``: they count updates since
        the initial weights); bin and target counters keep counting."""
        self._restore(self._initial)
        self._status = replace(
            self._status,
            updates_applied=0,
            updates_rejected=0,
            updates_clipped=0,
            last_update_norm=0.0,
        )
        self._snapshot = self._copy_params()
        for adam in self._adam.values():
            adam.m.fill(0.0), adam.v.fill(0.0)
            adam.t = 0
        self._clear_window_and_traces()

    def gradient(
        self, neural: np.ndarray, targets: np.ndarray, state: OnlineState
    ) -> dict[str, np.ndarray]:
        """E-prop's estimate of dE/dW over a whole recording (T, n_in), (T, n_out), no update.

        Keys: ``input`` (H, n_in), ``recurrent`` (H, H), ``w_out`` (n_out, H), ``b_out``. Used
        to compare e-prop with BPTT; the traces and ``state`` advance as in :meth:`step`.
        """
        self._apply_updates = False
        try:
            for x, target in zip(neural, targets, strict=True):
                self.step(x, target, state)
            self._finish_window()
            n_in = self.decoder.n_in
            result = {
                "input": self._grad[:, :n_in].copy(),
                "recurrent": self._grad[:, n_in:].copy(),
                "w_out": self._grad_out.copy(),
                "b_out": self._grad_bias.copy(),
            }
        finally:
            self._apply_updates = True
            for g in (self._grad, self._grad_out, self._grad_bias):
                g.fill(0.0)
        return result

    # -- per bin ---------------------------------------------------------------------------
    def step(
        self,
        x: np.ndarray,
        target: np.ndarray | None,
        state: OnlineState,
        *,
        update: bool = True,
    ) -> np.ndarray:
        """Decode bin ``x`` (n_in,) and learn from ``target`` (n_out,) or ``None`` (no target).

        Returns the decoded kinematics (n_out,), valid until the next call. A non-finite target
        skips that bin's learning signal (counted). Non-finite input channels are decoded as
        their training mean; the pending update is rejected, the weights roll back to the last
        snapshot and learning pauses until :meth:`resume`. With ``update`` the window's weight
        update runs here when it is due; without, the bin is only recorded and the caller runs
        :meth:`update` when :attr:`update_due`, after publishing the output (a window still due
        at the next step is closed first).
        """
        out = self._decode(x, target, state)
        if not (update and self.update_due):
            return out
        out = out.copy()
        self.update()
        return out

    @property
    def bins_seen(self) -> int:
        """Bins decoded so far; the next :meth:`step` gets this index."""
        return self._status.bins

    def set_target(self, bin_index: int, target: np.ndarray) -> bool:
        """Give bin ``bin_index`` (its :attr:`bins_seen` when decoded) its learning target
        after the fact, e.g. when the target stream lags the neural one.

        True when stored: the bin is still in the open window and had no target. A
        non-finite target is refused and counted, as in :meth:`step`.
        """
        w = self._window
        slots = np.flatnonzero(w.bins[: w.length] == bin_index)
        if not len(slots):
            return False
        slot = int(slots[0])
        target = self._checked_target(target)
        if target is None or np.all(np.isfinite(w.targets[slot])):
            return False
        w.targets[slot] = target
        self._status.bins_with_target += 1
        return True

    def in_window(self, bin_index: int) -> bool:
        """True while bin ``bin_index`` is in the open window (it may still get a target)."""
        w = self._window
        return bool(np.any(w.bins[: w.length] == bin_index))

    def _checked_target(self, target: np.ndarray) -> np.ndarray | None:
        """``target`` as an (n_out,) array; None (counted) when it is not finite."""
        dec = self.decoder
        target = np.asarray(target, dtype=self._dtype)
        if target.shape != (dec.n_out,):
            raise ValueError(
                f"target has shape {target.shape} but the decoder outputs {dec.n_out} "
                f"kinematics: expected ({dec.n_out},)"
            )
        if not np.isfinite(target).all():
            self._status.targets_rejected += 1
            return None
        return target

    @property
    def update_due(self) -> bool:
        """True when the current window is full: call :meth:`update` before the next bin."""
        return self._window.length >= self.config.update_every

    def update(self) -> None:
        """Close the window: compute its e-prop gradient and apply the weight update.

        A real-time caller steps with ``update=False``, publishes the output, then calls this
        when :attr:`update_due`, so the update's cost never delays an output.
        """
        self._finish_window()

    def _decode(self, x: np.ndarray, target: np.ndarray | None, state: OnlineState) -> np.ndarray:
        """Decode ``x`` and record the bin for learning (a view valid until the next call)."""
        dec = self.decoder
        w = self._window
        if x.shape != (dec.n_in,):
            check_shape("neural bin", x, (dec.n_in,))
        if target is not None:
            target = self._checked_target(target)
        self._status.bins += 1
        if not np.isfinite(x).all():
            self._status.inputs_rejected += 1
            x = np.where(np.isfinite(x), x, dec.normalisation[0])
            if not self._status.paused:
                self._reject(f"non-finite input at bin {self._status.bins - 1}")
        if self._status.paused or len(self._frozen) == len(GROUPS):  # a subset of GROUPS
            return dec.step(x, state)
        if self.update_due:
            self._finish_window()
        k = w.length
        dec.advance(x, state, w.presynaptic[k], w.scaled[k], w.outputs[k])
        w.spikes[k] = state.z
        w.integrator[k] = state.y
        w.bins[k] = self._status.bins - 1
        if target is None:
            w.targets[k] = np.nan
        else:
            w.targets[k] = target
            self._status.bins_with_target += 1
        w.length = k + 1
        return w.outputs[k]

    # -- window ----------------------------------------------------------------------------
    # Overflow (absurd but finite data) yields inf/NaN that the update checks below reject
    # and count; without this it would also raise a RuntimeWarning (an error under -W error).
    @np.errstate(over="ignore", invalid="ignore")
    def _finish_window(self) -> None:
        w = self._window
        n = w.length
        if n == 0:
            return
        dec = self.decoder
        cfg = self.config
        alpha, theta, beta, rho = dec.neuron[0], dec.neuron[1], dec.neuron[2], dec.neuron[3]
        kappa = float(dec.readout_constants[0, 0])
        bias, scale, mean = dec.readout_constants[1:4]

        has_target = np.all(np.isfinite(w.targets[:n]), axis=1)
        err = np.zeros((n, dec.n_out), dtype=self._dtype)
        err[has_target] = (w.integrator[:n][has_target] + bias) - (
            (w.targets[:n][has_target] - mean) / scale
        )
        feedback = dec.w_out.T if cfg.feedback == "symmetric" else self._random_feedback
        learning_signal = err @ feedback.T  # (n, H)
        if cfg.rate_reg > 0:
            learning_signal += cfg.rate_reg * self._rate_deviation(w.spikes[:n])
        c = dec.surrogate.pseudo_derivative(w.scaled[:n]) / theta
        if dec.reset_zero:
            z_prev = w.presynaptic[:n, dec.n_in :]
            at = alpha * (1.0 - z_prev)
        else:
            at = np.broadcast_to(alpha, (n, dec.n_hidden))
        window_update(
            self._traces, w.presynaptic[:n], at, c, learning_signal, rho, beta, kappa, self._grad
        )
        filtered = leaky_filter(w.spikes[:n], kappa, self._readout_trace)
        self._readout_trace[:] = filtered[-1]
        self._grad_out += err.T @ filtered
        self._grad_bias += err.sum(axis=0)
        w.length = 0
        if self._apply_updates:
            self._apply_update()

    def _rate_deviation(self, spikes: np.ndarray) -> np.ndarray:
        """Running rate (spikes per bin, EMA over ``rate_tau_s``) minus its target, per bin."""
        gamma = min(1.0, self.decoder.dt_s / self.config.rate_tau_s)
        rates = leaky_filter(gamma * spikes, 1.0 - gamma, self._rate)
        self._rate[:] = rates[-1]
        return rates - self.config.target_rate_hz * self.decoder.dt_s

    def _apply_update(self) -> None:
        """Check, convert (SGD/Adam), clip and apply the accumulated gradient, in place."""
        grads = {"weights": self._grad, "w_out": self._grad_out, "b_out": self._grad_bias}
        try:
            if not all(math.isfinite(float(np.dot(g.ravel(), g.ravel()))) for g in grads.values()):
                self._reject("non-finite gradient")
                return
            steps = self._update_steps(grads)  # the gradient buffers now hold the steps
            norm = math.sqrt(sum(float(np.dot(s.ravel(), s.ravel())) for s in steps.values()))
            if not math.isfinite(norm):
                self._reject("non-finite update")
                return
            scale = 1.0
            if norm > self.config.max_update_norm:
                scale = self.config.max_update_norm / norm
                self._status.updates_clipped += 1
            params = self._params()
            # Frozen weights stay exactly as they are: the bound applies to what is learnt.
            n_in = self.decoder.n_in
            blocks = {"input": np.s_[:, :n_in], "recurrent": np.s_[:, n_in:]}
            kept = [(b, params["weights"][b].copy()) for g, b in blocks.items()
                    if g in self._frozen]  # fmt: skip
            for name, step in steps.items():
                if name != "weights" and "readout" in self._frozen:
                    continue
                apply_step(params[name].reshape(-1), step.reshape(-1), scale,
                            self.config.weight_bound)  # fmt: skip
            for block, values in kept:
                params["weights"][block] = values
            self._status.updates_applied += 1
            self._status.last_update_norm = norm * scale
            self._updates_since_snapshot += 1
            if self._updates_since_snapshot >= self.config.snapshot_every:
                self._snapshot = self._copy_params()
                self._updates_since_snapshot = 0
        finally:
            for g in grads.values():
                g.fill(0.0)

    def _update_steps(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Overwrite each gradient with its parameter change; frozen groups and ``W_rec``'s
        diagonal get none."""
        cfg = self.config
        beta1, beta2 = cfg.adam_betas
        for name, g in grads.items():
            adam = self._adam[name]
            adam.t += 1
            optimizer_step(g.reshape(-1), adam.m.reshape(-1), adam.v.reshape(-1),
                            self._status.lr, cfg.optimizer == "adam", beta1, beta2,
                            cfg.adam_eps, adam.t)  # fmt: skip
        n_in, h = self.decoder.n_in, self.decoder.n_hidden
        diagonal = np.arange(h)
        grads["weights"][diagonal, n_in + diagonal] = 0.0
        if "input" in self._frozen:
            grads["weights"][:, :n_in] = 0.0
        if "recurrent" in self._frozen:
            grads["weights"][:, n_in:] = 0.0
        if "readout" in self._frozen:
            grads["w_out"][:] = 0.0
            grads["b_out"][:] = 0.0
        return grads

    def _reject(self, reason: str) -> None:
        self._status.updates_rejected += 1
        self._status.rollbacks += 1
        self._restore(self._snapshot)
        self._clear_window_and_traces()
        self.pause(f"{reason}; weights rolled back to the last snapshot")

    # -- helpers ---------------------------------------------------------------------------
    def _params(self) -> dict[str, np.ndarray]:
        dec = self.decoder
        return {"weights": dec.weights, "w_out": dec.w_out, "b_out": dec.readout_constants[1]}

    def _copy_params(self) -> dict[str, np.ndarray]:
        return {name: a.copy() for name, a in self._params().items()}

    def _restore(self, saved: dict[str, np.ndarray]) -> None:
        for name, a in self._params().items():
            a[...] = saved[name]

    def _clear_window_and_traces(self) -> None:
        self._traces.clear()
        self._readout_trace.fill(0.0)
        self._window.length = 0
        for g in (self._grad, self._grad_out, self._grad_bias):
            g.fill(0.0)

    @staticmethod
    def _check_groups(groups: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(groups) - set(GROUPS))
        if unknown:
            raise ValueError(f"unknown weight group(s) {unknown}; valid: {', '.join(GROUPS)}")
        return groups


__all__ = [
    "GROUPS",
    "EpropConfig",
    "EpropLearner",
    "EpropStatus",
    "Traces",
    "reference_step",
    "window_update",
]
