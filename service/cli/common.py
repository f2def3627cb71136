"""What several ``bci`` commands share: argument checks, tables, LSL playback, logging."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from service.cli_checks import UsageError

if TYPE_CHECKING:
    from streams.player import SessionPlayer

# Choices spelled out so that building the parser imports no torch; a test holds them equal
# to bci.neurons.RESET_MODES, bci.surrogates.SURROGATES and bci.nir_export.DIALECTS.
RESET_CHOICES = ("subtract", "zero")
SURROGATE_CHOICES = ("arctan", "boxcar", "fast_sigmoid", "gaussian", "sigmoid", "triangle")
DIALECT_CHOICES = ("nir", "norse", "snntorch")


def configure_logging(verbose: bool) -> bool:
    """Log at DEBUG with ``--verbose``, else at ``BCI_LOG_LEVEL`` (WARNING); True at DEBUG."""
    level = ("DEBUG" if verbose else os.environ.get("BCI_LOG_LEVEL", "WARNING")).upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return level == "DEBUG"


def version() -> str:
    """This package's installed version (its metadata), for ``bci --version``."""
    try:
        return importlib.metadata.version("bci-decoder")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def given(args: argparse.Namespace, *flags: str) -> list[str]:
    """Those of ``flags`` (e.g. ``"--bin-ms"``) that were given on the command line."""
    found = []
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and value is not False:  # 0 and "" count as given
            found.append(flag)
    return found


def positive_seconds(value: float | None, flag: str) -> None:
    """Refuse a ``flag`` of seconds that was given and is not > 0."""
    if value is not None and not value > 0:
        raise UsageError(f"{flag} must be a positive number of seconds, got {value:g}")


def print_table(headers: list[str], rows: list[list]) -> None:
    """Print ``rows`` under ``headers`` in left-aligned columns."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def note_partial(path: Path) -> None:
    """Say that an unfinished recording (``.xdf.part``) is read as far as it goes."""
    from streams.files import is_partial

    if is_partial(path):
        print(
            f"note: {path} is an unfinished recording (.part, no footers): truncated, read "
            "as far as it goes",
            file=sys.stderr,
        )


def play_until_done(player: SessionPlayer, seconds: float | None, describe: str) -> None:
    """Start ``player`` and run it until it finishes, ``seconds`` pass, Ctrl-C or SIGTERM."""
    from streams.lifetime import sigterm_as_interrupt

    with sigterm_as_interrupt(), player:
        print(
            f"streaming {describe} over LSL as {', '.join(player.stream_names)} at "
            f"{player.speed:g}x real time"
            + (f" for {seconds:g} s" if seconds is not None else "")
            + "; Ctrl-C to stop",
            flush=True,
        )
        started = time.monotonic()
        total = player.n_bins if not player.loop else None
        bar = tqdm(total=total, desc="bins pushed", unit="bin", leave=False)
        per_bin = player.stream_names[-1]  # kinematics and targets: one sample per bin
        try:
            while True:
                pushed = player.counters()["pushed"][per_bin]
                bar.update(pushed - bar.n)
                if player.finished:
                    time.sleep(1.0)  # let consumers drain before the outlets close
                    break
                if seconds is not None and time.monotonic() - started >= seconds:
                    break
                if not player.running:
                    break  # stop() below reports the failure
                time.sleep(0.1)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
        finally:
            bar.close()
        counters = player.counters()
    pushed = counters["pushed"]
    print(f"pushed for {time.monotonic() - started:.1f} s, {counters['loops']} loop(s):")
    print_table(["stream", "samples pushed"], [[name, n] for name, n in pushed.items()])
