"""Shared builders for the e-prop tests: a cosine-tuned recording, float64 models, the BPTT
oracle, error measures and a learner with SGD defaults."""

import numpy as np
import torch
from factories import cosine_tuned_counts, smooth_velocity

from bci.eprop import (
    EpropConfig,
    EpropLearner,
)
from bci.online import OnlineRSNN, OnlineState
from bci.rsnn import RSNN, RSNNConfig

N_IN, N_HIDDEN, N_OUT = 10, 24, 2


def recording(n_bins: int, seed: int = 0, n_in: int = N_IN) -> tuple[np.ndarray, np.ndarray]:
    """Poisson counts (plus a fractional part, so nothing rounds to a coincidence) cosine-tuned
    to a smooth 2-D velocity; kinematics in 'cm/s' with an offset."""
    rng = np.random.default_rng(seed)
    velocity = smooth_velocity(n_bins)
    counts = cosine_tuned_counts(velocity, n_in, rng) + rng.uniform(0, 1, (n_bins, n_in)) / 3
    return counts, 5.0 * velocity + [2.0, -1.0]


def float64_model(
    *,
    alif_fraction: float = 0.5,
    reset: str = "subtract",
    surrogate: str = "triangle",
    recurrent: bool = True,
    seed: int = 1,
) -> RSNN:
    """A float64 RSNN with stored normalisation and a readout large enough to matter."""
    cfg = RSNNConfig(
        n_in=N_IN,
        n_hidden=N_HIDDEN,
        n_out=N_OUT,
        alif_fraction=alif_fraction,
        reset=reset,
        surrogate=surrogate,
        recurrent=recurrent,
    )
    model = RSNN(cfg, seed=seed).double()
    model.fit_normalisation(*recording(400, seed=seed + 10))
    with torch.no_grad():
        model.w_out.mul_(2.0)
        model.b_out.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
    return model


def bptt_gradient(
    model: RSNN, neural: np.ndarray, kinematics: np.ndarray, has_target: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Autograd gradient of E = 1/2 sum_t |(out - m)/s - (y - m)/s|^2 over bins with targets."""
    model.zero_grad(set_to_none=True)
    trace = model.run(torch.as_tensor(neural)[:, None, :])
    m, s = model.output_mean, model.output_scale
    out = (trace.outputs[:, 0] - m) / s
    target = (torch.as_tensor(kinematics) - m) / s
    mask = torch.as_tensor(has_target, dtype=out.dtype)
    loss = 0.5 * (((out - target) ** 2).sum(dim=1) * mask).sum()
    loss.backward()
    grads = {"input": model.w_in.grad, "w_out": model.w_out.grad, "b_out": model.b_out.grad}
    if model.w_rec.grad is not None:
        grads["recurrent"] = model.w_rec.grad
    return {k: g.detach().numpy().copy() for k, g in grads.items()}, trace.spikes.detach().numpy()


def eprop_gradient(
    model: RSNN, neural: np.ndarray, targets: list, update_every: int = 7, **config: object
) -> dict[str, np.ndarray]:
    decoder = OnlineRSNN(model, dtype=np.float64)
    learner = EpropLearner(decoder, EpropConfig(update_every=update_every, **config))
    return learner.gradient(neural, targets, decoder.initial_state())


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def targets_with_gaps(kinematics: np.ndarray) -> tuple[list, np.ndarray]:
    """Targets as a list with ``None`` for every third bin and for a block of 12 bins."""
    has_target = np.ones(len(kinematics), dtype=bool)
    has_target[::3] = False
    has_target[40:52] = False
    return [y if ok else None for y, ok in zip(kinematics, has_target, strict=True)], has_target


def sgd_learner(model: RSNN, **config: object) -> tuple[EpropLearner, OnlineState]:
    decoder = OnlineRSNN(model, dtype=np.float64)
    settings = {"optimizer": "sgd", "lr": 1e-2, "update_every": 8, "max_update_norm": 1e9,
                "weight_bound": 1e9}  # fmt: skip
    settings.update(config)
    return EpropLearner(decoder, EpropConfig(**settings)), decoder.initial_state()


def learnt_weights(learner: EpropLearner) -> dict[str, np.ndarray]:
    dec = learner.decoder
    n_in = dec.n_in
    return {
        "input": dec.weights[:, :n_in].copy(),
        "recurrent": dec.weights[:, n_in:].copy(),
        "w_out": dec.w_out.copy(),
        "b_out": dec.readout_constants[1].copy(),
    }


def run_bins(learner: EpropLearner, state: OnlineState, neural, targets) -> np.ndarray:
    return np.array(
        [learner.step(x, y, state).copy() for x, y in zip(neural, targets, strict=True)]
    )


def one_window(
    model: RSNN, neural: np.ndarray, kinematics: np.ndarray, **config: object
) -> tuple[EpropLearner, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run a learner with ``config`` over the bins (one window): the learner, the window's
    gradient from a fresh learner (diagonal of the masked recurrent weights zeroed), and the
    weights before and after."""
    learner, state = sgd_learner(model, **config)
    fresh, fresh_state = sgd_learner(model)
    gradient = fresh.gradient(neural, kinematics, fresh_state)
    gradient["recurrent"][np.diag_indices(model.config.n_hidden)] = 0.0
    before = learnt_weights(learner)
    run_bins(learner, state, neural, kinematics)
    return learner, gradient, before, learnt_weights(learner)
