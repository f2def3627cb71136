"""How fast does offline replay decode a session, with and without e-prop adaptation?

A 12-minute synthetic session (96 channels, 50 ms bins: 14,400 bins) is simulated; unless
``--model`` is given, an RSNN (256 hidden) is trained on its first 6 minutes (validation:
minute 6-7) for ``--steps`` BPTT steps. :func:`service.replay.replay_session` then decodes
the whole session through the one decode loop, adaptation off and on (true velocity as target), and
the bins per second, R² and adaptation counters are reported.

Usage: ``python benchmarks/replay_speed.py [--model PATH] [--steps N] [--json OUT]``.
Targets: >= 20,000 bins/s without adaptation, >= 10,000 bins/s with.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bci.checkpoint import save_checkpoint
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, train_rsnn
from service.replay import replay_session
from streams.session import save_session
from streams.synthetic import SyntheticConfig, simulate_session

from _common import print_table, verdict, write_json

BIN_S = 0.05
MINUTES = 12.0
TARGETS = {False: 20_000, True: 10_000}


def _train(session, steps: int, seed: int, path: Path) -> tuple[Path, float]:
    train_end, val_end = round(360 / BIN_S), round(420 / BIN_S)
    neural, velocity = session.neural, session.kinematics
    model = RSNN(RSNNConfig(n_in=neural.shape[1], n_out=velocity.shape[1], dt_s=BIN_S), seed=seed)
    start = time.perf_counter()
    train_rsnn(
        model,
        (neural[:train_end], velocity[:train_end]),
        (neural[train_end:val_end], velocity[train_end:val_end]),
        TrainConfig(max_steps=steps, eval_every=min(50, steps), seed=seed),
    )
    seconds = time.perf_counter() - start
    save_checkpoint(path, model, kinematics_labels=session.kinematics_labels)
    return path, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint to use instead of training one")
    parser.add_argument("--steps", type=int, default=300, help="BPTT steps (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="replays per mode (best kept)")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()

    session = simulate_session(
        SyntheticConfig(duration_s=MINUTES * 60, bin_s=BIN_S, seed=args.seed)
    )
    with tempfile.TemporaryDirectory() as tmp:
        session_path = save_session(Path(tmp) / "session.npz", session)
        train_s = None
        if args.model is None:
            model_path, train_s = _train(
                session, args.steps, args.seed, Path(tmp) / "model.safetensors"
            )
        else:
            model_path = Path(args.model)
        first_s = {}  # warm-up: Numba compilation (or its cache), page cache; not counted
        for adapt in (False, True):
            start = time.perf_counter()
            replay_session(session_path, model_path, adapt=adapt)
            first_s[adapt] = time.perf_counter() - start
        results = {}
        for adapt in (False, True):
            runs = [
                replay_session(session_path, model_path, adapt=adapt) for _ in range(args.repeats)
            ]
            results[adapt] = max(runs, key=lambda r: r["bins_per_second"])
            results[adapt]["bins_per_second_all"] = [r["bins_per_second"] for r in runs]

    rows = []
    for adapt, result in results.items():
        rate = result["bins_per_second"]
        rows.append(
            [
                "e-prop" if adapt else "frozen",
                result["bins"],
                round(rate),
                TARGETS[adapt],
                result["r2"],
                result["adaptation"].get("updates_applied", "-"),
            ]
        )
    print(
        f"{MINUTES:g}-minute synthetic session, {session.n_channels} channels, "
        f"{BIN_S * 1e3:g} ms bins"
        + (f"; model trained {args.steps} steps in {train_s:.0f} s" if train_s else "")
    )
    print_table(
        ["mode", "bins", "bins/s", "target bins/s", "R2", "updates applied"],
        rows,
    )
    verdicts = [
        verdict(
            f"{'e-prop' if adapt else 'frozen'} >= {TARGETS[adapt]:,} bins/s",
            result["bins_per_second"] >= TARGETS[adapt],
            f"{result['bins_per_second']:,.0f} bins/s",
        )
        for adapt, result in results.items()
    ]
    print(
        f"first run, not counted (JIT compilation or its cache, page cache): frozen "
        f"{first_s[False]:.2f} s, e-prop {first_s[True]:.2f} s for the {session.n_bins} bins"
    )
    write_json(
        args.json,
        {
            "benchmark": "replay_speed",
            "session": {"minutes": MINUTES, "channels": session.n_channels, "bin_s": BIN_S},
            "model": args.model,
            "train_steps": None if args.model else args.steps,
            "train_seconds": train_s,
            "targets_bins_per_second": {"frozen": TARGETS[False], "eprop": TARGETS[True]},
            "first_run_seconds": {"frozen": first_s[False], "eprop": first_s[True]},
            "frozen": results[False],
            "eprop": results[True],
            "verdicts": verdicts,
        },
    )


if __name__ == "__main__":
    main()
