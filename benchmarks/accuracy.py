"""Decoding accuracy of the SNN against the Wiener, Kalman and GRU baselines on one session.

Chronological 70/10/20 train/validation/test split; every decoder is trained on the
kinematics in the file and scored on the test part (R² as in NeuroBench: per dimension
1 - SSE / (n var), then averaged).

Usage::

    python benchmarks/accuracy.py --session PATH.npz [--json OUT]

Targets: synthetic population (96 channels, 50 ms bins, 12 min; ``bci simulate``):
SNN R² >= 0.7 and >= Wiener and Kalman. Jango (``bci convert-limblab``): SNN R² >= the
better of Wiener and Kalman, within 0.03 of the GRU or above it, activation sparsity >= 0.9.
"""

from __future__ import annotations

import argparse
import json

from bci.training import TrainConfig
from calibration.evaluate import DECODERS, EvaluationConfig, evaluate_decoders
from streams.session import load_session

from _common import print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", required=True, help="session file (.npz)")
    parser.add_argument("--json", help="write results to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=TrainConfig().max_steps, help="max SNN training steps"
    )
    parser.add_argument(
        "--decoders",
        default=",".join(DECODERS),
        help="comma-separated subset of " + ",".join(DECODERS),
    )
    args = parser.parse_args()

    session = load_session(args.session)
    config = EvaluationConfig(
        decoders=tuple(args.decoders.split(",")),
        train=TrainConfig(max_steps=args.steps),
        seed=args.seed,
    )
    results = evaluate_decoders(session, config).results
    print(
        f"{args.session}: {session.n_bins} bins x {session.n_channels} channels, "
        f"test {results['n_test_bins']} bins"
    )
    rows = []
    for name in config.decoders:
        r = results[name]
        rows.append(
            [
                name,
                r["r2"],
                " ".join(f"{v:.3f}" for v in r["r2_per_dim"]),
                r.get("activation_sparsity", "-"),
                r.get("synops_per_bin", "-"),
                r["footprint_bytes"],
                r["fit_seconds"],
            ]
        )
    print_table(["decoder", "R²", "R² per dim", "sparsity", "synops/bin", "bytes", "fit s"], rows)
    write_json(args.json, {"benchmark": "accuracy", "session": args.session, **results})
    if not args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
