"""Is a decoder physically plausible? Weight magnitudes, the output bound and a warm-up decode.

A checkpoint can be valid (finite float32 tensors, consistent manifest) and still drive a
cursor into the wall. Three checks, each raising ``ValueError`` with a one-line reason:

- :func:`check_weight_magnitudes`, at load: the weights act on z-scored inputs and on
  spikes (0 or 1), so a trained decoder's are O(1); any ``|w|`` above
  :data:`MAX_ABS_WEIGHT` is refused. The largest output the readout can ever produce, every
  neuron spiking in every bin, ``(sum_j |W_out[k, j]| / (1 - kappa) + |b_k|) s_k + |m_k|``
  with the output normalisation (mean ``m``, scale ``s``), must be finite in float32.
- :func:`output_bound`, the largest plausible ``|out_k|`` in the kinematics' units: the
  manifest's ``max_speed`` when present (a velocity component never exceeds the speed),
  else ``|m_k| + OUTPUT_BOUND_SCALES * s_k``. Real kinematics stay within about 10 scales
  of their mean (Jango's wrist velocity: 10.4), so 50 leaves a wide margin while 1e37
  is refused. The engine never publishes an output beyond it.
- :func:`check_warm_up`, before a model decodes live: :data:`WARMUP_BINS` bins of the
  stored input means (the training data's average bin), then as many silent (all-zero)
  bins, from the initial state; every output must be finite and within the bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bci.manifest import Manifest
    from bci.online import OnlineRSNN

__all__ = [
    "MAX_ABS_WEIGHT",
    "OUTPUT_BOUND_SCALES",
    "WARMUP_BINS",
    "check_warm_up",
    "check_weight_magnitudes",
    "output_bound",
]

MAX_ABS_WEIGHT = 1e4  # z-scored units; trained decoders stay well below 10
OUTPUT_BOUND_SCALES = 50.0  # output scales from the output mean that are still plausible
WARMUP_BINS = 20  # 1 s at 50 ms bins
WEIGHTS: tuple[str, ...] = ("w_in", "w_rec", "w_out", "b_out")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_weight_magnitudes(tensors: Mapping[str, np.ndarray], kappa: float) -> None:
    """Raise ``ValueError`` for a weight beyond :data:`MAX_ABS_WEIGHT` or a readout whose
    largest possible output overflows float32 (see the module docstring)."""
    for name in WEIGHTS:
        values = np.abs(np.asarray(tensors[name], dtype=np.float64))
        if values.size and values.max() > MAX_ABS_WEIGHT:
            index = tuple(int(i) for i in np.unravel_index(np.argmax(values), values.shape))
            raise ValueError(
                f"weight {name}{list(index)} is {float(values[index]):.3g}, beyond the "
                f"{MAX_ABS_WEIGHT:g} a decoder of z-scored inputs can plausibly need"
            )
    w_out = np.abs(np.asarray(tensors["w_out"], dtype=np.float64))
    readout = w_out.sum(axis=1) / (1.0 - kappa) + np.abs(np.asarray(tensors["b_out"], np.float64))
    scale = np.abs(np.asarray(tensors["output_scale"], dtype=np.float64))
    worst = readout * scale + np.abs(np.asarray(tensors["output_mean"], dtype=np.float64))
    if not np.all(worst < _FLOAT32_MAX):
        k = int(np.argmax(worst))
        raise ValueError(
            f"output {k} can reach {worst[k]:.3g} with output_scale {scale[k]:.3g}, beyond "
            "float32; the output normalisation is broken"
        )


def output_bound(manifest: Manifest) -> np.ndarray:
    """The largest plausible ``|out_k|`` per output (K,), in the kinematics' units: the
    manifest's ``max_speed`` when present, else ``|m_k| + OUTPUT_BOUND_SCALES * s_k``."""
    norm = manifest.normalisation
    mean = np.abs(np.asarray(norm.output_mean, dtype=np.float64))
    if manifest.max_speed is not None:
        return np.full(mean.shape, float(manifest.max_speed))
    return mean + OUTPUT_BOUND_SCALES * np.asarray(norm.output_scale, dtype=np.float64)


def check_warm_up(decoder: OnlineRSNN, manifest: Manifest, bins: int = WARMUP_BINS) -> None:
    """Decode ``bins`` bins of the stored input means, then ``bins`` silent bins, from a fresh
    state; raise ``ValueError`` at the first output that is non-finite or beyond
    :func:`output_bound`. ``decoder`` is not changed."""
    bound = output_bound(manifest)
    labels = manifest.kinematics_labels
    source = "max_speed" if manifest.max_speed is not None else "output normalisation"
    means = np.asarray(manifest.normalisation.input_mean, dtype=decoder.dtype)
    state = decoder.initial_state()
    for t in range(2 * bins):
        x = means if t < bins else np.zeros_like(means)
        out = decoder.step(x, state)
        bad = ~(np.abs(out) <= bound)  # NaN compares False: counted as bad
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            what = "the stored input means" if t < bins else "silent (all-zero) bins"
            raise ValueError(
                f"warm-up decode of {what} gave {labels[k]} = {float(out[k]):.3g} at bin "
                f"{t % bins}, beyond the bound {bound[k]:.3g} (from the {source}); retrain "
                "or fix the model"
            )
