"""Hyperparameter search for the spiking decoder: Optuna's TPE sampler with pruning, kept in
a resumable SQLite study, run on this machine or on Ray Tune (:mod:`calibration.search_ray`).

A trial trains a fresh RSNN on the training part with a fixed step budget and is scored by
its best validation R² (the early-stopping score :func:`bci.training.train_rsnn` keeps); the
test part is never seen. Each evaluation during training (every ``eval_every`` steps,
through the training progress callback) reports the best validation R² so far, and trials
that fall behind are stopped early (*pruned*): asynchronous successive halving, with the
first rung at :func:`grace_steps` and reduction factor :data:`REDUCTION_FACTOR` (Optuna's
``SuccessiveHalvingPruner`` here, Ray Tune's ``ASHAScheduler`` on Ray). A pruned trial keeps
the best validation R² it reached; the best trial is chosen among the completed ones.

Sampler: ``TPESampler``: the first :data:`STARTUP_TRIALS` trials of a study are drawn at
random, the later ones from the tree-structured Parzen estimator fitted to all finished
trials. It is seeded with ``seed`` plus the number of trials already in the study, so a
search is reproducible and a resumed one does not repeat the first draws.

Search space (``base_hidden`` is ``--hidden``)::

    n_hidden        choice of base_hidden x {1/2, 1, 2}
    alif_fraction   choice of {0, 0.25, 0.5, 0.75, 1}
    lr              log-uniform [1e-3, 1e-2]
    target_rate_hz  log-uniform [1, 8] Hz
    tau_mem_s       log-uniform [0.02, 0.3] s
    tau_out_s       log-uniform [0.05, 0.3] s

The study is an SQLite file (``bci calibrate --study PATH``, by default next to ``--out``,
see :func:`default_study_path`). Rerunning with the same study resumes it: the finished
trials (completed or pruned) are kept and only the missing ones run, so ``--trials 20``
after an interrupted ``--trials 20`` finishes the 20. A study records the settings it was
made with (search space, ``--hidden``, trial budget, neuron choices, seed and a SHA-256 of
the training and validation data); rerunning it with other settings is refused, and a new
``--study`` (or deleting the file) starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, train_rsnn
from streams.session import Session

logger = logging.getLogger(__name__)

STUDY_NAME = "bci-calibrate"
TRIAL_STEPS = 300  # a search trial's default budget at most, BPTT steps
STUDY_SUFFIX = ".study.sqlite"
STARTUP_TRIALS = 5
REDUCTION_FACTOR = 3
# Parameters of a trial that belong to RSNNConfig; the rest go to TrainConfig.
MODEL_KEYS: tuple[str, ...] = ("n_hidden", "alif_fraction", "tau_mem_s", "tau_out_s")
TRAIN_KEYS: tuple[str, ...] = ("lr", "target_rate_hz")
PARAM_KEYS: tuple[str, ...] = ("n_hidden", "alif_fraction", "lr", "target_rate_hz",
                               "tau_mem_s", "tau_out_s")  # fmt: skip
RECORD_KEYS: tuple[str, ...] = ("val_r2", "best_step", "steps", "rate_hz", "seconds")
Report = Callable[[dict[str, Any]], None]


class SearchError(RuntimeError):
    """The search could not run (Ray missing, a Ray trial failed, a study made with other
    settings); the message says why."""


class RayUnavailableError(SearchError):
    """``--ray`` was asked for but Ray Tune is not installed."""


@dataclass(frozen=True)
class SearchSpace:
    """Where the sampler draws from (ranges are inclusive, times in seconds)."""

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

    @classmethod
    def from_split(
        cls,
        train: Session,
        val: Session,
        train_config: TrainConfig,
        snn: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> TrialData:
        """The trials' data from a session's training and validation parts."""
        return cls(train.neural, train.kinematics, val.neural, val.kinematics, train.bin_s,
                   train=train_config, snn=dict(snn or {}), seed=seed)  # fmt: skip


def default_trial_steps(max_steps: int) -> int:
    """A search trial's default budget, BPTT steps: the final training's, at most
    :data:`TRIAL_STEPS`."""
    return min(max_steps, TRIAL_STEPS)


@dataclass
class SearchResult:
    """Every finished trial of the study, in trial order (``trial`` is Optuna's trial
    number; ``state`` is ``complete`` or ``pruned``); ``best`` is the trial number of the
    highest validation R²; ``resumed`` counts the trials found in the study at the start."""

    trials: list[dict[str, Any]]
    best: int
    backend: str
    seconds: float
    study: Path | None = None
    resumed: int = 0

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(next(t for t in self.trials if t["trial"] == self.best)["params"])


def default_study_path(out: Path) -> Path:
    """The study next to checkpoint ``out``: ``model.safetensors`` -> ``model.study.sqlite``."""
    out = Path(out)
    return out.with_name(out.stem + STUDY_SUFFIX)


def grace_steps(train: TrainConfig) -> int:
    """Training steps before the first pruning decision: the last evaluation before a third
    of the trial budget (at least the first evaluation, at most the budget)."""
    every = train.eval_every
    return min(train.max_steps, max(every, (train.max_steps // 3) // every * every))


def search_distributions(base_hidden: int, space: SearchSpace = SearchSpace()) -> dict[str, Any]:
    """The search space as Optuna distributions, one per key of :data:`PARAM_KEYS`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    hidden = sorted({max(1, round(base_hidden * f)) for f in space.hidden_factors})

    def log(name: str) -> FloatDistribution:
        low, high = getattr(space, name)
        return FloatDistribution(low, high, log=True)

    return {
        "n_hidden": CategoricalDistribution(hidden),
        "alif_fraction": CategoricalDistribution([float(f) for f in space.alif_fractions]),
        "lr": log("lr"),
        "target_rate_hz": log("target_rate_hz"),
        "tau_mem_s": log("tau_mem_s"),
        "tau_out_s": log("tau_out_s"),
    }


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(RSNNConfig fields, TrainConfig fields) of a trial's parameters."""
    unknown = sorted(set(params) - set(MODEL_KEYS) - set(TRAIN_KEYS))
    if unknown:
        raise ValueError(f"unknown trial parameter(s) {unknown}")
    return (
        {k: v for k, v in params.items() if k in MODEL_KEYS},
        {k: v for k, v in params.items() if k in TRAIN_KEYS},
    )


