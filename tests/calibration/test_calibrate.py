"""``bci calibrate``: session in, checkpoint and report out; bad input named clearly."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from factories import tiny_checkpoint

import bci.ensemble
import calibration.search
from bci.baselines import KalmanFilter, WienerFilter
from bci.checkpoint import CheckpointError, load_checkpoint
from bci.metrics import r2_score
from bci.training import TrainConfig
from calibration.calibrate import (
    CalibrationOptions,
    CalibrationResult,
    load_calibration_session,
    run_calibration,
)
from calibration.report import FIGURES
from calibration.search import (
    SearchError,
    SearchSpace,
    TrialData,
    default_study_path,
    local_search,
)
from service.cli import main
from streams.session import Session, save_session
from streams.synthetic import SyntheticConfig, simulate_session
from streams.xdf_writer import write_session_xdf

SMALL = CalibrationOptions(steps=60, hidden=32)  # about 3 s on the 2-core machine
SMALL_ARGS = ["--steps", "60", "--hidden", "32"]
ENTRY_KEYS = {"r2", "r2_per_dim", "pearson_r"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # training: see conftest


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Session]:
    """Three minutes of the synthetic population (3600 bins), as an NPZ session file."""
    simulated = simulate_session(SyntheticConfig(duration_s=180.0, seed=2))
    path = save_session(tmp_path_factory.mktemp("session") / "s.npz", simulated)
    return path, simulated


@pytest.fixture(scope="module")
def calibrated(
    session: tuple[Path, Session], tmp_path_factory: pytest.TempPathFactory
) -> tuple[CalibrationResult, list[tuple[str, dict[str, Any]]]]:
    root = tmp_path_factory.mktemp("calibrated")
    records: list[tuple[str, dict[str, Any]]] = []
    result = run_calibration(
        session[0],
        root / "model.safetensors",
        root / "report",
        SMALL,
        progress=lambda kind, record: records.append((kind, record)),
    )
    return result, records


def _only(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- acceptance -----------------------------------------------------------------------------


def test_report_files_and_exact_metrics_layout(calibrated) -> None:
    result, _ = calibrated
    report = result.report_dir
    assert report is not None
    expected = ["metrics.json", "checks.json", "report.md", *FIGURES.values()]
    assert _only(report) == sorted(expected)
    for name in FIGURES.values():
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics) == {"test", "snn_efficiency", "n_bins", "seconds"}
    assert set(metrics["test"]) == {"snn", "wiener", "kalman"}
    for entry in metrics["test"].values():
        assert set(entry) == ENTRY_KEYS
        assert len(entry["r2_per_dim"]) == len(entry["pearson_r"]) == 2
        assert math.isclose(entry["r2"], float(np.mean(entry["r2_per_dim"])), rel_tol=1e-12)
    assert set(metrics["snn_efficiency"]) == {
        "activation_sparsity",
        "synops_per_bin",
        "footprint_bytes",
    }
    assert 0.5 < metrics["snn_efficiency"]["activation_sparsity"] < 1.0
    assert metrics["snn_efficiency"]["synops_per_bin"] > 0
    assert metrics["snn_efficiency"]["footprint_bytes"] == 4 * sum(
        t.numel() for t in result.model.state_dict().values()
    )
    assert metrics["n_bins"] == {"train": 2520, "val": 360, "test": 720}
    assert 0 < metrics["seconds"] < 120
    assert metrics == result.metrics
    # A short run still decodes: well above chance on the synthetic population.
    assert metrics["test"]["snn"]["r2"] > 0.5


def test_report_markdown_embeds_figures_and_table(calibrated) -> None:
    result, _ = calibrated
    text = (result.report_dir / "report.md").read_text()
    for name in FIGURES.values():
        assert f"]({name})" in text  # relative path, next to report.md
    for name, entry in result.metrics["test"].items():
        assert f"| {name} | {entry['r2']:.3f} |" in text
    assert "Hyperparameter search" not in text


def test_report_reads_as_a_lab_needs_it(calibrated) -> None:
    """Units, the too-short held-out parts with their numbers, the channel summary, and the
    baselines drawn beside the SNN, in the report the calibration wrote."""
    result, _ = calibrated
    report = result.report_dir
    text = (report / "report.md").read_text()
    assert "- kinematics units: vx cm/s, vy cm/s" in text
    short = [  # the 180 s session split 0.7 / 0.1 / 0.2: 18 s and 36 s held out
        "the validation part is 18.0 s (360 bins of 50 ms), under the 60 s needed",
        "the test part is 36.0 s (720 bins of 50 ms), under the 60 s needed",
    ]
    warnings = text.split("## Warnings", 1)[1].split("## Test metrics", 1)[0]
    for line in short:
        assert line in warnings
        assert any(line in w for w in result.warnings)
    assert "baselines (thin: wiener, kalman)" in text
    assert "| silent | none |" in text and "| non-stationary | none |" in text
    checks = json.loads((report / "checks.json").read_text())
    assert checks["warnings"] == result.warnings
    assert len(checks["channels"]["mean_rate_hz"]) == result.parts[0].n_channels
    assert checks["channels"]["silent"] == checks["channels"]["saturated"] == []


def test_baselines_are_scored_on_the_same_split(calibrated) -> None:
    result, _ = calibrated
    train, val, test = result.parts
    heldout = np.concatenate([val.neural, test.neural])
    wiener = WienerFilter(lags=10, ridge=(0.1, 1.0, 10.0, 100.0, 1000.0))
    wiener.fit(train.neural, train.kinematics)
    kalman = KalmanFilter().fit(train.neural, train.kinematics)
    for name, decoder in (("wiener", wiener), ("kalman", kalman)):
        r2, _ = r2_score(test.kinematics, decoder.predict(heldout)[val.n_bins :])
        assert result.metrics["test"][name]["r2"] == pytest.approx(r2, abs=1e-9)


def test_checkpoint_decodes_like_the_in_memory_model(calibrated) -> None:
    result, _ = calibrated
    _, val, test = result.parts
    loaded = load_checkpoint(result.checkpoint)
    heldout = np.concatenate([val.neural, test.neural])
    expected, expected_spikes = result.model.decode(heldout)
    decoded, spikes = loaded.model.decode(heldout)
    np.testing.assert_array_equal(decoded[val.n_bins :], expected[val.n_bins :])
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_array_equal(decoded[val.n_bins :], result.test_decoded)
    r2, _ = r2_score(test.kinematics, decoded[val.n_bins :])
    assert r2 == pytest.approx(result.metrics["test"]["snn"]["r2"], abs=1e-12)

    manifest = loaded.manifest
    assert manifest.metrics == json.loads((result.report_dir / "metrics.json").read_text())
    assert manifest.kinematics_labels == ["vx", "vy"]
    assert manifest.n_channels == 96 and manifest.model["n_hidden"] == 32
    training = manifest.training
    assert training["config"]["max_steps"] == 60
    assert [r["step"] for r in training["history"]] == [50.0, 60.0]
    assert training["init"] is None and training["search"] is None


def test_progress_receives_training_records(calibrated) -> None:
    result, records = calibrated
    assert [kind for kind, _ in records] == ["stage", "snn", "snn", "stage"]
    assert records[0][1] == {"stage": "training"}
    assert records[-1][1] == {"stage": "checks"}  # progress bars close before the warnings
    assert [r["step"] for _, r in records[1:-1]] == [50.0, 60.0]
    assert records[-2][1]["val_r2"] == result.training.history[-1]["val_r2"]


# -- command line ---------------------------------------------------------------------------


def test_cli_search_writes_trials_and_keeps_the_best(
    session: tuple[Path, Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "m.safetensors", tmp_path / "report"
    argv = ["calibrate", str(session[0]), "--out", str(out), "--report", str(report)]
    assert main([*argv, *SMALL_ARGS, "--trials", "2", "--trial-steps", "50"]) == 0
    stdout = capsys.readouterr().out
    study = default_study_path(out)
    assert "search (local): 2 trials" in stdout and "val R2" in stdout
    assert f"study {study} (0 trials from earlier runs)" in stdout
    searched = json.loads((report / "trials.json").read_text())
    trials = searched["trials"]
    assert [t["trial"] for t in trials] == [0, 1]
    stored = optuna.load_study(study_name="bci-calibrate", storage=f"sqlite:///{study}")
    assert [t["params"] for t in trials] == [t.params for t in stored.trials]
    best = searched["best"]
    assert best == int(np.argmax([t["val_r2"] for t in trials]))
    assert all(t["steps"] == 50 and t["state"] == "complete" for t in trials)  # no rung < 50
    manifest = load_checkpoint(out).manifest
    params = trials[best]["params"]
    for key in ("n_hidden", "alif_fraction", "tau_mem_s", "tau_out_s"):
        assert manifest.model[key] == params[key]
    config = manifest.training["config"]
    assert (config["lr"], config["target_rate_hz"]) == (params["lr"], params["target_rate_hz"])
    assert config["max_steps"] == 60  # the best configuration is retrained with --steps
    assert manifest.training["search"]["best"] == best
    assert manifest.training["search"]["study"] == str(study)
    assert "Hyperparameter search" in (report / "report.md").read_text()
    # Rerun: the study holds both trials already; none runs again, the same one wins.
    assert main([*argv, *SMALL_ARGS, "--trials", "2", "--trial-steps", "50", "--force"]) == 0
    assert "(2 trials from earlier runs)" in capsys.readouterr().out
    assert json.loads((report / "trials.json").read_text()) == searched
    again = [*argv, "--steps", "60", "--hidden", "16", "--trials", "3", "--trial-steps", "50"]
    err = _fails([*again, "--force"], capsys, status=2)
    assert f"study {study} was made with other settings (base_hidden differ)" in err


def test_cli_fine_tunes_from_a_checkpoint(
    calibrated, session: tuple[Path, Session], tmp_path: Path, capsys
) -> None:
    result, _ = calibrated
    out = tmp_path / "tuned.safetensors"
    argv = ["calibrate", str(session[0]), "--out", str(out), "--steps", "60"]
    assert main([*argv, "--init", str(result.checkpoint)]) == 0
    stdout = capsys.readouterr().out
    assert "snn" in stdout and "wiener" in stdout and f"wrote {out}" in stdout
    tuned = load_checkpoint(out)
    assert tuned.manifest.model == load_checkpoint(result.checkpoint).manifest.model
    assert tuned.manifest.training["init"] == str(result.checkpoint)
    # Fine-tuning starts from the trained weights: already good at its first evaluation.
    first = tuned.manifest.training["history"][0]["val_r2"]
    assert first >= result.training.history[0]["val_r2"] - 0.05
    assert not torch.equal(tuned.model.w_in, load_checkpoint(result.checkpoint).model.w_in)


def test_init_refuses_model_options(calibrated, session, tmp_path: Path, capsys) -> None:
    result, _ = calibrated
    argv = ["calibrate", str(session[0]), "--out", str(tmp_path / "m.safetensors")]
    assert main([*argv, "--init", str(result.checkpoint), "--hidden", "64"]) == 2
    assert "--hidden cannot change a model fine-tuned with --init" in capsys.readouterr().err
    assert main([*argv, "--init", str(result.checkpoint), "--members", "2"]) == 2
    err = capsys.readouterr().err
    assert "--members trains new models: drop one of the two" in err and err.count("\n") == 1


def test_cli_members_merges_that_many_snns_into_one_checkpoint(
    session: tuple[Path, Session], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "ensemble.safetensors"
    argv = ["calibrate", str(session[0]), "--out", str(out), "--hidden", "16", "--members", "2"]
    assert main([*argv, "--steps", "30", "--seed", "1"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    merged = load_checkpoint(out)
    assert merged.model.config.n_hidden == 32 and merged.model.config.n_alif == 16
    members = {record["member"] for record in merged.manifest.training["history"]}
    assert members == {0.0, 1.0}  # seeds 2 and 3 (seed 1 x 2 members + i)


def _interrupting_train(real):
    def train(model, train, val, config, callback=None):
        def interrupt(record):
            raise KeyboardInterrupt

        return real(model, train, val, config, callback=interrupt)

    return train


def test_ctrl_c_during_training_leaves_no_file(
    session: tuple[Path, Session], tmp_path: Path, monkeypatch, capsys
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    real = bci.ensemble.train_rsnn  # the SNN's training, one member or more
    monkeypatch.setattr(bci.ensemble, "train_rsnn", _interrupting_train(real))
    out = out_dir / "m.safetensors"
    argv = ["calibrate", str(session[0]), "--out", str(out), "--report", str(out_dir / "r")]
    assert main([*argv, *SMALL_ARGS]) == 130
    assert f"interrupted; no checkpoint written to {out}" in capsys.readouterr().err
    assert _only(out_dir) == []  # no checkpoint, no temporary file, no report


def test_interrupt_from_progress_propagates_and_writes_nothing(session, tmp_path: Path) -> None:
    def interrupt(kind: str, record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_calibration(session[0], tmp_path / "m.safetensors", tmp_path / "r", SMALL, interrupt)
    assert _only(tmp_path) == []


# -- bad input ------------------------------------------------------------------------------


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 1) -> str:
    """Run ``bci calibrate``; it must exit with ``status`` (1: the work failed, 2: the command
    line is wrong) and one error line."""
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith("bci calibrate: error: ") and err.count("\n") == 1, err
    return err


def test_session_without_kinematics(session, tmp_path: Path, capsys) -> None:
    full = session[1]
    bare = save_session(tmp_path / "bare.npz", Session(full.neural, full.timestamps, full.bin_s))
    err = _fails(["calibrate", str(bare), "--out", str(tmp_path / "m.safetensors")], capsys)
    assert f"session {bare} has no kinematics" in err
    assert "streams present: neural (Neural)" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_session_too_short_to_split(tmp_path: Path, capsys) -> None:
    short = save_session(
        tmp_path / "short.npz", simulate_session(SyntheticConfig(duration_s=6.0, seed=1))
    )
    err = _fails(["calibrate", str(short), "--out", str(tmp_path / "m.safetensors")], capsys)
    assert "session too short to split: 120 bins (6.0 s)" in err
    assert "parts of [84, 12, 24] bins" in err


def test_channel_mismatch_with_init(session, tmp_path: Path, capsys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "eight.safetensors", n_in=8, n_hidden=4)
    argv = ["calibrate", str(session[0]), "--out", str(tmp_path / "m.safetensors")]
    err = _fails([*argv, "--init", str(ckpt)], capsys)
    assert f"has 96 channels but checkpoint {ckpt} expects 8" in err


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        (
            {"kinematics": ("vx", "vy", "vz")},
            "has 2 kinematics but checkpoint {ckpt} decodes 3 (vx, vy, vz); calibrate "
            "without --init",
        ),
        (
            {"bin_s": 0.02},
            "has 50 ms bins but checkpoint {ckpt} decodes 20 ms bins; rebin the recording "
            "(--bin-ms 20 for XDF) or calibrate without --init",
        ),
    ],
)
def test_init_must_fit_the_session(
    session, tmp_path: Path, capsys, variant: dict[str, object], expected: str
) -> None:
    ckpt = tiny_checkpoint(tmp_path / "other.safetensors", n_in=96, n_hidden=4, **variant)
    argv = ["calibrate", str(session[0]), "--out", str(tmp_path / "m.safetensors")]
    assert expected.format(ckpt=ckpt) in _fails([*argv, "--init", str(ckpt)], capsys)


def test_unknown_stream_name_lists_streams(session, tmp_path: Path, capsys) -> None:
    short = session[1].slice(0, 200)
    xdf = write_session_xdf(tmp_path / "rec.xdf", short)
    out = ["--out", str(tmp_path / "m.safetensors")]
    err = _fails(["calibrate", str(xdf), *out, "--neural", "eeg"], capsys)
    assert "no stream named or typed 'eeg'" in err
    assert "bci-neural" in err and "bci-kinematics" in err
    npz = save_session(tmp_path / "short.npz", short)
    err = _fails(["calibrate", str(npz), *out, "--kinematics", "hand"], capsys)
    assert "has no kinematics stream named or typed 'hand'" in err
    assert "streams present (name, type): neural (Neural), kinematics (Kinematics)" in err


def test_xdf_session_matches_npz_and_rebins(session, tmp_path: Path) -> None:
    short = session[1].slice(0, 400)
    xdf = write_session_xdf(tmp_path / "rec.xdf", short)
    loaded = load_calibration_session(xdf, CalibrationOptions(neural="bci-neural"))
    np.testing.assert_array_equal(loaded.neural, short.neural)
    np.testing.assert_allclose(loaded.kinematics, short.kinematics, rtol=1e-6, atol=1e-5)
    rebinned = load_calibration_session(xdf, CalibrationOptions(bin_ms=100.0))
    assert rebinned.bin_s == pytest.approx(0.1)
    np.testing.assert_array_equal(rebinned.neural[0], short.neural[0] + short.neural[1])
    with pytest.raises(ValueError, match="--bin-ms bins XDF recordings and NWB files"):
        load_calibration_session(session[0], CalibrationOptions(bin_ms=100.0))


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_bad_init_checkpoint(calibrated, session, tmp_path: Path, capsys, damage: str) -> None:
    result, _ = calibrated
    bad = tmp_path / "bad.safetensors"
    shutil.copyfile(result.checkpoint, bad)
    data = bytearray(bad.read_bytes())
    if damage == "truncated":
        bad.write_bytes(bytes(data[: len(data) // 2]))
        expected = "is not a valid safetensors file (truncated or corrupted?)"
    else:
        data[-10] ^= 0xFF  # a byte of tensor data
        bad.write_bytes(bytes(data))
        expected = "checksum mismatch"
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    argv = ["calibrate", str(session[0]), "--out", str(tmp_path / "m.safetensors")]
    err = _fails([*argv, "--init", str(bad)], capsys)
    assert f"checkpoint file {bad}" in err and expected in err
    assert not (tmp_path / "m.safetensors").exists()


def test_ray_missing_says_how_to_install(session, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    argv = ["calibrate", str(session[0]), "--out", str(tmp_path / "m.safetensors")]
    err = _fails([*argv, "--trials", "2", "--ray"], capsys, status=2)
    assert "pip install -e .[cluster]" in err
    assert _only(tmp_path) == []


def test_ray_needs_trials(session, tmp_path: Path, capsys) -> None:
    argv = ["calibrate", str(session[0]), "--out", str(tmp_path / "m.safetensors"), "--ray"]
    assert "--ray runs the hyperparameter search on Ray Tune; give --trials N" in _fails(
        argv, capsys, status=2
    )


def test_bad_split_is_named(session, tmp_path: Path, capsys) -> None:
    argv = ["calibrate", str(session[0]), "--out", str(tmp_path / "m.safetensors")]
    assert "--split takes three" in _fails([*argv, "--split", "0.8,0.2"], capsys, status=2)
    assert "sum to 1.1" in _fails([*argv, "--split", "0.8,0.1,0.2"], capsys, status=2)


def test_missing_output_directory_fails_before_training(session, tmp_path: Path, capsys) -> None:
    out = tmp_path / "missing" / "m.safetensors"
    err = _fails(["calibrate", str(session[0]), "--out", str(out)], capsys, status=2)
    assert "directory" in err and "does not exist" in err
    argv = ["calibrate", str(session[0]), "--out", str(tmp_path / "m.safetensors")]
    err = _fails([*argv, "--trials", "2", "--study", str(out.with_suffix(".db"))], capsys, 2)
    assert f"--study {out.with_suffix('.db')}: directory" in err
    assert "--study keeps a hyperparameter search; give --trials N" in _fails(
        [*argv, "--study", str(tmp_path / "s.db")], capsys, status=2
    )


# -- search ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data() -> TrialData:
    """300 bins of 6 channels; trials of 9 steps, evaluated every 3 (about 0.1 s each)."""
    rng = np.random.default_rng(0)
    neural = rng.poisson(2.0, size=(300, 6)).astype(np.float32)
    kinematics = (neural[:, :2] - 2.0 + rng.normal(0, 0.1, (300, 2))).astype(np.float32)
    return TrialData(
        neural[:200],
        kinematics[:200],
        neural[200:],
        kinematics[200:],
        0.05,
        train=TrainConfig(window=20, burn_in=5, batch_size=4, max_steps=9, eval_every=3),
    )


def test_search_is_seeded_and_inside_the_space(tiny_data: TrialData, tmp_path: Path) -> None:
    space = SearchSpace()
    first = local_search(3, tiny_data, tmp_path / "a.sqlite", 8, space)
    again = local_search(3, tiny_data, tmp_path / "b.sqlite", 8, space)
    other = local_search(3, replace(tiny_data, seed=1), tmp_path / "c.sqlite", 8, space)
    params = [t["params"] for t in first.trials]
    assert params == [t["params"] for t in again.trials]
    assert params != [t["params"] for t in other.trials]
    assert {t["n_hidden"] for t in params} <= {4, 8, 16}
    assert {t["alif_fraction"] for t in params} <= set(space.alif_fractions)
    for key in ("lr", "target_rate_hz", "tau_mem_s", "tau_out_s"):
        low, high = getattr(space, key)
        assert all(low <= t[key] <= high for t in params)
    with pytest.raises(ValueError, match="at least one trial"):
        local_search(0, tiny_data, tmp_path / "d.sqlite", 8)


def test_pruned_trials_stop_at_a_rung_behind_the_best(tiny_data, tmp_path: Path) -> None:
    """Successive halving, reduction factor 3: with fewer than 6 trials at the first rung
    (step 3 of 9), a trial goes on only if its validation R² there is the best so far."""
    study = tmp_path / "s.sqlite"
    result = local_search(5, tiny_data, study, 8)
    stored = optuna.load_study(study_name="bci-calibrate", storage=f"sqlite:///{study}")
    at_rung = [t.intermediate_values[3] for t in stored.trials]
    for i, record in enumerate(result.trials):
        pruned = at_rung[i] < max(at_rung[: i + 1])
        assert record["state"] == ("pruned" if pruned else "complete")
        assert record["steps"] == (3 if pruned else 9)
        if pruned:
            assert record["val_r2"] == at_rung[i]
    assert {t["state"] for t in result.trials} == {"pruned", "complete"}
    best = next(t for t in result.trials if t["trial"] == result.best)
    assert best["val_r2"] == max(t["val_r2"] for t in result.trials if t["state"] == "complete")


def test_study_resumes_and_runs_only_the_missing_trials(tiny_data, tmp_path: Path) -> None:
    study = tmp_path / "s.sqlite"
    ran: list[int] = []
    first = local_search(2, tiny_data, study, 8, on_trial=lambda r: ran.append(r["trial"]))
    resumed = local_search(3, tiny_data, study, 8, on_trial=lambda r: ran.append(r["trial"]))
    assert ran == [0, 1, 2] and resumed.resumed == 2
    assert resumed.trials[:2] == first.trials
    done = local_search(3, tiny_data, study, 8, on_trial=lambda r: ran.append(r["trial"]))
    assert ran == [0, 1, 2] and done.trials == resumed.trials
    with pytest.raises(SearchError, match=r"other settings \(base_hidden differ\)"):
        local_search(4, tiny_data, study, 16)
    with pytest.raises(SearchError, match=r"other settings \(data_sha256 differ\)"):
        local_search(4, replace(tiny_data, val_neural=tiny_data.val_neural + 1), study, 8)


def test_interrupted_trial_is_failed_and_rerun(tiny_data, tmp_path: Path, monkeypatch) -> None:
    study = tmp_path / "s.sqlite"
    local_search(1, tiny_data, study, 8)
    real = calibration.search.train_rsnn

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(calibration.search, "train_rsnn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        local_search(2, tiny_data, study, 8)
    monkeypatch.setattr(calibration.search, "train_rsnn", real)
    resumed = local_search(2, tiny_data, study, 8)
    stored = optuna.load_study(study_name="bci-calibrate", storage=f"sqlite:///{study}")
    assert [t.state.name for t in stored.trials][:2] == ["COMPLETE", "FAIL"]
    assert [t["trial"] for t in resumed.trials] == [0, 2]  # the failed trial is run again


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray (.[cluster]) absent")
def test_calibrate_ray_searches_on_a_local_ray_and_a_local_run_resumes(tmp_path, capsys) -> None:
    """``bci calibrate --ray`` starts a real local Ray instance and runs the search on Ray Tune
    (OptunaSearch, ASHA): both trials reach the SQLite study, the best one's settings train the
    checkpoint, Ray is shut down; a local run then resumes the study with one trial more."""
    import ray

    session = save_session(
        tmp_path / "s.npz", simulate_session(SyntheticConfig(duration_s=15.0, seed=1))
    )
    out, study = tmp_path / "m.safetensors", tmp_path / "m.study.sqlite"
    argv = ["calibrate", str(session), "--out", str(out), "--hidden", "8", "--steps", "6"]
    assert main([*argv, "--trials", "2", "--trial-steps", "6", "--ray"]) == 0
    assert "search (ray): 2 trials" in capsys.readouterr().out
    assert not ray.is_initialized()
    search = load_checkpoint(out).manifest.training["search"]
    assert search["backend"] == "ray" and search["study"] == str(study)
    assert [t["trial"] for t in search["trials"]] == [0, 1]
    for t in search["trials"]:  # ASHA's first rung is at step 2 of 6
        assert t["steps"] == (6 if t["state"] == "complete" else 2)
        assert math.isfinite(t["val_r2"]) and t["seconds"] > 0
    complete = [t for t in search["trials"] if t["state"] == "complete"]
    assert search["best"] == max(complete, key=lambda t: t["val_r2"])["trial"]
    stored = optuna.load_study(study_name="bci-calibrate", storage=f"sqlite:///{study}")
    assert len(stored.trials) == 2

    assert main([*argv, "--trials", "3", "--trial-steps", "6", "--force"]) == 0
    stdout = capsys.readouterr().out
    assert "search (local): 3 trials" in stdout and "(2 trials from earlier runs)" in stdout
    resumed = load_checkpoint(out).manifest.training["search"]["trials"]
    assert resumed[:2] == search["trials"] and len(resumed) == 3
