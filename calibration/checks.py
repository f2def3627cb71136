"""Data checks a lab reads before trusting a calibration: bad channels and short held-out parts.

Channel criteria (per channel, over the whole session, ``x[t]`` the channel's value in bin
``t`` of ``bin_s`` seconds: counts per bin; rate = ``x / bin_s`` in Hz). A channel is named
by the first criterion it meets, in this order:

- **silent**: mean rate below :data:`SILENT_MAX_HZ` (0.1 Hz: fewer than 6 counts a minute).
- **saturated**: its most frequent value is also its largest, that value is > 0, and it
  fills at least :data:`SATURATED_FRACTION` (half) of the bins: the channel sits at a ceiling
  (a clipped count, a railed amplifier, a stuck detector) instead of varying below it.
- **non-stationary**: split into :data:`SEGMENTS` (4) consecutive parts of equal length;
  with ``hi`` and ``lo`` the parts of highest and lowest mean rate, the rates differ by more
  than a factor :data:`NONSTATIONARY_RATIO` (2; ``lo`` may be 0) *and* by more than
  :data:`NONSTATIONARY_Z` (5) standard errors, ``|m_hi - m_lo| > z * sqrt(v_hi / n_hi +
  v_lo / n_lo)`` (``m``, ``v``, ``n``: mean, variance and bin count of a part), so Poisson
  noise on a sparse channel is not taken for drift.

Held-out parts: the validation part (early stopping) or the test part (the scores) is too
short to trust when it spans less than :data:`MIN_TRUSTED_S` (60 s): a minute holds a few
dozen movements at most, and R² over fewer varies widely from one stretch of a session to
the next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SILENT_MAX_HZ = 0.1
SATURATED_FRACTION = 0.5
SEGMENTS = 4
NONSTATIONARY_RATIO = 2.0
NONSTATIONARY_Z = 5.0
MIN_TRUSTED_S = 60.0
FLAGS: tuple[str, ...] = ("silent", "saturated", "non_stationary")


@dataclass(frozen=True)
class ChannelSummary:
    """Per-channel mean rates (Hz) and the names of flagged channels, by criterion."""

    labels: tuple[str, ...]
    mean_rate_hz: tuple[float, ...]
    flagged: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON form: the criteria's thresholds, the flagged names and every channel's rate."""
        return {
            "criteria": {
                "silent_max_hz": SILENT_MAX_HZ,
                "saturated_fraction": SATURATED_FRACTION,
                "segments": SEGMENTS,
                "nonstationary_ratio": NONSTATIONARY_RATIO,
                "nonstationary_z": NONSTATIONARY_Z,
            },
            **{flag: list(self.flagged.get(flag, ())) for flag in FLAGS},
            "mean_rate_hz": dict(zip(self.labels, self.mean_rate_hz, strict=True)),
        }

    def warnings(self) -> list[str]:
        """One line per criterion that flagged a channel, naming them."""
        out = []
        for flag in FLAGS:
            names = self.flagged.get(flag, ())
            if names:
                what = flag.replace("_", "-")
                out.append(
                    f"{len(names)} of {len(self.labels)} channels {what}: {', '.join(names)}"
                )
        return out


def channel_summary(
    neural: np.ndarray, bin_s: float, labels: Sequence[str] | None = None
) -> ChannelSummary:
    """Check each column of ``neural`` (T, C) against the criteria of the module docstring.

    ``labels`` name the channels (default ``ch000``, ``ch001``, ...).
    """
    x = np.asarray(neural, dtype=np.float64)
    n_channels = x.shape[1]
    names = tuple(labels) if labels is not None else tuple(f"ch{c:03d}" for c in range(n_channels))
    rates = x.mean(axis=0) / bin_s
    flagged: dict[str, list[str]] = {flag: [] for flag in FLAGS}
    for c in range(n_channels):
        flag = _flag(x[:, c], float(rates[c]), bin_s)
        if flag is not None:
            flagged[flag].append(names[c])
    return ChannelSummary(
        labels=names,
        mean_rate_hz=tuple(float(r) for r in rates),
        flagged={flag: tuple(found) for flag, found in flagged.items() if found},
    )


def _flag(column: np.ndarray, rate_hz: float, bin_s: float) -> str | None:
    if rate_hz < SILENT_MAX_HZ:
        return "silent"
    values, counts = np.unique(column, return_counts=True)
    mode = values[int(np.argmax(counts))]
    if mode == values[-1] and mode > 0 and counts.max() >= SATURATED_FRACTION * column.size:
        return "saturated"
    if column.size < 2 * SEGMENTS:  # too short to compare parts
        return None
    parts = np.array_split(column, SEGMENTS)
    means = np.array([p.mean() for p in parts])
    hi, lo = parts[int(np.argmax(means))], parts[int(np.argmin(means))]
    m_hi, m_lo = float(hi.mean()), float(lo.mean())
    stderr = float(np.sqrt(hi.var() / hi.size + lo.var() / lo.size))
    if m_hi > NONSTATIONARY_RATIO * m_lo and m_hi - m_lo > NONSTATIONARY_Z * stderr:
        return "non_stationary"
    return None


def split_warnings(n_bins: Mapping[str, int], bin_s: float, split: Sequence[float]) -> list[str]:
    """A warning for the validation (``"val"``) or test part shorter than
    :data:`MIN_TRUSTED_S`, with its length in seconds and bins, and the fix."""
    out = []
    for key, name in (("val", "validation"), ("test", "test")):
        seconds = n_bins[key] * bin_s
        if seconds < MIN_TRUSTED_S:
            shown = math.floor(seconds * 10.0) / 10.0  # rounded down: 59.95 s never reads 60.0
            out.append(
                f"the {name} part is {shown:.1f} s ({n_bins[key]} bins of {bin_s * 1e3:g} ms), "
                f"under the {MIN_TRUSTED_S:g} s needed to trust its scores: record a longer "
                f"session or give it a larger share with --split (now "
                f"{' '.join(f'{f:g}' for f in split)})"
            )
    return out
