"""Random hyperparameter search for the spiking decoder, on this machine or on Ray Tune.

A trial trains a fresh RSNN on the training part with a fixed step budget and is scored by
its best validation R² (the same early-stopping score :func:`bci.training.train_rsnn`
keeps); the test part is never seen. Configurations are drawn up front by
:func:`sample_trials` from one seeded generator, so a search is reproducible and the local
and Ray runs of one seed try exactly the same configurations.

Search space (``base_hidden`` is ``--hidden``)::

    n_hidden        choice of base_hidden x {1/2, 1, 2}
    alif_fraction   choice of {0, 0.25, 0.5, 0.75, 1}
    lr              log-uniform [1e-3, 1e-2]
    target_rate_hz  log-uniform [1, 8] Hz
    tau_mem_s       log-uniform [0.02, 0.3] s
    tau_out_s       log-uniform [0.05, 0.3] s

Two runners over the same trial function (:func:`run_trial`):

- :func:`local_search`: a plain loop over the trials, one after the other.
- :func:`ray_search`: the same trials as a ``ray.tune.Tuner`` grid over trial indices (one
  CPU per trial), for searches that outgrow one machine. Ray is an optional dependency
  (``pip install -e .[cluster]``) imported only here, when asked for. Without an address a
  local Ray instance is started; ``address`` (e.g. ``auto`` or ``ray://head:10001``) is
  passed to ``ray.init`` to join an existing cluster, whose workers need this package
  installed. The training data travel to the workers once, through
  ``tune.with_parameters`` (Ray's object store).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, train_rsnn

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = "pip install -e .[cluster]"

# Parameters of a trial that belong to RSNNConfig; the rest go to TrainConfig.
MODEL_KEYS: tuple[str, ...] = ("n_hidden", "alif_fraction", "tau_mem_s", "tau_out_s")
TRAIN_KEYS: tuple[str, ...] = ("lr", "target_rate_hz")


class SearchError(RuntimeError):
    """The search could not run (Ray missing, a Ray trial failed); the message says why."""


class RayUnavailableError(SearchError):
    """``--ray`` was asked for but Ray Tune is not installed."""


@dataclass(frozen=True)
class SearchSpace:
    """Where :func:`sample_trials` draws from (ranges are inclusive, times in seconds)."""

    hidden_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    alif_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    lr: tuple[float, float] = (1e-3, 1e-2)
    target_rate_hz: tuple[float, float] = (1.0, 8.0)
    tau_mem_s: tuple[float, float] = (0.02, 0.3)
    tau_out_s: tuple[float, float] = (0.05, 0.3)

    def __post_init__(self) -> None:
        if not self.hidden_factors or any(f <= 0 for f in self.hidden_factors):
            raise ValueError(f"hidden_factors must be positive; got {self.hidden_factors}")
        if not self.alif_fractions or any(not 0 <= f <= 1 for f in self.alif_fractions):
            raise ValueError(f"alif_fractions must lie in [0, 1]; got {self.alif_fractions}")
        for name in ("lr", "target_rate_hz", "tau_mem_s", "tau_out_s"):
            low, high = getattr(self, name)
            if not (0 < low <= high and math.isfinite(high)):
                raise ValueError(f"{name} range must be 0 < low <= high; got {(low, high)}")


@dataclass(frozen=True, eq=False)
class TrialData:
    """What every trial needs: training and validation parts and the shared settings."""

    train_neural: np.ndarray
    train_kinematics: np.ndarray
    val_neural: np.ndarray
    val_kinematics: np.ndarray
    bin_s: float
    train: TrainConfig = field(default_factory=TrainConfig)  # max_steps = per-trial budget
    snn: dict[str, Any] = field(default_factory=dict)  # RSNNConfig fields not searched
    seed: int = 0


@dataclass
class SearchResult:
    """Trials in the order they were drawn; ``best`` indexes the highest validation R²."""

    trials: list[dict[str, Any]]
    best: int
    backend: str
    seconds: float

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.trials[self.best]["params"])


def sample_trials(
    n_trials: int, base_hidden: int, seed: int = 0, space: SearchSpace = SearchSpace()
) -> list[dict[str, Any]]:
    """Draw ``n_trials`` parameter sets (RSNNConfig and TrainConfig fields) from ``space``."""
    if n_trials < 1:
        raise ValueError(f"the search needs at least one trial; got {n_trials}")
    rng = np.random.default_rng(seed)

    def log_uniform(bounds: tuple[float, float]) -> float:
        low, high = (math.log(b) for b in bounds)
        return float(math.exp(rng.uniform(low, high)))

    trials = []
    for _ in range(n_trials):
        factor = float(rng.choice(space.hidden_factors))
        trials.append(
            {
                "n_hidden": max(1, round(base_hidden * factor)),
                "alif_fraction": float(rng.choice(space.alif_fractions)),
                "lr": log_uniform(space.lr),
                "target_rate_hz": log_uniform(space.target_rate_hz),
                "tau_mem_s": log_uniform(space.tau_mem_s),
                "tau_out_s": log_uniform(space.tau_out_s),
            }
        )
    return trials


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(RSNNConfig fields, TrainConfig fields) of a trial's parameters."""
    unknown = sorted(set(params) - set(MODEL_KEYS) - set(TRAIN_KEYS))
    if unknown:
        raise ValueError(f"unknown trial parameter(s) {unknown}")
    return (
        {k: v for k, v in params.items() if k in MODEL_KEYS},
        {k: v for k, v in params.items() if k in TRAIN_KEYS},
    )


