"""``bci.efficiency`` against hand counts and, where it is installed, against the
``neurobench`` package's own metric code (same names, same definitions). neurobench 2.3.0
pins no torch of its own but pulls torchaudio and tonic: install it with ``pip install
neurobench==2.3.0 --no-deps`` (its metric modules import with torch and snntorch alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bci.efficiency import (
    connection_sparsity,
    recurrent_dense_ops,
    recurrent_efficiency,
    snn_efficiency,
    synaptic_operations_nb,
)
from bci.metrics import footprint_bytes
from bci.rnn_baselines import GRUDecoder
from bci.rsnn import RSNN, RSNNConfig


def test_synaptic_operations_hand_count() -> None:
    w = np.array([[1.0, 0.0, 2.0], [0.5, 0.0, 0.0]])  # fan-out per input: 2, 0, 1
    spikes = np.array([[1, 1, 0], [0, 0, 1]])  # ACs: 2 + 0, then 1
    counts = np.array([[2, 0, 1], [0, 0, 0]])  # MACs: 2 + 1, then none (an all-zero bin is
    # spiking by NeuroBench's test, but costs nothing)
    ops = synaptic_operations_nb([(spikes, w), (counts, w)])
    assert ops == {"Effective_MACs": 1.5, "Effective_ACs": 1.5, "Dense": 12.0}


def test_connection_sparsity_counts_zeros() -> None:
    assert connection_sparsity([np.zeros((2, 2)), np.ones(4)]) == 0.5


def test_recurrent_and_snn_figures_have_neurobench_names() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.poisson(2.0, (300, 6)).astype(float), rng.standard_normal((300, 2))
    gru = GRUDecoder(hidden=8, window=30, burn_in=5, batch_size=4, epochs=1).fit(x, y)
    figures = recurrent_efficiency(gru)
    assert figures["SynapticOperations"]["Dense"] == 3 * 8 * (6 + 8) + 3 * 8 + 2 * 8
    assert figures["Footprint"] == footprint_bytes(gru.parameter_arrays())
    snn = RSNN(RSNNConfig(n_in=6, n_hidden=10, n_out=2, dt_s=0.05), seed=0)
    _, spikes = snn.decode(x)
    nb = snn_efficiency(snn, x, spikes)
    assert set(nb) == {"ActivationSparsity", "SynapticOperations", "Footprint",
                       "ConnectionSparsity"}  # fmt: skip
    assert nb["SynapticOperations"]["Dense"] == 6 * 10 + 10 * 10 + 10 * 2
    assert nb["ConnectionSparsity"] == pytest.approx(10 / 180)  # the zero diagonal of W_rec


# ------------------------------------------------------------------ against neurobench
@pytest.fixture(scope="module")
def neurobench_layers():
    pytest.importorskip("neurobench", reason="neurobench is not installed")
    from neurobench.metrics.utils.layers import single_layer_MACs

    return single_layer_MACs


def test_linear_layer_operations_match_neurobench(neurobench_layers) -> None:
    gen = torch.Generator().manual_seed(1)
    layer = nn.Linear(12, 7)
    with torch.no_grad():
        layer.weight[torch.rand(7, 12, generator=gen) < 0.3] = 0.0
    spikes = (torch.rand(20, 12, generator=gen) < 0.2).float()
    counts = torch.poisson(torch.full((20, 12), 0.8), generator=gen)
    for activity, kind in ((spikes, "Effective_ACs"), (counts, "Effective_MACs")):
        theirs = {"Effective_ACs": 0, "Effective_MACs": 0, "Dense": 0}
        for row in activity:  # bin by bin at batch 1
            ops, spiking = neurobench_layers(row[None, :], layer)
            theirs["Effective_ACs" if spiking else "Effective_MACs"] += ops
            theirs["Dense"] += neurobench_layers(row[None, :], layer, total=True)[0]
        ours = synaptic_operations_nb([(activity.numpy(), layer.weight.detach().numpy())])
        for key in theirs:
            assert ours[key] == pytest.approx(theirs[key] / activity.shape[0]), (kind, key)


@pytest.mark.parametrize(("cell", "torch_cell"), [("gru", nn.GRUCell), ("lstm", nn.LSTMCell)])
def test_recurrent_dense_operations_match_neurobench(
    neurobench_layers,
    cell: str,
    torch_cell: type[nn.Module],
) -> None:
    layer = torch_cell(5, 4)
    h = torch.ones(1, 4)
    state = h if cell == "gru" else (h, h.clone())
    dense, _ = neurobench_layers((torch.ones(1, 5), state), layer, total=True)
    readout = 2 * 4
    assert recurrent_dense_ops(cell, 5, 4, 1, 2) == dense + readout


def test_static_metrics_match_neurobench(neurobench_layers) -> None:
    from neurobench.metrics.static import ConnectionSparsity, Footprint

    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        net[0].weight[:, :2] = 0.0

    class Wrapped:
        def __net__(self) -> nn.Module:
            return net

    weights = [net[0].weight.detach(), net[2].weight.detach()]
    assert connection_sparsity(weights) == pytest.approx(ConnectionSparsity()(Wrapped()), abs=1e-4)
    assert footprint_bytes(net) == Footprint()(Wrapped())
