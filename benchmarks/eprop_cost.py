"""Per-bin cost of online e-prop (K = 10) against inference only, side by side in one run.

For each size (96/256/2 and 192/512/2, half the hidden neurons ALIF) the script times, bin
by bin over the same inputs:
- ``inference``: :meth:`bci.online.OnlineRSNN.step`;
- ``e-prop, K=10``: :meth:`bci.eprop.EpropLearner.step` with a target every bin, learning
  input, recurrent and readout weights (the window's update lands on every tenth bin; the
  mean per bin includes it);
- ``per-bin traces``: inference plus :func:`bci.eprop.reference_step`, the direct
  formulation that reads and writes every (H, I + H) trace array each bin (context).

Usage: ``python benchmarks/eprop_cost.py [--bins 20000] [--json OUT]``.
Target: e-prop mean cost per bin <= 1.5x inference.
"""

from __future__ import annotations

import argparse

import numpy as np

from bci.eprop import EpropConfig, EpropLearner, Traces, reference_step
from bci.online import OnlineRSNN
from bci.rsnn import RSNN, RSNNConfig
from bci.runtime import single_threaded_blas

from _common import percentiles_us, print_table, time_calls, verdict, write_json

SIZES = ((96, 256, 2), (192, 512, 2))


def bench_size(n_in: int, n_hidden: int, n_out: int, bins: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(bins, n_in)).astype(np.float32)
    targets = rng.normal(size=(bins, n_out)).astype(np.float32)
    model = RSNN(RSNNConfig(n_in=n_in, n_hidden=n_hidden, n_out=n_out), seed=seed)
    model.fit_normalisation(counts, targets)

    decoder = OnlineRSNN(model)
    state = decoder.initial_state()
    learner = EpropLearner(OnlineRSNN(model), EpropConfig(update_every=10, lr=1e-4))
    learner_state = learner.decoder.initial_state()
    naive_decoder = OnlineRSNN(model)
    naive_state = naive_decoder.initial_state()
    traces = Traces.zeros(n_hidden, n_in + n_hidden, np.float32)
    grad = np.zeros_like(traces.ev)
    ones = np.ones(n_hidden, dtype=np.float32)
    rho = naive_decoder.neuron[3]
    beta = naive_decoder.neuron[2]

    presynaptic = np.zeros(n_in + n_hidden, dtype=np.float32)  # [x~; z_prev] of each bin
    scaled = np.zeros(n_hidden, dtype=np.float32)
    out = np.zeros(n_out, dtype=np.float32)

    def naive(i: int) -> None:
        naive_decoder.advance(counts[i], naive_state, presynaptic, scaled, out)
        reference_step(traces, presynaptic, ones, ones, ones, rho, beta, 0.9, grad)

    methods = (
        ("inference", lambda i: decoder.step(counts[i], state), bins),
        ("e-prop, K=10", lambda i: learner.step(counts[i], targets[i], learner_state), bins),
        ("per-bin traces", naive, min(bins, 2000)),
    )
    results = []
    for name, fn, n in methods:
        for i in range(30):  # compile the kernels and run three windows first
            fn(i)
        samples = time_calls(fn, n)
        results.append(
            {
                "method": name,
                "bins": n,
                "mean_us": float(samples.mean() / 1e3),
                **percentiles_us(samples),
            }
        )
    base = results[0]["mean_us"]
    for r in results:
        r.update(size=f"{n_in}/{n_hidden}/{n_out}", ratio_to_inference_mean=r["mean_us"] / base)
    status = learner.status
    assert status.updates_applied > 0 and status.updates_rejected == 0, status
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()
    single_threaded_blas()  # as the decoding loop runs
    rows = []
    for size in SIZES:
        rows.extend(bench_size(*size, bins=args.bins, seed=args.seed))
    print_table(
        ["size", "method", "bins", "mean µs", "p50 µs", "p99 µs", "mean / inference"],
        [
            [r["size"], r["method"], r["bins"], r["mean_us"], r["p50_us"], r["p99_us"],
             r["ratio_to_inference_mean"]]
            for r in rows
        ],
    )  # fmt: skip
    eprop = [r for r in rows if r["method"] == "e-prop, K=10"]
    result = verdict(
        "e-prop mean cost per bin <= 1.5x inference",
        max(r["ratio_to_inference_mean"] for r in eprop) <= 1.5,
        ", ".join(f"{r['size']}: {r['ratio_to_inference_mean']:.2f}x" for r in eprop),
    )
    write_json(args.json, {"benchmark": "eprop_cost", **result, "results": rows})


if __name__ == "__main__":
    main()
