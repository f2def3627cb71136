"""``bci record``: record LSL streams to an XDF file."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from tqdm import tqdm

from service.cli.common import print_table
from service.cli_checks import UsageError, out_path, positive_float, runtime_failures

if TYPE_CHECKING:
    from streams.recorder import Recorder

DESCRIPTION = (
    "Record LSL streams to XDF as LabRecorder does: one inlet per stream, raw "
    "timestamps, a clock offset per stream every 5 s, footers on stop. Runs until "
    "Ctrl-C or --seconds; the file is written as FILE.part and renamed when done.\n"
    "A stream is chosen by NAME or by name=NAME, type=TYPE or source_id=ID.\n\n"
    "example: bci record --out rec.xdf --stream bci-sim --stream bci-sim-kinematics "
    "--seconds 60"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``record`` to ``sub``."""
    record = sub.add_parser(
        "record",
        help="record LSL streams to an XDF file",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    record.add_argument("--out", required=True, help="output XDF file")
    record.add_argument(
        "--stream",
        action="append",
        required=True,
        help="stream to record (repeat for several)",
    )
    record.add_argument(
        "--seconds", type=positive_float, help="stop after this many seconds (default: Ctrl-C)"
    )
    record.add_argument(
        "--resolve-timeout",
        type=positive_float,
        default=10.0,
        help="seconds to wait for each stream to appear (default 10)",
    )
    record.add_argument(
        "--force", "--overwrite", action="store_true", help="replace an existing --out"
    )
    record.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Record the ``--stream`` streams to ``--out`` until Ctrl-C, SIGTERM or ``--seconds``."""
    from streams.lifetime import sigterm_as_interrupt
    from streams.recorder import Recorder, StreamSelector

    try:
        selectors = [StreamSelector.parse(text) for text in args.stream]
    except ValueError as error:
        raise UsageError(f"--stream: {error}") from None
    out = out_path(args.out, args.force)
    with sigterm_as_interrupt(), runtime_failures():  # kill PID finishes the file as Ctrl-C
        recorder = Recorder(
            out, selectors, resolve_timeout=args.resolve_timeout, overwrite=args.force
        )
        recorder.start()
        return _record_until_done(recorder, args)


def _record_until_done(recorder: Recorder, args: argparse.Namespace) -> int:
    print(
        f"recording {', '.join(recorder.stream_names)} to {args.out}"
        + (f" for {args.seconds:g} s" if args.seconds is not None else "")
        + "; Ctrl-C to stop",
        flush=True,
    )
    started = time.monotonic()
    bar = tqdm(total=args.seconds, desc="recording", unit="s", leave=False)
    try:
        while args.seconds is None or time.monotonic() - started < args.seconds:
            time.sleep(0.1)
            bar.update(min(time.monotonic() - started, args.seconds or float("inf")) - bar.n)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        bar.close()
        path = recorder.stop()
    counters = recorder.counters()
    print(f"wrote {path}: {time.monotonic() - started:.1f} s")
    print_table(
        ["stream", "type", "samples", "clock offsets", "state"],
        [
            [name, c["type"], c["samples"], c["clock_offsets"], c["state"]]
            for name, c in counters.items()
        ],
    )
    return 0
