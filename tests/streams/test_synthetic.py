"""Tests for the synthetic motor-cortex population."""

from __future__ import annotations

import time

import numpy as np
import pytest

from streams.session import Session
from streams.synthetic import (
    Nonstationarity,
    SyntheticConfig,
    SyntheticTruth,
    simulate_population,
    simulate_session,
)


@pytest.fixture(scope="module")
def default_run() -> tuple[Session, SyntheticTruth]:
    return simulate_population(SyntheticConfig())


def _velocity(session: Session) -> np.ndarray:
    assert session.kinematics is not None
    return session.kinematics.astype(np.float64)


def _fit_preferred_directions(
    counts: np.ndarray, velocity: np.ndarray, lead_bins: int
) -> np.ndarray:
    """Least-squares cosine-tuning fit: counts[k] ~ a + b . v[k + lead]; returns angles (deg)."""
    n = len(counts) - lead_bins
    x = np.column_stack([np.ones(n), velocity[lead_bins : lead_bins + n]])
    coef, *_ = np.linalg.lstsq(x, counts[:n], rcond=None)
    return np.rad2deg(np.arctan2(coef[2], coef[1]))


def _angle_diff_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b + 180.0) % 360.0 - 180.0


def test_default_shapes_dtypes_and_labels(default_run: tuple[Session, SyntheticTruth]) -> None:
    session, truth = default_run
    assert (session.n_bins, session.n_channels) == (14_400, 96)
    assert session.bin_s == 0.05
    assert session.neural.dtype == np.float32
    assert session.kinematics is not None and session.kinematics.shape == (14_400, 2)
    assert session.kinematics_labels == ("vx", "vy")
    assert session.targets is not None and session.targets.shape == (14_400, 2)
    assert session.channel_labels is not None
    assert (
        session.channel_labels[:2] == ("ch000", "ch001") and session.channel_labels[-1] == "ch095"
    )
    np.testing.assert_allclose(session.timestamps, (np.arange(14_400) + 1) * 0.05)
    assert truth.rates_hz.shape == (14_400, 96)
    assert np.all(session.neural >= 0) and np.all(session.neural == np.round(session.neural))
    assert truth.tuned.sum() == 96 - round(0.1 * 96) - round(0.05 * 96)
    assert truth.noisy.sum() == round(0.05 * 96)
    assert not np.any(truth.tuned & truth.noisy)


def test_fast_enough() -> None:
    start = time.perf_counter()
    simulate_session(SyntheticConfig(seed=3))
    assert time.perf_counter() - start < 2.0


def test_deterministic_per_seed() -> None:
    config = SyntheticConfig(duration_s=60.0, seed=7)
    a, b = simulate_session(config), simulate_session(config)
    np.testing.assert_array_equal(a.neural, b.neural)
    np.testing.assert_array_equal(a.kinematics, b.kinematics)
    np.testing.assert_array_equal(a.targets, b.targets)
    c = simulate_session(SyntheticConfig(duration_s=60.0, seed=8))
    assert not np.array_equal(a.neural, c.neural)
    assert not np.array_equal(a.kinematics, c.kinematics)


def test_velocity_statistics(default_run: tuple[Session, SyntheticTruth]) -> None:
    session, truth = default_run
    speed = np.hypot(*_velocity(session).T)
    assert 0.3 < truth.in_reach.mean() < 0.8  # reaches and holds both present
    assert np.all(speed[~truth.in_reach] < 1e-6)  # holds are still
    assert 5.0 < speed[truth.in_reach].mean() < 30.0  # cm/s
    assert 15.0 < speed.max() < 100.0
    radius = np.hypot(*truth.position_cm.T)
    assert radius.max() <= 10.0 + 1e-6  # stays in the workspace


def test_velocity_is_derivative_of_position(default_run: tuple[Session, SyntheticTruth]) -> None:
    session, truth = default_run
    velocity = _velocity(session)
    finite_diff = np.diff(truth.position_cm, axis=0) / session.bin_s
    midpoint = 0.5 * (velocity[1:] + velocity[:-1])
    # Trapezoid rule on a smooth minimum-jerk profile: small error relative to peak speed.
    assert np.abs(finite_diff - midpoint).max() < 0.05 * np.abs(velocity).max()


