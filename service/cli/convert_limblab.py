"""``bci convert-limblab``: a Miller-lab binned ``.mat`` file to a session file (NPZ)."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli_checks import UsageError, out_path, runtime_failures

DESCRIPTION = (
    "Read a limblab 'binnedData' MATLAB file (struct train_data: timeframe, "
    "spikeratedata in Hz, velocbin) and write a session file with counts per bin "
    "(rate x bin width) and velocity x, y as kinematics.\n\nexample: bci "
    "convert-limblab ../shared/data/neural/Jango_20141203_default_offline_data.mat "
    "jango.npz"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``convert-limblab`` to ``sub``."""
    convert = sub.add_parser(
        "convert-limblab",
        help="convert a Miller-lab binned .mat file to a session file (NPZ)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("mat", help="input .mat file")
    convert.add_argument("out", help="output session file (.npz)")
    convert.add_argument("--force", action="store_true", help="replace an existing OUT")
    convert.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert ``MAT`` and write the session to ``OUT``."""
    from streams.limblab import load_limblab_session
    from streams.session import save_session

    mat = Path(args.mat)
    if not mat.is_file():
        what = "is a directory" if mat.is_dir() else "does not exist"
        raise UsageError(f"MAT {mat} {what}; give a limblab binned-data .mat file")
    out = out_path(args.out, args.force, flag="OUT")
    with runtime_failures():
        session = load_limblab_session(mat)
        path = save_session(out, session)
    print(
        f"wrote {path}: {session.n_bins} bins x {session.n_channels} channels, "
        f"kinematics {session.kinematics_labels}"
    )
    return 0
