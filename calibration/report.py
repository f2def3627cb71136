"""The calibration report: ``metrics.json``, ``checks.json``, four PNG figures and ``report.md``.

Figures are drawn with matplotlib's Agg canvas (no pyplot, no display, no global backend
change): decoded against true kinematics on the test part (the SNN and each baseline, axes
in the kinematics' units when the session has them), training curves (loss and validation
R² against step), the firing-rate histogram of the hidden neurons, and a spike raster of a
sample of hidden neurons. ``report.md`` embeds them by relative path beside a table of the
test metrics, the warnings (held-out parts too short to trust, flagged channels) and the
per-channel summary. ``checks.json`` holds the warnings and the channel summary
(:mod:`calibration.checks`: criteria, flagged channel names, every channel's mean rate).
Every file is written atomically (:mod:`bci.atomic`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bci.atomic import atomic_write, write_text
from calibration.checks import FLAGS, MIN_TRUSTED_S, ChannelSummary

METRICS_FILE = "metrics.json"
CHECKS_FILE = "checks.json"
TRIALS_FILE = "trials.json"
REPORT_FILE = "report.md"
FIGURES: dict[str, str] = {
    "decoded": "decoded.png",
    "training": "training.png",
    "rates": "firing_rates.png",
    "raster": "raster.png",
}
DECODED_WINDOW_S = 60.0  # test-part span drawn in the decoded-vs-true figure
RASTER_WINDOW_S = 10.0
RASTER_NEURONS = 64
BASELINE_COLORS = {"wiener": "tab:blue", "kalman": "tab:green", "gru": "tab:purple"}


@dataclass(frozen=True, eq=False)
class ReportInputs:
    """Everything the report shows besides the metrics.

    Attributes:
        test_truth: (T, K) true kinematics of the test part.
        test_decoded: (T, K) SNN output on the test part.
        test_spikes: (T, H) hidden spikes on the test part.
        bin_s: bin width, seconds.
        kinematics_labels: K names.
        n_alif: the last ``n_alif`` hidden neurons are ALIF (the rest LIF).
        history: training records (step, loss, val_r2, ...).
        best_step: step whose weights were kept.
        trials: search records (with ``params`` and ``val_r2``), if a search ran.
        best_trial: index of the chosen trial.
        session: path of the session file.
        checkpoint: path of the written checkpoint.
        init: checkpoint fine-tuned from, if any.
        kinematics_units: K units (e.g. ``cm/s``) for the axes, or None when unknown.
        baselines: each baseline decoder's (T, K) output on the test part, by name.
        channels: the per-channel summary of the session (:mod:`calibration.checks`).
        warnings: lines a lab must read before trusting the scores.
    """

    test_truth: np.ndarray
    test_decoded: np.ndarray
    test_spikes: np.ndarray
    bin_s: float
    kinematics_labels: Sequence[str]
    n_alif: int
    history: Sequence[dict[str, float]]
    best_step: int
    trials: Sequence[dict[str, Any]] | None = None
    best_trial: int | None = None
    session: Path | None = None
    checkpoint: Path | None = None
    init: Path | None = None
    kinematics_units: Sequence[str] | None = None
    baselines: Mapping[str, np.ndarray] = field(default_factory=dict)
    channels: ChannelSummary | None = None
    warnings: Sequence[str] = ()

    def axis_label(self, k: int) -> str:
        """``vx (cm/s)``; the bare label when the units are unknown."""
        label = self.kinematics_labels[k]
        return label if self.kinematics_units is None else f"{label} ({self.kinematics_units[k]})"


def write_report(report_dir: Path, metrics: dict[str, Any], inputs: ReportInputs) -> list[Path]:
    """Write metrics.json, checks.json, the figures, trials.json (after a search), report.md.

    Creates ``report_dir`` (and parents) if needed; returns the paths written.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    written = [_write_json(report_dir / METRICS_FILE, metrics)]
    checks = {
        "warnings": list(inputs.warnings),
        "min_trusted_s": MIN_TRUSTED_S,
        "channels": None if inputs.channels is None else inputs.channels.to_dict(),
    }
    written.append(_write_json(report_dir / CHECKS_FILE, checks))
    if inputs.trials is not None:
        written.append(
            _write_json(
                report_dir / TRIALS_FILE,
                {"best": inputs.best_trial, "trials": list(inputs.trials)},
            )
        )
    written.append(_save(plot_decoded(inputs), report_dir / FIGURES["decoded"]))
    written.append(_save(plot_training(inputs), report_dir / FIGURES["training"]))
    written.append(_save(plot_rates(inputs), report_dir / FIGURES["rates"]))
    written.append(_save(plot_raster(inputs), report_dir / FIGURES["raster"]))
    written.append(write_text(report_dir / REPORT_FILE, render_markdown(metrics, inputs)))
    return written


def _write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, allow_nan=True) + "\n")