def test_targets_reached_at_end_of_reach(default_run: tuple[Session, SyntheticTruth]) -> None:
    session, truth = default_run
    assert session.targets is not None
    holding = ~truth.in_reach
    holding[: int(1.0 / session.bin_s)] = False  # skip the initial hold at the centre
    np.testing.assert_allclose(truth.position_cm[holding], session.targets[holding], atol=1e-4)


def test_center_out_targets_on_circle() -> None:
    session = simulate_session(SyntheticConfig(task="center_out", duration_s=120.0))
    assert session.targets is not None
    targets = np.unique(np.round(session.targets, 4), axis=0)
    radii = np.hypot(*targets.T)
    assert np.all((radii < 1e-6) | (np.abs(radii - 10.0) < 1e-4))
    angles = np.rad2deg(np.arctan2(targets[radii > 1, 1], targets[radii > 1, 0])) % 360
    np.testing.assert_allclose(angles % 45.0 - np.round(angles % 45.0 / 45.0) * 45.0, 0, atol=1e-3)
    assert len(targets) > 5  # most of the 8 targets appear, plus the centre


def test_neural_leads_kinematics(default_run: tuple[Session, SyntheticTruth]) -> None:
    session, truth = default_run
    velocity = _velocity(session)
    strongest = np.argsort(truth.modulation_hz_per_cm_s)[-5:]
    lags = np.arange(-10, 11)
    mean_corr = np.zeros(len(lags))
    for c in strongest:
        theta = np.deg2rad(truth.epoch_preferred_direction_deg[0, c])
        projected = velocity @ np.array([np.cos(theta), np.sin(theta)])
        counts = session.neural[:, c].astype(np.float64)
        for i, lag in enumerate(lags):  # corr(counts[k], projected velocity[k + lag])
            if lag >= 0:
                a, b = counts[: len(counts) - lag], projected[lag:]
            else:
                a, b = counts[-lag:], projected[: len(projected) + lag]
            mean_corr[i] += np.corrcoef(a, b)[0, 1] / len(strongest)
    peak_lag_s = lags[np.argmax(mean_corr)] * session.bin_s
    assert peak_lag_s == pytest.approx(0.1, abs=session.bin_s + 1e-9)
    assert mean_corr.max() > 0.3


def test_counts_match_rates(default_run: tuple[Session, SyntheticTruth]) -> None:
    session, truth = default_run
    expected = truth.rates_hz.sum(axis=0) * session.bin_s
    observed = session.neural.astype(np.float64).sum(axis=0)
    poisson = ~truth.noisy
    z = (observed[poisson] - expected[poisson]) / np.sqrt(expected[poisson])
    assert np.abs(z).max() < 5.0
    # Noisy channels: right mean, but overdispersed (Fano = 1 + mean / k, k = 2).
    np.testing.assert_allclose(observed[truth.noisy], expected[truth.noisy], rtol=0.05)
    counts = session.neural[:, truth.noisy].astype(np.float64)
    fano = counts.var(axis=0) / counts.mean(axis=0)
    assert np.all(fano > 1.5)
    plain = session.neural[:, ~truth.tuned & ~truth.noisy].astype(np.float64)
    np.testing.assert_allclose(plain.var(axis=0) / plain.mean(axis=0), 1.0, atol=0.1)


def test_population_is_linearly_decodable(default_run: tuple[Session, SyntheticTruth]) -> None:
    session, _ = default_run
    counts = np.column_stack([session.neural, np.ones(session.n_bins)])
    velocity = _velocity(session)
    n_train = int(0.8 * session.n_bins)
    weights, *_ = np.linalg.lstsq(counts[:n_train], velocity[:n_train], rcond=None)
    predicted = counts[n_train:] @ weights
    held_out = velocity[n_train:]
    r2 = 1 - ((held_out - predicted) ** 2).sum(0) / ((held_out - held_out.mean(0)) ** 2).sum(0)
    assert np.all(r2 > 0.5), r2


