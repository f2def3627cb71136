"""``bci.ensemble``: K trained RSNNs merged into one RSNN that decodes their mean, offline,
online and through a checkpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import cosine_tuned_counts, smooth_velocity

from bci.checkpoint import load_decoder, save_checkpoint
from bci.ensemble import member_seeds, merge_rsnns, train_rsnn_ensemble
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, train_rsnn

N_IN, N_HIDDEN, N_BINS = 6, 10, 300


def _recording(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    velocity = smooth_velocity(N_BINS)
    counts = cosine_tuned_counts(velocity, N_IN, np.random.default_rng(seed), gain=0.8)
    return counts, 5.0 * velocity + [2.0, -1.0]


def _members(alif_fraction: float = 0.4, k: int = 3) -> list[RSNN]:
    """``k`` float64 RSNNs with the same normalisation and different weights and neurons."""
    config = RSNNConfig(n_in=N_IN, n_hidden=N_HIDDEN, alif_fraction=alif_fraction, tau_spread=2)
    neural, kinematics = _recording()
    models = []
    for seed in range(k):
        model = RSNN(config, seed=seed).double()
        model.fit_normalisation(neural, kinematics)
        with torch.no_grad():  # weights that make every member spike and differ in bias
            model.w_in.mul_(3.0)
            model.b_out.normal_(generator=torch.Generator().manual_seed(seed))
        models.append(model)
    return models


@pytest.mark.parametrize("alif_fraction", [0.0, 0.4, 1.0])
def test_merged_decodes_the_members_mean_with_lif_neurons_first(alif_fraction: float) -> None:
    members = _members(alif_fraction)
    merged = merge_rsnns(members)
    neural, _ = _recording(seed=1)
    outputs, spikes = merged.decode(neural)
    decoded = [m.decode(neural) for m in members]
    assert 0.02 < spikes.mean() < 0.5
    mean = np.mean([d[0] for d in decoded], axis=0)
    np.testing.assert_allclose(outputs, mean, rtol=0, atol=1e-12)
    # the same spikes, neuron for neuron, as a spike count per bin
    np.testing.assert_array_equal(spikes.sum(1), sum(d[1].sum(1) for d in decoded))
    config = merged.config
    assert config.n_hidden == 3 * N_HIDDEN and config.n_alif == 3 * members[0].config.n_alif
    beta = merged.beta.numpy()
    assert (beta[: config.n_hidden - config.n_alif] == 0).all()
    assert (beta[config.n_hidden - config.n_alif :] != 0).all()
    # no synapse between members: 3 blocks of N_HIDDEN^2 at most
    assert int((merged.w_rec != 0).sum()) <= 3 * N_HIDDEN**2


def test_merged_checkpoint_decodes_online_as_offline(tmp_path: Path) -> None:
    merged = merge_rsnns([m.float() for m in _members()])
    path = save_checkpoint(
        tmp_path / "ensemble.safetensors", merged, kinematics_labels=("vx", "vy")
    )
    online = load_decoder(path).decoder
    neural, _ = _recording(seed=2)
    state = online.initial_state()
    outputs = np.array([online.step(x, state).copy() for x in neural])
    np.testing.assert_allclose(outputs, merged.decode(neural)[0], rtol=0, atol=1e-4)


def test_members_that_differ_are_refused() -> None:
    a, b = _members(k=2)
    with torch.no_grad():
        b.input_scale.mul_(2.0)
    with pytest.raises(ValueError, match=r"differ in input_scale.*same recording"):
        merge_rsnns([a, b])
    other = RSNN(replace(a.config, n_hidden=N_HIDDEN + 1)).double()
    with pytest.raises(ValueError, match="differ in their configuration"):
        merge_rsnns([a, other])
    with pytest.raises(ValueError, match="at least one"):
        merge_rsnns([])


def test_one_member_is_plain_training_and_more_are_merged_from_their_seeds() -> None:
    neural, kinematics = _recording()
    train, val = (neural[:200], kinematics[:200]), (neural[200:], kinematics[200:])
    config = RSNNConfig(n_in=N_IN, n_hidden=N_HIDDEN)
    budget = TrainConfig(window=40, burn_in=5, batch_size=4, max_steps=20, eval_every=10, seed=3)
    single, result = train_rsnn_ensemble(config, 1, train, val, budget)
    plain = RSNN(config, seed=3)
    expected = train_rsnn(plain, train, val, budget)
    assert result.history == expected.history
    for name, value in plain.state_dict().items():
        assert torch.equal(single.state_dict()[name], value), name

    assert member_seeds(3, 2) == [6, 7]
    records: list[dict[str, float]] = []
    merged, result = train_rsnn_ensemble(config, 2, train, val, budget, records.append)
    members = []
    for seed in member_seeds(3, 2):
        members.append(RSNN(config, seed=seed))
        train_rsnn(members[-1], train, val, replace(budget, seed=seed))
    np.testing.assert_allclose(
        merged.decode(val[0])[0], merge_rsnns(members).decode(val[0])[0], rtol=0, atol=1e-6
    )
    assert {r["member"] for r in records} == {0.0, 1.0} and result.history == records
    assert result.steps == 40 and merged.config.n_hidden == 2 * N_HIDDEN
    with pytest.raises(ValueError, match="at least one member"):
        train_rsnn_ensemble(config, 0, train, val, budget)
