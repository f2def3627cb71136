"""Offline replay: run the decoding engine over a recorded session as fast as possible."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bci.checkpoint import load_checkpoint
from bci.eprop import EpropConfig
from bci.metrics import r2_score, windowed_r2
from bci.runtime import single_threaded_blas
from service.engine import Engine
from streams.files import load_any_session

__all__ = ["replay_session"]

logger = logging.getLogger(__name__)


def replay_session(
    session_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    adapt: bool = False,
    eprop: EpropConfig | None = None,
    window_s: float = 30.0,
) -> dict[str, Any]:
    """Decode a session file (NPZ or XDF) bin by bin with the model in ``model_path``.

    With ``adapt`` the model learns online by e-prop (``eprop`` settings, default
    :class:`EpropConfig`) from the session's kinematics. R² is measured against the
    session's kinematics, over the whole session and in ``window_s`` windows. Returns::

        {"r2": float, "r2_per_dim": [K floats], "r2_windows": [[t_start, t_end, r2], ...],
         "bins": int, "bins_per_second": float, "adaptation": {...}}

    where ``adaptation`` is the learner's final status when adapting, else
    ``{"enabled": False}``. Raises ``ValueError`` when the session has no kinematics or its
    channel count, bin width or kinematics dimensions do not match the model, and
    :class:`bci.checkpoint.CheckpointError` for an unusable checkpoint.
    """
    session_path, model_path = Path(session_path), Path(model_path)
    if not session_path.is_file():
        raise FileNotFoundError(f"session file {session_path} does not exist")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive number of seconds; got {window_s}")
    session = load_any_session(session_path)
    checkpoint = load_checkpoint(model_path)
    config = checkpoint.model.config
    if session.kinematics is None:
        raise ValueError(
            f"session {session_path} has no kinematics: R² (and adaptation) need the true "
            "kinematics; replay a session recorded with a kinematics stream"
        )
    if session.n_channels != config.n_in:
        raise ValueError(
            f"session {session_path} has {session.n_channels} channels but model {model_path} "
            f"expects {config.n_in}; use a model trained on this session's channels"
        )
    truth = np.asarray(session.kinematics, dtype=np.float32)
    if truth.shape[1] != config.n_out:
        raise ValueError(
            f"session {session_path} has {truth.shape[1]} kinematics dimensions but model "
            f"{model_path} decodes {config.n_out}"
        )
    engine = Engine(
        checkpoint, adapt=adapt, eprop=eprop, n_channels=session.n_channels, bin_s=session.bin_s
    )
    neural = np.ascontiguousarray(session.neural, dtype=np.float32)
    timestamps = np.asarray(session.timestamps, dtype=np.float64)
    n_bins = neural.shape[0]
    decoded = np.empty((n_bins, config.n_out), dtype=np.float32)
    process = engine.process
    limiter = single_threaded_blas()
    try:
        start = time.perf_counter()
        if adapt:
            for t in range(n_bins):
                decoded[t] = process(neural[t], truth[t], timestamps[t]).values
        else:
            for t in range(n_bins):
                decoded[t] = process(neural[t], None, timestamps[t]).values
        elapsed = time.perf_counter() - start
    finally:
        limiter.restore_original_limits()
    engine.set_state("stopped")
    r2, per_dim = r2_score(truth, decoded)
    learner = engine.learner
    adaptation = (
        {"enabled": True, **dataclasses.asdict(learner.status)}
        if learner is not None
        else {"enabled": False}
    )
    if "frozen" in adaptation:
        adaptation["frozen"] = list(adaptation["frozen"])
    result = {
        "r2": float(r2),
        "r2_per_dim": [float(v) for v in per_dim],
        "r2_windows": windowed_r2(truth, decoded, session.bin_s, window_s),
        "bins": int(n_bins),
        "bins_per_second": n_bins / elapsed if elapsed > 0 else float("inf"),
        "adaptation": adaptation,
    }
    logger.info(
        "replayed %s with %s: %d bins, %.0f bins/s, R2 %.3f",
        session_path,
        model_path,
        n_bins,
        result["bins_per_second"],
        result["r2"],
    )
    return result
