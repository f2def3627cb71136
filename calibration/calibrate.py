"""Calibrate a spiking decoder on one recorded session and write a checkpoint and a report.

``run_calibration(session_path, out, report_dir, options)`` is what ``bci calibrate`` runs:

1. Load the session (NPZ; XDF with streams chosen by name or type and the neural stream
   binned to ``bin_ms``; NWB with spike times binned to ``bin_ms`` and a behaviour series
   as kinematics; :func:`streams.files.load_any_session`).
2. Split it chronologically into train / validation / test parts.
3. Optionally search hyperparameters (``trials`` > 0, :mod:`calibration.search`): Optuna's
   TPE sampler with pruning, in a resumable SQLite study (``study``, by default next to
   ``out``); each trial is trained on the training part and scored on the validation part;
   the best configuration is retrained with the full step budget. ``ray=True`` runs the
   same search on Ray Tune (:mod:`calibration.search_ray`, ``pip install -e .[cluster]``;
   ``ray_address`` joins an existing cluster).
4. Train the RSNN with BPTT on the training part (input and output normalisation fitted
   there, early stopping on validation R²) and fit the Wiener and Kalman baselines (and
   the GRU with ``gru=True``) on the same split, through
   :func:`calibration.evaluate.evaluate_decoders`. With ``init`` the model and its config
   come from an existing checkpoint and are fine-tuned instead (normalisation refitted to
   this session).
5. Score every decoder on the test part, decoding validation and test as one causal run.
6. Check the data (:mod:`calibration.checks`): silent, saturated and non-stationary
   channels, and validation or test parts too short to trust; each finding is a warning
   (``CalibrationResult.warnings``, logged, and at the top of the report).
7. Write the checkpoint atomically, only once everything above has succeeded (an interrupt
   or error leaves nothing at ``out``), with the session's ``kinematics_units``, then the
   report (:mod:`calibration.report`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bci.checkpoint import load_checkpoint, save_checkpoint
from bci.metrics import (
    activation_sparsity,
    footprint_bytes,
    pearson_r,
    r2_score,
    synaptic_operations,
)
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, TrainResult, train_rsnn
from calibration.checks import ChannelSummary, channel_summary, split_warnings
from calibration.evaluate import Evaluation, EvaluationConfig, evaluate_decoders
from calibration.report import ReportInputs, write_report
from calibration.search import (
    SearchResult,
    SearchSpace,
    TrialData,
    default_study_path,
    default_trial_steps,
    local_search,
    open_study,
    split_params,
    study_settings,
)
from calibration.search_ray import ray_search, require_ray
from streams.channels import in_model_order
from streams.files import inspect_session_file, is_nwb, is_xdf, load_any_session
from streams.lsl_outlet import KINEMATICS_TYPE, NEURAL_TYPE, TARGETS_TYPE
from streams.session import Session, SessionError, chronological_split

logger = logging.getLogger(__name__)

MIN_EVAL_BINS = 20  # validation and test parts need at least this many bins
Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class CalibrationOptions:
    """Inputs, split, model and training options of one calibration (times in the names);
    each is a flag of ``bci calibrate``, and errors name it as such (``--trial-steps``).

    ``steps`` is the BPTT step budget of the final training; ``trial_steps`` that of each
    search trial (default ``min(steps, 300)``). ``reset`` and ``surrogate`` are the neuron
    choices of :class:`bci.rsnn.RSNNConfig`, used by the search trials too; a LIF model
    (``alif_fraction=0``) with ``reset="zero"`` exports to NIR exactly (:mod:`bci.nir_export`).
    ``members`` > 1 trains that many SNNs and merges them into one (:mod:`bci.ensemble`).
    """

    neural: str | None = None
    kinematics: str | None = None
    targets: str | None = None
    bin_ms: float | None = None
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    hidden: int = 256
    alif_fraction: float = 0.5
    reset: str = RSNNConfig.reset
    surrogate: str = RSNNConfig.surrogate
    steps: int = 1500
    lr: float = 3e-3
    rate_hz: float = 2.0
    seed: int = 0
    members: int = 1
    gru: bool = False
    init: Path | None = None
    trials: int = 0
    trial_steps: int | None = None
    search_space: SearchSpace = field(default_factory=SearchSpace)
    study: Path | None = None
    ray: bool = False
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if len(self.split) != 3:
            raise ValueError(
                f"--split must have three fractions (train, validation, test); got {self.split}"
            )
        for name in ("hidden", "steps", "members"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer; got {getattr(self, name)}")
        if self.trials < 0:
            raise ValueError(f"--trials must be zero (no search) or more; got {self.trials}")
        if self.trial_steps is not None and self.trial_steps < 1:
            raise ValueError(f"--trial-steps must be a positive integer; got {self.trial_steps}")
        if self.bin_ms is not None and not (math.isfinite(self.bin_ms) and self.bin_ms > 0):
            raise ValueError(
                f"--bin-ms must be a positive number of milliseconds; got {self.bin_ms}"
            )
        if self.init is not None and self.members > 1:
            raise ValueError(
                "fine-tuning (--init) trains the one checkpoint given; --members trains new "
                "models: drop one of the two"
            )
        if self.init is not None and self.trials:
            raise ValueError(
                "a hyperparameter search (--trials) trains new models; it cannot fine-tune a "
                "checkpoint (--init): drop one of the two"
            )
        if self.ray and not self.trials:
            raise ValueError("--ray runs the hyperparameter search on Ray Tune; give --trials N")
        if self.study is not None and not self.trials:
            raise ValueError("--study keeps a hyperparameter search; give --trials N")

    def train_config(self, max_steps: int | None = None) -> TrainConfig:
        return TrainConfig(
            max_steps=self.steps if max_steps is None else max_steps,
            lr=self.lr,
            target_rate_hz=self.rate_hz,
            seed=self.seed,
        )


@dataclass
class CalibrationResult:
    """What a calibration produced; ``model`` is the in-memory decoder that was saved."""

    model: RSNN
    metrics: dict[str, Any]
    checkpoint: Path
    report_dir: Path | None
    training: TrainResult
    parts: tuple[Session, Session, Session]
    test_decoded: np.ndarray
    test_spikes: np.ndarray
    search: SearchResult | None = None
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_calibration_session(path: Path, options: CalibrationOptions) -> Session:
    """The session at ``path`` with kinematics, streams chosen as ``options`` say."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"session file {path} does not exist")
    wanted = {
        "neural": options.neural,
        "kinematics": options.kinematics,
        "targets": options.targets,
    }
    if is_xdf(path) or is_nwb(path):
        session = load_any_session(
            path,
            bin_s=None if options.bin_ms is None else options.bin_ms / 1000.0,
            **wanted,
        )
    else:
        if options.bin_ms is not None:
            raise ValueError(
                f"--bin-ms bins XDF recordings and NWB files; {path} is an NPZ session "
                "already binned: drop --bin-ms"
            )
        _check_npz_streams(path, wanted)
        session = load_any_session(path)
    if session.kinematics is None:
        present = ", ".join(f"{s.name} ({s.type})" for s in inspect_session_file(path))
        hint = (
            "name the kinematics stream (NWB: behaviour series) with --kinematics"
            if is_xdf(path) or is_nwb(path)
            else "record or simulate a session with kinematics"
        )
        raise SessionError(
            f"session {path} has no kinematics: calibration needs true kinematics to train "
            f"and score the decoder; {hint} (streams present: {present})"
        )
    return session


