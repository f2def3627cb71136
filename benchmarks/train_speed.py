"""Training-step time of our RSNN against snnTorch's ``RLeaky``, side by side in one run.

Same sizes (96 in / 256 hidden / 2 out), sequence length, batch, loss (MSE on a linear
readout of the spikes) and optimiser (Adam). snnTorch runs the usual loop of
``Linear -> RLeaky`` calls per time step with autograd; ours runs one input matmul for the
whole window, the fused recurrent loop with its hand-written backward, and a one-matmul
leaky readout. Both run with the training runtime's settings (one torch thread by default,
freed buffers kept in the heap: :mod:`bci.runtime`).

Usage: ``python benchmarks/train_speed.py [--threads 1] [--json OUT]``. Target: ours >= 3x faster.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import snntorch
import torch
from snntorch import surrogate
from torch import nn

from bci.rsnn import RSNN, RSNNConfig
from bci.runtime import retain_freed_memory

from _common import print_table, verdict, write_json


class SnnTorchDecoder(nn.Module):
    """Input Linear -> recurrent LIF (``RLeaky``, all-to-all) -> Linear readout per step."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, beta: float) -> None:
        super().__init__()
        self.fc_in = nn.Linear(n_in, n_hidden)
        self.lif = snntorch.RLeaky(
            beta=beta,
            linear_features=n_hidden,
            spike_grad=surrogate.fast_sigmoid(slope=25),
            reset_mechanism="subtract",
        )
        self.fc_out = nn.Linear(n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk, mem = self.lif.init_rleaky()
        outputs = []
        for x_t in x:
            spk, mem = self.lif(self.fc_in(x_t), spk, mem)
            outputs.append(self.fc_out(spk))
        return torch.stack(outputs)


def time_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds = []
    for i in range(reps + 2):
        t0 = time.perf_counter()
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = torch.mean((out - y) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 2:  # first two are warm-up
            seconds.append(time.perf_counter() - t0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-in", type=int, default=96)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--n-out", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both (default 1, as bci.training uses)",
    )
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as bci.training does; applies to both implementations
    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((args.seq_len, args.batch, args.n_in), 2.0), generator=gen)
    y = torch.randn(args.seq_len, args.batch, args.n_out, generator=gen)
    torch.manual_seed(0)
    cfg = {"n_in": args.n_in, "n_hidden": args.hidden, "n_out": args.n_out}
    beta = math.exp(-0.05 / 0.1)
    models = {
        "snnTorch RLeaky (LIF)": SnnTorchDecoder(args.n_in, args.hidden, args.n_out, beta),
        "ours, LIF": RSNN(RSNNConfig(**cfg, alif_fraction=0.0)),
        "ours, 50% ALIF": RSNN(RSNNConfig(**cfg, alif_fraction=0.5)),
    }
    # Interleave repetitions so machine noise hits every model alike.
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.reps // 5):
        for name, model in models.items():
            times[name].extend(time_training(model, x, y, reps=5))
    reference = statistics.median(times["snnTorch RLeaky (LIF)"])
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append(
            {
                "model": name,
                "median_ms": 1e3 * median,
                "min_ms": 1e3 * min(samples),
                "speedup_vs_snntorch": reference / median,
            }
        )
    print(
        f"training step (forward + backward + Adam), {args.n_in}/{args.hidden}/{args.n_out}, "
        f"T={args.seq_len}, batch={args.batch}, torch threads={torch.get_num_threads()}"
    )
    print_table(
        ["model", "median ms", "min ms", "speed-up vs snnTorch"],
        [[r["model"], r["median_ms"], r["min_ms"], r["speedup_vs_snntorch"]] for r in rows],
    )
    ours = [r for r in rows if r["model"].startswith("ours")]
    result = verdict(
        "ours >= 3x snnTorch",
        min(r["speedup_vs_snntorch"] for r in ours) >= 3.0,
        ", ".join(f"{r['model']}: {r['speedup_vs_snntorch']:.2f}x" for r in ours),
    )
    write_json(
        args.json, {"benchmark": "train_speed", **result, "config": vars(args), "results": rows}
    )


if __name__ == "__main__":
    main()
