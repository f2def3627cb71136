"""Online step latency of the RSNN decoder against a matrix-vector floor.

For each size the script times, bin by bin and side by side in one run:
- ``floor``: one NumPy matrix-vector product over the same weight bytes as the step
  (``W = [W_in | W_rec]``, (H, C + H) float32) — no decoder can do less memory traffic;
- ``online step``: :meth:`bci.online.OnlineRSNN.step` (the online face the daemon uses:
  the matvec plus one compiled Numba kernel for the neuron updates and the readout);
- ``online step + tracking``: the same with the input normalisation following the stream
  (:class:`bci.input_tracking.InputTracker`, ``bci serve --track-inputs``) before each step;
- ``torch step``: the sequence forward at T = 1, batch 1, under ``no_grad`` (why not torch).

Usage: ``python benchmarks/step_latency.py [--steps 20000] [--json OUT]``.
Target: online step p50 <= 2x floor p50.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bci.input_tracking import InputTracker
from bci.online import OnlineRSNN
from bci.rsnn import RSNN, RSNNConfig
from bci.runtime import single_threaded_blas

from _common import percentiles_us, print_table, time_calls, verdict, write_json

# the default decoder, a larger one, and `bci calibrate --members 3` and `--members 5` (256-
# neuron SNNs merged: the recurrent matrix is block-diagonal but stored and multiplied dense)
SIZES = ((96, 256, 2), (192, 512, 2), (96, 768, 2), (96, 1280, 2))


def bench_size(n_in: int, n_hidden: int, n_out: int, steps: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(steps, n_in)).astype(np.float32)
    model = RSNN(RSNNConfig(n_in=n_in, n_hidden=n_hidden, n_out=n_out), seed=seed)
    model.fit_normalisation(counts, rng.normal(size=(steps, n_out)).astype(np.float32))
    online = OnlineRSNN(model)
    state = online.initial_state()
    weights = online.weights.copy()
    vec = np.ones(weights.shape[1], dtype=np.float32)
    out = np.empty(weights.shape[0], dtype=np.float32)
    torch_x = torch.from_numpy(counts)[:, None, None, :]
    torch_steps = min(steps, 5000)
    torch_state = [model.initial_state(1)]
    tracked = OnlineRSNN(model)
    tracked_state = tracked.initial_state()
    tracker = InputTracker(tracked.normalisation, tracked.dt_s, tau_s=60.0)

    def tracked_step(i: int) -> None:
        tracker.observe(counts[i])
        tracked.step(counts[i], tracked_state)

    def torch_step(i: int) -> None:
        _, torch_state[0] = model(torch_x[i], torch_state[0])

    results = []
    for name, fn, n in (
        ("floor (matvec)", lambda i: np.matmul(weights, vec, out=out), steps),
        ("online step", lambda i: online.step(counts[i], state), steps),
        ("online step + tracking", tracked_step, steps),
        ("torch step", torch_step, torch_steps),
    ):
        with torch.no_grad():
            fn(0)  # warm-up
            results.append({"method": name, "steps": n, **percentiles_us(time_calls(fn, n))})
    floor = results[0]["p50_us"]
    for r in results:
        r.update(
            size=f"{n_in}/{n_hidden}/{n_out}",
            weight_bytes=int(weights.nbytes),
            ratio_to_floor_p50=r["p50_us"] / floor,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="bins per method (>= 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()
    single_threaded_blas()  # as the decoding loop runs
    rows = []
    for size in SIZES:
        rows.extend(bench_size(*size, steps=args.steps, seed=args.seed))
    print_table(
        ["size (in/hidden/out)", "method", "steps", "p50 µs", "p99 µs", "max µs", "p50 / floor"],
        [
            [
                r["size"],
                r["method"],
                r["steps"],
                r["p50_us"],
                r["p99_us"],
                r["max_us"],
                r["ratio_to_floor_p50"],
            ]
            for r in rows
        ],
    )
    online = [r for r in rows if r["method"] == "online step"]
    worst = max(r["ratio_to_floor_p50"] for r in online)
    result = verdict(
        "online step p50 <= 2x floor p50",
        worst <= 2.0,
        ", ".join(f"{r['size']}: {r['ratio_to_floor_p50']:.2f}x" for r in online),
    )
    write_json(args.json, {"benchmark": "step_latency", **result, "results": rows})


if __name__ == "__main__":
    main()