def _check_npz_streams(path: Path, wanted: dict[str, str | None]) -> None:
    """In an NPZ session each role is one fixed array; a name must pick that array."""
    roles = {"neural": NEURAL_TYPE, "kinematics": KINEMATICS_TYPE, "targets": TARGETS_TYPE}
    summaries = inspect_session_file(path)
    present = ", ".join(f"{s.name} ({s.type})" for s in summaries)
    for role, key in wanted.items():
        if key is None:
            continue
        matches = [s for s in summaries if s.name == role and key in (s.name, s.type)]
        if not matches:
            raise ValueError(
                f"session file {path} has no {role} stream named or typed {key!r} "
                f"(expected {role!r} or {roles[role]!r}); streams present (name, type): "
                f"{present}"
            )


def split_session(session: Session, fractions: tuple[float, ...]) -> tuple[Session, ...]:
    """Chronological train / validation / test parts, long enough to train and score on."""
    window = TrainConfig().window
    sizes = [round(float(c) * session.n_bins) for c in np.cumsum(fractions)]
    counts = np.diff([0, *sizes[:-1], session.n_bins]).tolist()
    short = len(counts) == 3 and (counts[0] < window or min(counts[1:]) < MIN_EVAL_BINS)
    if short:
        raise SessionError(
            f"session too short to split: {session.n_bins} bins ({session.duration_s:.1f} s) "
            f"split {tuple(fractions)} gives train/validation/test parts of {counts} bins; "
            f"training needs at least {window} bins (one window) and validation and test "
            f"{MIN_EVAL_BINS} bins each: record a longer session or change --split"
        )
    return chronological_split(session, fractions, min_bins=MIN_EVAL_BINS)