def run_trial(params: dict[str, Any], data: TrialData, report: Report | None = None) -> dict:
    """Train one configuration on the training part; score it on the validation part.

    Returns ``val_r2`` (best validation R² during training, the search objective),
    ``best_step``, ``steps`` run, ``rate_hz`` (hidden rate at the last evaluation) and
    ``seconds``. ``report`` receives the same record after each evaluation (``val_r2`` the
    best so far, ``steps`` the step reached); an exception it raises stops the trial.
    """
    model_params, train_params = split_params(params)
    config = RSNNConfig(
        n_in=data.train_neural.shape[1],
        n_out=data.train_kinematics.shape[1],
        dt_s=data.bin_s,
        **{**data.snn, **model_params},
    )
    model = RSNN(config, seed=data.seed)
    best = {"val_r2": -math.inf, "best_step": 0}
    start = time.perf_counter()

    def evaluated(record: dict[str, float]) -> None:
        if record["val_r2"] > best["val_r2"]:  # as train_rsnn keeps its best weights
            best.update(val_r2=float(record["val_r2"]), best_step=int(record["step"]))
        if report is not None:
            seconds = time.perf_counter() - start
            rate = float(record["rate_hz"])
            report({**best, "steps": int(record["step"]), "rate_hz": rate, "seconds": seconds})

    result = train_rsnn(
        model,
        (data.train_neural, data.train_kinematics),
        (data.val_neural, data.val_kinematics),
        replace(data.train, seed=data.seed, **train_params),
        callback=evaluated,
    )
    return {
        "val_r2": float(result.best_val_r2),
        "best_step": int(result.best_step),
        "steps": int(result.steps),
        "rate_hz": float(result.history[-1]["rate_hz"]) if result.history else float("nan"),
        "seconds": float(result.seconds),
    }


# --- the study ----------------------------------------------------------------------------


def study_settings(data: TrialData, base_hidden: int, space: SearchSpace) -> dict[str, Any]:
    """What a study's trials depend on, as JSON values; a resumed study must match."""
    digest = hashlib.sha256()
    for array in (data.train_neural, data.train_kinematics, data.val_neural, data.val_kinematics):
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    settings = {
        "base_hidden": int(base_hidden),
        "space": asdict(space),
        "train": asdict(data.train),
        "snn": data.snn,
        "seed": int(data.seed),
        "bin_s": float(data.bin_s),
        "data_sha256": digest.hexdigest(),
    }
    return json.loads(json.dumps(settings))


def open_study(
    path: Path,
    settings: dict[str, Any],
    sampler_seed: int | None = None,
    min_resource: int | None = None,
) -> Any:
    """The SQLite study at ``path`` (created if missing), with the TPE sampler seeded by
    ``sampler_seed`` plus its trial count and the successive-halving pruner, whose first rung
    is ``min_resource`` (default: :func:`grace_steps` of the settings' training budget)."""
    import optuna

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--study {path}: directory {path.parent} does not exist")
    optuna.logging.disable_default_handler()  # its warnings go through this program's logging
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{path.resolve()}"
    study = optuna.create_study(
        storage=storage, study_name=STUDY_NAME, direction="maximize", load_if_exists=True
    )
    made_with = study.user_attrs.get("settings")
    if made_with is None:
        study.set_user_attr("settings", settings)
    elif made_with != settings:
        changed = sorted(k for k in settings if made_with.get(k) != settings[k])
        raise SearchError(
            f"study {path} was made with other settings ({', '.join(changed)} differ); give "
            "a new --study, or delete it to start afresh"
        )
    if min_resource is None:
        min_resource = grace_steps(TrainConfig(**settings["train"]))
    return optuna.load_study(
        study_name=STUDY_NAME,
        storage=storage,
        sampler=optuna.samplers.TPESampler(
            seed=None if sampler_seed is None else sampler_seed + len(study.trials),
            n_startup_trials=STARTUP_TRIALS,
        ),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=REDUCTION_FACTOR
        ),
    )


