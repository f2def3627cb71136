"""Export a trained :class:`bci.rsnn.RSNN` to the Neuromorphic Intermediate Representation.

NIR (https://neuroir.org, package ``nir``) describes a network in continuous time; a simulator
or chip picks its own time step. The exported graph (node names are part of the contract)::

    input --> w_in --> hidden --> w_out --> readout --> denorm --> output
                         ^  |
                         |  v
                         w_rec

    w_in     nir.Affine   weight W_in diag(1/sigma), bias -W_in (mu/sigma): input
                          normalisation x~ = (x - mu)/sigma folded into the input weights
    hidden   nir.LIF      tau = dt/(1 - alpha), r = 1/(1 - alpha), v_leak = 0,
                          v_threshold = theta, v_reset = 0
    w_rec    nir.Linear   W_rec (zero diagonal); left out when W_rec is all zero
    w_out    nir.Linear   W_out
    readout  nir.LI       tau = dt/(1 - kappa), r = 1/(1 - kappa), v_leak = 0
    denorm   nir.Affine   weight diag(s), bias b_out s + m: out = (y + b_out) s + m

Time constants (all per neuron, seconds). NIR's LIF is ``tau dv/dt = (v_leak - v) + r I``.
Forward Euler with step ``dt`` (the model's bin width, stored as ``metadata["dt"]``) gives::

    v[t] = v[t-1] + (dt/tau) (v_leak - v[t-1] + r I[t])
         = (1 - dt/tau) v[t-1] + (dt/tau) r I[t]                    (v_leak = 0)

and the model computes ``v[t] = alpha v[t-1] + I[t]`` with ``alpha = exp(-dt/tau_mem)``. The
two agree exactly when ``1 - dt/tau = alpha`` and ``(dt/tau) r = 1``, that is::

    tau = dt / (1 - exp(-dt/tau_mem))  = tau_mem + dt/2 + dt^2/(12 tau_mem) + ...
    r   = tau / dt = 1 / (1 - alpha)

(the same mapping snnTorch's NIR export uses, ``tau = dt/(1 - beta)``, ``r = tau/dt``). So
the exported ``tau`` is *not* ``tau_mem``: with dt = 50 ms and tau_mem = 100 ms it is 127 ms.
A simulator that integrates exactly (exponential Euler, ``v[t] = e^(-dt/tau) v[t-1] +
(1 - e^(-dt/tau)) r I[t]``) reproduces the model with the same ``r`` and ``tau = tau_mem``:
each neuron node's metadata keeps ``tau_mem_s`` and ``alpha`` (``tau_out_s`` and ``kappa``
for the readout) for that reading. ``r`` carries the 1/(1 - alpha) gain, so the weights in
the graph are the checkpoint's weights unchanged.

Spikes and reset. NIR's LIF emits ``z = 1`` where ``v > v_threshold`` and sets ``v = v_reset``
in the same step. The model's reset "zero", ``v[t] = alpha v[t-1] (1 - z[t-1]) + I[t]``, zeroes
the membrane one step later, which yields the same spikes: the model's ``v[t-1] (1 - z[t-1])``
is NIR's post-reset ``v[t-1]``. The model's reset "subtract" (``- theta z[t-1]``, the
default) has no NIR LIF equivalent (NIR resets to a value), so it is refused unless
``subtract_reset="threshold"``: the hidden layer is then written exactly as a ``nir.LI``
membrane (``hidden_v``, same tau and r) followed by a ``nir.Threshold`` (``hidden``, threshold
theta), and the reset rides on the recurrent edge, ``w_rec = W_rec - diag(theta)``. Fewer NIR
back ends accept that form.

Discrete-time reading. The recurrent edge ``hidden -> w_rec -> hidden`` closes a cycle; a
discrete simulator delays such an edge by one step, which is the model's ``W_rec z[t-1]``.
All other edges act within the step (the readout sees ``z[t]``). Spikes are 0/1 per step.

Dialects. The graph above (``dialect="nir"``) is the exact continuous-time form; the NIR
importers of Norse 1.1 and snnTorch 1.0 cannot run it (neither maps ``nir.LI``; Norse reads
``r`` as 1, snnTorch integrates every LIF at 1e-4 s with one threshold per layer). Reset to
zero, ``v_leak = 0`` and ``v_reset = 0`` make the hidden layer invariant to two rescalings,
which the dialects use so that each importer computes the model's spikes exactly:

    norse     r = 1; each hidden neuron's incoming weights (w_in rows and bias, w_rec rows)
              times 1/(1 - alpha). Load with ``norse.torch.from_nir(graph, dt=metadata["dt"])``.
    snntorch  the graph's clock is ``dt = 1e-4`` s per bin (``metadata["dt"]``; the bin width
              stays in ``metadata["bin_s"]``): tau = 1e-4/(1 - alpha), r = 1/(1 - alpha);
              v_threshold = 1 with each neuron's incoming weights divided by its theta.

In both, the readout is a discrete recurrence instead of ``nir.LI``: ``readout`` (nir.Linear,
identity) sums ``w_out`` and ``readout_leak`` (nir.Linear, ``kappa I``) which feeds back from
``readout``; with the one-step delay on the cycle it computes ``y[t] = kappa y[t-1] + W_out
z[t]``, exactly the model's readout. That loop has no dynamics of its own, so it means the
model only to a discrete-time simulator that delays cycles by one step (both importers do).
Only reset to zero exports in a dialect.

Only LIF neurons export: ALIF neurons (nonzero ``beta``) have an adaptive threshold that NIR
cannot express, and the model is refused with a message naming them.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import nir
import numpy as np
import torch

from bci.atomic import write_bytes
from bci.rsnn import RSNN, RSNNConfig

__all__ = [
    "DIALECTS",
    "SNNTORCH_DT_S",
    "SUBTRACT_RESET_MODES",
    "euler_constants",
    "export_nir",
    "write_nir",
]

logger = logging.getLogger(__name__)

SUBTRACT_RESET_MODES: tuple[str, ...] = ("error", "threshold")
DIALECTS: tuple[str, ...] = ("nir", "norse", "snntorch")
SNNTORCH_DT_S = 1e-4  # the step snnTorch's NIR importer integrates every LIF at (seconds)
DISCRETISATION = (
    "forward Euler at step dt: v[t] = v[t-1] + dt/tau * (v_leak - v[t-1] + r * I[t]); "
    "LIF: z[t] = v[t] > v_threshold, then v[t] = v_reset where z[t]; an edge closing a cycle "
    "(the recurrent loop through w_rec, and the readout loop through readout_leak in the norse "
    "and snntorch dialects) carries the previous step's value; spikes are 0/1 per step"
)


def euler_constants(tau_s: np.ndarray | float, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """NIR ``(tau, r)`` whose forward-Euler step ``dt_s`` decays by ``exp(-dt_s / tau_s)``.

    ``tau = dt / (1 - exp(-dt/tau_s))`` and ``r = 1 / (1 - exp(-dt/tau_s))`` (seconds,
    dimensionless), in float64, so that ``1 - dt/tau`` is the model's decay and
    ``(dt/tau) r = 1``. ``1 - exp(-x)`` is computed as ``-expm1(-x)`` to keep long time
    constants accurate.
    """
    tau_s = np.asarray(tau_s, dtype=np.float64)
    leak = -np.expm1(-dt_s / tau_s)
    return dt_s / leak, 1.0 / leak


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy().copy()


def _check_exportable(model: RSNN, subtract_reset: str, dialect: str) -> None:
    if not isinstance(model, RSNN):
        raise TypeError(f"export_nir expects a bci.rsnn.RSNN, got {type(model).__name__}")
    if subtract_reset not in SUBTRACT_RESET_MODES:
        raise ValueError(
            f"unknown subtract_reset {subtract_reset!r}; valid values: "
            f"{', '.join(SUBTRACT_RESET_MODES)}"
        )
    if dialect not in DIALECTS:
        raise ValueError(f"unknown NIR dialect {dialect!r}; valid dialects: {', '.join(DIALECTS)}")
    problems = []
    n_alif = int((model.beta != 0).sum())
    if n_alif:
        problems.append(
            f"the model has {n_alif} ALIF (adaptive-threshold) neurons, which NIR cannot "
            "express: recalibrate with --alif-fraction 0"
        )
    if model.config.reset == "subtract" and dialect != "nir":
        problems.append(
            f"the model resets by subtraction, which the {dialect} dialect cannot express: "
            "recalibrate with --reset zero"
        )
    elif model.config.reset == "subtract" and subtract_reset == "error":
        problems.append(
            "the model resets by subtraction, which NIR's LIF cannot express (it resets to "
            "v_reset): recalibrate with --reset zero, or export with --subtract-reset threshold "
            "(LI + Threshold, which fewer NIR consumers load)"
        )
    if problems:
        raise ValueError("cannot export to NIR: " + "; ".join(problems))
    for name, param in model.state_dict().items():
        if not torch.isfinite(param).all():
            raise ValueError(
                f"cannot export to NIR: model tensor {name!r} holds non-finite values; "
                "fix or retrain the model"
            )


def _hidden_constants(
    tau_mem: np.ndarray, threshold: np.ndarray, dt: float, dialect: str
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(clock, tau, r, v_threshold, gain)`` of the hidden layer in ``dialect``.

    ``clock`` is the graph's step (seconds); ``gain`` (H,) multiplies each hidden neuron's
    incoming weights. Every dialect keeps ``1 - clock/tau = alpha`` and ``r clock/tau gain /
    v_threshold = 1/theta``, so the spikes are the model's (see the module docstring).
    """
    clock = SNNTORCH_DT_S if dialect == "snntorch" else dt
    tau, r = euler_constants(tau_mem * (clock / dt), clock)
    gain = np.ones_like(tau)
    if dialect == "norse":  # Norse's importer reads r as 1
        gain, r = r, np.ones_like(r)
    elif dialect == "snntorch":  # snnTorch's importer takes one threshold per layer
        gain, threshold = 1.0 / threshold, np.ones_like(threshold)
    return clock, tau, r, threshold, gain


