"""``bci.hardware``: budgets counted by hand on a small decoder; quantization levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bci.hardware import hardware_budget, quantize, quantized_model
from bci.rsnn import RSNN, RSNNConfig


def _model() -> RSNN:
    model = RSNN(RSNNConfig(n_in=3, n_hidden=4, n_out=2, alif_fraction=0.0), seed=0)
    with torch.no_grad():
        model.w_in[0, :] = 0.0  # neuron 0 hears no input
        model.w_rec[1, 2] = 0.0
        model.w_out[1, 3] = 0.0
    return model


def test_budget_counts_nonzero_weights_without_the_recurrent_diagonal() -> None:
    model = _model()
    budget = hardware_budget(model)
    assert (budget.hidden_neurons, budget.readout_neurons) == (4, 2)
    assert budget.synapses == {"w_in": 9, "w_rec": 11, "w_out": 7}  # 12 - 3, 16 - 4 - 1, 8 - 1
    assert budget.total_synapses == 27
    # fan-in = inputs + recurrent: neuron 0 has no inputs, neuron 1 lost one recurrent synapse
    assert budget.fan_in_max == 6
    assert budget.fan_in_mean == pytest.approx((0 + 3 + 3 + 2 + 3 + 3 + 3 + 3) / 4)
    w_out = model.w_out.detach().numpy()
    assert budget.weight_range["w_out"] == (w_out[w_out != 0].min(), w_out[w_out != 0].max())


def test_quantize_rounds_to_symmetric_levels() -> None:
    w = torch.tensor([-1.0, -0.3, 0.0, 0.26, 0.5])
    # 3 bits: levels k / 3 for |k| <= 3
    np.testing.assert_allclose(quantize(w, 3).numpy(), [-1.0, -1 / 3, 0.0, 1 / 3, 2 / 3])
    assert len(torch.unique(quantize(torch.randn(1000), 4))) <= 15
    assert torch.equal(quantize(torch.zeros(3), 8), torch.zeros(3))
    with pytest.raises(ValueError, match="bits must be 2 or more"):
        quantize(w, 1)


def test_quantized_model_changes_only_the_weights() -> None:
    model = _model()
    q = quantized_model(model, 4)
    for name in ("w_in", "w_rec", "w_out"):
        levels = torch.unique(getattr(q, name).detach())
        assert len(levels) <= 15
    torch.testing.assert_close(q.threshold, model.threshold)
    torch.testing.assert_close(q.b_out, model.b_out)
    assert not torch.equal(q.w_in, model.w_in)
    assert torch.equal(torch.diagonal(q.w_rec), torch.zeros(4))
