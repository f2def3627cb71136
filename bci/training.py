"""Offline BPTT training of the RSNN decoder with surrogate gradients.

Truncated windows: each step draws ``batch_size`` windows of ``window`` bins at random
positions of the training recording, runs them from rest, and ignores the first ``burn_in``
bins in the loss (the network needs them to reach its operating point). Loss::

    L = mean_t,b,k (out~ - y~)^2  +  rate_reg * mean_j (r_j - r*)^2  +  l2 * |W|^2

with out~ and y~ the z-scored decoded and true kinematics, ``r_j`` neuron j's spikes per bin
in the batch and ``r* = target_rate_hz * dt``. The training windows are augmented
(:func:`augment_window`): Gaussian noise of ``input_noise`` standard deviations of each
channel (default 0.5: +0.02 to +0.08 test R² on three monkey recordings, see
``benchmarks/recipe_ablation.py``), and, off by default, ``channel_dropout``, the probability
that a channel is silent (zero counts) for the whole window. Adam with gradient-norm
clipping; every ``eval_every`` steps the whole validation recording is decoded and the
weights with the best validation R^2 are kept (early stopping after ``patience`` evaluations
without improvement).
Seeded: the same data, config and seed give the same weights.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from bci.metrics import r2_score
from bci.rsnn import RSNN
from bci.runtime import retain_freed_memory
from bci.torch_threads import torch_threads
from bci.validation import check_finite, check_shape

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """BPTT hyperparameters (windows in bins, rates in Hz)."""

    window: int = 100
    burn_in: int = 20
    batch_size: int = 32
    max_steps: int = 1500
    lr: float = 3e-3
    lr_decay: float = 0.3
    target_rate_hz: float = 2.0
    rate_reg: float = 1.0
    l2: float = 1e-3
    grad_clip: float = 1.0
    input_noise: float = 0.5
    channel_dropout: float = 0.0
    eval_every: int = 50
    patience: int = 8
    seed: int = 0
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("window", "batch_size", "max_steps", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}")
        if self.burn_in >= self.window:
            raise ValueError(
                f"burn_in ({self.burn_in}) must be shorter than window ({self.window})"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be positive; got {self.lr}")
        if self.burn_in < 0:  # a negative slice start would score only the last bins
            raise ValueError(f"burn_in must be zero or more bins; got {self.burn_in}")
        if not self.input_noise >= 0:
            raise ValueError(f"input_noise must be zero or more; got {self.input_noise}")
        if not 0 <= self.channel_dropout < 1:
            raise ValueError(f"channel_dropout must lie in [0, 1); got {self.channel_dropout}")
        if not self.grad_clip > 0:  # clip_grad_norm_ zeroes (0) or reverses (< 0) the gradient
            raise ValueError(f"grad_clip must be positive; got {self.grad_clip}")


@dataclass
class TrainResult:
    best_val_r2: float
    best_step: int
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def augment_window(
    x: torch.Tensor,
    channel_sd: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Training windows ``x`` (T, B, C), counts per bin, with ``config``'s augmentation.

    Adds Gaussian noise of ``config.input_noise`` times ``channel_sd`` (C,), counts per bin,
    then silences each channel of each window (all T bins) with probability
    ``config.channel_dropout``. Returns ``x`` itself when both are zero.
    """
    if config.input_noise > 0:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x + config.input_noise * channel_sd * noise
    if config.channel_dropout > 0:
        keep = torch.rand((1, *x.shape[1:]), generator=generator) >= config.channel_dropout
        x = x * keep.to(x.dtype)
    return x


def _check_pair(name: str, neural: np.ndarray, kinematics: np.ndarray, model: RSNN) -> None:
    cfg = model.config
    check_shape(f"{name} neural", neural, (None, cfg.n_in))
    check_shape(f"{name} kinematics", kinematics, (neural.shape[0], cfg.n_out))
    check_finite(f"{name} neural", neural)
    check_finite(f"{name} kinematics", kinematics)


def train_rsnn(
    model: RSNN,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainConfig = TrainConfig(),
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on (neural, kinematics) pairs; keeps the best-validation weights.

    ``callback`` receives each evaluation record (step, loss, mse, rate_hz, val_r2). Runs with
    ``config.num_threads`` torch threads (see :func:`bci.torch_threads.torch_threads`) and with
    freed buffers kept in the heap (:func:`bci.runtime.retain_freed_memory`).
    """
    retain_freed_memory()
    with torch_threads(config.num_threads):
        return _train(model, train, val, config, callback)


def _train(
    model: RSNN,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    callback: Callable[[dict[str, float]], None] | None,
) -> TrainResult:
    # writable copies where needed: torch.from_numpy refuses read-only arrays (e.g. Ray's)
    neural, kinematics = (np.require(a, np.float32, ["C", "W"]) for a in train)
    val_neural, val_kinematics = (np.require(a, np.float32, ["C", "W"]) for a in val)
    _check_pair("training", neural, kinematics, model)
    _check_pair("validation", val_neural, val_kinematics, model)
    if neural.shape[0] < config.window:
        raise ValueError(
            f"training data has {neural.shape[0]} bins, fewer than one window of "
            f"{config.window}; record longer or lower TrainConfig.window"
        )
    rng = np.random.default_rng(config.seed)
    augmentation = torch.Generator().manual_seed(config.seed)
    model.fit_normalisation(neural, kinematics)
    x_all = torch.from_numpy(neural)
    y_all = (torch.from_numpy(kinematics) - model.output_mean) / model.output_scale
    target_rate = config.target_rate_hz * model.config.dt_s

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.max_steps, eta_min=config.lr * config.lr_decay
    )
    best_r2, best_step, best_weights = -np.inf, 0, copy.deepcopy(model.state_dict())
    since_best = 0
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    offsets = torch.arange(config.window)
    step = 0
    for step in range(1, config.max_steps + 1):
        starts = torch.from_numpy(
            rng.integers(0, neural.shape[0] - config.window + 1, size=config.batch_size)
        )
        index = starts[None, :] + offsets[:, None]  # (W, B)
        x = augment_window(x_all[index], model.input_scale, config, augmentation)
        trace = model.run(x)
        pred = (trace.outputs - model.output_mean) / model.output_scale
        mse = torch.mean((pred[config.burn_in :] - y_all[index][config.burn_in :]) ** 2)
        rate = trace.spikes[config.burn_in :].mean(dim=(0, 1))
        loss = mse + config.rate_reg * torch.mean((rate - target_rate) ** 2)
        if config.l2 > 0:
            loss = loss + config.l2 * sum(
                (w**2).sum() for w in (model.w_in, model.recurrent_weights, model.w_out)
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()

        if step % config.eval_every == 0 or step == config.max_steps:
            decoded, _ = model.decode(val_neural)
            val_r2, _ = r2_score(val_kinematics, decoded)
            record = {
                "step": float(step),
                "loss": loss.item(),
                "mse": mse.item(),
                "rate_hz": rate.mean().item() / model.config.dt_s,
                "val_r2": float(val_r2),
            }
            history.append(record)
            if callback is not None:
                callback(record)
            logger.debug("step %d loss %.4f val R2 %.4f", step, record["loss"], val_r2)
            if val_r2 > best_r2:
                best_r2, best_step, since_best = float(val_r2), step, 0
                best_weights = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if since_best >= config.patience:
                    logger.info("early stop at step %d (best %d)", step, best_step)
                    break
    model.load_state_dict(best_weights)
    return TrainResult(best_r2, best_step, step, time.perf_counter() - start, history)
