"""Train and score the SNN and the baseline decoders on one session, side by side.

The session is split chronologically into train / validation / test parts. Every decoder is
fitted on the training part (the SNN and the GRU early-stop on the validation part), then
decodes validation and test parts as one continuous causal run (so its state is warm when
the test part starts) and is scored on the test bins only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from bci.baselines import CausalDecoder, KalmanFilter, WienerFilter
from bci.efficiency import recurrent_efficiency, snn_efficiency
from bci.ensemble import train_rsnn_ensemble
from bci.metrics import (
    activation_sparsity,
    footprint_bytes,
    pearson_r,
    r2_score,
    synaptic_operations,
)
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, TrainResult
from calibration.search_rnn import make_rnn
from streams.session import Session, SessionError, chronological_split

logger = logging.getLogger(__name__)

DECODERS: tuple[str, ...] = ("snn", "wiener", "kalman", "gru", "lstm")
# What runs unless asked otherwise (bci evaluate); the LSTM is asked for by name.
DEFAULT_DECODERS: tuple[str, ...] = ("snn", "wiener", "kalman", "gru")


@dataclass(frozen=True)
class EvaluationConfig:
    """What to train and how; ``snn`` holds :class:`RSNNConfig` fields other than sizes."""

    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    decoders: tuple[str, ...] = DEFAULT_DECODERS
    snn: dict[str, object] = field(default_factory=dict)
    snn_members: int = 1  # > 1: that many SNNs merged into one (bci.ensemble)
    train: TrainConfig = field(default_factory=TrainConfig)
    wiener_lags: int = 10
    wiener_ridge: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
    gru_hidden: int = 128  # about the SNN's parameter count (GRU 87k, SNN 91k)
    lstm_hidden: int = 112  # likewise (LSTM 94k)
    rnn_params: dict[str, dict[str, object]] = field(default_factory=dict)  # by "gru"/"lstm":
    # RecurrentDecoder arguments (e.g. a search's best trial) over the defaults above
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.decoders) - set(DECODERS))
        if unknown:
            raise ValueError(f"unknown decoder(s) {unknown}; valid names: {', '.join(DECODERS)}")


@dataclass
class Evaluation:
    """Scores in the ``benchmarks/accuracy.py`` JSON layout, plus the trained SNN, the
    fitted baselines (``baselines``) and each decoder's (T_test, K) output on the test part
    (``decoded``), by decoder name. An SNN or GRU/LSTM entry has its NeuroBench figures
    under ``neurobench`` (:mod:`bci.efficiency`)."""

    results: dict[str, object]
    snn: RSNN | None = None
    snn_training: TrainResult | None = None
    decoded: dict[str, np.ndarray] = field(default_factory=dict)
    baselines: dict[str, CausalDecoder] = field(default_factory=dict)


def _scores(truth: np.ndarray, decoded: np.ndarray) -> dict[str, object]:
    r2, per_dim = r2_score(truth, decoded)
    return {
        "r2": float(r2),
        "r2_per_dim": [float(v) for v in per_dim],
        "pearson_r": [float(v) for v in pearson_r(truth, decoded)],
    }


def evaluate_decoders(
    session: Session,
    config: EvaluationConfig = EvaluationConfig(),
    on_progress: Callable[[str, dict[str, float]], None] | None = None,
) -> Evaluation:
    """Fit every decoder in ``config.decoders`` on ``session`` and score it on the test part.

    ``on_progress(decoder, record)`` receives SNN training records as they happen.
    """
    if session.kinematics is None:
        raise SessionError(
            "session has no 'kinematics': decoders need true kinematics to train and score; "
            "record or simulate a session with a kinematics stream"
        )
    train, val, test = chronological_split(session, config.fractions)
    n_val = val.n_bins
    heldout_neural = np.concatenate([val.neural, test.neural])
    truth = test.kinematics
    results: dict[str, object] = {}
    outputs: dict[str, np.ndarray] = {}
    baselines: dict[str, CausalDecoder] = {}
    snn: RSNN | None = None
    training: TrainResult | None = None

    def decode_test(predict: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.asarray(predict(heldout_neural))[n_val:]

    for name in config.decoders:
        start = time.perf_counter()
        if name == "snn":
            snn_config = RSNNConfig(
                n_in=session.n_channels,
                n_out=truth.shape[1],
                dt_s=session.bin_s,
                **config.snn,  # type: ignore[arg-type]
            )
            snn, training = train_rsnn_ensemble(
                snn_config,
                config.snn_members,
                (train.neural, train.kinematics),
                (val.neural, val.kinematics),
                replace(config.train, seed=config.seed),
                callback=(lambda r: on_progress("snn", r)) if on_progress else None,
            )
            decoded, spikes = snn.decode(heldout_neural)
            spikes = spikes[n_val:]
            fan_in, fan_hidden = snn.fan_out()
            outputs[name] = np.asarray(decoded[n_val:])
            entry = _scores(truth, outputs[name])
            entry.update(
                activation_sparsity=float(activation_sparsity(spikes)),
                synops_per_bin=float(
                    synaptic_operations(test.neural, fan_in)
                    + synaptic_operations(spikes, fan_hidden)
                ),
                footprint_bytes=int(footprint_bytes(snn)),
                mean_rate_hz=float(spikes.mean() / session.bin_s),
                train_steps=training.steps,
            )
            entry["neurobench"] = snn_efficiency(snn, test.neural, spikes)
        else:
            baselines[name] = fit_baseline(name, config, train, val)
            outputs[name] = decode_test(baselines[name].predict)
            entry = _scores(truth, outputs[name])
            entry["footprint_bytes"] = int(footprint_bytes(baselines[name].parameter_arrays()))
            if name in ("gru", "lstm"):
                entry["neurobench"] = recurrent_efficiency(baselines[name])
        entry["fit_seconds"] = time.perf_counter() - start
        logger.info("%s: test R2 %.3f (%.1f s)", name, entry["r2"], entry["fit_seconds"])
        results[name] = entry
    results["n_test_bins"] = test.n_bins
    return Evaluation(results, snn, training, outputs, baselines)


def fit_baseline(
    name: str, config: EvaluationConfig, train: Session, val: Session
) -> CausalDecoder:
    """Fit baseline ``name`` ("wiener", "kalman", "gru" or "lstm") on ``train`` (the GRU and
    LSTM early-stop on ``val``)."""
    if name == "wiener":
        wiener = WienerFilter(lags=config.wiener_lags, ridge=config.wiener_ridge)
        return wiener.fit(train.neural, train.kinematics)
    if name == "kalman":
        return KalmanFilter().fit(train.neural, train.kinematics)
    if name not in ("gru", "lstm"):
        raise ValueError(f"unknown baseline {name!r}")
    hidden = config.gru_hidden if name == "gru" else config.lstm_hidden
    decoder = make_rnn(name, {"hidden": hidden, **config.rnn_params.get(name, {})}, config.seed)
    return decoder.fit(train.neural, train.kinematics, val=(val.neural, val.kinematics))


def results_table(results: dict[str, object], names: Sequence[str] = DECODERS) -> list[list]:
    """Rows of (decoder, R², R² per dim, sparsity, fit seconds) for a printed table."""
    rows = []
    for name in names:
        entry = results.get(name)
        if not isinstance(entry, dict):
            continue
        sparsity = entry.get("activation_sparsity")
        rows.append(
            [
                name,
                f"{entry['r2']:.3f}",
                " ".join(f"{v:.3f}" for v in entry["r2_per_dim"]),
                "-" if sparsity is None else f"{sparsity:.3f}",
                f"{entry['fit_seconds']:.1f}",
            ]
        )
    return rows
