"""The calibration checks on constructed inputs whose answer is known, and how the report
shows them (units on the axes, baselines beside the SNN, flagged channels, short parts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration.checks import (
    MIN_TRUSTED_S,
    SILENT_MAX_HZ,
    channel_summary,
    split_warnings,
)
from calibration.report import FIGURES, ReportInputs, plot_decoded, write_report
from streams.limblab import load_limblab_session

BIN_S = 0.05
T = 4000  # 200 s of 50 ms bins


def _poisson(rate_hz: float, seed: int, n: int = T) -> np.ndarray:
    return np.random.default_rng(seed).poisson(rate_hz * BIN_S, n).astype(np.float64)


def _columns() -> tuple[np.ndarray, tuple[str, ...], dict[str, str | None]]:
    """Channels built to meet one criterion each (or none), with the expected flag."""
    half = T // 2
    built: dict[str, tuple[np.ndarray, str | None]] = {
        "steady": (_poisson(10.0, 1), None),
        "fast": (_poisson(150.0, 2), None),  # high rate: varies around its mode, not a ceiling
        "sparse": (_poisson(0.3, 3), None),  # few spikes: Poisson noise is not drift
        "mild-drift": (np.concatenate([_poisson(10.0, 4, half), _poisson(14.0, 5, half)]), None),
        "zero": (np.zeros(T), "silent"),
        "nearly-silent": (_poisson(0.5 * SILENT_MAX_HZ, 6), "silent"),
        "stuck": (np.full(T, 3.0), "saturated"),
        "clipped": (np.minimum(_poisson(80.0, 7), 2.0), "saturated"),  # 2 in most bins
        "rises": (
            np.concatenate([_poisson(5.0, 8, half), _poisson(20.0, 9, half)]),
            "non_stationary",
        ),
        "dies": (np.concatenate([_poisson(12.0, 10, half), np.zeros(half)]), "non_stationary"),
    }
    labels = tuple(built)
    neural = np.stack([column for column, _ in built.values()], axis=1)
    return neural, labels, {label: flag for label, (_, flag) in built.items()}


def test_each_constructed_channel_gets_its_known_flag() -> None:
    neural, labels, expected = _columns()
    summary = channel_summary(neural, BIN_S, labels)
    found = {name: flag for flag, names in summary.flagged.items() for name in names}
    assert found == {name: flag for name, flag in expected.items() if flag is not None}
    assert summary.mean_rate_hz[labels.index("steady")] == pytest.approx(10.0, rel=0.1)
    assert summary.warnings() == [
        "2 of 10 channels silent: zero, nearly-silent",
        "2 of 10 channels saturated: stuck, clipped",
        "2 of 10 channels non-stationary: rises, dies",
    ]


def test_thresholds_sit_where_the_docstring_says() -> None:
    at = np.zeros((T, 2))  # 200 s: 0.1 Hz is 20 counts
    at[np.linspace(0, T - 1, 21).astype(int), 0] = 1.0  # 0.105 Hz: not silent
    at[np.linspace(0, T - 1, 19).astype(int), 1] = 1.0  # 0.095 Hz: silent
    assert SILENT_MAX_HZ == 0.1 and T * BIN_S == 200.0
    assert channel_summary(at, BIN_S).flagged == {"silent": ("ch001",)}
    ceiling = np.zeros((T, 2))
    ceiling[0::2] = 4.0  # at its largest value in half the bins: saturated
    ceiling[1::2] = np.resize([0.0, 1.0, 2.0, 3.0], (T // 2, 1))  # below it in the others
    ceiling[0, 1] = 3.0  # one bin fewer at the ceiling: not saturated
    assert channel_summary(ceiling, BIN_S).flagged == {"saturated": ("ch000",)}


def test_default_labels_and_json_form() -> None:
    summary = channel_summary(np.zeros((100, 3)), BIN_S)
    data = summary.to_dict()
    assert data["silent"] == ["ch000", "ch001", "ch002"] and data["saturated"] == []
    assert data["criteria"]["silent_max_hz"] == SILENT_MAX_HZ
    assert list(data["mean_rate_hz"]) == ["ch000", "ch001", "ch002"]


def test_split_warnings_name_the_part_its_length_and_the_fix() -> None:
    assert split_warnings({"train": 9000, "val": 1200, "test": 1200}, BIN_S, (0.8, 0.1, 0.1)) == []
    (warning,) = split_warnings({"train": 9000, "val": 1200, "test": 1199}, BIN_S, (0.8, 0.1, 0.1))
    assert warning.startswith("the test part is 59.9 s (1199 bins of 50 ms), under the 60 s")
    assert "--split (now 0.8 0.1 0.1)" in warning
    assert MIN_TRUSTED_S == 60.0


def _inputs(**overrides: object) -> ReportInputs:
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((400, 2))
    fields: dict = {
        "test_truth": truth,
        "test_decoded": truth + 0.1,
        "test_spikes": (rng.random((400, 20)) < 0.05).astype(np.float32),
        "bin_s": BIN_S,
        "kinematics_labels": ("vx", "vy"),
        "n_alif": 10,
        "history": [
            {"step": 0, "loss": 1.0, "val_r2": 0.1},
            {"step": 10, "loss": 0.5, "val_r2": 0.4},
        ],
        "best_step": 10,
        "kinematics_units": ("mm/s", "mm/s"),
        "baselines": {"wiener": truth - 0.1, "kalman": truth * 0.9},
    }
    fields.update(overrides)
    return ReportInputs(**fields)


def test_decoded_figure_has_units_and_baselines_beside_the_snn() -> None:
    fig = plot_decoded(_inputs())
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["vx (mm/s)", "vy (mm/s)"]
    for ax in axes:
        assert [line.get_label() for line in ax.get_lines()] == ["true", "wiener", "kalman", "SNN"]
    bare = plot_decoded(_inputs(kinematics_units=None, baselines={}))
    assert [ax.get_ylabel() for ax in bare.axes] == ["vx", "vy"]  # unknown units: no guess


def test_report_names_flagged_channels_and_warnings(tmp_path: Path) -> None:
    neural, labels, _ = _columns()
    summary = channel_summary(neural, BIN_S, labels)
    warnings = [
        *split_warnings({"train": 3000, "val": 400, "test": 600}, BIN_S, (0.75, 0.1, 0.15)),
        *summary.warnings(),
    ]
    metrics = {
        "test": {"snn": {"r2": 0.5, "r2_per_dim": [0.4, 0.6], "pearson_r": [0.7, 0.8]}},
        "snn_efficiency": {
            "activation_sparsity": 0.9,
            "synops_per_bin": 10.0,
            "footprint_bytes": 100,
        },
        "n_bins": {"train": 3000, "val": 400, "test": 600},
        "seconds": 1.0,
    }
    written = write_report(tmp_path, metrics, _inputs(channels=summary, warnings=warnings))
    assert {p.name for p in written} == {
        "metrics.json",
        "checks.json",
        "report.md",
        *FIGURES.values(),
    }
    text = (tmp_path / "report.md").read_text()
    assert "- kinematics units: vx mm/s, vy mm/s" in text
    assert "- **the validation part is 20.0 s (400 bins of 50 ms)" in text
    assert "- **the test part is 30.0 s (600 bins of 50 ms)" in text
    assert "| silent | zero, nearly-silent |" in text
    assert "| saturated | stuck, clipped |" in text
    assert "| non-stationary | rises, dies |" in text
    assert text.index("## Warnings") < text.index("## Test metrics")
    checks = json.loads((tmp_path / "checks.json").read_text())
    assert checks["channels"]["non_stationary"] == ["rises", "dies"]
    assert checks["warnings"] == warnings
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics  # unchanged


def test_real_session_channels() -> None:
    """Jango's 20-minute session (the README's figures): 5 of 96 channels drift."""
    path = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "neural"
    path = path / "Jango_20141203_default_offline_data.mat"
    if not path.is_file():
        pytest.skip(f"recorded data file {path.resolve()} is absent")
    session = load_limblab_session(path)
    summary = channel_summary(session.neural, session.bin_s, session.channel_labels)
    assert summary.flagged == {"non_stationary": ("ch011", "ch014", "ch018", "ch038", "ch080")}
    assert min(summary.mean_rate_hz) >= SILENT_MAX_HZ
