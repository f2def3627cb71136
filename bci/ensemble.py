"""An ensemble of RSNN decoders merged into one RSNN that decodes their mean.

``K`` decoders trained on the same recording with different seeds (same inputs, outputs,
bin width and normalisation) become one network of ``K x n_hidden`` neurons:

- input weights stacked, recurrent weights block-diagonal (no synapse between members);
- readout ``W_out = [W_1 ... W_K] / K`` and ``b_out = mean_i b_i``: the leaky readout is
  linear, so ``y[t] = kappa y[t-1] + W_out z[t]`` is the members' mean readout, and the
  output is the mean of the members' outputs (exact up to float rounding);
- neurons reordered so that every LIF neuron comes before every ALIF one, as
  :class:`~bci.rsnn.RSNN` requires.

The merged decoder is a plain :class:`~bci.rsnn.RSNN`: it saves, loads, decodes online,
adapts by e-prop and exports like any other (e-prop may then grow synapses between members).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from bci.metrics import r2_score
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, TrainResult, train_rsnn

__all__ = ["member_seeds", "merge_rsnns", "train_rsnn_ensemble"]

_SHARED_BUFFERS = ("input_mean", "input_scale", "output_mean", "output_scale")


def member_seeds(seed: int, members: int) -> list[int]:
    """The seeds of an ensemble's members: ``seed * members + i``, so ensembles of
    consecutive seeds share no member."""
    return [seed * members + i for i in range(members)]


def merge_rsnns(models: Sequence[RSNN]) -> RSNN:
    """One RSNN whose output is the mean of ``models``' outputs (see the module docstring).

    Raises ``ValueError`` when the models differ in anything but their weights and neuron
    constants (sizes, bin width, readout time constant, neuron model, normalisation).
    """
    if not models:
        raise ValueError("an ensemble needs at least one model")
    first = models[0].config
    for model in models[1:]:
        if model.config != first:
            raise ValueError(
                f"ensemble members differ in their configuration: {model.config} against "
                f"{first}; train every member with the same RSNNConfig"
            )
        for name in _SHARED_BUFFERS:
            if not torch.equal(getattr(model, name), getattr(models[0], name)):
                raise ValueError(
                    f"ensemble members differ in {name}: train every member on the same recording"
                )
    k, h = len(models), first.n_hidden
    n_alif = k * first.n_alif
    config = replace(first, n_hidden=k * h, alif_fraction=n_alif / (k * h))  # n_alif ALIF
    merged = RSNN(config).to(models[0].w_in.dtype)
    # members' LIF neurons first, then their ALIF neurons (RSNN's order)
    lif, alif = [], []
    for i in range(k):
        lif.extend(range(i * h, i * h + h - first.n_alif))
        alif.extend(range(i * h + h - first.n_alif, (i + 1) * h))
    order = torch.as_tensor(lif + alif)
    with torch.no_grad():

        def per_neuron(name: str) -> torch.Tensor:
            return torch.cat([getattr(m, name).detach() for m in models])[order]

        merged.w_in.copy_(per_neuron("w_in"))
        w_rec = torch.block_diag(*(m.w_rec.detach() for m in models))
        merged.w_rec.copy_(w_rec[order][:, order])
        merged.w_out.copy_(torch.cat([m.w_out.detach() for m in models], dim=1)[:, order] / k)
        merged.b_out.copy_(torch.stack([m.b_out.detach() for m in models]).mean(0))
        for name in ("raw_tau_mem", "raw_threshold", "beta", "rho"):
            getattr(merged, name).copy_(per_neuron(name))
        for name in _SHARED_BUFFERS:
            getattr(merged, name).copy_(getattr(models[0], name))
    return merged


def train_rsnn_ensemble(
    config: RSNNConfig,
    members: int,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    train_config: TrainConfig,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> tuple[RSNN, TrainResult]:
    """Train ``members`` RSNNs (seeds :func:`member_seeds` of ``train_config.seed``) one after
    the other, each as :func:`~bci.training.train_rsnn`, and merge them. One member is
    exactly :func:`~bci.training.train_rsnn` with ``train_config.seed``.

    For more than one, the result's ``best_val_r2`` is the merged decoder's validation R²;
    ``steps`` and ``seconds`` are the members' sums, ``best_step`` the latest member's best
    step, and ``history`` every member's records in turn (each with its ``member`` index).
    """
    if members < 1:
        raise ValueError(f"an ensemble needs at least one member; got {members}")
    if members == 1:
        model = RSNN(config, seed=train_config.seed)
        return model, train_rsnn(model, train, val, train_config, callback)
    start = time.perf_counter()
    models, results = [], []
    for i, seed in enumerate(member_seeds(train_config.seed, members)):

        def tagged(record: dict[str, float], i: int = i) -> None:
            if callback is not None:
                callback({**record, "member": float(i)})

        model = RSNN(config, seed=seed)
        results.append(train_rsnn(model, train, val, replace(train_config, seed=seed), tagged))
        models.append(model)
    merged = merge_rsnns(models)
    decoded, _ = merged.decode(np.asarray(val[0], dtype=np.float32))
    val_r2, _ = r2_score(np.asarray(val[1]), decoded)
    history = [{**r, "member": float(i)} for i, res in enumerate(results) for r in res.history]
    return merged, TrainResult(
        best_val_r2=float(val_r2),
        best_step=results[-1].best_step,
        steps=sum(r.steps for r in results),
        seconds=time.perf_counter() - start,
        history=history,
    )
