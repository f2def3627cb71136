"""``bci demo``: live decoding of a simulated population, or an offline decoder comparison."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from bci.atomic import write_text
from service.cli.common import given, positive_seconds, print_table
from service.cli_checks import UsageError, runtime_failures

DESCRIPTION = (
    "--live (what 'make demo' runs): stream a simulated 96-channel motor-cortex "
    "population over LSL (bci-sim, bci-sim-kinematics, bci-sim-targets) and decode "
    "it with the daemon of 'bci serve', adapting by e-prop from bci-sim-kinematics; "
    "dashboard on http://127.0.0.1:8000/. The demo model is trained on first use "
    "(about a minute) and cached in --cache.\n"
    "Without --live: simulate a session, train the spiking decoder (BPTT) and the "
    "Wiener, Kalman and GRU baselines on the first 70%, and print the test R2 of each "
    "on the last 20%.\n\n"
    "example: bci demo --live --port 8000\nexample: bci demo --minutes 6"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to ``sub``."""
    demo = sub.add_parser(
        "demo",
        help="live decoding of a simulated population, or an offline decoder comparison",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--minutes", type=float, help="session length (default 8)")
    demo.add_argument("--steps", type=int, help="max SNN training steps (600)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--json", help="also write the results to this JSON file")
    demo.add_argument(
        "--live",
        action="store_true",
        help="stream the simulated population and decode it live with the dashboard",
    )
    demo.add_argument(
        "--cache",
        default=str(Path.home() / ".cache" / "bci-decoder"),
        help="live: folder of the cached demo model (default ~/.cache/bci-decoder)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="live: address (127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="live: HTTP port (default 8000)")
    demo.add_argument("--seconds", type=float, help="live: stop after this many seconds")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the live demo with ``--live``, else the offline comparison."""
    if args.live:
        return _run_live(args)
    live_only = given(args, "--seconds")
    if live_only:
        raise UsageError(f"{', '.join(live_only)} only applies with --live")
    args.minutes = 8.0 if args.minutes is None else args.minutes
    args.steps = 600 if args.steps is None else args.steps
    from bci.training import TrainConfig
    from calibration.evaluate import EvaluationConfig, evaluate_decoders, results_table
    from streams.synthetic import SyntheticConfig, simulate_session

    print(f"simulating {args.minutes:g} min of a 96-channel motor-cortex population ...")
    session = simulate_session(SyntheticConfig(duration_s=args.minutes * 60.0, seed=args.seed))
    train = TrainConfig(max_steps=args.steps)
    bar, on_progress = _training_bar(train.max_steps)
    with bar:
        evaluation = evaluate_decoders(
            session, EvaluationConfig(train=train, seed=args.seed), on_progress
        )
    results = evaluation.results
    print(f"\ntest part: {results['n_test_bins']} bins (last 20% of the session)")
    print_table(["decoder", "R2", "R2 (vx vy)", "sparsity", "fit s"], results_table(results))
    if args.json:
        write_text(args.json, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _run_live(args: argparse.Namespace) -> int:
    from service.demo import run_live_demo

    offline_only = given(args, "--minutes", "--steps", "--json")
    if offline_only:
        raise UsageError(f"{', '.join(offline_only)} only apply without --live")
    positive_seconds(args.seconds, "--seconds")
    with runtime_failures():  # e.g. the port is taken
        run_live_demo(
            Path(args.cache),
            host=args.host,
            port=args.port,
            seconds=args.seconds,
            seed=args.seed,
        )
    return 0


def _training_bar(total: int) -> tuple[tqdm, Callable[[str, dict[str, float]], None]]:
    bar = tqdm(total=total, desc="training SNN", unit="step", leave=False)

    def on_progress(_decoder: str, record: dict[str, float]) -> None:
        bar.update(int(record["step"]) - bar.n)
        bar.set_postfix(loss=f"{record['loss']:.4f}", val_r2=f"{record['val_r2']:.3f}")

    return bar, on_progress
