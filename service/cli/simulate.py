"""``bci simulate``: write a synthetic session file, or stream it over LSL."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from service.cli.common import given, play_until_done
from service.cli_checks import (
    UsageError,
    nonnegative_int,
    out_path,
    positive_float,
    positive_int,
    runtime_failures,
)

if TYPE_CHECKING:
    from streams.synthetic import SyntheticConfig

DESCRIPTION = (
    "Simulate cosine-tuned Poisson channels driven by 2-D reaches.\n\n"
    "With --out: write a session file (NPZ: neural, timestamps, bin_s, kinematics "
    "vx/vy, targets).\n"
    "Without --out: stream the population live over LSL until Ctrl-C (or --seconds): "
    "outlet NAME (type Neural, spike counts per bin), NAME-kinematics (vx, vy in "
    "cm/s) and NAME-targets (x, y in cm), one sample per bin at 1000 / bin-ms Hz; "
    "the simulated --minutes loop.\n"
    "--input sets how NAME carries the population: counts (default: one sample per "
    "bin, or per-channel counts at --input-rate-hz, e.g. 1000), events (an irregular "
    "int32 stream, one channel index per spike) or broadband (voltage in µV at "
    "--input-rate-hz, default 30000: spike waveforms on noise). Each bin's samples or "
    "events sum to the simulated counts; the stream's desc names the input kind "
    "(input_kind) and the bin width (session_bin_s).\n\n"
    "example: bci simulate --out session.npz --minutes 12\n"
    "example: bci simulate --name bci-sim --seconds 60\n"
    "example: bci simulate --input counts --input-rate-hz 1000 --bin-ms 20"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``simulate`` to ``sub``."""
    simulate = sub.add_parser(
        "simulate",
        help="write a synthetic motor-cortex session file (NPZ), or stream it over LSL",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument(
        "--out", help="output session file (.npz); without it the session is streamed"
    )
    simulate.add_argument(
        "--force", action="store_true", help="replace an existing --out (default: refuse)"
    )
    simulate.add_argument(
        "--minutes",
        type=positive_float,
        default=12.0,
        help="duration (default 12; looped when streaming)",
    )
    simulate.add_argument("--channels", type=positive_int, default=96, help="channels (default 96)")
    simulate.add_argument(
        "--bin-ms", type=positive_float, default=50.0, help="bin width (default 50)"
    )
    simulate.add_argument(
        "--task",
        default="mixed",
        choices=("center_out", "random_target", "mixed"),
        help="reach task (default mixed)",
    )
    simulate.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    _add_streaming_arguments(simulate)
    simulate.set_defaults(func=run)


def _add_streaming_arguments(simulate: argparse.ArgumentParser) -> None:
    simulate.add_argument(
        "--name", help="streaming: LSL stream name (default bci-sim; also NAME-kinematics ...)"
    )
    simulate.add_argument(
        "--seconds",
        type=positive_float,
        help="streaming: stop after this many seconds (default: Ctrl-C)",
    )
    simulate.add_argument(
        "--speed", type=positive_float, help="streaming: speed factor over real time (default 1)"
    )
    simulate.add_argument(
        "--input",
        choices=("counts", "events", "broadband"),
        help="streaming: what NAME carries (default counts, one sample per bin)",
    )
    simulate.add_argument(
        "--input-rate-hz",
        type=positive_float,
        help="streaming: native rate of counts or broadband, a multiple of the bin rate "
        "(default: the bin rate for counts, 30000 for broadband)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the simulated session to ``--out``, or stream it over LSL without it."""
    from streams.session import save_session
    from streams.synthetic import SyntheticConfig, simulate_session

    config = SyntheticConfig(
        n_channels=args.channels,
        bin_s=args.bin_ms / 1000.0,
        duration_s=args.minutes * 60.0,
        seed=args.seed,
        task=args.task,
    )
    if args.out is None:
        if args.force:
            raise UsageError("--force only applies with --out (it replaces an existing file)")
        return _stream(config, args)
    streaming_only = given(args, "--seconds", "--name", "--speed", "--input", "--input-rate-hz")
    if streaming_only:
        raise UsageError(
            f"{', '.join(streaming_only)} only apply when streaming over LSL; drop them or "
            "drop --out"
        )
    out = out_path(args.out, args.force)
    with runtime_failures():
        session = simulate_session(config)
        path = save_session(out, session)
    print(
        f"wrote {path}: {session.n_bins} bins x {session.n_channels} channels, "
        f"{session.bin_s * 1e3:g} ms bins, {session.duration_s / 60:.1f} min"
    )
    return 0


def _stream(config: SyntheticConfig, args: argparse.Namespace) -> int:
    from streams.native_rate import samples_per_bin
    from streams.player import simulate_stream

    kind = args.input or "counts"
    if args.input_rate_hz is not None:
        if kind == "events":
            raise UsageError("--input-rate-hz does not apply to --input events; drop it")
        try:
            samples_per_bin(args.input_rate_hz, config.bin_s)
        except ValueError:
            raise UsageError(
                f"--input-rate-hz {args.input_rate_hz:g} is not a whole multiple of the bin "
                f"rate ({1 / config.bin_s:g} Hz for --bin-ms {args.bin_ms:g}); e.g. 1000 or "
                "30000"
            ) from None
    player = simulate_stream(
        config,
        name=args.name or "bci-sim",
        speed=1.0 if args.speed is None else args.speed,
        loop=True,
        input_kind=kind,
        input_rate_hz=args.input_rate_hz,
    )
    play_until_done(player, args.seconds, describe=f"synthetic population as {kind} (looping)")
    return 0