def _load_init(path: Path, session: Session, where: str) -> tuple[RSNN, Session]:
    """The checkpoint to fine-tune, and ``session`` checked against it (the one compatibility
    check) with its channels in the checkpoint's order."""
    checkpoint = load_checkpoint(path)  # CheckpointError names the file and the problem
    manifest = checkpoint.manifest
    session = in_model_order(
        session, manifest, f"checkpoint {path}", where,
        bin_fix=f"rebin the recording (--bin-ms {manifest.bin_s * 1e3:g} for XDF) or calibrate "
        "without --init",
        kinematics_fix="calibrate without --init",
    )  # fmt: skip
    return checkpoint.model, session


def score_snn(
    model: RSNN, val: Session, test: Session
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, np.ndarray]:
    """Decode validation + test as one causal run; score the test part.

    Returns (accuracy scores, efficiency, decoded test kinematics, test hidden spikes), with
    the definitions of :func:`calibration.evaluate.evaluate_decoders`.
    """
    decoded, spikes = model.decode(np.concatenate([val.neural, test.neural]))
    decoded, spikes = decoded[val.n_bins :], spikes[val.n_bins :]
    r2, per_dim = r2_score(test.kinematics, decoded)
    scores = {
        "r2": float(r2),
        "r2_per_dim": [float(v) for v in per_dim],
        "pearson_r": [float(v) for v in pearson_r(test.kinematics, decoded)],
    }
    fan_in, fan_hidden = model.fan_out()
    efficiency = {
        "activation_sparsity": float(activation_sparsity(spikes)),
        "synops_per_bin": float(
            synaptic_operations(test.neural, fan_in) + synaptic_operations(spikes, fan_hidden)
        ),
        "footprint_bytes": int(footprint_bytes(model)),
    }
    return scores, efficiency, decoded, spikes


def check_data(
    session: Session,
    n_bins: dict[str, int],
    split: tuple[float, ...],
    progress: Progress | None = None,
) -> tuple[ChannelSummary, list[str]]:
    """The session's channel summary and the warnings (:mod:`calibration.checks`): held-out
    parts too short to trust, then flagged channels; each warning is logged (on stderr from
    ``bci calibrate``, after a ``("stage", {"stage": "checks"})`` progress call)."""
    if progress:
        progress("stage", {"stage": "checks"})
    channels = channel_summary(session.neural, session.bin_s, session.channel_labels)
    warnings = split_warnings(n_bins, session.bin_s, split) + channels.warnings()
    for warning in warnings:
        logger.warning("%s", warning)
    return channels, warnings


def _entry(scores: dict[str, Any]) -> dict[str, Any]:
    return {key: scores[key] for key in ("r2", "r2_per_dim", "pearson_r")}


def _check_before_training(out: Path, options: CalibrationOptions) -> None:
    """Fail before training, not after: ``out``'s directory must exist, and Ray be
    installed when asked for."""
    if not out.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write checkpoint {out}: directory {out.parent} does not exist; create it"
        )
    if options.ray:
        require_ray()


