"""Synthetic motor-cortex population driven by a simulated 2-D cursor task.

The default data source for demos and tests. A cursor makes minimum-jerk reaches
(Flash & Hogan 1985, J. Neurosci. 5:1688) between targets, separated by holds. Each channel
fires as an inhomogeneous Poisson process whose rate leads the kinematics by ``lead_s``::

    lambda_c(t) = max(0, b_c + m_c * (d_c . v(t + lead)) + s_c * |v(t + lead)|
                         + p_c . x(t + lead))                                    [Hz]
    n_c[k] ~ Poisson(lambda_c(t_k) * bin_s)

with baseline ``b_c`` (Hz), modulation depth ``m_c`` (Hz per cm/s) along the unit preferred
direction ``d_c``, speed tuning ``s_c`` (Hz per cm/s), position tuning ``p_c`` (Hz per cm),
velocity ``v`` (cm/s) and position ``x`` (cm). Untuned channels keep only ``b_c``; noisy
channels fire at a high movement-unrelated rate with extra (gamma-Poisson) dispersion.
Everything is evaluated at bin centres ``t_k = (k + 0.5) * bin_s``; ``timestamps`` are bin
end times ``(k + 1) * bin_s``. Nonstationarity events change the population from a given
time onward (bins whose centre is at or after ``time_s``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from streams.session import Session

logger = logging.getLogger(__name__)

Task = Literal["center_out", "random_target", "mixed"]
EventKind = Literal["rotation", "dropout", "gain"]

_N_CENTER_OUT_TARGETS = 8
_MIN_RANDOM_REACH_FRACTION = 0.2  # random targets at least this fraction of the radius away


@dataclass(frozen=True)
class Nonstationarity:
    """A change of the neural population that applies from ``time_s`` (seconds) onward.

    ``kind`` and ``value``:
        - ``"rotation"``: rotate every preferred direction by ``value`` degrees (CCW).
        - ``"dropout"``: silence (rate 0) ``round(value * n_channels)`` more channels, drawn
          with the config seed from those still active; ``0 <= value <= 1``.
        - ``"gain"``: multiply every rate (baseline and tuning) by ``value > 0``.
    Events accumulate: two 30-degree rotations give 60 degrees.
    """

    time_s: float
    kind: EventKind
    value: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.time_s) or self.time_s < 0:
            raise ValueError(f"Nonstationarity time_s={self.time_s!r} must be finite and >= 0")
        if self.kind not in ("rotation", "dropout", "gain"):
            raise ValueError(
                f"Nonstationarity kind={self.kind!r} is unknown; use 'rotation', 'dropout' or "
                "'gain'"
            )
        if not math.isfinite(self.value):
            raise ValueError(f"Nonstationarity value={self.value!r} must be finite")
        if self.kind == "dropout" and not 0.0 <= self.value <= 1.0:
            raise ValueError(
                f"dropout value={self.value!r} is the fraction of channels silenced; use 0..1"
            )
        if self.kind == "gain" and self.value <= 0:
            raise ValueError(f"gain value={self.value!r} must be > 0 (it multiplies rates)")


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the simulated task and population (units in the names)."""

    n_channels: int = 96
    bin_s: float = 0.05
    duration_s: float = 720.0
    seed: int = 0
    task: Task = "mixed"
    mixed_block_s: float = 60.0
    """With ``task="mixed"``: alternate center-out and random-target blocks of this length."""
    workspace_radius_cm: float = 10.0
    reach_duration_s: tuple[float, float] = (0.6, 1.2)
    hold_duration_s: tuple[float, float] = (0.3, 0.8)
    lead_s: float = 0.1
    baseline_rate_hz: tuple[float, float] = (5.0, 25.0)
    modulation_hz_per_cm_s: tuple[float, float] = (0.3, 1.0)
    speed_tuning_hz_per_cm_s: float = 0.2
    """Speed weights ``s_c`` are drawn uniformly from [0, this]."""
    position_tuning_hz_per_cm: float = 0.5
    """Position weights ``p_c`` have a random direction and magnitude in [0, this]."""
    fraction_untuned: float = 0.1
    fraction_noisy: float = 0.05
    noisy_rate_hz: tuple[float, float] = (40.0, 80.0)
    noisy_dispersion_shape: float = 2.0
    """Gamma shape k of the per-bin rate factor on noisy channels: Fano = 1 + mean / k."""
    events: tuple[Nonstationarity, ...] = ()

    def __post_init__(self) -> None:
        if int(self.n_channels) != self.n_channels or self.n_channels < 1:
            raise ValueError(f"n_channels={self.n_channels!r} must be a positive integer")
        _positive("bin_s", self.bin_s)
        _positive("duration_s", self.duration_s)
        if self.duration_s < self.bin_s:
            raise ValueError(
                f"duration_s={self.duration_s} is shorter than one bin ({self.bin_s} s)"
            )
        if self.task not in ("center_out", "random_target", "mixed"):
            raise ValueError(
                f"task={self.task!r} is unknown; use 'center_out', 'random_target' or 'mixed'"
            )
        _positive("mixed_block_s", self.mixed_block_s)
        _positive("workspace_radius_cm", self.workspace_radius_cm)
        _range("reach_duration_s", self.reach_duration_s, low=0.0, strict=True)
        _range("hold_duration_s", self.hold_duration_s, low=0.0, strict=True)
        if not math.isfinite(self.lead_s):
            raise ValueError(f"lead_s={self.lead_s!r} must be finite")
        _range("baseline_rate_hz", self.baseline_rate_hz, low=0.0)
        _range("modulation_hz_per_cm_s", self.modulation_hz_per_cm_s, low=0.0)
        _range("noisy_rate_hz", self.noisy_rate_hz, low=0.0)
        for name in ("speed_tuning_hz_per_cm_s", "position_tuning_hz_per_cm"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r} must be finite and >= 0")
        _positive("noisy_dispersion_shape", self.noisy_dispersion_shape)
        for name in ("fraction_untuned", "fraction_noisy"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} must be in [0, 1]")
        if self.fraction_untuned + self.fraction_noisy > 1.0:
            raise ValueError(
                f"fraction_untuned + fraction_noisy = "
                f"{self.fraction_untuned + self.fraction_noisy:g} exceeds 1"
            )
        for event in self.events:
            if not isinstance(event, Nonstationarity):
                raise ValueError(f"events must be Nonstationarity records, got {event!r}")
            if event.time_s > self.duration_s:
                raise ValueError(
                    f"event at {event.time_s} s is after the end of the session "
                    f"({self.duration_s} s); move it or lengthen duration_s"
                )

    @property
    def n_bins(self) -> int:
        """Number of bins: ``floor(duration_s / bin_s)`` (rounded to guard float error)."""
        return math.floor(self.duration_s / self.bin_s + 1e-9)


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """Ground truth behind a simulated session (arrays are per bin or per channel).

    Epochs are the intervals between events; epoch ``e`` covers bins whose centre lies in
    ``[epoch_start_s[e], epoch_start_s[e + 1])``.
    """

    rates_hz: np.ndarray
    """(T, C) expected firing rate per bin in Hz (noisy channels: mean of the gamma mixture)."""
    position_cm: np.ndarray
    """(T, 2) cursor position at the bin centres, cm."""
    in_reach: np.ndarray
    """(T,) True where the cursor is moving (inside a reach) at the bin centre."""
    baseline_hz: np.ndarray
    """(C,) baseline ``b_c`` before any gain event."""
    modulation_hz_per_cm_s: np.ndarray
    """(C,) ``m_c`` (0 for untuned and noisy channels)."""
    speed_hz_per_cm_s: np.ndarray
    """(C,) ``s_c``."""
    position_hz_per_cm: np.ndarray
    """(C, 2) ``p_c``."""
    tuned: np.ndarray
    """(C,) bool, True for movement-tuned channels."""
    noisy: np.ndarray
    """(C,) bool, True for high-rate overdispersed channels."""
    epoch_start_s: np.ndarray
    """(E,) start time of each epoch in seconds; the first is 0."""
    epoch_preferred_direction_deg: np.ndarray
    """(E, C) preferred direction of each channel per epoch, degrees CCW from +x."""
    epoch_gain: np.ndarray
    """(E,) cumulative gain per epoch."""
    epoch_active: np.ndarray
    """(E, C) bool, False for channels silenced by dropout events."""

    def epoch_of(self, time_s: float) -> int:
        """Index of the epoch containing ``time_s`` (seconds)."""
        return int(np.searchsorted(self.epoch_start_s, time_s, side="right") - 1)


