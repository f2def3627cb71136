"""The same hyperparameter search for the GRU and LSTM baselines as for the SNN.

A baseline is only fair when it gets what the SNN gets: here the same number of trials,
the same sampler (Optuna TPE, :data:`calibration.search.STARTUP_TRIALS` random trials
first, seeded the same way), the same pruner (successive halving, reduction factor
:data:`calibration.search.REDUCTION_FACTOR`), the same resumable SQLite study and the same
objective (best validation R² during training; the test part is never seen). The machinery
is :mod:`calibration.search`'s; this module adds the space and the trial.

A trial trains a fresh :class:`bci.rnn_baselines.RecurrentDecoder` for up to ``epochs``
epochs with early stopping on validation R² (``patience``), reporting after each epoch; the
pruner's first rung is at a third of the epoch budget, as the SNN's is at a third of its step
budget. Search space (``base_hidden`` the default width)::

    hidden        choice of base_hidden x {1/2, 1, 2}
    layers        choice of {1, 2}
    lr            log-uniform [3e-4, 1e-2]
    weight_decay  log-uniform [1e-7, 1e-3]
    window        choice of {50, 100, 200} bins (truncated BPTT length)
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bci.rnn_baselines import GRUDecoder, LSTMDecoder, RecurrentDecoder
from calibration.search import (
    Report,
    SearchResult,
    SearchSpace,
    TrialData,
    finished_trials,
    objective,
    open_study,
    run_optuna_trial,
    search_result,
    study_settings,
)

logger = logging.getLogger(__name__)

CELLS: dict[str, type[RecurrentDecoder]] = {"gru": GRUDecoder, "lstm": LSTMDecoder}


@dataclass(frozen=True)
class RNNSearchSpace:
    """Where the sampler draws from for a recurrent baseline."""

    hidden_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    layers: tuple[int, ...] = (1, 2)
    lr: tuple[float, float] = (3e-4, 1e-2)
    weight_decay: tuple[float, float] = (1e-7, 1e-3)
    windows: tuple[int, ...] = (50, 100, 200)
    epochs: int = 100  # per-trial budget, with early stopping (patience 10)


def rnn_distributions(base_hidden: int, space: RNNSearchSpace) -> dict[str, Any]:
    """The space as Optuna distributions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    hidden = sorted({max(1, round(base_hidden * f)) for f in space.hidden_factors})
    return {
        "hidden": CategoricalDistribution(hidden),
        "layers": CategoricalDistribution(list(space.layers)),
        "lr": FloatDistribution(*space.lr, log=True),
        "weight_decay": FloatDistribution(*space.weight_decay, log=True),
        "window": CategoricalDistribution(list(space.windows)),
    }


def make_rnn(cell: str, params: dict[str, Any], seed: int, epochs: int = 100) -> RecurrentDecoder:
    """A ``cell`` decoder with ``params`` (keys of :func:`rnn_distributions`, any subset);
    the burn-in is a fifth of the window (20 of the default 100 bins)."""
    window = int(params.get("window", 100))
    return CELLS[cell](**params, burn_in=window // 5, epochs=epochs, seed=seed)


def run_rnn_trial(
    cell: str, params: dict[str, Any], data: TrialData, epochs: int, report: Report | None = None
) -> dict[str, Any]:
    """Train one configuration; the record has :data:`calibration.search.RECORD_KEYS`
    (``best_step`` and ``steps`` count epochs; ``rate_hz`` is NaN: no spikes)."""
    decoder = make_rnn(cell, params, data.seed, epochs)
    best = {"val_r2": -math.inf, "best_step": 0}
    start = time.perf_counter()

    def evaluated(record: dict[str, float]) -> None:
        if record["val_r2"] > best["val_r2"]:
            best.update(val_r2=float(record["val_r2"]), best_step=int(record["epoch"]) + 1)
        if report is not None:
            seconds = time.perf_counter() - start
            report({**best, "steps": int(record["epoch"]) + 1, "rate_hz": math.nan,
                    "seconds": seconds})  # fmt: skip

    decoder.fit(
        data.train_neural,
        data.train_kinematics,
        val=(data.val_neural, data.val_kinematics),
        callback=evaluated,
    )
    return {**best, "steps": len(decoder.history_), "rate_hz": math.nan,
            "seconds": time.perf_counter() - start}  # fmt: skip


def rnn_search(
    cell: str,
    n_trials: int,
    data: TrialData,
    study_path: Path,
    base_hidden: int,
    space: RNNSearchSpace = RNNSearchSpace(),
) -> SearchResult:
    """Run the ``cell`` ("gru" or "lstm") study at ``study_path`` up to ``n_trials``
    finished trials on this machine (resumable as the SNN's)."""
    if cell not in CELLS:
        raise ValueError(f"unknown recurrent cell {cell!r}; valid: {', '.join(CELLS)}")
    if n_trials < 1:
        raise ValueError(f"the search needs at least one trial; got {n_trials}")
    start = time.perf_counter()
    space_json = json.loads(json.dumps(asdict(space)))
    settings = {**study_settings(data, base_hidden, SearchSpace()), "space": space_json,
                "decoder": cell}  # fmt: skip
    grace = max(1, space.epochs // 3)
    study = open_study(study_path, settings, data.seed, min_resource=grace)
    distributions = rnn_distributions(base_hidden, space)
    resumed = len(finished_trials(study))

    def run(params: dict[str, Any], report: Report) -> dict[str, Any]:
        return run_rnn_trial(cell, params, data, space.epochs, report)

    for _ in range(n_trials - resumed):
        record = run_optuna_trial(study, study.ask(distributions), run, space.epochs)
        logger.info("%s trial %d (%s): validation R2 %.3f (%.1f s)", cell, record["trial"],
                    record["state"], objective(record["val_r2"]), record["seconds"])  # fmt: skip
    return search_result(study, "local", start, study_path, resumed)
