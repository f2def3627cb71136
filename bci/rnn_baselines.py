"""Recurrent baseline decoders: GRU and LSTM, with the :class:`bci.baselines.CausalDecoder`
interface (fit / predict / online ``step_state``).

Both are one class, :class:`RecurrentDecoder`, with ``cell`` choosing the torch layer; they
train the same way (truncated BPTT on random windows, early stopping on validation R²) so
that a comparison between them, or with the SNN, differs in the architecture only.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bci.baselines import CausalDecoder
from bci.metrics import r2_score
from bci.torch_threads import torch_threads
from bci.validation import check_shape

__all__ = ["GRUDecoder", "LSTMDecoder", "RecurrentDecoder"]

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, float]], None]
_CELLS: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM}


class _RecurrentNet(nn.Module):
    """Time-major GRU or LSTM with a linear readout: ``(T, B, C) -> (T, B, K)``."""

    def __init__(self, cell: str, n_in: int, hidden: int, layers: int, n_out: int) -> None:
        super().__init__()
        self.rnn = _CELLS[cell](n_in, hidden, num_layers=layers)
        self.readout = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        out, new_state = self.rnn(x, state)
        return self.readout(out), new_state


class RecurrentDecoder(CausalDecoder):
    """Recurrent decoder: ``h_t = cell(z_t, h_{t-1})``, ``y_t = m + s ⊙ (V h_t + c)``
    (``h_{-1} = 0``; an LSTM's state is ``(h, c)``, both zero at start).

    ``z`` are z-scored inputs and ``m, s`` the training mean and standard deviation of the
    kinematics (the network predicts z-scored kinematics). Training: Adam on the MSE of
    mini-batches of ``batch_size`` random windows of ``window`` bins (truncated BPTT), each
    starting from a zero state; the first ``burn_in`` bins of a window only warm up the state
    and are left out of the loss. One epoch is ``ceil(T / (batch_size · (window - burn_in)))``
    updates, i.e. about one pass over the scored bins. With validation data, training stops
    after ``patience`` epochs without a better validation R² and the best weights are kept.
    Seeded: the same data and arguments give the same weights (CPU); the global torch RNG is
    left untouched.

    ``num_threads`` torch threads are used while fitting and in ``predict`` (the previous
    setting is restored afterwards; ``None`` leaves it alone). One thread is the default
    because these matrices are small: with two threads on a machine whose cores are busy,
    OpenMP barriers stalled training ten-fold in our measurements. With the defaults, fitting
    a GRU on 10 000 bins × 96 channels (400 updates) takes about 10 s on one CPU core.
    """

    cell: ClassVar[str] = "gru"

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 1,
        *,
        window: int = 100,
        burn_in: int = 20,
        batch_size: int = 32,
        epochs: int = 100,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        grad_clip: float = 1.0,
        patience: int = 10,
        seed: int = 0,
        num_threads: int | None = 1,
    ) -> None:
        super().__init__()
        for name, value in [
            ("hidden", hidden),
            ("layers", layers),
            ("window", window),
            ("batch_size", batch_size),
            ("epochs", epochs),
            ("patience", patience),
        ]:
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= burn_in < window:
            raise ValueError(f"burn_in must be in [0, window={window}), got {burn_in!r}")
        if not lr > 0 or not weight_decay >= 0 or not grad_clip > 0:
            raise ValueError("lr and grad_clip must be > 0 and weight_decay >= 0")
        self.hidden, self.layers = int(hidden), int(layers)
        self.window, self.burn_in, self.batch_size = int(window), int(burn_in), int(batch_size)
        self.epochs, self.patience, self.seed = int(epochs), int(patience), int(seed)
        self.lr, self.weight_decay, self.grad_clip = float(lr), float(weight_decay), grad_clip
        if num_threads is not None and (int(num_threads) != num_threads or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        self.num_threads = num_threads
        self.network_: _RecurrentNet | None = None
        self.history_: list[dict[str, float]] = []
        self._val: tuple[np.ndarray, np.ndarray] | None = None
        self._callback: EpochCallback | None = None
        self._kin_mean: np.ndarray | None = None
        self._kin_scale: np.ndarray | None = None

    def fit(
        self,
        neural: Any,
        kinematics: Any,
        val: tuple[Any, Any] | None = None,
        callback: EpochCallback | None = None,
    ) -> RecurrentDecoder:
        """Train on ``neural`` ``(T, C)`` and ``kinematics`` ``(T, K)``.

        ``val = (neural_val, kinematics_val)`` enables early stopping on validation R².
        ``callback(record)`` receives each epoch's record (``epoch``, ``train_loss`` and, with
        ``val``, ``val_r2``); an exception it raises stops training and is passed on.
        """
        x, y = self._training_arrays(neural, kinematics, "training data")
        self._val = None
        if val is not None:
            xv, yv = self._training_arrays(val[0], val[1], "validation data")
            for name, array, ref in (("neural", xv, x), ("kinematics", yv, y)):
                check_shape(
                    f"validation data '{name}'",
                    array,
                    (None, ref.shape[1]),
                    axes=("T", "C" if name == "neural" else "K"),
                    owner="the training data",
                )
            self._val = (xv, yv)
        self._callback = callback
        try:
            with torch_threads(self.num_threads):
                self._fit_normalised(x, y)
        finally:
            self._val, self._callback = None, None
        return self

    def _run(self, net: _RecurrentNet, z: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out, _ = net(torch.as_tensor(z, dtype=torch.float32)[:, None, :])
        return out[:, 0].double().numpy() * self._kin_scale + self._kin_mean

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        n_bins = z.shape[0]
        self._kin_mean = y.mean(axis=0)
        self._kin_scale = np.where(np.ptp(y, axis=0) > 0, y.std(axis=0), 1.0)
        window = min(self.window, n_bins)
        burn_in = min(self.burn_in, window - 1)
        rng = np.random.default_rng(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _RecurrentNet(self.cell, z.shape[1], self.hidden, self.layers, y.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        inputs = torch.as_tensor(z, dtype=torch.float32)
        targets = torch.as_tensor((y - self._kin_mean) / self._kin_scale, dtype=torch.float32)
        offsets = torch.arange(window)[:, None]
        per_epoch = math.ceil(n_bins / (self.batch_size * (window - burn_in)))
        z_val = y_val = None
        if self._val is not None:
            z_val = self._norm.transform(self._val[0])  # set by _fit_normalised
            y_val = self._val[1]
        best_r2, best_weights, stale = -math.inf, None, 0
        self.history_ = []
        for epoch in range(self.epochs):
            net.train()
            total = 0.0
            for _ in range(per_epoch):
                starts = torch.as_tensor(rng.integers(0, n_bins - window + 1, self.batch_size))
                idx = offsets + starts[None, :]  # (window, B)
                pred, _ = net(inputs[idx])
                loss = nn.functional.mse_loss(pred[burn_in:], targets[idx][burn_in:])
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
                opt.step()
                total += loss.detach().item()
            record = {"epoch": float(epoch), "train_loss": total / per_epoch}
            if z_val is not None:
                net.eval()
                val_r2 = r2_score(y_val, self._run(net, z_val))[0]
                record["val_r2"] = val_r2
                if val_r2 > best_r2:
                    best_r2, best_weights, stale = val_r2, copy.deepcopy(net.state_dict()), 0
                else:
                    stale += 1
            self.history_.append(record)
            logger.debug("%s epoch %d: %s", type(self).__name__, epoch, record)
            if self._callback is not None:
                self._callback(record)
            if z_val is not None and stale >= self.patience:
                break
        if best_weights is not None:
            net.load_state_dict(best_weights)
        net.eval()
        self.network_ = net
        logger.info(
            "%s trained %d epochs (%d updates each)%s",
            type(self).__name__,
            len(self.history_),
            per_epoch,
            f"; best validation R² {best_r2:.3f}" if z_val is not None else "",
        )

    def _predict_normalised(self, z: np.ndarray) -> np.ndarray:
        with torch_threads(self.num_threads):
            return self._run(self.network_, z)

    def _initial_state(self) -> Any:
        """Hidden state ``(layers, 1, hidden)`` (an LSTM: a pair of them), zeros at start."""
        zeros = torch.zeros(self.layers, 1, self.hidden)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def _step_normalised(self, z: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        with torch.inference_mode():
            out, h = self.network_(torch.as_tensor(z, dtype=torch.float32)[None, None, :], state)
        return out[0, 0].double().numpy() * self._kin_scale + self._kin_mean, h

    def _model_arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: v.detach().numpy() for k, v in self.network_.state_dict().items()}
        return {**arrays, "kinematics_mean": self._kin_mean, "kinematics_scale": self._kin_scale}


class GRUDecoder(RecurrentDecoder):
    """:class:`RecurrentDecoder` with a GRU (``torch.nn.GRU``)."""

    cell: ClassVar[str] = "gru"


class LSTMDecoder(RecurrentDecoder):
    """:class:`RecurrentDecoder` with an LSTM (``torch.nn.LSTM``): about 4/3 of a GRU's
    parameters at the same ``hidden``."""

    cell: ClassVar[str] = "lstm"
