"""``bci.training.train_rsnn`` on a small generated decoding problem: it learns, it is
reproducible, early stopping keeps the best-validation weights, the loss is the documented
one, the rate regulariser pulls rates to target, and bad input fails before training starts."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
from factories import cosine_tuned_counts

from bci.metrics import r2_score
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, TrainResult, augment_window, train_rsnn

N_IN, N_HIDDEN, DT = 20, 32, 0.05
BASE = TrainConfig(
    window=100, burn_in=20, batch_size=16, max_steps=60, lr=1e-2, eval_every=20, rate_reg=0.0
)


def _recording(n_bins: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Poisson counts (20 channels) cosine-tuned to a smooth 2-D velocity."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_bins) * DT
    velocity = np.stack(
        [
            np.sin(2 * np.pi * 0.13 * t) + 0.5 * np.sin(2 * np.pi * 0.31 * t + 1.0),
            np.cos(2 * np.pi * 0.17 * t) + 0.4 * np.sin(2 * np.pi * 0.07 * t),
        ],
        axis=1,
    )
    preferred = np.random.default_rng(123).uniform(0, 2 * np.pi, N_IN)  # same neurons always
    counts = cosine_tuned_counts(velocity, N_IN, rng, gain=10.0 * DT, preferred=preferred)
    return counts.astype(np.float32), velocity.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"train": _recording(3000, seed=0), "val": _recording(1000, seed=1)}


def _fresh_model() -> RSNN:
    return RSNN(RSNNConfig(n_in=N_IN, n_hidden=N_HIDDEN, dt_s=DT), seed=1)


def _val_r2(model: RSNN, val: tuple[np.ndarray, np.ndarray]) -> float:
    decoded, _ = model.decode(val[0])
    return r2_score(val[1], decoded)[0]


@pytest.fixture(scope="module")
def trained(data) -> tuple[RSNN, TrainResult, list[dict[str, float]]]:
    model = _fresh_model()
    records: list[dict[str, float]] = []
    result = train_rsnn(model, data["train"], data["val"], BASE, callback=records.append)
    return model, result, records


# -- learning --------------------------------------------------------------------------------


def test_training_improves_validation_r2(data, trained) -> None:
    untrained = _fresh_model()
    untrained.fit_normalisation(*data["train"])
    initial = _val_r2(untrained, data["val"])
    model, result, _ = trained
    assert result.best_val_r2 > 0.7
    assert result.best_val_r2 > initial + 0.4, (initial, result.best_val_r2)
    # the returned model is the one that scored best_val_r2
    assert _val_r2(model, data["val"]) == pytest.approx(result.best_val_r2, abs=1e-12)


def test_history_and_callback_records(trained) -> None:
    _, result, records = trained
    assert records == result.history
    assert [r["step"] for r in result.history] == [20.0, 40.0, 60.0]
    assert result.steps == 60
    for record in result.history:
        assert set(record) == {"step", "loss", "mse", "rate_hz", "val_r2"}
        assert all(math.isfinite(v) for v in record.values())
        assert record["loss"] >= record["mse"] > 0
    best = max(result.history, key=lambda r: r["val_r2"])
    assert result.best_val_r2 == best["val_r2"]
    assert result.best_step == best["step"]
    assert result.seconds > 0
    assert result.to_dict()["best_step"] == result.best_step


def test_first_step_loss_is_the_documented_loss(data) -> None:
    """Recompute step 1's loss from the docstring with the same random windows and input
    noise: mean (out~ - y~)^2 after burn-in + rate_reg mean_j (r_j - r*)^2 + l2 |W|^2, where
    W_rec is the masked matrix the network uses (its diagonal is no parameter)."""
    config = TrainConfig(
        window=40, burn_in=10, batch_size=4, max_steps=1, eval_every=1, rate_reg=2.0,
        l2=0.01, target_rate_hz=3.0, input_noise=0.5, seed=5,
    )  # fmt: skip
    model = _fresh_model()
    reference = copy.deepcopy(model)
    result = train_rsnn(model, data["train"], data["val"], config)

    neural, kinematics = data["train"]
    reference.fit_normalisation(neural, kinematics)
    starts = np.random.default_rng(5).integers(0, 3000 - 40 + 1, size=4)
    index = starts[None, :] + np.arange(40)[:, None]  # (W, B)
    with torch.no_grad():
        noisy = augment_window(
            torch.from_numpy(neural[index]),
            reference.input_scale,
            config,
            torch.Generator().manual_seed(5),
        )
        trace = reference.run(noisy)
    out = ((trace.outputs - reference.output_mean) / reference.output_scale).numpy()
    target = (kinematics[index] - reference.output_mean.numpy()) / reference.output_scale.numpy()
    mse = np.mean((out[10:] - target[10:]) ** 2)
    rate = trace.spikes[10:].numpy().mean(axis=(0, 1))
    l2 = sum(
        float((w.detach() ** 2).sum())
        for w in (reference.w_in, reference.recurrent_weights, reference.w_out)
    )
    expected = mse + 2.0 * np.mean((rate - 3.0 * DT) ** 2) + 0.01 * l2

    record = result.history[0]
    assert record["mse"] == pytest.approx(mse, rel=1e-5)
    assert record["rate_hz"] == pytest.approx(rate.mean() / DT, rel=1e-5)
    assert record["loss"] == pytest.approx(expected, rel=1e-5)
    assert record["rate_hz"] > 0.5  # the rate term is not vacuous


# -- reproducibility -------------------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_history(data, trained) -> None:
    model, result, _ = trained
    again = _fresh_model()
    result_again = train_rsnn(again, data["train"], data["val"], BASE)
    for (name, want), (_, got) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(got, want), name
    assert result_again.history == result.history
    assert (result_again.best_step, result_again.best_val_r2) == (
        result.best_step,
        result.best_val_r2,
    )


def test_different_seed_gives_different_weights(data, trained) -> None:
    model, _, _ = trained
    other = _fresh_model()
    config = TrainConfig(**{**BASE.__dict__, "seed": 1})
    train_rsnn(other, data["train"], data["val"], config)
    assert not torch.equal(other.w_in, model.w_in)
    assert not torch.equal(other.w_out, model.w_out)


# -- early stopping --------------------------------------------------------------------------


def test_early_stopping_restores_the_best_validation_weights(data) -> None:
    """A huge learning rate makes validation worse after a few steps; with patience 1 training
    stops at the first evaluation without improvement and returns the weights saved at the
    best evaluation (snapshotted here through the callback)."""
    config = TrainConfig(
        window=50, burn_in=10, batch_size=8, max_steps=40, lr=0.3, grad_clip=100.0,
        eval_every=2, patience=1,
    )  # fmt: skip
    model = _fresh_model()
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def keep(record: dict[str, float]) -> None:
        snapshots[int(record["step"])] = copy.deepcopy(model.state_dict())

    result = train_rsnn(model, data["train"], data["val"], config, callback=keep)
    scores = [r["val_r2"] for r in result.history]
    assert result.steps < config.max_steps, "training should have stopped early"
    assert result.steps == result.best_step + config.patience * config.eval_every
    assert scores[-1] < result.best_val_r2 == max(scores)
    assert result.best_step in snapshots and result.best_step != result.steps
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshots[result.best_step][name]), name
    assert not torch.equal(model.w_in, snapshots[result.steps]["w_in"])
    assert _val_r2(model, data["val"]) == pytest.approx(result.best_val_r2, abs=1e-12)


# -- rate regulariser ------------------------------------------------------------------------


def test_rate_regulariser_pulls_rate_towards_target(data, trained) -> None:
    free_model, _, _ = trained  # rate_reg = 0
    regularised = _fresh_model()
    config = TrainConfig(**{**BASE.__dict__, "rate_reg": 100.0, "target_rate_hz": 1.0})
    train_rsnn(regularised, data["train"], data["val"], config)
    rate_free = free_model.decode(data["val"][0])[1].mean() / DT
    rate_reg = regularised.decode(data["val"][0])[1].mean() / DT
    assert abs(rate_reg - 1.0) < 0.5 * abs(rate_free - 1.0), (rate_free, rate_reg)


# -- bad input -------------------------------------------------------------------------------


def _assert_rejected(data, match: str, *, train=None, val=None, config=BASE) -> None:
    model = _fresh_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match):
        train_rsnn(model, train or data["train"], val or data["val"], config)
    for name, tensor in model.state_dict().items():  # nothing was fitted or trained
        assert torch.equal(tensor, before[name]), name


def test_nan_in_training_data_names_bin_and_channel(data) -> None:
    neural, kinematics = (a.copy() for a in data["train"])
    neural[123, 4] = np.nan
    message = "training neural has a non-finite value (nan) at bin 123, channel 4"
    _assert_rejected(data, re.escape(message), train=(neural, kinematics))


def test_inf_in_validation_kinematics_names_bin_and_channel(data) -> None:
    neural, kinematics = (a.copy() for a in data["val"])
    kinematics[17, 1] = -np.inf
    message = "validation kinematics has a non-finite value (-inf) at bin 17, channel 1"
    _assert_rejected(data, re.escape(message), val=(neural, kinematics))


def test_wrong_channel_count_names_expected_and_received(data) -> None:
    neural, kinematics = data["train"]
    message = "training neural has shape (3000, 19) but expected (any, 20): axis 1 must be 20"
    _assert_rejected(data, re.escape(message), train=(neural[:, :19], kinematics))
    val_neural, val_kinematics = data["val"]
    message = "validation neural has shape (1000, 21) but expected (any, 20)"
    wider = np.concatenate([val_neural, val_neural[:, :1]], axis=1)
    _assert_rejected(data, re.escape(message), val=(wider, val_kinematics))


def test_kinematics_length_mismatch(data) -> None:
    neural, kinematics = data["train"]
    message = (
        "training kinematics has shape (2999, 2) but expected (3000, 2): axis 0 must be 3000, "
        "got 2999"
    )
    _assert_rejected(data, re.escape(message), train=(neural, kinematics[:-1]))


def test_data_shorter_than_one_window_gives_advice(data) -> None:
    neural, kinematics = data["train"]
    message = (
        "training data has 50 bins, fewer than one window of 100; record longer or lower "
        "TrainConfig.window"
    )
    _assert_rejected(data, re.escape(message), train=(neural[:50], kinematics[:50]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 50, "burn_in": 50}, "burn_in (50) must be shorter than window (50)"),
        ({"window": 50, "burn_in": 80}, "burn_in (80) must be shorter than window (50)"),
        ({"burn_in": -1}, "burn_in must be zero or more bins; got -1"),
        ({"window": 0, "burn_in": 0}, "window must be a positive integer; got 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer; got 0"),
        ({"max_steps": 0}, "max_steps must be a positive integer; got 0"),
        ({"eval_every": 0}, "eval_every must be a positive integer; got 0"),
        ({"patience": 0}, "patience must be a positive integer; got 0"),
        ({"lr": 0.0}, "lr must be positive; got 0.0"),
        ({"lr": -1e-3}, "lr must be positive; got -0.001"),
        ({"grad_clip": 0.0}, "grad_clip must be positive; got 0.0"),
        ({"input_noise": -0.1}, "input_noise must be zero or more; got -0.1"),
        ({"channel_dropout": 1.0}, "channel_dropout must lie in [0, 1); got 1.0"),
        ({"channel_dropout": -0.1}, "channel_dropout must lie in [0, 1); got -0.1"),
    ],
)
def test_train_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**kwargs)


def test_train_config_accepts_zero_burn_in() -> None:
    assert TrainConfig(window=10, burn_in=0).burn_in == 0


def test_read_only_training_arrays_are_accepted(data) -> None:
    """Arrays from shared memory (e.g. Ray's object store) are read-only; no warning."""
    neural, kinematics = (a.copy() for a in data["train"])
    for a in (neural, kinematics):
        a.setflags(write=False)
    config = TrainConfig(window=40, burn_in=10, batch_size=4, max_steps=2, eval_every=1)
    result = train_rsnn(_fresh_model(), (neural, kinematics), data["val"], config)
    assert result.steps == 2


def _windows(n_bins: int = 50, batch: int = 200, n_in: int = 40) -> torch.Tensor:
    """Positive counts (T, B, C), so that a silenced channel is the only source of zeros."""
    return torch.rand(n_bins, batch, n_in, generator=torch.Generator().manual_seed(0)) + 1.0


def test_augmentation_off_returns_the_windows_untouched() -> None:
    x = _windows()
    off = TrainConfig(input_noise=0.0, channel_dropout=0.0)
    assert augment_window(x, torch.ones(x.shape[-1]), off, torch.Generator()) is x


def test_channel_dropout_silences_whole_channels_at_the_stated_rate() -> None:
    x = _windows()
    config = TrainConfig(input_noise=0.0, channel_dropout=0.25)
    out = augment_window(x, torch.ones(x.shape[-1]), config, torch.Generator().manual_seed(1))
    silent = (out == 0).all(dim=0)  # (B, C): silent for the whole window
    assert torch.equal(out == 0, silent.expand_as(out))  # a channel is silent in all bins or none
    assert torch.equal(out[:, ~silent], x[:, ~silent])  # the others are untouched
    assert float(silent.float().mean()) == pytest.approx(0.25, abs=0.02)  # 8000 (B, C) pairs
    assert not torch.equal(silent[0], silent[1])  # drawn per window, not once per channel


def test_input_noise_has_the_stated_sd_per_channel_and_is_seeded() -> None:
    x = _windows()
    channel_sd = torch.linspace(0.5, 4.0, x.shape[-1])
    config = TrainConfig(input_noise=0.3)
    out = augment_window(x, channel_sd, config, torch.Generator().manual_seed(2))
    noise_sd = (out - x).std(dim=(0, 1))
    torch.testing.assert_close(noise_sd, 0.3 * channel_sd, rtol=0.02, atol=0)
    again = augment_window(x, channel_sd, config, torch.Generator().manual_seed(2))
    assert torch.equal(out, again)
