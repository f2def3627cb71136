"""Tests for ``bci.nir_export``: parameters read back with ``nir.read`` against values recomputed
from the model, refusals of what NIR cannot express, the checkpoint round trip, and a reference
simulation of the written graph against the model's spikes and outputs.

The oracle simulator below knows nothing of the exporter: it walks any graph of Input, Affine,
Linear, LIF, LI, Threshold and Output nodes and applies NIR's node equations with forward Euler
at ``metadata["dt"]``, delaying an edge by one step only where it closes a cycle.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from bci.checkpoint import load_checkpoint, save_checkpoint
from bci.nir_export import euler_constants, export_nir, write_nir
from bci.rsnn import RSNN, RSNNConfig

N_IN, N_HIDDEN, N_OUT = 6, 24, 2


def _counts(n_bins: int, n_in: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.uniform(0.2, 3.0, size=n_in), size=(n_bins, n_in)).astype(np.float64)


def _model(seed: int = 0, **overrides) -> RSNN:
    """A float64 LIF model with reset to zero, non-trivial normalisation and output bias, and
    per-neuron time constants and thresholds that differ (as after training)."""
    cfg = dict(n_in=N_IN, n_hidden=N_HIDDEN, n_out=N_OUT, alif_fraction=0.0, reset="zero")
    cfg.update(overrides)
    model = RSNN(RSNNConfig(**cfg), seed=seed).double()
    rng = np.random.default_rng(seed + 100)
    kinematics = rng.normal(size=(300, cfg["n_out"])) * 2.5 + 1.5
    model.fit_normalisation(_counts(300, cfg["n_in"], seed=seed + 1), kinematics)
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        h = cfg["n_hidden"]
        model.raw_tau_mem.add_(0.05 * torch.randn(h, generator=gen, dtype=torch.float64))
        model.raw_threshold.add_(0.4 * torch.randn(h, generator=gen, dtype=torch.float64))
        model.w_in.mul_(2.0)  # enough drive for a lively spike train
        model.b_out.copy_(torch.linspace(-0.3, 0.4, cfg["n_out"], dtype=torch.float64))
    return model


def _write_read(graph: nir.NIRGraph, path: Path) -> nir.NIRGraph:
    nir.write(path, graph)
    return nir.read(path)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float64).numpy()


def simulate_nir(graph: nir.NIRGraph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``graph`` from rest on ``x`` (T, n_in); returns every node's output (T, n)."""
    dt = float(graph.metadata["dt"])
    preds: dict[str, list[str]] = {name: [] for name in graph.nodes}
    succs: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
        succs[src].append(dst)
    (source,) = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:  # reverse post-order = topological order without back edges
        seen.add(name)
        for nxt in succs[name]:
            if nxt not in seen:
                visit(nxt)
        order.append(name)

    visit(source)
    order.reverse()
    assert set(order) == set(graph.nodes), "every node must be reachable from the input"
    pos = {name: i for i, name in enumerate(order)}
    size = {n: int(np.prod(node.output_type["output"])) for n, node in graph.nodes.items()}
    last = {name: np.zeros(size[name]) for name in graph.nodes}
    v = {name: np.zeros(size[name]) for name in graph.nodes}
    trace = {name: np.zeros((x.shape[0], size[name])) for name in graph.nodes}
    for t in range(x.shape[0]):
        now: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.nodes[name]
            # a predecessor earlier in the order acts within the step; a back edge is delayed
            i = sum(now[p] if pos[p] < pos[name] else last[p] for p in preds[name])
            if isinstance(node, nir.Input):
                y = x[t]
            elif isinstance(node, nir.Affine):
                y = node.weight @ i + node.bias
            elif isinstance(node, nir.Linear):
                y = node.weight @ i
            elif isinstance(node, (nir.LI, nir.LIF)):
                v[name] = v[name] + dt / node.tau * (node.v_leak - v[name] + node.r * i)
                if isinstance(node, nir.LI):
                    y = v[name].copy()
                else:
                    z = v[name] > node.v_threshold
                    v[name] = np.where(z, node.v_reset, v[name])
                    y = z.astype(np.float64)
            elif isinstance(node, nir.Threshold):
                y = (i > node.threshold).astype(np.float64)
            elif isinstance(node, nir.Output):
                y = i
            else:
                raise NotImplementedError(type(node).__name__)
            now[name] = y
            trace[name][t] = y
        last = now
    return trace