def test_rotation_event_rotates_preferred_directions() -> None:
    config = SyntheticConfig(
        duration_s=600.0, events=(Nonstationarity(time_s=300.0, kind="rotation", value=45.0),)
    )
    session, truth = simulate_population(config)
    np.testing.assert_allclose(
        _angle_diff_deg(
            truth.epoch_preferred_direction_deg[1], truth.epoch_preferred_direction_deg[0]
        ),
        45.0,
    )
    assert truth.epoch_of(299.0) == 0 and truth.epoch_of(300.0) == 1
    half = int(300.0 / config.bin_s)
    lead_bins = round(config.lead_s / config.bin_s)
    velocity = _velocity(session)
    tuned = np.flatnonzero(truth.tuned)
    counts = session.neural[:, tuned].astype(np.float64)
    before = _fit_preferred_directions(counts[:half], velocity[:half], lead_bins)
    after = _fit_preferred_directions(counts[half:], velocity[half:], lead_bins)
    rotation = _angle_diff_deg(after, before)
    assert np.median(rotation) == pytest.approx(45.0, abs=5.0)
    # The fits recover the true directions, not just their difference.
    true_before = truth.epoch_preferred_direction_deg[0, tuned]
    assert np.median(np.abs(_angle_diff_deg(before, true_before))) < 10.0


def test_dropout_event_silences_stated_fraction() -> None:
    config = SyntheticConfig(
        duration_s=120.0, events=(Nonstationarity(time_s=60.0, kind="dropout", value=0.25),)
    )
    session, truth = simulate_population(config)
    half = int(60.0 / config.bin_s)
    silent_after = np.all(session.neural[half:] == 0, axis=0)
    silent_before = np.all(session.neural[:half] == 0, axis=0)
    assert not silent_before.any()
    assert silent_after.sum() == round(0.25 * 96)
    np.testing.assert_array_equal(silent_after, ~truth.epoch_active[1])
    assert truth.epoch_active[0].all()
    other = simulate_population(
        SyntheticConfig(
            duration_s=120.0,
            seed=1,
            events=(Nonstationarity(time_s=60.0, kind="dropout", value=0.25),),
        )
    )[1]
    assert not np.array_equal(other.epoch_active[1], truth.epoch_active[1])  # seeded choice


def test_gain_event_scales_rates() -> None:
    base = SyntheticConfig(duration_s=120.0, seed=4)
    gained = SyntheticConfig(
        duration_s=120.0, seed=4, events=(Nonstationarity(time_s=60.0, kind="gain", value=2.0),)
    )
    s0, t0 = simulate_population(base)
    s1, t1 = simulate_population(gained)
    np.testing.assert_array_equal(s0.kinematics, s1.kinematics)  # same trajectory
    half = int(60.0 / base.bin_s)
    np.testing.assert_allclose(t1.rates_hz[:half], t0.rates_hz[:half])
    np.testing.assert_allclose(t1.rates_hz[half:], 2.0 * t0.rates_hz[half:])
    ratio = s1.neural[half:].sum() / s0.neural[half:].sum()
    assert ratio == pytest.approx(2.0, rel=0.02)


def test_events_accumulate() -> None:
    config = SyntheticConfig(
        duration_s=30.0,
        events=(
            Nonstationarity(time_s=20.0, kind="rotation", value=30.0),
            Nonstationarity(time_s=10.0, kind="rotation", value=30.0),
            Nonstationarity(time_s=20.0, kind="gain", value=0.5),
        ),
    )
    _, truth = simulate_population(config)
    np.testing.assert_allclose(truth.epoch_start_s, [0.0, 10.0, 20.0])
    np.testing.assert_allclose(truth.epoch_gain, [1.0, 1.0, 0.5])
    np.testing.assert_allclose(
        _angle_diff_deg(
            truth.epoch_preferred_direction_deg[2], truth.epoch_preferred_direction_deg[0]
        ),
        60.0,
    )


@pytest.mark.parametrize("task", ["center_out", "random_target"])
def test_single_tasks_run(task: str) -> None:
    session, truth = simulate_population(SyntheticConfig(task=task, duration_s=60.0))  # type: ignore[arg-type]
    assert session.n_bins == 1200
    assert truth.in_reach.any() and (~truth.in_reach).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_channels": 0}, "n_channels"),
        ({"bin_s": 0.0}, "bin_s"),
        ({"task": "reach"}, "task="),
        ({"reach_duration_s": (1.0, 0.5)}, "reach_duration_s"),
        ({"fraction_untuned": 0.6, "fraction_noisy": 0.5}, "exceeds 1"),
        ({"events": (Nonstationarity(time_s=900.0, kind="gain", value=2.0),)}, "after the end"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [("dropout", 1.5, "fraction"), ("gain", 0.0, "> 0"), ("flip", 1.0, "unknown")],
)
def test_event_validation(kind: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Nonstationarity(time_s=1.0, kind=kind, value=value)  # type: ignore[arg-type]
