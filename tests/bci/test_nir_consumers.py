"""Round trips through independent NIR consumers on a real recording.

A LIF decoder with reset to zero is trained briefly on Jango (``../shared/data``), saved as a
checkpoint, exported in each consumer's dialect, read back with ``nir.read`` and built by the
consumer's own importer (Norse 1.1 ``norse.torch.from_nir``, snnTorch 1.0
``snntorch.import_nir.import_from_nir``). The consumer then decodes 2,000 bins of the session,
one bin per call with its own state, from rest, and must give the checkpoint model's hidden
spikes exactly, outputs within ``OUTPUT_ATOL`` (float32 arithmetic in a different order) and
the same R² to 1e-3.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from bci.checkpoint import load_checkpoint, save_checkpoint
from bci.metrics import r2_score
from bci.nir_export import write_nir
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, train_rsnn
from streams.limblab import load_limblab_session

JANGO = Path(__file__).parents[2] / "../shared/data/neural/Jango_20141203_default_offline_data.mat"
STRETCH = slice(20_000, 22_000)  # 2,000 bins (100 s) the model was not trained on
OUTPUT_ATOL = 1e-4  # kinematics units; float32 in another order (7.6e-6 seen); README repeats it


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A briefly trained 64-neuron LIF decoder (reset to zero) and the stretch to decode."""
    if not JANGO.is_file():
        pytest.skip(f"real data missing: {JANGO.resolve()}")
    session = load_limblab_session(JANGO)
    neural, kinematics = session.neural, session.kinematics
    config = RSNNConfig(
        n_in=session.n_channels, n_hidden=64, alif_fraction=0.0, reset="zero", dt_s=session.bin_s
    )
    model = RSNN(config, seed=0)
    model.fit_normalisation(neural[:12_000], kinematics[:12_000])
    train_rsnn(
        model,
        (neural[:12_000], kinematics[:12_000]),
        (neural[12_000:14_000], kinematics[12_000:14_000]),
        TrainConfig(max_steps=100, eval_every=50),
    )
    path = save_checkpoint(
        tmp_path_factory.mktemp("consumers") / "lif.safetensors",
        model,
        kinematics_labels=session.kinematics_labels,
    )
    return path, neural[STRETCH], kinematics[STRETCH]


def _norse_module(graph: nir.NIRGraph, dt: float) -> torch.nn.Module:
    with warnings.catch_warnings():  # Norse 1.1 uses torch.jit.script and nirtorch.load
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "nirtorch.load is being deprecated", DeprecationWarning)
        from norse.torch import from_nir

        return from_nir(graph, dt=dt)


def _norse(graph: nir.NIRGraph, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    module, state = _norse_module(graph, float(graph.metadata["dt"])), None
    outputs, spikes = [], []
    for bin_ in x:
        y, state = module(bin_[None], state)
        outputs.append(y[0])
        spikes.append(state.cache["hidden"][0])
    return torch.stack(outputs).numpy(), torch.stack(spikes).numpy()


def _snntorch(graph: nir.NIRGraph, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from snntorch.import_nir import import_from_nir
    from snntorch.utils import reset

    module, state = import_from_nir(graph), None
    reset(module)  # snnTorch keeps the membrane on the module
    outputs, spikes = [], []
    for bin_ in x:
        y, state = module(bin_[None], state)
        outputs.append(y[0])
        spikes.append(state["hidden_prev_output"][0])
    return torch.stack(outputs).numpy(), torch.stack(spikes).numpy()


CONSUMERS: dict[str, Callable[[nir.NIRGraph, torch.Tensor], tuple[np.ndarray, np.ndarray]]] = {
    "norse": _norse,
    "snntorch": _snntorch,
}


@pytest.mark.parametrize("dialect", sorted(CONSUMERS))
def test_consumer_decodes_the_session_like_the_checkpoint(
    checkpoint: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path, dialect: str
) -> None:
    path, neural, truth = checkpoint
    model = load_checkpoint(path).model
    decoded, spikes = model.decode(neural)
    assert 0.02 < spikes.mean() < 0.5  # a lively train: resets and recurrence matter

    graph = nir.read(write_nir(path, tmp_path / f"{dialect}.nir", dialect=dialect))
    with torch.no_grad():
        outputs, consumer_spikes = CONSUMERS[dialect](graph, torch.as_tensor(neural))

    np.testing.assert_array_equal(consumer_spikes, spikes)
    np.testing.assert_allclose(outputs, decoded, rtol=0, atol=OUTPUT_ATOL)
    r2_model, r2_consumer = r2_score(truth, decoded)[0], r2_score(truth, outputs)[0]
    assert r2_model > 0.3  # trained, not noise
    assert abs(r2_consumer - r2_model) < 1e-3


# -- the importer bugs the dialects work around (docs/nir_consumers.md) ------------------------


def _graph(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]]) -> nir.NIRGraph:
    ends = {"input": nir.Input(np.array([2])), "output": nir.Output(np.array([2]))}
    return nir.NIRGraph(nodes={**ends, **nodes}, edges=edges)


def test_norse_still_drops_li_nodes() -> None:
    li = nir.LI(tau=np.full(2, 0.02), r=np.ones(2), v_leak=np.zeros(2))
    graph = _graph(
        {"w": nir.Linear(np.eye(2)), "li": li}, [("input", "w"), ("w", "li"), ("li", "output")]
    )
    with torch.no_grad():
        outputs, _ = _norse_module(graph, dt=0.001)(torch.full((1, 2), 3.0))
    np.testing.assert_array_equal(outputs, [[3.0, 3.0]])  # one LI step from rest gives 0.15


def test_snntorch_still_routes_the_input_through_w_rec() -> None:
    lif = nir.LIF(
        tau=np.full(2, 2e-4),
        r=np.full(2, 2.0),
        v_leak=np.zeros(2),
        v_threshold=np.ones(2),
        v_reset=np.zeros(2),
    )
    graph = _graph(
        {"lif": lif, "w_rec": nir.Linear(np.zeros((2, 2)))},
        [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
    )
    from snntorch.import_nir import import_from_nir

    with torch.no_grad():
        spikes, _ = import_from_nir(graph)(torch.full((1, 2), 2.0))
    np.testing.assert_array_equal(spikes, [[0.0, 0.0]])  # input 2 > threshold 1 must spike