def _load_session_and_init(
    session_path: Path, options: CalibrationOptions
) -> tuple[Session, RSNN | None]:
    """Step 1: the session and, with ``options.init``, the model to fine-tune (None
    without), the session's channels then in the checkpoint's order."""
    session = load_calibration_session(Path(session_path), options)
    init_model = None
    if options.init is not None:  # the session's channels in the checkpoint's order
        init_model, session = _load_init(Path(options.init), session, f"session {session_path}")
    return session, init_model


def _search(
    session: Session,
    train: Session,
    val: Session,
    out: Path,
    options: CalibrationOptions,
    progress: Progress | None,
) -> tuple[SearchResult | None, dict[str, Any], TrainConfig]:
    """Step 3: the search's result (None without ``trials``), the SNN's parameters and the
    final training's config (the options', or the best trial's)."""
    neuron = {"reset": options.reset, "surrogate": options.surrogate}
    snn_params: dict[str, Any] = {
        "n_hidden": options.hidden,
        "alif_fraction": options.alif_fraction,
        **neuron,
    }
    train_config = options.train_config()
    if not options.trials:
        return None, snn_params, train_config
    data = TrialData.from_split(
        train,
        val,
        options.train_config(options.trial_steps or default_trial_steps(options.steps)),
        snn=neuron,
        seed=options.seed,
    )
    study = Path(options.study) if options.study is not None else default_study_path(out)
    searched = (options.trials, data, study, options.hidden, options.search_space)
    open_study(study, study_settings(data, options.hidden, options.search_space))
    if progress:  # after the study is known to fit: a refusal is one clean line
        progress("stage", {"stage": "search"})
    if options.ray:
        search = ray_search(*searched, address=options.ray_address)
    else:
        search = local_search(*searched, (lambda r: progress("trial", r)) if progress else None)
    best_snn, best_train = split_params(search.best_params)
    snn_params = {**neuron, **best_snn}
    train_config = TrainConfig(**{**asdict(train_config), **best_train})
    logger.info("search: best trial %d %s", search.best, search.best_params)
    return search, snn_params, train_config


def _train(
    session: Session,
    fit_parts: tuple[Session, Session],
    init_model: RSNN | None,
    decoders: tuple[str, ...],
    snn_params: dict[str, Any],
    train_config: TrainConfig,
    options: CalibrationOptions,
    progress: Progress | None,
) -> tuple[Evaluation, RSNN, TrainResult]:
    """Step 4: fit and score the baselines ``decoders`` and the SNN (trained from scratch,
    or ``init_model`` fine-tuned on ``fit_parts``, the training and validation parts)."""
    if progress:
        progress("stage", {"stage": "training"})
    evaluation = evaluate_decoders(
        session,
        EvaluationConfig(
            fractions=options.split,
            decoders=decoders if init_model is not None else ("snn", *decoders),
            snn=snn_params,
            snn_members=options.members,
            train=train_config,
            seed=options.seed,
        ),
        progress,
    )
    if init_model is not None:
        train, val = fit_parts
        model = init_model
        training = train_rsnn(
            model,
            (train.neural, train.kinematics),
            (val.neural, val.kinematics),
            train_config,
            callback=(lambda r: progress("snn", r)) if progress else None,
        )
    else:
        model, training = evaluation.snn, evaluation.snn_training
    if model is None or training is None:  # pragma: no cover - evaluate_decoders trains "snn"
        raise RuntimeError("evaluate_decoders returned no SNN")
    return evaluation, model, training


def _metrics(
    snn_scores: dict[str, Any],
    evaluation: Evaluation,
    decoders: tuple[str, ...],
    efficiency: dict[str, Any],
    parts: tuple[Session, Session, Session],
) -> dict[str, Any]:
    """Step 5's metrics: every decoder's test scores, the SNN's efficiency and the parts'
    sizes in bins (``seconds`` is set just before writing)."""
    train, val, test = parts
    test_metrics = {"snn": _entry(snn_scores)}
    for name in decoders:
        test_metrics[name] = _entry(evaluation.results[name])
    return {
        "test": test_metrics,
        "snn_efficiency": efficiency,
        "n_bins": {"train": train.n_bins, "val": val.n_bins, "test": test.n_bins},
        "seconds": float("nan"),  # set just before writing
    }