def _figure(rows: int = 1, height: float = 3.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(9.0, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    with atomic_write(path) as fh:
        fig.savefig(fh, format=path.suffix.lstrip("."), dpi=100)
    return path


def plot_decoded(inputs: ReportInputs) -> Figure:
    """Decoded (SNN, and each baseline thinner) against true kinematics over the first
    minute of the test part; y axes in the kinematics' units."""
    truth, decoded = np.asarray(inputs.test_truth), np.asarray(inputs.test_decoded)
    n = min(truth.shape[0], max(1, round(DECODED_WINDOW_S / inputs.bin_s)))
    t = np.arange(n) * inputs.bin_s
    fig, axes = _figure(truth.shape[1], height=2.4)
    for k, ax in enumerate(axes):
        ax.plot(t, truth[:n, k], color="black", linewidth=1.2, label="true")
        for name, trace in inputs.baselines.items():
            ax.plot(t, np.asarray(trace)[:n, k], color=BASELINE_COLORS.get(name, "tab:gray"),
                    linewidth=0.7, alpha=0.8, label=name)  # fmt: skip
        ax.plot(t, decoded[:n, k], color="tab:red", linewidth=1.0, label="SNN")
        ax.set_ylabel(inputs.axis_label(k))
        ax.legend(loc="upper right", fontsize="small", ncol=2 + len(inputs.baselines))
    axes[0].set_title(f"test part, first {n * inputs.bin_s:.0f} s: decoded vs true")
    axes[-1].set_xlabel("time from start of test part (s)")
    return fig


def plot_training(inputs: ReportInputs) -> Figure:
    """Training loss and validation R² at each evaluation step."""
    steps = [r["step"] for r in inputs.history]
    fig, (loss_ax, r2_ax) = _figure(2, height=2.6)
    loss_ax.plot(steps, [r["loss"] for r in inputs.history], marker="o", markersize=3)
    loss_ax.set_ylabel("training loss")
    r2_ax.plot(steps, [r["val_r2"] for r in inputs.history], marker="o", markersize=3)
    r2_ax.axvline(inputs.best_step, color="gray", linestyle="--", label="weights kept")
    r2_ax.set_ylabel("validation R²")
    r2_ax.set_xlabel("training step")
    r2_ax.legend(loc="lower right", fontsize="small")
    loss_ax.set_title("training curves")
    return fig


def firing_rates_hz(spikes: np.ndarray, bin_s: float) -> np.ndarray:
    """Mean firing rate of each hidden neuron (Hz) over ``spikes`` (T, H)."""
    return np.asarray(spikes, dtype=np.float64).mean(axis=0) / bin_s


def plot_rates(inputs: ReportInputs) -> Figure:
    """Histogram of hidden-neuron firing rates on the test part, LIF and ALIF stacked."""
    rates = firing_rates_hz(inputs.test_spikes, inputs.bin_s)
    n_lif = rates.size - inputs.n_alif
    groups = [(rates[:n_lif], "LIF"), (rates[n_lif:], "ALIF")]
    groups = [(g, name) for g, name in groups if g.size]
    fig, (ax,) = _figure(1, height=3.2)
    top = max(float(rates.max()), 1e-3)
    ax.hist(
        [g for g, _ in groups],
        bins=np.linspace(0.0, top, 31),
        stacked=True,
        label=[f"{name} ({g.size})" for g, name in groups],
    )
    ax.axvline(float(rates.mean()), color="black", linestyle="--", label="mean")
    ax.set_xlabel("firing rate on the test part (Hz)")
    ax.set_ylabel("hidden neurons")
    ax.set_title(f"hidden firing rates: mean {rates.mean():.2f} Hz, silent {np.sum(rates == 0)}")
    ax.legend(fontsize="small")
    return fig


def raster_sample(n_hidden: int, n: int = RASTER_NEURONS) -> np.ndarray:
    """Indices of up to ``n`` hidden neurons spread evenly over the layer (LIF and ALIF)."""
    return np.unique(np.linspace(0, n_hidden - 1, min(n, n_hidden)).round().astype(int))


def plot_raster(inputs: ReportInputs) -> Figure:
    """Spikes of a sample of hidden neurons over the first seconds of the test part."""
    spikes = np.asarray(inputs.test_spikes)
    n = min(spikes.shape[0], max(1, round(RASTER_WINDOW_S / inputs.bin_s)))
    neurons = raster_sample(spikes.shape[1])
    fig, (ax,) = _figure(1, height=3.6)
    n_lif = spikes.shape[1] - inputs.n_alif
    for row, j in enumerate(neurons):
        times = np.flatnonzero(spikes[:n, j]) * inputs.bin_s
        color = "tab:blue" if j < n_lif else "tab:orange"
        ax.vlines(times, row + 0.1, row + 0.9, color=color, linewidth=0.8)
    ax.set_xlim(0.0, n * inputs.bin_s)
    ax.set_ylim(0.0, len(neurons))
    ax.set_xlabel("time from start of test part (s)")
    ax.set_ylabel("hidden neuron (sample)")
    ax.set_title(
        f"spike raster, {len(neurons)} of {spikes.shape[1]} hidden neurons (blue LIF, orange ALIF)"
    )
    return fig


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def render_markdown(metrics: dict[str, Any], inputs: ReportInputs) -> str:
    """``report.md``: what was calibrated, the metrics table and the figures."""
    lines = ["# Calibration report", ""]
    if inputs.session is not None:
        lines.append(f"- session: `{inputs.session}`")
    if inputs.checkpoint is not None:
        lines.append(f"- checkpoint: `{inputs.checkpoint}`")
    if inputs.init is not None:
        lines.append(f"- fine-tuned from: `{inputs.init}`")
    n_bins = metrics["n_bins"]
    lines += [
        f"- bins (chronological split): train {n_bins['train']}, validation {n_bins['val']}, "
        f"test {n_bins['test']} ({inputs.bin_s * 1e3:g} ms bins)",
        f"- wall time: {metrics['seconds']:.1f} s",
        f"- kinematics units: {_units_text(inputs)}",
        "",
        *_warning_lines(inputs),
        "## Test metrics",
        "",
        "R² as NeuroBench (per dimension, then averaged); every decoder is fitted on the "
        "training part and scored on the test part only.",
        "",
        f"| decoder | R² | R² ({' '.join(inputs.kinematics_labels)}) | Pearson r |",
        "|---|---|---|---|",
    ]
    for name, entry in metrics["test"].items():
        lines.append(
            f"| {name} | {_fmt(entry['r2'])} | "
            f"{' '.join(_fmt(v) for v in entry['r2_per_dim'])} | "
            f"{' '.join(_fmt(v) for v in entry['pearson_r'])} |"
        )
    eff = metrics["snn_efficiency"]
    lines += [
        "",
        "SNN efficiency on the test part: activation sparsity "
        f"{_fmt(eff['activation_sparsity'])}, {_fmt(eff['synops_per_bin'], 1)} synaptic "
        f"operations per bin, {eff['footprint_bytes']} bytes of parameters and buffers.",
        "",
        "## Decoded against true kinematics",
        "",
        "True (black), SNN (red) and the baselines (thin: "
        + (", ".join(inputs.baselines) or "none")
        + ") on the same test bins.",
        "",
        f"![decoded vs true]({FIGURES['decoded']})",
        "",
        *_channel_lines(inputs),
        "## Training",
        "",
        f"Loss and validation R² at each evaluation; the weights of step {inputs.best_step} "
        "(best validation R²) were kept.",
        "",
        f"![training curves]({FIGURES['training']})",
        "",
        "## Hidden layer",
        "",
        f"![firing-rate histogram]({FIGURES['rates']})",
        "",
        f"![spike raster]({FIGURES['raster']})",
        "",
    ]
    if inputs.trials is not None:
        keys = list(inputs.trials[0]["params"]) if inputs.trials else []
        lines += [
            "## Hyperparameter search",
            "",
            f"{len(inputs.trials)} trials scored by validation R² (`{TRIALS_FILE}`); trial "
            f"{inputs.best_trial} was retrained with the full step budget.",
            "",
            "| trial | " + " | ".join(keys) + " | val R² | steps |",
            "|---" * (len(keys) + 3) + "|",
        ]
        for t in inputs.trials:
            mark = " (best)" if t["trial"] == inputs.best_trial else ""
            values = " | ".join(_fmt(t["params"][k], 4) for k in keys)
            lines.append(f"| {t['trial']}{mark} | {values} | {_fmt(t['val_r2'])} | {t['steps']} |")
        lines.append("")
    return "\n".join(lines)


def _units_text(inputs: ReportInputs) -> str:
    if inputs.kinematics_units is None:
        return "not stated by the session (axes show bare labels)"
    pairs = zip(inputs.kinematics_labels, inputs.kinematics_units, strict=True)
    return ", ".join(f"{label} {unit}" for label, unit in pairs)


def _warning_lines(inputs: ReportInputs) -> list[str]:
    """``## Warnings``: each line a lab must read before trusting the scores (or nothing)."""
    if not inputs.warnings:
        return []
    return ["## Warnings", "", *(f"- **{w}**" for w in inputs.warnings), ""]


def _channel_lines(inputs: ReportInputs) -> list[str]:
    """``## Channels``: the flagged channels by criterion (definitions in ``checks.json``)."""
    summary = inputs.channels
    if summary is None:
        return []
    rates = np.asarray(summary.mean_rate_hz)
    lines = [
        "## Channels",
        "",
        f"{len(summary.labels)} channels, mean rate {rates.mean():.2f} Hz (median "
        f"{np.median(rates):.2f}, range {rates.min():.2f} to {rates.max():.2f}) over the whole "
        f'session. Criteria (`{CHECKS_FILE}`, README "Calibration report"): silent, '
        "saturated (stuck at its largest value), non-stationary (rate changes over the session).",
        "",
        "| criterion | channels |",
        "|---|---|",
    ]
    for flag in FLAGS:
        names = summary.flagged.get(flag, ())
        lines.append(f"| {flag.replace('_', '-')} | {', '.join(names) if names else 'none'} |")
    return [*lines, ""]