def _readout(config: RSNNConfig, dialect: str) -> tuple[dict[str, nir.NIRNode], list]:
    """The leaky readout ``y[t] = kappa y[t-1] + W_out z[t]``: an ``LI`` node in the ``nir``
    dialect, else the discrete recurrence ``readout`` <-> ``readout_leak``."""
    n_out, kappa = config.n_out, config.kappa
    meta = {"tau_out_s": np.full(n_out, config.tau_out_s), "kappa": np.full(n_out, kappa)}
    if dialect == "nir":
        tau, r = euler_constants(meta["tau_out_s"], config.dt_s)
        return {"readout": nir.LI(tau=tau, r=r, v_leak=np.zeros(n_out), metadata=meta)}, []
    nodes = {
        "readout": nir.Linear(weight=np.eye(n_out), metadata=meta),
        "readout_leak": nir.Linear(weight=kappa * np.eye(n_out)),
    }
    return nodes, [("readout", "readout_leak"), ("readout_leak", "readout")]


def _hidden_nodes(
    subtract: bool,
    tau: np.ndarray,
    r: np.ndarray,
    threshold: np.ndarray,
    meta: dict[str, np.ndarray],
    w_rec: np.ndarray,
    dialect: str,
) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]], str, np.ndarray]:
    """The hidden layer: LI + Threshold for reset by subtraction (the reset moved onto the
    recurrent weights' diagonal), else LIF; its nodes, the edges from the input, the node
    the recurrent edge feeds, and the recurrent weights."""
    zeros = np.zeros(len(tau))
    if subtract:
        nodes: dict[str, nir.NIRNode] = {
            "hidden_v": nir.LI(tau=tau, r=r, v_leak=zeros.copy(), metadata=meta),
            "hidden": nir.Threshold(threshold=threshold),
        }
        w_rec = w_rec - np.diag(threshold)  # W_rec has a zero diagonal: the reset is all of it
        return (
            nodes,
            [("input", "w_in"), ("w_in", "hidden_v"), ("hidden_v", "hidden")],
            "hidden_v",
            w_rec,
        )
    nodes = {
        "hidden": nir.LIF(
            tau=tau, r=r, v_leak=zeros.copy(), v_threshold=threshold, v_reset=zeros.copy(),
            metadata=meta,
        )
    }  # fmt: skip
    if dialect == "snntorch":  # a 3-cycle: snnTorch rewires a LIF <-> Linear 2-cycle
        nodes["hidden_in"] = nir.Linear(weight=np.eye(len(tau)))
        edges = [("input", "w_in"), ("w_in", "hidden_in"), ("hidden_in", "hidden")]
        return nodes, edges, "hidden_in", w_rec
    return nodes, [("input", "w_in"), ("w_in", "hidden")], "hidden", w_rec