def _training_record(
    train_config: TrainConfig,
    model: RSNN,
    training: TrainResult,
    session_path: Path,
    options: CalibrationOptions,
    search: SearchResult | None,
) -> dict[str, Any]:
    """What the checkpoint records of the training: config, model, history, inputs and
    the search."""
    return {
        "config": asdict(train_config),
        "model": model.config.to_dict(),
        **training.to_dict(),
        "session": str(session_path),
        "split": list(options.split),
        "init": None if options.init is None else str(options.init),
        "search": None
        if search is None
        else {
            "backend": search.backend,
            "best": search.best,
            "trials": search.trials,
            "study": str(search.study),
        },
    }


def run_calibration(
    session_path: Path,
    out: Path,
    report_dir: Path | None = None,
    options: CalibrationOptions = CalibrationOptions(),
    progress: Progress | None = None,
) -> CalibrationResult:
    """Calibrate on the session at ``session_path``; write the checkpoint ``out`` and, with
    ``report_dir``, the report. ``progress(kind, record)`` receives ``("stage", {"stage":
    "search" | "training" | "checks"})`` when the search, the final training or the data
    checks start, ``("snn", record)`` for each training evaluation (step, loss, val_r2,
    ...) and ``("trial", record)`` for each finished local search trial.

    Raises ``SessionError`` / ``ValueError`` for unusable input, ``CheckpointError`` for a
    bad ``init`` checkpoint, :class:`calibration.search.SearchError` when Ray is asked for
    but missing (or a Ray trial fails), ``FileNotFoundError`` for missing files or output
    directories.
    """
    start = time.perf_counter()
    out = Path(out)
    _check_before_training(out, options)
    session, init_model = _load_session_and_init(session_path, options)
    train, val, test = split_session(session, options.split)
    search, snn_params, train_config = _search(session, train, val, out, options, progress)
    decoders = ("wiener", "kalman", *(("gru",) if options.gru else ()))
    evaluation, model, training = _train(
        session, (train, val), init_model, decoders, snn_params, train_config, options, progress
    )
    snn_scores, efficiency, decoded, spikes = score_snn(model, val, test)
    metrics = _metrics(snn_scores, evaluation, decoders, efficiency, (train, val, test))
    training_record = _training_record(train_config, model, training, session_path, options, search)
    channels, warnings = check_data(session, metrics["n_bins"], options.split, progress)
    metrics["seconds"] = time.perf_counter() - start
    checkpoint = save_checkpoint(
        out,
        model,
        kinematics_labels=session.kinematics_labels,
        channel_labels=session.channel_labels,
        metrics=metrics,
        training=training_record,
        kinematics_units=session.kinematics_units,
    )
    files = [checkpoint]
    if report_dir is not None:
        files += write_report(
            Path(report_dir),
            metrics,
            ReportInputs(
                test_truth=test.kinematics,
                test_decoded=decoded,
                test_spikes=spikes,
                bin_s=session.bin_s,
                kinematics_labels=session.kinematics_labels,
                n_alif=model.config.n_alif,
                history=training.history,
                best_step=training.best_step,
                trials=None if search is None else search.trials,
                best_trial=None if search is None else search.best,
                session=Path(session_path),
                checkpoint=checkpoint,
                init=options.init,
                kinematics_units=session.kinematics_units,
                baselines={name: evaluation.decoded[name] for name in decoders},
                channels=channels,
                warnings=warnings,
            ),
        )
    return CalibrationResult(
        model=model,
        metrics=metrics,
        checkpoint=checkpoint,
        report_dir=None if report_dir is None else Path(report_dir),
        training=training,
        parts=(train, val, test),
        test_decoded=decoded,
        test_spikes=spikes,
        search=search,
        files=files,
        warnings=warnings,
    )
