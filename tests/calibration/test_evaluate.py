"""Tests for the side-by-side evaluation of the SNN and the baseline decoders."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bci.baselines import WienerFilter
from bci.metrics import r2_score
from bci.training import TrainConfig
from calibration.evaluate import (
    DECODERS,
    Evaluation,
    EvaluationConfig,
    evaluate_decoders,
    results_table,
)
from streams.session import Session, SessionError, chronological_split
from streams.synthetic import SyntheticConfig, simulate_session

SCORE_KEYS = {"r2", "r2_per_dim", "pearson_r", "footprint_bytes", "fit_seconds"}
SNN_KEYS = SCORE_KEYS | {
    "activation_sparsity",
    "synops_per_bin",
    "mean_rate_hz",
    "train_steps",
    "neurobench",
}
NEUROBENCH_KEYS = {"ActivationSparsity", "SynapticOperations", "Footprint", "ConnectionSparsity"}
# Small and fast: a 32-neuron SNN, 40 BPTT steps, an 8-unit GRU and LSTM.
SMALL = EvaluationConfig(
    decoders=DECODERS,
    snn={"n_hidden": 32},
    train=TrainConfig(max_steps=40, eval_every=20),
    gru_hidden=8,
    lstm_hidden=8,
    seed=1,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # training: see conftest


@pytest.fixture(scope="module")
def session() -> Session:
    return simulate_session(SyntheticConfig(duration_s=150.0, seed=5))


@pytest.fixture(scope="module")
def evaluated(session: Session) -> tuple[Evaluation, list[tuple[str, dict[str, float]]]]:
    progress: list[tuple[str, dict[str, float]]] = []
    evaluation = evaluate_decoders(session, SMALL, lambda name, r: progress.append((name, r)))
    return evaluation, progress


def test_results_layout(session: Session, evaluated) -> None:
    results = evaluated[0].results
    assert set(results) == {*DECODERS, "n_test_bins"}
    assert set(results["snn"]) == SNN_KEYS
    for name in ("wiener", "kalman"):
        assert set(results[name]) == SCORE_KEYS, name
    for name in ("gru", "lstm"):
        assert set(results[name]) == SCORE_KEYS | {"neurobench"}, name
        assert set(results[name]["neurobench"]) == NEUROBENCH_KEYS - {"ActivationSparsity"}
    assert set(results["snn"]["neurobench"]) == NEUROBENCH_KEYS
    assert session.n_bins == 3000
    assert results["n_test_bins"] == 600  # the last 20 %
    for name in DECODERS:
        entry = results[name]
        assert math.isfinite(entry["r2"]), name
        assert len(entry["r2_per_dim"]) == len(entry["pearson_r"]) == 2
        assert all(math.isfinite(v) for v in entry["r2_per_dim"] + entry["pearson_r"])
        assert entry["r2"] == pytest.approx(np.mean(entry["r2_per_dim"]))
        assert isinstance(entry["footprint_bytes"], int) and entry["footprint_bytes"] > 0
        assert entry["fit_seconds"] >= 0
    assert results["wiener"]["r2"] > 0.5
    assert results["kalman"]["r2"] > 0.5


def test_snn_entry_and_training(session: Session, evaluated) -> None:
    evaluation, progress = evaluated
    snn = evaluation.results["snn"]
    assert 0.0 <= snn["activation_sparsity"] <= 1.0
    assert snn["synops_per_bin"] > 0 and snn["mean_rate_hz"] >= 0
    assert snn["train_steps"] == evaluation.snn_training.steps == 40
    assert evaluation.snn is not None and evaluation.snn.config.n_hidden == 32
    assert [(name, r["step"]) for name, r in progress] == [("snn", 20.0), ("snn", 40.0)]
    # Same scoring as the baselines: decode val + test from rest, score the test bins.
    _, val, test = chronological_split(session, SMALL.fractions)
    decoded, spikes = evaluation.snn.decode(np.concatenate([val.neural, test.neural]))
    assert snn["r2"] == pytest.approx(r2_score(test.kinematics, decoded[val.n_bins :])[0])
    assert snn["activation_sparsity"] == pytest.approx(float(np.mean(spikes[val.n_bins :] == 0)))
    figures = snn["neurobench"]
    assert figures["ActivationSparsity"] == snn["activation_sparsity"]
    assert figures["Footprint"] == snn["footprint_bytes"]
    ops = figures["SynapticOperations"]
    # The same effective synapses as synops_per_bin, split into MACs (counts) and ACs (spikes).
    assert ops["Effective_MACs"] + ops["Effective_ACs"] == pytest.approx(snn["synops_per_bin"])
    assert ops["Dense"] == session.n_channels * 32 + 32 * 32 + 32 * 2


def test_wiener_scored_on_warm_test_part_only(session: Session, evaluated) -> None:
    train, val, test = chronological_split(session, (0.7, 0.1, 0.2))
    wiener = WienerFilter(lags=SMALL.wiener_lags, ridge=SMALL.wiener_ridge)
    wiener.fit(train.neural, train.kinematics)
    decoded = wiener.predict(np.concatenate([val.neural, test.neural]))[val.n_bins :]
    expected, per_dim = r2_score(test.kinematics, decoded)
    results = evaluated[0].results
    assert results["wiener"]["r2"] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(results["wiener"]["r2_per_dim"], per_dim, rtol=1e-12)
    # A cold start on the test part alone scores differently (the first lags lack history).
    cold = r2_score(test.kinematics, wiener.predict(test.neural))[0]
    assert results["wiener"]["r2"] != cold


def test_results_table_rows(evaluated) -> None:
    rows = results_table(evaluated[0].results)
    assert [row[0] for row in rows] == list(DECODERS)
    assert rows[0][3] != "-" and all(row[3] == "-" for row in rows[1:])
    assert all(len(row) == 5 for row in rows)


def test_decoder_subset_and_determinism(session: Session, evaluated) -> None:
    config = EvaluationConfig(decoders=("kalman",), seed=1)
    results = evaluate_decoders(session, config).results
    assert set(results) == {"kalman", "n_test_bins"}
    assert results["kalman"]["r2"] == evaluated[0].results["kalman"]["r2"]


def test_missing_kinematics_raises(session: Session) -> None:
    bare = Session(neural=session.neural, timestamps=session.timestamps, bin_s=session.bin_s)
    with pytest.raises(SessionError, match="no 'kinematics'"):
        evaluate_decoders(bare, EvaluationConfig(decoders=("wiener",)))


def test_too_short_session_raises(session: Session) -> None:
    short = session.slice(0, 40)  # 28 / 4 / 8 bins
    with pytest.raises(SessionError, match=r"splitting 40 bins .* parts of \[28, 4, 8\] bins"):
        evaluate_decoders(short, EvaluationConfig(decoders=("wiener",)))


def test_unknown_decoder_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'transformer'") as info:
        EvaluationConfig(decoders=("wiener", "transformer"))
    assert "valid names: snn, wiener, kalman, gru, lstm" in str(info.value)