# -- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("tau_s", [2e-3, 0.02, 0.1, 3.0, 1e4])
@pytest.mark.parametrize("dt_s", [1e-3, 0.05])
def test_euler_constants_reproduce_the_decay(tau_s: float, dt_s: float) -> None:
    tau, r = euler_constants(tau_s, dt_s)
    assert 1.0 - dt_s / tau == pytest.approx(math.exp(-dt_s / tau_s), rel=1e-12, abs=1e-15)
    assert r * dt_s / tau == pytest.approx(1.0, rel=1e-13)
    x = dt_s / tau_s
    if x < 0.1:  # tau = tau_mem + dt/2 + dt^2 / (12 tau_mem) + O(dt^4 / tau_mem^3)
        assert tau == pytest.approx(tau_s + dt_s / 2 + dt_s * x / 12, rel=1e-6)


def test_written_graph_holds_the_models_parameters(tmp_path: Path) -> None:
    model = _model()
    graph = _write_read(export_nir(model), tmp_path / "model.nir")
    dt = model.config.dt_s
    nodes = graph.nodes
    assert set(nodes) == {
        "input",
        "w_in",
        "hidden",
        "w_rec",
        "w_out",
        "readout",
        "denorm",
        "output",
    }
    assert set(graph.edges) == {
        ("input", "w_in"),
        ("w_in", "hidden"),
        ("hidden", "w_rec"),
        ("w_rec", "hidden"),
        ("hidden", "w_out"),
        ("w_out", "readout"),
        ("readout", "denorm"),
        ("denorm", "output"),
    }
    assert graph.metadata["dt"] == dt
    assert graph.metadata["reset"] == "zero"
    assert json.loads(graph.metadata["model_config"]) == model.config.to_dict()
    assert list(nodes["input"].input_type["input"]) == [N_IN]
    assert list(nodes["output"].output_type["output"]) == [N_OUT]

    # input normalisation folded into W_in: W_in (x - mu) / sigma == weight x + bias
    w_in = _np(model.w_in)
    mu, sigma = _np(model.input_mean), _np(model.input_scale)
    assert not np.allclose(sigma, 1.0) and not np.allclose(mu, 0.0)
    assert isinstance(nodes["w_in"], nir.Affine)
    np.testing.assert_allclose(nodes["w_in"].weight, w_in / sigma, rtol=1e-15)
    np.testing.assert_allclose(nodes["w_in"].bias, -w_in @ (mu / sigma), rtol=1e-13)
    x = _counts(5, N_IN, seed=3)
    np.testing.assert_allclose(
        x @ nodes["w_in"].weight.T + nodes["w_in"].bias, ((x - mu) / sigma) @ w_in.T, atol=1e-12
    )

    lif = nodes["hidden"]
    assert isinstance(lif, nir.LIF)
    alpha = _np(model.alpha)
    assert np.ptp(alpha) > 1e-3  # per-neuron constants really differ
    np.testing.assert_allclose(1.0 - dt / lif.tau, alpha, rtol=1e-12)
    np.testing.assert_allclose(lif.tau, dt / (1.0 - alpha), rtol=1e-12)
    np.testing.assert_allclose(lif.r, 1.0 / (1.0 - alpha), rtol=1e-12)
    np.testing.assert_allclose(lif.r * dt / lif.tau, 1.0, rtol=1e-13)
    np.testing.assert_array_equal(lif.v_threshold, _np(model.threshold))
    assert np.ptp(lif.v_threshold) > 0.1
    np.testing.assert_array_equal(lif.v_leak, 0.0)
    np.testing.assert_array_equal(lif.v_reset, 0.0)
    np.testing.assert_array_equal(lif.metadata["tau_mem_s"], _np(model.tau_mem_s))
    np.testing.assert_allclose(lif.metadata["alpha"], alpha, rtol=1e-15)

    w_rec = nodes["w_rec"].weight
    assert isinstance(nodes["w_rec"], nir.Linear)
    assert np.any(np.diag(_np(model.w_rec)) != 0)  # the raw parameter has a diagonal ...
    np.testing.assert_array_equal(np.diag(w_rec), 0.0)  # ... the export does not
    np.testing.assert_array_equal(w_rec, _np(model.recurrent_weights))

    np.testing.assert_array_equal(nodes["w_out"].weight, _np(model.w_out))
    readout = nodes["readout"]
    assert isinstance(readout, nir.LI)
    kappa = model.config.kappa
    np.testing.assert_allclose(1.0 - dt / readout.tau, kappa, rtol=1e-12)
    np.testing.assert_allclose(readout.r * dt / readout.tau, 1.0, rtol=1e-13)
    np.testing.assert_array_equal(readout.v_leak, 0.0)
    np.testing.assert_allclose(readout.metadata["kappa"], kappa)

    s, m, b = _np(model.output_scale), _np(model.output_mean), _np(model.b_out)
    assert isinstance(nodes["denorm"], nir.Affine)
    np.testing.assert_array_equal(nodes["denorm"].weight, np.diag(s))
    np.testing.assert_allclose(nodes["denorm"].bias, b * s + m, rtol=1e-15)


