"""``bci streams``: list the LSL streams visible from here."""

from __future__ import annotations

import argparse
import json

from service.cli.common import print_table
from service.cli_checks import positive_float, runtime_failures

DESCRIPTION = (
    "List every LSL outlet that answers within --wait seconds: the streams that 'bci "
    "serve --stream' and 'bci record --stream' can find. One row per outlet: name, "
    "type, channels, nominal rate (0: irregular), source_id and host.\n\n"
    "example: bci streams\nexample: bci streams --wait 3 --json"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``streams`` to ``sub``."""
    streams = sub.add_parser(
        "streams",
        help="list the LSL streams visible from here",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    streams.add_argument(
        "--wait",
        type=positive_float,
        default=1.0,
        help="seconds to wait for outlets to answer (default 1)",
    )
    streams.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list instead (keys name, type, channels, rate_hz, source_id, host)",
    )
    streams.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the outlets that answer within ``--wait`` seconds, as a table or JSON."""
    from streams.discovery import visible_streams

    with runtime_failures():
        listings = visible_streams(args.wait)
    if args.json:
        print(json.dumps([s.as_dict() for s in listings], indent=2))
    elif not listings:
        print(f"no LSL stream answered within {args.wait:g} s")
    else:
        print_table(
            ["name", "type", "channels", "rate Hz", "source_id", "host"],
            [[s.name, s.type, s.channels, f"{s.rate_hz:g}", s.source_id, s.host] for s in listings],
        )
    return 0
