"""``bci replay``: inspect a session or XDF file, play it over LSL, or decode it with a model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bci.atomic import write_text
from service.cli.common import given, note_partial, play_until_done, positive_seconds, print_table
from service.cli_checks import UsageError, damaged_inputs, runtime_failures, session_path

DESCRIPTION = (
    "Work with a recorded session: an NPZ session file, an XDF recording or an NWB "
    "file (Units spike times binned at --bin-ms, default 50, or at the model's bin "
    "width with --model; kinematics from a processing/behavior series, --kinematics "
    "NAME or by default hand_vel, cursor_vel, finger_vel, else a position series "
    "differentiated to velocity).\n\n"
    "--inspect: print every stream with its channel count, nominal and effective "
    "rate, sample count, gaps (intervals > 1.5 nominal periods), time range and clock "
    "offsets, then notes on anomalies. An NPZ file shows as streams neural, "
    "kinematics and targets.\n"
    "--play: replay the session over LSL, one sample per bin at --speed x real time "
    "(outlets NAME, NAME-kinematics, NAME-targets as recorded), until it ends, "
    "--seconds pass or Ctrl-C. From XDF the session is built from the streams typed "
    "Neural / Kinematics / Targets unless --neural/--kinematics/--targets name them.\n"
    "--model MODEL --fast: decode the session with a checkpoint (.safetensors) bin by "
    "bin as fast as possible (with --adapt: learning online by e-prop from the "
    "session's kinematics); print R2 against the session's kinematics, bins, bins/s "
    "and the adaptation counters; --out writes them as JSON (keys r2, r2_per_dim, "
    "r2_windows (30 s windows), bins, bins_per_second, adaptation). The session must "
    "have kinematics and the model's channel count and bin width.\n"
    "--model MODEL [--speed X]: the same through the live path instead: a player "
    "process streams the session over LSL at X times real time (default 1) into the "
    "daemon of 'bci serve' (learning, with --adapt, from the played kinematics "
    "stream); the JSON adds mode, speed, bins_lost and latency.\n\n"
    "example: bci replay --inspect ../shared/data/xdf/clock_resets.xdf\n"
    "example: bci replay --inspect mc_maze.nwb\n"
    "example: bci replay session.npz --play --speed 2 --loop --name bci-replay\n"
    "example: bci replay session.npz --model model.safetensors --fast --adapt "
    "--out results.json\n"
    "example: bci replay session.npz --model model.safetensors --speed 10"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``replay`` to ``sub``."""
    replay = sub.add_parser(
        "replay",
        help="inspect a session or XDF file, play it over LSL, or decode it with a model",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("session", help="session file (.npz), XDF recording (.xdf) or NWB (.nwb)")
    mode = replay.add_mutually_exclusive_group()  # one is required: checked in run
    mode.add_argument("--inspect", action="store_true", help="list the streams and their timing")
    mode.add_argument("--play", action="store_true", help="play the session over LSL")
    mode.add_argument("--model", help="decode the session with this checkpoint (.safetensors)")
    replay.add_argument(
        "--fast", action="store_true", help="model: decode as fast as possible, not over LSL"
    )
    replay.add_argument(
        "--adapt", action="store_true", help="model: adapt online by e-prop (default off)"
    )
    replay.add_argument(
        "--track-inputs",
        type=float,
        metavar="SECONDS",
        help="model: the input normalisation follows the session's running mean and sd over "
        "this time constant (e.g. 60), for a model calibrated on another day (default off)",
    )
    replay.add_argument("--out", help="model: also write the results to this JSON file")
    replay.add_argument("--speed", type=float, help="play, model: x real time (default 1)")
    replay.add_argument("--loop", action="store_true", help="play: start over at the end")
    replay.add_argument(
        "--name", default="bci-replay", help="play: LSL stream name (default bci-replay)"
    )
    replay.add_argument(
        "--seconds", type=float, help="play: stop after this many seconds (default: at the end)"
    )
    replay.add_argument("--neural", help="XDF: neural stream name or type (default: type Neural)")
    replay.add_argument(
        "--kinematics",
        help="XDF: kinematics stream (default: type Kinematics); NWB: behaviour series",
    )
    replay.add_argument(
        "--targets", help="XDF: targets stream (default: type Targets); NWB: behaviour series"
    )
    replay.add_argument(
        "--bin-ms",
        type=float,
        help="XDF: sum neural samples into bins this wide (default: one bin per sample); "
        "NWB: bin the spike times (default 50)",
    )
    replay.set_defaults(func=run, replay_parser=replay)


def run(args: argparse.Namespace) -> int:
    """Inspect, play or decode the session, as the mode flag asks."""
    if not (args.inspect or args.play or args.model is not None):
        # checked here, not by argparse, to keep its established wording (and its tests)
        args.replay_parser.error(
            "one of the arguments --inspect --play is required, or --model MODEL"
        )
    path = session_path(args.session)
    model_only = given(args, "--adapt", "--fast", "--out", "--track-inputs")
    if args.model is None and model_only:
        raise UsageError(f"{', '.join(model_only)} only apply with --model MODEL")
    if args.model is not None:
        return _decode(path, args)
    if args.inspect:
        return _inspect(path)
    return _play(path, args)


def _inspect(path: Path) -> int:
    from streams.files import inspect_session_file
    from streams.xdf import format_inspection

    with runtime_failures():
        summaries = inspect_session_file(path)
    note_partial(path)
    print(f"{path}: {len(summaries)} stream(s)")
    print(format_inspection(summaries))
    return 0


def _play(path: Path, args: argparse.Namespace) -> int:
    from streams.player import SessionPlayer

    speed = 1.0 if args.speed is None else args.speed
    if not speed > 0:
        raise UsageError(f"--speed must be > 0 (1 = real time), got {speed:g}")
    positive_seconds(args.seconds, "--seconds")
    from streams.files import load_any_session

    with damaged_inputs():
        session = load_any_session(
            path,
            neural=args.neural,
            kinematics=args.kinematics,
            targets=args.targets,
            bin_s=None if args.bin_ms is None else args.bin_ms / 1000.0,
        )
    player = SessionPlayer(session, name=args.name, speed=speed, loop=args.loop)
    play_until_done(player, args.seconds, describe=f"{path.name} ({session!r})")
    return 0


def _decode(path: Path, args: argparse.Namespace) -> int:
    if args.fast and given(args, "--speed"):
        raise UsageError(
            "--fast and --speed exclude each other: --fast decodes as fast as possible, "
            "--speed X plays the session over LSL at X times real time"
        )
    speed = 1.0 if args.speed is None else args.speed
    if not speed > 0:
        raise UsageError(f"--speed must be > 0 (1 = real time), got {speed:g}")
    positive_seconds(args.track_inputs, "--track-inputs")
    stream_flags = given(args, "--neural", "--kinematics", "--targets", "--bin-ms")
    if stream_flags:
        raise UsageError(
            f"{', '.join(stream_flags)} are not supported with --model in this version: an XDF "
            "file is read from its streams typed Neural and Kinematics"
        )
    out = None if args.out is None else Path(args.out)
    if out is not None and not out.parent.is_dir():
        raise UsageError(
            f"cannot write {out}: directory {out.parent} does not exist; create it first"
        )
    if not Path(args.model).is_file():
        raise UsageError(f"--model {args.model} is not a checkpoint file (.safetensors)")
    from service.replay import replay_live, replay_session

    with damaged_inputs():  # a model that does not fit the session stays a usage error
        track = args.track_inputs
        if args.fast:
            result = replay_session(path, args.model, adapt=args.adapt, track_inputs_s=track)
        else:
            print(f"playing {path.name} over LSL at {speed:g}x real time ...", flush=True)
            result = replay_live(path, args.model, speed, adapt=args.adapt, track_inputs_s=track)
    print(f"replayed {path.name} with {Path(args.model).name}")
    print_table(["metric", "value"], _result_rows(result, args.fast))
    if out is not None:
        write_text(out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def _result_rows(result: dict, fast: bool) -> list[list]:
    """The metric / value rows of a replay ``result``."""
    rows = [
        ["R2", f"{result['r2']:.3f}"],
        ["R2 per dim", ", ".join(f"{v:.3f}" for v in result["r2_per_dim"])],
        ["bins", result["bins"]],
        ["bins/s", f"{result['bins_per_second']:,.0f}"],
    ]
    if not fast:
        latency = result["latency"]
        rows += [
            ["bins lost", result["bins_lost"]],
            ["latency p50 / p99 ms", f"{latency['p50_ms']:.2f} / {latency['p99_ms']:.2f}"],
        ]
    adaptation = result["adaptation"]
    if adaptation["enabled"]:
        rows += [
            ["bins with target", adaptation["bins_with_target"]],
            ["updates applied", adaptation["updates_applied"]],
            ["updates rejected", adaptation["updates_rejected"]],
            ["updates clipped", adaptation["updates_clipped"]],
            ["rollbacks", adaptation["rollbacks"]],
            ["paused", adaptation["paused"]],
        ]
    else:
        rows.append(["adaptation", "off"])
    return rows