def test_float32_model_exports_its_own_values_in_float64(tmp_path: Path) -> None:
    model = _model().float()
    graph = _write_read(export_nir(model), tmp_path / "f32.nir")
    assert graph.nodes["w_out"].weight.dtype == np.float64
    np.testing.assert_array_equal(graph.nodes["w_out"].weight, _np(model.w_out))
    np.testing.assert_array_equal(graph.nodes["hidden"].v_threshold, _np(model.threshold))


def test_model_without_recurrence_has_no_recurrent_edge() -> None:
    graph = export_nir(_model(recurrent=False))
    assert "w_rec" not in graph.nodes
    assert not any("w_rec" in edge for edge in graph.edges)


# -- reference simulation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reset", "subtract_reset", "dialect"),
    [
        ("zero", "error", "nir"),
        ("subtract", "threshold", "nir"),
        ("zero", "error", "norse"),
        ("zero", "error", "snntorch"),
    ],
)
def test_simulated_graph_reproduces_model_spikes_and_outputs(
    tmp_path: Path, reset: str, subtract_reset: str, dialect: str
) -> None:
    model = _model(seed=2, reset=reset)
    graph = export_nir(model, subtract_reset=subtract_reset, dialect=dialect)
    graph = _write_read(graph, tmp_path / "sim.nir")
    x = _counts(80, N_IN, seed=5)
    with torch.no_grad():
        trace = model.run(torch.as_tensor(x)[:, None, :])
    spikes = trace.spikes[:, 0].numpy()
    outputs = trace.outputs[:, 0].numpy()
    assert 0.05 < spikes.mean() < 0.6  # a lively train: resets and recurrence matter
    assert (spikes[1:] * spikes[:-1]).sum() > 0  # some neurons fire on consecutive bins

    sim = simulate_nir(graph, x)
    np.testing.assert_array_equal(sim["hidden"], spikes)
    np.testing.assert_allclose(sim["output"], outputs, rtol=1e-9, atol=1e-9)

    # The oracle is sharp: reading tau as tau_mem under Euler changes the spikes.
    membrane = "hidden" if reset == "zero" else "hidden_v"
    graph.nodes[membrane].tau = graph.nodes[membrane].metadata["tau_mem_s"]
    assert not np.array_equal(simulate_nir(graph, x)["hidden"], spikes)


