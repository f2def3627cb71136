"""Replay a recorded session through the decoder and score it against its kinematics.

Two ways, one result format:

* :func:`replay_session` (``bci replay --fast``) runs the one decode loop
  (:class:`~service.decoding.BinDecoder`) over the session's bins as fast as possible,
  learning, when adapting, from the session's kinematics as the live path does;
* :func:`replay_live` (``bci replay --speed X``) plays the session over LSL from a
  :class:`~streams.player.SessionPlayer` process at X times real time into a
  :class:`~service.daemon.Daemon`, the live path of ``bci serve`` (learning, when adapting,
  from the player's ``<name>-kinematics`` stream).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bci.checkpoint import DecoderFile, load_decoder
from bci.eprop import EpropConfig, EpropStatus
from bci.metrics import r2_score, windowed_r2
from service.daemon import Daemon
from service.decoding import ArrayTargets, decode_recording
from service.engine import DecodedBin, Engine
from service.settings import Settings
from streams.channels import in_model_order
from streams.files import is_nwb, load_any_session
from streams.player import SessionPlayer
from streams.session import Session

__all__ = ["replay_live", "replay_session"]

logger = logging.getLogger(__name__)


def replay_session(
    session_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    adapt: bool = False,
    eprop: EpropConfig | None = None,
    window_s: float = 30.0,
    track_inputs_s: float | None = None,
) -> dict[str, Any]:
    """Decode a session file (NPZ, XDF or NWB) bin by bin with the model in ``model_path``.

    With ``adapt`` the model learns online by e-prop (``eprop`` settings, default
    :class:`EpropConfig`) from the session's kinematics; with ``track_inputs_s`` its input
    normalisation follows the session (:mod:`bci.input_tracking`). R² is measured against the
    session's kinematics, over the whole session and in ``window_s`` windows. Returns::

        {"r2": float, "r2_per_dim": [K floats], "r2_windows": [[t_start, t_end, r2], ...],
         "bins": int, "bins_per_second": float, "adaptation": {...}}

    where ``adaptation`` is the learner's final status when adapting, else
    ``{"enabled": False}``. Raises ``ValueError`` when the session has no kinematics or its
    channel count, bin width or kinematics dimensions do not match the model, and
    :class:`bci.checkpoint.CheckpointError` for an unusable checkpoint.
    """
    session, checkpoint, truth = _load(session_path, model_path, window_s)
    config = (eprop or EpropConfig()) if adapt else None
    start = time.perf_counter()
    decoded, status = decode_recording(
        checkpoint, session.neural, ArrayTargets(truth), config, session.timestamps,
        track_inputs_s=track_inputs_s,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    result = _result(session, truth, decoded, elapsed, status, window_s)
    logger.info("replayed %s with %s: %s", session_path, model_path, _summary(result))
    return result


def replay_live(
    session_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    speed: float,
    adapt: bool = False,
    window_s: float = 30.0,
    idle_timeout_s: float = 10.0,
    track_inputs_s: float | None = None,
) -> dict[str, Any]:
    """Play a session over LSL at ``speed`` x real time into a daemon decoding it live.

    The player process waits for the daemon's inlets before its first bin. Each decoded bin
    is placed by its timestamp (the player stamps bin ``k`` at ``t0 + k * bin_s / speed``),
    so a bin lost on the way is counted, not misaligned. Returns :func:`replay_session`'s
    result, its ``bins`` counting bins decoded, plus ``"mode": "live"``, ``"speed"``,
    ``"bins_lost"`` and ``"latency"`` (the daemon's :meth:`~Daemon.latency`); R² covers the
    decoded bins; ``track_inputs_s`` as in :func:`replay_session`. ``TimeoutError`` when
    the daemon decodes nothing for ``idle_timeout_s`` s while the player still plays.
    """
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive factor (1 = real time); got {speed}")
    session, _, truth = _load(session_path, model_path, window_s)
    n_bins = session.n_bins
    decoded = np.full_like(truth, np.nan)
    first: list[float] = []
    period = session.bin_s / speed

    def place(b: DecodedBin) -> None:  # on the daemon's loop thread
        if not first:
            first.append(b.timestamp)
        k = round((b.timestamp - first[0]) / period)
        if 0 <= k < n_bins:
            decoded[k] = b.values

    name = f"bci-replay-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        stream=name,
        source_id=f"bci-player-{name}",
        model=Path(model_path),
        adapt=adapt,
        track_inputs=track_inputs_s,
        target_stream=f"{name}-kinematics" if adapt else None,
        output_name=f"{name}-decoded",
    )
    roles = ("neural", "kinematics") if adapt else ("neural",)
    player = SessionPlayer(session, name=name, speed=speed, wait_for_consumers=30.0, wait_for=roles)
    daemon = Daemon(settings, sinks=[place])
    with daemon:
        assert daemon.engine is not None
        with player:
            start = time.perf_counter()
            _wait_for_player(player, daemon.engine, idle_timeout_s)
            _wait_for_bins(daemon.engine, n_bins, idle_timeout_s=1.0)
            elapsed = time.perf_counter() - start
        learner = daemon.engine.learner
        status = None if learner is None else learner.status
        latency = daemon.latency()
    got = ~np.isnan(decoded[:, 0])
    result = _result(session, truth[got], decoded[got], elapsed, status, window_s)
    result.update(mode="live", speed=float(speed), bins_lost=int(n_bins - got.sum()))
    result["latency"] = latency
    logger.info("replayed %s live at %gx: %s", session_path, speed, _summary(result))
    return result


def _wait_for_player(player: SessionPlayer, engine: Engine, idle_timeout_s: float) -> None:
    """Until the player has pushed its last bin; raises if decoding stalls or it dies."""
    decoded, progress = engine.bins_decoded, time.monotonic()
    while not player.wait(0.1):
        if not player.running:
            player.stop()  # raises with the player's own error, if it had one
            raise RuntimeError("the player process ended before the last bin")
        if engine.bins_decoded != decoded:
            decoded, progress = engine.bins_decoded, time.monotonic()
        elif time.monotonic() - progress > idle_timeout_s:
            raise TimeoutError(
                f"no bin decoded for {idle_timeout_s:g} s while the session played "
                f"({decoded} decoded); is LSL reachable on this machine?"
            )


def _wait_for_bins(engine: Engine, n_bins: int, idle_timeout_s: float) -> None:
    """Until ``n_bins`` are decoded or none arrives for ``idle_timeout_s`` s."""
    decoded, progress = engine.bins_decoded, time.monotonic()
    while engine.bins_decoded < n_bins and time.monotonic() - progress < idle_timeout_s:
        time.sleep(0.02)
        if engine.bins_decoded != decoded:
            decoded, progress = engine.bins_decoded, time.monotonic()


def _load(
    session_path: str | os.PathLike[str], model_path: str | os.PathLike[str], window_s: float
) -> tuple[Session, DecoderFile, np.ndarray]:
    """The session, the checkpoint and the true kinematics (T, K) float32, all checked."""
    session_path, model_path = Path(session_path), Path(model_path)
    if not session_path.is_file():
        raise FileNotFoundError(f"session file {session_path} does not exist")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive number of seconds; got {window_s}")
    checkpoint = load_decoder(model_path)
    config = checkpoint.decoder.config
    # NWB spike times are binned at the model's bin width; NPZ and XDF come binned
    session = load_any_session(session_path, bin_s=config.dt_s if is_nwb(session_path) else None)
    if session.kinematics is None:
        raise ValueError(
            f"session {session_path} has no kinematics: R² (and adaptation) need the true "
            "kinematics; replay a session recorded with a kinematics stream"
        )
    manifest = checkpoint.manifest
    session = in_model_order(session, manifest, f"model {model_path}", f"session {session_path}")
    truth = np.asarray(session.kinematics, dtype=np.float32)
    return session, checkpoint, truth


def _result(
    session: Session,
    truth: np.ndarray,
    decoded: np.ndarray,
    elapsed_s: float,
    status: EpropStatus | None,
    window_s: float,
) -> dict[str, Any]:
    r2, per_dim = r2_score(truth, decoded)
    adaptation: dict[str, Any] = {"enabled": False}
    if status is not None:
        adaptation = {"enabled": True, **dataclasses.asdict(status)}
        adaptation["frozen"] = list(adaptation["frozen"])
    n_bins = len(decoded)
    return {
        "r2": float(r2),
        "r2_per_dim": [float(v) for v in per_dim],
        "r2_windows": windowed_r2(truth, decoded, session.bin_s, window_s),
        "bins": int(n_bins),
        "bins_per_second": n_bins / elapsed_s if elapsed_s > 0 else float("inf"),
        "adaptation": adaptation,
    }


def _summary(result: dict[str, Any]) -> str:
    return f"{result['bins']} bins, {result['bins_per_second']:.0f} bins/s, R2 {result['r2']:.3f}"
