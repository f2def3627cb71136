"""The ``bci`` command: one console script, a subcommand per job.

Each subcommand only parses arguments and calls importable code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

EPILOG = "Run 'bci COMMAND --help' for the inputs, outputs and defaults of each command."


def _configure_logging(verbose: bool) -> None:
    level = "DEBUG" if verbose else os.environ.get("BCI_LOG_LEVEL", "WARNING")
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")


def _print_table(headers: list[str], rows: list[list]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def _training_bar(total: int) -> tuple[tqdm, callable]:
    bar = tqdm(total=total, desc="training SNN", unit="step", leave=False)

    def on_progress(_decoder: str, record: dict[str, float]) -> None:
        bar.update(int(record["step"]) - bar.n)
        bar.set_postfix(loss=f"{record['loss']:.4f}", val_r2=f"{record['val_r2']:.3f}")

    return bar, on_progress


def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.session import save_session
    from streams.synthetic import SyntheticConfig, simulate_session

    config = SyntheticConfig(
        n_channels=args.channels,
        bin_s=args.bin_ms / 1000.0,
        duration_s=args.minutes * 60.0,
        seed=args.seed,
        task=args.task,
    )
    session = simulate_session(config)
    path = save_session(args.out, session)
    print(
        f"wrote {path}: {session.n_bins} bins x {session.n_channels} channels, "
        f"{session.bin_s * 1e3:g} ms bins, {session.duration_s / 60:.1f} min"
    )
    return 0


def cmd_convert_limblab(args: argparse.Namespace) -> int:
    from streams.limblab import load_limblab_session
    from streams.session import save_session

    session = load_limblab_session(args.mat)
    path = save_session(args.out, session)
    print(
        f"wrote {path}: {session.n_bins} bins x {session.n_channels} channels, "
        f"kinematics {session.kinematics_labels}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
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
    _print_table(["decoder", "R2", "R2 (vx vy)", "sparsity", "fit s"], results_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bci",
        description="Real-time BCI decoding with recurrent spiking neural networks.",
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="simulate a population, train the SNN and the baselines, print R2",
        description=(
            "Simulate a synthetic 96-channel motor-cortex session, train the spiking decoder "
            "(BPTT) and the Wiener, Kalman and GRU baselines on the first 70%, and print the "
            "test R2 of each on the last 20%.\n\nexample: bci demo --minutes 6"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--minutes", type=float, default=8.0, help="session length (default 8)")
    demo.add_argument("--steps", type=int, default=600, help="max SNN training steps (600)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--json", help="also write the results to this JSON file")
    demo.set_defaults(func=cmd_demo)

    simulate = sub.add_parser(
        "simulate",
        help="write a synthetic motor-cortex session file (NPZ)",
        description=(
            "Simulate cosine-tuned Poisson channels driven by 2-D reaches and write a session "
            "file (NPZ: neural, timestamps, bin_s, kinematics vx/vy, targets)."
            "\n\nexample: bci simulate --out session.npz --minutes 12"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument("--out", required=True, help="output session file (.npz)")
    simulate.add_argument("--minutes", type=float, default=12.0, help="duration (default 12)")
    simulate.add_argument("--channels", type=int, default=96, help="channels (default 96)")
    simulate.add_argument("--bin-ms", type=float, default=50.0, help="bin width (default 50)")
    simulate.add_argument(
        "--task",
        default="mixed",
        choices=("center_out", "random_target", "mixed"),
        help="reach task (default mixed)",
    )
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    simulate.set_defaults(func=cmd_simulate)

    convert = sub.add_parser(
        "convert-limblab",
        help="convert a Miller-lab binned .mat file to a session file (NPZ)",
        description=(
            "Read a limblab 'binnedData' MATLAB file (struct train_data: timeframe, "
            "spikeratedata in Hz, velocbin) and write a session file with counts per bin "
            "(rate x bin width) and velocity x, y as kinematics.\n\nexample: bci "
            "convert-limblab ../shared/data/neural/Jango_20141203_default_offline_data.mat "
            "jango.npz"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("mat", help="input .mat file")
    convert.add_argument("out", help="output session file (.npz)")
    convert.set_defaults(func=cmd_convert_limblab)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"bci {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