def test_dialects_rescale_the_hidden_layer_and_unroll_the_readout() -> None:
    model = _model()
    dt, alpha, theta = model.config.dt_s, _np(model.alpha), _np(model.threshold)
    plain = export_nir(model).nodes
    norse = export_nir(model, dialect="norse")
    snn = export_nir(model, dialect="snntorch")
    for graph in (norse, snn):
        nodes = graph.nodes
        assert graph.metadata["bin_s"] == dt
        assert isinstance(nodes["readout"], nir.Linear)
        np.testing.assert_array_equal(nodes["readout"].weight, np.eye(N_OUT))
        np.testing.assert_allclose(nodes["readout_leak"].weight, model.config.kappa * np.eye(N_OUT))
        assert {("readout", "readout_leak"), ("readout_leak", "readout")} <= set(graph.edges)
    # Norse reads r as 1: the gain 1/(1 - alpha) moves into the incoming weights
    lif, gain = norse.nodes["hidden"], 1.0 / (1.0 - alpha)
    assert norse.metadata["dt"] == dt
    np.testing.assert_array_equal(lif.r, 1.0)
    np.testing.assert_allclose(1.0 - dt / lif.tau, alpha, rtol=1e-12)
    np.testing.assert_array_equal(lif.v_threshold, theta)
    for name in ("w_in", "w_rec"):
        np.testing.assert_allclose(norse.nodes[name].weight, gain[:, None] * plain[name].weight)
    np.testing.assert_allclose(norse.nodes["w_in"].bias, gain * plain["w_in"].bias)
    # snnTorch integrates at 1e-4 s with one threshold: 1/theta moves into the weights, and the
    # recurrent loop passes through hidden_in (a 3-cycle)
    lif, clock = snn.nodes["hidden"], 1e-4
    assert snn.metadata["dt"] == clock
    np.testing.assert_allclose(1.0 - clock / lif.tau, alpha, rtol=1e-9)
    np.testing.assert_allclose(lif.r * clock / lif.tau, 1.0, rtol=1e-12)
    np.testing.assert_array_equal(lif.v_threshold, 1.0)
    np.testing.assert_allclose(snn.nodes["w_rec"].weight, plain["w_rec"].weight / theta[:, None])
    np.testing.assert_array_equal(snn.nodes["hidden_in"].weight, np.eye(N_HIDDEN))
    assert {("w_in", "hidden_in"), ("hidden_in", "hidden"), ("w_rec", "hidden_in")} <= set(
        snn.edges
    )


def test_subtract_reset_threshold_form(tmp_path: Path) -> None:
    model = _model(reset="subtract")
    graph = _write_read(export_nir(model, subtract_reset="threshold"), tmp_path / "sub.nir")
    nodes = graph.nodes
    assert isinstance(nodes["hidden_v"], nir.LI)
    assert isinstance(nodes["hidden"], nir.Threshold)
    assert ("w_rec", "hidden_v") in graph.edges and ("hidden", "w_rec") in graph.edges
    assert graph.metadata["hidden_form"] == "LI+Threshold"
    theta = _np(model.threshold)
    np.testing.assert_array_equal(nodes["hidden"].threshold, theta)
    np.testing.assert_allclose(1.0 - model.config.dt_s / nodes["hidden_v"].tau, _np(model.alpha))
    w_rec = nodes["w_rec"].weight
    np.testing.assert_array_equal(np.diag(w_rec), -theta)
    np.testing.assert_array_equal(w_rec + np.diag(theta), _np(model.recurrent_weights))
    # without recurrence the reset still needs the self-edge
    no_rec = export_nir(_model(reset="subtract", recurrent=False), subtract_reset="threshold")
    np.testing.assert_array_equal(no_rec.nodes["w_rec"].weight, -np.diag(_np(model.threshold)))


# -- refusals --------------------------------------------------------------------------------


