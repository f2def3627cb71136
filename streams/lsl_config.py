"""liblsl's own log lines (C++, written to stderr) kept out of command output.

liblsl reads one configuration file when it first starts (``$LSLAPICFG``, else
``./lsl_api.cfg``, ``~/lsl_api/lsl_api.cfg``, ``/etc/lsl_api/lsl_api.cfg``); its ``[log]
level`` sets what it prints (loguru verbosity: -2 errors only, 0 info, its default).
:func:`quiet_liblsl` points ``LSLAPICFG`` at a copy of the configuration liblsl would have
read, with ``[log] level = -2`` added, so a lab's ports, multicast and KnownPeers settings still
apply. Call it before the first liblsl call of the process: the variable is inherited by the
processes it starts (decoder, API, player), which then read the same file.

A configuration that already sets ``[log] level`` is left as it is: the lab chose.
"""

from __future__ import annotations

import configparser
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from bci.atomic import write_text

__all__ = ["QUIET_LEVEL", "quiet_liblsl"]

logger = logging.getLogger(__name__)

QUIET_LEVEL = -2  # loguru ERROR: liblsl's errors only
_SEARCHED = ("lsl_api.cfg", "~/lsl_api/lsl_api.cfg", "/etc/lsl_api/lsl_api.cfg")


def _current_config() -> Path | None:
    """The file liblsl would read, in its own search order."""
    candidates = [os.environ["LSLAPICFG"]] if os.environ.get("LSLAPICFG") else []
    for text in [*candidates, *_SEARCHED]:
        path = Path(text).expanduser()
        if path.is_file() and os.access(path, os.R_OK):
            return path.resolve()
    return None


def _sets_log_level(text: str) -> bool:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return False  # liblsl will say what is wrong with it
    return parser.has_option("log", "level")


def quiet_liblsl() -> Path | None:
    """Set ``LSLAPICFG`` to the current liblsl configuration plus ``[log] level = -2``.

    Returns the file written (in a private folder under the temporary folder, named by its
    content so that concurrent commands share it), or None when the configuration sets its
    own log level or the file cannot be written (liblsl then logs as usual).
    """
    current = _current_config()
    text = current.read_text(errors="replace") if current is not None else ""
    if _sets_log_level(text):
        return None
    text = f"{text.rstrip()}\n\n[log]\nlevel = {QUIET_LEVEL}\n".lstrip()
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"bci-lsl-{os.getuid()}"
    path = folder / f"lsl_api-{digest}.cfg"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        owner = folder.lstat()
        if owner.st_uid != os.getuid() or owner.st_mode & 0o022 or folder.is_symlink():
            raise PermissionError(f"{folder} is not a private folder of this user")
        if not path.is_file():
            write_text(path, text)  # a concurrent reader sees the whole file or none
    except OSError as error:  # liblsl then logs as it would anyway
        logger.debug("liblsl's log level left as it is: %s", error)
        return None
    os.environ["LSLAPICFG"] = str(path)
    return path
