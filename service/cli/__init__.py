"""The ``bci`` command: one console script, a subcommand per job, a module per subcommand.

Each command module has ``add_parser(sub)`` (its subparser, with ``run`` as handler) and
``run(args) -> int``; it only parses arguments and calls importable code.
"""

from __future__ import annotations

import argparse
import logging
import sys

from service.cli import (
    calibrate,
    convert_limblab,
    demo,
    export,
    record,
    replay,
    serve,
    simulate,
    streams,
)
from service.cli.common import (
    DIALECT_CHOICES,
    RESET_CHOICES,
    SURROGATE_CHOICES,
    configure_logging,
    version,
)
from service.cli_checks import CommandFailed
from streams.lsl_config import quiet_liblsl

__all__ = ["DIALECT_CHOICES", "RESET_CHOICES", "SURROGATE_CHOICES", "build_parser", "main"]

logger = logging.getLogger(__name__)

EPILOG = "Run 'bci COMMAND --help' for the inputs, outputs and defaults of each command."
# in the order of bci --help
COMMANDS = (demo, simulate, convert_limblab, replay, record, streams, calibrate, export, serve)


def build_parser() -> argparse.ArgumentParser:
    """The ``bci`` parser with every command's subparser."""
    parser = argparse.ArgumentParser(
        prog="bci",
        description="Real-time BCI decoding with recurrent spiking neural networks.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, liblsl's own log lines too"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``bci`` on ``argv``; return its exit status (1 runtime, 2 usage, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    verbose = configure_logging(args.verbose)
    if not verbose:
        quiet_liblsl()  # before any liblsl call; inherited by the processes we start
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"bci {args.command}: interrupted", file=sys.stderr)
        return 130
    except CommandFailed as error:  # the work failed (see service.cli_checks)
        return _fail(args.command, error, 1)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        return _fail(args.command, error, 2)  # an input as given cannot be used (UsageError)
    except Exception as error:  # anything else is a runtime failure too: one line
        logger.debug("bci %s failed", args.command, exc_info=True)
        return _fail(args.command, error, 1, named=True)


def _fail(command: str, error: BaseException, status: int, named: bool = False) -> int:
    """Print ``error`` as one line (with its type when ``named``); return ``status``."""
    text = _one_line(error) or type(error).__name__
    if named and not isinstance(error, OSError):
        text = f"{type(error).__name__}: {text} (--verbose shows where)"
    print(f"bci {command}: error: {text}", file=sys.stderr)
    return status


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split("\n"))
