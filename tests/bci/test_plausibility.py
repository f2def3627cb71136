"""Tests for bci.plausibility: the output bound and the warm-up decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bci.checkpoint import load_checkpoint, save_checkpoint
from bci.online import OnlineRSNN
from bci.plausibility import OUTPUT_BOUND_SCALES, WARMUP_BINS, check_warm_up, output_bound
from bci.rsnn import RSNN, RSNNConfig


@pytest.fixture
def checkpoint(tmp_path):
    model = RSNN(RSNNConfig(n_in=6, n_hidden=16, n_out=2), seed=0)
    rng = np.random.default_rng(0)
    kinematics = rng.normal(size=(200, 2)) * [4.0, 9.0] + [1.0, -3.0]
    model.fit_normalisation(rng.poisson(3.0, size=(200, 6)).astype(np.float64), kinematics)
    with torch.no_grad():
        model.w_in.mul_(3.0)
    path = save_checkpoint(tmp_path / "m.safetensors", model, kinematics_labels=("vx", "vy"))
    return load_checkpoint(path)


def test_bound_from_normalisation_or_max_speed(checkpoint) -> None:
    norm = checkpoint.manifest.normalisation
    expected = np.abs(norm.output_mean) + OUTPUT_BOUND_SCALES * np.array(norm.output_scale)
    np.testing.assert_allclose(output_bound(checkpoint.manifest), expected)
    fast = checkpoint.manifest.model_copy(update={"max_speed": 30.0})
    assert output_bound(fast).tolist() == [30.0, 30.0]


def test_plausible_model_passes_and_decoder_state_is_untouched(checkpoint) -> None:
    decoder = OnlineRSNN(checkpoint.model)
    weights = decoder.weights.copy()
    check_warm_up(decoder, checkpoint.manifest)
    np.testing.assert_array_equal(decoder.weights, weights)


def test_output_beyond_bound_is_refused(checkpoint) -> None:
    decoder = OnlineRSNN(checkpoint.model)
    decoder.readout_constants[1, 1] = 1e6  # b_out of vy: every output is ~1e6 scales off
    with pytest.raises(ValueError, match=r"warm-up decode of the stored input means gave vy = "
                       r"[0-9.e+]+ at bin 0, beyond the bound [0-9.]+ \(from the output "
                       r"normalisation\)"):  # fmt: skip
        check_warm_up(decoder, checkpoint.manifest)
    decoder = OnlineRSNN(checkpoint.model)
    with pytest.raises(ValueError, match=r"beyond the bound 1e-06 \(from the max_speed\)"):
        check_warm_up(decoder, checkpoint.manifest.model_copy(update={"max_speed": 1e-6}))


def test_non_finite_output_is_refused(checkpoint) -> None:
    decoder = OnlineRSNN(checkpoint.model)
    decoder.readout_constants[3, 0] = np.nan  # the output mean of vx
    with pytest.raises(ValueError, match="gave vx = nan at bin 0"):
        check_warm_up(decoder, checkpoint.manifest)


def test_silent_bins_are_decoded_too(checkpoint) -> None:
    decoder = OnlineRSNN(checkpoint.model)
    calls = []
    step = decoder.step
    decoder.step = lambda x, state: calls.append(x.copy()) or step(x, state)  # type: ignore[method-assign]
    check_warm_up(decoder, checkpoint.manifest, bins=3)
    means = np.asarray(checkpoint.manifest.normalisation.input_mean, np.float32)
    assert [c.tolist() for c in calls] == [means.tolist()] * 3 + [[0.0] * 6] * 3
    assert WARMUP_BINS >= 10
