"""``bci.checkpoint.load_decoder`` and ``OnlineRSNN.from_arrays``: a checkpoint file becomes an
online decoder without torch, equal to the decoder built from the torch model, and the NumPy
derivation of the per-bin constants mirrors the RSNN's properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bci.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_decoder,
    save_checkpoint,
)
from bci.online import OnlineRSNN
from bci.rsnn import RSNN, RSNNConfig

N_IN, N_HIDDEN, N_OUT = 16, 48, 2
ARRAYS = ("weights", "w_out", "neuron", "normalisation", "readout_constants")


def _model(seed: int = 0, **overrides) -> RSNN:
    """An RSNN with every constant moved off its initial value (as after training)."""
    config = RSNNConfig(**{"n_in": N_IN, "n_hidden": N_HIDDEN, "n_out": N_OUT, **overrides})
    model = RSNN(config, seed=seed)
    rng = np.random.default_rng(seed)
    model.fit_normalisation(
        rng.poisson(2.0, size=(300, N_IN)).astype(np.float64),
        rng.normal(size=(300, N_OUT)) * 4.0 + 1.0,
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in (model.raw_tau_mem, model.raw_threshold, model.b_out, model.w_rec):
            param.add_(0.2 * torch.randn(param.shape, generator=gen))
        model.w_in.mul_(2.5)  # enough drive for spikes
    return model


def _save(tmp_path, model: RSNN):
    return save_checkpoint(tmp_path / "m.safetensors", model, kinematics_labels=["vx", "vy"])


def _run(decoder: OnlineRSNN, neural: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    state = decoder.initial_state()
    outputs, spikes = [], []
    for x in neural:
        outputs.append(decoder.step(x, state).copy())
        spikes.append(state.z.copy())
    return np.array(outputs), np.array(spikes)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"reset": "zero", "alif_fraction": 1.0}, {"recurrent": False, "alif_fraction": 0.0}],
    ids=["default", "alif-reset-zero", "feedforward-lif"],
)
def test_decoder_from_file_equals_decoder_from_torch_model(tmp_path, overrides) -> None:
    model = _model(**overrides)
    path = _save(tmp_path, model)
    loaded = load_decoder(path)
    from_file = loaded.decoder
    from_model = OnlineRSNN(load_checkpoint(path).model)
    assert from_file.dtype == np.float32
    assert loaded.path == path and loaded.manifest.n_channels == N_IN
    for name in ARRAYS:  # one derivation over the same float32 arrays: bitwise equal
        np.testing.assert_array_equal(getattr(from_file, name), getattr(from_model, name))
        np.testing.assert_array_equal(getattr(from_file, name), getattr(OnlineRSNN(model), name))
    assert from_file.surrogate == model.surrogate
    assert from_file.config == model.config

    neural = np.random.default_rng(7).poisson(2.0, size=(3000, N_IN)).astype(np.float32)
    outputs, spikes = _run(from_file, neural)
    rate = spikes.mean()
    assert 0.01 < rate < 0.5, f"spike rate {rate:.3f}: the comparison would be meaningless"
    expected, expected_spikes = load_checkpoint(path).model.decode(neural[:300])
    np.testing.assert_array_equal(spikes[:300], expected_spikes)
    np.testing.assert_allclose(outputs[:300], expected, rtol=0, atol=1e-5)
    again, again_spikes = _run(from_model, neural)
    np.testing.assert_array_equal(again_spikes, spikes)
    np.testing.assert_array_equal(again, outputs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_derived_constants_mirror_the_rsnn_properties(dtype) -> None:
    """Each constant equals the float64 RSNN's property, rounded once to the decoder's dtype
    (torch's float32 arithmetic would round at every step: alpha near the tau bound, where
    dt / tau = 50, differs from it by 4e-6)."""
    model = _model(seed=3, alif_fraction=0.5)
    with torch.no_grad():
        model.raw_threshold[:3] = 25.0  # softplus' linear branch (torch: above 20)
        model.raw_tau_mem[:2] = -30.0  # far below zero: tau at its bound
    decoder = OnlineRSNN(model, dtype=dtype)
    model = model.double()
    rtol = 1e-13 if dtype == np.float64 else 2.0**-24  # float64 libm, or one float32 rounding

    def close(got: np.ndarray, want: torch.Tensor) -> None:
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=rtol, atol=0)

    close(decoder.weights[:, :N_IN], model.w_in)
    close(decoder.weights[:, N_IN:], model.recurrent_weights)
    assert not np.diagonal(decoder.weights[:, N_IN:]).any()
    close(decoder.neuron[0], model.alpha)
    close(decoder.neuron[1], model.threshold)
    np.testing.assert_array_equal(decoder.neuron[1, :3], np.asarray(25.0 + 1e-2, dtype))
    close(decoder.neuron[2], model.beta)
    close(decoder.neuron[3], model.rho)
    close(decoder.neuron[4], 1 - model.rho)
    close(decoder.normalisation[0], model.input_mean)
    close(decoder.normalisation[1], 1 / model.input_scale)
    kappa = torch.full((N_OUT,), model.config.kappa, dtype=torch.float64)
    close(decoder.readout_constants[0], kappa)
    close(decoder.readout_constants[1], model.b_out)
    close(decoder.readout_constants[2], model.output_scale)
    close(decoder.readout_constants[3], model.output_mean)
    assert decoder.neuron.shape == (5, N_HIDDEN) and decoder.weights.dtype == dtype


def test_model_id_is_derived_in_one_place(tmp_path) -> None:
    path = _save(tmp_path, _model())
    loaded = load_decoder(path)
    sha = loaded.manifest.sha256
    assert loaded.model_id == loaded.manifest.model_id == sha[:12]
    assert load_checkpoint(path).model_id == loaded.model_id


def test_zero_input_scale_is_refused_by_load_decoder(tmp_path) -> None:
    model = _model()
    with torch.no_grad():
        model.input_scale[4] = 0.0
    path = _save(tmp_path, model)
    with pytest.raises(CheckpointError, match=r"decoder constant 'normalisation' is not finite"):
        load_decoder(path)


def test_from_arrays_refuses_missing_or_misshapen_arrays() -> None:
    model = _model()
    arrays = {name: t.numpy() for name, t in model.state_dict().items()}
    del arrays["rho"]
    with pytest.raises(ValueError, match=r"lack \['rho'\]"):
        OnlineRSNN.from_arrays(model.config, arrays)
    arrays["rho"] = np.zeros(N_HIDDEN + 1, dtype=np.float32)
    with pytest.raises(ValueError, match="rho"):
        OnlineRSNN.from_arrays(model.config, arrays)


def test_from_arrays_copies_its_input() -> None:
    model = _model()
    arrays = {name: t.numpy().copy() for name, t in model.state_dict().items()}
    decoder = OnlineRSNN.from_arrays(model.config, arrays, dtype=np.float32)
    before = decoder.w_out.copy()
    arrays["w_out"] += 1.0
    np.testing.assert_array_equal(decoder.w_out, before)