def simulate_session(config: SyntheticConfig | None = None) -> Session:
    """Simulate a session (counts, cursor velocity, targets); see :func:`simulate_population`."""
    session, _ = simulate_population(config)
    return session


def simulate_population(
    config: SyntheticConfig | None = None,
) -> tuple[Session, SyntheticTruth]:
    """Simulate a session and return it with its ground truth.

    The session has ``neural`` counts per bin (float32), ``kinematics`` = cursor velocity
    (cm/s, labels ``("vx", "vy")``), ``targets`` = current target position (cm) and channel
    labels ``ch000``...; all sampled at bin centres. Same config (seed) -> identical arrays.
    Trajectory, tuning, events and spike noise use independent random streams, so changing
    e.g. the events leaves the trajectory and tuning unchanged.
    """
    config = config or SyntheticConfig()
    traj_rng, tuning_rng, event_rng, count_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(4)
    )
    n_bins, n_channels = config.n_bins, config.n_channels
    centres = (np.arange(n_bins) + 0.5) * config.bin_s
    timestamps = (np.arange(n_bins) + 1.0) * config.bin_s

    plan = _plan_reaches(config, traj_rng, horizon_s=centres[-1] + max(config.lead_s, 0.0))
    position, velocity, target, in_reach = _evaluate(plan, centres)
    lead_position, lead_velocity, _, _ = _evaluate(plan, centres + config.lead_s)

    tuning = _draw_tuning(config, tuning_rng)
    epochs = _epochs(config, tuning.preferred_direction_deg, event_rng)

    rates = np.empty((n_bins, n_channels))
    speed = np.hypot(lead_velocity[:, 0], lead_velocity[:, 1])
    bounds = np.searchsorted(centres, np.append(epochs.start_s, np.inf), side="left")
    for e in range(len(epochs.start_s)):
        rows = slice(bounds[e], bounds[e + 1])
        theta = np.deg2rad(epochs.preferred_direction_deg[e])
        drive = (
            tuning.baseline_hz
            + tuning.modulation_hz_per_cm_s
            * (lead_velocity[rows, :1] * np.cos(theta) + lead_velocity[rows, 1:] * np.sin(theta))
            + tuning.speed_hz_per_cm_s * speed[rows, None]
            + lead_position[rows] @ tuning.position_hz_per_cm.T
        )
        rates[rows] = epochs.gain[e] * np.maximum(drive, 0.0) * epochs.active[e]

    expected = rates * config.bin_s
    if tuning.noisy.any():
        k = config.noisy_dispersion_shape
        factor = count_rng.gamma(k, 1.0 / k, size=(n_bins, int(tuning.noisy.sum())))
        expected_draw = expected.copy()
        expected_draw[:, tuning.noisy] *= factor
    else:
        expected_draw = expected
    counts = count_rng.poisson(expected_draw).astype(np.float32)

    session = Session(
        neural=counts,
        timestamps=timestamps,
        bin_s=config.bin_s,
        kinematics=velocity,
        kinematics_labels=("vx", "vy"),
        kinematics_units=("cm/s", "cm/s"),
        targets=target,
        channel_labels=tuple(f"ch{c:03d}" for c in range(n_channels)),
    )
    truth = SyntheticTruth(
        rates_hz=rates,
        position_cm=position,
        in_reach=in_reach,
        baseline_hz=tuning.baseline_hz,
        modulation_hz_per_cm_s=tuning.modulation_hz_per_cm_s,
        speed_hz_per_cm_s=tuning.speed_hz_per_cm_s,
        position_hz_per_cm=tuning.position_hz_per_cm,
        tuned=tuning.tuned,
        noisy=tuning.noisy,
        epoch_start_s=epochs.start_s,
        epoch_preferred_direction_deg=epochs.preferred_direction_deg,
        epoch_gain=epochs.gain,
        epoch_active=epochs.active,
    )
    logger.debug(
        "simulated %r: %d reaches, %d epochs", session, len(plan.start_s), len(epochs.start_s)
    )
    return session, truth