def test_alif_model_is_refused_naming_the_neurons() -> None:
    model = _model(alif_fraction=0.25)
    message = (
        "cannot export to NIR: the model has 6 ALIF (adaptive-threshold) neurons, which NIR "
        "cannot express: recalibrate with --alif-fraction 0"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        export_nir(model)


def test_alif_fraction_with_zero_beta_is_plain_lif() -> None:
    graph = export_nir(_model(alif_fraction=0.5, beta_adapt=0.0))
    assert isinstance(graph.nodes["hidden"], nir.LIF)


def test_subtract_reset_is_refused_by_default() -> None:
    with pytest.raises(ValueError, match=r"resets by subtraction.*recalibrate with --reset zero"):
        export_nir(_model(reset="subtract"))
    with pytest.raises(ValueError, match="or export with --subtract-reset threshold"):
        export_nir(_model(reset="subtract"))
    # both problems at once, on one line
    with pytest.raises(ValueError, match=r"12 ALIF .*; the model resets by subtraction") as info:
        export_nir(_model(reset="subtract", alif_fraction=0.5))
    assert "\n" not in str(info.value)
    # a dialect cannot carry the LI + Threshold form
    with pytest.raises(ValueError, match="which the norse dialect cannot express: recalibrate"):
        export_nir(_model(reset="subtract"), subtract_reset="threshold", dialect="norse")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match=re.escape("expects a bci.rsnn.RSNN, got Linear")):
        export_nir(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown subtract_reset 'maybe'; valid values: error"):
        export_nir(_model(), subtract_reset="maybe")
    with pytest.raises(ValueError, match="unknown NIR dialect 'lava'; valid dialects: nir, norse"):
        export_nir(_model(), dialect="lava")
    model = _model()
    with torch.no_grad():
        model.w_out[0, 3] = float("nan")
    with pytest.raises(ValueError, match="model tensor 'w_out' holds non-finite values"):
        export_nir(model)


# -- checkpoint round trip -------------------------------------------------------------------


def test_write_nir_from_checkpoint(tmp_path: Path) -> None:
    model = _model(seed=4)
    ckpt = save_checkpoint(
        tmp_path / "model.safetensors",
        model,
        kinematics_labels=["vx", "vy"],
        channel_labels=[f"ch{i}" for i in range(N_IN)],
    )
    out = write_nir(ckpt, tmp_path / "model.nir")
    assert out == tmp_path / "model.nir"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.nir", "model.safetensors"]
    graph = nir.read(out)
    loaded = load_checkpoint(ckpt).model  # float32, as the file holds it
    expected = export_nir(loaded)
    for name in ("w_in", "denorm"):
        np.testing.assert_array_equal(graph.nodes[name].weight, expected.nodes[name].weight)
        np.testing.assert_array_equal(graph.nodes[name].bias, expected.nodes[name].bias)
    for name in ("w_rec", "w_out"):
        np.testing.assert_array_equal(graph.nodes[name].weight, expected.nodes[name].weight)
    for field in ("tau", "r", "v_threshold"):
        np.testing.assert_array_equal(
            getattr(graph.nodes["hidden"], field), getattr(expected.nodes["hidden"], field)
        )
    # and the float32 checkpoint is the original model to float32 precision
    np.testing.assert_allclose(graph.nodes["w_rec"].weight, _np(model.recurrent_weights), atol=1e-6)
    tau_from_model = model.config.dt_s / (1.0 - _np(model.alpha))
    np.testing.assert_allclose(graph.nodes["hidden"].tau, tau_from_model, rtol=1e-6)
    meta = graph.metadata
    assert json.loads(meta["kinematics_labels"]) == ["vx", "vy"]
    assert json.loads(meta["channel_labels"]) == [f"ch{i}" for i in range(N_IN)]
    assert meta["checkpoint"] == "model.safetensors"
    assert meta["checkpoint_sha256"] == load_checkpoint(ckpt).manifest.sha256
    assert meta["dt"] == model.config.dt_s


def test_write_nir_refusals_leave_no_file(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "a.safetensors", _model(), kinematics_labels=["vx", "vy"])
    out = tmp_path / "a.nir"
    write_nir(ckpt, out)
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        write_nir(ckpt, out)
    before = out.stat().st_mtime_ns
    assert write_nir(ckpt, out, overwrite=True) == out
    assert out.stat().st_mtime_ns >= before and nir.read(out).metadata["n_hidden"] == N_HIDDEN
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        write_nir(ckpt, tmp_path / "missing" / "a.nir")

    alif = save_checkpoint(
        tmp_path / "b.safetensors", _model(alif_fraction=0.5), kinematics_labels=["vx", "vy"]
    )
    with pytest.raises(ValueError, match="12 ALIF"):
        write_nir(alif, tmp_path / "b.nir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nir", "a.safetensors", "b.safetensors"]