def finished_trials(study: Any) -> list[Any]:
    """The study's completed and pruned trials, in trial order."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def trial_record(trial: Any) -> dict[str, Any]:
    """The result record of a finished Optuna trial (as :func:`run_trial` returns, with
    ``trial``, ``params`` (in the order of the search distributions) and ``state``)."""
    return {
        "trial": int(trial.number),
        "params": dict(trial.params),
        **{k: trial.user_attrs[k] for k in RECORD_KEYS},
        "state": trial.state.name.lower(),
    }


def search_result(study: Any, backend: str, start: float, path: Path, resumed: int) -> Any:
    """The :class:`SearchResult` of every finished trial of ``study``."""
    records = [trial_record(t) for t in finished_trials(study)]
    return SearchResult(records, pick_best(records), backend, time.perf_counter() - start,
                        Path(path), resumed)  # fmt: skip


def pick_best(trials: list[dict[str, Any]]) -> int:
    """Trial number of the highest validation R² among the completed trials (the pruned
    ones only if none completed)."""
    complete = [t for t in trials if t["state"] == "complete"] or list(trials)
    scores = [t["val_r2"] if math.isfinite(t["val_r2"]) else -math.inf for t in complete]
    if not scores or all(s == -math.inf for s in scores):
        raise ValueError("no trial reached a finite validation R²; widen the search space")
    return int(complete[int(np.argmax(scores))]["trial"])


def objective(value: float) -> float:
    """A validation R² as Optuna takes it (NaN, refused there, counts as -inf)."""
    return value if not math.isnan(value) else -math.inf


# --- local runner -------------------------------------------------------------------------


def local_search(
    n_trials: int,
    data: TrialData,
    study_path: Path,
    base_hidden: int,
    space: SearchSpace = SearchSpace(),
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Run the study at ``study_path`` up to ``n_trials`` finished trials on this machine,
    one after another; ``on_trial`` gets the record of each trial run now."""
    if n_trials < 1:
        raise ValueError(f"the search needs at least one trial; got {n_trials}")
    start = time.perf_counter()
    study = open_study(study_path, study_settings(data, base_hidden, space), data.seed)
    distributions = search_distributions(base_hidden, space)
    resumed = len(finished_trials(study))
    if resumed:
        logger.info("study %s: %d trials done, %d to run", study_path, resumed, n_trials - resumed)

    def run(params: dict[str, Any], report: Report) -> dict[str, Any]:
        return run_trial(params, data, report)

    for _ in range(n_trials - resumed):
        record = run_optuna_trial(study, study.ask(distributions), run, data.train.max_steps)
        logger.info(
            "trial %d (%s): validation R2 %.3f (%.1f s)",
            record["trial"],
            record["state"],
            record["val_r2"],
            record["seconds"],
        )
        if on_trial is not None:
            on_trial(record)
    return search_result(study, "local", start, study_path, resumed)


def run_optuna_trial(
    study: Any, trial: Any, run: Callable[[dict[str, Any], Report], dict], budget: int
) -> dict[str, Any]:
    """Run ``trial`` with ``run(params, report)``, reporting each evaluation (its ``steps``:
    the resource used so far, of ``budget``) to the pruner; tell the study the outcome."""
    import optuna
    from optuna.trial import TrialState

    last: dict[str, Any] = {}

    def report(record: dict[str, Any]) -> None:
        last.update(record)
        step = record["steps"]
        if math.isfinite(record["val_r2"]):
            trial.report(record["val_r2"], step)
        if step < budget and trial.should_prune():
            raise optuna.TrialPruned()

    try:
        record, state = run(trial.params, report), TrialState.COMPLETE
    except optuna.TrialPruned:
        record, state = dict(last), TrialState.PRUNED
    except BaseException:  # an error or Ctrl-C: the trial is failed, not left running
        study.tell(trial, state=TrialState.FAIL)
        raise
    for key in RECORD_KEYS:
        trial.set_user_attr(key, record[key])
    value = objective(record["val_r2"]) if state == TrialState.COMPLETE else None
    frozen = study.tell(trial, value, state=state)
    return trial_record(frozen)
