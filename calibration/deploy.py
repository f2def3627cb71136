"""Hardware budgets of a calibrated checkpoint, scored on its session's test part.

``deployment_report(checkpoint, session)`` is what ``bci export --nir --report`` prints: the
budget of :func:`bci.hardware.hardware_budget` and the test R² of the decoder with float
weights and with weights quantized to each of ``bits`` (:func:`bci.hardware.quantized_model`),
each decoded as :func:`calibration.calibrate.score_snn` does (validation and test parts as one
causal run, scored on the test part). The session and split default to those the checkpoint
was calibrated on (its manifest's ``training`` record).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bci.checkpoint import Manifest, load_checkpoint
from bci.hardware import HardwareBudget, hardware_budget, quantized_model
from bci.rsnn import RSNN
from calibration.calibrate import (
    CalibrationOptions,
    load_calibration_session,
    score_snn,
    split_session,
)
from streams.session import Session

__all__ = ["DeploymentReport", "deployment_report", "quantized_r2"]


@dataclass(frozen=True)
class DeploymentReport:
    budget: HardwareBudget
    session: Path
    test_bins: int
    r2: dict[str, float]  # "float32", "8-bit", "4-bit", ...


def _calibration_record(manifest: Manifest, session: Path | None) -> tuple[Path, tuple]:
    training = manifest.training or {}
    split = tuple(training.get("split") or CalibrationOptions().split)
    if session is not None:
        return Path(session), split
    if not training.get("session"):
        raise ValueError(
            "the checkpoint does not name the session it was calibrated on; give one with --session"
        )
    path = Path(training["session"])
    if not path.is_file():
        raise FileNotFoundError(
            f"the checkpoint was calibrated on {path}, which does not exist here; "
            "give the session with --session"
        )
    return path, split


def deployment_report(
    checkpoint_path: str | Path, session: str | Path | None = None, bits: tuple[int, ...] = (8, 4)
) -> DeploymentReport:
    """Budget and float / quantized test R² of the checkpoint (see the module docstring)."""
    checkpoint = load_checkpoint(checkpoint_path)
    path, split = _calibration_record(checkpoint.manifest, session)
    options = CalibrationOptions(split=split)
    _, val, test = split_session(load_calibration_session(path, options), options.split)
    model = checkpoint.model
    return DeploymentReport(
        hardware_budget(model), path, test.n_bins, quantized_r2(model, val, test, bits)
    )


def quantized_r2(
    model: RSNN, val: Session, test: Session, bits: tuple[int, ...] = (8, 4)
) -> dict[str, float]:
    """Test R² of ``model`` as it is (``"float32"``) and with weights quantized to each of
    ``bits`` (``"8-bit"``, ...), validation and test decoded as one causal run."""
    r2 = {"float32": score_snn(model, val, test)[0]["r2"]}
    for b in bits:
        r2[f"{b}-bit"] = score_snn(quantized_model(model, b), val, test)[0]["r2"]
    return r2
