"""The hyperparameter search of :mod:`calibration.search` on Ray Tune, for clusters.

The same search: the same space and trial function, Ray Tune's ``OptunaSearch`` with the
same TPE sampler, and Ray's ``ASHAScheduler`` (asynchronous successive halving, the first
rung at :func:`calibration.search.grace_steps` training steps, reduction factor 3) stopping
trials that fall behind, fed by the best validation R² each trial reports after every
evaluation. The SQLite study stays on the driver: its finished trials seed the sampler (a
resumed search learns from them and runs only the missing trials), and each trial Ray
finishes is written to it at once.

Ray is an optional dependency (``pip install -e .[cluster]``) imported only here, when
asked for. Without an address a local Ray instance is started (and shut down at the end);
``address`` (e.g. ``auto`` or ``ray://head:10001``) is passed to ``ray.init`` to join an
existing cluster, whose workers need this package installed. The training data travel to
the workers once, through ``tune.with_parameters`` (Ray's object store). One CPU per trial.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from calibration.search import (
    PARAM_KEYS,
    RECORD_KEYS,
    REDUCTION_FACTOR,
    STARTUP_TRIALS,
    STUDY_NAME,
    RayUnavailableError,
    SearchError,
    SearchResult,
    SearchSpace,
    TrialData,
    finished_trials,
    grace_steps,
    objective,
    open_study,
    run_trial,
    search_distributions,
    search_result,
    study_settings,
)

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = "pip install -e .[cluster]"
FINISHED = "finished"  # result key: 1 once a trial has run to its end (budget or early stop)


def require_ray() -> Any:
    """Import and return ``ray``; raise :class:`RayUnavailableError` if it is missing."""
    try:
        import ray
        from ray import tune  # noqa: F401  (Tune ships as the ray[tune] extra)
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError as error:
        raise RayUnavailableError(
            f"--ray needs Ray Tune, which is not installed ({error}); install the cluster "
            f"extra with: {RAY_INSTALL_HINT}"
        ) from None
    return ray


def _ray_trial(config: dict[str, Any], data: TrialData) -> None:
    """Ray Tune function trainable: one trial, reporting after every evaluation."""
    from ray import tune

    def report(record: dict[str, Any]) -> None:  # ASHA stops a trial at max_t itself
        tune.report({**record, FINISHED: int(record["steps"] >= data.train.max_steps)})

    record = run_trial({k: config[k] for k in PARAM_KEYS}, data, report)
    tune.report({**record, FINISHED: 1})


def ray_search(
    n_trials: int,
    data: TrialData,
    study_path: Path,
    base_hidden: int,
    space: SearchSpace,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
) -> SearchResult:
    """Run the study at ``study_path`` up to ``n_trials`` finished trials on Ray Tune."""
    import optuna

    ray = require_ray()
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    if n_trials < 1:
        raise ValueError(f"the search needs at least one trial; got {n_trials}")
    start = time.perf_counter()
    study = open_study(study_path, study_settings(data, base_hidden, space))
    resumed = len(finished_trials(study))
    missing = n_trials - resumed
    if missing <= 0:
        return search_result(study, "ray", start, study_path, resumed)
    distributions = search_distributions(base_hidden, space)
    seeded = optuna.storages.InMemoryStorage()  # the searcher's copy of the finished trials
    optuna.create_study(storage=seeded, study_name=STUDY_NAME, direction="maximize").add_trials(
        finished_trials(study)
    )
    searcher = OptunaSearch(
        space=distributions,
        metric="val_r2",
        mode="max",
        sampler=optuna.samplers.TPESampler(
            seed=data.seed + len(study.trials), n_startup_trials=STARTUP_TRIALS
        ),
        study_name=STUDY_NAME,
        storage=seeded,
    )
    scheduler = ASHAScheduler(
        time_attr="steps",
        max_t=data.train.max_steps,
        grace_period=grace_steps(data.train),
        reduction_factor=REDUCTION_FACTOR,
    )
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address)
        else:
            ray.init()
    try:
        with tempfile.TemporaryDirectory(prefix="bci-ray-") as scratch:
            tuner = tune.Tuner(
                tune.with_resources(
                    tune.with_parameters(_ray_trial, data=data), {"cpu": cpus_per_trial}
                ),
                tune_config=tune.TuneConfig(
                    metric="val_r2",
                    mode="max",
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=missing,
                ),
                run_config=tune.RunConfig(
                    name="bci-search",
                    storage_path=None if address else scratch,
                    callbacks=[_to_study(study, distributions)],
                    verbose=0,
                ),
            )
            grid = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    failed = [r.error for r in grid if r.error is not None]
    if failed:
        raise SearchError(f"Ray Tune trial failed: {failed[0]}")
    return search_result(study, "ray", start, study_path, resumed)


def _to_study(study: Any, distributions: dict[str, Any]) -> Any:
    """A Tune callback (on the driver) that adds each finished trial to ``study``: complete
    when it ran to its end, pruned when the scheduler stopped it."""
    import optuna
    from optuna.trial import TrialState
    from ray import tune

    class ToStudy(tune.Callback):
        def __init__(self) -> None:
            self.reported: dict[str, dict[int, float]] = defaultdict(dict)

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.reported[trial.trial_id][int(result["steps"])] = objective(result["val_r2"])

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            result = trial.last_result
            complete = bool(result.get(FINISHED))
            study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.COMPLETE if complete else TrialState.PRUNED,
                    value=objective(result["val_r2"]),
                    params={k: trial.config[k] for k in PARAM_KEYS},
                    distributions=distributions,
                    user_attrs={k: result[k] for k in RECORD_KEYS},
                    intermediate_values=self.reported.pop(trial.trial_id, {}),
                )
            )
            logger.info("Ray trial %s: validation R2 %.3f", trial.trial_id, result["val_r2"])

    return ToStudy()