# --- trajectory ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ReachPlan:
    start_s: np.ndarray  # (R,) reach onset times
    duration_s: np.ndarray  # (R,)
    origin_cm: np.ndarray  # (R, 2)
    target_cm: np.ndarray  # (R, 2)


def _plan_reaches(
    config: SyntheticConfig, rng: np.random.Generator, horizon_s: float
) -> _ReachPlan:
    """Alternate hold and reach segments, starting with a hold at the centre, up to horizon_s."""
    radius = config.workspace_radius_cm
    starts, durations, origins, targets = [], [], [], []
    t = 0.0
    pos = np.zeros(2)
    while True:
        t += rng.uniform(*config.hold_duration_s)
        if t > horizon_s:
            break
        task = config.task
        if task == "mixed":
            block = int(t // config.mixed_block_s)
            task = "center_out" if block % 2 == 0 else "random_target"
        if task == "center_out":
            if np.allclose(pos, 0.0):
                angle = 2 * np.pi * rng.integers(_N_CENTER_OUT_TARGETS) / _N_CENTER_OUT_TARGETS
                target = radius * np.array([np.cos(angle), np.sin(angle)])
            else:
                target = np.zeros(2)
        else:
            while True:  # uniform in the disc, far enough from the current position
                r = radius * math.sqrt(rng.uniform())
                angle = rng.uniform(0, 2 * np.pi)
                target = r * np.array([np.cos(angle), np.sin(angle)])
                if np.hypot(*(target - pos)) >= _MIN_RANDOM_REACH_FRACTION * radius:
                    break
        duration = rng.uniform(*config.reach_duration_s)
        starts.append(t)
        durations.append(duration)
        origins.append(pos)
        targets.append(target)
        pos = target
        t += duration
    return _ReachPlan(
        start_s=np.asarray(starts, dtype=float),
        duration_s=np.asarray(durations, dtype=float),
        origin_cm=np.asarray(origins, dtype=float).reshape(-1, 2),
        target_cm=np.asarray(targets, dtype=float).reshape(-1, 2),
    )


def _evaluate(
    plan: _ReachPlan, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Position (cm), velocity (cm/s), target (cm) and in-reach flag at ``times`` (s).

    Minimum-jerk reach from x0 to x1 over duration D, tau = (t - t0) / D in [0, 1]:
    x = x0 + (x1 - x0) (10 tau^3 - 15 tau^4 + 6 tau^5),
    v = (x1 - x0) / D * (30 tau^2 - 60 tau^3 + 30 tau^4).
    Before the first reach the cursor holds at the centre with the centre as target.
    """
    idx = np.searchsorted(plan.start_s, times, side="right") - 1
    started = idx >= 0
    safe = np.where(started, idx, 0)
    if len(plan.start_s) == 0:  # the whole session is the initial hold
        zeros = np.zeros((len(times), 2))
        return zeros, zeros.copy(), zeros.copy(), np.zeros(len(times), dtype=bool)
    t0 = plan.start_s[safe]
    dur = plan.duration_s[safe]
    tau = np.clip((times - t0) / dur, 0.0, 1.0)
    in_reach = started & (times - t0 < dur)
    tau = np.where(started, tau, 0.0)
    delta = plan.target_cm[safe] - plan.origin_cm[safe]
    shape = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    rate = (30 * tau**2 - 60 * tau**3 + 30 * tau**4) / dur
    position = np.where(started[:, None], plan.origin_cm[safe] + delta * shape[:, None], 0.0)
    velocity = np.where(in_reach[:, None], delta * rate[:, None], 0.0)
    target = np.where(started[:, None], plan.target_cm[safe], 0.0)
    return position, velocity, target, in_reach


# --- population ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tuning:
    baseline_hz: np.ndarray
    modulation_hz_per_cm_s: np.ndarray
    speed_hz_per_cm_s: np.ndarray
    position_hz_per_cm: np.ndarray
    preferred_direction_deg: np.ndarray
    tuned: np.ndarray
    noisy: np.ndarray


def _draw_tuning(config: SyntheticConfig, rng: np.random.Generator) -> _Tuning:
    c = config.n_channels
    order = rng.permutation(c)
    n_noisy = round(config.fraction_noisy * c)
    n_untuned = min(round(config.fraction_untuned * c), c - n_noisy)
    noisy = np.zeros(c, dtype=bool)
    noisy[order[:n_noisy]] = True
    tuned = np.ones(c, dtype=bool)
    tuned[order[: n_noisy + n_untuned]] = False

    baseline = rng.uniform(*config.baseline_rate_hz, size=c)
    baseline[noisy] = rng.uniform(*config.noisy_rate_hz, size=n_noisy)
    modulation = rng.uniform(*config.modulation_hz_per_cm_s, size=c) * tuned
    speed = rng.uniform(0.0, config.speed_tuning_hz_per_cm_s, size=c) * tuned
    pos_angle = rng.uniform(0.0, 2 * np.pi, size=c)
    pos_gain = rng.uniform(0.0, config.position_tuning_hz_per_cm, size=c) * tuned
    position = np.stack([np.cos(pos_angle), np.sin(pos_angle)], axis=1) * pos_gain[:, None]
    preferred = rng.uniform(0.0, 360.0, size=c)
    return _Tuning(baseline, modulation, speed, position, preferred, tuned, noisy)


@dataclass(frozen=True)
class _Epochs:
    start_s: np.ndarray
    preferred_direction_deg: np.ndarray
    gain: np.ndarray
    active: np.ndarray


def _epochs(
    config: SyntheticConfig, preferred_deg: np.ndarray, rng: np.random.Generator
) -> _Epochs:
    """Cumulative population state between events (stable sort keeps same-time order)."""
    events = sorted(config.events, key=lambda ev: ev.time_s)
    starts = [0.0]
    directions = [preferred_deg.copy()]
    gains = [1.0]
    actives = [np.ones(config.n_channels, dtype=bool)]
    for event in events:
        direction, gain, active = directions[-1].copy(), gains[-1], actives[-1].copy()
        if event.kind == "rotation":
            direction = np.mod(direction + event.value, 360.0)
        elif event.kind == "gain":
            gain *= event.value
        else:
            candidates = np.flatnonzero(active)
            n_drop = min(round(event.value * config.n_channels), len(candidates))
            active[rng.choice(candidates, size=n_drop, replace=False)] = False
        if event.time_s == starts[-1]:  # same time as the previous epoch: merge
            directions[-1], gains[-1], actives[-1] = direction, gain, active
        else:
            starts.append(event.time_s)
            directions.append(direction)
            gains.append(gain)
            actives.append(active)
    return _Epochs(
        start_s=np.asarray(starts),
        preferred_direction_deg=np.stack(directions),
        gain=np.asarray(gains),
        active=np.stack(actives),
    )


def _positive(name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")


def _range(name: str, value: tuple[float, float], *, low: float, strict: bool = False) -> None:
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name}={value!r} must be a finite (low, high) pair with low <= high")
    if lo < low or (strict and lo <= low):
        bound = ">" if strict else ">="
        raise ValueError(f"{name}={value!r}: low must be {bound} {low}")