@torch.no_grad()
def export_nir(model: RSNN, *, subtract_reset: str = "error", dialect: str = "nir") -> nir.NIRGraph:
    """Translate ``model`` into a :class:`nir.NIRGraph` (see the module docstring).

    All arrays are float64 copies of the model's values. ``subtract_reset``: ``"error"``
    (default) refuses a model with reset "subtract"; ``"threshold"`` writes it exactly as
    LI + Threshold with the reset on the recurrent edge. ``dialect``: ``"nir"`` (default),
    ``"norse"`` or ``"snntorch"``, the shape those importers run. Raises ``ValueError`` for
    ALIF neurons, a refused reset or non-finite weights, ``TypeError`` for a non-RSNN model.
    """
    _check_exportable(model, subtract_reset, dialect)
    config = model.config
    dt = float(config.dt_s)
    n_in, n_hidden, n_out = config.n_in, config.n_hidden, config.n_out

    w_in = _array(model.w_in)
    mean, scale = _array(model.input_mean), _array(model.input_scale)
    tau_mem = _array(model.tau_mem_s)
    clock, tau_hidden, r_hidden, threshold, gain = _hidden_constants(
        tau_mem, _array(model.threshold), dt, dialect
    )
    w_in_norm = gain[:, None] * w_in / scale[None, :]
    b_in = -gain * (w_in @ (mean / scale))
    w_rec = gain[:, None] * _array(model.recurrent_weights)

    hidden_meta = {"tau_mem_s": tau_mem, "alpha": np.exp(-dt / tau_mem)}
    nodes: dict[str, nir.NIRNode] = {
        "input": nir.Input(input_type=np.array([n_in])),
        "w_in": nir.Affine(weight=w_in_norm, bias=b_in),
    }
    subtract = config.reset == "subtract"
    hidden_nodes, edges, into_hidden, w_rec = _hidden_nodes(
        subtract, tau_hidden, r_hidden, threshold, hidden_meta, w_rec, dialect
    )
    nodes.update(hidden_nodes)
    if np.any(w_rec != 0):
        nodes["w_rec"] = nir.Linear(weight=w_rec)
        edges += [("hidden", "w_rec"), ("w_rec", into_hidden)]
    nodes["w_out"] = nir.Linear(weight=_array(model.w_out))
    readout_nodes, readout_edges = _readout(config, dialect)
    nodes.update(readout_nodes)
    edges += readout_edges
    out_scale, out_mean = _array(model.output_scale), _array(model.output_mean)
    b_out = _array(model.b_out)
    nodes["denorm"] = nir.Affine(weight=np.diag(out_scale), bias=b_out * out_scale + out_mean)
    nodes["output"] = nir.Output(output_type=np.array([n_out]))
    edges += [
        ("hidden", "w_out"),
        ("w_out", "readout"),
        ("readout", "denorm"),
        ("denorm", "output"),
    ]
    metadata = {
        "source": "bci.rsnn.RSNN",
        "dt": clock,
        "bin_s": dt,
        "time_unit": "s",
        "discretisation": DISCRETISATION,
        "dialect": dialect,
        "reset": config.reset,
        "hidden_form": "LI+Threshold" if subtract else "LIF",
        "n_in": n_in,
        "n_hidden": n_hidden,
        "n_out": n_out,
        "model_config": json.dumps(config.to_dict()),
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write_nir(
    checkpoint_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    subtract_reset: str = "error",
    dialect: str = "nir",
    overwrite: bool = False,
) -> Path:
    """Load the checkpoint at ``checkpoint_path`` and write its NIR graph to ``out_path``.

    The graph is :func:`export_nir`'s (same ``subtract_reset`` and ``dialect``) plus metadata
    from the checkpoint manifest (``kinematics_labels`` and ``channel_labels`` as JSON strings,
    ``checkpoint`` file name, ``checkpoint_sha256``). The file (HDF5, read it with
    ``nir.read``) is written to a temporary file in the same directory and renamed, so it is
    never seen half written. Raises
    ``bci.checkpoint.CheckpointError`` (a ``ValueError``) for a bad checkpoint, ``ValueError``
    for a model NIR cannot express, ``FileExistsError`` if ``out_path`` exists and not
    ``overwrite``, ``FileNotFoundError`` if its directory does not exist. Returns ``out_path``.
    """
    from bci.checkpoint import load_checkpoint

    out = Path(out_path)
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    if not out.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {out}: directory {out.parent} does not exist; create it first"
        )
    checkpoint = load_checkpoint(checkpoint_path)
    graph = export_nir(checkpoint.model, subtract_reset=subtract_reset, dialect=dialect)
    manifest = checkpoint.manifest
    graph.metadata.update(
        {
            "checkpoint": checkpoint.path.name,
            "checkpoint_sha256": manifest.sha256,
            "kinematics_labels": json.dumps(manifest.kinematics_labels),
            "channel_labels": json.dumps(manifest.channel_labels),
        }
    )
    graph_bytes = io.BytesIO()
    nir.write(graph_bytes, graph)
    write_bytes(out, graph_bytes.getvalue())
    logger.info(
        "wrote NIR graph %s from %s (%s dialect, %d hidden %s neurons, dt %g s)",
        out,
        checkpoint.path,
        dialect,
        graph.metadata["n_hidden"],
        graph.metadata["hidden_form"],
        graph.metadata["dt"],
    )
    return out