def run_trial(params: dict[str, Any], data: TrialData) -> dict[str, Any]:
    """Train one configuration on the training part; score it on the validation part.

    Returns ``val_r2`` (best validation R² during training, the search objective),
    ``best_step``, ``steps`` run, ``rate_hz`` (hidden rate at the last evaluation) and
    ``seconds``.
    """
    model_params, train_params = split_params(params)
    config = RSNNConfig(
        n_in=data.train_neural.shape[1],
        n_out=data.train_kinematics.shape[1],
        dt_s=data.bin_s,
        **{**data.snn, **model_params},
    )
    model = RSNN(config, seed=data.seed)
    result = train_rsnn(
        model,
        (data.train_neural, data.train_kinematics),
        (data.val_neural, data.val_kinematics),
        replace(data.train, seed=data.seed, **train_params),
    )
    return {
        "val_r2": float(result.best_val_r2),
        "best_step": int(result.best_step),
        "steps": int(result.steps),
        "rate_hz": float(result.history[-1]["rate_hz"]) if result.history else float("nan"),
        "seconds": float(result.seconds),
    }


def _pick_best(trials: Sequence[dict[str, Any]]) -> int:
    scores = [t["val_r2"] if math.isfinite(t["val_r2"]) else -math.inf for t in trials]
    if all(s == -math.inf for s in scores):
        raise ValueError("no trial reached a finite validation R²; widen the search space")
    return int(np.argmax(scores))


def local_search(
    trials: Sequence[dict[str, Any]],
    data: TrialData,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Run ``trials`` one after another on this machine; ``on_trial`` gets each record."""
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    for index, params in enumerate(trials):
        record = {"trial": index, "params": dict(params), **run_trial(params, data)}
        logger.info(
            "trial %d: validation R2 %.3f (%.1f s)", index, record["val_r2"], record["seconds"]
        )
        records.append(record)
        if on_trial is not None:
            on_trial(record)
    return SearchResult(records, _pick_best(records), "local", time.perf_counter() - start)


def require_ray() -> Any:
    """Import and return ``ray``; raise :class:`RayUnavailableError` if it is missing."""
    try:
        import ray
        from ray import tune  # noqa: F401  (Tune ships as the ray[tune] extra)
    except ImportError as error:
        raise RayUnavailableError(
            f"--ray needs Ray Tune, which is not installed ({error}); install the cluster "
            f"extra with: {RAY_INSTALL_HINT}"
        ) from None
    return ray


def _ray_trial(config: dict[str, Any], data: TrialData, trials: list[dict[str, Any]]) -> dict:
    """Ray Tune function trainable: trial ``config["trial"]`` of ``trials``; the returned
    dict is the trial's final result."""
    return run_trial(trials[config["trial"]], data)


def ray_search(
    trials: Sequence[dict[str, Any]],
    data: TrialData,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
) -> SearchResult:
    """Run ``trials`` on Ray Tune (``tune.Tuner``), one CPU each by default.

    ``address=None`` starts (or reuses) a local Ray instance; otherwise it is passed to
    ``ray.init`` to connect to an existing cluster. A Ray instance started here is shut down
    at the end.
    """
    ray = require_ray()
    from ray import tune

    start = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address)
        else:
            ray.init()
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_ray_trial, data=data, trials=list(trials)),
            {"cpu": cpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(list(range(len(trials))))},
            tune_config=tune.TuneConfig(metric="val_r2", mode="max"),
        )
        grid = tuner.fit()
        by_index: dict[int, dict[str, Any]] = {}
        for position in range(len(grid)):
            result = grid[position]
            if result.error is not None:
                raise SearchError(f"Ray Tune trial failed: {result.error}")
            index = int(result.config["trial"])
            metrics = result.metrics
            by_index[index] = {
                "trial": index,
                "params": dict(trials[index]),
                **{k: metrics[k] for k in ("val_r2", "best_step", "steps", "rate_hz", "seconds")},
            }
    finally:
        if started_here:
            ray.shutdown()
    records = [by_index[i] for i in range(len(trials))]
    return SearchResult(records, _pick_best(records), "ray", time.perf_counter() - start)
