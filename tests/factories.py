"""Builders shared across test packages: a cosine-tuned recording, a session that counts its
bins, and a tiny checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from streams.session import Session

KINEMATICS = ("vx", "vy")


def smooth_velocity(n_bins: int, bin_s: float = 0.05) -> np.ndarray:
    """A smooth 2-D velocity, (n_bins, 2), of order 1: two sines and a cosine of time (s)."""
    t = np.arange(n_bins) * bin_s
    return np.stack([np.sin(0.8 * t) + 0.3 * np.sin(2.3 * t), np.cos(0.6 * t)], axis=1)


def cosine_tuned_counts(
    velocity: np.ndarray,
    n_in: int,
    rng: np.random.Generator,
    *,
    gain: float = 1.0,
    depth: float = 0.8,
    preferred: np.ndarray | None = None,
) -> np.ndarray:
    """Poisson counts (float64, (T, n_in)) with rate ``gain * exp(depth * v . d_i)`` per bin, for
    each channel's preferred direction ``d_i`` (angles ``preferred``, drawn from ``rng`` when
    None, before the counts)."""
    if preferred is None:
        preferred = rng.uniform(0, 2 * np.pi, n_in)
    drive = velocity[:, :1] * np.cos(preferred) + velocity[:, 1:] * np.sin(preferred)
    return rng.poisson(gain * np.exp(depth * drive)).astype(np.float64)


def tiny_checkpoint(
    path: Path,
    *,
    n_in: int = 4,
    n_hidden: int = 8,
    bin_s: float = 0.05,
    seed: int = 0,
    rate: float | None = None,
    kinematics: tuple[str, ...] = KINEMATICS,
    channel_labels: list[str] | None = None,
    metrics: dict[str, object] | None = None,
    **config: object,
) -> Path:
    """Save an untrained RSNN (one output per label in ``kinematics``) to ``path``; returns
    ``path``.

    With ``rate`` (counts per bin) the normalisation is fitted to 200 bins of Poisson counts
    at that rate and standard-normal kinematics (seeded by ``seed``); without it the model
    keeps the identity normalisation. ``channel_labels`` and ``metrics`` are stored in the
    manifest (None: unlabelled, no metrics). ``config`` goes to ``RSNNConfig``.
    """
    from bci.checkpoint import save_checkpoint
    from bci.rsnn import RSNN, RSNNConfig

    cfg = RSNNConfig(n_in=n_in, n_hidden=n_hidden, n_out=len(kinematics), dt_s=bin_s, **config)
    model = RSNN(cfg, seed=seed)
    if rate is not None:
        rng = np.random.default_rng(seed)
        model.fit_normalisation(
            rng.poisson(rate, (200, n_in)).astype(np.float32),
            rng.standard_normal((200, len(kinematics))).astype(np.float32),
        )
    return save_checkpoint(
        path, model, kinematics_labels=kinematics, channel_labels=channel_labels, metrics=metrics
    )


def counter_session(n_channels: int, bin_s: float, duration_s: float, seed: int = 0) -> Session:
    """A synthetic session whose neural channel 0 counts bins 0, 1, 2, ... (to tell which bin
    arrived where)."""
    from streams.synthetic import SyntheticConfig, simulate_session

    session = simulate_session(
        SyntheticConfig(n_channels=n_channels, bin_s=bin_s, duration_s=duration_s, seed=seed)
    )
    neural = session.neural.copy()
    neural[:, 0] = np.arange(session.n_bins)
    return dataclasses.replace(session, neural=neural)
